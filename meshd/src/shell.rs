//! The tokio shell around the sans-IO [`Node`]: one task owns the TUN device, the UDP socket and
//! the node, and turns their readiness into calls on the node.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;
use time::OffsetDateTime;

use tokio::sync::{mpsc, oneshot};

use crate::batch::Batch;
use crate::config::Config;
use crate::control::{Request, StatusSocket};
use crate::dns_server::DnsServer;
use crate::lighthouse_links::{ClientIdentity, LighthouseEvent, LighthouseLinks};
use crate::node::{Node, Now, Pong, Settings};
use crate::port_mapping::PortMapper;
use crate::resolved::Registration;
use crate::tun_device::TunDevice;
use crate::udp::Udp;
use crate::worker::Workers;
use rma_ca::CaCert;
use rma_daemon::crl_watch::CrlWatch;
use rma_daemon::mesh_tls::Trust;

/// How often certificates near expiry are named again.
const EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// TUN packets read per turn before the loop looks at the socket again (two or three
/// super-packets' segments with offload).
const TUN_BUDGET: usize = 128;
/// Datagrams handed to the node per turn before what they produced is written out: with the
/// TUN's merging, a turn writes a few super-packets, and the buffers of one turn stay bounded.
const UDP_BUDGET: usize = 128;
/// Lighthouse events (mostly relayed datagrams) handled per wake-up.
const LINK_BURST: usize = 64;

fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: OffsetDateTime::now_utc(),
    }
}

pub use rma_daemon::Reload;

fn settings(config: &Config) -> Settings {
    Settings {
        keepalive: config.keepalive,
        static_peers: config.static_peers.clone(),
        firewall: config.firewall.clone(),
        lighthouses: config.lighthouses.clone(),
    }
}

fn warn_if_no_rules(config: &Config) {
    if config.firewall.inbound.is_empty() {
        tracing::warn!("the firewall has no inbound rules: every inbound packet is dropped");
    }
    if config.firewall.outbound.is_empty() {
        tracing::warn!("the firewall has no outbound rules: every outbound packet is dropped");
    }
}

