//! A bare lighthouse client for tests: connects with a given certificate and registers, the way
//! meshd does, without a data plane. The probe uses it to show that bad certificates are
//! refused; the load test uses it to register a thousand nodes from one process, and to park
//! them.

use std::net::SocketAddr;
use std::time::Duration;

use rma_ca::{CaCert, NodeCert, NodeKeys};
use rma_daemon::mesh_tls::Trust;
use rma_proto::lighthouse::{self, FromLighthouse, ToLighthouse};

/// A registered connection and what the lighthouse said first.
#[derive(Debug)]
pub struct Registered {
    pub connection: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub welcome: FromLighthouse,
}

pub fn client_config(
    cert: &NodeCert,
    keys: &NodeKeys,
    ca: &CaCert,
) -> anyhow::Result<quinn::ClientConfig> {
    Ok(rma_daemon::mesh_tls::client_config(
        cert,
        keys,
        Trust::new(ca.clone(), Vec::new()),
    )?)
}

/// Connects to the lighthouse `name` at `address` and registers `local`; returns once the
/// lighthouse has answered with its welcome.
pub async fn register(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    address: SocketAddr,
    name: &str,
    local: Vec<SocketAddr>,
) -> anyhow::Result<Registered> {
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect_with(config, address, name)?,
    )
    .await??;
    let (mut send, mut recv) = connection.open_bi().await?;
    lighthouse::write(&mut send, &ToLighthouse::Register { local }).await?;
    let mut buf = Vec::new();
    let welcome = tokio::time::timeout(
        Duration::from_secs(10),
        lighthouse::read::<FromLighthouse>(&mut recv, &mut buf),
    )
    .await??
    .ok_or_else(|| anyhow::anyhow!("the lighthouse closed the control stream"))?;
    Ok(Registered {
        connection,
        send,
        recv,
        welcome,
    })
}

/// Parks a registration as meshd does: asks over the control stream, waits for the answer,
/// derives the park key and closes the connection. Returns the key and the lists' digest.
pub async fn park(
    mut registered: Registered,
    token: &[u8; rma_proto::wire::TOKEN_LEN],
) -> anyhow::Result<(rma_proto::parked::Key, u64)> {
    lighthouse::write(&mut registered.send, &ToLighthouse::Park).await?;
    let mut buf = Vec::new();
    let lists = loop {
        let message = tokio::time::timeout(
            Duration::from_secs(10),
            lighthouse::read::<FromLighthouse>(&mut registered.recv, &mut buf),
        )
        .await??
        .ok_or_else(|| anyhow::anyhow!("the lighthouse closed the control stream"))?;
        if let FromLighthouse::Parked { lists } = message {
            break lists;
        }
    };
    let key = rma_daemon::mesh_tls::park_key(&registered.connection, token)
        .ok_or_else(|| anyhow::anyhow!("no keying material"))?;
    registered.connection.close(0u32.into(), b"parked");
    Ok((rma_proto::parked::Key::new(&key), lists))
}

/// A client endpoint on an ephemeral port of `ip`.
pub fn endpoint(ip: std::net::IpAddr) -> anyhow::Result<quinn::Endpoint> {
    // One socket carries every simulated node's connection: it gets the buffers a
    // lighthouse's does, or a burst of server flights overflows it.
    let socket = rma_daemon::mesh_tls::quic_socket(SocketAddr::new(ip, 0))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )?)
}
