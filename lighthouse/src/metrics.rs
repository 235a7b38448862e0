//! Prometheus metrics in the text exposition format, served on `[metrics] listen`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use rma_daemon::prometheus::Exposition;
use tokio::net::TcpListener;

use crate::rendezvous::Counters;
use crate::shell::{Shared, ShellCounters};

/// What the metrics show, taken under the lock in one go.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub connected: usize,
    /// Of them, connections over TCP.
    pub tcp: usize,
    pub registered: usize,
    pub reflected: usize,
    pub parked: usize,
    pub core: Counters,
    /// Seconds until the revocation list in use is due to be replaced (negative once past).
    pub crl_next_update_secs: Option<i64>,
}

/// Renders the snapshot and the shell's counters in the Prometheus text format.
pub fn render(s: &Snapshot, shell: &ShellCounters) -> String {
    let mut out = Exposition::default();
    let c = &s.core;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    for (name, kind, help, value) in [
        (
            "lighthouse_connections",
            "gauge",
            "Node connections that completed mutual TLS.",
            s.connected as u64,
        ),
        (
            "lighthouse_tcp_connections",
            "gauge",
            "Node connections over TLS on TCP, from networks where QUIC did not come up.",
            s.tcp as u64,
        ),
        (
            "lighthouse_registered_nodes",
            "gauge",
            "Nodes registered, connected or parked (soft state: ends with the connection, or with a parked node's pings).",
            s.registered as u64,
        ),
        (
            "lighthouse_parked_nodes",
            "gauge",
            "Registered nodes whose connection is parked: they stay registered with signed pings.",
            s.parked as u64,
        ),
        (
            "lighthouse_parks_total",
            "counter",
            "Nodes that parked their connection.",
            c.parks,
        ),
        (
            "lighthouse_unparked_total",
            "counter",
            "Parked nodes that connected again.",
            c.unparked,
        ),
        (
            "lighthouse_parked_expired_total",
            "counter",
            "Parked registrations dropped because their pings stopped.",
            c.parked_expired,
        ),
        (
            "lighthouse_parked_pings_total",
            "counter",
            "Parked pings that verified, each answered with an ack.",
            c.parked_pings,
        ),
        (
            "lighthouse_parked_pings_refused_total",
            "counter",
            "Parked pings refused: unknown token, not parked, bad tag or a counter that did not grow.",
            c.parked_pings_refused,
        ),
        (
            "lighthouse_wakes_total",
            "counter",
            "Wakes sent to parked nodes that a peer asked for or relayed to.",
            c.wakes,
        ),
        (
            "lighthouse_datagrams_dropped_total",
            "counter",
            "Acks and wakes the reflector's socket could not send at once.",
            load(&shell.datagrams_dropped),
        ),
        (
            "lighthouse_reflected_nodes",
            "gauge",
            "Registered nodes whose WireGuard socket address is known.",
            s.reflected as u64,
        ),
        (
            "lighthouse_queries_total",
            "counter",
            "Peer queries answered.",
            c.queries,
        ),
        (
            "lighthouse_queries_not_found_total",
            "counter",
            "Queries for peers not registered.",
            c.queries_not_found,
        ),
        (
            "lighthouse_queries_rate_limited_total",
            "counter",
            "Queries dropped by the per-node rate limit.",
            c.queries_rate_limited,
        ),
        (
            "lighthouse_punches_total",
            "counter",
            "Introductions: punch requests sent to queried nodes.",
            c.punches,
        ),
        (
            "lighthouse_reflections_total",
            "counter",
            "Reflect messages matched to a node.",
            c.reflections,
        ),
        (
            "lighthouse_reflections_unknown_total",
            "counter",
            "Reflect messages with an unknown token.",
            c.reflections_unknown,
        ),
        (
            "lighthouse_relayed_packets_total",
            "counter",
            "WireGuard datagrams relayed.",
            load(&shell.relay.packets),
        ),
        (
            "lighthouse_relayed_bytes_total",
            "counter",
            "WireGuard bytes relayed.",
            load(&shell.relay.bytes),
        ),
        (
            "lighthouse_relay_dropped_total",
            "counter",
            "Relayed datagrams with no registered sender or destination.",
            load(&shell.relay.dropped),
        ),
        (
            "lighthouse_relay_over_budget_total",
            "counter",
            "Relayed datagrams dropped because their sender was over its relay budget.",
            load(&shell.relay.over_budget),
        ),
        (
            "lighthouse_relay_send_failed_total",
            "counter",
            "Relayed datagrams QUIC could not queue.",
            load(&shell.relay_send_failed),
        ),
        (
            "lighthouse_relay_streams_total",
            "counter",
            "Relayed packets too large for a QUIC datagram, sent on a stream.",
            load(&shell.relay_streams),
        ),
        (
            "lighthouse_relay_streams_dropped_total",
            "counter",
            "Relayed packets too large for a datagram, dropped because too many were being sent on streams.",
            load(&shell.relay_streams_dropped),
        ),
        (
            "lighthouse_certificate_renewals_total",
            "counter",
            "Certificates nodes renewed on their live connections.",
            c.renewals,
        ),
        (
            "lighthouse_closed_revoked_total",
            "counter",
            "Connections closed because the node was revoked.",
            c.closed_revoked,
        ),
        (
            "lighthouse_handshakes_refused_total",
            "counter",
            "Connections refused: bad certificate, bad TLS, or no control stream.",
            load(&shell.handshakes_refused),
        ),
        (
            "lighthouse_reflector_malformed_total",
            "counter",
            "Datagrams on the reflector port that are neither reflect messages nor parked pings.",
            load(&shell.reflector_malformed),
        ),
        (
            "lighthouse_control_dropped_total",
            "counter",
            "Control messages dropped because a node's queue was full.",
            load(&shell.control_dropped),
        ),
        (
            "lighthouse_crl_loads_total",
            "counter",
            "Revocation lists loaded and pushed to nodes.",
            load(&shell.crl_reloads),
        ),
    ] {
        out.single(name, kind, help, value);
    }
    if let Some(secs) = s.crl_next_update_secs {
        out.single(
            "lighthouse_crl_next_update_seconds",
            "gauge",
            "Seconds until the revocation list in use is due to be replaced (negative once past; it stays in use).",
            secs,
        );
    }
    out.finish()
}

