//! Mutual TLS between a node and a lighthouse, in-process on loopback: both sides check the
//! other's certificate against the CA and the revocation list, and the node checks the
//! lighthouse's name. A refused handshake never reaches the application.

#![allow(clippy::unwrap_used)] // test code

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rma_ca::test_ca::TestCa;
use rma_ca::{NodeCert, NodeKeys, RevocationList};
use rma_daemon::mesh_tls::{self as tls, Trust};

struct Server {
    endpoint: quinn::Endpoint,
    address: SocketAddr,
}

fn server(pki: &TestCa, crl: Option<RevocationList>) -> Server {
    let (cert, keys) = pki.node_in("lighthouse-1", Ipv4Addr::new(10, 42, 255, 1), "lighthouses");
    server_as(pki, (cert, keys), crl.into_iter().collect())
}

/// A lighthouse presenting `identity`, trusting the root `pki` with `crls`.
fn server_as(
    pki: &TestCa,
    (cert, keys): (NodeCert, NodeKeys),
    crls: Vec<RevocationList>,
) -> Server {
    let config = tls::server_config(&cert, &keys, Trust::new(pki.ca.clone(), crls)).unwrap();
    let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let address = endpoint.local_addr().unwrap();
    Server { endpoint, address }
}

/// Connects as `cert` to the lighthouse expecting `name`; the server accepts one connection
/// and reports the client certificate it saw. Returns the client's result and the server's.
async fn handshake(
    server: &Server,
    client_ca: &TestCa,
    (cert, keys): (&NodeCert, &NodeKeys),
    name: &str,
) -> (Result<(), String>, Result<Vec<u8>, String>) {
    let config =
        tls::client_config(cert, keys, Trust::new(client_ca.ca.clone(), Vec::new())).unwrap();
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    // The server echoes one byte on the first stream, then waits for the client to close.
    let accept = async {
        let incoming = server.endpoint.accept().await.unwrap();
        let connection = incoming.await.map_err(|e| e.to_string())?;
        let cert = tls::peer_certificate(&connection).ok_or("no certificate")?;
        if let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let mut byte = [0u8; 1];
            if recv.read_exact(&mut byte).await.is_ok() {
                let _ = send.write_all(&byte).await;
                let _ = send.finish();
            }
        }
        connection.closed().await;
        Ok(cert)
    };
    // The client counts as accepted only once the echo came back: a server that refuses its
    // certificate closes the connection instead.
    let connect = async {
        let connection = client
            .connect_with(config, server.address, name)
            .unwrap()
            .await
            .map_err(|e| e.to_string())?;
        let echoed = async {
            let (mut send, mut recv) = connection.open_bi().await?;
            send.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            recv.read_exact(&mut byte).await?;
            anyhow::Ok(byte)
        }
        .await;
        let verdict = match echoed {
            Ok(byte) if byte == *b"x" => Ok(()),
            Ok(byte) => Err(format!("echo {byte:?}")),
            Err(_) => Err(connection.closed().await.to_string()),
        };
        connection.close(0u32.into(), b"done");
        verdict
    };
    tokio::join!(connect, accept)
}

#[tokio::test]
async fn a_node_certificate_from_the_ca_is_accepted_both_ways() {
    let pki = TestCa::new("mesh-ca");
    let server = server(&pki, None);
    let (cert, keys) = pki.node("a", Ipv4Addr::new(10, 42, 0, 1));
    let (client, seen) = handshake(&server, &pki, (&cert, &keys), "lighthouse-1").await;
    assert_eq!(client, Ok(()));
    assert_eq!(seen.unwrap(), cert.der());
}

#[tokio::test]
async fn foreign_expired_and_revoked_nodes_are_refused_in_the_handshake() {
    let pki = TestCa::new("mesh-ca");
    let other = TestCa::new("other-ca");
    let revoked = pki.node("revoked", Ipv4Addr::new(10, 42, 0, 3));
    let server = server(&pki, Some(pki.crl_revoking(&[&revoked.0])));
    let foreign = other.node("foreign", Ipv4Addr::new(10, 42, 0, 2));
    let expired = pki.node_valid(
        "expired",
        Ipv4Addr::new(10, 42, 0, 4),
        pki.start - time::Duration::days(10),
        pki.start - time::Duration::days(1),
    );
    for ((cert, keys), reason) in [
        (&foreign, "UnknownIssuer"),
        (&expired, "Expired"),
        (&revoked, "Revoked"),
    ] {
        let (client, seen) = handshake(&server, &pki, (cert, keys), "lighthouse-1").await;
        let seen = seen.unwrap_err();
        assert!(seen.contains(reason), "{}: server saw {seen}", cert.name());
        assert!(client.is_err(), "{}: the client got through", cert.name());
    }
}

