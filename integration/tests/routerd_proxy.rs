//! routerd's routing on loopback, in-process and without namespaces: workers are test
//! services on 127.0.0.2, .3, .4 (their "mesh IPs", from a CA for 127.0.0.0/8), registered
//! over HTTP from those addresses. The namespace tests (`routerd_mesh.rs`) put the same
//! services behind NATs and meshd.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration::http::{self, Reply};
use integration::service::Service;
use integration::wait;
use rma_ca::test_ca::TestCa;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "loopback-admin-token";

struct Worker {
    service: Arc<Service>,
    ip: Ipv4Addr,
    port: u16,
    task: JoinHandle<()>,
}

struct Fleet {
    public: SocketAddr,
    mesh: SocketAddr,
    /// Each worker's address and heartbeat body.
    beats: Vec<(Ipv4Addr, String)>,
    pki: TestCa,
    workers: Vec<Worker>,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    routerd: JoinHandle<anyhow::Result<()>>,
    heartbeats: JoinHandle<()>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.heartbeats.abort();
        self.routerd.abort();
        for w in &self.workers {
            w.task.abort();
        }
    }
}

fn config_text(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nmesh = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         [pki]\nca = \"{dir}/ca.crt\"\n[admin]\ntoken = \"{TOKEN}\"\n\
         [store]\npath = \"{dir}/registry.db\"\n\
         {health}{extra}{catalog}",
        dir = dir.display(),
        health = if extra.contains("[health]") {
            ""
        } else {
            "[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n"
        },
        // Every worker of a fleet is assigned rag-embeddings: routerd assigns a service to
        // as many workers as its catalog entry asks for.
        catalog = if extra.contains("[[service]]") {
            ""
        } else {
            "[[service]]\nname = \"rag-embeddings\"\ntier = \"cpu\"\nreplicas = 16\n"
        }
    )
}

/// Starts routerd (config plus `extra`) with its store in `dir`; returns its listeners.
async fn start_routerd(
    dir: &std::path::Path,
    extra: &str,
) -> (
    SocketAddr,
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
) {
    let path = dir.join("routerd.toml");
    std::fs::write(&path, config_text(dir, extra)).unwrap();
    let config = routerd::config::Config::load(&path).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(routerd::shell::run(
        config,
        None,
        async {
            let _ = stopped.await;
        },
        move |public, mesh| {
            let _ = ready_tx.send((public, mesh));
        },
    ));
    let (public, mesh) = ready_rx.await.expect("routerd started");
    (public, mesh, stop, task)
}

/// Registers worker `w` as `name`, signed with its key, as meshd does.
async fn register(pki: &TestCa, mesh: SocketAddr, w: &Worker, name: &str) -> Reply {
    let (cert, keys) = pki.node(name, w.ip);
    let body = json!({
        "certificate": cert.to_pem(),
        "capabilities": {"cpu_cores": 2, "ram": "4 GiB", "has_gpu": false, "free_disk": "9 GiB", "worker_type": "cpu"},
        "services": [{"name": "rag-embeddings", "port": w.port, "health": "/health"}],
    })
    .to_string();
    let now = rma_ca::proof::unix_ms(time::OffsetDateTime::now_utc());
    let signed =
        rma_ca::proof::signed_headers(&keys, "POST", "/api/worker/register", now, body.as_bytes());
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(signed.iter().map(|(n, v)| (*n, v.as_str())));
    http::call(
        mesh,
        Some(IpAddr::V4(w.ip)),
        "POST",
        "/api/worker/register",
        &headers,
        Bytes::from(body),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// `n` workers serving rag-embeddings, registered with a fresh routerd.
async fn fleet(n: u8, extra: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestCa::with_network("loopback-ca", "127.0.0.0/8");
    std::fs::write(dir.path().join("ca.crt"), pki.ca.to_pem()).unwrap();
    let mut workers = Vec::new();
    for i in 0..n {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + i);
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = Service::new(&format!("w{i}"), "rag-embeddings");
        let task = tokio::spawn(integration::service::serve(listener, service.clone()));
        workers.push(Worker {
            service,
            ip,
            port,
            task,
        });
    }
    let (public, mesh, stop, routerd) = start_routerd(dir.path(), extra).await;
    let mut beats = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let name = format!("w{i}");
        let reply = register(&pki, mesh, w, &name).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        let heartbeat = json!({ "worker_id": name, "session": reply.json().unwrap()["session"] });
        beats.push((w.ip, heartbeat.to_string()));
    }
    let heartbeats = tokio::spawn(heartbeat(mesh, beats.clone()));
    Fleet {
        public,
        mesh,
        beats,
        pki,
        workers,
        dir,
        stop: Some(stop),
        routerd,
        heartbeats,
    }
}

