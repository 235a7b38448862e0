//! The enrollment service's address, and one POST to it: `meshd join` and meshd's renewals.
//!
//! `https://` is what a public service behind cloudflared is: TLS with the system's roots
//! (`/etc/ssl/certs`, or the file `SSL_CERT_FILE` names), checked as curl would check them.
//! `http://` suits a service on the operator's own network. Either way the answer itself is
//! checked against the root CA the token names ([`rma_ca::join`]); TLS keeps the token secret
//! on the way.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use rma_daemon::http_client::{self, Reply};
use rma_daemon::http1::{self, Conn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// An enrollment service URL: `http[s]://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix, without a trailing slash ("" for none).
    pub prefix: String,
}

impl EnrollUrl {
    fn default_port(&self) -> u16 {
        if self.tls { 443 } else { 80 }
    }
}

impl FromStr for EnrollUrl {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            anyhow::bail!("{text}: the enrollment URL must start with https:// or http://");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse()
                        .with_context(|| format!("{text}: port {port:?}"))?,
                ),
            ),
            None => (authority, None),
        };
        anyhow::ensure!(!host.is_empty(), "{text}: no host");
        anyhow::ensure!(
            !path.contains(['?', '#', ' ']),
            "{text}: the URL may have a path, but no query or fragment"
        );
        let mut url = Self {
            tls,
            host: host.to_owned(),
            port: 0,
            prefix: path.trim_end_matches('/').to_owned(),
        };
        url.port = port.unwrap_or_else(|| url.default_port());
        Ok(url)
    }
}

impl fmt::Display for EnrollUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())?;
        f.write_str(&self.prefix)
    }
}

impl EnrollUrl {
    /// `host`, or `host:port` when the port is not the scheme's: the Host header.
    fn authority(&self) -> String {
        if self.port == self.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// POSTs `body` to `url`'s `path`, with a deadline for the whole exchange.
pub async fn post(
    url: &EnrollUrl,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    request(url, "POST", path, headers, body, timeout).await
}

/// GETs `url`'s `path`, with a deadline for the whole exchange.
pub async fn get(url: &EnrollUrl, path: &str, timeout: Duration) -> anyhow::Result<Reply> {
    request(url, "GET", path, &[], Bytes::new(), timeout).await
}

async fn request(
    url: &EnrollUrl,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let target = format!("{}{path}", url.prefix);
    let host = url.authority();
    let exchange = async {
        let addr = resolve(url).await?;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        if url.tls {
            let tls = tls_connect(tcp, &url.host).await?;
            http_client::exchange(Conn::new(tls), &host, method, &target, headers, body).await
        } else {
            http_client::exchange(Conn::new(tcp), &host, method, &target, headers, body).await
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))
        .and_then(|r| r)
        .with_context(|| format!("cannot reach the enrollment service at {url}"))
}

async fn resolve(url: &EnrollUrl) -> anyhow::Result<SocketAddr> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, url.port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("{host} does not resolve"))
}

/// A TLS 1.2 or 1.3 client handshake with `host`, checked against the system's roots.
async fn tls_connect(tcp: TcpStream, host: &str) -> anyhow::Result<Tls> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    anyhow::ensure!(
        added > 0,
        "no trusted root certificates found (install ca-certificates, or set SSL_CERT_FILE)"
    );
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host}: not a TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    Ok(Tls(stream))
}

/// TLS over TCP, as the HTTP/1.1 client runs on it.
#[derive(Debug)]
struct Tls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl http1::Stream for Tls {
    fn has_news(&self) -> bool {
        http1::Stream::has_news(self.0.get_ref().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url: EnrollUrl = "http://10.0.0.1:8090/enroll/".parse().unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.prefix.as_str()),
            (false, "10.0.0.1", 8090, "/enroll")
        );
        assert_eq!(url.to_string(), "http://10.0.0.1:8090/enroll");
        let url: EnrollUrl = "http://enroll.example".parse().unwrap();
        assert_eq!((url.port, url.prefix.as_str()), (80, ""));
        let url: EnrollUrl = "https://enroll.example/".parse().unwrap();
        assert_eq!((url.tls, url.port), (true, 443));
        assert_eq!(url.to_string(), "https://enroll.example");
        assert_eq!(url.authority(), "enroll.example");
        for bad in [
            "ftp://x",
            "http://",
            "http://x:port",
            "http://x/?a=1",
            "10.0.0.1:80",
        ] {
            assert!(bad.parse::<EnrollUrl>().is_err(), "{bad}");
        }
    }
}