/// Runs a node until `shutdown` completes. `main` and the tests start the daemon through here.
/// `ready` is called once the TUN device is up and the socket is bound. With `reload`, SIGHUP
/// re-reads the configuration.
pub async fn run(
    config: Config,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let identity = rma_daemon::identity::load(&config.pki, OffsetDateTime::now_utc())?;
    let mesh_ip = identity.cert.mesh_ip();
    let prefix = identity.ca.network().prefix_len();
    let name = identity.cert.name().to_string();
    let mut tun = TunDevice::open(&config.tun, mesh_ip, prefix)?;
    let mut udp =
        Udp::bind(config.listen).map_err(|e| anyhow::anyhow!("UDP {}: {e}", config.listen))?;
    let dns = match &config.dns {
        Some(domain) => DnsServer::bind(mesh_ip, identity.ca.network(), domain.clone()).await,
        None => None,
    };
    let status_socket = StatusSocket::bind(&config.status_socket).await?;
    let (status_tx, mut status_rx) = mpsc::channel::<Request>(8);
    let metrics_task = match config.metrics {
        Some(addr) => {
            let listener = rma_daemon::prometheus::bind(addr).await?;
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                status_tx.clone(),
            )))
        }
        None => None,
    };
    let status_task = tokio::spawn(status_socket.serve(status_tx));

    warn_if_no_rules(&config);
    let ca = identity.ca.clone();
    let trust = Trust::new(identity.ca.clone(), identity.crls.clone());
    let candidates = crate::lighthouse_links::local_candidates(udp.local_addr()?, mesh_ip);
    let (links, link_events) = LighthouseLinks::start(
        &config.lighthouses,
        ClientIdentity::new(&identity.cert, &identity.keys, &trust)?,
        candidates.clone(),
    )?;
    // The router's mapping of the WireGuard port, offered ahead of the local candidates.
    let (mapped_tx, mapped) = tokio::sync::watch::channel(None);
    let mapper = (config.port_mapping && !config.lighthouses.is_empty())
        .then(|| PortMapper::start(udp.local_addr().map_or(0, |a| a.port()), mapped_tx));
    let worker_keys = identity.keys.clone();
    let certificate_pem = identity.cert.to_pem();
    let renewer = config.enrollment.as_ref().map(|enrollment| {
        crate::renewer::Renewer::new(
            enrollment,
            &identity.cert,
            identity.keys.clone(),
            identity.ca.fingerprint(),
            config.pki.cert.clone(),
        )
    });
    let mut node = Node::new(identity, &settings(&config));
    if let Some((renewer, _)) = &renewer {
        node.set_next_renewal(renewer.next_attempt());
    }
    for warning in node.expiry_warnings(OffsetDateTime::now_utc()) {
        tracing::warn!("{warning}");
    }
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("installing the SIGHUP handler: {e}"))?;
    // After everything that can fail at startup, so that a failed start leaves nothing behind.
    let resolved = match (&dns, &config.dns) {
        (Some(_), Some(domain)) if config.dns_systemd_resolved => {
            Registration::register(&config.tun.name, mesh_ip, domain).await
        }
        _ => None,
    };
    tracing::info!(
        node = %name,
        %mesh_ip,
        tun = %config.tun.name,
        offload = tun.offload(),
        listen = %udp.local_addr()?,
        "meshd up"
    );
    ready();
    let workers = Workers::start(&config, name.clone(), mesh_ip, certificate_pem, worker_keys);
    let workers = std::cell::RefCell::new(workers);

    let crl_watch = config
        .pki
        .crl
        .clone()
        .map(|path| CrlWatch::new(path, ca.clone()));
    let busy_poll = crate::busy_poll::BusyPoll::new(config.tun.busy_poll);
    let mut reloader = reload.map(|r| (r, config));
    // Reloads, and says which revocation list file the configuration now names.
    let on_hangup = |node: &mut Node| match &mut reloader {
        Some((reload, running)) => match reload_config(node, reload, running, &workers) {
            Ok(()) => {
                tracing::info!(path = %reload.config_path.display(), "configuration reloaded");
                Some(running.pki.crl.clone())
            }
            Err(e) => {
                tracing::error!("reload refused, keeping the running configuration: {e:#}");
                None
            }
        },
        None => {
            tracing::warn!("SIGHUP ignored: no configuration file to reload");
            None
        }
    };
    let on_renewed = |pem: String| workers.borrow_mut().renewed(pem);
    let io = Io {
        dns,
        renewer,
        tun: &mut tun,
        udp: &mut udp,
        requests: &mut status_rx,
        hangups: &mut hangups,
        links,
        link_events,
        trust,
        crl_watch,
        ca,
        candidates: (candidates, mapped),
        busy_poll,
    };
    let result = event_loop(&mut node, io, on_hangup, on_renewed, shutdown).await;
    workers.into_inner().shutdown().await;
    if let Some(mapper) = mapper {
        mapper.stop().await;
    }
    if let Some(registration) = resolved {
        registration.revert().await;
    }
    status_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    tracing::info!(node = %name, "meshd stopped");
    result
}

/// Reads the configuration again and applies what can change while running; nothing of it is
/// applied unless all of it is valid. The revocation list file is looked at after it, on its
/// own (as the lighthouse and routerd do): a list that does not verify is refused and logged,
/// and the one in use stays.
fn reload_config(
    node: &mut Node,
    reload: &Reload,
    running: &mut Config,
    workers: &std::cell::RefCell<Workers>,
) -> anyhow::Result<()> {
    let new = Config::load(&reload.config_path)?;
    (reload.set_log_filter)(&new.log.level).map_err(|e| anyhow::anyhow!("log.level: {e}"))?;
    let restart_needed = [
        ("listen", new.listen != running.listen),
        (
            "wireguard.port_mapping",
            new.port_mapping != running.port_mapping,
        ),
        ("tun", new.tun != running.tun),
        ("status.socket", new.status_socket != running.status_socket),
        (
            "pki.ca, pki.cert or pki.key",
            (&new.pki.ca, &new.pki.cert, &new.pki.key)
                != (&running.pki.ca, &running.pki.cert, &running.pki.key),
        ),
        ("log.format", new.log.format != running.log.format),
        (
            "dns",
            new.dns != running.dns || new.dns_systemd_resolved != running.dns_systemd_resolved,
        ),
    ];
    rma_daemon::logging::restart_needed("meshd", &restart_needed);
    warn_if_no_rules(&new);
    node.reload(&settings(&new), now());
    workers.borrow_mut().reload(running, &new);
    *running = new;
    Ok(())
}

