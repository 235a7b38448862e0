//! An HTTP proxy that carries the lighthouse's TCP link ([`crate::lighthouse_tcp`]) with
//! `CONNECT`, for networks whose only way out is a proxy: `[[lighthouse]] proxy =
//! "http://[user:password@]host:port"`. The proxy sees a CONNECT to the lighthouse's TCP
//! address and then TLS; it cannot read the link or speak for the node.

use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::lighthouse_address::LighthouseAddress;

#[derive(Clone, PartialEq, Eq)]
pub struct HttpProxy {
    address: LighthouseAddress,
    /// `Basic` credentials, as the `Proxy-Authorization` header carries them.
    authorization: Option<String>,
}

/// Without the credentials: a config dump or a log line never shows them.
impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy")
            .field("address", &self.address)
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .finish()
    }
}

impl std::fmt::Display for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.address)
    }
}

impl HttpProxy {
    /// Parses `http://[user:password@]host:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "proxy {:?}: {why} (expected http://host:port)",
                redact(text)
            )
        };
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| bad("not an http:// URL"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, rest),
        };
        if host_port.contains('/') || host_port.rsplit_once(':').is_none() {
            return Err(bad("a host and a port, and no path"));
        }
        let address = LighthouseAddress::parse_with_port(host_port, 0).map_err(|e| bad(&e))?;
        let authorization = match credentials {
            Some(credentials) if credentials.contains(':') => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )),
            Some(_) => return Err(bad("credentials must be user:password")),
            None => None,
        };
        Ok(Self {
            address,
            authorization,
        })
    }

    /// A TCP connection to `target` (`host:port`) through the proxy. The proxy resolves a
    /// name: a network that lets only its proxy out often has no outside DNS either.
    pub async fn connect(&self, target: &LighthouseAddress) -> anyhow::Result<TcpStream> {
        let proxy = self.address.resolve().await?;
        let mut stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| anyhow::anyhow!("proxy {self}: {e}"))?;
        stream.set_nodelay(true)?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let head = rma_proto::stream::read_head(&mut stream)
            .await
            .map_err(|e| anyhow::anyhow!("proxy {self}: {e}"))?;
        let status = String::from_utf8_lossy(&head);
        let status = status.lines().next().unwrap_or_default();
        let code = status.split(' ').nth(1).unwrap_or_default();
        anyhow::ensure!(
            status.starts_with("HTTP/1.") && code.len() == 3 && code.starts_with('2'),
            "proxy {self} refused CONNECT {target}: {status}"
        );
        Ok(stream)
    }
}

/// The URL with any credentials blanked, for error messages.
fn redact(text: &str) -> String {
    let Some((before, host)) = text.rsplit_once('@') else {
        return text.to_owned();
    };
    match before.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…@{host}"),
        None => format!("…@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_an_http_url_with_a_port_and_maybe_credentials() {
        let plain = HttpProxy::parse("http://proxy.corp.example:3128").unwrap();
        assert_eq!(plain.to_string(), "http://proxy.corp.example:3128");
        assert_eq!(plain.authorization, None);
        let ip = HttpProxy::parse("http://10.1.2.3:8080/").unwrap();
        assert_eq!(
            ip.address,
            LighthouseAddress::Ip("10.1.2.3:8080".parse().unwrap())
        );
        let with = HttpProxy::parse("http://ann:s3cret@10.1.2.3:8080").unwrap();
        assert_eq!(
            with.authorization.as_deref(),
            Some("Basic YW5uOnMzY3JldA==")
        );
        assert_eq!(with.to_string(), "http://10.1.2.3:8080");
        assert!(!format!("{with:?}").contains("YW5u"), "{with:?}");
        for wrong in [
            "https://10.1.2.3:8080",
            "10.1.2.3:8080",
            "http://10.1.2.3",
            "http://10.1.2.3:8080/path",
            "http://ann@10.1.2.3:8080",
            "http://10.1.2.3:port",
        ] {
            let e = HttpProxy::parse(wrong).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = HttpProxy::parse("https://ann:s3cret@10.1.2.3:8080").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
