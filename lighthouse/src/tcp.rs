//! The lighthouse over TCP ([`rma_proto::stream`]), for nodes on networks that let no UDP out:
//! TLS with the same mutual certificate check as QUIC, the HTTP upgrade, then control and
//! relay frames on the one stream. A node here is the same to the core as one on QUIC; only
//! its relayed packets queue for its writer instead of leaving as datagrams.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rma_daemon::mesh_tls::{self, Trust};
use rma_proto::lighthouse::{self, FromLighthouse, ToLighthouse};
use rma_proto::stream::{self, Frame};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument as _;

use crate::link::{NodeLink, TcpLink};
use crate::rendezvous::ConnId;
use crate::shell::{self, Relaying, Shared, ShellCounters};
use rma_daemon::sync::lock;

/// How long a node has to finish TLS and the upgrade.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in TLS or the upgrade at once, at most, and from one address; more are closed
/// unanswered, so that a flood of idle sockets costs the lighthouse a bounded amount of
/// memory, and one address cannot hold every slot.
pub const MAX_SETTING_UP: usize = 512;
pub const MAX_SETTING_UP_PER_IP: usize = 8;

/// The connections setting up now, in all and by address.
#[derive(Debug, Default)]
pub struct SetupSlots {
    /// Slots in use by address, and their sum.
    by_ip: Mutex<(HashMap<IpAddr, usize>, usize)>,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct SetupSlot {
    slots: Arc<SetupSlots>,
    ip: IpAddr,
}

impl SetupSlots {
    /// A slot for a connection from `ip`, if neither bound is reached.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<SetupSlot> {
        let mut guard = lock(&self.by_ip);
        let (by_ip, total) = &mut *guard;
        let from_ip = by_ip.get(&ip).copied().unwrap_or(0);
        if *total >= MAX_SETTING_UP || from_ip >= MAX_SETTING_UP_PER_IP {
            return None;
        }
        *by_ip.entry(ip).or_default() += 1;
        *total += 1;
        Some(SetupSlot {
            slots: Arc::clone(self),
            ip,
        })
    }

    /// Connections setting up now.
    pub fn in_use(&self) -> usize {
        lock(&self.by_ip).1
    }
}

impl Drop for SetupSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.slots.by_ip);
        let (by_ip, total) = &mut *guard;
        if let Some(count) = by_ip.get_mut(&self.ip) {
            *count -= 1;
            *total -= 1;
            if *count == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}
/// Each side sends a keepalive frame when it has sent nothing for this long, and gives up on
/// a link it has heard nothing on for [`mesh_tls::IDLE_TIMEOUT`], as QUIC does.
const KEEPALIVE: Duration = mesh_tls::KEEPALIVE;

/// One node's TCP connection, from the TLS handshake to close.
pub(crate) async fn serve_node(
    conn: ConnId,
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    permit: SetupSlot,
    shared: Arc<Mutex<Shared>>,
    trust: Arc<Trust>,
) {
    let counters = Arc::clone(&lock(&shared).counters);
    let _ = tcp.set_nodelay(true);
    let setup = async {
        let mut tls = acceptor.accept(tcp).await?;
        let head = stream::read_head(&mut tls).await?;
        if let Err(e) = stream::check_request(&head) {
            let _ = tls.write_all(stream::NOT_FOUND).await;
            let _ = tls.shutdown().await;
            return Err(e.into());
        }
        let der = mesh_tls::tls_peer_certificate(tls.get_ref().1)
            .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
        let cert = rma_ca::NodeCert::from_der(&der)?;
        tls.write_all(stream::upgrade_response().as_bytes()).await?;
        tls.flush().await?;
        anyhow::Ok((tls, cert))
    };
    let set_up = tokio::time::timeout(SETUP_TIMEOUT, setup).await;
    drop(permit);
    let (tls, cert) = match set_up {
        Ok(Ok(set_up)) => set_up,
        Ok(Err(e)) => {
            counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            // Port 443 is scanned all day: counted, and logged only at debug.
            tracing::debug!(%remote, "refused a TCP connection: {e:#}");
            return;
        }
        Err(_) => {
            counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "a TCP connection did not finish setting up in time");
            return;
        }
    };
    let span = tracing::info_span!("node", conn, name = %cert.name(), mesh_ip = %cert.mesh_ip());
    tracing::info!(parent: &span, %remote, "node connected over TCP");
    let (link, relay_rx, close) = TcpLink::new();
    let (control_rx, relaying) = shell::attach(conn, NodeLink::Tcp(link), cert, remote, &shared);
    // The parked registration's key, from the TLS session and the token just issued.
    let park_key = lock(&shared)
        .core
        .token(conn)
        .and_then(|token| mesh_tls::tls_park_key(tls.get_ref().1, &token));
    let session = Session {
        conn,
        shared: &shared,
        counters: &counters,
        relaying: &relaying,
        trust: &trust,
        park_key,
    };
    let reason = async {
        tokio::select! {
            reason = session.run(tls, control_rx, relay_rx) => reason,
            () = close.notified() => "closed by the lighthouse".to_owned(),
        }
    }
    .instrument(span.clone())
    .await;
    shell::detach(conn, &shared);
    tracing::info!(parent: &span, reason = %reason, "node disconnected");
}

