//! The demo's system: a CA, five machines enrolled from their public keys, an internet with a
//! public lighthouse and four home sites behind NAT, routerd, three workers offering the
//! services they can run (routerd assigns them, meshd starts them), and what each step shows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use integration::internet::{Internet, Nat};
use integration::lab::{Lab, Ns};
use integration::{mesh, wait};
use rma_ca::NodeCert;
use serde_json::Value;
use toml::Value as Toml;

use crate::config_edit::{EditedConfig, entry};
use crate::shell::{Shell, Steps, shown};

mod show;

/// Every namespace of the demo is `rmademo-<role>`.
pub const NAME: &str = "rmademo";
const NETWORK: &str = "10.42.0.0/16";
/// routerd's public listener, as in the example config: where cloudflared would send calls.
const PUBLIC: &str = "127.0.0.1:8080";
const LIGHTHOUSE_PORT: u16 = rma_proto::lighthouse::DEFAULT_PORT;

/// A machine of the demo.
#[derive(Debug)]
struct Machine {
    name: &'static str,
    groups: &'static str,
    /// The NAT in front of it; `None` for the public host.
    nat: Option<Nat>,
    /// The catalog services it can run (the demo service stands in for each), and their
    /// ports; routerd decides which it runs.
    services: &'static [(&'static str, u16)],
    /// A GPU declared in its config (`[worker] gpu_memory`).
    gpu_memory: Option<&'static str>,
}

/// What worker-1 and worker-3 can run: every CPU service of the catalog.
const CPU_SERVICES: &[(&str, u16)] = &[
    ("rag-embeddings", 8101),
    ("document-processing", 8102),
    ("notes-coa", 8103),
    ("ner-extraction", 8104),
];

/// routerd first, so that it gets the first mesh IP (10.42.0.1) the example configs name.
const MACHINES: [Machine; 5] = [
    Machine {
        name: "routerd",
        groups: "routerd",
        nat: Some(Nat::Cone),
        services: &[],
        gpu_memory: None,
    },
    Machine {
        name: "lighthouse-1",
        groups: "lighthouses",
        nat: None,
        services: &[],
        gpu_memory: None,
    },
    Machine {
        name: "worker-1",
        groups: "workers",
        nat: Some(Nat::Cone),
        services: CPU_SERVICES,
        gpu_memory: None,
    },
    Machine {
        name: "worker-2",
        groups: "workers,gpu",
        nat: Some(Nat::Cone),
        services: &[("llm-inference", 8200), ("rag-embeddings", 8101)],
        gpu_memory: Some("24 GiB"),
    },
    Machine {
        name: "worker-3",
        groups: "workers",
        nat: Some(Nat::Symmetric),
        services: CPU_SERVICES,
        gpu_memory: None,
    },
];

/// Where the demo's files go and which examples it starts from.
#[derive(Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub configs: PathBuf,
}

/// The running system, after every step passed.
#[derive(Debug)]
pub struct Running {
    net: Internet,
    pub summary: String,
    hosts: BTreeMap<&'static str, Ns>,
    dir: PathBuf,
}

impl Running {
    /// Leaves it all running and says how to use and stop it.
    pub fn keep(self) {
        let routerd = &self.hosts["routerd"];
        let worker = &self.hosts["worker-2"];
        let meshd = mesh::binary("meshd").map(|p| p.display().to_string());
        let meshd = meshd.as_deref().unwrap_or("meshd");
        let dir = self.dir.display();
        self.net.into_lab().keep();
        println!("\nThe demo is still running (KEEP=1). Its files and logs are in {dir}. Try:");
        println!(
            "  {}",
            shown(
                Some(worker),
                meshd,
                &["status", "--config", &format!("{dir}/worker-2/meshd.toml")]
            )
        );
        println!(
            "  {}",
            shown(
                Some(routerd),
                "curl",
                &["-s", &format!("http://{PUBLIC}/service/rag/hello")]
            )
        );
        println!(
            "  {}",
            shown(
                Some(routerd),
                "curl",
                &["-s", &format!("http://{PUBLIC}/api/topology")]
            )
        );
        println!("Stop it with: make demo-stop");
    }
}

