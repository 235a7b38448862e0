//! What the demo's steps show: the registry, the paths between machines, service calls and
//! their answers, and the services below their target.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration::{mesh, traffic, wait};

use super::{PUBLIC, System, indent, str_of};

impl System {
    /// Waits until routerd routes to every worker, then shows what each registered.
    pub(super) fn show_registry(&self) -> anyhow::Result<()> {
        let routerd = self.host("routerd");
        wait::until(
            "routerd to route to all three workers",
            Duration::from_secs(60),
            || {
                let (status, _, topology) =
                    traffic::http(&routerd, PUBLIC, "GET /api/topology", None, &[], None).ok()?;
                let routes = topology["routes"].as_array()?;
                (status == 200 && routes.len() == 3 && routes.iter().all(|r| r["state"] == "up"))
                    .then_some(())
            },
        )?;
        let workers = self.curl_json(
            &routerd,
            &["-H", "@routerd/admin.header"],
            "/api/admin/workers",
        )?;
        for worker in workers["workers"].as_array().into_iter().flatten() {
            let caps = &worker["capabilities"];
            println!(
                "  {:<9} {:<10} runs {:<15} {} cores, {} RAM, GPU: {}, type {}",
                str_of(&worker["worker_id"]),
                str_of(&worker["mesh_ip"]),
                worker["assigned_services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(str_of)
                    .collect::<Vec<_>>()
                    .join(","),
                caps["cpu_cores"],
                str_of(&caps["ram"]),
                caps["gpu_memory"].as_str().unwrap_or("none"),
                str_of(&caps["worker_type"]),
            );
        }
        Ok(())
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
        wait::until(
            "worker-1 to reach routerd and worker-2 directly and worker-3 through the relay",
            Duration::from_secs(30),
            || {
                let status = mesh::status(&socket).ok()?;
                expected
                    .iter()
                    .all(|(name, path)| {
                        status.peers.iter().any(|p| {
                            p.name == *name && p.path == *path && p.last_handshake_secs.is_some()
                        })
                    })
                    .then_some(())
            },
        )?;
        self.sh.run(
            Some(&worker_1),
            "meshd",
            &["status", "--config", "worker-1/meshd.toml"],
        )?;
        Ok(())
    }

    /// Calls through routerd's public listener: rag-embeddings (worker-1 and worker-3),
    /// llm-inference (worker-2) and a service no worker runs. Returns the calls each worker
    /// answered.
    pub(super) fn show_calls(&self) -> anyhow::Result<BTreeMap<String, u32>> {
        let routerd = self.host("routerd");
        let mut answered: BTreeMap<String, u32> = BTreeMap::new();
        for i in 1..=6 {
            let path = format!("/service/rag/embed?doc={i}");
            let (code, body) = self.curl(&routerd, &[], &path, i == 1)?;
            anyhow::ensure!(code == 200, "{path} answered {code}: {body}");
            let worker = str_of(&body["worker"]).to_owned();
            anyhow::ensure!(
                worker == "worker-1" || worker == "worker-3",
                "{path} was answered by {worker}, which does not run rag-embeddings"
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
        let (code, body) = self.curl(&routerd, &[], "/service/upload/report.pdf", false)?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            code == 503,
            "a service without workers answered {code}: {body}"
        );
        println!(
            "  -> 503 in {} ms, no worker runs document-processing: {}",
            elapsed.as_millis(),
            body["error"].as_str().unwrap_or(&body.to_string())
        );
        Ok(answered)
    }

    /// Shows `/api/admin/gaps` and checks it names the four services no worker runs; returns
    /// how many there are.
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
        anyhow::ensure!(
            missing
                == [
                    "document-processing",
                    "ner-extraction",
                    "notes-coa",
                    "vision-ocr"
                ],
            "unexpected gaps: {missing:?}"
        );
        Ok(missing.len())
    }
}
