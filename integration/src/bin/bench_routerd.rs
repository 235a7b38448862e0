//! `make bench-routerd`: one worker (the test service) called directly, through routerd and
//! through nginx, with wrk, in one run and in one namespace.
//!
//! The namespace has no route anywhere: the worker listens on its mesh IP (10.42.0.11, on the
//! namespace's loopback) and registers with routerd from it, as meshd would, with a
//! certificate from a test CA. routerd and nginx both listen on 127.0.0.1 and keep pooled
//! connections to the worker (nginx: `upstream` with `keepalive`). Neither writes an access
//! log, and both add `X-Request-Id` and `X-Forwarded-For`.
//!
//! Two measurements per path, interleaved over BENCH_REPS rounds (median of the rounds),
//! after BENCH_WARMUP seconds (2) of saturated load on each path that are not counted:
//! - saturated: wrk, 1 thread, BENCH_CONNECTIONS connections (64) for BENCH_SECONDS (10);
//! - paced: wrk's `delay()` hook makes 51 connections each wait 50 ms after every response,
//!   which is just over 1,000 req/s while latency stays under 1 ms; wrk's p99 there, minus
//!   the direct path's, is what a proxy adds.
//!
//! `BENCH_BASELINE=/path/to/routerd` adds a fourth path: that build of routerd, in the same
//! rounds, so a change can be measured against the build before it (the worker registers
//! with both, as with routerd replicas).
//!
//! wrk reports through a Lua `done()` hook, so no figure is parsed from its human output. Any
//! non-2xx answer or socket error fails the benchmark.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use integration::bench::{ensure_installed, env_number, median};
use integration::lab::{Lab, Ns};
use integration::mesh::{self, Pki};
use integration::{traffic, wait};
use serde_json::{Value, json};

const WORKER_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 11);
const ROUTERD_MESH_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
const WORKER_PORT: u16 = 8101;
const ROUTERD: &str = "127.0.0.1:8080";
/// The baseline build's listeners, when BENCH_BASELINE names one.
const BASELINE: &str = "127.0.0.1:8082";
const BASELINE_MESH_PORT: u16 = 8082;
const NGINX: &str = "127.0.0.1:8081";
const TOKEN: &str = "bench-admin-token-0123456789";
const WORKER: &str = "bench-worker";
/// Paced run: connections, and milliseconds each waits after a response.
const PACED_CONNECTIONS: u32 = 51;
const PACED_DELAY_MS: u32 = 50;

/// wrk's summary, written by the `done()` hook as `key=value` words.
const REPORT: &str = r#"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk-report requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time (user and system) the proxy spent per call; 0 for the direct path.
    cpu_us: f64,
    /// The user-space part of `cpu_us`: the proxy's own code, without the kernel's sockets.
    user_us: f64,
}

/// CPU seconds (user, system) `pid` and its children (nginx's workers) have used so far,
/// from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<(f64, f64)> {
    let ticks = |pid: &str| -> anyhow::Result<(f64, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th.
        let rest = stat.rsplit_once(')').context("/proc stat format")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Ok((fields[11].parse()?, fields[12].parse()?))
    };
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    let (mut user, mut system) = ticks(&pid.to_string())?;
    for child in children.split_whitespace() {
        let (u, s) = ticks(child)?;
        user += u;
        system += s;
    }
    // USER_HZ is 100 on Linux.
    Ok((user / 100.0, system / 100.0))
}

struct Target {
    name: &'static str,
    url: String,
    /// The proxy's process, whose CPU time is charged to the calls through it.
    proxy: Option<u32>,
    saturated: Vec<Run>,
    paced: Vec<Run>,
}

fn word(report: &str, key: &str) -> anyhow::Result<f64> {
    report
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("{key} missing in {report:?}"))?
        .parse()
        .with_context(|| format!("{key} in {report:?}"))
}

