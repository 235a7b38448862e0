//! The registry routes driven in-process (no socket): requests carry the address they came
//! from, as the listener would attach it.

use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use rma_ca::test_ca::TestCa;
use rma_ca::{NodeCert, NodeKeys};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::config::Config;
use crate::registry::{Offered, ServiceState};
use crate::store::Store;

const TOKEN: &str = "s3cret-admin-token";

struct Api {
    pki: TestCa,
    shared: Shared,
    _dir: tempfile::TempDir,
    /// The time the last registration was signed at: each is signed later, as a worker's are
    /// (two in one millisecond would be refused as a replay).
    last_signed_ms: std::sync::atomic::AtomicU64,
}

impl Api {
    fn new() -> Self {
        let pki = TestCa::new("mesh-ca");
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            &format!("[listen]\nmesh = \"10.42.0.1:8080\"\n[pki]\nca = \"ca.crt\"\n[admin]\ntoken = \"{TOKEN}\"\n[store]\npath = \"registry.db\"\n"),
            &dir.path().join("routerd.toml"),
        )
        .unwrap();
        let store = Store::open(&config.store).unwrap();
        let app = App::new(
            &config,
            pki.ca.clone(),
            Vec::new(),
            store,
            None,
            TOKEN.into(),
        );
        Self {
            last_signed_ms: std::sync::atomic::AtomicU64::new(0),
            pki,
            shared: std::sync::Arc::new(app),
            _dir: dir,
        }
    }

    /// Sends a request from `from` to the mesh listener and returns the status and the JSON
    /// body.
    async fn call(
        &self,
        from: Ipv4Addr,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        self.send(from, Listener::Mesh, request).await
    }

    /// A registration signed with `keys` at `unix_ms`, sent from `from` to `listener`.
    async fn register_signed(
        &self,
        from: Ipv4Addr,
        listener: Listener,
        keys: &NodeKeys,
        unix_ms: u64,
        body: &Value,
    ) -> (StatusCode, Value) {
        let body = body.to_string();
        let signature = proof::sign_request(keys, "POST", REGISTER_PATH, unix_ms, body.as_bytes());
        let request = Request::builder()
            .method("POST")
            .uri(REGISTER_PATH)
            .header("content-type", "application/json")
            .header(proof::TIME_HEADER, unix_ms.to_string())
            .header(proof::SIGNATURE_HEADER, signature)
            .body(Body::from(body))
            .unwrap();
        self.send(from, listener, request).await
    }

    /// A registration signed with `keys` now, from `from`, to the mesh listener.
    async fn register(&self, from: Ipv4Addr, keys: &NodeKeys, body: &Value) -> (StatusCode, Value) {
        let now = unix_ms(OffsetDateTime::now_utc());
        let last = self
            .last_signed_ms
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        let now = if last >= now {
            self.last_signed_ms
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1
        } else {
            now
        };
        self.register_signed(from, Listener::Mesh, keys, now, body)
            .await
    }

    async fn send(
        &self,
        from: Ipv4Addr,
        listener: Listener,
        request: Request<Body>,
    ) -> (StatusCode, Value) {
        let app = routes(self.shared.clone(), listener)
            .layer(MockConnectInfo(SocketAddr::from((from, 40000))));
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// An API with worker-1 (10.42.0.11, offering rag-embeddings) registered; its keys, and
    /// the session its registration opened.
    async fn with_registered_worker() -> (Self, Ipv4Addr, NodeCert, NodeKeys, String) {
        let api = Self::new();
        let ip = Ipv4Addr::new(10, 42, 0, 11);
        let (cert, keys) = api.pki.node("worker-1", ip);
        let (status, reply) = api
            .register(ip, &keys, &Self::registration(&cert, rag()))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let session = reply["session"].as_str().unwrap().to_owned();
        (api, ip, cert, keys, session)
    }

    fn registration(cert: &NodeCert, services: Value) -> Value {
        json!({
            "certificate": cert.to_pem(),
            "capabilities": {
                "cpu_cores": 4, "ram": "8 GiB", "has_gpu": false,
                "free_disk": "50 GiB", "worker_type": "cpu"
            },
            "services": services,
        })
    }
}

fn rag() -> Value {
    json!([{ "name": "rag-embeddings", "port": 8101, "health": "/health" }])
}

