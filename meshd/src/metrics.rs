//! Prometheus metrics: the node's status rendered in the text exposition format, served on
//! `[metrics] listen` (off unless configured).

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::control::Request;
use crate::status::Status;

/// Seconds after a handshake during which a session can carry data (WireGuard's
/// REJECT_AFTER_TIME): a peer handshaken more recently counts as up.
const SESSION_LIFETIME_SECS: u64 = 180;

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Renders a status snapshot in the Prometheus text format.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut m = Family { out: &mut out };
    let up = status
        .peers
        .iter()
        .filter(|p| {
            p.last_handshake_secs
                .is_some_and(|s| s < SESSION_LIFETIME_SECS)
        })
        .count();
    m.header("meshd_peers", "gauge", "Certified peers this node knows.");
    m.sample("meshd_peers", &[], status.peers.len());
    m.header(
        "meshd_peers_up",
        "gauge",
        "Peers with a live WireGuard session.",
    );
    m.sample("meshd_peers_up", &[], up);

    m.header(
        "meshd_peer_handshakes_total",
        "counter",
        "Completed WireGuard handshakes per peer.",
    );
    for p in &status.peers {
        m.sample(
            "meshd_peer_handshakes_total",
            &[("peer", &p.name), ("mesh_ip", &p.mesh_ip)],
            p.handshakes,
        );
    }
    m.header(
        "meshd_peer_rx_bytes_total",
        "counter",
        "Bytes received from a peer.",
    );
    for p in &status.peers {
        m.sample(
            "meshd_peer_rx_bytes_total",
            &[("peer", &p.name), ("mesh_ip", &p.mesh_ip)],
            p.rx_bytes,
        );
    }
    m.header(
        "meshd_peer_tx_bytes_total",
        "counter",
        "Bytes sent to a peer.",
    );
    for p in &status.peers {
        m.sample(
            "meshd_peer_tx_bytes_total",
            &[("peer", &p.name), ("mesh_ip", &p.mesh_ip)],
            p.tx_bytes,
        );
    }

    m.header(
        "meshd_drops_total",
        "counter",
        "Packets and messages dropped, by reason.",
    );
    let d = status.drops;
    for (reason, n) in [
        ("bad_cert", d.bad_cert),
        ("malformed", d.malformed),
        ("unknown_peer", d.unknown_peer),
        ("no_route", d.no_route),
        ("queue_full", d.queue_dropped),
        ("send_failed", d.send_failed),
    ] {
        m.sample("meshd_drops_total", &[("reason", reason)], n);
    }
    let mut per_peer = [
        ("spoofed", 0),
        ("misrouted", 0),
        ("rejected", 0),
        ("firewall_in", 0),
        ("firewall_out", 0),
    ];
    for p in &status.peers {
        let c = p.drops;
        for (slot, n) in per_peer.iter_mut().zip([
            c.spoofed,
            c.misrouted,
            c.rejected,
            c.firewall_in,
            c.firewall_out,
        ]) {
            slot.1 += n;
        }
    }
    for (reason, n) in per_peer {
        m.sample("meshd_drops_total", &[("reason", reason)], n);
    }

    m.header(
        "meshd_cert_expiry_seconds",
        "gauge",
        "Seconds until a certificate expires (negative once expired).",
    );
    m.sample(
        "meshd_cert_expiry_seconds",
        &[("cert", "node")],
        status.cert_expires_in_secs,
    );
    m.sample(
        "meshd_cert_expiry_seconds",
        &[("cert", "ca")],
        status.ca_expires_in_secs,
    );
    out
}

async fn scrape(State(requests): State<mpsc::Sender<Request>>) -> impl IntoResponse {
    let (reply, status) = oneshot::channel();
    let snapshot = match requests.send(Request::Status(reply)).await {
        Ok(()) => status.await.ok(),
        Err(_) => None,
    };
    match snapshot {
        Some(status) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(&status),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "meshd is shutting down\n".to_owned(),
        ),
    }
}

/// Serves `/metrics` until the event loop goes away.
pub async fn serve(listener: TcpListener, requests: mpsc::Sender<Request>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(requests);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{NodeCounters, PeerCounters, PeerStatus};

    #[test]
    fn renders_the_text_format() {
        let status = Status {
            name: "n1".into(),
            mesh_ip: "10.42.0.1".into(),
            cert_not_after: String::new(),
            cert_expires_in_secs: 86_400,
            ca_expires_in_secs: -5,
            drops: NodeCounters {
                bad_cert: 2,
                ..NodeCounters::default()
            },
            peers: vec![PeerStatus {
                name: "we\"ird".into(),
                mesh_ip: "10.42.0.2".into(),
                groups: vec![],
                endpoint: "192.0.2.1:4242".into(),
                path: "direct".into(),
                last_handshake_secs: Some(3),
                handshakes: 1,
                rtt_ms: Some(1),
                tx_bytes: 10,
                rx_bytes: 20,
                drops: PeerCounters {
                    spoofed: 4,
                    ..PeerCounters::default()
                },
                cert_not_after: String::new(),
            }],
        };
        let text = render(&status);
        for line in [
            "meshd_peers_up 1",
            r#"meshd_peer_rx_bytes_total{peer="we\"ird",mesh_ip="10.42.0.2"} 20"#,
            r#"meshd_drops_total{reason="bad_cert"} 2"#,
            r#"meshd_drops_total{reason="spoofed"} 4"#,
            r#"meshd_cert_expiry_seconds{cert="ca"} -5"#,
            "# TYPE meshd_drops_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\\n{text}"
            );
        }
    }
}
