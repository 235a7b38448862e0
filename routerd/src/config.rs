//! `routerd.toml`: parsed straight into validated types; errors name the file, line and
//! column. Relative paths are taken from the config file's directory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rma_daemon::config::{ByteSize, HostPort, RawLog, Span};
pub use rma_daemon::{ConfigError, Log};
use serde::Deserialize;

use crate::catalog::{Catalog, Needs, ServiceSpec, Tier};

/// The port the mesh listener uses when only the certificate gives its address.
pub const DEFAULT_MESH_PORT: u16 = 8080;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where cloudflared (or any local ingress) sends public calls.
    pub public: SocketAddr,
    /// Peers of the public listener whose `CF-Connecting-IP` names the caller (cloudflared's
    /// addresses); from anyone else the header is ignored and not passed on.
    pub trusted_proxies: Vec<IpNet>,
    /// Where workers register, on this node's mesh IP; `None` takes the mesh IP from
    /// `pki.cert`.
    pub mesh: Option<SocketAddr>,
    pub ca: PathBuf,
    /// This node's certificate, for its mesh IP.
    pub cert: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub admin_token: AdminToken,
    pub store: PathBuf,
    pub routing: Routing,
    pub health: Health,
    pub ejection: Ejection,
    pub rate_limit: Option<RateLimit>,
    pub limits: Limits,
    /// Origins browsers may call from; empty allows none.
    pub cors_origins: Vec<String>,
    pub catalog: Catalog,
    /// A worker's certificate must be in one of these groups (`[workers] groups`).
    pub worker_groups: Vec<String>,
    pub log: Log,
}

/// The admin bearer token: written in the config, or in a file read at startup.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminToken {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(..)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Shortest admin token accepted.
const MIN_TOKEN: usize = 16;

fn check_token(token: String) -> Result<String, String> {
    if token.len() < MIN_TOKEN {
        Err(format!(
            "the admin token must be at least {MIN_TOKEN} characters (try `openssl rand -hex 24`)"
        ))
    } else {
        Ok(token)
    }
}

impl AdminToken {
    /// The token itself, reading the file if it is in one.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::Inline(token) => Ok(token.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "admin.token_file {}: {e}{}",
                        path.display(),
                        rma_ca::files::credential_hint(path)
                    )
                })
                .and_then(|text| check_token(text.trim().to_owned())),
        }
    }
}

/// How a worker is chosen among those serving a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Two random workers, the one with fewer calls in flight.
    #[default]
    LeastOutstanding,
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// Retries allowed as a share of calls.
    pub retry_budget: f64,
    /// Bodies up to this size are kept so an idempotent call can be sent again.
    pub retry_buffer: u64,
    pub max_idle_per_worker: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy worker back.
    pub rise: u32,
    /// Consecutive failures that take a healthy worker out.
    pub fall: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive connect errors, 502s or 503s that eject a worker.
    pub consecutive_errors: u32,
    /// The first ejection's length; each further one doubles it, up to `max`.
    pub base: Duration,
    pub max: Duration,
}

/// What one connection may take of routerd, on either listener (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// To send a request's head, and the longest a connection may sit idle between requests.
    pub header_timeout: Duration,
    /// A request body must arrive at `body_min_rate` bytes a second on average, after
    /// `body_grace`: a slow uplink passes, a body dribbled a byte at a time does not.
    pub body_grace: Duration,
    pub body_min_rate: u64,
    /// The longest a response write may stall (a caller that stops reading).
    pub write_timeout: Duration,
    /// Open connections per listener, and per caller address (trusted proxies excepted).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// The largest request head; larger ones are answered 431.
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
    /// The header that carries an API key. A caller whose key is one of `api_keys` is limited
    /// under its key; every other caller under its address (`CF-Connecting-IP` from a trusted
    /// proxy, else the peer's), whatever key it sends.
    pub key_header: String,
    /// SHA-256 digests of the API keys routerd knows.
    pub api_keys: HashSet<[u8; 32]>,
}

