//! An example config from `configs/`, with the few values the demo fills in, each recorded so
//! the demo can show exactly how its config differs from the example.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use toml::{Table, Value};

#[derive(Debug)]
pub struct EditedConfig {
    example: PathBuf,
    table: Table,
    changes: Vec<String>,
}

impl EditedConfig {
    pub fn load(example: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(example)
            .with_context(|| format!("reading {}", example.display()))?;
        let table = text
            .parse::<Table>()
            .with_context(|| format!("parsing {}", example.display()))?;
        Ok(Self {
            example: example.to_owned(),
            table,
            changes: Vec::new(),
        })
    }

    /// Sets `key` (dotted, such as `pki.cert`), creating tables on the way.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        let value = value.into();
        self.changes.push(format!("{key} = {value}"));
        let (table, last) = self.parent(key);
        table.insert(last.to_owned(), value);
        self
    }

    /// Removes `key` (dotted) and what it holds.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.changes.push(format!("no {key}"));
        let (table, last) = self.parent(key);
        table.remove(last);
        self
    }

    fn parent<'k>(&mut self, key: &'k str) -> (&mut Table, &'k str) {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        let mut table = &mut self.table;
        for part in parts {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            table = match entry {
                Value::Table(t) => t,
                _ => unreachable!("made a table just above"),
            };
        }
        (table, last)
    }

    /// Writes the config to `path`, headed by a comment naming the example and the changes.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = format!(
            "# Written by the demo from {}, with:\n",
            self.example.display()
        );
        for change in &self.changes {
            text.push_str(&format!("#   {change}\n"));
        }
        text.push('\n');
        text.push_str(&toml::to_string(&self.table)?);
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The example's file name and the changes, for the demo to print.
    pub fn describe(&self) -> String {
        let example = self
            .example
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("configs/{example} with {}", self.changes.join(", "))
    }
}

/// An inline table, for array-of-tables entries such as `[[lighthouse]]`.
pub fn entry<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Table(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn set_and_remove_change_only_the_named_keys_and_record_them() {
        let dir = tempfile::tempdir().unwrap();
        let example = dir.path().join("meshd.toml");
        std::fs::write(
            &example,
            "listen = \"0.0.0.0:4242\"\n[pki]\nca = \"/etc/ca.crt\"\ncert = \"/etc/node.crt\"\n\
             [coordinator]\nurls = [\"http://10.42.0.1:8080\"]\n",
        )
        .unwrap();
        let mut config = EditedConfig::load(&example).unwrap();
        config
            .set("pki.cert", "node.crt")
            .set("status.socket", "meshd.sock")
            .remove("coordinator");
        let out = dir.path().join("out.toml");
        config.write(&out).unwrap();
        let written: Table = std::fs::read_to_string(&out).unwrap().parse().unwrap();
        assert_eq!(written["listen"].as_str(), Some("0.0.0.0:4242"));
        assert_eq!(written["pki"]["ca"].as_str(), Some("/etc/ca.crt"));
        assert_eq!(written["pki"]["cert"].as_str(), Some("node.crt"));
        assert_eq!(written["status"]["socket"].as_str(), Some("meshd.sock"));
        assert!(!written.contains_key("coordinator"));
        assert_eq!(
            config.describe(),
            "configs/meshd.toml with pki.cert = \"node.crt\", status.socket = \"meshd.sock\", \
             no coordinator"
        );
    }
}
