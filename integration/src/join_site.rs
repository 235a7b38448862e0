//! The operator's side of a join, for the tests in which a new machine joins with a token
//! (`join_counts`, `image`): in namespaces behind real NAT, the operator's public host runs
//! `rma-ca serve` with an issuing CA (the root stays in a directory the service never opens),
//! a public lighthouse, and routerd behind a NAT with its own meshd, enrolled offline. The
//! bundle every worker gets lets calls in from routerd and names one service, run by `exec`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::enroll::Operator;
use crate::internet::{Internet, Nat};
use crate::lab::Ns;
use crate::mesh::{self, MeshNode, NodeConfig};
use crate::traffic;

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
pub const ROUTERD_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
/// routerd's public listener, where cloudflared would send the calls.
pub const PUBLIC: &str = "127.0.0.1:8080";
/// The service the bundle names and routerd assigns.
pub const SERVICE: &str = "rag-embeddings";

#[derive(Debug)]
pub struct JoinSite {
    pub net: Internet,
    pub operator: Operator,
    /// The enrollment service's URL.
    pub url: String,
    pub routerd_ns: Ns,
    _routerd_node: MeshNode,
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

impl JoinSite {
    /// Everything the operator sets up once, before any worker; the workers' bundle runs
    /// `service` (an absolute path on the worker, with its arguments) as the service.
    pub fn new(service: &[&str]) -> anyhow::Result<Self> {
        let lab = crate::lab::Lab::new()?;
        let mut net = Internet::new(lab)?;
        let dir = net.lab.dir().to_owned();
        let operator = Operator::new(&dir)?;
        let lighthouse_issued =
            operator.sign_offline("lighthouse-1", "10.42.0.254", "lighthouses")?;
        let routerd_issued =
            operator.sign_offline("routerd", &ROUTERD_IP.to_string(), "routerd")?;
        let (ca, crl) = (operator.ca.clone(), operator.crl.clone());

        let (lh_ns, lh_ip) = net.public_host("lighthouse")?;
        let lh_config =
            mesh::write_lighthouse_config(&net.lab, &ca, &lighthouse_issued, Some(&crl), lh_ip)?;
        let lighthouse =
            mesh::start_lighthouse(&mut net.lab, &lh_ns, "lighthouse-1", &lh_config, lh_ip)?;

        let mut site = net.site("routerd-router", Nat::Cone)?;
        let (routerd_ns, _) = net.host_behind(&mut site, "routerd")?;
        let routerd_node = mesh::start(
            &mut net.lab,
            &routerd_ns,
            &NodeConfig {
                name: "routerd",
                ca: &ca,
                issued: &routerd_issued,
                crl: Some(&crl),
                static_peers: &[],
                firewall: None,
                metrics: None,
                lighthouses: &[lighthouse.entry()],
                mtu: None,
                busy_poll_us: None,
                park_after: None,
                extra: "",
            },
        )?;
        routerd_node.wait_registered(Duration::from_secs(10))?;
        let routerd_config = dir.join("routerd.toml");
        std::fs::write(
            &routerd_config,
            format!(
                "[listen]\npublic = \"{PUBLIC}\"\nmesh = \"{ROUTERD_IP}:8080\"\n\
                 [pki]\nca = {ca:?}\ncrl = {crl:?}\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
                 [store]\npath = {store:?}\n[health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
                 [log]\nlevel = \"info\"\n\
                 [[service]]\nname = \"{SERVICE}\"\ntier = \"cpu\"\nreplicas = 1\n",
                store = dir.join("registry.db"),
            ),
        )?;
        mesh::start_routerd(&mut net.lab, &routerd_ns, &routerd_config)?;

        // The bundle every worker gets: the lighthouse, routerd, calls from routerd let in,
        // and what the machine can run.
        let exec: Vec<String> = service.iter().map(|s| format!("{s:?}")).collect();
        let bundle = format!(
            "listen = \"0.0.0.0:4242\"\n\n[status]\nsocket = \"meshd.sock\"\n\n[log]\nlevel = \"info\"\n\n\
             [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n\n\
             [[firewall.inbound]]\nport = \"any\"\nproto = \"icmp\"\nhost = \"any\"\n\n\
             [[firewall.inbound]]\nport = \"8100-8299\"\nproto = \"tcp\"\ngroup = \"routerd\"\n\n\
             [[lighthouse]]\nname = \"lighthouse-1\"\naddress = \"{}\"\n\n\
             [coordinator]\nurls = [\"http://{ROUTERD_IP}:8080\"]\n\n\
             [[service]]\nname = \"{SERVICE}\"\nport = 8101\nhealth = \"/health\"\n\
             exec = [{}]\nstart_timeout = \"20s\"\n",
            lighthouse.address,
            exec.join(", ")
        );
        operator.bundle("worker", &bundle)?;
        let (op_ns, op_ip) = net.public_host("operator")?;
        let listen = format!("{op_ip}:8090");
        operator.serve(&mut net.lab, &op_ns, &listen, &["--crl", path(&crl)?])?;
        Ok(Self {
            net,
            operator,
            url: format!("http://{listen}"),
            routerd_ns,
            _routerd_node: routerd_node,
        })
    }

    /// A token for the `worker` bundle, good for `uses` joins.
    pub fn token(&self, uses: u32) -> anyhow::Result<String> {
        self.operator.token(&self.url, uses, "worker")
    }

    /// A call through routerd's public listener, from routerd's machine (where cloudflared
    /// runs): the status and the JSON body.
    pub fn call(&self, target: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let (status, _, body) = traffic::http(
            &self.routerd_ns,
            PUBLIC,
            &format!("GET {target}"),
            None,
            &[],
            None,
        )?;
        Ok((status, body))
    }
}