fn wrk(
    lab: &Lab,
    ns: &Ns,
    target: &Target,
    script: &Path,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<Run> {
    let url = &target.url;
    let seconds = format!("{seconds}s");
    let cpu_before = target.proxy.map(cpu_seconds).transpose()?;
    let out = lab.exec(
        ns,
        "wrk",
        &[
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}"),
            "--timeout",
            "5s",
            "-s",
            &script.to_string_lossy(),
            url,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report = text
        .lines()
        .find(|l| l.starts_with("wrk-report "))
        .with_context(|| format!("no report from wrk:\n{text}"))?;
    let failures = word(report, "non2xx")? + word(report, "socket_errors")?;
    anyhow::ensure!(failures == 0.0, "{url}: failed calls: {report}");
    let requests = word(report, "requests")?;
    let (user_us, system_us) = match (target.proxy, cpu_before) {
        (Some(pid), Some((user, system))) => {
            let (u, s) = cpu_seconds(pid)?;
            ((u - user) * 1e6 / requests, (s - system) * 1e6 / requests)
        }
        _ => (0.0, 0.0),
    };
    Ok(Run {
        rate: requests / (word(report, "duration_us")? / 1e6),
        cpu_us: user_us + system_us,
        user_us,
        p50_us: word(report, "p50_us")?,
        p99_us: word(report, "p99_us")?,
    })
}

/// One HTTP call from inside `ns` (through the probe); the status and the body as JSON.
fn http(
    ns: &Ns,
    addr: &str,
    request: &str,
    source: Option<Ipv4Addr>,
    headers: &[&str],
    body: Option<&Path>,
) -> anyhow::Result<(u16, Value)> {
    let mut headers = headers.to_vec();
    if body.is_some() {
        headers.push("content-type: application/json");
    }
    let (status, _, body) = traffic::http(ns, addr, request, source, &headers, body)?;
    Ok((status, body))
}

/// Registers the worker from its mesh IP with each routerd in `meshes` (their mesh
/// listeners), signed with its key, and heartbeats every 5 s (well within routerd's 15 s TTL) with the session each answer
/// opened (as meshd does) until the returned sender is dropped.
fn register(
    lab: &Lab,
    ns: &Ns,
    pki: &Pki,
    meshes: Vec<String>,
) -> anyhow::Result<mpsc::Sender<()>> {
    let issued = pki.issue(WORKER, WORKER_IP)?;
    let registration = json!({
        "certificate": issued.cert.to_pem(),
        "capabilities": {"cpu_cores": 2, "ram": "1 GiB", "has_gpu": false, "free_disk": "1 GiB", "worker_type": "cpu"},
        "services": [{"name": "rag-embeddings", "port": WORKER_PORT, "health": "/health"}],
    });
    let registration_file = lab.dir().join("registration.json");
    std::fs::write(&registration_file, registration.to_string())?;
    let mut beats = Vec::new();
    for (i, mesh) in meshes.iter().enumerate() {
        let signed =
            traffic::signed_header_lines(&issued.keys, "/api/worker/register", &registration);
        let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
        let (status, body) = http(
            ns,
            mesh,
            "POST /api/worker/register",
            Some(WORKER_IP),
            &signed,
            Some(&registration_file),
        )?;
        anyhow::ensure!(
            status == 200,
            "registration refused by {mesh}: {status} {body}"
        );
        let heartbeat = lab.dir().join(format!("heartbeat-{i}.json"));
        std::fs::write(
            &heartbeat,
            json!({ "worker_id": WORKER, "session": body["session"] }).to_string(),
        )?;
        beats.push((mesh.clone(), heartbeat));
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let ns = ns.clone();
    std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(Duration::from_secs(5))
        {
            for (mesh, heartbeat) in &beats {
                match http(
                    &ns,
                    mesh,
                    "POST /api/worker/heartbeat",
                    Some(WORKER_IP),
                    &[],
                    Some(heartbeat),
                ) {
                    Ok((200, _)) => {}
                    other => eprintln!("heartbeat to {mesh} failed: {other:?}"),
                }
            }
        }
    });
    Ok(stop)
}

/// Starts `binary` as `name`, listening on `public` and on port `mesh_port` of its mesh IP.
fn start_routerd(
    lab: &mut Lab,
    ns: &Ns,
    pki: &Pki,
    (name, binary): (&str, &Path),
    public: &str,
    mesh_port: u16,
) -> anyhow::Result<usize> {
    let config = lab.dir().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[listen]\npublic = \"{public}\"\nmesh = \"{ROUTERD_MESH_IP}:{mesh_port}\"\n\
             [pki]\nca = {ca:?}\n[admin]\ntoken = \"{TOKEN}\"\n[store]\npath = {store:?}\n\
             [log]\nlevel = \"info,routerd::access=off\"\n",
            ca = pki.ca_path,
            store = lab.dir().join(format!("{name}.db")),
        ),
    )?;
    let handle = lab.spawn(ns, name, binary, &["--config", &config.to_string_lossy()])?;
    wait::until("routerd to listen", Duration::from_secs(10), || {
        lab.proc(handle)
            .log_text()
            .contains("routerd up")
            .then_some(())
    })?;
    Ok(handle)
}