/// Heartbeats for every worker, as meshd would send them: (its address, its heartbeat).
async fn heartbeat(mesh: SocketAddr, workers: Vec<(Ipv4Addr, String)>) {
    loop {
        for (ip, beat) in &workers {
            let _ = http::call(
                mesh,
                Some(IpAddr::V4(*ip)),
                "POST",
                "/api/worker/heartbeat",
                &[("content-type", "application/json")],
                Bytes::from(beat.clone()),
                Duration::from_secs(2),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    http::get(addr, path, &[]).await.unwrap()
}

fn answered_by(reply: &Reply) -> String {
    reply.json().unwrap()["worker"].as_str().unwrap().to_owned()
}

async fn topology_state(addr: SocketAddr, worker: &str) -> String {
    let topology = get(addr, "/api/topology").await.json().unwrap();
    topology["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["worker"] == worker)
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_across_workers_with_request_ids_passed_on() {
    let f = fleet(3, "").await;
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..60 {
        let reply = get(f.public, &format!("/service/rag/query?n={i}")).await;
        assert_eq!(reply.status, 200);
        let body = reply.json().unwrap();
        assert_eq!(body["path"], "/query");
        assert_eq!(body["query"], format!("n={i}"));
        let id = reply.headers["x-request-id"].to_str().unwrap();
        assert_eq!(
            body["request_id"], id,
            "the worker saw the ID the caller got"
        );
        assert_eq!(id.len(), 32);
        *seen.entry(answered_by(&reply)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "every worker took calls: {seen:?}");
    assert!(seen.values().all(|&n| n >= 5), "{seen:?}");
    // A caller's ID is kept; canonical names and /api/service work too.
    let reply = http::get(
        f.public,
        "/service/rag-embeddings/stats",
        &[("x-request-id", "frontend-42")],
    )
    .await
    .unwrap();
    assert_eq!(reply.headers["x-request-id"], "frontend-42");
    assert_eq!(reply.json().unwrap()["request_id"], "frontend-42");
    let reply = get(f.public, "/api/service/rag/query").await;
    assert_eq!(reply.json().unwrap()["path"], "/query");
    let reply = get(f.public, "/service/rag").await;
    assert_eq!(reply.json().unwrap()["path"], "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_when_configured() {
    let f = fleet(3, "[routing]\nbalance = \"round-robin\"\n").await;
    let order: Vec<String> = {
        let mut order = Vec::new();
        for _ in 0..6 {
            order.push(answered_by(&get(f.public, "/service/rag/x").await));
        }
        order
    };
    assert_eq!(order[..3], order[3..], "{order:?}");
    let distinct: std::collections::BTreeSet<_> = order.iter().collect();
    assert_eq!(distinct.len(), 3, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_costs_no_call_and_is_ejected() {
    let mut f = fleet(3, "[health]\ninterval = \"10s\"\ntimeout = \"1s\"\n").await;
    // Warm every worker's pooled connections, then kill w0's service.
    for _ in 0..12 {
        assert_eq!(get(f.public, "/service/rag/x").await.status, 200);
    }
    let dead = f.workers.remove(0);
    dead.task.abort();
    let _ = dead.task.await;
    let killed = Instant::now();
    let mut ejected_after = None;
    for _ in 0..60 {
        let reply = get(f.public, "/service/rag/x").await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        assert_ne!(answered_by(&reply), "w0");
        if ejected_after.is_none() && topology_state(f.public, "w0").await == "ejected" {
            ejected_after = Some(killed.elapsed());
        }
    }
    let ejected_after = ejected_after.expect("w0 was ejected");
    println!("dead worker ejected {ejected_after:?} after it died");
    assert!(ejected_after < Duration::from_secs(1));
    let metrics = String::from_utf8(get(f.public, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics
            .contains("routerd_worker_ejections_total{service=\"rag-embeddings\",worker=\"w0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("routerd_retries_total{service=\"rag-embeddings\",reason=\"connect\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_failing_worker_out_and_bring_it_back() {
    let f = fleet(2, "").await;
    f.workers[0].service.set_healthy(false);
    wait::until_async(Duration::from_secs(5), "w0 unhealthy", || async {
        topology_state(f.public, "w0").await == "unhealthy"
    })
    .await
    .unwrap();
    for _ in 0..10 {
        assert_eq!(answered_by(&get(f.public, "/service/rag/x").await), "w1");
    }
    f.workers[1].service.set_healthy(false);
    wait::until_async(Duration::from_secs(5), "w1 unhealthy", || async {
        topology_state(f.public, "w1").await == "unhealthy"
    })
    .await
    .unwrap();
    let started = Instant::now();
    let reply = get(f.public, "/service/rag/x").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json().unwrap()["reason"], "no_healthy_workers");
    assert!(started.elapsed() < Duration::from_millis(100), "a fast 503");
    f.workers[0].service.set_healthy(true);
    wait::until_async(Duration::from_secs(5), "w0 back", || async {
        get(f.public, "/service/rag/x").await.status == 200
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_what_may_be_sent_twice() {
    let f = fleet(2, "").await;
    let calls = |f: &Fleet| -> u64 {
        f.workers
            .iter()
            .map(|w| w.service.calls.load(Ordering::SeqCst))
            .sum()
    };
    // A GET answered 503 goes to the other worker too; a POST does not.
    let before = calls(&f);
    let reply = get(f.public, "/service/rag/status/503").await;
    assert_eq!(reply.status, 503);
    assert_eq!(calls(&f) - before, 2, "GET tried on both workers");
    let before = calls(&f);
    let reply = http::call(
        f.public,
        None,
        "POST",
        "/service/rag/status/503",
        &[],
        Bytes::from_static(b"{}"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(calls(&f) - before, 1, "POST sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_and_oversized_ones_are_refused_unread() {
    let f = fleet(
        1,
        "[[service]]\nname = \"rag-embeddings\"\ntier = \"cpu\"\nmax_body = \"16MiB\"\n",
    )
    .await;
    let payload: Vec<u8> = (0..12u32 << 20).map(|i| (i % 253) as u8).collect();
    let reply = http::call(
        f.public,
        None,
        "POST",
        "/service/rag/upload",
        &[],
        Bytes::from(payload.clone()),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let body = reply.json().unwrap();
    assert_eq!(body["body_bytes"], 12 << 20);
    use sha2::Digest as _;
    assert_eq!(
        body["body_sha256"],
        format!("{:x}", sha2::Sha256::digest(&payload))
    );
    let reply = get(f.public, "/service/rag/bytes/20000000").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 20_000_000);

    // A body of unknown length (chunked from the caller) goes to the worker chunked.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(f.public).await.unwrap();
    let request = "POST /service/rag/upload HTTP/1.1\r\nhost: routerd\r\nconnection: close\r\n\
                   transfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_bytes\":11"), "{answer}");

    // Only the headers are sent: the answer comes before any of the body.
    let before = f.workers[0].service.calls.load(Ordering::SeqCst);
    let mut stream = tokio::net::TcpStream::connect(f.public).await.unwrap();
    let head = format!(
        "POST /service/rag/upload HTTP/1.1\r\nhost: routerd\r\ncontent-length: {}\r\n\r\n",
        (16u64 << 20) + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    assert_eq!(
        f.workers[0].service.calls.load(Ordering::SeqCst),
        before,
        "the worker never saw it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_timeouts_unknown_services_and_cors() {
    use sha2::Digest as _;
    // routerd knows keys a, b, c and d, by their SHA-256 digests.
    let digests: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| format!("\"{:x}\"", sha2::Sha256::digest(k.as_bytes())))
        .collect();
    let f = fleet(
        1,
        &format!(
            "[rate_limit]\nper_second = 1\nburst = 3\napi_keys = [{}]\n\
             [cors]\norigins = [\"https://rmatool.org.uk\"]\n\
             [[service]]\nname = \"rag-embeddings\"\ntier = \"cpu\"\ntimeout = \"300ms\"\n\
             [[service]]\nname = \"notes-coa\"\ntier = \"cpu\"\n",
            digests.join(", ")
        ),
    )
    .await;
    // A caller making up a new key per call is limited by its address: keys routerd does not
    // know name no one.
    for i in 0..3 {
        let key = format!("made-up-{i}");
        assert_eq!(with_key(f.public, &key).await.status, 200);
    }
    let reply = with_key(f.public, "made-up-3").await;
    assert_eq!(reply.status, 429, "rotating keys from one address");
    // Three calls from one known key, then 429 with Retry-After; another key is separate.
    for _ in 0..3 {
        assert_eq!(with_key(f.public, "a").await.status, 200);
    }
    let reply = with_key(f.public, "a").await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "1");
    let reply = http::get(f.public, "/service/rag/x", &[("x-api-key", "b")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    let started = Instant::now();
    let reply = http::get(f.public, "/service/rag/slow?ms=2000", &[("x-api-key", "c")])
        .await
        .unwrap();
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(1));

    let reply = http::get(f.public, "/service/notes/convert", &[("x-api-key", "d")])
        .await
        .unwrap();
    assert_eq!(reply.status, 503);
    let body = reply.json().unwrap();
    assert_eq!(body["reason"], "no_workers");
    let reply = http::get(f.public, "/service/nope/x", &[("x-api-key", "d")])
        .await
        .unwrap();
    assert_eq!(reply.status, 404);

    let allowed = http::get(f.public, "/health", &[("origin", "https://rmatool.org.uk")])
        .await
        .unwrap();
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://rmatool.org.uk"
    );
    let other = http::get(f.public, "/health", &[("origin", "https://evil.example")])
        .await
        .unwrap();
    assert!(other.headers.get("access-control-allow-origin").is_none());
    let preflight = http::call(
        f.public,
        None,
        "OPTIONS",
        "/service/rag/query",
        &[
            ("origin", "https://rmatool.org.uk"),
            ("access-control-request-method", "POST"),
        ],
        Bytes::new(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(preflight.status.is_success());
    assert!(
        preflight.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_routerd_routes_from_its_store_at_once() {
    let mut f = fleet(2, "").await;
    let _ = f.stop.take().unwrap().send(());
    let _ = (&mut f.routerd).await;
    let (public, _mesh, stop, task) = start_routerd(f.dir.path(), "").await;
    let started = Instant::now();
    let reply = get(public, "/service/rag/x").await;
    assert_eq!(reply.status, 200);
    println!(
        "first call after the restart answered in {:?}",
        started.elapsed()
    );
    let workers = http::get(
        public,
        "/api/admin/workers",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(workers["count"], 2);
    let _ = stop.send(());
    let _ = task.await;
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether routerd has closed `stream` (it reads end of file, or a reset), within `within`;
/// whatever routerd answered before closing is returned.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

/// Sends `head` on `stream`, then its body a byte every 200 ms: routerd must answer 408 within
/// 3 s (a second of grace, then 1 KiB/s) and close the connection.
async fn dribbled_body_gets_408(stream: tokio::net::TcpStream, head: &str) {
    use tokio::io::AsyncWriteExt as _;
    let (mut reading, mut writing) = stream.into_split();
    writing.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let dribbler = tokio::spawn(async move {
        for _ in 0..50 {
            if writing.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut reading, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "{head:?}: still open after 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{head:?}: {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{head:?}: {:?}",
        started.elapsed()
    );
    dribbler.abort();
}

/// Slow-loris and its cousins on the public listener (127.0.0.1 is the only trusted proxy, and
/// the callers come from 127.0.0.60): connections that dribble their heads,
/// bodies dribbled a byte at a time, heads too large, callers that stop reading. Held
/// connections take at most their address's share and are closed within their timeout; a
/// normal call and the workers' heartbeats (on the mesh listener) go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_greedy_callers_are_bounded_and_cut_off_in_time() {
    use tokio::io::AsyncWriteExt as _;
    let f = fleet(
        1,
        "[limits]\nheader_timeout = \"2s\"\nbody_grace = \"1s\"\nbody_min_rate = \"1KiB\"\n\
         write_timeout = \"2s\"\nmax_connections = 400\nmax_connections_per_ip = 100\n\
         max_header_bytes = \"16KiB\"\n",
    )
    .await;
    // 150 connections from one address, each sending a head a byte at a time.
    let loris = Ipv4Addr::new(127, 0, 0, 60);
    let mut held = Vec::new();
    for _ in 0..150 {
        let mut stream = connect_from(loris, f.public).await;
        stream
            .write_all(b"GET /service/rag/x HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let dribble = tokio::spawn(async move {
        let started = Instant::now();
        let mut open = held.len();
        while open > 0 && started.elapsed() < Duration::from_secs(10) {
            open = 0;
            for stream in &mut held {
                if stream.write_all(b"X").await.is_ok() {
                    open += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (held, started.elapsed())
    });
    // The address's share is 100: the other 50 were closed at once.
    let refused = r#"routerd_connections_refused_total{listener="public"} 50"#;
    wait_for_metric(f.public, refused, Duration::from_secs(5)).await;
    // A normal call answers at once, and the worker's heartbeat on the mesh listener too.
    let started = Instant::now();
    let reply = get(f.public, "/service/rag/x").await;
    assert_eq!(reply.status, 200);
    let (ip, beat) = &f.beats[0];
    let reply = http::call(
        f.mesh,
        Some(IpAddr::V4(*ip)),
        "POST",
        "/api/worker/heartbeat",
        &[("content-type", "application/json")],
        Bytes::from(beat.clone()),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The dribblers are cut off by the header timeout (2 s), not by their patience (10 s).
    let (mut held, took) = dribble.await.unwrap();
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(1))
                .await
                .is_some()
        );
    }

    // An idempotent call with a small body, dribbled: 408 once it falls behind 1 KiB/s after
    // a second of grace. The same for a registration on the mesh listener, whose body is read
    // before its signature can be checked.
    dribbled_body_gets_408(
        connect_from(loris, f.public).await,
        "PUT /service/rag/x HTTP/1.1\r\nhost: a\r\ncontent-length: 1000\r\n\r\n",
    )
    .await;
    dribbled_body_gets_408(
        connect_from(Ipv4Addr::new(127, 0, 0, 61), f.mesh).await,
        "POST /api/worker/register HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n",
    )
    .await;

    // A head over 16 KiB: 431, and nothing reaches the worker.
    let calls = f.workers[0].service.calls.load(Ordering::SeqCst);
    let mut big = connect_from(loris, f.public).await;
    let head = format!(
        "GET /service/rag/x HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let answer = closed_within(&mut big, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(f.workers[0].service.calls.load(Ordering::SeqCst), calls);

    // A caller that asks for 64 MiB and never reads: closed once its writes stall 2 s.
    let mut greedy = connect_from(loris, f.public).await;
    greedy
        .write_all(b"GET /service/rag/bytes/67108864 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // The metrics call itself is the one open connection left.
    let open = r#"routerd_connections{listener="public"} 1"#;
    wait_for_metric(f.public, open, Duration::from_secs(10)).await;
    drop(greedy);
}

/// Waits until routerd's metrics have `line`.
async fn wait_for_metric(public: SocketAddr, line: &str, within: Duration) {
    wait::until_async(within, line, || async {
        let reply = get(public, "/metrics").await;
        String::from_utf8_lossy(&reply.body)
            .lines()
            .any(|l| l == line)
    })
    .await
    .unwrap();
}

/// A worker that answers 101 to every call (and 200 to its health checks) has answered: routerd
/// cannot carry the switch, so the caller gets 502 `protocol_switch`, but the worker is not
/// failing and is never ejected for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_switching_protocols_gets_a_502_but_is_not_ejected() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let f = fleet(0, "[ejection]\nconsecutive_errors = 2\n").await;
    let ip = Ipv4Addr::new(127, 0, 0, 9);
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer: &[u8] = if head.starts_with(b"GET /health ") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n"
                };
                let _ = stream.write_all(answer).await;
            });
        }
    });
    let switcher = Worker {
        service: Service::new("switcher", "rag-embeddings"),
        ip,
        port,
        task,
    };
    let reply = register(&f.pki, f.mesh, &switcher, "switcher").await;
    assert_eq!(reply.status, 200);
    wait::until_async(Duration::from_secs(5), "the switcher up", || async {
        topology_state(f.public, "switcher").await == "up"
    })
    .await
    .unwrap();
    for _ in 0..5 {
        let reply = http::get(
            f.public,
            "/service/rag/ws",
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 502);
        assert_eq!(reply.json().unwrap()["reason"], "protocol_switch");
    }
    assert_eq!(
        topology_state(f.public, "switcher").await,
        "up",
        "not ejected"
    );
    switcher.task.abort();
}

/// A call to rag-embeddings under API key `key`.
async fn with_key(public: SocketAddr, key: &str) -> Reply {
    http::get(public, "/service/rag/x", &[("x-api-key", key)])
        .await
        .unwrap()
}
