//! The quinn shell around [`Rendezvous`]: a QUIC endpoint with mutual TLS, one task per node
//! connection, the UDP reflector, revocation-list reloads and the metrics listener. The core
//! sits behind one mutex; every critical section is a few map lookups. Relayed datagrams do
//! not take it: each node's task keeps its routes and budget ([`Relay`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rma_ca::CrlOffer;
use rma_daemon::crl_watch::CrlWatch;
use rma_daemon::sync::lock;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::config::Config;
use crate::link::{NodeLink, Sent};
use crate::relay::{Relay, RelayCounters};
use crate::rendezvous::{ConnId, Effect, RelayDrop, Rendezvous};
use rma_daemon::mesh_tls::Trust;
use rma_proto::lighthouse::{self, FromLighthouse, ToLighthouse};
use rma_proto::wire::{self, Control};

/// How long a node has to finish the handshake and open its control stream.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Control messages queued for one node before the connection counts as stuck.
const CONTROL_QUEUE: usize = 256;
pub use rma_daemon::Reload;

/// Counters the shell keeps besides the core's.
#[derive(Debug, Default)]
pub struct ShellCounters {
    pub handshakes_refused: AtomicU64,
    pub reflector_malformed: AtomicU64,
    pub relay_send_failed: AtomicU64,
    pub relay_streams: AtomicU64,
    /// Oversized relayed packets being sent on streams now, and those dropped because too
    /// many were.
    pub relay_streams_open: std::sync::atomic::AtomicUsize,
    pub relay_streams_dropped: AtomicU64,
    pub control_dropped: AtomicU64,
    pub crl_reloads: AtomicU64,
    /// Acks and wakes the reflector's socket could not send at once (dropped, as UDP may be).
    pub datagrams_dropped: AtomicU64,
    pub relay: RelayCounters,
}

struct Handle {
    connection: NodeLink,
    /// Boxed: a channel's first block holds 32 slots, and a node's channel lives as long
    /// as its connection.
    control: mpsc::Sender<Box<FromLighthouse>>,
}

/// The core and the connections its effects apply to.
pub(crate) struct Shared {
    pub(crate) core: Rendezvous,
    handles: HashMap<ConnId, Handle>,
    pub(crate) counters: Arc<ShellCounters>,
    /// Each node's relay budget.
    relay_limit: rma_daemon::token_bucket::Limit,
    /// The core's registrations' epoch, read without the lock.
    epoch: Arc<AtomicU64>,
    /// The reflector's socket, which acks and wakes go out from.
    reflector: Arc<tokio::net::UdpSocket>,
}