#[tokio::test]
async fn a_node_refuses_a_lighthouse_with_the_wrong_name_or_another_ca() {
    let pki = TestCa::new("mesh-ca");
    let server = server(&pki, None);
    let node = pki.node("a", Ipv4Addr::new(10, 42, 0, 1));
    let (client, _) = handshake(&server, &pki, (&node.0, &node.1), "lighthouse-2").await;
    assert!(client.unwrap_err().contains("NotValidForName"));

    let other = TestCa::new("other-ca");
    let (client, _) = handshake(&server, &other, (&node.0, &node.1), "lighthouse-1").await;
    assert!(client.unwrap_err().contains("UnknownIssuer"));
}

#[test]
fn trust_follows_the_revocation_list() {
    let pki = TestCa::new("mesh-ca");
    let (cert, _) = pki.node("a", Ipv4Addr::new(10, 42, 0, 1));
    let trust: Arc<Trust> = Trust::new(pki.ca.clone(), Vec::new());
    assert!(trust.accept(cert.der(), pki.start).is_ok());
    trust.offer(pki.crl_revoking(&[&cert]), pki.start);
    let refusal = trust.accept(cert.der(), pki.start).unwrap_err();
    assert!(refusal.to_string().starts_with("revoked at"), "{refusal}");
    assert!(trust.accept(b"not a certificate", pki.start).is_err());
}

/// Both ends present chains through an issuing CA; each checks the other's to the root alone.
#[tokio::test]
async fn chains_through_an_issuing_ca_are_accepted_both_ways_until_the_root_revokes_it() {
    let root = TestCa::new("mesh-ca");
    let issuing = root.issuing("enroll", "10.42.128.0/17");
    let lighthouse = issuing.node_in("lighthouse-1", Ipv4Addr::new(10, 42, 200, 1), "lighthouses");
    let (cert, keys) = issuing.node("a", Ipv4Addr::new(10, 42, 128, 1));
    assert!(cert.issuing_ca().is_some());
    let server = server_as(&root, lighthouse.clone(), Vec::new());
    let (client, seen) = handshake(&server, &root, (&cert, &keys), "lighthouse-1").await;
    assert_eq!(client, Ok(()));
    assert_eq!(
        seen.unwrap(),
        cert.chain_der(),
        "the lighthouse saw the whole chain"
    );

    // The root's list revokes the issuing CA: its nodes are refused in the handshake.
    let revoking = root.crl_revoking_cas(1, &[&issuing.ca]);
    let server = server_as(
        &root,
        root.node_in("lighthouse-1", Ipv4Addr::new(10, 42, 255, 1), "lighthouses"),
        vec![revoking],
    );
    let (client, seen) = handshake(&server, &root, (&cert, &keys), "lighthouse-1").await;
    let seen = seen.unwrap_err();
    assert!(seen.contains("enroll"), "server saw {seen}");
    assert!(client.is_err());
    // A node whose issuing CA's chain is cut off (only its own certificate presented) is
    // refused for naming an issuer the root is not.
    let bare = NodeCert::from_der(cert.der()).unwrap();
    let server = server_as(&root, lighthouse, Vec::new());
    let (client, seen) = handshake(&server, &root, (&bare, &keys), "lighthouse-1").await;
    assert!(seen.unwrap_err().contains("UnknownIssuer"));
    assert!(client.is_err());
}

/// A QUIC socket gets a larger receive buffer than an unconfigured one, and the same send
/// buffer: the kernel caps the request at `net.core.rmem_max` and doubles what it grants, so
/// even a host that allows no more than its default gives twice that.
#[test]
fn quic_sockets_ask_for_a_large_receive_buffer() {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let plain = std::net::UdpSocket::bind(loopback).unwrap();
    let quic = tls::quic_socket(loopback).unwrap();
    let sizes = |socket: &std::net::UdpSocket| {
        let state = quinn::udp::UdpSocketState::new(socket.into()).unwrap();
        (
            state.recv_buffer_size(socket.into()).unwrap(),
            state.send_buffer_size(socket.into()).unwrap(),
        )
    };
    let ((plain_recv, plain_send), (recv, send)) = (sizes(&plain), sizes(&quic));
    assert!(recv > plain_recv, "{recv} <= {plain_recv}");
    assert_eq!(send, plain_send);
}
