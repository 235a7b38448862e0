//! One call on a new connection, the status, headers and body back, with a deadline,
//! optionally from a chosen source address: on the same HTTP/1.1 client as routerd's calls to
//! its workers ([`crate::http1`]). meshd registers its worker with it (from its mesh IP); the
//! tests call routerd with it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};

use crate::http1::{self, Head, Payload, WorkerBody};

/// The largest response body a call reads (the tests download 20 MB through routerd); a
/// larger one fails the call.
const MAX_REPLY: usize = 64 << 20;

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
        let conn = match source {
            Some(ip) => http1::connect_from(addr, ip).await,
            None => http1::connect(addr).await,
        }
        .with_context(|| format!("connect {addr}"))?;
        exchange(conn, &addr.to_string(), method, path, headers, body).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{method} {addr}{path}: no answer within {timeout:?}"))?
}

/// Sends one request on `conn` (a TCP stream, or TLS over one) with `host` as its Host, and
/// reads the whole response. The caller sets the deadline.
pub async fn exchange<S: http1::Stream>(
    conn: http1::Conn<S>,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    let method = Method::from_bytes(method.as_bytes()).context("method")?;
    let target: Uri = path.parse().with_context(|| format!("path {path:?}"))?;
    let host = HeaderValue::from_str(host).context("host")?;
    let mut fields = HeaderMap::new();
    for (name, value) in headers {
        fields.append(
            HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("header {name}"))?,
            HeaderValue::from_str(value).with_context(|| format!("header {name}"))?,
        );
    }
    let head = Head {
        method: &method,
        target: &target,
        host: &host,
        headers: &fields,
    };
    let mut payload: Payload = Payload::Kept(body);
    let (parts, reader) = conn.send(head, &mut payload).await.map_err(|e| e.error)?;
    let body = Limited::new(WorkerBody::new(reader, drop), MAX_REPLY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the response: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
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