/// A newer meshd may add fields anywhere; this routerd registers it by the fields it knows. A
/// contract version it does not speak is refused, naming the version.
#[tokio::test]
async fn a_registration_with_unknown_fields_registers_and_an_unknown_version_is_refused() {
    let api = Api::new();
    let ip = Ipv4Addr::new(10, 42, 0, 11);
    let (cert, keys) = api.pki.node("worker-1", ip);
    let mut body = Api::registration(&cert, rag());
    body["version"] = json!(1);
    body["load"] = json!({ "cpu": 0.25 });
    body["capabilities"]["npu_count"] = json!(2);
    body["services"][0]["runner"] = json!("exec");
    let (status, reply) = api.register(ip, &keys, &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["assigned_services"], json!(["rag-embeddings"]));

    body["version"] = json!(2);
    let (status, reply) = api.register(ip, &keys, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"].as_str().unwrap().contains("version 2"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_worker_registers_from_its_mesh_ip_and_heartbeats() {
    let api = Api::new();
    let ip = Ipv4Addr::new(10, 42, 0, 11);
    let (cert, keys) = api.pki.node("worker-1", ip);
    let (status, body) = api
        .register(ip, &keys, &Api::registration(&cert, rag()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["worker_id"], "worker-1");
    assert_eq!(body["assigned_services"], json!(["rag-embeddings"]));
    assert_eq!(body["heartbeat_interval_secs"], 2);
    let session = body["session"].as_str().unwrap();
    assert_eq!(session.len(), 32);

    let (status, _) = api
        .call(
            ip,
            "POST",
            "/api/worker/heartbeat",
            Some(json!({"worker_id": "worker-1", "session": session})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(ip, "GET", "/api/coordinator/workers", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], 1);
    assert_eq!(body["workers"][0]["mesh_ip"], "10.42.0.11");
    let (_, health) = api.call(ip, "GET", "/health", None, None).await;
    assert_eq!(health["services"]["rag-embeddings"], 1);
    assert_eq!(
        health["status"], "degraded",
        "one service of six has a worker"
    );
    assert_eq!(health["coordinator"], "routerd");
    assert_eq!(
        health["workers"],
        json!({"total": 1, "active": 1, "stale": 0})
    );
    // The registration is on disk for the next start.
    let stored = api.shared.store().load().unwrap();
    assert_eq!(stored.workers.len(), 1);
}

#[tokio::test]
async fn heartbeats_carry_load_and_states_even_with_fields_routerd_does_not_know() {
    let api = Api::new();
    let (status, health) = api
        .call(Ipv4Addr::LOCALHOST, "GET", "/health", None, None)
        .await;
    assert_eq!(
        (status, &health["status"]),
        (StatusCode::OK, &json!("unavailable"))
    );
    let ip = Ipv4Addr::new(10, 42, 0, 11);
    let (cert, keys) = api.pki.node("worker-1", ip);
    let mut registration = Api::registration(&cert, rag());
    registration["states"] = json!([{"name": "rag-embeddings", "state": "starting"}]);
    registration["coordinators"] = json!(["http://10.42.0.1:8080", "http://10.42.0.2:8080"]);
    let (status, body) = api.register(ip, &keys, &registration).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = body["session"].as_str().unwrap().to_owned();
    let (_, health) = api.call(ip, "GET", "/health", None, None).await;
    assert_eq!(
        health["services"]["rag-embeddings"], 0,
        "starting is not serving"
    );

    let beat = json!({
        "worker_id": "worker-1", "session": session, "mood": "cheerful",
        "load": {"load_average": 1.5, "memory_used_bytes": 2048, "free_disk_bytes": 1073741824_u64,
                 "gpu_utilization": 40.0, "fans": 3},
        "services": [{"name": "rag-embeddings", "state": "running", "active_requests": 7,
                      "loaded_models": ["bge-small"], "queue_depth": 2}],
        "coordinators": [{"url": "http://10.42.0.2:8080", "last_contact_secs": 2}],
    });
    let (status, reply) = api
        .call(ip, "POST", "/api/worker/heartbeat", Some(beat), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["assigned_services"], json!(["rag-embeddings"]));
    let (_, health) = api.call(ip, "GET", "/health", None, None).await;
    assert_eq!(health["services"]["rag-embeddings"], 1, "running now");
    // The state is on disk: a restarted routerd routes to it at once.
    let stored = api.shared.store().load().unwrap();
    assert_eq!(
        stored.workers[0].state("rag-embeddings"),
        ServiceState::Running
    );
    let (_, workers) = api
        .call(ip, "GET", "/api/admin/workers", None, Some(TOKEN))
        .await;
    let worker = &workers["workers"][0];
    assert_eq!(
        worker["capabilities"]["free_disk"], "1.0 GiB",
        "kept up to date"
    );
    assert_eq!(worker["load"]["load_average"], 1.5);
    assert_eq!(
        worker["service_states"][0]["loaded_models"],
        json!(["bge-small"])
    );
    let (_, topology) = api.call(ip, "GET", "/api/topology", None, None).await;
    assert_eq!(topology["routes"][0]["reported_active"], 7);
    let metrics = crate::metrics::render(
        &api.shared.registry(),
        &api.shared.traffic(),
        &[],
        0,
        &[],
        Instant::now(),
        OffsetDateTime::now_utc(),
    );
    for line in [
        "routerd_worker_load_average{worker=\"worker-1\"} 1.5",
        "routerd_worker_service_state{worker=\"worker-1\",service=\"rag-embeddings\",state=\"running\"} 1",
        "routerd_worker_service_active_requests{worker=\"worker-1\",service=\"rag-embeddings\"} 7",
        "routerd_service_assigned{service=\"rag-embeddings\"} 1",
        "routerd_call_duration_seconds",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let (status, coordinators) = api
        .call(ip, "GET", "/api/admin/coordinators", None, Some(TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(coordinators["count"], 2);
    assert_eq!(coordinators["coordinators"][1]["mesh_ip"], "10.42.0.2");
    assert_eq!(coordinators["coordinators"][1]["last_contact_secs"], 2);
    assert_eq!(
        coordinators["coordinators"][0]["last_contact_secs"],
        json!(null)
    );
    let (status, _) = api
        .call(ip, "GET", "/api/admin/coordinators", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registrations_from_elsewhere_with_another_nodes_cert_or_revoked_are_refused() {
    let api = Api::new();
    let ip = Ipv4Addr::new(10, 42, 0, 11);
    let (cert, keys) = api.pki.node("worker-1", ip);
    let body = Api::registration(&cert, rag());
    // From outside the mesh (cloudflared's loopback), and from another node's mesh IP.
    for from in [Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 42, 0, 12)] {
        let (status, reply) = api.register(from, &keys, &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{from}: {reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("request came from")
        );
    }
    // Claiming another name than the certificate's.
    let mut claimed = body.clone();
    claimed["worker_id"] = json!("worker-2");
    let (status, _) = api.register(ip, &keys, &claimed).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Revoked.
    api.shared
        .trust
        .offer(api.pki.crl_revoking(&[&cert]), api.pki.start);
    let (status, reply) = api.register(ip, &keys, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        reply["error"].as_str().unwrap().contains("revoked"),
        "{reply}"
    );
    assert_eq!(api.shared.registry().workers().count(), 0);
}

#[tokio::test]
async fn heartbeats_only_from_the_workers_own_ip_and_bad_bodies_get_clear_errors() {
    let (api, ip, cert, keys, session) = Api::with_registered_worker().await;
    let beat = json!({"worker_id": "worker-1", "session": session});
    let (status, _) = api
        .call(
            Ipv4Addr::new(10, 42, 0, 99),
            "POST",
            "/api/worker/heartbeat",
            Some(beat),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(
            ip,
            "POST",
            "/api/worker/heartbeat",
            Some(json!({"worker_id": "ghost", "session": session})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let gpu_service = json!([{ "name": "llm-inference", "port": 8200, "health": "/health" }]);
    let (status, reply) = api
        .register(ip, &keys, &Api::registration(&cert, gpu_service))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refused alone, not the whole registration"
    );
    assert_eq!(reply["assigned_services"], json!([]));
    assert_eq!(reply["refused_services"][0]["name"], "llm-inference");
    let why = reply["refused_services"][0]["reason"].as_str().unwrap();
    assert!(why.contains("needs a GPU"), "{why}");
    let (status, _) = api.register(ip, &keys, &json!({"nonsense": true})).await;
    assert!(status.is_client_error(), "{status}");
    let huge = json!({ "worker_id": "x".repeat(MAX_BODY) });
    let (status, _) = api
        .call(ip, "POST", "/api/worker/heartbeat", Some(huge), None)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn admin_routes_need_the_token_and_list_gaps() {
    let (api, ip, ..) = Api::with_registered_worker().await;
    for token in [None, Some("wrong")] {
        let (status, _) = api.call(ip, "GET", "/api/admin/gaps", None, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, gaps) = api
        .call(
            Ipv4Addr::LOCALHOST,
            "GET",
            "/api/admin/gaps",
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        gaps["gaps"],
        json!([
            "document-processing",
            "llm-inference",
            "ner-extraction",
            "notes-coa",
            "vision-ocr"
        ])
    );
    assert_eq!(gaps["details"][0]["want"], 1);
    let (status, workers) = api
        .call(
            Ipv4Addr::LOCALHOST,
            "GET",
            "/api/admin/workers",
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(workers["workers"][0]["services"][0]["port"], 8101);
}

/// A local user on a worker's machine (or on routerd's) can send from the worker's mesh IP and
/// has its certificate, which is public; it does not have the key.
#[tokio::test]
async fn a_registration_must_be_signed_by_the_certificates_key_recently_and_once() {
    let api = Api::new();
    let ip = Ipv4Addr::new(10, 42, 0, 11);
    let (cert, keys) = api.pki.node("worker-1", ip);
    let (_, other_keys) = api.pki.node("worker-2", Ipv4Addr::new(10, 42, 0, 12));
    let body = Api::registration(&cert, rag());
    let now = unix_ms(OffsetDateTime::now_utc());

    let (status, reply) = api
        .call(ip, "POST", REGISTER_PATH, Some(body.clone()), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "unsigned: {reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("not signed"),
        "{reply}"
    );
    let (status, reply) = api
        .register_signed(ip, Listener::Mesh, &other_keys, now, &body)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another key: {reply}");
    let stale = now - 10 * 60 * 1000;
    let (status, reply) = api
        .register_signed(ip, Listener::Mesh, &keys, stale, &body)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "stale: {reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("clock"),
        "{reply}"
    );
    assert_eq!(api.shared.registry().workers().count(), 0);
    assert_eq!(api.shared.traffic().stats.registrations_refused, 3);

    let (status, reply) = api
        .register_signed(ip, Listener::Mesh, &keys, now, &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // The same signed request again is a replay.
    let (status, reply) = api
        .register_signed(ip, Listener::Mesh, &keys, now, &body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("replay"),
        "{reply}"
    );

    // A certificate outside the worker groups proves its key but may not register.
    let (ops_cert, ops_keys) = api
        .pki
        .node_in("ops-1", Ipv4Addr::new(10, 42, 0, 30), "ops");
    let (status, reply) = api
        .register(
            Ipv4Addr::new(10, 42, 0, 30),
            &ops_keys,
            &Api::registration(&ops_cert, rag()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("worker groups"),
        "{reply}"
    );
}

#[tokio::test]
async fn heartbeats_carry_the_registrations_session() {
    let (api, ip, ..) = Api::with_registered_worker().await;
    for (session, status) in [
        (
            json!("00112233445566778899aabbccddeeff"),
            StatusCode::FORBIDDEN,
        ),
        (json!("not hex"), StatusCode::BAD_REQUEST),
    ] {
        let (got, reply) = api
            .call(
                ip,
                "POST",
                HEARTBEAT_PATH,
                Some(json!({"worker_id": "worker-1", "session": session})),
                None,
            )
            .await;
        assert_eq!(got, status, "{reply}");
    }
    let (status, _) = api
        .call(
            ip,
            "POST",
            HEARTBEAT_PATH,
            Some(json!({"worker_id": "worker-1"})),
            None,
        )
        .await;
    assert!(status.is_client_error(), "no session: {status}");
}

#[tokio::test]
async fn the_public_listener_has_no_worker_routes() {
    let api = Api::new();
    let ip = Ipv4Addr::new(10, 42, 0, 11);
    let (cert, keys) = api.pki.node("worker-1", ip);
    let now = unix_ms(OffsetDateTime::now_utc());
    let body = Api::registration(&cert, rag());
    let (status, _) = api
        .register_signed(ip, Listener::Public, &keys, now, &body)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.shared.registry().workers().count(), 0);
    let request = Request::builder()
        .method("POST")
        .uri(HEARTBEAT_PATH)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"worker_id": "worker-1", "session": "00"}).to_string(),
        ))
        .unwrap();
    let (status, _) = api.send(ip, Listener::Public, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_metrics_count_down_to_the_revocation_lists_next_update() {
    let api = Api::new();
    // Issued at `start`, due a week later; it stays in use after that.
    api.shared.trust.offer(api.pki.crl(2, &[]), api.pki.start);
    let late = api.pki.start + time::Duration::days(8);
    let text = crate::metrics::render(
        &api.shared.registry(),
        &api.shared.traffic(),
        &api.shared.trust.lists(),
        0,
        &[("public", 3, 1)],
        Instant::now(),
        late,
    );
    assert!(
        text.lines()
            .any(|l| l == "routerd_crl_next_update_seconds -86400"),
        "{text}"
    );
    for line in [
        r#"routerd_connections{listener="public"} 3"#,
        r#"routerd_connections_refused_total{listener="public"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}: {text}");
    }
}

/// A day in the registry's and the balancer's life, in ten-second steps: sixty workers that
/// come and go by the hour (registering, heartbeating, falling silent), calls spread over the
/// live ones with one in seven failing. Nothing outlives its worker: the registry and its
/// store hold the workers heard from within a TTL, the balancer state only for registered
/// workers.
#[tokio::test]
async fn a_day_of_workers_coming_and_going_leaves_no_stale_state() {
    let api = Api::new();
    let t0 = Instant::now();
    let step = std::time::Duration::from_secs(10);
    let ips: Vec<Ipv4Addr> = (0..60u8).map(|i| Ipv4Addr::new(10, 42, 1, i + 1)).collect();
    let mut registered_at = vec![None::<u64>; 60];
    let mut seq = 0u64;
    let offered = || {
        vec![Offered {
            name: "rag-embeddings".into(),
            port: 8101,
            health: "/health".into(),
        }]
    };
    for n in 0..(24 * 3600 / 10) as u64 {
        let now = t0 + step * n as u32;
        let hour = n * 10 / 3600;
        let app = &api.shared;
        let store = app.store();
        let mut registry = app.registry();
        for (i, ip) in ips.iter().enumerate() {
            let alive = !(hour + i as u64).is_multiple_of(5);
            match (alive, registered_at[i]) {
                (true, None) => {
                    seq += 1;
                    let proof = Proof {
                        signed_at_ms: seq,
                        session: [i as u8; 16],
                    };
                    let worker = registry
                        .register(
                            &format!("w{i}"),
                            *ip,
                            Default::default(),
                            offered(),
                            vec![],
                            proof,
                            now,
                        )
                        .unwrap()
                        .clone();
                    store.save(&worker).unwrap();
                    registered_at[i] = Some(n);
                }
                (true, Some(_)) => {
                    // A worker the registry expired (its silence outlasted the TTL) registers
                    // again, as meshd does on a refused heartbeat.
                    if registry
                        .heartbeat(&format!("w{i}"), &[i as u8; 16], Report::default(), now)
                        .is_err()
                    {
                        registered_at[i] = None;
                    }
                }
                (false, _) => registered_at[i] = None,
            }
        }
        drop((registry, store));
        app.expire(now);
        let candidates = app.registry().candidates("rag-embeddings");
        let mut t = app.traffic();
        for call in 0..10u64 {
            let crate::balance::Pick::Worker(w) =
                t.balancer
                    .pick("rag-embeddings", &candidates, &[], now, |k| {
                        (call as usize) % k
                    })
            else {
                continue;
            };
            let worker = w.worker.clone();
            t.balancer.started("rag-embeddings", &worker);
            if (n + call) % 7 == 0 {
                t.balancer
                    .failed("rag-embeddings", &worker, &candidates, now);
            } else {
                t.balancer.succeeded("rag-embeddings", &worker, now);
            }
            t.balancer.finished("rag-embeddings", &worker);
        }
        let tracked = t.balancer.tracked();
        drop(t);
        let live = registered_at.iter().filter(|r| r.is_some()).count();
        let registered = app.registry().workers().count();
        // Those that fell silent this hour stay for one TTL (15 s: two steps).
        assert!(
            registered <= live + 12,
            "step {n}: {registered} for {live} live"
        );
        assert!(tracked <= registered, "step {n}");
        assert!(app.store().load().unwrap().workers.len() <= registered);
    }
}
