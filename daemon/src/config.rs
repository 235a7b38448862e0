//! Config files: TOML parsed straight into validated types, with errors that name the file,
//! line, column and key, and relative paths taken from the config file's directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Semantic { path: PathBuf, message: String },
}

impl ConfigError {
    pub fn semantic(path: &Path, message: impl Into<String>) -> Self {
        Self::Semantic {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })
}

/// Parses `text` (the contents of `path`) into `T`, reporting where a value is wrong.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_column(text, s.start));
        let message = match key_of(&e) {
            Some(key) => format!("{key}: {}", e.message()),
            None => e.message().to_owned(),
        };
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// Makes `p` absolute against the directory of the config file at `config`.
pub fn resolve(config: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// The dotted key an error is about, such as `tun.mtu`. toml shows it only when the error is
/// displayed without its input snippet.
fn key_of(error: &toml::de::Error) -> Option<String> {
    let mut bare = error.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let line = shown.lines().find_map(|l| l.strip_prefix("in `"))?;
    Some(line.trim_end_matches('`').to_owned())
}

/// Line and column (1-based) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The `[pki]` section: the daemon's certificate and key, the CA, and optionally the CA's
/// revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
}

impl RawPki {
    pub fn resolve(self, config: &Path) -> PkiPaths {
        PkiPaths {
            ca: resolve(config, self.ca),
            cert: resolve(config, self.cert),
            key: resolve(config, self.key),
            crl: self.crl.map(|p| resolve(config, p)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A tracing filter such as `info` or `meshd=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    level: String,
    format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl RawLog {
    pub fn validate(self, config: &Path) -> Result<Log, ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level).map_err(|e| {
            ConfigError::semantic(config, format!("log.level {:?}: {e}", self.level))
        })?;
        Ok(Log {
            level: self.level,
            format: self.format,
        })
    }
}

/// Parses `ip:port`, or an address alone for `default_port`.
pub fn listen_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("{text:?} is not an address such as 0.0.0.0:{default_port}"))
}

/// A listen address written as `ip:port`, or an address alone for port `DEFAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddr<const DEFAULT: u16>(pub SocketAddr);

impl<const DEFAULT: u16> ListenAddr<DEFAULT> {
    /// Every IPv4 address, on port `DEFAULT`.
    pub fn any() -> Self {
        Self(SocketAddr::from(([0, 0, 0, 0], DEFAULT)))
    }
}

impl<const DEFAULT: u16> TryFrom<String> for ListenAddr<DEFAULT> {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        listen_addr(&text, DEFAULT).map(Self)
    }
}

/// A metrics or API listener written as `ip:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort(pub SocketAddr);

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
            .map(Self)
            .map_err(|_| format!("{text:?} is not an address such as 127.0.0.1:9100"))
    }
}

/// The `[metrics]` section: where Prometheus metrics are served, if anywhere.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    listen: Option<HostPort>,
}

impl RawMetrics {
    pub fn listen(&self) -> Option<SocketAddr> {
        self.listen.map(|l| l.0)
    }
}

/// A duration written the human way: `500ms`, `5s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Span(pub std::time::Duration);

impl TryFrom<String> for Span {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        humantime::parse_duration(&text)
            .map(Self)
            .map_err(|e| format!("{text:?} is not a duration such as 500ms or 5s ({e})"))
    }
}

/// A size in bytes written with a unit: `64KiB`, `10MiB`, `1.5GiB`, `2TiB`, `512B` (also KB,
/// MB, GB, TB as powers of ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ByteSize(pub u64);

impl TryFrom<String> for ByteSize {
    type Error = String;
    /// As capabilities' sizes read ([`rma_proto::load::parse_size`]), whole bytes.
    fn try_from(text: String) -> Result<Self, String> {
        rma_proto::load::parse_size(&text)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is not a size such as 64KiB or 10MiB"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        pki: RawPki,
        #[serde(default)]
        log: RawLog,
    }

    #[test]
    fn spans_and_sizes_parse_with_units_and_refuse_nonsense() {
        let span = |t: &str| Span::try_from(t.to_owned()).map(|s| s.0);
        assert_eq!(span("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(span("2m"), Ok(std::time::Duration::from_secs(120)));
        assert!(span("soon").unwrap_err().contains("500ms"));
        let size = |t: &str| ByteSize::try_from(t.to_owned()).map(|s| s.0);
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("10 MiB"), Ok(10 << 20));
        assert_eq!(size("3MB"), Ok(3_000_000));
        assert_eq!(size("12"), Ok(12));
        assert_eq!(size("1.5 GiB"), Ok(3 << 29));
        assert!(size("ten").is_err());
        assert!(size("5PiB").is_err());
        assert!(size("99999999999999GiB").is_err());
    }

    #[test]
    fn errors_carry_position_and_key() {
        let path = Path::new("/etc/x/x.toml");
        let text = "[pki]\nca = \"ca.crt\"\ncert = 3\nkey = \"k\"\n";
        let error = parse_toml::<Sample>(text, path).unwrap_err().to_string();
        assert!(
            error.starts_with("/etc/x/x.toml:3:8: pki.cert: "),
            "{error}"
        );
    }

    #[test]
    fn paths_resolve_against_the_config_directory_and_levels_are_checked() {
        let path = Path::new("/etc/x/x.toml");
        let text = "[pki]\nca = \"ca.crt\"\ncert = \"/abs/n.crt\"\nkey = \"k\"\n[log]\nlevel = \"info,,=[\"\n";
        let sample: Sample = parse_toml(text, path).unwrap();
        let pki = sample.pki.resolve(path);
        assert_eq!(pki.ca, Path::new("/etc/x/ca.crt"));
        assert_eq!(pki.cert, Path::new("/abs/n.crt"));
        assert!(pki.crl.is_none());
        let error = sample.log.validate(path).unwrap_err().to_string();
        assert!(error.starts_with("/etc/x/x.toml: log.level"), "{error}");
        assert_eq!(
            listen_addr("10.0.0.1", 4242),
            Ok("10.0.0.1:4242".parse().unwrap())
        );
        assert!(listen_addr("nowhere", 1).is_err());
    }
}
