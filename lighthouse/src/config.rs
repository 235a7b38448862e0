//! `lighthouse.toml`: parsed straight into validated types; errors name the file, line and
//! column. Relative paths are taken from the config file's directory.

use std::net::SocketAddr;
use std::path::Path;

use rma_daemon::config::{RawLog, RawMetrics, RawPki};
pub use rma_daemon::{ConfigError, Log, LogFormat, PkiPaths};
use serde::Deserialize;

use crate::proto::DEFAULT_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pki: PkiPaths,
    /// The QUIC endpoint nodes connect to.
    pub listen: SocketAddr,
    /// The UDP port nodes send reflect messages to from their WireGuard sockets.
    pub reflector: SocketAddr,
    /// Where Prometheus metrics are served; `None` (the default) serves none.
    pub metrics: Option<SocketAddr>,
    pub log: Log,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pki: RawPki,
    #[serde(default = "default_listen")]
    listen: ListenAddr,
    reflector: Option<ListenAddr>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

type ListenAddr = rma_daemon::config::ListenAddr<DEFAULT_PORT>;

fn default_listen() -> ListenAddr {
    ListenAddr::any()
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&rma_daemon::config::read(path)?, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = rma_daemon::config::parse_toml(text, path)?;
        let listen = raw.listen.0;
        let reflector = match raw.reflector {
            Some(r) => r.0,
            None => {
                let port = listen.port().checked_add(1).ok_or_else(|| {
                    ConfigError::semantic(
                        path,
                        "listen port 65535 leaves no port for the reflector; set `reflector`",
                    )
                })?;
                SocketAddr::new(listen.ip(), port)
            }
        };
        if reflector == listen {
            return Err(ConfigError::semantic(
                path,
                format!(
                    "reflector {reflector} is the QUIC listen address; they need ports of their own"
                ),
            ));
        }
        Ok(Self {
            pki: raw.pki.resolve(path),
            listen,
            reflector,
            metrics: raw.metrics.listen(),
            log: raw.log.validate(path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[pki]\nca = \"ca.crt\"\ncert = \"lh.crt\"\nkey = \"lh.key\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/rma-mesh/lighthouse.toml"))
    }

    #[test]
    fn defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.listen, "0.0.0.0:4243".parse().unwrap());
        assert_eq!(config.reflector, "0.0.0.0:4244".parse().unwrap());
        assert_eq!(config.pki.cert, Path::new("/etc/rma-mesh/lh.crt"));
        assert_eq!(config.metrics, None);
    }

    #[test]
    fn overrides_and_errors() {
        let config = parse(&format!(
            "listen = \"198.51.100.7:443\"\nreflector = \"198.51.100.7:3478\"\n{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9243\"\n[log]\nformat = \"json\"\n"
        ))
        .unwrap();
        assert_eq!(config.reflector, "198.51.100.7:3478".parse().unwrap());
        assert_eq!(config.metrics, Some("127.0.0.1:9243".parse().unwrap()));
        assert_eq!(config.log.format, LogFormat::Json);

        let same = parse(&format!(
            "listen = \"0.0.0.0:5000\"\nreflector = \"0.0.0.0:5000\"\n{MINIMAL}"
        ));
        assert!(same.unwrap_err().to_string().contains("ports of their own"));
        let bad = parse(&format!("listen = \"nowhere\"\n{MINIMAL}")).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("/etc/rma-mesh/lighthouse.toml:1:10: listen: "),
            "{bad}"
        );
        let unknown = parse(&format!("{MINIMAL}color = 1\n")).unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    }
}