struct Session<'a> {
    conn: ConnId,
    shared: &'a Mutex<Shared>,
    counters: &'a Arc<ShellCounters>,
    relaying: &'a Relaying,
    trust: &'a Trust,
    park_key: Option<[u8; rma_proto::parked::KEY_LEN]>,
}

impl Session<'_> {
    async fn run(
        &self,
        tls: TlsStream<TcpStream>,
        control_rx: mpsc::Receiver<Box<FromLighthouse>>,
        relay_rx: mpsc::Receiver<Bytes>,
    ) -> String {
        let (mut read, write) = tokio::io::split(tls);
        let mut control_rx = control_rx;
        let writer = stream::write_frames(
            BufWriter::new(write),
            &mut control_rx,
            relay_rx,
            KEEPALIVE,
            mesh_tls::IDLE_TIMEOUT,
        );
        let reader = async {
            let mut buf = Vec::new();
            let mut last_renewal = None;
            loop {
                let frame = tokio::time::timeout(
                    mesh_tls::IDLE_TIMEOUT,
                    stream::read_frame(&mut read, &mut buf),
                )
                .await;
                match frame {
                    Err(_) => return "nothing heard within the idle timeout".to_owned(),
                    Ok(Ok(Some(Frame::Control))) => {
                        let message = match lighthouse::decode::<ToLighthouse>(&buf) {
                            Ok(message) => message,
                            Err(e) => return format!("control frame: {e}"),
                        };
                        shell::on_message(
                            self.conn,
                            message,
                            |_| self.park_key,
                            self.shared,
                            self.trust,
                            &mut last_renewal,
                        );
                    }
                    Ok(Ok(Some(Frame::Relay))) => {
                        shell::relay(self.conn, &buf, self.shared, self.counters, self.relaying)
                    }
                    Ok(Ok(Some(Frame::Keepalive))) => {}
                    Ok(Ok(None)) => return "connection ended".to_owned(),
                    Ok(Err(e)) => return format!("connection: {e}"),
                }
            }
        };
        tokio::select! {
            reason = writer => reason,
            reason = reader => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_slots_are_bounded_in_all_and_by_address_and_come_back() {
        let slots = Arc::new(SetupSlots::default());
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        let one: Vec<_> = (0..MAX_SETTING_UP_PER_IP)
            .map(|_| slots.take(ip(0)).unwrap())
            .collect();
        assert!(
            slots.take(ip(0)).is_none(),
            "one address holds at most its share"
        );
        let mut many: Vec<_> = (1..).map_while(|n| slots.take(ip(n))).collect();
        assert_eq!(slots.in_use(), MAX_SETTING_UP);
        assert!(slots.take(ip(100_000)).is_none());
        drop(one);
        assert!(
            slots.take(ip(0)).is_some(),
            "a slot given back is free again"
        );
        many.clear();
        assert_eq!(slots.in_use(), 0);
        assert!(
            lock(&slots.by_ip).0.is_empty(),
            "no address is remembered once its slots are back"
        );
    }
}
