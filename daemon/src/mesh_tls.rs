//! Mutual TLS for the QUIC connections between nodes and lighthouses.
//!
//! Both sides present a node certificate signed by the mesh CA, or by an issuing CA the root
//! signed (then with that CA's certificate as the chain's second), and check the other's with
//! [`rma_ca::verify`]: the chain to the root, the validity windows, the revocation lists and the
//! certificate's own fields. A lighthouse is a node certificate too; the node connects to it
//! by its expected name, and the name in the certificate must match. The handshake signature
//! is checked by rustls with the ring provider (Ed25519). TLS 1.3 only.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rma_ca::{NodeCert, NodeKeys, VerifyError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use time::OffsetDateTime;

use rma_proto::lighthouse::ALPN;

/// How often an idle connection sends a keepalive, and how long silence lasts before the
/// connection is declared dead. The keepalive also holds the node's NAT mapping open.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest UDP payload QUIC's path MTU discovery tries: a 1500-byte IPv4 path.
pub const QUIC_MTU_UPPER_BOUND: u16 = 1472;
/// What one peer may make the other buffer, bounded to what the protocol needs: relay
/// fallback streams in flight (one relayed packet each, at most 64 KiB), the flow-control
/// windows of a stream and of the connection, and the queues of QUIC datagrams (relayed
/// WireGuard packets, read at once on arrival). quinn's defaults (256 streams of 1.25 MB, 4 MiB
/// datagram buffers) let one node make the lighthouse hold far more.
const MAX_UNI_STREAMS: u32 = 16;
const STREAM_WINDOW: u32 = 128 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const DATAGRAM_BUFFER: usize = 1024 * 1024;

/// The trust store the TLS verifiers check against; the daemon offers it newer revocation
/// lists.
pub use crate::trust::SharedTrust as Trust;

/// Why a peer's certificate was refused: by the trust store, or (the node's check of a
/// lighthouse) for its name.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Trust(#[from] rma_ca::Refusal),
    #[error("expected the lighthouse {expected}, the certificate names {actual}")]
    WrongName { expected: String, actual: String },
}

