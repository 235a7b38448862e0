//! The connections to the configured lighthouses. One task per lighthouse connects (QUIC with
//! mutual TLS, or TLS over TCP when QUIC does not come up, [`crate::lighthouse_tcp`]),
//! registers, reads what the lighthouse sends and hands it to the event loop; when the
//! connection ends it reconnects with backoff. The event loop sends relayed datagrams on the
//! connection itself, and control messages through the task. A connection the node parks
//! ([`crate::node`]'s parking) is closed once the lighthouse has answered the park, and made
//! again when the node connects or has a message to send.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rma_proto::lighthouse::{self, FromLighthouse, ToLighthouse};
use rma_proto::parked;
use tokio::sync::{mpsc, watch};

use crate::config::Lighthouse;
use crate::lighthouse_tcp::{TcpEnded, TcpLink};
use crate::node::{LighthouseId, Transport};

/// Reconnect delays: doubling from the first to the last, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long QUIC has to come up before a lighthouse with a TCP address is tried over TCP.
const QUIC_FALLBACK: Duration = Duration::from_secs(3);
/// Events from all lighthouses waiting for the event loop; relayed packets beyond it are
/// dropped, like a full socket buffer.
const EVENT_QUEUE: usize = 4096;
const COMMAND_QUEUE: usize = 256;

/// The TLS identity this node presents to lighthouses, on QUIC and on TCP.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    quic: quinn::ClientConfig,
    tcp: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl ClientIdentity {
    pub fn new(
        cert: &rma_ca::NodeCert,
        keys: &rma_ca::NodeKeys,
        trust: &Arc<rma_daemon::mesh_tls::Trust>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            quic: rma_daemon::mesh_tls::client_config(cert, keys, Arc::clone(trust))?,
            tcp: rma_daemon::mesh_tls::tcp_client_config(cert, keys, Arc::clone(trust))?,
        })
    }
}

/// What relayed datagrams to a connected lighthouse go out on.
#[derive(Debug, Clone)]
pub enum LinkHandle {
    Quic(quinn::Connection),
    /// The TCP link's queue for its writer.
    Tcp(mpsc::Sender<Bytes>),
}

impl LinkHandle {
    pub fn transport(&self) -> Transport {
        match self {
            Self::Quic(_) => Transport::Quic,
            Self::Tcp(_) => Transport::Tcp,
        }
    }
}

/// A lighthouse connection that came up: where relayed datagrams go, and the lighthouse's
/// address (unknown when a proxy carries the link and the name does not resolve here).
#[derive(Debug)]
pub struct Up {
    pub handle: LinkHandle,
    pub remote: Option<SocketAddr>,
}

/// What a lighthouse connection reports to the event loop.
#[derive(Debug)]
pub enum LighthouseEvent {
    Up(LighthouseId, Up),
    Down(LighthouseId),
    Message(LighthouseId, FromLighthouse),
    Relayed(LighthouseId, Ipv4Addr, Bytes),
    /// The lighthouse answered the park with the digest of its lists; the key is derived from
    /// the connection, which is closed.
    Parked(LighthouseId, [u8; parked::KEY_LEN], u64),
}

/// What the event loop asks of one lighthouse's task.
#[derive(Debug)]
pub(crate) enum Command {
    Send(ToLighthouse),
    Park,
    /// Connect again, if parked.
    Connect,
}

/// The event loop's handle on every lighthouse connection.
#[derive(Debug)]
pub struct LighthouseLinks {
    commands: Vec<mpsc::Sender<Command>>,
    connections: Vec<Option<LinkHandle>>,
    names: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The TLS identity new connections present: replaced when the certificate is renewed.
    client: watch::Sender<ClientIdentity>,
    /// This node's candidate endpoints, which every registration sends.
    candidates: watch::Sender<Vec<SocketAddr>>,
    /// Relayed datagrams that could not be sent (connection gone or buffer full) since the
    /// last [`LighthouseLinks::take_failures`].
    relay_failed: u64,
}

impl Drop for LighthouseLinks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl LighthouseLinks {
    /// Starts a connection task for each lighthouse. `local` lists this node's candidate
    /// endpoints for registration.
    pub fn start(
        lighthouses: &[Lighthouse],
        client: ClientIdentity,
        local: Vec<SocketAddr>,
    ) -> anyhow::Result<(Self, mpsc::Receiver<LighthouseEvent>)> {
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let (client, identity) = watch::channel(client);
        let (candidates, local) = watch::channel(local);
        let mut links = Self {
            commands: Vec::new(),
            connections: Vec::new(),
            names: Vec::new(),
            tasks: Vec::new(),
            client,
            candidates,
            relay_failed: 0,
        };
        if lighthouses.is_empty() {
            return Ok((links, receiver));
        }
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(|e| anyhow::anyhow!("QUIC socket for the lighthouses: {e}"))?;
        for (id, lighthouse) in lighthouses.iter().enumerate() {
            let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
            let task = tokio::spawn(maintain(
                LighthouseId(id),
                lighthouse.clone(),
                endpoint.clone(),
                identity.clone(),
                local.clone(),
                command_rx,
                events.clone(),
            ));
            links.commands.push(commands);
            links.connections.push(None);
            links.names.push(lighthouse.name.clone());
            links.tasks.push(task);
        }
        Ok((links, receiver))
    }