fn start_nginx(lab: &mut Lab, ns: &Ns) -> anyhow::Result<usize> {
    let dir = lab.dir().join("nginx");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n\
             client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             upstream worker {{ server {WORKER_IP}:{WORKER_PORT}; keepalive 128; }}\n\
             server {{\n    listen {NGINX};\n\
             location /service/rag/ {{\n      proxy_pass http://worker/;\n      proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n      proxy_set_header X-Request-Id $request_id;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
            dir = dir.display(),
        ),
    )?;
    lab.spawn(
        ns,
        "nginx",
        Path::new("/usr/sbin/nginx"),
        &[
            "-p",
            &dir.to_string_lossy(),
            "-e",
            &dir.join("error.log").to_string_lossy(),
            "-c",
            &conf.to_string_lossy(),
        ],
    )
}

/// Waits until `path` on `addr` is answered by the worker.
fn wait_answered(ns: &Ns, addr: &str, path: &str) -> anyhow::Result<()> {
    wait::until(
        &format!("{addr}{path} to reach the worker"),
        Duration::from_secs(10),
        || match http(ns, addr, &format!("GET {path}"), None, &[], None) {
            Ok((200, body)) if body["worker"] == WORKER => Some(()),
            _ => None,
        },
    )
}

fn us(value: f64) -> String {
    format!("{:.0}", value)
}

fn main() -> anyhow::Result<()> {
    ensure_installed(&[("wrk", "wrk"), ("nginx", "nginx")])?;
    let mut lab = Lab::new()?;
    let ns = lab.namespace("bench")?;
    lab.addr(&ns, "lo", &format!("{ROUTERD_MESH_IP}/32"))?;
    lab.addr(&ns, "lo", &format!("{WORKER_IP}/32"))?;
    let pki = Pki::new(lab.dir(), "bench-ca", "10.42.0.0/16")?;

    let testsvc: PathBuf = mesh::binary("testsvc")?;
    lab.spawn_listening(
        &ns,
        "testsvc",
        &testsvc,
        &[
            "--listen",
            &format!("{WORKER_IP}:{WORKER_PORT}"),
            "--worker",
            WORKER,
        ],
    )?;
    let routerd_binary = mesh::binary("routerd")?;
    let routerd = start_routerd(
        &mut lab,
        &ns,
        &pki,
        ("routerd", &routerd_binary),
        ROUTERD,
        8080,
    )?;
    let mut meshes = vec![format!("{ROUTERD_MESH_IP}:8080")];
    let baseline = match std::env::var_os("BENCH_BASELINE") {
        Some(path) => {
            let path = PathBuf::from(path);
            anyhow::ensure!(
                path.exists(),
                "BENCH_BASELINE: {} is missing",
                path.display()
            );
            let handle = start_routerd(
                &mut lab,
                &ns,
                &pki,
                ("baseline", &path),
                BASELINE,
                BASELINE_MESH_PORT,
            )?;
            meshes.push(format!("{ROUTERD_MESH_IP}:{BASELINE_MESH_PORT}"));
            Some(lab.proc(handle).pid())
        }
        None => None,
    };
    let _heartbeats = register(&lab, &ns, &pki, meshes)?;
    let nginx = start_nginx(&mut lab, &ns)?;
    let routerd = Some(lab.proc(routerd).pid());
    let nginx = Some(lab.proc(nginx).pid());
    let worker = format!("{WORKER_IP}:{WORKER_PORT}");
    wait_answered(&ns, &worker, "/query")?;
    wait_answered(&ns, ROUTERD, "/service/rag/query")?;
    wait_answered(&ns, NGINX, "/service/rag/query")?;
    if baseline.is_some() {
        wait_answered(&ns, BASELINE, "/service/rag/query")?;
    }

    let saturated = lab.dir().join("saturated.lua");
    std::fs::write(&saturated, REPORT)?;
    let paced = lab.dir().join("paced.lua");
    std::fs::write(
        &paced,
        format!("function delay() return {PACED_DELAY_MS} end\n{REPORT}"),
    )?;
    let mut paths = vec![
        ("direct", format!("http://{worker}/query"), None),
        (
            "routerd",
            format!("http://{ROUTERD}/service/rag/query"),
            routerd,
        ),
        ("nginx", format!("http://{NGINX}/service/rag/query"), nginx),
    ];
    if baseline.is_some() {
        let url = format!("http://{BASELINE}/service/rag/query");
        paths.push(("baseline routerd", url, baseline));
    }
    let mut targets: Vec<Target> = paths
        .into_iter()
        .map(|(name, url, proxy)| Target {
            name,
            url,
            proxy,
            saturated: Vec::new(),
            paced: Vec::new(),
        })
        .collect();
    let connections = env_number("BENCH_CONNECTIONS", 64);
    let reps = env_number("BENCH_REPS", 5);
    let seconds = env_number("BENCH_SECONDS", 10);
    // Not counted: each path's first seconds under load (connection pools filling, heaps
    // growing), which would otherwise fall on whichever path runs first.
    let warmup = env_number("BENCH_WARMUP", 2);
    if warmup > 0 {
        for t in &targets {
            wrk(&lab, &ns, t, &saturated, connections, warmup)?;
        }
    }
    for round in 1..=reps {
        for t in &mut targets {
            let s = wrk(&lab, &ns, t, &saturated, connections, seconds)?;
            let p = wrk(&lab, &ns, t, &paced, PACED_CONNECTIONS, seconds)?;
            eprintln!(
                "round {round}/{reps} {}: {:.0} req/s (p50 {} us, p99 {} us, proxy CPU {:.1} us/call, {:.1} of it user); paced {:.0} req/s (p50 {} us, p99 {} us)",
                t.name, s.rate, s.p50_us, s.p99_us, s.cpu_us, s.user_us, p.rate, p.p50_us, p.p99_us
            );
            t.saturated.push(s);
            t.paced.push(p);
        }
    }

    let summary = |runs: &[Run]| Run {
        rate: median(runs.iter().map(|r| r.rate).collect()),
        p50_us: median(runs.iter().map(|r| r.p50_us).collect()),
        p99_us: median(runs.iter().map(|r| r.p99_us).collect()),
        cpu_us: median(runs.iter().map(|r| r.cpu_us).collect()),
        user_us: median(runs.iter().map(|r| r.user_us).collect()),
    };
    let rows: Vec<(&str, Run, Run)> = targets
        .iter()
        .map(|t| (t.name, summary(&t.saturated), summary(&t.paced)))
        .collect();
    let direct = rows[0];
    let nginx = rows[2];
    println!(
        "\nwrk, median of {reps} rounds; saturated: {connections} connections; paced: {PACED_CONNECTIONS} connections, {PACED_DELAY_MS} ms between calls\n"
    );
    println!(
        "| path | req/s | vs nginx | p50 µs | p99 µs | proxy CPU µs/call | of it user | paced req/s | paced p50 µs | paced p99 µs | added p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, s, p) in &rows {
        println!(
            "| {name} | {:.0} | {:.2}x | {} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {:+.0} |",
            s.rate,
            s.rate / nginx.1.rate,
            us(s.p50_us),
            us(s.p99_us),
            s.cpu_us,
            s.user_us,
            p.rate,
            us(p.p50_us),
            us(p.p99_us),
            p.p99_us - direct.2.p99_us
        );
    }
    let routerd = rows[1];
    let added = routerd.2.p99_us - direct.2.p99_us;
    println!(
        "\nbar: routerd req/s >= nginx's: {} ({:.2}x); routerd's added p99 at {:.0} req/s < 1 ms: {} ({added:+.0} µs)",
        if routerd.1.rate >= nginx.1.rate {
            "met"
        } else {
            "NOT met"
        },
        routerd.1.rate / nginx.1.rate,
        routerd.2.rate,
        if added < 1000.0 { "met" } else { "NOT met" },
    );
    Ok(())
}