pub(crate) fn snapshot(shared: &Mutex<Shared>) -> (Snapshot, Arc<ShellCounters>) {
    let shared = rma_daemon::sync::lock(shared);
    let census = shared.core.census();
    (
        Snapshot {
            connected: census.connected,
            tcp: shared.tcp_links(),
            registered: census.registered,
            reflected: census.reflected,
            parked: census.parked,
            core: shared.core.counters(),
            crl_next_update_secs: rma_ca::RevocationList::soonest_next_update(
                shared.core.lists(),
                time::OffsetDateTime::now_utc(),
            ),
        },
        Arc::clone(&shared.counters),
    )
}

async fn metrics(State(shared): State<Arc<Mutex<Shared>>>) -> impl IntoResponse {
    let (snapshot, counters) = snapshot(&shared);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&snapshot, &counters),
    )
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared);
    rma_daemon::prometheus::serve(listener, app).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let snapshot = Snapshot {
            connected: 3,
            tcp: 1,
            registered: 2,
            reflected: 1,
            parked: 1,
            core: Counters::default(),
            crl_next_update_secs: Some(3600),
        };
        let shell = ShellCounters::default();
        shell.handshakes_refused.store(4, Ordering::Relaxed);
        shell.relay.bytes.store(1400, Ordering::Relaxed);
        let text = render(&snapshot, &shell);
        for line in [
            "# TYPE lighthouse_registered_nodes gauge",
            "lighthouse_registered_nodes 2",
            "lighthouse_tcp_connections 1",
            "lighthouse_relayed_bytes_total 1400",
            "lighthouse_handshakes_refused_total 4",
            "lighthouse_crl_next_update_seconds 3600",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
