//! `meshd.toml`: parsed straight into validated types, so a config that loads is a config that
//! can run. Errors name the file, line and column. Relative paths are taken from the config
//! file's directory.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use rma_daemon::config::{ByteSize, RawLog, RawMetrics, RawPki, Span};
pub use rma_daemon::{ConfigError, Log, LogFormat, PkiPaths};
use serde::Deserialize;

use crate::firewall::{Action, PeerMatch, Policy, Ports, Proto, Rule, Timeouts};
use crate::lighthouse_address::LighthouseAddress;
use rma_proto::stream::DEFAULT_TCP_PORT;

/// WireGuard's UDP port for RMA Mesh unless configured otherwise.
pub const DEFAULT_PORT: u16 = 4242;
/// A full-size packet must fit in a QUIC datagram when a lighthouse relays it: 1380 bytes plus
/// WireGuard's 32 and the relay's 4 is 1416, within the 1434-byte datagrams QUIC carries once it
/// has found a 1500-byte IPv4 path (1472-byte UDP payloads, less QUIC's 38 bytes of header,
/// tag and frame). Sent directly, it leaves 60 bytes of a 1500-byte path unused.
pub const DEFAULT_MTU: u16 = 1380;
/// Keeps NAT mappings open on idle tunnels, like Nebula and Tailscale.
pub const DEFAULT_KEEPALIVE_SECS: u16 = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pki: PkiPaths,
    /// routerd mesh listeners this machine registers its services with.
    pub coordinators: Vec<crate::coordinator::Coordinator>,
    pub worker: WorkerSettings,
    /// What this machine can run, and how.
    pub services: Vec<LocalService>,
    pub listen: SocketAddr,
    pub tun: Tun,
    pub status_socket: PathBuf,
    /// Seconds between keepalives on an idle tunnel; `None` turns them off.
    pub keepalive: Option<u16>,
    pub static_peers: Vec<StaticPeer>,
    pub lighthouses: Vec<Lighthouse>,
    pub firewall: Policy,
    /// Where Prometheus metrics are served; `None` (the default) serves none.
    pub metrics: Option<SocketAddr>,
    /// The mesh domain meshd answers DNS for on its mesh IP; `None`: `[dns] enabled = false`.
    pub dns: Option<crate::dns::Domain>,
    /// Whether meshd asks the router to map its WireGuard port (PCP, NAT-PMP, UPnP-IGD):
    /// `[wireguard] port_mapping`, on by default.
    pub port_mapping: bool,
    /// Whether meshd hands the mesh domain to systemd-resolved for its TUN link (split DNS),
    /// when resolved runs here: `[dns] systemd_resolved`, on by default.
    pub dns_systemd_resolved: bool,
    pub log: Log,
    /// Where this node renews its certificate (written by `meshd join`); `None`: never.
    pub enrollment: Option<Enrollment>,
}

/// The `[enrollment]` section: the service this node joined through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub url: crate::enroll_http::EnrollUrl,
    /// Renew at this share of the certificate's lifetime, in thousandths (667 by default).
    pub renew_at_permille: u16,
}

/// By default a certificate is renewed at two-thirds of its lifetime.
pub const DEFAULT_RENEW_AT_PERMILLE: u16 = 667;

/// What the config says about this machine as a worker, over what detection finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// `cpu`, `gpu`, `storage` or `edge`; detected when absent: `gpu` if a GPU is found,
    /// else `storage` with at least `storage_min_free` of free disk, else `cpu`.
    pub worker_type: Option<String>,
    /// Declares a GPU with this much memory, such as `24 GiB`.
    pub gpu_memory: Option<String>,
    /// Where free disk is measured.
    pub disk_path: PathBuf,
    pub storage_min_free: u64,
}

/// Free disk from which a machine without a GPU is detected as a storage worker.
pub const DEFAULT_STORAGE_MIN_FREE: u64 = 1 << 40;

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            worker_type: None,
            gpu_memory: None,
            disk_path: PathBuf::from("/"),
            storage_min_free: DEFAULT_STORAGE_MIN_FREE,
        }
    }
}

/// A service as a registration offers it, and how this machine runs it.
pub use crate::services::spec::{Exec, LocalService, Runner, Service};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tun {
    pub name: String,
    pub mtu: u16,
    /// Reads and writes TCP and UDP super-packets (virtio-net header: GSO and GRO), where the
    /// kernel offers it.
    pub offload: bool,
    /// The most the event loop spins for more input after a turn that moved data (see
    /// [`crate::busy_poll`]); zero never spins.
    pub busy_poll: std::time::Duration,
}

