//! A lighthouse connection over TCP ([`rma_proto::stream`]), for when QUIC does not come up
//! (a network that lets no UDP out): TLS with the node's certificate, the HTTP upgrade, then
//! control and relay frames on the one stream. While it lasts, QUIC is tried again every
//! [`QUIC_RETRY`]; the first handshake that completes ends the TCP link and takes its place.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rma_proto::lighthouse::{self, FromLighthouse, ToLighthouse};
use rma_proto::stream::{self, Frame};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::Lighthouse;
use crate::lighthouse_links::{Command, LighthouseEvent, LinkHandle, Up};
use crate::node::LighthouseId;

/// How often a node on TCP tries QUIC again.
pub const QUIC_RETRY: Duration = Duration::from_secs(10);
/// How long a proxied link waits for the lighthouse's name to resolve here.
const PROXIED_LOOKUP: Duration = Duration::from_millis(500);
/// Relayed packets waiting for the writer; beyond it they are dropped, as a full socket
/// buffer drops UDP.
const RELAY_QUEUE: usize = 512;
const CONTROL_QUEUE: usize = 64;

/// How a TCP link ended without an error.
pub enum TcpEnded {
    Closed,
    /// QUIC came up: this connection takes the link's place, and the control messages the
    /// link had not sent go on it.
    Quic(quinn::Connection, Vec<ToLighthouse>),
}

/// What a TCP session needs besides its lighthouse.
pub struct TcpLink<'a> {
    pub id: LighthouseId,
    pub lighthouse: &'a Lighthouse,
    pub tls: Arc<tokio_rustls::rustls::ClientConfig>,
    pub local: &'a [std::net::SocketAddr],
    pub events: &'a mpsc::Sender<LighthouseEvent>,
}

impl TcpLink<'_> {
    /// Connects over TCP, registers (and sends `first`), then carries messages both ways
    /// until the link ends or `quic` (tried every [`QUIC_RETRY`]) gives a connection.
    pub async fn run<F>(
        &self,
        first: Vec<ToLighthouse>,
        commands: &mut mpsc::Receiver<Command>,
        mut quic: impl FnMut() -> F,
    ) -> anyhow::Result<TcpEnded>
    where
        F: Future<Output = anyhow::Result<quinn::Connection>>,
    {
        let Some(address) = &self.lighthouse.tcp else {
            anyhow::bail!("no TCP address");
        };
        let timeout = crate::lighthouse_links::CONNECT_TIMEOUT;
        let setup = async {
            let (tcp, address) = match &self.lighthouse.proxy {
                // The lighthouse's own address, where it resolves at once, for its reflector;
                // a network that lets only its proxy out may have no outside DNS.
                Some(proxy) => {
                    let tcp = proxy.connect(address).await?;
                    let lookup = tokio::time::timeout(PROXIED_LOOKUP, address.resolve()).await;
                    (tcp, lookup.ok().and_then(Result::ok))
                }
                None => {
                    let resolved = address.resolve().await?;
                    (TcpStream::connect(resolved).await?, Some(resolved))
                }
            };
            tcp.set_nodelay(true)?;
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(
                self.lighthouse.name.clone(),
            )?;
            let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await?;
            tls.write_all(stream::upgrade_request(&self.lighthouse.name).as_bytes())
                .await?;
            tls.flush().await?;
            let head = stream::read_head(&mut tls).await?;
            stream::check_response(&head)?;
            anyhow::Ok((tls, address))
        };
        let (mut tls, address) = tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| anyhow::anyhow!("no TCP link within {timeout:?}"))??;
        let register = ToLighthouse::Register {
            local: self.local.to_vec(),
        };
        for message in std::iter::once(&register).chain(&first) {
            tls.write_all(&stream::control_frame(message)?).await?;
        }
        tls.flush().await?;
        match &self.lighthouse.proxy {
            Some(proxy) => {
                tracing::info!(lighthouse = %self.lighthouse.name, %proxy, "connected to lighthouse over TCP, through the proxy")
            }
            None => {
                tracing::info!(lighthouse = %self.lighthouse.name, address = ?address, "connected to lighthouse over TCP")
            }
        }

        let (relay_tx, relay_rx) = mpsc::channel::<Bytes>(RELAY_QUEUE);
        let (control_tx, mut control_rx) = mpsc::channel::<ToLighthouse>(CONTROL_QUEUE);
        let up = Up {
            handle: LinkHandle::Tcp(relay_tx),
            remote: address,
        };
        self.events
            .send(LighthouseEvent::Up(self.id, up))
            .await
            .map_err(|_| anyhow::anyhow!("meshd is stopping"))?;
        let (mut read, write) = tokio::io::split(tls);
        let writer = stream::write_frames(
            BufWriter::new(write),
            &mut control_rx,
            relay_rx,
            rma_daemon::mesh_tls::KEEPALIVE,
            rma_daemon::mesh_tls::IDLE_TIMEOUT,
        );
        let reader = async {
            let mut buf = Vec::new();
            loop {
                let frame = tokio::time::timeout(
                    rma_daemon::mesh_tls::IDLE_TIMEOUT,
                    stream::read_frame(&mut read, &mut buf),
                )
                .await;
                let event = match frame {
                    Err(_) => anyhow::bail!("nothing heard within the idle timeout"),
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Ok(Some(Frame::Keepalive))) => continue,
                    Ok(Ok(Some(Frame::Control))) => LighthouseEvent::Message(
                        self.id,
                        lighthouse::decode::<FromLighthouse>(&buf)?,
                    ),
                    Ok(Ok(Some(Frame::Relay))) => {
                        let Some((from, datagram)) = lighthouse::split_relay(&buf) else {
                            continue;
                        };
                        let datagram = Bytes::copy_from_slice(datagram);
                        // Like a full socket buffer: dropped rather than waited for.
                        let _ = self
                            .events
                            .try_send(LighthouseEvent::Relayed(self.id, from, datagram));
                        continue;
                    }
                };
                if self.events.send(event).await.is_err() {
                    return Ok(());
                }
            }
        };
        // Commands from the event loop: messages go to the writer; a node on TCP does not park.
        let control = async {
            while let Some(command) = commands.recv().await {
                if let Command::Send(message) = command
                    && control_tx.send(message).await.is_err()
                {
                    return;
                }
            }
        };
        let retry = async {
            loop {
                tokio::time::sleep(QUIC_RETRY).await;
                match quic().await {
                    Ok(connection) => return connection,
                    Err(e) => {
                        tracing::debug!(lighthouse = %self.lighthouse.name, "QUIC still does not come up: {e:#}");
                    }
                }
            }
        };
        // QUIC first: the lighthouse closes this link as soon as the new connection registers,
        // and that end must not win over the connection that replaced it.
        let ended = tokio::select! {
            biased;
            connection = retry => Ok(Some(connection)),
            reason = writer => Err(anyhow::anyhow!("TCP link: {reason}")),
            result = reader => result.map(|()| None),
            () = control => Ok(None),
        };
        match ended? {
            Some(connection) => {
                tracing::info!(lighthouse = %self.lighthouse.name, "QUIC comes up again; leaving TCP");
                let mut unsent = Vec::new();
                while let Ok(message) = control_rx.try_recv() {
                    unsent.push(message);
                }
                Ok(TcpEnded::Quic(connection, unsent))
            }
            None => Ok(TcpEnded::Closed),
        }
    }
}
