//! Where a lighthouse is, as `[[lighthouse]] address` gives it: an IPv4 address, or a host
//! name that is resolved (by the system's resolver) before each connection, so that a
//! lighthouse whose DNS record moves is found at its new address without a restart, and a
//! machine that boots before its DNS works still starts.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LighthouseAddress {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl LighthouseAddress {
    /// Parses `host:port`, or a host alone for the lighthouse's default port.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with_port(text, rma_proto::lighthouse::DEFAULT_PORT)
    }

    /// Parses `host:port`, or a host alone for `default_port`.
    pub fn parse_with_port(text: &str, default_port: u16) -> Result<Self, String> {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>().map_err(|_| {
                    format!(
                        "lighthouse address {text:?}: {port:?} is not a port (expected host:port)"
                    )
                })?,
            ),
            None => (text, default_port),
        };
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(Self::Ip(SocketAddr::from((ip, port))));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        crate::dns::Domain::parse(&name).map_err(|_| {
            format!("lighthouse address {text:?}: not an IPv4 address or a host name (expected host:port)")
        })?;
        Ok(Self::Name { host: name, port })
    }

    /// The same host on another port.
    pub fn with_port(&self, port: u16) -> Self {
        match self {
            Self::Ip(addr) => Self::Ip(SocketAddr::new(addr.ip(), port)),
            Self::Name { host, .. } => Self::Name {
                host: host.clone(),
                port,
            },
        }
    }

    /// The address to connect to now: a name is looked up again each time.
    pub async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        match self {
            Self::Ip(addr) => Ok(*addr),
            Self::Name { host, port } => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .with_context(|| format!("looking up {host}"))?
                .find(SocketAddr::is_ipv4)
                .with_context(|| format!("{host} has no IPv4 address")),
        }
    }
}

impl From<SocketAddr> for LighthouseAddress {
    fn from(addr: SocketAddr) -> Self {
        Self::Ip(addr)
    }
}

impl std::fmt::Display for LighthouseAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_a_host_name_with_an_optional_port() {
        let ip = LighthouseAddress::parse("198.51.100.7:4243").unwrap();
        assert_eq!(
            ip,
            LighthouseAddress::Ip("198.51.100.7:4243".parse().unwrap())
        );
        let bare = LighthouseAddress::parse("198.51.100.7").unwrap();
        assert_eq!(bare.to_string(), "198.51.100.7:4243");
        let name = LighthouseAddress::parse("LH1.Example.org.:5000").unwrap();
        assert_eq!(name.to_string(), "lh1.example.org:5000");
        for bad in [
            "lh1.example.org:port",
            "under_score.example",
            "[::1]:4243",
            "",
        ] {
            assert!(LighthouseAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_when_asked() {
        // From /etc/hosts: no query leaves the machine.
        let local = LighthouseAddress::parse("localhost:4243").unwrap();
        assert_eq!(
            local.resolve().await.unwrap(),
            "127.0.0.1:4243".parse::<SocketAddr>().unwrap()
        );
    }
}