pub fn run(options: &Options, steps: &mut Steps) -> anyhow::Result<Running> {
    let dir = &options.dir;
    let sh = Shell { dir: dir.clone() };

    steps.start("A CA for the mesh, made offline on the operator's machine");
    sh.run(
        None,
        "rma-ca",
        &[
            "init",
            "--dir",
            "ca",
            "--name",
            "rma-demo",
            "--network",
            NETWORK,
        ],
    )?;

    steps.start("Enrollment: each machine makes its keys; only the public key goes to the CA");
    let mesh_ips = enroll(&sh)?;

    steps.start("The network: an internet, a public host, and four home sites behind NAT");
    let (net, hosts, lighthouse_ip) = build_network(dir)?;
    let mut system = System {
        sh,
        configs: options.configs.clone(),
        lighthouse: format!("{lighthouse_ip}:{LIGHTHOUSE_PORT}"),
        routerd_ip: mesh_ips["routerd"],
        hosts,
        net,
    };

    steps.start("The lighthouse, on the public host");
    let mut config = system.pki_config("lighthouse.toml", true)?;
    let ns = system.host("lighthouse-1");
    system.start(&ns, "lighthouse-1", "lighthouse", &mut config, |log| {
        log.contains("lighthouse up")
    })?;

    steps.start("routerd's machine: meshd, then routerd on its mesh IP");
    system.start_routerd()?;

    steps.start(
        "Three workers: meshd offers routerd what the machine can run; routerd assigns, and \
         meshd starts what it is given",
    );
    system.start_workers()?;

    steps.start("routerd's registry: what each worker offered, what it was given, and its state");
    let (offered, assigned) = system.show_registry()?;

    steps.start(
        "meshd status on worker-1: direct paths through cone NATs, a relayed one to the \
         symmetric NAT",
    );
    system.show_paths()?;

    steps.start("Service calls through routerd's public listener, where cloudflared sends them");
    let answered = system.show_calls()?;

    steps.start("What the catalog still lacks: /api/admin/gaps");
    let gaps = system.show_gaps()?;

    steps.start("A worker stops: its services start on another worker that offered them");
    let moved = system.show_failover()?;

    steps.start("The topology page");
    let routerd = system.host("routerd");
    println!(
        "  http://{PUBLIC}/ in routerd's namespace ({}): workers, services and routes, updated \
         every few seconds",
        routerd.name()
    );
    system.sh.run_quiet(
        Some(&routerd),
        "curl",
        &["-sf", "-o", "topology.html", &format!("http://{PUBLIC}/")],
    )?;
    steps.finish();

    let calls: Vec<String> = answered.iter().map(|(w, n)| format!("{w} {n}")).collect();
    let summary = format!(
        "demo: all {} steps passed: 5 machines enrolled, 3 workers registered (worker-3 relayed), \
         routerd assigned {assigned} of the {offered} services they offered, {} calls answered \
         ({}), 1 fast 503, {gaps} service below target, {moved}",
        steps.done,
        answered.values().sum::<u32>(),
        calls.join(", "),
    );
    Ok(Running {
        net: system.net,
        summary,
        hosts: system.hosts,
        dir: dir.clone(),
    })
}

/// Each machine makes its keys (meshd's keygen, or rma-ca's on the lighthouse, which runs no
/// meshd) and the CA signs the public key; then the CA publishes its revocation list. Returns
/// the mesh IP each machine got.
fn enroll(sh: &Shell) -> anyhow::Result<BTreeMap<&'static str, Ipv4Addr>> {
    let mut mesh_ips = BTreeMap::new();
    for machine in &MACHINES {
        let name = machine.name;
        std::fs::create_dir_all(sh.dir.join(name))?;
        let keygen = if machine.nat.is_some() {
            "meshd"
        } else {
            "rma-ca"
        };
        let key = format!("{name}/node.key");
        let public = format!("{name}/node.pub");
        let cert = format!("{name}/node.crt");
        sh.run_quiet(
            None,
            keygen,
            &["keygen", "--out-key", &key, "--out-pub", &public],
        )?;
        sh.run(
            None,
            "rma-ca",
            &[
                "sign",
                "--dir",
                "ca",
                "--name",
                name,
                "--pub",
                &public,
                "--groups",
                machine.groups,
                "--out-crt",
                &cert,
            ],
        )?;
        let issued = NodeCert::from_bytes(&std::fs::read(sh.dir.join(&cert))?)
            .with_context(|| format!("reading {cert}"))?;
        mesh_ips.insert(name, issued.mesh_ip());
    }
    sh.run(
        None,
        "rma-ca",
        &["crl", "--dir", "ca", "--out", "ca/ca.crl"],
    )?;
    Ok(mesh_ips)
}