/// A lighthouse to register with and ask for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lighthouse {
    /// The name in its certificate, which must match.
    pub name: String,
    /// Its QUIC address, or a host name looked up before each connection.
    pub address: LighthouseAddress,
    /// How long the connection may go unneeded before meshd parks it: closes it and keeps
    /// the registration with signed pings ([`rma_proto::parked`]). `None` never parks.
    pub park_after: Option<std::time::Duration>,
    /// Where it listens on TCP ([`rma_proto::stream`]), for when QUIC does not come up:
    /// `[[lighthouse]] tcp`, by default the address's host on port 443; `None`: `tcp = "off"`.
    pub tcp: Option<LighthouseAddress>,
    /// The HTTP proxy that carries the TCP link with CONNECT (`[[lighthouse]] proxy`).
    pub proxy: Option<crate::http_proxy::HttpProxy>,
}

/// Seconds a lighthouse connection goes unneeded before it is parked, unless configured.
pub const DEFAULT_PARK_AFTER_SECS: u32 = 300;

fn default_park_after() -> u32 {
    DEFAULT_PARK_AFTER_SECS
}

/// A peer reachable at known underlay addresses, without a lighthouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    pub mesh_ip: Ipv4Addr,
    pub endpoints: Vec<SocketAddr>,
}

// What the TOML holds. Each field's type does its own validation, so serde reports the line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pki: RawPki,
    #[serde(default = "default_listen")]
    listen: ListenAddr,
    #[serde(default)]
    tun: RawTun,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    wireguard: RawWireGuard,
    #[serde(default, rename = "static_peer")]
    static_peers: Vec<RawStaticPeer>,
    #[serde(default, rename = "lighthouse")]
    lighthouses: Vec<RawLighthouse>,
    #[serde(default)]
    firewall: RawFirewall,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    log: RawLog,
    coordinator: Option<RawCoordinator>,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    service: Vec<RawService>,
    enrollment: Option<RawEnrollment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrollment {
    url: String,
    /// A share of the lifetime, such as 0.667.
    renew_at: Option<f64>,
}

