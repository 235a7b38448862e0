//! RMA Mesh pieces for a lab: a CA with node certificates, meshd configs, running nodes, and
//! their status read over the status socket.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use meshd::status::Status;
use rma_ca::{
    CaCert, CaKey, CaParams, CrlParams, Group, NodeCert, NodeCertParams, NodeKeys, Serial,
};
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
    pub ca: CaCert,
    key: CaKey,
    dir: PathBuf,
    pub ca_path: PathBuf,
}

/// A node certificate and key, on disk.
#[derive(Debug)]
pub struct Issued {
    pub cert: NodeCert,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str, network: &str) -> anyhow::Result<Self> {
        let key = CaKey::generate();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let ca = rma_ca::self_sign_ca(
            &key,
            &CaParams {
                name: name.parse()?,
                network: network.parse()?,
                not_before: now - time::Duration::days(30),
                not_after: now + time::Duration::days(365),
                serial: Serial::random(),
            },
        )?;
        let ca_path = dir.join(format!("{name}.crt"));
        std::fs::write(&ca_path, ca.to_pem())?;
        Ok(Self {
            ca,
            key,
            dir: dir.to_owned(),
            ca_path,
        })
    }

    /// Issues a certificate in group `workers`, valid from a day ago for thirty days.
    pub fn issue(&self, name: &str, mesh_ip: Ipv4Addr) -> anyhow::Result<Issued> {
        self.issue_in(name, mesh_ip, "workers")
    }

    /// Issues a certificate in `groups` (comma-separated), valid from a day ago for thirty days.
    pub fn issue_in(&self, name: &str, mesh_ip: Ipv4Addr, groups: &str) -> anyhow::Result<Issued> {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let (from, to) = (
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        );
        self.issue_full(name, mesh_ip, groups, from, to)
    }

    /// Issues a certificate in group `workers` with the given validity.
    pub fn issue_valid(
        &self,
        name: &str,
        mesh_ip: Ipv4Addr,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<Issued> {
        self.issue_full(name, mesh_ip, "workers", not_before, not_after)
    }

    fn issue_full(
        &self,
        name: &str,
        mesh_ip: Ipv4Addr,
        groups: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<Issued> {
        let keys = NodeKeys::generate();
        let cert = rma_ca::sign_node(
            &self.ca,
            &self.key,
            &NodeCertParams {
                name: name.parse()?,
                mesh_ip,
                groups: Group::parse_list(groups)?,
                keys: keys.public(),
                not_before,
                not_after,
                serial: Serial::random(),
            },
        )?;
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.to_pem())?;
        std::fs::write(&key_path, keys.to_pem().as_bytes())?;
        Ok(Issued {
            cert,
            cert_path,
            key_path,
        })
    }

    /// Writes a revocation list naming `revoked`.
    pub fn crl(&self, revoked: &[&NodeCert]) -> anyhow::Result<PathBuf> {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let crl = rma_ca::sign_crl(
            &self.ca,
            &self.key,
            &CrlParams {
                number: 1,
                this_update: now,
                next_update: now + time::Duration::days(7),
                revoked: revoked.iter().map(|c| (c.serial().clone(), now)).collect(),
            },
        )?;
        let path = self.dir.join("revoked.crl");
        std::fs::write(&path, crl.to_pem())?;
        Ok(path)
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
    text.push_str(&format!(
        "\n[tun]\nname = \"rma0\"\n\n[status]\nsocket = {socket:?}\n\n[log]\nlevel = \"info,meshd=debug\"\n"
    ));
    if let Some(addr) = node.metrics {
        text.push_str(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
    }
    text.push('\n');
    text.push_str(node.firewall.unwrap_or(ALLOW_ALL));
    for (mesh_ip, endpoint) in node.static_peers {
        text.push_str(&format!(
            "\n[[static_peer]]\nmesh_ip = \"{mesh_ip}\"\nendpoints = [\"{endpoint}\"]\n"
        ));
    }
    let config = lab.dir().join(format!("{}.toml", node.name));
    std::fs::write(&config, text)?;
    Ok((config, socket))
}

/// Starts meshd in `ns` and waits until its status socket answers.
pub fn start(lab: &mut Lab, ns: &Ns, node: &NodeConfig<'_>) -> anyhow::Result<MeshNode> {
    let (config, socket) = write_config(lab, node)?;
    let meshd = binary("meshd")?;
    let proc = lab.spawn(
        ns,
        node.name,
        &meshd,
        &["--config", &config.to_string_lossy()],
    )?;
    let mesh = MeshNode {
        name: node.name.to_owned(),
        ns: ns.clone(),
        mesh_ip: node.issued.cert.mesh_ip(),
        config,
        socket,
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