/// The internet, the lighthouse's public host and a NAT site per other machine; returns the
/// network, each machine's namespace and the lighthouse's public address.
fn build_network(dir: &Path) -> anyhow::Result<(Internet, BTreeMap<&'static str, Ns>, Ipv4Addr)> {
    let lab = Lab::named(NAME, dir)?;
    let mut net = Internet::new(lab)?;
    let (lighthouse_ns, lighthouse_ip) = net.public_host("lighthouse")?;
    println!(
        "  {:<13} {:<22} public host, namespace {}",
        "lighthouse-1",
        lighthouse_ip,
        lighthouse_ns.name()
    );
    let mut hosts = BTreeMap::from([("lighthouse-1", lighthouse_ns)]);
    for machine in &MACHINES {
        let Some(nat) = machine.nat else { continue };
        let mut site = net.site(&format!("{}-nat", machine.name), nat)?;
        let (ns, lan_ip) = net.host_behind(&mut site, machine.name)?;
        let kind = match nat {
            Nat::Cone => "a cone NAT",
            Nat::Symmetric => "a symmetric NAT",
        };
        println!(
            "  {:<13} {:<22} behind {kind} at {}, namespace {}",
            machine.name,
            lan_ip,
            site.wan,
            ns.name()
        );
        hosts.insert(machine.name, ns);
    }
    Ok((net, hosts, lighthouse_ip))
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    Ok(std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(0o600),
    )?)
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `[[firewall.inbound]]` rule.
fn rule(port: Toml, proto: &str, peer: (&str, &str)) -> Toml {
    entry([
        ("port", port),
        ("proto", proto.into()),
        (peer.0, peer.1.into()),
    ])
}

/// What the steps share once the network exists.
#[derive(Debug)]
struct System {
    sh: Shell,
    configs: PathBuf,
    /// The lighthouse's QUIC address.
    lighthouse: String,
    routerd_ip: Ipv4Addr,
    /// Each machine's namespace.
    hosts: BTreeMap<&'static str, Ns>,
    net: Internet,
}

/// The steps once the network exists.
impl System {
    fn host(&self, machine: &str) -> Ns {
        self.hosts[machine].clone()
    }

    /// meshd (from the example, with the routerd machine's firewall rule instead of the
    /// worker's and no worker sections), an admin token, and routerd.
    fn start_routerd(&mut self) -> anyhow::Result<()> {
        let ns = self.host("routerd");
        let mut config = self.meshd_config()?;
        config
            .set(
                "firewall.inbound",
                Toml::Array(vec![
                    rule(Toml::from("any"), "icmp", ("host", "any")),
                    rule(Toml::from(8080), "tcp", ("group", "workers")),
                ]),
            )
            .remove("coordinator")
            .remove("service");
        self.start_meshd(&ns, "routerd", &mut config)?;
        self.sh.run_quiet(
            None,
            "openssl",
            &["rand", "-hex", "-out", "routerd/admin.token", "24"],
        )?;
        let dir = &self.sh.dir;
        let token = std::fs::read_to_string(dir.join("routerd/admin.token"))?;
        set_private(&dir.join("routerd/admin.token"))?;
        // curl reads the header from this file (`-H @file`), so no command shows the token.
        let header = dir.join("routerd/admin.header");
        std::fs::write(&header, format!("Authorization: Bearer {}\n", token.trim()))?;
        set_private(&header)?;
        let mut config = self.pki_config("routerd.toml", false)?;
        config
            .set("listen.mesh", format!("{}:8080", self.routerd_ip))
            .set("admin.token_file", "admin.token")
            .set("store.path", "registry.db");
        self.start(&ns, "routerd", "routerd", &mut config, |log| {
            log.contains("routerd up")
        })
    }

    /// On each worker: meshd with the services it can run, each with an `exec` runner (the
    /// demo service), and worker-2's GPU. Nothing is started by hand: meshd starts what
    /// routerd assigns.
    fn start_workers(&mut self) -> anyhow::Result<()> {
        let testsvc = mesh::binary("testsvc")?.to_string_lossy().into_owned();
        for machine in &MACHINES {
            if machine.services.is_empty() {
                continue;
            }
            let ns = self.host(machine.name);
            let mut config = self.meshd_config()?;
            let services = machine
                .services
                .iter()
                .map(|(service, port)| {
                    entry([
                        ("name", (*service).into()),
                        ("port", i64::from(*port).into()),
                        ("health", "/health".into()),
                        (
                            "exec",
                            Toml::Array(vec![
                                testsvc.clone().into(),
                                "--worker".into(),
                                machine.name.into(),
                            ]),
                        ),
                    ])
                })
                .collect();
            config
                .set(
                    "coordinator.urls",
                    Toml::Array(vec![format!("http://{}:8080", self.routerd_ip).into()]),
                )
                .set("service", Toml::Array(services));
            if let Some(memory) = machine.gpu_memory {
                config.set("worker.gpu_memory", memory);
            }
            self.start_meshd(&ns, machine.name, &mut config)?;
        }
        Ok(())
    }