impl RawEnrollment {
    fn validate(self, path: &Path) -> Result<Enrollment, ConfigError> {
        let url = self
            .url
            .parse()
            .map_err(|e: anyhow::Error| ConfigError::semantic(path, format!("[enrollment] {e}")))?;
        let renew_at = self
            .renew_at
            .unwrap_or(f64::from(DEFAULT_RENEW_AT_PERMILLE) / 1000.0);
        if !(0.5..=0.95).contains(&renew_at) {
            return Err(ConfigError::semantic(
                path,
                format!(
                    "[enrollment] renew_at = {renew_at}: give a share of the certificate's lifetime between 0.5 and 0.95 (the service renews from half of it on)"
                ),
            ));
        }
        Ok(Enrollment {
            url,
            renew_at_permille: (renew_at * 1000.0).round() as u16,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinator {
    urls: Vec<CoordinatorUrl>,
}

/// A routerd's mesh listener, written `http://10.42.0.1:8080` or `http://routerd.mesh:8080`.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct CoordinatorUrl(crate::coordinator::Coordinator);

impl TryFrom<String> for CoordinatorUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        crate::coordinator::Coordinator::parse(&text).map(Self)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    #[serde(rename = "type")]
    worker_type: Option<WorkerType>,
    gpu_memory: Option<String>,
    disk_path: Option<PathBuf>,
    storage_min_free: Option<ByteSize>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum WorkerType {
    Cpu,
    Gpu,
    Storage,
    Edge,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    port: u16,
    #[serde(default = "default_health_path")]
    health: String,
    /// meshd runs this program (and arguments) itself.
    exec: Option<Vec<String>>,
    /// meshd starts and stops this systemd unit.
    unit: Option<String>,
    user: Option<String>,
    working_dir: Option<PathBuf>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    stop_grace: Option<Span>,
    start_timeout: Option<Span>,
}

/// A runner is `exec` or `unit` or neither; `user`, `working_dir` and `env` go with `exec`.
fn check_runner(service: &RawService) -> Result<(), String> {
    match (&service.exec, &service.unit) {
        (Some(_), Some(_)) => return Err("set `exec` or `unit`, not both".into()),
        (Some(argv), None) => {
            let program = argv
                .first()
                .ok_or("exec is empty: name the program to run")?;
            if !program.starts_with('/') {
                return Err(format!("exec program {program:?} must be an absolute path"));
            }
        }
        (None, Some(unit)) => {
            let valid = unit.ends_with(".service")
                && unit.len() <= 256
                && unit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
            if !valid {
                return Err(format!(
                    "unit {unit:?} must be a systemd service unit name such as ocr.service"
                ));
            }
        }
        (None, None) => {}
    }
    let exec_only =
        service.user.is_some() || service.working_dir.is_some() || !service.env.is_empty();
    if service.exec.is_none() && exec_only {
        return Err("`user`, `working_dir` and `env` need `exec`".into());
    }
    if let Some(key) = service
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.starts_with("RMA_"))
    {
        return Err(format!(
            "env {key:?}: names must be non-empty, without `=`, and not start with RMA_ (meshd sets those)"
        ));
    }
    Ok(())
}

fn default_health_path() -> String {
    "/health".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFirewall {
    inbound: Vec<RuleSpec>,
    outbound: Vec<RuleSpec>,
    inbound_action: Action,
    outbound_action: Action,
    conntrack: RawConntrack,
}

/// Idle timeouts of tracked flows, in seconds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConntrack {
    tcp_timeout: u64,
    udp_timeout: u64,
    default_timeout: u64,
}

impl Default for RawConntrack {
    fn default() -> Self {
        let t = Timeouts::default();
        Self {
            tcp_timeout: t.tcp.as_secs(),
            udp_timeout: t.udp.as_secs(),
            default_timeout: t.other.as_secs(),
        }
    }
}

/// A firewall rule as written: `port`, `proto`, and exactly one of `host`, `group`, `groups`
/// or `cidr` (`host = "any"` for every peer).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    port: PortSpec,
    proto: Proto,
    host: Option<String>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    cidr: Option<ipnet::Ipv4Net>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpec {
    Number(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(try_from = "RawRule")]
struct RuleSpec(Rule);

impl TryFrom<PortSpec> for Ports {
    type Error = String;
    fn try_from(spec: PortSpec) -> Result<Self, String> {
        let text = match spec {
            PortSpec::Number(0) => return Err("port 0 is not a port".into()),
            PortSpec::Number(n) => return Ok(Self::Range(n, n)),
            PortSpec::Text(text) => text,
        };
        if text == "any" {
            return Ok(Self::Any);
        }
        let bad = || {
            format!("port {text:?} is not `any`, a port such as 443, or a range such as 8000-8100")
        };
        let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(Self::Range(lo, hi))
    }
}

impl TryFrom<RawRule> for RuleSpec {
    type Error = String;
    fn try_from(raw: RawRule) -> Result<Self, String> {
        let ports = Ports::try_from(raw.port)?;
        let mut peers = Vec::new();
        if let Some(host) = raw.host {
            peers.push(if host == "any" {
                PeerMatch::Any
            } else {
                PeerMatch::Host(host)
            });
        }
        if let Some(group) = raw.group {
            peers.push(PeerMatch::Group(group));
        }
        if let Some(groups) = raw.groups {
            if groups.is_empty() {
                return Err("`groups` is empty; name at least one group".into());
            }
            peers.push(PeerMatch::Groups(groups));
        }
        if let Some(cidr) = raw.cidr {
            peers.push(PeerMatch::Cidr(cidr.trunc()));
        }
        let peer = match peers.len() {
            1 => peers.remove(0),
            0 => return Err(
                "a rule needs one of host, group, groups or cidr (host = \"any\" for every peer)"
                    .into(),
            ),
            _ => return Err("a rule takes only one of host, group, groups and cidr".into()),
        };
        Ok(Self(Rule {
            proto: raw.proto,
            ports,
            peer,
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTun {
    name: TunName,
    mtu: Mtu,
    offload: bool,
    busy_poll_us: BusyPollUs,
}

impl Default for RawTun {
    fn default() -> Self {
        Self {
            name: TunName("rma0".into()),
            mtu: Mtu(DEFAULT_MTU),
            offload: true,
            busy_poll_us: BusyPollUs(crate::busy_poll::DEFAULT_MAX),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDns {
    enabled: bool,
    domain: String,
    systemd_resolved: bool,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: "mesh".into(),
            systemd_resolved: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStatus {
    socket: PathBuf,
}

impl Default for RawStatus {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/meshd/meshd.sock"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWireGuard {
    /// Seconds; 0 turns keepalives off.
    persistent_keepalive: u16,
    port_mapping: bool,
}

impl Default for RawWireGuard {
    fn default() -> Self {
        Self {
            persistent_keepalive: DEFAULT_KEEPALIVE_SECS,
            port_mapping: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLighthouse {
    name: String,
    address: LighthouseAddr,
    /// Seconds; 0 never parks.
    #[serde(default = "default_park_after")]
    park_after: u32,
    /// `host:port`, a host alone for port 443, or "off".
    tcp: Option<String>,
    /// `http://[user:password@]host:port`.
    proxy: Option<String>,
}

/// `host:port`, or a host alone for the lighthouse's default port.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct LighthouseAddr(LighthouseAddress);

impl TryFrom<String> for LighthouseAddr {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        LighthouseAddress::parse(&text).map(Self)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticPeer {
    mesh_ip: Ipv4Addr,
    endpoints: Endpoints,
}

type ListenAddr = rma_daemon::config::ListenAddr<DEFAULT_PORT>;

fn default_listen() -> ListenAddr {
    ListenAddr::any()
}

/// Linux interface names are at most 15 bytes.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct TunName(String);

impl TryFrom<String> for TunName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if valid {
            Ok(Self(name))
        } else {
            Err(format!(
                "{name:?} is not an interface name (1 to 15 letters, digits, '-', '_', '.')"
            ))
        }
    }
}

/// IPv4 needs 576 bytes; WireGuard's overhead must still fit a 65535-byte UDP datagram.
#[derive(Deserialize)]
#[serde(try_from = "u16")]
struct Mtu(u16);

#[derive(Deserialize)]
#[serde(try_from = "u64")]
struct BusyPollUs(std::time::Duration);

impl TryFrom<u64> for BusyPollUs {
    type Error = String;
    fn try_from(us: u64) -> Result<Self, String> {
        let limit = crate::busy_poll::LIMIT;
        let window = std::time::Duration::from_micros(us);
        if window <= limit {
            Ok(Self(window))
        } else {
            Err(format!(
                "busy_poll_us {us} is over {} (a spin that long costs more than a wakeup)",
                limit.as_micros()
            ))
        }
    }
}

impl TryFrom<u16> for Mtu {
    type Error = String;
    fn try_from(mtu: u16) -> Result<Self, String> {
        if (576..=65_000).contains(&mtu) {
            Ok(Self(mtu))
        } else {
            Err(format!("MTU {mtu} is outside 576..=65000"))
        }
    }
}

/// One or more `host:port` endpoints, resolved when the config is read.
#[derive(Deserialize)]
#[serde(try_from = "Vec<String>")]
struct Endpoints(Vec<SocketAddr>);

impl TryFrom<Vec<String>> for Endpoints {
    type Error = String;
    fn try_from(list: Vec<String>) -> Result<Self, String> {
        if list.is_empty() {
            return Err("a static peer needs at least one endpoint".into());
        }
        let mut out = Vec::new();
        for endpoint in &list {
            let resolved = endpoint
                .to_socket_addrs()
                .map_err(|e| format!("endpoint {endpoint:?}: {e} (expected host:port)"))?;
            out.extend(resolved.filter(SocketAddr::is_ipv4));
        }
        if out.is_empty() {
            return Err(format!("endpoints {list:?} have no IPv4 address"));
        }
        Ok(Self(out))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&rma_daemon::config::read(path)?, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = rma_daemon::config::parse_toml(text, path)?;
        let resolve = |p: PathBuf| rma_daemon::config::resolve(path, p);
        let mut seen = std::collections::HashSet::new();
        for peer in &raw.static_peers {
            if !seen.insert(peer.mesh_ip) {
                return Err(ConfigError::semantic(
                    path,
                    format!("static_peer {} is listed twice", peer.mesh_ip),
                ));
            }
        }
        let log = raw.log.validate(path)?;
        let dns_domain = match raw.dns.enabled {
            true => Some(
                crate::dns::Domain::parse(&raw.dns.domain)
                    .map_err(|e| ConfigError::semantic(path, format!("dns.domain {e}")))?,
            ),
            false => None,
        };
        let mut names = std::collections::HashSet::new();
        for lighthouse in &raw.lighthouses {
            if let Err(e) = lighthouse.name.parse::<rma_ca::NodeName>() {
                return Err(ConfigError::semantic(
                    path,
                    format!("lighthouse name {:?}: {e}", lighthouse.name),
                ));
            }
            if !names.insert(lighthouse.name.clone()) {
                return Err(ConfigError::semantic(
                    path,
                    format!("lighthouse {} is listed twice", lighthouse.name),
                ));
            }
        }
        let coordinators: Vec<crate::coordinator::Coordinator> = raw
            .coordinator
            .map(|c| c.urls.into_iter().map(|u| u.0).collect())
            .unwrap_or_default();
        for coordinator in &coordinators {
            if let crate::coordinator::Host::Name(name) = &coordinator.host
                && dns_domain.as_ref().and_then(|d| d.host_of(name)).is_none()
            {
                let domain = dns_domain
                    .as_ref()
                    .map_or_else(|| "none: [dns] is off".to_owned(), ToString::to_string);
                return Err(ConfigError::semantic(
                    path,
                    format!(
                        "[coordinator] {coordinator}: a name must be a node's name in the mesh domain (NAME.{domain}), which this node's mesh DNS resolves"
                    ),
                ));
            }
        }
        if !raw.service.is_empty() && coordinators.is_empty() {
            return Err(ConfigError::semantic(
                path,
                "[[service]] entries need a [coordinator] with urls to register with",
            ));
        }
        let mut service_names = std::collections::HashSet::new();
        for service in &raw.service {
            if !service_names.insert(service.name.clone()) {
                return Err(ConfigError::semantic(
                    path,
                    format!("service {} is listed twice", service.name),
                ));
            }
            if !service.health.starts_with('/') {
                return Err(ConfigError::semantic(
                    path,
                    format!(
                        "service {}: health {:?} must be a path such as /health",
                        service.name, service.health
                    ),
                ));
            }
            check_runner(service).map_err(|m| {
                ConfigError::semantic(path, format!("service {}: {m}", service.name))
            })?;
        }
        Ok(Config {
            coordinators,
            worker: WorkerSettings {
                worker_type: raw.worker.worker_type.map(|t| {
                    match t {
                        WorkerType::Cpu => "cpu",
                        WorkerType::Gpu => "gpu",
                        WorkerType::Storage => "storage",
                        WorkerType::Edge => "edge",
                    }
                    .to_owned()
                }),
                gpu_memory: raw.worker.gpu_memory,
                disk_path: raw
                    .worker
                    .disk_path
                    .map_or_else(|| PathBuf::from("/"), &resolve),
                storage_min_free: raw
                    .worker
                    .storage_min_free
                    .map_or(DEFAULT_STORAGE_MIN_FREE, |b| b.0),
            },
            services: raw
                .service
                .into_iter()
                .map(|s| {
                    let runner = match (s.exec, s.unit) {
                        (Some(argv), _) => Runner::Exec(Exec {
                            argv,
                            user: s.user,
                            working_dir: s.working_dir.map(&resolve),
                            env: s.env,
                        }),
                        (None, Some(unit)) => Runner::Unit(unit),
                        (None, None) => Runner::External,
                    };
                    LocalService {
                        offer: Service {
                            name: s.name,
                            port: s.port,
                            health: s.health,
                        },
                        runner,
                        stop_grace: s
                            .stop_grace
                            .map_or(crate::services::spec::DEFAULT_STOP_GRACE, |d| d.0),
                        start_timeout: s
                            .start_timeout
                            .map_or(crate::services::spec::DEFAULT_START_TIMEOUT, |d| d.0),
                    }
                })
                .collect(),
            pki: raw.pki.resolve(path),
            listen: raw.listen.0,
            tun: Tun {
                name: raw.tun.name.0,
                mtu: raw.tun.mtu.0,
                offload: raw.tun.offload,
                busy_poll: raw.tun.busy_poll_us.0,
            },
            status_socket: resolve(raw.status.socket),
            keepalive: (raw.wireguard.persistent_keepalive > 0)
                .then_some(raw.wireguard.persistent_keepalive),
            static_peers: raw
                .static_peers
                .into_iter()
                .map(|p| StaticPeer {
                    mesh_ip: p.mesh_ip,
                    endpoints: p.endpoints.0,
                })
                .collect(),
            lighthouses: raw
                .lighthouses
                .into_iter()
                .map(|l| {
                    let tcp = match l.tcp.as_deref() {
                        Some("off") => None,
                        None => Some(l.address.0.with_port(DEFAULT_TCP_PORT)),
                        Some(text) => Some(
                            LighthouseAddress::parse_with_port(text, DEFAULT_TCP_PORT).map_err(
                                |e| {
                                    ConfigError::semantic(
                                        path,
                                        format!("lighthouse {} tcp: {e}", l.name),
                                    )
                                },
                            )?,
                        ),
                    };
                    let proxy = match (l.proxy.as_deref(), &tcp) {
                        (None, _) => None,
                        (Some(_), None) => {
                            return Err(ConfigError::semantic(
                                path,
                                format!("lighthouse {}: a proxy carries the TCP link, which tcp = \"off\" turns off", l.name),
                            ));
                        }
                        (Some(text), Some(_)) => Some(crate::http_proxy::HttpProxy::parse(text).map_err(|e| {
                            ConfigError::semantic(path, format!("lighthouse {} {e}", l.name))
                        })?),
                    };
                    Ok(Lighthouse {
                        name: l.name,
                        address: l.address.0,
                        park_after: (l.park_after > 0)
                            .then(|| std::time::Duration::from_secs(l.park_after.into())),
                        tcp,
                        proxy,
                    })
                })
                .collect::<Result<_, ConfigError>>()?,
            firewall: Policy {
                inbound: raw.firewall.inbound.into_iter().map(|r| r.0).collect(),
                outbound: raw.firewall.outbound.into_iter().map(|r| r.0).collect(),
                inbound_action: raw.firewall.inbound_action,
                outbound_action: raw.firewall.outbound_action,
                timeouts: Timeouts {
                    tcp: std::time::Duration::from_secs(raw.firewall.conntrack.tcp_timeout),
                    udp: std::time::Duration::from_secs(raw.firewall.conntrack.udp_timeout),
                    other: std::time::Duration::from_secs(raw.firewall.conntrack.default_timeout),
                },
            },
            metrics: raw.metrics.listen(),
            dns_systemd_resolved: raw.dns.systemd_resolved && dns_domain.is_some(),
            port_mapping: raw.wireguard.port_mapping,
            dns: dns_domain,
            log,
            enrollment: raw.enrollment.map(|e| e.validate(path)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[pki]\nca = \"ca.crt\"\ncert = \"node.crt\"\nkey = \"/etc/meshd/node.key\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/meshd/meshd.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn coordinator_services_and_worker_declarations() {
        let config = parse(&format!(
            "{MINIMAL}[coordinator]\nurls = [\"http://10.42.0.1:8080\", \"http://10.42.0.2:8080/\"]\n\
             [worker]\ntype = \"gpu\"\ngpu_memory = \"24 GiB\"\n\
             [[service]]\nname = \"llm-inference\"\nport = 8200\n"
        ))
        .unwrap();
        let literal: Vec<_> = config.coordinators.iter().map(|c| c.literal()).collect();
        assert_eq!(
            literal,
            [
                Some("10.42.0.1:8080".parse::<SocketAddr>().unwrap()),
                Some("10.42.0.2:8080".parse().unwrap())
            ]
        );
        let named = parse(&format!(
            "{MINIMAL}[coordinator]\nurls = [\"http://routerd.mesh:8080\"]\n"
        ))
        .unwrap();
        assert_eq!(
            named.coordinators[0].to_string(),
            "http://routerd.mesh:8080"
        );
        for (extra, why) in [
            ("", "routerd.example.org"),
            ("[dns]\nenabled = false\n", "routerd.mesh"),
            ("[dns]\ndomain = \"corp.mesh\"\n", "routerd.mesh"),
        ] {
            let e = error(&format!(
                "{MINIMAL}{extra}[coordinator]\nurls = [\"http://{why}:8080\"]\n"
            ));
            assert!(e.contains("mesh domain"), "{e}");
        }
        assert_eq!(config.worker.worker_type.as_deref(), Some("gpu"));
        assert_eq!(config.services[0].offer.health, "/health");
        assert_eq!(config.services[0].runner, Runner::External);
        assert!(parse(MINIMAL).unwrap().coordinators.is_empty());
        let e = error(&format!("{MINIMAL}[[service]]\nname = \"x\"\nport = 1\n"));
        assert!(e.contains("need a [coordinator]"), "{e}");
        let e = error(&format!(
            "{MINIMAL}[coordinator]\nurls = [\"https://routerd.example\"]\n"
        ));
        assert!(e.contains("routerd mesh URL"), "{e}");
        let e = error(&format!("{MINIMAL}[worker]\ntype = \"tpu\"\n"));
        assert!(e.contains("type"), "{e}");
    }

    #[test]
    fn a_lighthouse_has_a_tcp_address_by_default_and_maybe_a_proxy() {
        let lighthouse = |extra: &str| {
            format!(
                "{MINIMAL}[[lighthouse]]\nname = \"lh-1\"\naddress = \"lh1.example.org:4243\"\n{extra}"
            )
        };
        let plain = parse(&lighthouse("")).unwrap();
        let l = &plain.lighthouses[0];
        assert_eq!(l.tcp.as_ref().unwrap().to_string(), "lh1.example.org:443");
        assert_eq!(l.proxy, None);
        let own = parse(&lighthouse(
            "tcp = \"198.51.100.7:8443\"\nproxy = \"http://10.0.0.1:3128\"\n",
        ))
        .unwrap();
        let l = &own.lighthouses[0];
        assert_eq!(l.tcp.as_ref().unwrap().to_string(), "198.51.100.7:8443");
        assert_eq!(
            l.proxy.as_ref().unwrap().to_string(),
            "http://10.0.0.1:3128"
        );
        assert_eq!(
            parse(&lighthouse("tcp = \"off\"\n")).unwrap().lighthouses[0].tcp,
            None
        );
        let e = error(&lighthouse(
            "tcp = \"off\"\nproxy = \"http://10.0.0.1:3128\"\n",
        ));
        assert!(e.contains("proxy carries the TCP link"), "{e}");
        let e = error(&lighthouse("proxy = \"socks5://10.0.0.1:1080\"\n"));
        assert!(e.contains("lighthouse lh-1 proxy"), "{e}");
        let e = error(&lighthouse("tcp = \"lh1:http\"\n"));
        assert!(e.contains("lighthouse lh-1 tcp"), "{e}");
    }

    #[test]
    fn mesh_dns_is_on_for_the_mesh_domain_unless_turned_off() {
        let on = parse(MINIMAL).unwrap().dns.unwrap();
        assert_eq!(on.to_string(), "mesh");
        let corp = parse(&format!("{MINIMAL}[dns]\ndomain = \"corp.mesh\"\n")).unwrap();
        assert_eq!(corp.dns.unwrap().to_string(), "corp.mesh");
        assert!(parse(MINIMAL).unwrap().dns_systemd_resolved);
        let off = parse(&format!("{MINIMAL}[dns]\nenabled = false\n")).unwrap();
        assert_eq!((off.dns, off.dns_systemd_resolved), (None, false));
        let own = parse(&format!("{MINIMAL}[dns]\nsystemd_resolved = false\n")).unwrap();
        assert_eq!(
            (own.dns.unwrap().to_string(), own.dns_systemd_resolved),
            ("mesh".to_owned(), false)
        );
        let e = error(&format!("{MINIMAL}[dns]\ndomain = \"Mesh\"\n"));
        assert!(e.contains("dns.domain") && e.contains("lowercase"), "{e}");
        let e = error(&format!("{MINIMAL}[dns]\nport = 53\n"));
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn service_runners_are_read_and_their_mistakes_named() {
        let coordinator = "[coordinator]\nurls = [\"http://10.42.0.1:8080\"]\n";
        let config = parse(&format!(
            "{MINIMAL}{coordinator}[worker]\ntype = \"storage\"\nstorage_min_free = \"2TiB\"\n\
             [[service]]\nname = \"rag-embeddings\"\nport = 8101\n\
             exec = [\"/usr/bin/rag\", \"--threads\", \"4\"]\nuser = \"rag\"\nworking_dir = \"rag\"\n\
             env = {{ MODEL = \"bge-small\" }}\nstop_grace = \"3s\"\nstart_timeout = \"2m\"\n\
             [[service]]\nname = \"vision-ocr\"\nport = 8102\nunit = \"rma-ocr.service\"\n"
        ))
        .unwrap();
        assert_eq!(config.worker.worker_type.as_deref(), Some("storage"));
        assert_eq!(config.worker.storage_min_free, 2 << 40);
        let rag = &config.services[0];
        let Runner::Exec(exec) = &rag.runner else {
            panic!("{:?}", rag.runner)
        };
        assert_eq!(exec.argv, ["/usr/bin/rag", "--threads", "4"]);
        assert_eq!(exec.user.as_deref(), Some("rag"));
        assert!(
            exec.working_dir.as_ref().unwrap().ends_with("rag")
                && exec.working_dir.as_ref().unwrap().is_absolute()
        );
        assert_eq!(exec.env["MODEL"], "bge-small");
        assert_eq!(
            (rag.stop_grace.as_secs(), rag.start_timeout.as_secs()),
            (3, 120)
        );
        assert_eq!(
            config.services[1].runner,
            Runner::Unit("rma-ocr.service".into())
        );
        for (bad, why) in [
            ("exec = [\"/bin/x\"]\nunit = \"x.service\"", "not both"),
            ("exec = []", "exec is empty"),
            ("exec = [\"x\"]", "absolute path"),
            ("unit = \"x.socket\"", "service unit name"),
            ("unit = \"../x.service\"", "service unit name"),
            ("user = \"nobody\"", "need `exec`"),
            ("exec = [\"/bin/x\"]\nenv = { RMA_PORT = \"1\" }", "RMA_"),
            ("exec = [\"/bin/x\"]\nstop_grace = \"soon\"", "stop_grace"),
        ] {
            let e = error(&format!(
                "{MINIMAL}{coordinator}[[service]]\nname = \"x\"\nport = 1\n{bad}\n"
            ));
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_and_relative_paths() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.pki.ca, Path::new("/etc/meshd/ca.crt"));
        assert_eq!(config.pki.key, Path::new("/etc/meshd/node.key"));
        assert_eq!(config.listen, "0.0.0.0:4242".parse().unwrap());
        assert_eq!(
            config.tun,
            Tun {
                name: "rma0".into(),
                mtu: DEFAULT_MTU,
                offload: true,
                busy_poll: crate::busy_poll::DEFAULT_MAX,
            }
        );
        assert_eq!(config.keepalive, Some(DEFAULT_KEEPALIVE_SECS));
        assert!(config.static_peers.is_empty());
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn static_peers_and_overrides() {
        let text = format!(
            "listen = \"10.0.0.1\"\n{MINIMAL}[tun]\nname = \"mesh0\"\nmtu = 1380\noffload = false\nbusy_poll_us = 40\n\
             [wireguard]\npersistent_keepalive = 0\n\
             [[static_peer]]\nmesh_ip = \"10.42.0.2\"\nendpoints = [\"192.0.2.1:4242\", \"127.0.0.1:5000\"]\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.listen, "10.0.0.1:4242".parse().unwrap());
        assert_eq!(config.tun.mtu, 1380);
        assert!(!config.tun.offload);
        assert_eq!(config.tun.busy_poll, std::time::Duration::from_micros(40));
        let over = format!("{MINIMAL}[tun]\nbusy_poll_us = 5000\n");
        let error = error(&over);
        assert!(error.contains("busy_poll_us 5000"), "{error}");
        assert_eq!(config.keepalive, None);
        assert_eq!(config.static_peers[0].mesh_ip, Ipv4Addr::new(10, 42, 0, 2));
        assert_eq!(config.static_peers[0].endpoints.len(), 2);
    }

    #[test]
    fn firewall_rules() {
        let text = format!(
            "{MINIMAL}[firewall]\ninbound_action = \"reject\"\n\
             [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n\
             [[firewall.inbound]]\nport = 22\nproto = \"tcp\"\ngroup = \"admins\"\n\
             [[firewall.inbound]]\nport = \"8000-8100\"\nproto = \"tcp\"\ngroups = [\"workers\", \"gpu\"]\n\
             [[firewall.inbound]]\nport = \"any\"\nproto = \"icmp\"\ncidr = \"10.42.0.0/24\"\n"
        );
        let policy = parse(&text).unwrap().firewall;
        assert_eq!(policy.inbound_action, Action::Reject);
        assert_eq!(policy.outbound_action, Action::Drop);
        assert_eq!(
            policy.outbound,
            [Rule {
                proto: Proto::Any,
                ports: Ports::Any,
                peer: PeerMatch::Any
            }]
        );
        assert_eq!(
            policy.inbound[0],
            Rule {
                proto: Proto::Tcp,
                ports: Ports::Range(22, 22),
                peer: PeerMatch::Group("admins".into())
            }
        );
        assert_eq!(policy.inbound[1].ports, Ports::Range(8000, 8100));
        assert_eq!(
            policy.inbound[1].peer,
            PeerMatch::Groups(vec!["workers".into(), "gpu".into()])
        );
        assert_eq!(
            policy.inbound[2].peer,
            PeerMatch::Cidr("10.42.0.0/24".parse().unwrap())
        );
        assert!(
            parse(MINIMAL).unwrap().firewall.inbound.is_empty(),
            "default deny"
        );

        let rule = |body: &str| error(&format!("{MINIMAL}[[firewall.inbound]]\n{body}"));
        let err = rule("port = \"22\"\nproto = \"tcp\"\n");
        assert!(
            err.contains(":5:") && err.contains("needs one of host, group"),
            "{err}"
        );
        let err = rule("port = \"22\"\nproto = \"tcp\"\nhost = \"a\"\ngroup = \"b\"\n");
        assert!(err.contains("only one of"), "{err}");
        let err = rule("port = \"90-80\"\nproto = \"tcp\"\nhost = \"any\"\n");
        assert!(err.contains("not `any`, a port"), "{err}");
        let err = rule("port = \"any\"\nproto = \"sctp\"\nhost = \"any\"\n");
        assert!(
            err.contains(":7:9: firewall.inbound.proto: unknown variant `sctp`"),
            "{err}"
        );
        let err = rule("port = 22\nproto = \"tcp\"\nhots = \"a\"\n");
        assert!(err.contains("unknown field `hots`"), "{err}");
    }

    #[test]
    fn errors_name_the_line() {
        let err = error(&format!("{MINIMAL}[tun]\nmtu = 70000\n"));
        assert!(
            err.starts_with("/etc/meshd/meshd.toml:6:7: tun.mtu: "),
            "{err}"
        );
        let err = error(&format!("{MINIMAL}[tun]\nmtu = 100\n"));
        assert!(err.contains("MTU 100 is outside"), "{err}");
        let err = error(&format!("{MINIMAL}[tun]\nname = \"much-too-long-name\"\n"));
        assert!(
            err.contains("not an interface name") && err.contains(":6:"),
            "{err}"
        );
        let err = error(&format!("{MINIMAL}[tun]\nmtuu = 1400\n"));
        assert!(
            err.contains("unknown field `mtuu`") && err.contains(":6:1:"),
            "{err}"
        );
        let err = error(&format!("listen = \"nowhere\"\n{MINIMAL}"));
        assert!(
            err.contains("not an address") && err.contains(":1:"),
            "{err}"
        );
        let err = error("[pki]\nca = \"ca.crt\"\n");
        assert!(err.contains("missing field `cert`"), "{err}");
        let err = error(&format!(
            "{MINIMAL}[[static_peer]]\nmesh_ip = \"10.42.0.300\"\nendpoints = [\"1.2.3.4:1\"]\n"
        ));
        assert!(err.contains(":6:11: static_peer.mesh_ip: "), "{err}");
        let err = error(&format!(
            "{MINIMAL}[[static_peer]]\nmesh_ip = \"10.42.0.3\"\nendpoints = []\n"
        ));
        assert!(err.contains("at least one endpoint"), "{err}");
        let err = error(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"));
        assert!(err.contains(":6:"), "{err}");
        let twice = "[[static_peer]]\nmesh_ip = \"10.42.0.3\"\nendpoints = [\"1.2.3.4:1\"]\n";
        let err = error(&format!("{MINIMAL}{twice}{twice}"));
        assert!(err.contains("listed twice"), "{err}");
        let err = error("not toml at all");
        assert!(err.starts_with("/etc/meshd/meshd.toml:1:"), "{err}");
    }
}
