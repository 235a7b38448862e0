//! A plain HTTP/1.1 client: one call on a new connection, the status, headers and body back,
//! with a deadline, optionally from a chosen source address. meshd registers its worker with
//! it (from its mesh IP); the tests call routerd with it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request to `addr` on a new connection (from `source` if given).
pub async fn call(
    addr: SocketAddr,
    source: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let work = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{method} {addr}{path}: no answer within {timeout:?}"))?
}

/// A GET with no body.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    call(
        addr,
        None,
        "GET",
        path,
        headers,
        Bytes::new(),
        Duration::from_secs(10),
    )
    .await
}
