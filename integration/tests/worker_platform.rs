//! The worker platform end to end: routerd decides what runs where, and meshd runs it. A
//! public lighthouse; two routerd replicas, each behind a cone NAT with its own meshd; workers
//! behind cone and symmetric NATs whose meshd offers every CPU service with an `exec` runner
//! (the test service) and registers with both replicas. Nothing is started by hand: each
//! test service process is one meshd started because a routerd assigned it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use integration::internet::{Internet, Nat};
use integration::lab::{self, Lab, Ns};
use integration::mesh::{self, LighthouseProc, MeshNode, NodeConfig, Pki};
use integration::{traffic, wait};
use serde_json::Value;

const TOKEN: &str = "platform-admin-token-0123456789";
const PUBLIC: &str = "127.0.0.1:8080";
/// Each CPU service, the port its test service listens on, and how many replicas routerd
/// wants of it.
const SERVICES: [(&str, u16, u32); 4] = [
    ("rag-embeddings", 8101, 2),
    ("document-processing", 8102, 1),
    ("notes-coa", 8103, 1),
    ("ner-extraction", 8104, 1),
];

fn routerd_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, 1 + i as u8)
}

fn worker_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, 11 + i as u8)
}

struct Platform {
    net: Internet,
    pki: Pki,
    lighthouse: Vec<(String, SocketAddr)>,
    _lighthouse: LighthouseProc,
    routerds: Vec<MeshNode>,
    workers: BTreeMap<String, MeshNode>,
    replicas: usize,
}

/// `[[service]]` entries offering `offered` (all the CPU services by default), each run by
/// meshd with the test service.
fn services_toml(worker: &str, offered: &[&str]) -> String {
    let testsvc = mesh::binary("testsvc").unwrap();
    let mut text = String::new();
    for (name, port, _) in SERVICES {
        if !offered.contains(&name) {
            continue;
        }
        text.push_str(&format!(
            "\n[[service]]\nname = \"{name}\"\nport = {port}\nhealth = \"/health\"\n\
             exec = [{testsvc:?}, \"--worker\", \"{worker}\"]\nstop_grace = \"2s\"\n\
             start_timeout = \"20s\"\nenv = {{ TEST_MARK = \"platform\" }}\n"
        ));
    }
    text
}

fn all_services() -> Vec<&'static str> {
    SERVICES.iter().map(|s| s.0).collect()
}

impl Platform {
    /// The lighthouse, `replicas` routerds, and the workers named in `workers` with what each
    /// offers.
    fn new(replicas: usize, workers: &[(&str, Nat, Vec<&str>)]) -> Self {
        let lab = Lab::new().unwrap();
        let pki = Pki::new(lab.dir(), "mesh-ca", "10.42.0.0/16").unwrap();
        let mut net = Internet::new(lab).unwrap();
        let lighthouse_proc = mesh::start_public_lighthouse(&mut net, &pki).unwrap();
        let lighthouse = vec![lighthouse_proc.entry()];
        let mut platform = Self {
            net,
            pki,
            lighthouse,
            _lighthouse: lighthouse_proc,
            routerds: Vec::new(),
            workers: BTreeMap::new(),
            replicas,
        };
        for i in 0..replicas {
            platform.start_routerd(i);
        }
        for (name, nat, offered) in workers {
            platform.start_worker(name, *nat, offered);
        }
        platform
    }

