//! RMA Mesh pieces for a lab: a CA with node certificates, meshd configs, running nodes, and
//! their status read over the status socket.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use meshd::status::Status;
use rma_ca::test_ca::TestCa;
use rma_ca::{NodeCert, NodeKeys};
use time::OffsetDateTime;

use crate::lab::{Lab, Ns};
use crate::wait;

/// A binary of this workspace from the same target directory as the running executable: a
/// test (in `target/<profile>/deps/`) or a tool such as the benchmark (in `target/<profile>/`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable without a directory")?;
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().context("deps directory without a parent")?
    } else {
        dir
    };
    let path = profile_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p {name}`; `make e2e` does)",
        path.display()
    );
    Ok(path)
}

/// A test CA that writes what it issues into a directory.
#[derive(Debug)]
pub struct Pki {
    pub test: TestCa,
    dir: PathBuf,
    pub ca_path: PathBuf,
    /// The number of the last revocation list written by [`Pki::crl`]: like `rma-ca crl`, each
    /// new list gets a higher one.
    crl_number: std::sync::atomic::AtomicU64,
}

/// A node certificate and key, on disk.
#[derive(Debug)]
pub struct Issued {
    pub cert: NodeCert,
    pub keys: NodeKeys,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str, network: &str) -> anyhow::Result<Self> {
        let test = TestCa::with_network(name, network);
        let ca_path = dir.join(format!("{name}.crt"));
        std::fs::write(&ca_path, test.ca.to_pem())?;
        Ok(Self {
            test,
            dir: dir.to_owned(),
            ca_path,
            crl_number: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// An issuing CA this root signed for `network`, writing into the same directory: what it
    /// issues is presented with its certificate, and is trusted through the root's file.
    pub fn issuing(&self, name: &str, network: &str) -> Self {
        Self {
            test: self.test.issuing(name, network),
            dir: self.dir.clone(),
            ca_path: self.ca_path.clone(),
            crl_number: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Issues a certificate in group `workers`, valid from a day ago for thirty days.
    pub fn issue(&self, name: &str, mesh_ip: Ipv4Addr) -> anyhow::Result<Issued> {
        self.issue_in(name, mesh_ip, "workers")
    }

    /// Issues a certificate in `groups` (comma-separated), valid from a day ago for thirty days.
    pub fn issue_in(&self, name: &str, mesh_ip: Ipv4Addr, groups: &str) -> anyhow::Result<Issued> {
        let (cert, keys) = self.test.node_in(name, mesh_ip, groups);
        self.write(name, cert, keys)
    }

    /// Issues a certificate in group `workers` with the given validity.
    pub fn issue_valid(
        &self,
        name: &str,
        mesh_ip: Ipv4Addr,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<Issued> {
        let (cert, keys) = self.test.node_valid(name, mesh_ip, not_before, not_after);
        self.write(name, cert, keys)
    }

    fn write(&self, name: &str, cert: NodeCert, keys: NodeKeys) -> anyhow::Result<Issued> {
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.to_pem())?;
        crate::lab::write_private(&key_path, keys.to_pem().as_bytes())?;
        Ok(Issued {
            cert,
            keys,
            cert_path,
            key_path,
        })
    }

    /// Writes the next revocation list, naming `revoked`, to `revoked.crl`.
    pub fn crl(&self, revoked: &[&NodeCert]) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("revoked.crl");
        let number = self
            .crl_number
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.write_crl(&path, number, revoked)?;
        Ok(path)
    }

    /// Writes revocation list `number` naming `revoked` to `path` (atomically, by rename).
    pub fn write_crl(&self, path: &Path, number: u64, revoked: &[&NodeCert]) -> anyhow::Result<()> {
        let staged = path.with_extension("new");
        std::fs::write(&staged, self.test.crl(number, revoked).to_pem())?;
        std::fs::rename(&staged, path)?;
        Ok(())
    }
}

/// A meshd node running in a lab.
#[derive(Debug)]
pub struct MeshNode {
    pub name: String,
    pub ns: Ns,
    pub mesh_ip: Ipv4Addr,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub proc: usize,
}

/// How to configure one meshd.
#[derive(Debug)]
pub struct NodeConfig<'a> {
    pub name: &'a str,
    pub ca: &'a Path,
    pub issued: &'a Issued,
    pub crl: Option<&'a Path>,
    pub static_peers: &'a [(Ipv4Addr, SocketAddr)],
    /// The `[firewall]` part of the config (TOML); `None` allows everything both ways.
    pub firewall: Option<&'a str>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Lighthouses by name and QUIC address.
    pub lighthouses: &'a [(String, SocketAddr)],
    /// The TUN MTU; meshd's default (1380) if `None`.
    pub mtu: Option<u16>,
    /// `[tun] busy_poll_us`; meshd's default if `None`.
    pub busy_poll_us: Option<u32>,
    /// Each lighthouse's `park_after` in seconds; meshd's default (300) if `None`.
    pub park_after: Option<u32>,
    /// More TOML appended to the config, such as `[coordinator]` and `[[service]]`.
    pub extra: &'a str,
}

/// Firewall rules that let every packet through, for tests about something else.
pub const ALLOW_ALL: &str = "[[firewall.inbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n\n\
                             [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n";

/// Writes `<name>.toml` for meshd in the lab directory.
pub fn write_config(lab: &Lab, node: &NodeConfig<'_>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let socket = lab.dir().join(format!("{}.sock", node.name));
    let mut text = format!(
        "listen = \"0.0.0.0:4242\"\n\n[pki]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        node.ca, node.issued.cert_path, node.issued.key_path
    );
    if let Some(crl) = node.crl {
        text.push_str(&format!("crl = {crl:?}\n"));
    }
    let mtu = node.mtu.map(|m| format!("mtu = {m}\n")).unwrap_or_default();
    let busy_poll = node
        .busy_poll_us
        .map(|us| format!("busy_poll_us = {us}\n"))
        .unwrap_or_default();
    text.push_str(&format!(
        "\n[tun]\nname = \"rma0\"\n{mtu}{busy_poll}\n[status]\nsocket = {socket:?}\n\n[log]\nlevel = \"info,meshd=debug\"\n"
    ));
    if let Some(addr) = node.metrics {
        text.push_str(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
    }
    text.push('\n');
    text.push_str(node.firewall.unwrap_or(ALLOW_ALL));
    for (name, address) in node.lighthouses {
        text.push_str(&format!(
            "\n[[lighthouse]]\nname = \"{name}\"\naddress = \"{address}\"\n"
        ));
        if let Some(seconds) = node.park_after {
            text.push_str(&format!("park_after = {seconds}\n"));
        }
    }
    for (mesh_ip, endpoint) in node.static_peers {
        text.push_str(&format!(
            "\n[[static_peer]]\nmesh_ip = \"{mesh_ip}\"\nendpoints = [\"{endpoint}\"]\n"
        ));
    }
    text.push('\n');
    text.push_str(node.extra);
    let config = lab.dir().join(format!("{}.toml", node.name));
    std::fs::write(&config, text)?;
    Ok((config, socket))
}

/// Starts meshd in `ns` and waits until its status socket answers.
pub fn start(lab: &mut Lab, ns: &Ns, node: &NodeConfig<'_>) -> anyhow::Result<MeshNode> {
    start_binary(lab, ns, node, &binary("meshd")?)
}

/// Starts the meshd at `meshd` (another build, for a benchmark against it) as [`start`] does.
pub fn start_binary(
    lab: &mut Lab,
    ns: &Ns,
    node: &NodeConfig<'_>,
    meshd: &Path,
) -> anyhow::Result<MeshNode> {
    start_with_env(lab, ns, node, meshd, &[])
}

/// As [`start_binary`], with extra environment variables (a `PATH` with stand-in tools).
pub fn start_with_env(
    lab: &mut Lab,
    ns: &Ns,
    node: &NodeConfig<'_>,
    meshd: &Path,
    env: &[(&str, &Path)],
) -> anyhow::Result<MeshNode> {
    let (config, socket) = write_config(lab, node)?;
    let started = Started {
        name: node.name,
        mesh_ip: node.issued.cert.mesh_ip(),
        config,
        socket,
    };
    start_config(lab, ns, started, meshd, env)
}

/// A meshd config already written (by `meshd join`, say): the node's name and mesh IP, and
/// where its config and status socket are.
#[derive(Debug)]
pub struct Started<'a> {
    pub name: &'a str,
    pub mesh_ip: Ipv4Addr,
    pub config: PathBuf,
    pub socket: PathBuf,
}

/// Starts `meshd` with a config file in `ns` and waits until its status socket answers.
pub fn start_config(
    lab: &mut Lab,
    ns: &Ns,
    node: Started<'_>,
    meshd: &Path,
    env: &[(&str, &Path)],
) -> anyhow::Result<MeshNode> {
    start_config_with(lab, ns, node, |lab, name, args| {
        lab.spawn_env(ns, name, meshd, args, env)
    })
}

/// As [`start_config`], with meshd started by `spawn(lab, name, args)`: for a machine whose
/// programs run in more namespaces than the network's.
pub fn start_config_with(
    lab: &mut Lab,
    ns: &Ns,
    node: Started<'_>,
    spawn: impl FnOnce(&mut Lab, &str, &[&str]) -> anyhow::Result<usize>,
) -> anyhow::Result<MeshNode> {
    let proc = spawn(
        lab,
        node.name,
        &["--config", &node.config.to_string_lossy()],
    )?;
    let mesh = MeshNode {
        name: node.name.to_owned(),
        ns: ns.clone(),
        mesh_ip: node.mesh_ip,
        config: node.config,
        socket: node.socket,
        proc,
    };
    wait::until(
        &format!("{} to serve its status socket", node.name),
        Duration::from_secs(10),
        || {
            if let Some(exit) = lab.proc(proc).exited() {
                return Some(Err(anyhow::anyhow!(
                    "{} exited with {exit}: {}",
                    node.name,
                    lab.proc(proc).log_text()
                )));
            }
            status(&mesh.socket).ok().map(|_| Ok(()))
        },
    )??;
    Ok(mesh)
}

/// One status snapshot from a running meshd.
pub fn status(socket: &Path) -> anyhow::Result<Status> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    std::io::Write::write_all(&mut stream, b"status\n")?;
    let mut json = Vec::new();
    stream.read_to_end(&mut json)?;
    Ok(serde_json::from_slice(&json)?)
}

impl MeshNode {
    pub fn status(&self) -> anyhow::Result<Status> {
        status(&self.socket)
    }

    /// Waits until this node has a session (a completed handshake) with the peer at `mesh_ip`.
    pub fn wait_session(&self, mesh_ip: Ipv4Addr, timeout: Duration) -> anyhow::Result<()> {
        let ip = mesh_ip.to_string();
        wait::until(
            &format!("{} to hold a session with {ip}", self.name),
            timeout,
            || {
                let status = self.status().ok()?;
                status
                    .peers
                    .iter()
                    .any(|p| p.mesh_ip == ip && p.last_handshake_secs.is_some())
                    .then_some(())
            },
        )
    }
}

/// A lighthouse running in a lab.
#[derive(Debug)]
pub struct LighthouseProc {
    pub name: String,
    pub ns: Ns,
    pub address: SocketAddr,
    pub config: PathBuf,
    pub metrics: SocketAddr,
    pub proc: usize,
}

impl LighthouseProc {
    /// Starts this lighthouse again (after it was stopped), as `name`, with the same
    /// namespace, address and config.
    pub fn start_again(&self, lab: &mut Lab, name: &str) -> anyhow::Result<LighthouseProc> {
        let SocketAddr::V4(address) = self.address else {
            anyhow::bail!("the lab is IPv4, not {}", self.address);
        };
        start_lighthouse(lab, &self.ns, name, &self.config, *address.ip())
    }

    /// What a node's config lists for this lighthouse.
    pub fn entry(&self) -> (String, SocketAddr) {
        (self.name.clone(), self.address)
    }
}

/// Writes `<name>.toml` for a lighthouse listening on `ip` (QUIC on the default port, the
/// reflector on the next, metrics on loopback).
pub fn write_lighthouse_config(
    lab: &Lab,
    ca: &Path,
    issued: &Issued,
    crl: Option<&Path>,
    ip: Ipv4Addr,
) -> anyhow::Result<PathBuf> {
    let name = issued.cert.name();
    let mut text = format!(
        "listen = \"{ip}:{}\"\n\n[pki]\nca = {ca:?}\ncert = {:?}\nkey = {:?}\n",
        rma_proto::lighthouse::DEFAULT_PORT,
        issued.cert_path,
        issued.key_path
    );
    if let Some(crl) = crl {
        text.push_str(&format!("crl = {crl:?}\n"));
    }
    text.push_str(
        "\n[metrics]\nlisten = \"127.0.0.1:9243\"\n\n[log]\nlevel = \"info,lighthouse=debug\"\n",
    );
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts a lighthouse in `ns` with `config` and waits until it serves.
/// lighthouse-1 (10.42.255.1, group `lighthouses`) on a public host of `net`, signed by `pki`.
pub fn start_public_lighthouse(
    net: &mut crate::internet::Internet,
    pki: &Pki,
) -> anyhow::Result<LighthouseProc> {
    let (ns, ip) = net.public_host("lighthouse")?;
    let issued = pki.issue_in("lighthouse-1", Ipv4Addr::new(10, 42, 255, 1), "lighthouses")?;
    let config = write_lighthouse_config(&net.lab, &pki.ca_path, &issued, None, ip)?;
    start_lighthouse(&mut net.lab, &ns, "lighthouse-1", &config, ip)
}

pub fn start_lighthouse(
    lab: &mut Lab,
    ns: &Ns,
    name: &str,
    config: &Path,
    ip: Ipv4Addr,
) -> anyhow::Result<LighthouseProc> {
    let binary = binary("lighthouse")?;
    let proc = lab.spawn(ns, name, &binary, &["--config", &config.to_string_lossy()])?;
    wait::until(&format!("{name} to serve"), Duration::from_secs(10), || {
        let text = lab.proc(proc).log_text();
        if let Some(exit) = lab.proc(proc).exited() {
            return Some(Err(anyhow::anyhow!("{name} exited with {exit}: {text}")));
        }
        text.contains("lighthouse up").then_some(Ok(()))
    })??;
    Ok(LighthouseProc {
        name: name.to_owned(),
        ns: ns.clone(),
        address: SocketAddr::from((ip, rma_proto::lighthouse::DEFAULT_PORT)),
        config: config.to_owned(),
        metrics: SocketAddr::from(([127, 0, 0, 1], 9243)),
        proc,
    })
}

impl MeshNode {
    /// Waits until every configured lighthouse holds this node's registration and has seen its
    /// WireGuard socket.
    /// How the first lighthouse connection travels while it is up (`quic`, `tcp`).
    pub fn lighthouse_transport(&self) -> Option<String> {
        let status = self.status().ok()?;
        let lighthouse = status.lighthouses.first()?;
        lighthouse
            .connected
            .then(|| lighthouse.transport.clone())
            .flatten()
    }

    /// Waits until the first lighthouse connection is up over `transport`.
    pub fn wait_transport(&self, transport: &str, timeout: Duration) -> anyhow::Result<()> {
        wait::until(
            &format!("{} to reach its lighthouse over {transport}", self.name),
            timeout,
            || (self.lighthouse_transport().as_deref() == Some(transport)).then_some(()),
        )
    }

    pub fn wait_registered(&self, timeout: Duration) -> anyhow::Result<()> {
        wait::until(
            &format!("{} to register with its lighthouses", self.name),
            timeout,
            || {
                let status = self.status().ok()?;
                (!status.lighthouses.is_empty()
                    && status
                        .lighthouses
                        .iter()
                        .all(|l| l.connected && l.observed.is_some()))
                .then_some(())
            },
        )
    }

    /// This node's view of the peer with `mesh_ip`.
    pub fn peer(&self, mesh_ip: Ipv4Addr) -> Option<meshd::status::PeerStatus> {
        let ip = mesh_ip.to_string();
        self.status()
            .ok()?
            .peers
            .into_iter()
            .find(|p| p.mesh_ip == ip)
    }
}

/// Starts routerd in `ns` with `config` and waits until it serves.
pub fn start_routerd(lab: &mut Lab, ns: &Ns, config: &Path) -> anyhow::Result<usize> {
    let handle = lab.spawn(
        ns,
        "routerd",
        &binary("routerd")?,
        &["--config", &config.to_string_lossy()],
    )?;
    wait::until("routerd to listen", Duration::from_secs(10), || {
        let proc = lab.proc(handle);
        if let Some(exit) = proc.exited() {
            return Some(Err(anyhow::anyhow!(
                "routerd exited with {exit}: {}",
                proc.log_text()
            )));
        }
        proc.log_text().contains("routerd up").then_some(Ok(()))
    })??;
    Ok(handle)
}