impl RateLimit {
    /// Whether `key` is one of the configured API keys.
    pub fn knows(&self, key: &[u8]) -> bool {
        !self.api_keys.is_empty() && self.api_keys.contains(&crate::secrets::api_key_digest(key))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    pki: RawPki,
    admin: RawAdmin,
    store: RawStore,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    ejection: RawEjection,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    cors: RawCors,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    #[serde(default = "default_worker_groups")]
    groups: Vec<String>,
}

impl Default for RawWorkers {
    fn default() -> Self {
        Self {
            groups: default_worker_groups(),
        }
    }
}

fn default_worker_groups() -> Vec<String> {
    vec!["workers".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    #[serde(default = "default_public")]
    public: HostPort,
    mesh: Option<HostPort>,
    #[serde(default = "default_trusted_proxies")]
    trusted_proxies: Vec<IpNet>,
}

impl Default for RawListen {
    fn default() -> Self {
        Self {
            public: default_public(),
            mesh: None,
            trusted_proxies: default_trusted_proxies(),
        }
    }
}

/// Loopback, where cloudflared runs beside routerd.
fn default_trusted_proxies() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn default_public() -> HostPort {
    HostPort(SocketAddr::from(([127, 0, 0, 1], 8080)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPki {
    ca: PathBuf,
    cert: Option<PathBuf>,
    crl: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    balance: Balance,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: Span,
    #[serde(default = "default_retry_budget")]
    retry_budget: f64,
    #[serde(default = "default_retry_buffer")]
    retry_buffer: ByteSize,
    #[serde(default = "default_max_idle")]
    max_idle_per_worker: usize,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            balance: Balance::default(),
            connect_timeout: default_connect_timeout(),
            retry_budget: default_retry_budget(),
            retry_buffer: default_retry_buffer(),
            max_idle_per_worker: default_max_idle(),
        }
    }
}

fn default_connect_timeout() -> Span {
    Span(Duration::from_millis(500))
}
fn default_retry_budget() -> f64 {
    0.2
}
fn default_retry_buffer() -> ByteSize {
    ByteSize(64 << 10)
}
fn default_max_idle() -> usize {
    128
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default = "default_health_interval")]
    interval: Span,
    #[serde(default = "default_health_timeout")]
    timeout: Span,
    #[serde(default = "default_threshold")]
    rise: u32,
    #[serde(default = "default_threshold")]
    fall: u32,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            rise: default_threshold(),
            fall: default_threshold(),
        }
    }
}

fn default_health_interval() -> Span {
    Span(Duration::from_secs(2))
}
fn default_health_timeout() -> Span {
    Span(Duration::from_secs(1))
}
fn default_threshold() -> u32 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEjection {
    #[serde(default = "default_consecutive_errors")]
    consecutive_errors: u32,
    #[serde(default = "default_ejection_base")]
    base: Span,
    #[serde(default = "default_ejection_max")]
    max: Span,
}

impl Default for RawEjection {
    fn default() -> Self {
        Self {
            consecutive_errors: default_consecutive_errors(),
            base: default_ejection_base(),
            max: default_ejection_max(),
        }
    }
}

fn default_consecutive_errors() -> u32 {
    3
}
fn default_ejection_base() -> Span {
    Span(Duration::from_secs(5))
}
fn default_ejection_max() -> Span {
    Span(Duration::from_secs(300))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: f64,
    burst: Option<f64>,
    #[serde(default = "default_key_header")]
    key_header: String,
    /// SHA-256 digests, in hex, of the API keys callers may be limited under
    /// (`printf %s KEY | sha256sum`).
    #[serde(default)]
    api_keys: Vec<String>,
}

/// A 64-digit hex SHA-256 digest.
fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let mut digest = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

fn default_key_header() -> String {
    "X-API-Key".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    header_timeout: Span,
    body_grace: Span,
    body_min_rate: ByteSize,
    write_timeout: Span,
    max_connections: usize,
    max_connections_per_ip: usize,
    max_header_bytes: ByteSize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            header_timeout: Span(Duration::from_secs(30)),
            body_grace: Span(Duration::from_secs(10)),
            body_min_rate: ByteSize(1024),
            write_timeout: Span(Duration::from_secs(30)),
            max_connections: 4096,
            max_connections_per_ip: 64,
            max_header_bytes: ByteSize(32 << 10),
        }
    }
}

