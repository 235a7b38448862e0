//! The tokio shell around the sans-IO [`Node`]: one task owns the TUN device, the UDP socket and
//! the node, and turns their readiness into calls on the node.

use std::future::Future;
use std::time::Instant;

use rma_ca::{DEFAULT_WARNING_WINDOW, Expiring};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::batch::Batch;
use crate::config::Config;
use crate::control::{StatusRequest, StatusSocket};
use crate::identity;
use crate::node::{Node, Now, Settings};
use crate::udp::Udp;

/// TUN packets read per wake-up before the loop looks at the socket again.
const TUN_BURST: usize = 64;

fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: OffsetDateTime::now_utc(),
    }
}

/// Runs a node until `shutdown` completes. `main` and the tests start the daemon through here.
/// `ready` is called once the TUN device is up and the socket is bound.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let identity = identity::load(&config.pki, OffsetDateTime::now_utc())?;
    for warning in [
        identity
            .cert
            .expiry_warning(OffsetDateTime::now_utc(), DEFAULT_WARNING_WINDOW),
        identity
            .ca
            .expiry_warning(OffsetDateTime::now_utc(), DEFAULT_WARNING_WINDOW),
    ]
    .into_iter()
    .flatten()
    {
        tracing::warn!("{warning}");
    }
    let mesh_ip = identity.cert.mesh_ip();
    let prefix = identity.ca.network().prefix_len();
    let name = identity.cert.name().to_string();
    // Created down, so that IPv6 is off before the kernel can send anything into it.
    let tun = DeviceBuilder::new()
        .name(&config.tun.name)
        .ipv4(mesh_ip, prefix, None)
        .mtu(config.tun.mtu)
        .enable(false)
        .build_async()
        .map_err(|e| anyhow::anyhow!("TUN device {}: {e}", config.tun.name))?;
    // The mesh is IPv4; without this the kernel sends IPv6 neighbour discovery into the TUN.
    let ipv6_switch = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.tun.name);
    if let Err(e) = std::fs::write(&ipv6_switch, "1") {
        tracing::debug!(error = %e, "could not disable IPv6 on the TUN device");
    }
    tun.enabled(true)
        .map_err(|e| anyhow::anyhow!("bringing up {}: {e}", config.tun.name))?;
    let mut udp =
        Udp::bind(config.listen).map_err(|e| anyhow::anyhow!("UDP {}: {e}", config.listen))?;
    let status_socket = StatusSocket::bind(&config.status_socket).await?;
    let (status_tx, mut status_rx) = mpsc::channel::<StatusRequest>(8);
    let status_task = tokio::spawn(status_socket.serve(status_tx));

    if config.firewall.inbound.is_empty() {
        tracing::warn!("the firewall has no inbound rules: every inbound packet is dropped");
    }
    if config.firewall.outbound.is_empty() {
        tracing::warn!("the firewall has no outbound rules: every outbound packet is dropped");
    }
    let settings = Settings {
        keepalive: config.keepalive,
        static_peers: config.static_peers.clone(),
        firewall: config.firewall.clone(),
    };
    let mut node = Node::new(identity, &settings);
    tracing::info!(
        node = %name,
        %mesh_ip,
        tun = %config.tun.name,
        listen = %udp.local_addr()?,
        "meshd up"
    );
    ready();

    let result = event_loop(&mut node, &tun, &mut udp, &mut status_rx, shutdown).await;
    status_task.abort();
    tracing::info!(node = %name, "meshd stopped");
    result
}

async fn event_loop(
    node: &mut Node,
    tun: &AsyncDevice,
    udp: &mut Udp,
    status: &mut mpsc::Receiver<StatusRequest>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut batch = Batch::default();
    let mut tun_buf = vec![0u8; 65_536];
    tokio::pin!(shutdown);
    loop {
        let deadline = node.next_timeout();
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            read = tun.recv(&mut tun_buf) => {
                let len = read.map_err(|e| anyhow::anyhow!("reading the TUN device: {e}"))?;
                let at = now();
                node.handle_tun_packet(&tun_buf[..len], at, &mut batch);
                for _ in 1..TUN_BURST {
                    match tun.try_recv(&mut tun_buf) {
                        Ok(len) => node.handle_tun_packet(&tun_buf[..len], at, &mut batch),
                        Err(_) => break,
                    }
                }
            }
            ready = udp.readable() => {
                ready?;
                let at = now();
                udp.drain(|from, datagram| node.handle_datagram(from, datagram, at, &mut batch))?;
            }
            () = sleep_until(deadline) => node.handle_timers(now(), &mut batch),
            Some(reply) = status.recv() => {
                let _ = reply.send(node.status());
            }
        }
        if !batch.is_empty() {
            let failed = udp.send(&batch).await;
            node.count_send_failures(failed);
            for packet in batch.deliveries() {
                if let Err(e) = tun.send(packet).await {
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
            batch.clear();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