    fn start_routerd(&mut self, i: usize) {
        let name = format!("routerd-{}", i + 1);
        let mut site = self.net.site(&format!("{name}-router"), Nat::Cone).unwrap();
        let (ns, _) = self.net.host_behind(&mut site, &name).unwrap();
        let node = self.start_meshd(&ns, &name, routerd_ip(i), "");
        let mut catalog = String::new();
        for (service, _, replicas) in SERVICES {
            catalog.push_str(&format!(
                "[[service]]\nname = \"{service}\"\ntier = \"cpu\"\nreplicas = {replicas}\n"
            ));
        }
        catalog.push_str("[[service]]\nname = \"llm-inference\"\ntier = \"gpu\"\n");
        let config = self.net.lab.dir().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[listen]\npublic = \"{PUBLIC}\"\nmesh = \"{ip}:8080\"\n\
                 [pki]\nca = {ca:?}\n[admin]\ntoken = \"{TOKEN}\"\n\
                 [store]\npath = {store:?}\n[health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
                 [log]\nlevel = \"info\"\n{catalog}",
                ip = routerd_ip(i),
                ca = self.pki.ca_path,
                store = self.net.lab.dir().join(format!("{name}.db")),
            ),
        )
        .unwrap();
        let routerd = mesh::binary("routerd").unwrap();
        let handle = self
            .net
            .lab
            .spawn(
                &ns,
                &name,
                &routerd,
                &["--config", &config.to_string_lossy()],
            )
            .unwrap();
        wait::until("routerd to listen", Duration::from_secs(10), || {
            self.net
                .lab
                .proc(handle)
                .log_text()
                .contains("routerd up")
                .then_some(())
        })
        .unwrap();
        self.routerds.push(node);
    }

    fn start_meshd(&mut self, ns: &Ns, name: &str, ip: Ipv4Addr, extra: &str) -> MeshNode {
        self.start_meshd_env(ns, name, ip, extra, &[])
    }

    fn start_meshd_env(
        &mut self,
        ns: &Ns,
        name: &str,
        ip: Ipv4Addr,
        extra: &str,
        env: &[(&str, &std::path::Path)],
    ) -> MeshNode {
        let issued = self.pki.issue(name, ip).unwrap();
        let node = mesh::start_with_env(
            &mut self.net.lab,
            ns,
            &NodeConfig {
                name,
                ca: &self.pki.ca_path,
                issued: &issued,
                crl: None,
                static_peers: &[],
                firewall: None,
                metrics: None,
                lighthouses: &self.lighthouse,
                mtu: None,
                busy_poll_us: None,
                park_after: None,
                extra,
            },
            &mesh::binary("meshd").unwrap(),
            env,
        )
        .unwrap();
        node.wait_registered(Duration::from_secs(10)).unwrap();
        node
    }

    fn start_worker(&mut self, name: &str, nat: Nat, offered: &[&str]) {
        self.start_worker_with(name, nat, &services_toml(name, offered), &[]);
    }

    /// A worker whose `[[service]]` entries are `services`, with meshd's extra environment.
    fn start_worker_with(
        &mut self,
        name: &str,
        nat: Nat,
        services: &str,
        env: &[(&str, &std::path::Path)],
    ) {
        let i = self.workers.len();
        let mut site = self.net.site(&format!("{name}-router"), nat).unwrap();
        let (ns, _) = self.net.host_behind(&mut site, name).unwrap();
        let urls: Vec<String> = (0..self.replicas)
            .map(|r| format!("\"http://{}:8080\"", routerd_ip(r)))
            .collect();
        let extra = format!("[coordinator]\nurls = [{}]\n{services}", urls.join(", "));
        let node = self.start_meshd_env(&ns, name, worker_ip(i), &extra, env);
        self.workers.insert(name.to_owned(), node);
    }

    /// A GET on replica `r`'s public listener, from its machine (where cloudflared runs).
    fn get(&self, r: usize, path: &str, admin: bool) -> (u16, Value) {
        let auth = format!("authorization: Bearer {TOKEN}");
        let headers: Vec<&str> = if admin { vec![&auth] } else { vec![] };
        let (status, _, body) = traffic::http(
            &self.routerds[r].ns,
            PUBLIC,
            &format!("GET {path}"),
            None,
            &headers,
            None,
        )
        .unwrap();
        (status, body)
    }

    /// What replica `r` assigns, by worker.
    fn assignment(&self, r: usize) -> BTreeMap<String, Vec<String>> {
        let (_, body) = self.get(r, "/api/admin/workers", true);
        body["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let assigned = w["assigned_services"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect();
                (w["worker_id"].as_str().unwrap().to_owned(), assigned)
            })
            .collect()
    }

    /// The CPU services replica `r` lists as gaps (llm-inference, which needs a GPU no
    /// worker here has, always is one).
    fn cpu_gaps(&self, r: usize) -> Vec<String> {
        let (_, gaps) = self.get(r, "/api/admin/gaps", true);
        gaps["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_owned())
            .filter(|g| g != "llm-inference")
            .collect()
    }

    /// Waits until replica `r` has `workers` registered and no CPU service is a gap.
    fn wait_settled(&self, r: usize, workers: usize, within: Duration) {
        wait::until("every service assigned and serving", within, || {
            let (_, listed) = self.get(r, "/api/coordinator/workers", false);
            (self.cpu_gaps(r).is_empty() && listed["count"] == workers as u64).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {}", self.get(r, "/api/admin/workers", true).1));
    }

    /// A call to `service` through replica `r`: the status, and the answering worker and the
    /// service its process was started for.
    fn call(&self, r: usize, service: &str) -> (u16, String, String) {
        let (status, body) = self.get(r, &format!("/service/{service}/work"), false);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (status, text(&body["worker"]), text(&body["service"]))
    }

    /// Whether anything listens on `ip:port` (a connection from replica 0's machine).
    fn listening(&self, ip: Ipv4Addr, port: u16) -> bool {
        traffic::http(
            &self.routerds[0].ns,
            &format!("{ip}:{port}"),
            "GET /health",
            None,
            &[],
            None,
        )
        .is_ok_and(|(status, ..)| status == 200)
    }

    /// Kills everything on the worker's machine at once, meshd and its services: a machine
    /// that dies.
    fn kill_machine(&mut self, name: &str) {
        let node = self.workers.remove(name).unwrap();
        for pid in lab::pids(node.ns.name()) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
    }

    fn worker_status(&self, r: usize, worker: &str, service: &str) -> Value {
        let (_, body) = self.get(r, "/api/admin/workers", true);
        body["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["worker_id"] == worker)
            .and_then(|w| {
                w["service_states"]
                    .as_array()?
                    .iter()
                    .find(|s| s["name"] == service)
                    .cloned()
            })
            .unwrap_or(Value::Null)
    }
}

fn holders(assignment: &BTreeMap<String, Vec<String>>, service: &str) -> Vec<String> {
    assignment
        .iter()
        .filter(|(_, s)| s.iter().any(|x| x == service))
        .map(|(w, _)| w.clone())
        .collect()
}

fn three_workers() -> Vec<(&'static str, Nat, Vec<&'static str>)> {
    vec![
        ("worker-1", Nat::Cone, all_services()),
        ("worker-2", Nat::Cone, all_services()),
        ("worker-3", Nat::Symmetric, all_services()),
    ]
}

#[test]
fn routerd_assigns_and_meshd_starts_exactly_what_it_is_assigned_and_two_replicas_agree() {
    lab::require_root();
    let p = Platform::new(2, &three_workers());
    let started = Instant::now();
    p.wait_settled(0, 3, Duration::from_secs(60));
    p.wait_settled(1, 3, Duration::from_secs(10));
    eprintln!("assigned, started and healthy in {:?}", started.elapsed());
    let first = p.assignment(0);
    assert_eq!(first, p.assignment(1), "the two replicas assign alike");
    // Each service on as many workers as its target. (How evenly depends on the order the
    // workers came in: what a worker has started stays with it.)
    for (service, _, replicas) in SERVICES {
        assert_eq!(
            holders(&first, service).len(),
            replicas as usize,
            "{service}: {first:?}"
        );
    }
    // The workers offered four services each and run only what they were given. A service a
    // replica gave a worker before the two agreed may still be within its stop grace.
    for (i, (worker, _, _)) in three_workers().iter().enumerate() {
        for (service, port, _) in SERVICES {
            let assigned = first[*worker].iter().any(|s| s == service);
            wait::until(
                &format!("{worker} {service}: listening iff assigned ({assigned})"),
                Duration::from_secs(20),
                || (p.listening(worker_ip(i), port) == assigned).then_some(()),
            )
            .unwrap();
        }
    }
    // Calls through either replica reach a process meshd started for that service, on a
    // worker assigned it.
    for r in 0..2 {
        for (service, _, _) in SERVICES {
            let (status, worker, ran) = p.call(r, service);
            assert_eq!(status, 200, "{service} via routerd-{}", r + 1);
            assert_eq!(ran, service, "the process was started for {service}");
            assert!(
                holders(&first, service).contains(&worker),
                "{service} from {worker}"
            );
        }
    }
    // Each replica learnt the other from the workers, and when a worker last reached it.
    let (_, coordinators) = p.get(0, "/api/admin/coordinators", true);
    assert_eq!(coordinators["count"], 2, "{coordinators}");
    let other = &coordinators["coordinators"][1];
    assert_eq!(other["mesh_ip"], "10.42.0.2");
    assert!(
        other["last_contact_secs"].as_u64().is_some_and(|s| s < 15),
        "{other}"
    );
    // The health route in the seed's shape, and the load the workers report.
    let (_, health) = p.get(0, "/health", false);
    assert_eq!(
        health["status"], "degraded",
        "llm-inference has no GPU worker: {health}"
    );
    assert_eq!(health["workers"]["total"], 3);
    assert_eq!(health["coordinator"], "routerd@10.42.0.1");
    assert_eq!(coordinators["coordinators"][0]["self"], true);
    wait::until(
        "every worker's load reported",
        Duration::from_secs(15),
        || {
            let (_, topology) = p.get(0, "/api/topology", false);
            let loads = topology["workers"].as_array().unwrap().clone();
            loads
                .iter()
                .all(|w| w["load"]["memory_used_bytes"].as_u64() > Some(0))
                .then_some(())
        },
    )
    .unwrap();
}

#[test]
fn a_killed_workers_services_start_elsewhere_and_nothing_healthy_moves() {
    lab::require_root();
    let mut p = Platform::new(1, &three_workers());
    p.wait_settled(0, 3, Duration::from_secs(60));
    let before = p.assignment(0);
    // The worker with a service no other worker runs (every service has one replica but rag).
    let (victim, lost) = before
        .iter()
        .find_map(|(w, s)| {
            let only = s.iter().find(|x| holders(&before, x).len() == 1)?;
            Some((w.clone(), only.clone()))
        })
        .unwrap();
    let killed = Instant::now();
    p.kill_machine(&victim);
    wait::until(
        "the lost service served again",
        Duration::from_secs(60),
        || {
            let (status, worker, _) = p.call(0, &lost);
            (status == 200 && worker != victim).then_some(())
        },
    )
    .unwrap();
    let recovered = killed.elapsed();
    eprintln!(
        "worker killed: {lost} served again from another worker after {recovered:?} \
         (registry TTL 15 s, then start and health rise)"
    );
    assert!(recovered < Duration::from_secs(40), "{recovered:?}");
    p.wait_settled(0, 2, Duration::from_secs(30));
    let after = p.assignment(0);
    // What the survivors ran, they still run.
    for (worker, services) in &before {
        if *worker != victim {
            for s in services {
                assert!(after[worker].contains(s), "{worker} kept {s}: {after:?}");
            }
        }
    }
}

#[test]
fn a_joining_worker_takes_the_gap_and_no_healthy_assignment_moves() {
    lab::require_root();
    // Nobody offers ner-extraction at first: a gap.
    let without_ner: Vec<&str> = all_services()
        .into_iter()
        .filter(|s| *s != "ner-extraction")
        .collect();
    let mut p = Platform::new(
        1,
        &[
            ("worker-1", Nat::Cone, without_ner.clone()),
            ("worker-2", Nat::Cone, without_ner),
        ],
    );
    wait::until("two workers serving", Duration::from_secs(60), || {
        (p.cpu_gaps(0) == ["ner-extraction"]).then_some(())
    })
    .unwrap();
    let (status, _, _) = p.call(0, "ner-extraction");
    assert_eq!(status, 503, "no worker for ner-extraction");
    let before = p.assignment(0);
    p.start_worker("worker-3", Nat::Cone, &all_services());
    p.wait_settled(0, 3, Duration::from_secs(60));
    let after = p.assignment(0);
    assert_eq!(after["worker-3"], ["ner-extraction"], "{after:?}");
    for worker in ["worker-1", "worker-2"] {
        assert_eq!(
            before[worker], after[worker],
            "{worker} moved: {before:?} -> {after:?}"
        );
    }
    let (status, worker, _) = p.call(0, "ner-extraction");
    assert_eq!((status, worker.as_str()), (200, "worker-3"));
}

#[test]
fn a_crashed_service_is_restarted_with_backoff_and_not_routed_to_while_down() {
    lab::require_root();
    // One worker offers ner-extraction: when it crashes there is nowhere else to go.
    let p = Platform::new(
        1,
        &[
            ("worker-1", Nat::Cone, all_services()),
            ("worker-2", Nat::Cone, vec!["rag-embeddings"]),
        ],
    );
    p.wait_settled(0, 2, Duration::from_secs(60));
    let (status, worker, _) = p.call(0, "ner-extraction");
    assert_eq!((status, worker.as_str()), (200, "worker-1"));
    let (status, _, _) = traffic::http(
        &p.routerds[0].ns,
        &format!("{}:8104", worker_ip(0)),
        "POST /control/exit/3",
        None,
        &[],
        None,
    )
    .unwrap();
    assert_eq!(status, 202);
    // Down: meshd sees the exit at once and tells routerd in its next heartbeat, sent at once.
    // From then until the restart is healthy, no call goes to the dead port: each is refused
    // at once with 503. (A call in the moment before routerd hears may still get a 502.)
    let crashed = Instant::now();
    wait::until(
        "routerd to hear the service failed",
        Duration::from_secs(5),
        || (p.worker_status(0, "worker-1", "ner-extraction")["state"] == "failed").then_some(()),
    )
    .unwrap();
    let heard = crashed.elapsed();
    let mut refused = 0;
    let restarted = wait::until("the service restarted", Duration::from_secs(30), || {
        let before = p.worker_status(0, "worker-1", "ner-extraction");
        let (status, _, _) = p.call(0, "ner-extraction");
        if before["state"] == "failed" {
            // 200 only if the restart came up between the two reads.
            assert!(
                matches!(status, 503 | 200),
                "{status} while routerd knew it was down"
            );
            refused += usize::from(status == 503);
        }
        let state = p.worker_status(0, "worker-1", "ner-extraction");
        (state["state"] == "running" && state["restarts"] == 1 && status == 200).then_some(state)
    })
    .unwrap();
    assert!(refused > 0, "no call was made while it was down");
    eprintln!("routerd heard of the crash after {heard:?}; {refused} calls refused with 503");
    eprintln!(
        "crashed service running again after {:?}: {restarted}",
        crashed.elapsed()
    );
    assert_eq!(restarted["last_exit"], "exit status 3");
}

#[test]
fn a_reload_offers_the_new_services_and_registers_again() {
    lab::require_root();
    let mut p = Platform::new(1, &[]);
    p.start_worker("worker-1", Nat::Cone, &["rag-embeddings"]);
    wait::until("rag served", Duration::from_secs(30), || {
        (p.call(0, "rag-embeddings").0 == 200).then_some(())
    })
    .unwrap();
    assert_eq!(p.call(0, "ner-extraction").0, 503);
    // The operator adds a service to the running worker's config and reloads it.
    let node = &p.workers["worker-1"];
    let mut config = std::fs::read_to_string(&node.config).unwrap();
    config.push_str(&services_toml("worker-1", &["ner-extraction"]));
    std::fs::write(&node.config, config).unwrap();
    let proc = node.proc;
    p.net.lab.signal(proc, "HUP").unwrap();
    wait::until(
        "ner-extraction served after the reload",
        Duration::from_secs(30),
        || {
            let (status, worker, ran) = p.call(0, "ner-extraction");
            (status == 200 && worker == "worker-1" && ran == "ner-extraction").then_some(())
        },
    )
    .unwrap();
    assert_eq!(
        p.call(0, "rag-embeddings").0,
        200,
        "what ran before still runs"
    );
    let log = p.net.lab.proc(proc).log_text();
    assert!(
        log.contains("services or coordinators changed: registering again"),
        "{log}"
    );
    assert_eq!(
        log.matches("service started").count(),
        2,
        "rag was not restarted by the reload: {log}"
    );
}

/// A stand-in for `systemctl` that runs each "unit" as a background test service, so that
/// the `unit` runner can be driven without a systemd: `start`, `stop`, `kill` and
/// `is-active --quiet`, each call logged.
fn fake_systemctl(dir: &std::path::Path, listen: &str, worker: &str) -> std::path::PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let testsvc = mesh::binary("testsvc").unwrap();
    let script = format!(
        "#!/bin/sh\n\
         state={state:?}\n\
         echo \"$*\" >> \"$state/systemctl.calls\"\n\
         case \"$1\" in\n\
         start) {testsvc:?} --listen {listen} --worker {worker} --service ner-extraction \\\n\
                >> \"$state/$2.log\" 2>&1 &\n\
                echo $! > \"$state/$2.pid\" ;;\n\
         stop|kill) [ -f \"$state/$2.pid\" ] || [ -f \"$state/$3.pid\" ] || exit 0\n\
                unit=$2; [ \"$1\" = kill ] && unit=$3\n\
                kill $( [ \"$1\" = kill ] && echo -9 ) $(cat \"$state/$unit.pid\") 2>/dev/null\n\
                rm -f \"$state/$unit.pid\" ;;\n\
         is-active) [ -f \"$state/$3.pid\" ] && kill -0 $(cat \"$state/$3.pid\") 2>/dev/null ;;\n\
         *) exit 1 ;;\n\
         esac\n",
        state = dir,
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    std::process::Command::new("chmod")
        .args(["755", &path.to_string_lossy()])
        .status()
        .unwrap();
    bin
}

#[test]
fn a_unit_runner_starts_the_unit_restarts_it_when_it_fails_and_stops_it() {
    lab::require_root();
    let mut p = Platform::new(1, &[]);
    let dir = p.net.lab.dir().to_owned();
    let listen = format!("{}:8104", worker_ip(0));
    let bin = fake_systemctl(&dir, &listen, "worker-1");
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let services =
        "\n[[service]]\nname = \"ner-extraction\"\nport = 8104\nunit = \"rma-ner.service\"\n";
    p.start_worker_with(
        "worker-1",
        Nat::Cone,
        services,
        &[("PATH", std::path::Path::new(&path))],
    );
    wait::until("the unit's service served", Duration::from_secs(30), || {
        let (status, worker, _) = p.call(0, "ner-extraction");
        (status == 200 && worker == "worker-1").then_some(())
    })
    .unwrap();
    let calls = || std::fs::read_to_string(dir.join("systemctl.calls")).unwrap_or_default();
    // A unit left over from an earlier meshd is stopped first; then the assigned one starts.
    assert!(
        calls().starts_with("stop rma-ner.service\nstart rma-ner.service\n"),
        "{}",
        calls()
    );
    // The unit's process dies: meshd sees the unit inactive, reports it failed, and starts
    // the unit again.
    let pid = std::fs::read_to_string(dir.join("rma-ner.service.pid")).unwrap();
    std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let restarted = wait::until("the unit started again", Duration::from_secs(30), || {
        let state = p.worker_status(0, "worker-1", "ner-extraction");
        (state["state"] == "running" && state["restarts"] == 1).then_some(state)
    })
    .unwrap();
    assert_eq!(
        restarted["last_exit"],
        "unit rma-ner.service is no longer active"
    );
    assert_eq!(
        calls().matches("start rma-ner.service").count(),
        2,
        "{}",
        calls()
    );
    // meshd stops: it stops the unit it started.
    let proc = p.workers["worker-1"].proc;
    p.net.lab.signal(proc, "TERM").unwrap();
    wait::until("the unit stopped", Duration::from_secs(15), || {
        calls().contains("stop rma-ner.service").then_some(())
    })
    .unwrap();
}
