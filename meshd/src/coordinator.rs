//! A routerd mesh listener as `[coordinator] urls` names it: `http://10.42.0.1:8080`, or by
//! its node's mesh name, `http://routerd.mesh:8080`, which this node's mesh DNS resolves
//! before each registration, so that a routerd that moves to another node, or another mesh
//! IP, is found without editing every worker.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;

/// How long this node waits for its own mesh DNS: the lighthouses' wait, and a margin.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Ip(Ipv4Addr),
    /// A name in the mesh domain, lowercase.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coordinator {
    pub host: Host,
    pub port: u16,
}

impl Coordinator {
    /// Parses `http://HOST:PORT` (a trailing `/` allowed): HOST an IPv4 address, or a name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a routerd mesh URL such as http://10.42.0.1:8080");
        let rest = text.strip_prefix("http://").ok_or_else(bad)?;
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port,
            });
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        crate::dns::Domain::parse(&name).map_err(|_| bad())?;
        Ok(Self {
            host: Host::Name(name),
            port,
        })
    }

    /// The address, when the URL gives it literally.
    pub fn literal(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::from((ip, self.port))),
            Host::Name(_) => None,
        }
    }

    /// The listener's address now: a name is asked of this node's mesh DNS, on `mesh_ip`.
    pub async fn resolve(&self, mesh_ip: Ipv4Addr) -> anyhow::Result<SocketAddr> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(SocketAddr::from((*ip, self.port))),
            Host::Name(name) => name,
        };
        let id = fastrand::u16(..);
        let query = crate::dns::a_query(name, id).map_err(anyhow::Error::msg)?;
        let socket = tokio::net::UdpSocket::bind((mesh_ip, 0))
            .await
            .context("a socket for mesh DNS")?;
        socket
            .connect((mesh_ip, 53))
            .await
            .context("mesh DNS on this node")?;
        socket.send(&query).await.context("asking mesh DNS")?;
        let mut reply = vec![0; 512];
        let len = tokio::time::timeout(LOOKUP_TIMEOUT, socket.recv(&mut reply))
            .await
            .map_err(|_| anyhow::anyhow!("mesh DNS did not answer for {name}"))?
            .context("mesh DNS on this node ([dns] on, port 53 free?)")?;
        match crate::dns::a_answer(&reply[..len], id).map_err(anyhow::Error::msg)? {
            Some(ip) => Ok(SocketAddr::from((ip, self.port))),
            None => anyhow::bail!("no node on the mesh is named {name}"),
        }
    }
}

impl std::fmt::Display for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "http://{ip}:{}", self.port),
            Host::Name(name) => write!(f, "http://{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_an_address_or_a_mesh_name() {
        let ip = Coordinator::parse("http://10.42.0.1:8080/").unwrap();
        assert_eq!(ip.literal(), Some("10.42.0.1:8080".parse().unwrap()));
        assert_eq!(ip.to_string(), "http://10.42.0.1:8080");
        let name = Coordinator::parse("http://Routerd.Mesh.:8080").unwrap();
        assert_eq!(name.host, Host::Name("routerd.mesh".into()));
        assert_eq!((name.literal(), name.port), (None, 8080));
        assert_eq!(name.to_string(), "http://routerd.mesh:8080");
        for bad in [
            "https://routerd.example",
            "http://routerd.mesh",
            "http://10.42.0.1:port",
            "http://[::1]:8080",
            "http://under_score.mesh:8080",
            "10.42.0.1:8080",
        ] {
            assert!(Coordinator::parse(bad).is_err(), "{bad}");
        }
    }
}