    /// This node renewed its certificate: connections made from now on present `client`, and
    /// every connected lighthouse is told on the connection it has (`chain`: the certificate's
    /// DER with its issuing CA's), so that none is dropped.
    pub fn renewed(&mut self, client: ClientIdentity, chain: &[u8]) {
        self.client.send_replace(client);
        for id in 0..self.commands.len() {
            self.ask(
                LighthouseId(id),
                ToLighthouse::Renewed {
                    cert: chain.to_vec(),
                },
            );
        }
    }

    /// This node's candidate endpoints changed (the router mapped its port, say): connections
    /// made from now on register them, and every lighthouse is told again now, connected or
    /// not yet (a registration already on its way may have read the old ones). Whether they
    /// changed.
    pub fn set_candidates(&mut self, local: Vec<SocketAddr>) -> bool {
        if *self.candidates.borrow() == local {
            return false;
        }
        self.candidates.send_replace(local.clone());
        for id in 0..self.commands.len() {
            self.ask(
                LighthouseId(id),
                ToLighthouse::Register {
                    local: local.clone(),
                },
            );
        }
        true
    }

    /// Relayed datagrams that could not be sent since the last call.
    pub fn take_failures(&mut self) -> u64 {
        std::mem::take(&mut self.relay_failed)
    }

    /// Notes a connection coming up or going down.
    pub fn set_connection(&mut self, id: LighthouseId, connection: Option<LinkHandle>) {
        if let Some(slot) = self.connections.get_mut(id.0) {
            *slot = connection;
        }
    }

    /// Sends a control message; dropped (and logged) if the connection's queue is full.
    pub fn ask(&self, id: LighthouseId, message: ToLighthouse) {
        self.command(id, Command::Send(message));
    }

    /// Parks the connection: asks the lighthouse, and closes it once answered.
    pub fn park(&self, id: LighthouseId) {
        self.command(id, Command::Park);
    }

    /// Makes a parked connection again.
    pub fn connect(&self, id: LighthouseId) {
        self.command(id, Command::Connect);
    }

    fn command(&self, id: LighthouseId, command: Command) {
        if let Some(commands) = self.commands.get(id.0)
            && commands.try_send(command).is_err()
        {
            tracing::debug!(lighthouse = %self.names[id.0], "control queue full; message dropped");
        }
    }

    /// Relays a WireGuard datagram for mesh IP `to` through lighthouse `id`: as a QUIC datagram,
    /// or on a stream of its own while QUIC's datagrams are smaller than the packet, or as a
    /// frame on the TCP link.
    pub fn relay(&mut self, id: LighthouseId, to: Ipv4Addr, datagram: &[u8]) {
        let Some(Some(handle)) = self.connections.get(id.0) else {
            self.relay_failed += 1;
            return;
        };
        let frame = Bytes::from(lighthouse::relay_frame(to, datagram));
        let connection = match handle {
            LinkHandle::Quic(connection) => connection,
            LinkHandle::Tcp(queue) => {
                if queue.try_send(frame).is_err() {
                    self.relay_failed += 1;
                }
                return;
            }
        };
        if connection
            .max_datagram_size()
            .is_some_and(|max| frame.len() <= max)
        {
            if connection.send_datagram(frame).is_err() {
                self.relay_failed += 1;
            }
            return;
        }
        let connection = connection.clone();
        tokio::spawn(async move {
            if let Ok(mut stream) = connection.open_uni().await {
                let _ = stream.write_all(&frame).await;
                let _ = stream.finish();
            }
        });
    }
}

/// This node's candidate endpoints: every IPv4 address of its interfaces except loopback and
/// the mesh IP itself, with the WireGuard port (or just the listen address, if it is specific).
pub fn local_candidates(listen: SocketAddr, mesh_ip: Ipv4Addr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let mut found: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|interface| match interface.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() && ip != mesh_ip && !ip.is_link_local() => {
                Some(SocketAddr::new(IpAddr::V4(ip), listen.port()))
            }
            _ => None,
        })
        .collect();
    found.sort();
    found.dedup();
    found.truncate(lighthouse::MAX_LOCAL_ENDPOINTS);
    found
}

