//! What the demo's steps show: the registry, the paths between machines, service calls and
//! their answers, the services below their target, and a worker's services moving when it
//! stops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use integration::{mesh, traffic, wait};

use super::{PUBLIC, System, indent, str_of};

impl System {
    /// Waits until every service a worker offered is assigned and serving (vision-ocr, which
    /// no worker offers, aside), then shows what each worker offered and was given. Returns
    /// how many services the workers offered, and how many routerd assigned.
    pub(super) fn show_registry(&self) -> anyhow::Result<(usize, usize)> {
        let routerd = self.host("routerd");
        wait::until(
            "routerd to assign every offered service and the workers to start them",
            Duration::from_secs(60),
            || {
                let gaps = self.admin("/api/admin/gaps").ok()?;
                (gaps["gaps"] == serde_json::json!(["vision-ocr"])).then_some(())
            },
        )?;
        let workers = self.curl_json(
            &routerd,
            &["-H", "@routerd/admin.header"],
            "/api/admin/workers",
        )?;
        let (mut offered, mut assigned) = (0, 0);
        for worker in workers["workers"].as_array().into_iter().flatten() {
            let caps = &worker["capabilities"];
            let names = |v: &serde_json::Value, key: &str| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| str_of(if key.is_empty() { s } else { &s[key] }).to_owned())
                    .collect()
            };
            let offers = names(&worker["services"], "name");
            let runs = names(&worker["assigned_services"], "");
            offered += offers.len();
            assigned += runs.len();
            println!(
                "  {:<9} {:<10} {} cores, {} RAM, GPU: {}, type {}",
                str_of(&worker["worker_id"]),
                str_of(&worker["mesh_ip"]),
                caps["cpu_cores"],
                str_of(&caps["ram"]),
                caps["gpu_memory"].as_str().unwrap_or("none"),
                str_of(&caps["worker_type"]),
            );
            println!("            offered  {}", offers.join(", "));
            let states: Vec<String> = worker["service_states"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| runs.iter().any(|r| r.as_str() == str_of(&s["name"])))
                .map(|s| format!("{} ({})", str_of(&s["name"]), str_of(&s["state"])))
                .collect();
            println!("            runs     {}", states.join(", "));
        }
        Ok((offered, assigned))
    }

    /// An admin route's JSON, quietly.
    fn admin(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let header = std::fs::read_to_string(self.sh.dir.join("routerd/admin.header"))?;
        let (status, _, body) = traffic::http(
            &self.host("routerd"),
            PUBLIC,
            &format!("GET {path}"),
            None,
            &[header.trim()],
            None,
        )?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
        Ok(body)
    }

    /// What routerd assigns, by worker.
    fn assignment(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let workers = self.admin("/api/admin/workers")?;
        Ok(workers["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let runs = w["assigned_services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| str_of(s).to_owned())
                    .collect();
                (str_of(&w["worker_id"]).to_owned(), runs)
            })
            .collect())
    }

    /// Stops a worker machine at once (meshd and the services it runs) whose services another
    /// worker also offers, and waits until each is served again, by another worker. Returns
    /// what happened, for the summary.
    pub(super) fn show_failover(&mut self) -> anyhow::Result<String> {
        let before = self.assignment()?;
        let offers = |worker: &str| -> Vec<&'static str> {
            super::MACHINES
                .iter()
                .find(|m| m.name == worker)
                .map(|m| m.services.iter().map(|s| s.0).collect())
                .unwrap_or_default()
        };
        // The worker that runs the most, of those whose every service another worker offers.
        let victim = ["worker-1", "worker-3"]
            .into_iter()
            .filter(|w| {
                let runs = before.get(*w).cloned().unwrap_or_default();
                !runs.is_empty()
                    && runs.iter().all(|s| {
                        ["worker-1", "worker-2", "worker-3"]
                            .iter()
                            .any(|o| o != w && offers(o).contains(&s.as_str()))
                    })
            })
            .max_by_key(|w| before.get(*w).map_or(0, Vec::len))
            .context("no worker whose services another worker offers")?;
        let moved = before[victim].clone();
        println!(
            "  {victim} runs {}; stopping the machine (meshd and its services) at once",
            moved.join(", ")
        );
        let ns = self.host(victim);
        for pid in integration::lab::pids(ns.name()) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
        let stopped = Instant::now();
        let routerd = self.host("routerd");
        let elsewhere = |service: &str| -> Option<String> {
            let (status, _, body) = traffic::http(
                &routerd,
                PUBLIC,
                &format!("GET /service/{service}/after-failover"),
                None,
                &[],
                None,
            )
            .ok()?;
            let worker = str_of(&body["worker"]);
            (status == 200 && worker != victim).then(|| worker.to_owned())
        };
        // Watched on the admin routes (calls would spend the example's rate limit).
        wait::until(
            "the stopped worker's services to run on others",
            Duration::from_secs(60),
            || {
                let workers = self.admin("/api/admin/workers").ok()?;
                let list = workers["workers"].as_array()?;
                let running_elsewhere = |service: &str| {
                    list.iter().any(|w| {
                        w["worker_id"] != victim
                            && w["assigned_services"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|s| s == service))
                            && w["service_states"].as_array().is_some_and(|states| {
                                states
                                    .iter()
                                    .any(|s| s["name"] == service && s["state"] == "running")
                            })
                    })
                };
                let gone = list.iter().all(|w| w["worker_id"] != victim);
                (gone && moved.iter().all(|s| running_elsewhere(s))).then_some(())
            },
        )?;
        let took = stopped.elapsed();
        for service in &moved {
            let by = wait::until(
                &format!("a call to {service} answered by another worker"),
                Duration::from_secs(10),
                || elsewhere(service),
            )?;
            println!("  -> {service}: 200 from {by}");
        }
        println!(
            "  back in {:.1} s: routerd dropped {victim} after its 15 s registry TTL, assigned \
             its services to workers that offered them, and their meshd started them",
            took.as_secs_f64()
        );
        Ok(format!(
            "{victim} stopped: {} served again elsewhere in {:.1} s",
            moved.join(", "),
            took.as_secs_f64()
        ))
    }

    /// worker-1 pings the other workers, then shows its peers: routerd and worker-2 direct,
    /// worker-3 (symmetric NAT) relayed.
    pub(super) fn show_paths(&self) -> anyhow::Result<()> {
        let worker_1 = self.host("worker-1");
        for peer in ["worker-2", "worker-3"] {
            self.sh.run(
                Some(&worker_1),
                "meshd",
                &["ping", "-c", "2", peer, "--config", "worker-1/meshd.toml"],
            )?;
        }
        let expected = [
            ("routerd", "direct"),
            ("worker-2", "direct"),
            ("worker-3", "relayed"),
        ];
        let socket = self.sh.dir.join("worker-1/meshd.sock");
        // What worker-1 last showed of each peer, for the error if the paths never settle.
        let mut seen = String::from("no status yet");
        wait::until(
            "worker-1 to reach routerd and worker-2 directly and worker-3 through the relay",
            Duration::from_secs(30),
            || {
                let status = match mesh::status(&socket) {
                    Ok(status) => status,
                    Err(e) => {
                        seen = format!("status failed: {e:#}");
                        return None;
                    }
                };
                seen = status
                    .peers
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} handshake {:?} s ago",
                            p.name, p.path, p.last_handshake_secs
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                expected
                    .iter()
                    .all(|(name, path)| {
                        status.peers.iter().any(|p| {
                            p.name == *name && p.path == *path && p.last_handshake_secs.is_some()
                        })
                    })
                    .then_some(())
            },
        )
        .with_context(|| format!("worker-1's peers, last seen: {seen}"))?;
        self.sh.run(
            Some(&worker_1),
            "meshd",
            &["status", "--config", "worker-1/meshd.toml"],
        )?;
        Ok(())
    }

    /// Calls through routerd's public listener: rag-embeddings (on the two workers assigned
    /// it), llm-inference (worker-2, the GPU worker) and a service no worker offers. Returns
    /// the calls each worker answered.
    pub(super) fn show_calls(&self) -> anyhow::Result<BTreeMap<String, u32>> {
        let routerd = self.host("routerd");
        let assignment = self.assignment()?;
        let rag: Vec<&String> = assignment
            .iter()
            .filter(|(_, runs)| runs.iter().any(|s| s == "rag-embeddings"))
            .map(|(w, _)| w)
            .collect();
        let mut answered: BTreeMap<String, u32> = BTreeMap::new();
        for i in 1..=6 {
            let path = format!("/service/rag/embed?doc={i}");
            let (code, body) = self.curl(&routerd, &[], &path, i == 1)?;
            anyhow::ensure!(code == 200, "{path} answered {code}: {body}");
            let worker = str_of(&body["worker"]).to_owned();
            anyhow::ensure!(
                rag.iter().any(|w| **w == worker) && body["service"] == "rag-embeddings",
                "{path} was answered by {worker}, which was not assigned rag-embeddings"
            );
            anyhow::ensure!(
                body["caller"] == self.routerd_ip.to_string(),
                "the worker saw {} as the caller, not routerd's mesh IP",
                body["caller"]
            );
            println!(
                "  -> 200 from {worker}, which saw the call come from routerd's mesh IP {}",
                self.routerd_ip
            );
            *answered.entry(worker).or_default() += 1;
        }
        let (code, body) = self.curl(
            &routerd,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                "{\"prompt\":\"hello\"}",
            ],
            "/service/llm-inference/v1/generate",
            false,
        )?;
        anyhow::ensure!(
            code == 200 && body["worker"] == "worker-2",
            "llm-inference answered {code}: {body}"
        );
        println!(
            "  -> 200 from worker-2, the worker with a GPU, which got {} bytes",
            body["body_bytes"]
        );
        *answered.entry("worker-2".into()).or_default() += 1;
        let started = Instant::now();
        let (code, body) = self.curl(&routerd, &[], "/service/ocr/scan.png", false)?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            code == 503,
            "a service without workers answered {code}: {body}"
        );
        println!(
            "  -> 503 in {} ms, no worker offers vision-ocr: {}",
            elapsed.as_millis(),
            body["error"].as_str().unwrap_or(&body.to_string())
        );
        Ok(answered)
    }

    /// Shows `/api/admin/gaps` and checks it names only vision-ocr, which no worker offers;
    /// returns how many there are.
    pub(super) fn show_gaps(&self) -> anyhow::Result<usize> {
        let routerd = self.host("routerd");
        let gaps = self.curl_json(
            &routerd,
            &["-H", "@routerd/admin.header"],
            "/api/admin/gaps",
        )?;
        println!("{}", indent(&serde_json::to_string_pretty(&gaps["gaps"])?));
        println!("  {}", str_of(&gaps["message"]));
        let mut missing: Vec<&str> = gaps["gaps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .collect();
        missing.sort_unstable();
        anyhow::ensure!(missing == ["vision-ocr"], "unexpected gaps: {missing:?}");
        Ok(missing.len())
    }
}
