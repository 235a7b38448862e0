//! Prometheus metrics: the node's status rendered in the text exposition format, served on
//! `[metrics] listen` (off unless configured).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use rma_daemon::prometheus::Exposition;

use crate::control::Request;
use crate::status::Status;

/// Seconds after a handshake during which a session can carry data (WireGuard's
/// REJECT_AFTER_TIME): a peer handshaken more recently counts as up.
const SESSION_LIFETIME_SECS: u64 = 180;

/// Renders a status snapshot in the Prometheus text format.
pub fn render(status: &Status) -> String {
    let mut m = Exposition::default();
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
        "meshd_peer_relayed",
        "gauge",
        "1 if packets to the peer go through a lighthouse relay, else 0.",
    );
    for p in &status.peers {
        m.sample(
            "meshd_peer_relayed",
            &[("peer", &p.name), ("mesh_ip", &p.mesh_ip)],
            u8::from(p.path == "relayed"),
        );
    }
    m.header(
        "meshd_lighthouse_connected",
        "gauge",
        "1 while this node holds a registered connection to the lighthouse, else 0.",
    );
    for l in &status.lighthouses {
        m.sample(
            "meshd_lighthouse_connected",
            &[("lighthouse", &l.name)],
            u8::from(l.connected),
        );
    }
    m.header(
        "meshd_lighthouse_tcp",
        "gauge",
        "1 while the connection to the lighthouse runs over TCP because QUIC did not come up, else 0.",
    );
    for l in &status.lighthouses {
        m.sample(
            "meshd_lighthouse_tcp",
            &[("lighthouse", &l.name)],
            u8::from(l.transport.as_deref() == Some("tcp")),
        );
    }
    m.header(
        "meshd_lighthouse_parked",
        "gauge",
        "1 while the connection to the lighthouse is parked (registered with signed pings), else 0.",
    );
    for l in &status.lighthouses {
        m.sample(
            "meshd_lighthouse_parked",
            &[("lighthouse", &l.name)],
            u8::from(l.parked),
        );
    }

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
        ("over_budget", d.over_budget),
        ("hello_conflict", d.hello_conflict),
        ("tun_failed", d.tun_failed),
    ] {
        m.sample("meshd_drops_total", &[("reason", reason)], n);
    }
    m.single(
        "meshd_busy_polls_total",
        "counter",
        "Spins for input after a data turn ([tun] busy_poll_us).",
        status.busy_polls.spins,
    );
    m.single(
        "meshd_busy_polls_caught_total",
        "counter",
        "Spins for input after a data turn that input ended before the window closed.",
        status.busy_polls.caught,
    );
    m.header(
        "meshd_table_entries",
        "gauge",
        "Entries in the node's bounded tables.",
    );
    let t = status.tables;
    for (table, n) in [
        ("peers", t.peers),
        ("pending", t.pending),
        ("pending_bytes", t.pending_bytes),
        ("flows", t.flows),
        ("held_handshakes", t.held_handshakes),
        ("probes", t.probes),
        ("hello_sources", t.hello_sources),
        ("answer_sources", t.answer_sources),
        ("refused_certificates", t.refused_certificates),
    ] {
        m.sample("meshd_table_entries", &[("table", table)], n);
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
    m.header(
        "meshd_cert_renewals_total",
        "counter",
        "Renewals of this node's certificate through its enrollment service, by outcome.",
    );
    m.sample(
        "meshd_cert_renewals_total",
        &[("outcome", "renewed")],
        status.renewals.succeeded,
    );
    m.sample(
        "meshd_cert_renewals_total",
        &[("outcome", "failed")],
        status.renewals.failed,
    );
    if let Some(secs) = status.renewals.next_attempt_in_secs {
        m.single(
            "meshd_cert_renewal_due_seconds",
            "gauge",
            "Seconds until the next attempt to renew this node's certificate (negative while overdue).",
            secs,
        );
    }
    if let Some(secs) = status.crl_next_update_in_secs {
        m.single(
            "meshd_crl_next_update_seconds",
            "gauge",
            "Seconds until the revocation list in use is due to be replaced (negative once past; it stays in use).",
            secs,
        );
    }
    m.finish()
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
            [(header::CONTENT_TYPE, rma_daemon::prometheus::CONTENT_TYPE)],
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
    rma_daemon::prometheus::serve(listener, app).await;
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
            crl_next_update_in_secs: Some(-60),
            drops: NodeCounters {
                bad_cert: 2,
                ..NodeCounters::default()
            },
            tables: crate::status::Tables {
                flows: 12,
                ..Default::default()
            },
            renewals: crate::status::Renewals {
                succeeded: 1,
                failed: 2,
                next_attempt: None,
                next_attempt_in_secs: Some(3600),
            },
            busy_polls: crate::status::BusyPolls {
                spins: 7,
                caught: 5,
            },
            peers: vec![PeerStatus {
                name: "we\"ird".into(),
                mesh_ip: "10.42.0.2".into(),
                groups: vec![],
                endpoint: "192.0.2.1:4242".into(),
                path: "relayed".into(),
                via: Some("lh-1".into()),
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
            lighthouses: vec![crate::status::LighthouseStatus {
                name: "lh-1".into(),
                address: "203.0.113.1:4243".into(),
                connected: true,
                parked: false,
                observed: None,
                transport: Some("tcp".into()),
            }],
        };
        let text = render(&status);
        for line in [
            "meshd_peers_up 1",
            r#"meshd_peer_relayed{peer="we\"ird",mesh_ip="10.42.0.2"} 1"#,
            r#"meshd_lighthouse_connected{lighthouse="lh-1"} 1"#,
            r#"meshd_lighthouse_tcp{lighthouse="lh-1"} 1"#,
            r#"meshd_peer_rx_bytes_total{peer="we\"ird",mesh_ip="10.42.0.2"} 20"#,
            r#"meshd_drops_total{reason="bad_cert"} 2"#,
            r#"meshd_table_entries{table="flows"} 12"#,
            "meshd_busy_polls_total 7",
            "meshd_busy_polls_caught_total 5",
            r#"meshd_drops_total{reason="spoofed"} 4"#,
            r#"meshd_cert_expiry_seconds{cert="ca"} -5"#,
            "meshd_crl_next_update_seconds -60",
            "# TYPE meshd_drops_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\\n{text}"
            );
        }
    }
}