/// What the event loop reads from and writes to.
struct Io<'a> {
    /// Mesh names, when `[dns]` is on and port 53 was free.
    dns: Option<DnsServer>,
    /// With an `[enrollment]` section: renews the certificate, and the attempts' outcomes.
    renewer: Option<(
        crate::renewer::Renewer,
        mpsc::Receiver<crate::renewer::Outcome>,
    )>,
    tun: &'a mut TunDevice,
    udp: &'a mut Udp,
    requests: &'a mut mpsc::Receiver<Request>,
    hangups: &'a mut tokio::signal::unix::Signal,
    links: LighthouseLinks,
    link_events: mpsc::Receiver<LighthouseEvent>,
    /// The lighthouse connections' TLS trust, kept on the node's revocation list.
    trust: Arc<Trust>,
    /// The configured revocation list file, offered to the node when it changes, and the CA
    /// whose lists a file the configuration names after a reload may hold.
    crl_watch: Option<CrlWatch>,
    ca: CaCert,
    /// This node's local candidate endpoints, and the router's mapping of its port.
    candidates: (
        Vec<SocketAddr>,
        tokio::sync::watch::Receiver<Option<std::net::SocketAddrV4>>,
    ),
    busy_poll: crate::busy_poll::BusyPoll,
}

fn handle_link_event(
    node: &mut Node,
    links: &mut LighthouseLinks,
    event: LighthouseEvent,
    batch: &mut Batch,
) {
    match event {
        LighthouseEvent::Up(id, up) => {
            let transport = up.handle.transport();
            links.set_connection(id, Some(up.handle));
            node.lighthouse_up(id, up.remote, transport, Instant::now());
        }
        LighthouseEvent::Down(id) => {
            links.set_connection(id, None);
            node.lighthouse_down(id);
        }
        LighthouseEvent::Parked(id, key, lists) => {
            links.set_connection(id, None);
            node.lighthouse_parked(id, &key, lists, Instant::now());
        }
        LighthouseEvent::Message(id, message) => node.handle_lighthouse(id, message, now(), batch),
        LighthouseEvent::Relayed(id, from, datagram) => {
            node.handle_relayed(id, from, &datagram, now(), batch);
        }
    }
}

/// Offers the node the revocation list file if it changed (or on SIGHUP, `force`).
fn check_crl(node: &mut Node, watch: Option<&mut CrlWatch>, force: bool, batch: &mut Batch) {
    if let Some(watch) = watch {
        watch.poll(force, |crl| node.offer_crl(crl, now(), batch));
    }
}