/// hyper reads a request head into a buffer of at least this size.
const MIN_HEADER_BYTES: u64 = 8192;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCors {
    #[serde(default)]
    origins: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    tier: Tier,
    #[serde(default = "default_replicas")]
    replicas: u32,
    timeout: Option<Span>,
    max_body: Option<ByteSize>,
    #[serde(default)]
    needs: RawNeeds,
}

/// What one replica takes from its worker: `needs = { ram = "8GiB", gpu_memory = "16GiB" }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNeeds {
    ram: Option<ByteSize>,
    gpu_memory: Option<ByteSize>,
    disk: Option<ByteSize>,
}

fn default_replicas() -> u32 {
    1
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&rma_daemon::config::read(path)?, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths. A
    /// `token_file` is read at startup ([`AdminToken::read`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = rma_daemon::config::parse_toml(text, path)?;
        let semantic = |m: String| ConfigError::semantic(path, m);
        let resolve = |p: PathBuf| rma_daemon::config::resolve(path, p);

        let admin_token = match (raw.admin.token, raw.admin.token_file) {
            (Some(token), None) => AdminToken::Inline(check_token(token).map_err(semantic)?),
            (None, Some(file)) => AdminToken::File(resolve(file)),
            _ => {
                return Err(semantic(
                    "[admin] needs exactly one of `token` and `token_file`".into(),
                ));
            }
        };
        if raw.listen.mesh.is_none() && raw.pki.cert.is_none() {
            return Err(semantic(
                "set listen.mesh, or pki.cert so the mesh listener can use its mesh IP".into(),
            ));
        }
        let routing = raw.routing;
        if !(0.0..=1.0).contains(&routing.retry_budget) {
            return Err(semantic(format!(
                "routing.retry_budget {} must be between 0 and 1",
                routing.retry_budget
            )));
        }
        let health = Health {
            interval: raw.health.interval.0,
            timeout: raw.health.timeout.0,
            rise: raw.health.rise.max(1),
            fall: raw.health.fall.max(1),
        };
        if health.timeout > health.interval {
            return Err(semantic(
                "health.timeout must not be longer than health.interval".into(),
            ));
        }
        let ejection = Ejection {
            consecutive_errors: raw.ejection.consecutive_errors.max(1),
            base: raw.ejection.base.0,
            max: raw.ejection.max.0.max(raw.ejection.base.0),
        };
        let rate_limit = match raw.rate_limit {
            None => None,
            Some(r) if r.per_second > 0.0 && r.burst.is_none_or(|b| b >= 1.0) => {
                let mut api_keys = HashSet::new();
                for (i, text) in r.api_keys.iter().enumerate() {
                    let digest = parse_digest(text).ok_or_else(|| {
                        semantic(format!(
                            "rate_limit.api_keys[{i}] is not a SHA-256 digest in hex (64 digits; \
                             `printf %s KEY | sha256sum` makes one): routerd keeps no API key in clear"
                        ))
                    })?;
                    api_keys.insert(digest);
                }
                Some(RateLimit {
                    per_second: r.per_second,
                    burst: r.burst.unwrap_or(r.per_second.max(1.0)),
                    key_header: r.key_header,
                    api_keys,
                })
            }
            Some(_) => {
                return Err(semantic(
                    "rate_limit.per_second must be above 0 and burst at least 1".into(),
                ));
            }
        };
        if raw.workers.groups.is_empty() {
            return Err(semantic(
                "workers.groups is empty: no certificate could register as a worker".into(),
            ));
        }
        let worker_groups = raw.workers.groups;
        let l = raw.limits;
        if l.max_header_bytes.0 < MIN_HEADER_BYTES || l.max_header_bytes.0 > 1 << 20 {
            return Err(semantic(format!(
                "limits.max_header_bytes must be between {MIN_HEADER_BYTES} bytes and 1 MiB"
            )));
        }
        if l.max_connections == 0 || l.max_connections_per_ip == 0 || l.body_min_rate.0 == 0 {
            return Err(semantic(
                "limits.max_connections, max_connections_per_ip and body_min_rate must be above 0"
                    .into(),
            ));
        }
        let limits = Limits {
            header_timeout: l.header_timeout.0,
            body_grace: l.body_grace.0,
            body_min_rate: l.body_min_rate.0,
            write_timeout: l.write_timeout.0,
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            max_header_bytes: usize::try_from(l.max_header_bytes.0).unwrap_or(usize::MAX),
        };
        let catalog = if raw.service.is_empty() {
            Catalog::default()
        } else {
            let mut services = Vec::new();
            for s in raw.service {
                if services.iter().any(|(n, _)| *n == s.name) {
                    return Err(semantic(format!("service {:?} is listed twice", s.name)));
                }
                let mut spec = ServiceSpec::new(s.tier);
                spec.replicas = s.replicas;
                if let Some(t) = s.timeout {
                    if t.0 > crate::metrics::LONGEST {
                        return Err(semantic(format!(
                            "service {:?}: timeout {:?} is above {} s, the longest call the duration histogram can tell apart",
                            s.name,
                            t.0,
                            crate::metrics::LONGEST.as_secs()
                        )));
                    }
                    spec.timeout = t.0;
                }
                if let Some(b) = s.max_body {
                    spec.max_body = b.0;
                }
                spec.needs = Needs {
                    ram: s.needs.ram.map(|b| b.0),
                    gpu_memory: s.needs.gpu_memory.map(|b| b.0),
                    disk: s.needs.disk.map(|b| b.0),
                };
                if spec.needs.gpu_memory.is_some() && s.tier != Tier::Gpu {
                    return Err(semantic(format!(
                        "service {:?}: needs.gpu_memory needs tier = \"gpu\"",
                        s.name
                    )));
                }
                services.push((s.name, spec));
            }
            Catalog::new(services)
        };
        Ok(Self {
            public: raw.listen.public.0,
            trusted_proxies: raw.listen.trusted_proxies,
            mesh: raw.listen.mesh.map(|m| m.0),
            ca: resolve(raw.pki.ca),
            cert: raw.pki.cert.map(resolve),
            crl: raw.pki.crl.map(resolve),
            admin_token,
            store: resolve(raw.store.path),
            routing: Routing {
                balance: routing.balance,
                connect_timeout: routing.connect_timeout.0,
                retry_budget: routing.retry_budget,
                retry_buffer: routing.retry_buffer.0,
                max_idle_per_worker: routing.max_idle_per_worker,
            },
            health,
            ejection,
            rate_limit,
            limits,
            cors_origins: raw.cors.origins,
            catalog,
            worker_groups,
            log: raw.log.validate(path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[pki]\nca = \"ca.crt\"\ncert = \"node.crt\"\n[admin]\ntoken = \"0123456789abcdef\"\n[store]\npath = \"registry.db\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/rma-mesh/routerd.toml"))
    }

    #[test]
    fn defaults_follow_the_seed_catalog() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.public, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.mesh, None);
        assert_eq!(config.store, Path::new("/etc/rma-mesh/registry.db"));
        assert_eq!(config.routing.balance, Balance::LeastOutstanding);
        assert_eq!(config.routing.retry_buffer, 64 << 10);
        assert_eq!(config.catalog, Catalog::default());
        assert_eq!(config.rate_limit, None);
        assert!(config.cors_origins.is_empty());
        assert_eq!(config.worker_groups, ["workers"]);
        assert_eq!(config.limits.header_timeout, Duration::from_secs(30));
        assert_eq!(config.limits.max_header_bytes, 32 << 10);
        assert_eq!(config.limits.max_connections_per_ip, 64);
        let trusted: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(trusted, ["127.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn services_limits_and_policies_are_read() {
        let config = parse(&format!(
            "{MINIMAL}[listen]\nmesh = \"10.42.0.1:8080\"\n[routing]\nbalance = \"round-robin\"\n\
             [rate_limit]\nper_second = 5\n[cors]\norigins = [\"https://rmatool.org.uk\"]\n\
             [[service]]\nname = \"rag-embeddings\"\ntier = \"cpu\"\nreplicas = 2\ntimeout = \"3s\"\nmax_body = \"1MiB\"\n\
             needs = {{ ram = \"2GiB\", disk = \"10GiB\" }}\n"
        ))
        .unwrap();
        assert_eq!(config.routing.balance, Balance::RoundRobin);
        assert_eq!(config.mesh, Some("10.42.0.1:8080".parse().unwrap()));
        let rag = config.catalog.get("rag-embeddings").unwrap();
        assert_eq!(
            (rag.replicas, rag.timeout, rag.max_body),
            (2, Duration::from_secs(3), 1 << 20)
        );
        assert_eq!(
            (rag.needs.ram, rag.needs.disk, rag.needs.gpu_memory),
            (Some(2 << 30), Some(10 << 30), None)
        );
        assert_eq!(config.catalog.iter().count(), 1);
        for (bad, why) in [
            (
                "tier = \"cpu\"\nneeds = { gpu_memory = \"8GiB\" }",
                "needs tier = \"gpu\"",
            ),
            ("tier = \"gpu\"\ntimeout = \"11m\"", "the longest call"),
            ("tier = \"tape\"", "unknown variant"),
        ] {
            let e = parse(&format!("{MINIMAL}[[service]]\nname = \"x\"\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let storage = parse(&format!(
            "{MINIMAL}[[service]]\nname = \"doc-store\"\ntier = \"storage\"\n"
        ))
        .unwrap();
        assert_eq!(
            storage.catalog.get("doc-store").unwrap().tier,
            Tier::Storage
        );
        let limit = config.rate_limit.unwrap();
        assert_eq!((limit.per_second, limit.burst), (5.0, 5.0));
        assert_eq!(limit.key_header, "X-API-Key");
        assert!(limit.api_keys.is_empty());
        let keyed = parse(&format!(
            "{MINIMAL}[rate_limit]\nper_second = 5\n\
             api_keys = [\"2c70e12b7a0646f92279f427c7b38e7334d8e5389cff167a1dc30e73f826b683\"]\n\
             [listen]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[workers]\ngroups = [\"gpu\", \"cpu\"]\n"
        ))
        .unwrap();
        let limit = keyed.rate_limit.unwrap();
        assert!(limit.knows(b"key"), "the digest of `key`");
        assert!(!limit.knows(b"other"));
        assert_eq!(keyed.trusted_proxies[0].to_string(), "10.0.0.0/8");
        assert_eq!(keyed.worker_groups, ["gpu", "cpu"]);
    }

    #[test]
    fn mistakes_are_named() {
        let short = MINIMAL.replace("0123456789abcdef", "short");
        assert!(
            parse(&short)
                .unwrap_err()
                .to_string()
                .contains("16 characters")
        );
        let no_mesh = MINIMAL.replace("cert = \"node.crt\"\n", "");
        assert!(
            parse(&no_mesh)
                .unwrap_err()
                .to_string()
                .contains("listen.mesh")
        );
        let bad_tier = parse(&format!(
            "{MINIMAL}[[service]]\nname = \"x\"\ntier = \"tpu\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad_tier.starts_with("/etc/rma-mesh/routerd.toml:"),
            "{bad_tier}"
        );
        assert!(bad_tier.contains("tier"), "{bad_tier}");
        let twice = parse(&format!(
            "{MINIMAL}[[service]]\nname = \"x\"\ntier = \"cpu\"\n[[service]]\nname = \"x\"\ntier = \"gpu\"\n"
        ));
        assert!(twice.unwrap_err().to_string().contains("listed twice"));
        let missing =
            parse(&MINIMAL.replace("token = \"0123456789abcdef\"", "token_file = \"nope\""))
                .unwrap();
        let error = missing.admin_token.read().unwrap_err();
        assert!(
            error.contains("admin.token_file /etc/rma-mesh/nope"),
            "{error}"
        );
        assert!(
            !format!("{:?}", parse(MINIMAL).unwrap()).contains("0123456789abcdef"),
            "the token is never printed"
        );
        let clear = parse(&format!(
            "{MINIMAL}[rate_limit]\nper_second = 5\napi_keys = [\"team-a-secret\"]\n"
        ));
        assert!(clear.unwrap_err().to_string().contains("api_keys[0]"));
        let tiny = parse(&format!("{MINIMAL}[limits]\nmax_header_bytes = \"1KiB\"\n"));
        assert!(tiny.unwrap_err().to_string().contains("max_header_bytes"));
        let budget = parse(&format!("{MINIMAL}[routing]\nretry_budget = 2.0\n"));
        assert!(budget.unwrap_err().to_string().contains("retry_budget"));
    }
}