impl Shared {
    /// Node connections over TCP.
    pub(crate) fn tcp_links(&self) -> usize {
        self.handles
            .values()
            .filter(|h| matches!(h.connection, NodeLink::Tcp(_)))
            .count()
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(conn, message) => {
                    if let Some(handle) = self.handles.get(&conn)
                        && handle.control.try_send(Box::new(message)).is_err()
                    {
                        self.counters
                            .control_dropped
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Effect::Datagram(to, datagram) => {
                    if self.reflector.try_send_to(&datagram, to).is_err() {
                        self.counters
                            .datagrams_dropped
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Effect::Close(conn, reason) => {
                    if let Some(handle) = self.handles.remove(&conn) {
                        tracing::info!(conn, %reason, "closing node connection");
                        handle.connection.close(reason.code(), &reason.to_string());
                    }
                }
            }
        }
    }
}

fn random_token() -> [u8; wire::TOKEN_LEN] {
    use rand_core::RngCore as _;
    let mut token = [0u8; wire::TOKEN_LEN];
    rand_core::OsRng.fill_bytes(&mut token);
    token
}

/// Keys derived from the lighthouse's identity key for what must survive a restart: the key
/// stateless resets are made with, and the key connection IDs are validated with. With both
/// stable, a restarted lighthouse recognises its previous run's connection IDs as its own and
/// answers them with a reset the nodes accept, so they reconnect at once instead of after the
/// idle timeout.
fn endpoint_config(identity: &rma_daemon::Identity) -> quinn::EndpointConfig {
    // Hashed piecewise so that no unzeroized copy of the secret is made.
    let derive = |label: &[u8]| {
        let mut derivation = ring::digest::Context::new(&ring::digest::SHA256);
        derivation.update(label);
        derivation.update(&identity.keys.identity_pkcs8_der());
        derivation.finish()
    };
    let reset_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        derive(b"rma-lighthouse stateless reset\0").as_ref(),
    );
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&derive(b"rma-lighthouse connection ids\0").as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// Runs a lighthouse until `shutdown` completes. `main` and the tests start it through here.
/// `ready` is called once both sockets are bound; it gets the QUIC and reflector addresses.
pub async fn run(
    config: Config,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(SocketAddr, SocketAddr),
) -> anyhow::Result<()> {
    let identity = rma_daemon::identity::load(&config.pki, OffsetDateTime::now_utc())?;
    let trust = Trust::new(identity.ca.clone(), identity.crls.clone());
    let server =
        rma_daemon::mesh_tls::server_config(&identity.cert, &identity.keys, Arc::clone(&trust))?;
    let socket = rma_daemon::mesh_tls::quic_socket(config.listen)
        .map_err(|e| anyhow::anyhow!("QUIC listener {}: {e}", config.listen))?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config(&identity),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let reflector = tokio::net::UdpSocket::bind(config.reflector)
        .await
        .map_err(|e| anyhow::anyhow!("reflector {}: {e}", config.reflector))?;
    let reflector = Arc::new(reflector);
    let tcp = match config.tcp_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("TCP listener {addr}: {e}"))?;
            let tls = rma_daemon::mesh_tls::tcp_server_config(
                &identity.cert,
                &identity.keys,
                Arc::clone(&trust),
            )?;
            Some((listener, tokio_rustls::TlsAcceptor::from(tls)))
        }
        None => None,
    };
    let setting_up = Arc::new(crate::tcp::SetupSlots::default());
    let quic_addr = endpoint.local_addr()?;
    let reflector_addr = reflector.local_addr()?;

    let counters = Arc::new(ShellCounters::default());
    let core = Rendezvous::new(reflector_addr.port(), identity.crls.clone());
    let shared = Arc::new(Mutex::new(Shared {
        epoch: core.epoch(),
        core,
        handles: HashMap::new(),
        counters: Arc::clone(&counters),
        reflector: Arc::clone(&reflector),
        relay_limit: rma_daemon::token_bucket::Limit {
            rate: config.relay_rate as f64,
            burst: config.relay_burst as f64,
        },
    }));
    let metrics_task = match config.metrics {
        Some(addr) => {
            let listener = rma_daemon::prometheus::bind(addr).await?;
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                Arc::clone(&shared),
            )))
        }
        None => None,
    };
    let reflector_task = tokio::spawn(reflect(reflector, Arc::clone(&shared)));
    tracing::info!(
        name = %identity.cert.name(),
        quic = %quic_addr,
        reflector = %reflector_addr,
        tcp = %tcp.as_ref().and_then(|(l, _)| l.local_addr().ok()).map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "lighthouse up"
    );
    ready(quic_addr, reflector_addr);

    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("installing the SIGHUP handler: {e}"))?;
    let mut crl_watch = config
        .pki
        .crl
        .clone()
        .map(|path| CrlWatch::new(path, identity.ca.clone()));
    let mut poll = tokio::time::interval(rma_daemon::crl_watch::POLL);
    // Its first tick, at once, warns at start about a list that is due.
    let mut daily = tokio::time::interval(Duration::from_secs(86_400));
    let mut sweep = tokio::time::interval(PARKED_SWEEP);
    let mut next_conn: ConnId = 0;
    tokio::pin!(shutdown);
    loop {
        let expiry = lock(&shared).core.next_expiry();
        let until_expiry = expiry
            .map(|at| (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(crate::rendezvous::EXPIRY_CHECK)
            .min(crate::rendezvous::EXPIRY_CHECK);
        tokio::select! {
            () = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                next_conn += 1;
                tokio::spawn(serve_node(next_conn, incoming, Arc::clone(&shared), Arc::clone(&trust)));
            }
            Some((stream, remote)) = accept_tcp(tcp.as_ref()) => {
                // Over the limit, the connection is closed before any TLS is spent on it.
                let Some(permit) = setting_up.take(remote.ip()) else {
                    counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Some((_, acceptor)) = &tcp else { continue };
                next_conn += 1;
                tokio::spawn(crate::tcp::serve_node(
                    next_conn,
                    stream,
                    remote,
                    acceptor.clone(),
                    permit,
                    Arc::clone(&shared),
                    Arc::clone(&trust),
                ));
            }
            Some(()) = hangups.recv() => {
                if let Some(reload) = &reload {
                    match reload_config(reload, &config) {
                        Ok(()) => tracing::info!(path = %reload.config_path.display(), "configuration reloaded"),
                        Err(e) => tracing::error!("reload refused: {e:#}"),
                    }
                }
                check_crl(crl_watch.as_mut(), &shared, &trust, true);
            }
            _ = poll.tick() => check_crl(crl_watch.as_mut(), &shared, &trust, false),
            _ = sweep.tick() => {
                let mut shared = lock(&shared);
                let effects = shared.core.sweep(Instant::now());
                shared.apply(effects);
            }
            _ = daily.tick() => {
                for crl in trust.lists() {
                    rma_daemon::crl_watch::warn_if_due(Some(&crl), OffsetDateTime::now_utc());
                }
            }
            () = tokio::time::sleep(until_expiry + Duration::from_secs(1)) => {
                let mut shared = lock(&shared);
                let effects = shared.core.expire(OffsetDateTime::now_utc());
                shared.apply(effects);
            }
        }
    }
    endpoint.close(0u32.into(), b"lighthouse stopping");
    reflector_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    tracing::info!("lighthouse stopped");
    Ok(())
}

/// The next TCP connection, if the lighthouse listens on TCP; `None` a moment after an accept
/// error (a full file table, say), so that the loop does not spin on one.
async fn accept_tcp(
    tcp: Option<&(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    let Some((listener, _)) = tcp else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            tracing::warn!("TCP accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Re-reads the config for what can change while running: the log level.
fn reload_config(reload: &Reload, running: &Config) -> anyhow::Result<()> {
    let new = Config::load(&reload.config_path)?;
    (reload.set_log_filter)(&new.log.level).map_err(|e| anyhow::anyhow!("log.level: {e}"))?;
    rma_daemon::logging::restart_needed(
        "the lighthouse",
        &[
            ("listen", new.listen != running.listen),
            ("reflector", new.reflector != running.reflector),
            ("tcp_listen", new.tcp_listen != running.tcp_listen),
            ("metrics", new.metrics != running.metrics),
            ("pki", new.pki != running.pki),
            ("log.format", new.log.format != running.log.format),
        ],
    );
    Ok(())
}

/// Takes the newer revocation lists from the file, if there are any, and pushes them to every
/// node.
fn check_crl(watch: Option<&mut CrlWatch>, shared: &Mutex<Shared>, trust: &Trust, force: bool) {
    let Some(watch) = watch else { return };
    let mut taken = Vec::new();
    watch.poll(force, |crl| {
        let offer = trust.offer(crl.clone(), OffsetDateTime::now_utc());
        if offer == CrlOffer::Replaced {
            taken.push(crl);
        }
        offer
    });
    for crl in taken {
        tracing::info!(
            revoked = crl.len(),
            "pushing the revocation list to every node"
        );
        let mut shared = lock(shared);
        shared.counters.crl_reloads.fetch_add(1, Ordering::Relaxed);
        let effects = shared.core.set_crl(crl);
        shared.apply(effects);
    }
}

/// How often parked registrations whose pings stopped are looked for.
const PARKED_SWEEP: Duration = Duration::from_secs(5);

/// Answers reflect messages and parked pings: the source address of each is a node's
/// WireGuard socket as the internet sees it.
async fn reflect(socket: Arc<tokio::net::UdpSocket>, shared: Arc<Mutex<Shared>>) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let mut shared = lock(&shared);
        match wire::parse_control(&buf[..len]) {
            Ok(Control::Reflect { token }) => {
                let effects = shared.core.reflect(from, &token);
                shared.apply(effects);
            }
            Ok(Control::ParkedPing(ping)) => {
                let effects = shared.core.parked_ping(from, &ping, Instant::now());
                shared.apply(effects);
            }
            _ => {
                shared
                    .counters
                    .reflector_malformed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One node's connection, from handshake to close.
async fn serve_node(
    conn: ConnId,
    incoming: quinn::Incoming,
    shared: Arc<Mutex<Shared>>,
    trust: Arc<Trust>,
) {
    let remote = incoming.remote_address();
    let counters = Arc::clone(&lock(&shared).counters);
    let setup = async {
        let connection = incoming.await?;
        let der = rma_daemon::mesh_tls::peer_certificate(&connection)
            .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
        // The TLS verifier checked the chain in the handshake; parsed again here for its
        // fields only (its signatures are a third of the handshake's cost). A list that came
        // since is the core's to check.
        let cert = rma_ca::NodeCert::from_der(&der)?;
        let (send, recv) = connection.accept_bi().await?;
        anyhow::Ok((connection, cert, send, recv))
    };
    let (connection, cert, send, recv) = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(set_up)) => set_up,
        Ok(Err(e)) => {
            counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, "refused a connection: {e:#}");
            return;
        }
        Err(_) => {
            counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, "a connection did not finish setting up in time");
            return;
        }
    };
    let span = tracing::info_span!("node", conn, name = %cert.name(), mesh_ip = %cert.mesh_ip());
    tracing::info!(parent: &span, %remote, "node connected");
    let (control_rx, relay) = attach(
        conn,
        NodeLink::Quic(connection.clone()),
        cert,
        remote,
        &shared,
    );
    let reason = node_session(
        conn,
        &connection,
        send,
        recv,
        control_rx,
        &shared,
        &counters,
        &relay,
        &trust,
    )
    .instrument(span.clone())
    .await;
    detach(conn, &shared);
    tracing::info!(parent: &span, reason = %reason, "node disconnected");
}

/// A node's connection is set up: the core hears of it, and its control messages and relay
/// budget are made.
pub(crate) fn attach(
    conn: ConnId,
    link: NodeLink,
    cert: rma_ca::NodeCert,
    remote: SocketAddr,
    shared: &Mutex<Shared>,
) -> (mpsc::Receiver<Box<FromLighthouse>>, Relaying) {
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let mut shared = lock(shared);
    shared.handles.insert(
        conn,
        Handle {
            connection: link,
            control: control_tx,
        },
    );
    let effects = shared
        .core
        .connect(conn, cert, remote, random_token(), Instant::now());
    shared.apply(effects);
    let relaying = Relaying {
        relay: Mutex::new(Relay::new(shared.relay_limit, Instant::now())),
        epoch: Arc::clone(&shared.epoch),
    };
    (control_rx, relaying)
}

/// A node's connection ended.
pub(crate) fn detach(conn: ConnId, shared: &Mutex<Shared>) {
    let mut shared = lock(shared);
    // A replaced connection's handle already belongs to its successor's id, not this one.
    shared.handles.remove(&conn);
    shared.core.disconnect(conn);
}

/// The least time between two renewals a connection's node is listened to.
const RENEWAL_SPACING: Duration = Duration::from_secs(10);

/// One node's relay, shared by the two ways its datagrams come (QUIC datagrams and streams),
/// which run on its task one at a time: its lock is never contended.
pub(crate) struct Relaying {
    relay: Mutex<Relay<NodeLink>>,
    epoch: Arc<AtomicU64>,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one node's session: its connection, streams and shared state"
)]
async fn node_session(
    conn: ConnId,
    connection: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut control_rx: mpsc::Receiver<Box<FromLighthouse>>,
    shared: &Mutex<Shared>,
    counters: &Arc<ShellCounters>,
    relaying: &Relaying,
    trust: &Trust,
) -> String {
    let mut last_renewal: Option<Instant> = None;
    let writer = async {
        while let Some(message) = control_rx.recv().await {
            if lighthouse::write(&mut send, &message).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut buf = Vec::new();
        loop {
            match lighthouse::read::<ToLighthouse>(&mut recv, &mut buf).await {
                Ok(Some(message)) => on_message(
                    conn,
                    message,
                    |token| rma_daemon::mesh_tls::park_key(connection, token),
                    shared,
                    trust,
                    &mut last_renewal,
                ),
                Ok(None) => return "control stream ended".to_owned(),
                Err(e) => return format!("control stream: {e}"),
            }
        }
    };
    let datagrams = async {
        loop {
            match connection.read_datagram().await {
                Ok(frame) => relay(conn, &frame, shared, counters, relaying),
                Err(e) => return e.to_string(),
            }
        }
    };
    let streams = async {
        loop {
            match connection.accept_uni().await {
                Ok(mut stream) => {
                    if let Ok(frame) = stream.read_to_end(4 + lighthouse::MAX_RELAYED).await {
                        relay(conn, &frame, shared, counters, relaying);
                    }
                }
                Err(e) => return e.to_string(),
            }
        }
    };
    tokio::select! {
        () = writer => "control stream closed".to_owned(),
        reason = reader => reason,
        reason = datagrams => reason,
        reason = streams => reason,
    }
}

/// One control message from a node, on either transport. `park_key` derives the parked
/// registration's key from the connection's TLS session.
pub(crate) fn on_message(
    conn: ConnId,
    message: ToLighthouse,
    park_key: impl FnOnce(&[u8; wire::TOKEN_LEN]) -> Option<[u8; rma_proto::parked::KEY_LEN]>,
    shared: &Mutex<Shared>,
    trust: &Trust,
    last_renewal: &mut Option<Instant>,
) {
    match message {
        // A node renews its certificate every few weeks; more often than this is ignored, so
        // that a node cannot make its lighthouse verify signatures without end.
        ToLighthouse::Renewed { .. }
            if last_renewal.is_some_and(|t| t.elapsed() < RENEWAL_SPACING) =>
        {
            tracing::debug!("ignored a renewal soon after another");
            // Still a message on the connection: a park it crossed is over.
            let mut shared = lock(shared);
            let effects = shared.core.back_on_connection(conn, Instant::now());
            shared.apply(effects);
        }
        ToLighthouse::Renewed { cert } => {
            *last_renewal = Some(Instant::now());
            // Verified outside the lock: a signature check per renewal.
            let verified = trust.accept(&cert, OffsetDateTime::now_utc());
            let mut shared = lock(shared);
            // A message on the connection: a park it crossed is over.
            let mut effects = shared.core.back_on_connection(conn, Instant::now());
            effects.extend(match verified {
                Ok(cert) => {
                    tracing::info!(not_after = %rma_ca::timefmt::rfc3339(cert.not_after()), "node renewed its certificate");
                    shared.core.renewed(conn, cert)
                }
                // The connection stays on the certificate it was made with (a clock that is
                // off, say, is no reason to cut a healthy session).
                Err(e) => {
                    tracing::warn!(error = %e, "refused a renewed certificate; keeping the one in use");
                    Vec::new()
                }
            });
            shared.apply(effects);
        }
        ToLighthouse::Park => {
            let mut shared = lock(shared);
            let effects = match shared.core.token(conn).and_then(|token| park_key(&token)) {
                Some(key) => shared.core.park(conn, &key, Instant::now()),
                None => shared
                    .core
                    .message(conn, ToLighthouse::Park, Instant::now()),
            };
            shared.apply(effects);
        }
        message => {
            let mut shared = lock(shared);
            let effects = shared.core.message(conn, message, Instant::now());
            shared.apply(effects);
        }
    }
}

/// Forwards one relayed packet: the core picks the destination (once per destination while
/// the registrations stand); the packet leaves stamped with the sender's certified mesh IP.
pub(crate) fn relay(
    conn: ConnId,
    frame: &[u8],
    shared: &Mutex<Shared>,
    counters: &Arc<ShellCounters>,
    relaying: &Relaying,
) {
    let Some((to, datagram)) = lighthouse::split_relay(frame) else {
        return;
    };
    let lookup = || {
        let mut shared = lock(shared);
        let route = shared.core.route(conn, to);
        if route == Err(RelayDrop::Parked) {
            let effects = shared.core.wake_for_relay(to, Instant::now());
            shared.apply(effects);
        }
        let (dest, source) = route?;
        let handle = shared
            .handles
            .get(&dest)
            .ok_or(RelayDrop::UnknownDestination)?;
        Ok((handle.connection.clone(), source))
    };
    let epoch = relaying.epoch.load(Ordering::Acquire);
    let mut relay = lock(&relaying.relay);
    let Ok((destination, source)) = relay.forward(
        to,
        datagram.len(),
        Instant::now(),
        epoch,
        lookup,
        &counters.relay,
    ) else {
        return;
    };
    let mut out = BytesMut::with_capacity(frame.len());
    out.put_slice(&source.octets());
    out.put_slice(datagram);
    let out: Bytes = out.freeze();
    let out = match destination.relay(out) {
        Sent::Yes => return,
        Sent::Dropped => {
            counters.relay_send_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Sent::TooLarge(out) => out,
    };
    let NodeLink::Quic(destination) = destination else {
        return;
    };
    // A packet too large for a datagram goes on a stream of its own, sent by a task: at most
    // MAX_STREAM_SENDS at once over all nodes, so a node sending oversized frames flat out
    // cannot make the lighthouse start a task for each.
    if counters.relay_streams_open.fetch_add(1, Ordering::AcqRel) >= MAX_STREAM_SENDS {
        counters.relay_streams_open.fetch_sub(1, Ordering::AcqRel);
        counters
            .relay_streams_dropped
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    counters.relay_streams.fetch_add(1, Ordering::Relaxed);
    let counters = Arc::clone(counters);
    let destination = destination.clone();
    tokio::spawn(async move {
        // A destination that does not read would hold the slot until its connection closes.
        let send = async {
            if let Ok(mut stream) = destination.open_uni().await {
                let _ = stream.write_all(&out).await;
                let _ = stream.finish();
            }
        };
        let _ = tokio::time::timeout(STREAM_SEND_TIMEOUT, send).await;
        counters.relay_streams_open.fetch_sub(1, Ordering::AcqRel);
    });
}

/// How long an oversized relayed packet may take to go out on its stream.
const STREAM_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Oversized relayed packets being sent at once, at most.
const MAX_STREAM_SENDS: usize = 256;
