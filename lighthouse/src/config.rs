//! `lighthouse.toml`: parsed straight into validated types; errors name the file, line and
//! column. Relative paths are taken from the config file's directory.

use std::net::SocketAddr;
use std::path::Path;

use rma_daemon::config::{ByteSize, RawLog, RawMetrics, RawPki};
pub use rma_daemon::{ConfigError, Log, LogFormat, PkiPaths};
use serde::Deserialize;

use rma_proto::lighthouse::DEFAULT_PORT;
use rma_proto::stream::DEFAULT_TCP_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pki: PkiPaths,
    /// The QUIC endpoint nodes connect to.
    pub listen: SocketAddr,
    /// The UDP port nodes send reflect messages to from their WireGuard sockets.
    pub reflector: SocketAddr,
    /// The TLS-over-TCP listener for nodes whose networks let no UDP out
    /// ([`rma_proto::stream`]); `None`: `tcp_listen = "off"`.
    pub tcp_listen: Option<SocketAddr>,
    /// Where Prometheus metrics are served; `None` (the default) serves none.
    pub metrics: Option<SocketAddr>,
    /// Each node's relay budget: bytes a second, and the most at once.
    pub relay_rate: u64,
    pub relay_burst: u64,
    pub log: Log,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pki: RawPki,
    #[serde(default = "default_listen")]
    listen: ListenAddr,
    reflector: Option<ListenAddr>,
    tcp_listen: Option<String>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRelay {
    rate: ByteSize,
    burst: ByteSize,
}

impl Default for RawRelay {
    fn default() -> Self {
        let limit = crate::relay::DEFAULT_LIMIT;
        Self {
            rate: ByteSize(limit.rate as u64),
            burst: ByteSize(limit.burst as u64),
        }
    }
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
        let tcp_listen = match raw.tcp_listen.as_deref() {
            Some("off") => None,
            None => Some(SocketAddr::new(listen.ip(), DEFAULT_TCP_PORT)),
            Some(text) => Some(
                rma_daemon::config::ListenAddr::<DEFAULT_TCP_PORT>::try_from(text.to_owned())
                    .map_err(|e| ConfigError::semantic(path, format!("tcp_listen: {e}")))?
                    .0,
            ),
        };
        // A relayed packet is up to 64 KiB: a smaller burst could never pass one.
        if raw.relay.rate.0 == 0 || raw.relay.burst.0 < 64 * 1024 {
            return Err(ConfigError::semantic(
                path,
                "relay.rate must be above 0 and relay.burst at least 64KiB",
            ));
        }
        Ok(Self {
            pki: raw.pki.resolve(path),
            listen,
            reflector,
            tcp_listen,
            metrics: raw.metrics.listen(),
            relay_rate: raw.relay.rate.0,
            relay_burst: raw.relay.burst.0,
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
        assert_eq!(config.tcp_listen, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(config.pki.cert, Path::new("/etc/rma-mesh/lh.crt"));
        assert_eq!(config.metrics, None);
        assert_eq!(
            (config.relay_rate, config.relay_burst),
            (128 << 20, 4 << 20)
        );
        let relay = parse(&format!(
            "{MINIMAL}[relay]\nrate = \"1MiB\"\nburst = \"1KiB\"\n"
        ));
        assert!(relay.unwrap_err().to_string().contains("relay.burst"));
    }

    #[test]
    fn overrides_and_errors() {
        let config = parse(&format!(
            "listen = \"198.51.100.7:443\"\nreflector = \"198.51.100.7:3478\"\n{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9243\"\n[log]\nformat = \"json\"\n"
        ))
        .unwrap();
        assert_eq!(config.reflector, "198.51.100.7:3478".parse().unwrap());
        assert_eq!(config.tcp_listen, Some("198.51.100.7:443".parse().unwrap()));
        let tcp = |value: &str| parse(&format!("tcp_listen = \"{value}\"\n{MINIMAL}"));
        assert_eq!(tcp("off").unwrap().tcp_listen, None);
        assert_eq!(
            tcp("10.0.0.1:8443").unwrap().tcp_listen,
            Some("10.0.0.1:8443".parse().unwrap())
        );
        assert!(
            tcp("nowhere")
                .unwrap_err()
                .to_string()
                .contains("tcp_listen")
        );
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