    /// An example config with the machine's CA, certificate, revocation list and (`with_key`)
    /// key, all in the machine's directory or the CA's.
    fn pki_config(&self, example: &str, with_key: bool) -> anyhow::Result<EditedConfig> {
        let mut config = EditedConfig::load(&self.configs.join(example))?;
        config
            .set("pki.ca", "../ca/ca.crt")
            .set("pki.cert", "node.crt")
            .set("pki.crl", "../ca/ca.crl");
        if with_key {
            config.set("pki.key", "node.key");
        }
        Ok(config)
    }

    /// meshd's example config for `machine`: its PKI, status socket and the lighthouse.
    fn meshd_config(&self) -> anyhow::Result<EditedConfig> {
        let mut config = self.pki_config("meshd.toml", true)?;
        config.set("status.socket", "meshd.sock").set(
            "lighthouse",
            Toml::Array(vec![entry([
                ("name", "lighthouse-1".into()),
                ("address", self.lighthouse.clone().into()),
            ])]),
        );
        Ok(config)
    }

    fn start_meshd(
        &mut self,
        ns: &Ns,
        machine: &str,
        config: &mut EditedConfig,
    ) -> anyhow::Result<()> {
        self.start(ns, machine, "meshd", config, |log| log.contains("meshd up"))
    }

    /// Writes `<machine>/<program>.toml` and starts `program` with it.
    fn start(
        &mut self,
        ns: &Ns,
        machine: &str,
        program: &str,
        config: &mut EditedConfig,
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let path = self.sh.dir.join(machine).join(format!("{program}.toml"));
        config.write(&path)?;
        println!(
            "  {}: {}",
            self.sh.relative(&path).display(),
            config.describe()
        );
        self.spawn(
            ns,
            &format!("{machine}/{program}"),
            program,
            &["--config", &path.to_string_lossy()],
            ready,
        )
    }

    /// Starts a daemon in `ns`, logging to `<name>.log`, and waits until its log shows `ready`.
    fn spawn(
        &mut self,
        ns: &Ns,
        name: &str,
        program: &str,
        args: &[&str],
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let relative: Vec<String> = args
            .iter()
            .map(|a| {
                self.sh
                    .relative(Path::new(a))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let relative: Vec<&str> = relative.iter().map(String::as_str).collect();
        println!(
            "$ {} &   # log: {name}.log",
            shown(Some(ns), program, &relative)
        );
        let binary = mesh::binary(program)?;
        let lab = &mut self.net.lab;
        let handle = lab.spawn(ns, name, &binary, args)?;
        wait::until(&format!("{name} to start"), Duration::from_secs(15), || {
            let proc = lab.proc(handle);
            if let Some(exit) = proc.exited() {
                return Some(Err(anyhow::anyhow!(
                    "{name} exited with {exit}:\n{}",
                    proc.log_text()
                )));
            }
            ready(&proc.log_text()).then_some(Ok(()))
        })?
    }

    /// `curl` against routerd's public listener from routerd's machine: the status and the
    /// JSON body (null if the body is not JSON), the body shown if `show`.
    fn curl(
        &self,
        ns: &Ns,
        extra: &[&str],
        path: &str,
        show: bool,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("http://{PUBLIC}{path}");
        let mut args = vec!["-s"];
        args.extend_from_slice(extra);
        args.push(&url);
        let shown_command = shown(Some(ns), "curl", &args);
        args.extend_from_slice(&["-w", "\n%{http_code}"]);
        let output = self
            .sh
            .run_shown_as(Some(ns), "curl", &args, &shown_command)?;
        let (body, code) = output
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", output.trim()));
        let code: u16 = code
            .parse()
            .with_context(|| format!("curl printed no status: {output}"))?;
        let json = serde_json::from_str(body).unwrap_or(Value::Null);
        if show {
            println!("{}", indent(body));
        }
        Ok((code, json))
    }

    /// A GET that must answer 200, its JSON body.
    fn curl_json(&self, ns: &Ns, extra: &[&str], path: &str) -> anyhow::Result<Value> {
        let (code, body) = self.curl(ns, extra, path, false)?;
        anyhow::ensure!(code == 200, "{path} answered {code}: {body}");
        Ok(body)
    }
}
