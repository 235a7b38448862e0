//! The enrollment service's address, and one POST to it: `meshd join` and meshd's renewals.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use rma_daemon::http_client::{self, Reply};

/// An enrollment service URL: `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix, without a trailing slash ("" for none).
    pub prefix: String,
}

impl FromStr for EnrollUrl {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let rest = if let Some(rest) = text.strip_prefix("http://") {
            rest
        } else if text.starts_with("https://") {
            anyhow::bail!(
                "{text}: https is not supported yet; use the http:// address of rma-ca serve"
            );
        } else {
            anyhow::bail!("{text}: the enrollment URL must start with http://");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .with_context(|| format!("{text}: port {port:?}"))?,
            ),
            None => (authority, 80),
        };
        anyhow::ensure!(!host.is_empty(), "{text}: no host");
        anyhow::ensure!(
            !path.contains(['?', '#', ' ']),
            "{text}: the URL may have a path, but no query or fragment"
        );
        Ok(Self {
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

impl fmt::Display for EnrollUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
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
    let addr = resolve(url).await?;
    let target = format!("{}{path}", url.prefix);
    http_client::call(addr, None, "POST", &target, headers, body, timeout)
        .await
        .with_context(|| format!("cannot reach the enrollment service at {url}"))
}

async fn resolve(url: &EnrollUrl) -> anyhow::Result<SocketAddr> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, url.port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| {
            format!("cannot reach the enrollment service at {url}: {host} does not resolve")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url: EnrollUrl = "http://10.0.0.1:8090/enroll/".parse().unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("10.0.0.1", 8090, "/enroll")
        );
        assert_eq!(url.to_string(), "http://10.0.0.1:8090/enroll");
        let url: EnrollUrl = "http://enroll.example".parse().unwrap();
        assert_eq!((url.port, url.prefix.as_str()), (80, ""));
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