/// Keeps one lighthouse connected for as long as the node runs.
async fn maintain(
    id: LighthouseId,
    lighthouse: Lighthouse,
    endpoint: quinn::Endpoint,
    identity: watch::Receiver<ClientIdentity>,
    candidates: watch::Receiver<Vec<SocketAddr>>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<LighthouseEvent>,
) {
    let mut backoff = BACKOFF_FIRST;
    // Messages for the next connection: one that made a parked connection come back, or
    // those a TCP link had not sent when QUIC replaced it.
    let mut carried: Vec<ToLighthouse> = Vec::new();
    // A QUIC connection that came up while the link was on TCP, to carry on with.
    let mut ready: Option<quinn::Connection> = None;
    loop {
        let client = identity.borrow().clone();
        // Read at each connection; a change while it is being made reaches the lighthouse as
        // the registration `set_candidates` queued.
        let local = candidates.borrow().clone();
        let first = std::mem::take(&mut carried);
        let quic = |timeout| connect_quic(&lighthouse, &endpoint, client.quic.clone(), timeout);
        let connected = match ready.take() {
            Some(connection) => Ok(connection),
            // With a TCP address to fall back on, QUIC gets a shorter time to come up.
            None if lighthouse.tcp.is_some() => quic(QUIC_FALLBACK).await,
            None => quic(CONNECT_TIMEOUT).await,
        };
        let ended = match connected {
            Ok(connection) => {
                session(
                    id,
                    &lighthouse,
                    connection,
                    &local,
                    first,
                    &mut commands,
                    &events,
                )
                .await
            }
            Err(e) if lighthouse.tcp.is_some() => {
                tracing::info!(lighthouse = %lighthouse.name, "QUIC did not come up ({e:#}); trying TCP");
                let link = TcpLink {
                    id,
                    lighthouse: &lighthouse,
                    tls: Arc::clone(&client.tcp),
                    local: &local,
                    events: &events,
                };
                // Each retry presents the identity of the moment: a node may stay on TCP
                // across a renewal of its certificate.
                let retry = || {
                    let client = identity.borrow().quic.clone();
                    connect_quic(&lighthouse, &endpoint, client, CONNECT_TIMEOUT)
                };
                match link.run(first, &mut commands, retry).await {
                    Ok(TcpEnded::Quic(connection, unsent)) => {
                        ready = Some(connection);
                        carried = unsent;
                        continue;
                    }
                    Ok(TcpEnded::Closed) => Ok(Ended::Closed),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match ended {
            Ok(Ended::Parked) => {
                // Parked until the node wants the connection again; what it queued to send
                // goes once the new connection has registered.
                loop {
                    match commands.recv().await {
                        None => return,
                        Some(Command::Park) => {}
                        Some(Command::Connect) => break,
                        Some(Command::Send(message)) => {
                            carried.push(message);
                            break;
                        }
                    }
                }
                backoff = BACKOFF_FIRST;
                continue;
            }
            Ok(Ended::Closed) => {
                backoff = BACKOFF_FIRST;
                tracing::warn!(lighthouse = %lighthouse.name, "lighthouse connection ended; reconnecting");
            }
            Err(e) => {
                tracing::warn!(lighthouse = %lighthouse.name, address = %lighthouse.address, "lighthouse: {e:#}");
            }
        }
        if events.send(LighthouseEvent::Down(id)).await.is_err() {
            return;
        }
        // Commands for the old connection are stale.
        while commands.try_recv().is_ok() {}
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A QUIC connection to the lighthouse, its name looked up first: both within `timeout`.
async fn connect_quic(
    lighthouse: &Lighthouse,
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    timeout: Duration,
) -> anyhow::Result<quinn::Connection> {
    let connect = async {
        let address = lighthouse.address.resolve().await?;
        let connecting = endpoint.connect_with(client, address, &lighthouse.name)?;
        anyhow::Ok(connecting.await?)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
}

/// Up to a quarter less than `delay`, so that nodes restarted together spread out.
fn jitter(delay: Duration) -> Duration {
    use rand_core::RngCore as _;
    let mut byte = [0u8; 1];
    // Without randomness (never expected), no jitter rather than no reconnect.
    let spread = match rand_core::OsRng.try_fill_bytes(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0 * 0.25,
        Err(_) => 0.0,
    };
    delay.mul_f64(1.0 - spread)
}

/// How a connection ended without an error.
enum Ended {
    Closed,
    /// The lighthouse took the park; the connection is closed.
    Parked,
}

/// One QUIC connection's life: register (and send `first`), then pass messages both ways
/// until it ends or is parked.
async fn session(
    id: LighthouseId,
    lighthouse: &Lighthouse,
    connection: quinn::Connection,
    local: &[SocketAddr],
    first: Vec<ToLighthouse>,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<LighthouseEvent>,
) -> anyhow::Result<Ended> {
    let address = connection.remote_address();
    let (mut send, mut recv) = connection.open_bi().await?;
    lighthouse::write(
        &mut send,
        &ToLighthouse::Register {
            local: local.to_vec(),
        },
    )
    .await?;
    for message in &first {
        lighthouse::write(&mut send, message).await?;
    }
    tracing::info!(lighthouse = %lighthouse.name, %address, "connected to lighthouse");
    let up = Up {
        handle: LinkHandle::Quic(connection.clone()),
        remote: Some(address),
    };
    events
        .send(LighthouseEvent::Up(id, up))
        .await
        .map_err(|_| anyhow::anyhow!("meshd is stopping"))?;

    let datagrams = relay_datagrams(id, connection.clone(), events.clone());
    let streams = relay_streams(id, connection.clone(), events.clone());
    // Frames are read whole by a future of their own and handed over: a read cut off by a
    // command arriving mid-frame would lose the frame's first bytes.
    let (frames_tx, mut frames) = mpsc::channel(16);
    let reader = async {
        let mut buf = Vec::new();
        loop {
            let frame = lighthouse::read::<FromLighthouse>(&mut recv, &mut buf).await;
            let end = !matches!(frame, Ok(Some(_)));
            if frames_tx.send(frame).await.is_err() || end {
                // The control loop ends on what was sent; this one waits to be dropped.
                return std::future::pending::<()>().await;
            }
        }
    };
    let control = async {
        let mut token = None;
        // A park asked for and not yet answered; anything sent after it keeps the connection
        // (the lighthouse takes a message after a park as the node being back).
        let mut park = Park::None;
        loop {
            tokio::select! {
                Some(frame) = frames.recv() => match frame? {
                    Some(FromLighthouse::Parked { lists }) => {
                        if std::mem::replace(&mut park, Park::None) != Park::Asked {
                            continue;
                        }
                        let Some(key) = token.and_then(|t| rma_daemon::mesh_tls::park_key(&connection, &t)) else {
                            continue;
                        };
                        let _ = events.send(LighthouseEvent::Parked(id, key, lists)).await;
                        return Ok(Ended::Parked);
                    }
                    Some(message) => {
                        if let FromLighthouse::Welcome { token: issued, .. } = &message {
                            token = Some(*issued);
                        }
                        if events.send(LighthouseEvent::Message(id, message)).await.is_err() {
                            return Ok(Ended::Closed);
                        }
                    }
                    None => return Ok(Ended::Closed),
                },
                Some(command) = commands.recv() => match command {
                    Command::Send(message) => {
                        if park == Park::Asked {
                            park = Park::Cancelled;
                        }
                        lighthouse::write(&mut send, &message).await?;
                    }
                    Command::Park if park == Park::None => {
                        park = Park::Asked;
                        lighthouse::write(&mut send, &ToLighthouse::Park).await?;
                    }
                    Command::Park | Command::Connect => {}
                },
            }
        }
    };
    let result: anyhow::Result<Ended> = tokio::select! {
        r = control => r.map_err(|e: lighthouse::FrameError| anyhow::anyhow!(e)),
        () = reader => Ok(Ended::Closed),
        () = datagrams => Ok(Ended::Closed),
        () = streams => Ok(Ended::Closed),
    };
    let reason = connection.close_reason();
    match result {
        Ok(Ended::Parked) => {
            connection.close(0u32.into(), b"parked");
            tracing::info!(lighthouse = %lighthouse.name, "lighthouse connection parked");
            return Ok(Ended::Parked);
        }
        _ => connection.close(0u32.into(), b"bye"),
    }
    match (result, reason) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(reason)) => Err(anyhow::anyhow!("connection closed: {reason}")),
        (Ok(_), None) => Ok(Ended::Closed),
    }
}

/// Where a park stands on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Park {
    None,
    Asked,
    /// A message went after the park: the answer is not taken.
    Cancelled,
}

async fn relay_datagrams(
    id: LighthouseId,
    connection: quinn::Connection,
    events: mpsc::Sender<LighthouseEvent>,
) {
    while let Ok(frame) = connection.read_datagram().await {
        forward(id, frame, &events);
    }
}

async fn relay_streams(
    id: LighthouseId,
    connection: quinn::Connection,
    events: mpsc::Sender<LighthouseEvent>,
) {
    while let Ok(mut stream) = connection.accept_uni().await {
        let events = events.clone();
        tokio::spawn(async move {
            if let Ok(frame) = stream.read_to_end(4 + lighthouse::MAX_RELAYED).await {
                forward(id, Bytes::from(frame), &events);
            }
        });
    }
}

fn forward(id: LighthouseId, frame: Bytes, events: &mpsc::Sender<LighthouseEvent>) {
    if let Some((from, _)) = lighthouse::split_relay(&frame) {
        let _ = events.try_send(LighthouseEvent::Relayed(id, from, frame.slice(4..)));
    }
}