async fn event_loop(
    node: &mut Node,
    io: Io<'_>,
    mut on_hangup: impl FnMut(&mut Node) -> Option<Option<PathBuf>>,
    mut on_renewed: impl FnMut(String),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Io {
        mut dns,
        renewer,
        tun,
        udp,
        requests,
        hangups,
        mut links,
        mut link_events,
        trust,
        mut crl_watch,
        ca,
        candidates: (local, mut mapped),
        mut busy_poll,
    } = io;
    let mut batch = Batch::default();
    // `meshd ping` probes in flight, by sequence number.
    let mut waiting: HashMap<u32, oneshot::Sender<Pong>> = HashMap::new();
    let mut next_seq: u32 = 0;
    tokio::pin!(shutdown);
    // One timer for the node's deadlines, moved only when the deadline changes: a new timer
    // per loop turn would cost a timer-wheel insert and removal for every packet.
    let timer = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut armed_for: Option<Instant> = None;
    // Certificates near expiry are named at start and then once a day.
    let mut daily =
        tokio::time::interval_at(tokio::time::Instant::now() + EXPIRY_CHECK, EXPIRY_CHECK);
    let (mut renewer, mut renewals) = match renewer {
        Some((renewer, outcomes)) => (Some(renewer), Some(outcomes)),
        None => (None, None),
    };
    let mut renew_check = tokio::time::interval(crate::renewer::CHECK_EVERY);
    let mut crl_poll = tokio::time::interval_at(
        tokio::time::Instant::now() + rma_daemon::crl_watch::POLL,
        rma_daemon::crl_watch::POLL,
    );
    loop {
        let deadline = [
            node.next_timeout(),
            dns.as_ref().and_then(DnsServer::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        if deadline != armed_for {
            if let Some(at) = deadline {
                timer.as_mut().reset(at.into());
            }
            armed_for = deadline;
        }
        // When a turn that moved data began: a TUN read, or datagrams that decrypted to
        // packets (so that unauthenticated traffic never earns a busy poll).
        let mut data_at = None;
        // Unbiased: when the TUN and the socket are both ready, either may go first, so that
        // neither direction of a busy tunnel starves the other.
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            ready = tun.readable() => {
                ready.map_err(|e| anyhow::anyhow!("reading the TUN device: {e}"))?;
                let at = now();
                data_at = Some(at.instant);
                let refused = tun
                    .drain(TUN_BUDGET, |packet| node.handle_tun_packet(packet, at, &mut batch))
                    .map_err(|e| anyhow::anyhow!("reading the TUN device: {e}"))?;
                node.count_tun_failures(refused);
            }
            ready = udp.readable() => {
                ready?;
                let at = now();
                udp.drain(UDP_BUDGET, |from, datagram| {
                    node.handle_datagram(from, datagram, at, &mut batch);
                })?;
                if !batch.deliveries().is_empty() {
                    data_at = Some(at.instant);
                }
            }
            ready = async {
                match &dns {
                    Some(dns) => dns.readable().await,
                    None => std::future::pending().await,
                }
            } => {
                if ready.is_ok()
                    && let Some(dns) = dns.as_mut()
                {
                    dns.serve(node, now(), &mut batch);
                }
            }
            () = &mut timer, if armed_for.is_some() => {
                armed_for = None;
                let at = now();
                node.handle_timers(at, &mut batch);
                if let Some(dns) = dns.as_mut() {
                    dns.retry(node, at, &mut batch);
                }
            }
            Ok(()) = mapped.changed() => {
                let mapped = *mapped.borrow_and_update();
                let mut candidates: Vec<SocketAddr> = mapped.map(SocketAddr::V4).into_iter().collect();
                candidates.extend(local.iter().filter(|c| Some(**c) != mapped.map(SocketAddr::V4)));
                candidates.truncate(rma_proto::lighthouse::MAX_LOCAL_ENDPOINTS);
                // After the new registration, on the same queue: relayed peers are
                // introduced again, with the new candidates.
                if links.set_candidates(candidates) {
                    node.candidates_changed(Instant::now(), &mut batch);
                }
            }
            Some(event) = link_events.recv() => {
                handle_link_event(node, &mut links, event, &mut batch);
                for _ in 1..LINK_BURST {
                    match link_events.try_recv() {
                        Ok(event) => handle_link_event(node, &mut links, event, &mut batch),
                        Err(_) => break,
                    }
                }
                // An answer from a lighthouse may be what a waiting name query needs.
                if let Some(dns) = dns.as_mut() {
                    dns.retry(node, now(), &mut batch);
                }
            }
            Some(request) = requests.recv() => match request {
                Request::Status(reply) => {
                    let _ = reply.send(node.status_at(now()));
                }
                Request::Ping { target, reply } => {
                    next_seq = next_seq.wrapping_add(1);
                    waiting.retain(|_, pong| !pong.is_closed());
                    let answer = match node.ping(&target, next_seq, now(), &mut batch) {
                        Ok(()) => {
                            let (pong, receiver) = oneshot::channel();
                            waiting.insert(next_seq, pong);
                            Ok((next_seq, receiver))
                        }
                        Err(e) => Err(format!("{target}: {e}")),
                    };
                    let _ = reply.send(answer);
                }
            },
            Some(()) = hangups.recv() => {
                if let Some(path) = on_hangup(node)
                    && path.as_deref() != crl_watch.as_ref().map(CrlWatch::path)
                {
                    crl_watch = path.map(|path| CrlWatch::new(path, ca.clone()));
                }
                check_crl(node, crl_watch.as_mut(), true, &mut batch);
            }
            _ = crl_poll.tick() => check_crl(node, crl_watch.as_mut(), false, &mut batch),
            _ = renew_check.tick(), if renewer.is_some() => {
                if let Some(renewer) = renewer.as_mut() {
                    renewer.poll(node.certificate(), OffsetDateTime::now_utc());
                }
            }
            Some(outcome) = async {
                match renewals.as_mut() {
                    Some(outcomes) => outcomes.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(renewer) = renewer.as_mut() {
                    let targets = crate::renewer::Targets {
                        node: &mut *node,
                        links: &mut links,
                        trust: &trust,
                        batch: &mut batch,
                    };
                    let renewed = renewer.finish(outcome, targets);
                    node.record_renewal(renewed.is_some(), renewer.next_attempt());
                    if let Some(pem) = renewed {
                        on_renewed(pem);
                    }
                }
            }
            _ = daily.tick() => {
                for warning in node.expiry_warnings(OffsetDateTime::now_utc()) {
                    tracing::warn!("{warning}");
                }
            }
        }
        for crl in batch.take_crls() {
            trust.offer(crl, OffsetDateTime::now_utc());
        }
        for pong in node.take_pongs() {
            if let Some(waiter) = waiting.remove(&pong.seq) {
                let _ = waiter.send(pong);
            }
        }
        if !batch.is_empty() {
            batch.send_to_lighthouses(&mut links);
            let failed = udp.send(&batch).await + links.take_failures();
            node.count_send_failures(failed);
            if !batch.deliveries().is_empty()
                && let Err(e) = tun.send(batch.deliveries()).await
            {
                tracing::debug!(error = %e, "TUN write failed");
                node.count_tun_failures(1);
            }
            batch.clear();
        }
        if let Some(started) = data_at.filter(|_| busy_poll.is_on()) {
            let ended = Instant::now();
            let window = busy_poll.after_data(started, ended);
            if !window.is_zero() {
                match spin_for_input(tun, udp, ended + window) {
                    Spin::Skipped => {}
                    Spin::Caught => node.count_busy_poll(true),
                    Spin::Missed => node.count_busy_poll(false),
                }
            }
        }
    }
}

/// How a busy poll ended.
enum Spin {
    /// It did not spin: datagrams over the last turn's budget wait to be handled.
    Skipped,
    /// Input came within the window.
    Caught,
    /// The window closed first, or a poll failed (which the next select then reports).
    Missed,
}

/// Spins until the TUN or the socket has input, or until `until`: input due soon is then read
/// without a sleep and a wakeup of the CPU (see [`crate::busy_poll`]).
fn spin_for_input(tun: &TunDevice, udp: &Udp, until: Instant) -> Spin {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if udp.has_pending() {
        return Spin::Skipped;
    }
    let mut fds = [
        PollFd::new(tun.as_fd(), PollFlags::POLLIN),
        PollFd::new(udp.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                let input = fds
                    .iter()
                    .any(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)));
                return if input { Spin::Caught } else { Spin::Missed };
            }
            Err(_) => return Spin::Missed,
        }
        if Instant::now() >= until {
            return Spin::Missed;
        }
        // Lets a runnable task (the application the reply comes from, on two cores) have the
        // CPU first; with none, it returns at once, and the CPU still never halts. A yield
        // that gave the CPU away past the window ends the spin.
        std::thread::yield_now();
        if Instant::now() >= until {
            return Spin::Missed;
        }
    }
}
