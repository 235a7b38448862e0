//! Node names and group names: validated once, at the edge, then carried as types.
//!
//! A node name becomes the certificate's common name and a DNS SAN, so it must be a valid DNS
//! name. A group name is referenced from firewall rules and comma-separated on the command line,
//! so it is restricted to a conservative token alphabet.

use std::fmt;
use std::str::FromStr;

/// Longest node name accepted: one DNS label's worth, keeps names readable in status tables.
const MAX_NAME_LEN: usize = 63;
/// Longest group name accepted.
const MAX_GROUP_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} is longer than {max} characters")]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} {value:?} contains {found:?}; allowed are {allowed}")]
    BadChar {
        what: &'static str,
        value: String,
        found: char,
        allowed: &'static str,
    },
    #[error("{what} {value:?} must start and end with a letter or digit")]
    BadEdge { what: &'static str, value: String },
}

/// A node's name: ASCII letters, digits, `-` and `.`, starting and ending alphanumeric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

/// A group a node belongs to: ASCII letters, digits, `-`, `_` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(String);

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    is_allowed: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            value: value.to_owned(),
            max,
        });
    }
    if let Some(found) = value.chars().find(|c| !is_allowed(*c)) {
        return Err(NameError::BadChar {
            what,
            value: value.to_owned(),
            found,
            allowed,
        });
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(value.chars().next()) || !alnum(value.chars().last()) {
        return Err(NameError::BadEdge {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl FromStr for NodeName {
    type Err = NameError;
    fn from_str(value: &str) -> Result<Self, NameError> {
        check(
            "node name",
            value,
            MAX_NAME_LEN,
            "ASCII letters, digits, '-' and '.'",
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '.',
        )?;
        if value.contains("..") {
            return Err(NameError::BadChar {
                what: "node name",
                value: value.to_owned(),
                found: '.',
                allowed: "single dots between labels",
            });
        }
        Ok(Self(value.to_owned()))
    }
}

impl FromStr for Group {
    type Err = NameError;
    fn from_str(value: &str) -> Result<Self, NameError> {
        check(
            "group name",
            value,
            MAX_GROUP_LEN,
            "ASCII letters, digits, '-', '_' and '.'",
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
        )?;
        Ok(Self(value.to_owned()))
    }
}

impl Group {
    /// Parses a comma-separated list such as `gpu,workers`; empty input means no groups.
    /// Duplicates are removed and the result is sorted, so certificates are canonical.
    pub fn parse_list(list: &str) -> Result<Vec<Group>, NameError> {
        let mut groups = list
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(Group::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        groups.sort();
        groups.dedup();
        Ok(groups)
    }
}

macro_rules! string_newtype {
    ($t:ty) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype!(NodeName);
string_newtype!(Group);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "worker-1", "gpu.lab.example", "A9"] {
            assert!(ok.parse::<NodeName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            ".a",
            "a..b",
            "has space",
            "under_score",
            "ünï",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn group_lists_are_canonical() {
        let groups = Group::parse_list("workers, gpu,workers,,").unwrap();
        let names: Vec<_> = groups.iter().map(Group::as_str).collect();
        assert_eq!(names, ["gpu", "workers"]);
        assert!(Group::parse_list("").unwrap().is_empty());
        assert!(Group::parse_list("ok,bad group").is_err());
        assert!(Group::parse_list("a,b=c").is_err());
    }
}