impl From<Refusal> for rustls::Error {
    fn from(refusal: Refusal) -> Self {
        use rma_ca::Refusal::Untrusted;
        let error = match &refusal {
            Refusal::Trust(Untrusted(VerifyError::Expired { .. })) => CertificateError::Expired,
            Refusal::Trust(Untrusted(VerifyError::NotYetValid { .. })) => {
                CertificateError::NotValidYet
            }
            Refusal::Trust(Untrusted(VerifyError::Revoked { .. })) => CertificateError::Revoked,
            Refusal::Trust(Untrusted(VerifyError::OtherCa { .. })) => {
                CertificateError::UnknownIssuer
            }
            Refusal::Trust(Untrusted(VerifyError::BadSignature { .. })) => {
                CertificateError::BadSignature
            }
            Refusal::WrongName { .. } => CertificateError::NotValidForName,
            _ => CertificateError::Other(rustls::OtherError(Arc::new(refusal))),
        };
        rustls::Error::InvalidCertificate(error)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unix_to_datetime(now: UnixTime) -> OffsetDateTime {
    i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Checks the other side's certificate on either end of a connection.
#[derive(Debug)]
struct PeerVerifier {
    trust: Arc<Trust>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(trust: Arc<Trust>) -> Self {
        Self {
            trust,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    /// The presented chain's node certificate, trusted at `now`. A node presents at most its
    /// issuing CA after its own; a longer chain is refused before any signature is checked.
    fn accept(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<NodeCert, rustls::Error> {
        let chain = match intermediates {
            [] => end_entity.to_vec(),
            [issuing] => [end_entity.as_ref(), issuing.as_ref()].concat(),
            _ => {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(ChainTooLong(intermediates.len()))),
                )));
            }
        };
        Ok(self
            .trust
            .accept(&chain, unix_to_datetime(now))
            .map_err(Refusal::from)?)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.accept(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = self.accept(end_entity, intermediates, now)?;
        let expected = server_name.to_str();
        if cert.name().as_str() != expected {
            return Err(Refusal::WrongName {
                expected: expected.into_owned(),
                actual: cert.name().to_string(),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC crypto setup: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

fn identity(
    cert: &NodeCert,
    keys: &NodeKeys,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut chain = vec![CertificateDer::from(cert.der().to_vec())];
    if let Some(issuing) = cert.issuing_ca() {
        chain.push(CertificateDer::from(issuing.der().to_vec()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(keys.identity_pkcs8_der().to_vec()));
    (chain, key)
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    // The mesh runs over IPv4: a 1500-byte path carries 1472-byte UDP payloads, and with them
    // QUIC datagrams of 1434 bytes, room for a relayed full-size packet (see meshd's MTU).
    mtu.upper_bound(QUIC_MTU_UPPER_BOUND);
    transport
        .keep_alive_interval(Some(KEEPALIVE))
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .max_concurrent_bidi_streams(1u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .send_window(u64::from(CONNECTION_WINDOW))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER)
        .mtu_discovery_config(Some(mtu));
    Arc::new(transport)
}

/// The lighthouse's side: present `cert`, require and check a node certificate.
pub fn server_config(
    cert: &NodeCert,
    keys: &NodeKeys,
    trust: Arc<Trust>,
) -> Result<quinn::ServerConfig, TlsSetupError> {
    let tls = server_tls(cert, keys, trust, ALPN)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(transport());
    Ok(config)
}

/// The lighthouse's side of the link over TCP ([`rma_proto::stream`]): the same checks as on
/// QUIC, with the ALPN an HTTPS server offers.
pub fn tcp_server_config(
    cert: &NodeCert,
    keys: &NodeKeys,
    trust: Arc<Trust>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    Ok(Arc::new(server_tls(
        cert,
        keys,
        trust,
        rma_proto::stream::ALPN,
    )?))
}

fn server_tls(
    cert: &NodeCert,
    keys: &NodeKeys,
    trust: Arc<Trust>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let (chain, key) = identity(cert, keys);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::new(trust)))
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    // No resumption: a node reconnects rarely and its full handshake is what proves its key
    // again. Without tickets, the lighthouse neither computes nor sends them to every node,
    // nor keeps a cache of sessions.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(tls)
}

/// What a QUIC socket asks for as its receive buffer. A burst of handshakes (nodes that start
/// together, or all of them coming back after a lighthouse restart) overflows the kernel's
/// default 208 KiB, and each lost Initial costs its node a retransmission timeout of a second
/// or more. The kernel caps the request at `net.core.rmem_max`. The send buffer keeps the
/// kernel's default: a larger one lets the lighthouse push relayed bursts faster than a
/// node's socket takes them (measured: relayed TCP 14% slower with 4 MiB).
pub const QUIC_RECEIVE_BUFFER: usize = 4 << 20;

/// The key a parked registration's datagrams are signed with ([`rma_proto::parked`]), from
/// the TLS session of the connection it parked on and the reflect token issued on it: the
/// node and the lighthouse derive the same.
pub fn park_key(
    connection: &quinn::Connection,
    token: &[u8; rma_proto::wire::TOKEN_LEN],
) -> Option<[u8; rma_proto::parked::KEY_LEN]> {
    let mut key = [0u8; rma_proto::parked::KEY_LEN];
    connection
        .export_keying_material(&mut key, rma_proto::parked::EXPORTER_LABEL, token)
        .ok()?;
    Some(key)
}

/// A UDP socket bound to `addr` for a QUIC endpoint, with [`QUIC_RECEIVE_BUFFER`] asked for.
pub fn quic_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Best effort: a smaller buffer than asked still works, only with less room for bursts.
    let _ = state.set_recv_buffer_size((&socket).into(), QUIC_RECEIVE_BUFFER);
    Ok(socket)
}

/// A node's side: present `cert`, check the lighthouse's certificate and name.
pub fn client_config(
    cert: &NodeCert,
    keys: &NodeKeys,
    trust: Arc<Trust>,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    let tls = client_tls(cert, keys, trust, ALPN)?;
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport());
    Ok(config)
}

/// A node's side of the link over TCP ([`rma_proto::stream`]).
pub fn tcp_client_config(
    cert: &NodeCert,
    keys: &NodeKeys,
    trust: Arc<Trust>,
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    Ok(Arc::new(client_tls(
        cert,
        keys,
        trust,
        rma_proto::stream::ALPN,
    )?))
}

fn client_tls(
    cert: &NodeCert,
    keys: &NodeKeys,
    trust: Arc<Trust>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let (chain, key) = identity(cert, keys);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(trust)))
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    Ok(tls)
}

/// The certificate the other side presented, once the handshake has completed: its DER, then
/// its issuing CA's if it presented one (as [`NodeCert::from_der`] reads it).
pub fn peer_certificate(connection: &quinn::Connection) -> Option<Vec<u8>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    Some(chain_der(&chain))
}

/// As [`peer_certificate`], for a TLS connection over TCP.
pub fn tls_peer_certificate<D>(connection: &rustls::ConnectionCommon<D>) -> Option<Vec<u8>> {
    connection.peer_certificates().map(chain_der)
}

fn chain_der(chain: &[CertificateDer<'_>]) -> Vec<u8> {
    chain.iter().take(2).flat_map(|c| c.to_vec()).collect()
}

/// As [`park_key`], for a TLS connection over TCP.
pub fn tls_park_key<D>(
    connection: &rustls::ConnectionCommon<D>,
    token: &[u8; rma_proto::wire::TOKEN_LEN],
) -> Option<[u8; rma_proto::parked::KEY_LEN]> {
    connection
        .export_keying_material(
            [0u8; rma_proto::parked::KEY_LEN],
            rma_proto::parked::EXPORTER_LABEL,
            Some(token),
        )
        .ok()
}

/// A peer presented more certificates than a node and its issuing CA.
#[derive(Debug, thiserror::Error)]
#[error("presented {0} CA certificates; a node presents at most its issuing CA's")]
struct ChainTooLong(usize);
