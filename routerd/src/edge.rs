//! What every call passes through at the edge: which listener it came in on, who the caller
//! is, its `X-Request-Id` (passed on, made up if missing, logged) and CORS.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use axum::response::Response;
use ipnet::IpNet;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::RateLimit;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

/// The listener a call came in on. Only the public one sits behind cloudflared, so only
/// there is `CF-Connecting-IP` the caller's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Mesh,
}

/// The other end of a connection, with its address written out once for the calls on it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub addr: SocketAddr,
    pub written: HeaderValue,
    /// Whether it is a trusted proxy (cloudflared), whose `CF-Connecting-IP` names the caller.
    pub trusted_proxy: bool,
}

impl Remote {
    pub fn new(addr: SocketAddr, trusted_proxies: &[IpNet]) -> Self {
        let written = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| unreachable!("an IP address is a valid header value"));
        let ip = addr.ip().to_canonical();
        Self {
            addr,
            written,
            trusted_proxy: trusted_proxies.iter().any(|net| net.contains(&ip)),
        }
    }
}

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub ip: IpAddr,
    /// `ip` as `X-Forwarded-For` carries it.
    pub written: HeaderValue,
    /// The key its rate limit is kept under (`None` without limits): its API key if routerd
    /// knows it, else its address.
    pub key: Option<String>,
    /// Whether `CF-Connecting-IP` was believed (and so may be passed on).
    pub forwarded: bool,
}

/// The caller of a request that came from `peer` on `listener`: `CF-Connecting-IP` when the
/// peer is a trusted proxy on the public listener and the header holds an address, else the
/// peer.
pub fn caller(
    headers: &HeaderMap,
    peer: &Remote,
    listener: Listener,
    limit: Option<&RateLimit>,
) -> Caller {
    let forwarded = (listener == Listener::Public && peer.trusted_proxy)
        .then(|| {
            let value = headers.get(&CF_CONNECTING_IP)?;
            let text = value.to_str().ok()?.trim();
            let ip: IpAddr = text.parse().ok()?;
            // Passed on as sent when it is exactly the address.
            let written = if text.len() == value.len() {
                value.clone()
            } else {
                HeaderValue::from_str(text).ok()?
            };
            Some((ip, written))
        })
        .flatten();
    let believed = forwarded.is_some();
    let (ip, written) = forwarded.unwrap_or_else(|| (peer.addr.ip(), peer.written.clone()));
    // A key routerd does not know is no identity: a caller making up a new one per call would
    // get a new bucket per call.
    let key = limit.map(|limit| {
        headers
            .get(limit.key_header.as_str())
            .map(HeaderValue::as_bytes)
            .filter(|k| !k.is_empty() && k.len() <= 256 && limit.knows(k))
            .map_or_else(
                || format!("ip:{ip}"),
                |k| {
                    let digest = crate::secrets::api_key_digest(k);
                    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                    format!("key:{short}")
                },
            )
    });
    Caller {
        ip,
        written,
        key,
        forwarded: believed,
    }
}

/// A request ID worth passing on: short and printable.
fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((random >> (4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A call's `X-Request-Id` (the caller's if usable, else a new one), and what its access-log
/// line needs (target `routerd::access`). Taken when the request arrives ([`Stamp::take`]):
/// the ID then goes to the handler (and so to the worker) with the request; it goes back to
/// the caller, and the call is logged, when the response is ready ([`Stamp::finish`]). No
/// span: a span per call costs more than the rest of the call's bookkeeping, so the few
/// events a call may log name the request ID themselves.
#[derive(Debug)]
pub struct Stamp {
    id: HeaderValue,
    /// Only when the access log is on.
    access: Option<Box<Access>>,
}

#[derive(Debug)]
struct Access {
    method: Method,
    path: String,
    started: Instant,
}

impl Stamp {
    pub fn take<B>(request: &mut Request<B>) -> Self {
        let id = match request.headers().get(&REQUEST_ID) {
            Some(v) if usable(v) => v.clone(),
            _ => new_request_id(),
        };
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let access =
            tracing::enabled!(target: "routerd::access", tracing::Level::INFO).then(|| {
                Box::new(Access {
                    method: request.method().clone(),
                    path: request.uri().path().to_owned(),
                    started: Instant::now(),
                })
            });
        Self { id, access }
    }

    pub fn finish(self, mut response: Response) -> Response {
        if let Some(a) = self.access {
            tracing::info!(target: "routerd::access", request_id = self.id.to_str().unwrap_or_default(), method = %a.method, path = %a.path, status = response.status().as_u16(), ms = a.started.elapsed().as_secs_f64() * 1000.0, "call");
        }
        response.headers_mut().insert(REQUEST_ID, self.id);
        response
    }
}

/// CORS for the configured origins only; `None` when there are none (browsers then refuse
/// cross-origin calls).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                REQUEST_ID,
            ])
            .expose_headers([REQUEST_ID])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> RateLimit {
        RateLimit {
            per_second: 1.0,
            burst: 1.0,
            key_header: "X-API-Key".into(),
            api_keys: [crate::secrets::api_key_digest(b"team-a")].into(),
        }
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    }

    #[test]
    fn callers_are_keyed_by_api_key_then_cloudflare_address_on_the_public_side_only() {
        let peer = Remote::new(SocketAddr::from(([127, 0, 0, 1], 5000)), &loopback());
        assert_eq!(peer.written, "127.0.0.1");
        assert!(peer.trusted_proxy);
        let mut headers = HeaderMap::new();
        headers.insert("cf-connecting-ip", HeaderValue::from_static("203.0.113.7"));
        let c = caller(&headers, &peer, Listener::Public, Some(&limit()));
        assert_eq!(c.ip.to_string(), "203.0.113.7");
        assert_eq!(c.written, "203.0.113.7");
        assert_eq!(c.key.as_deref(), Some("ip:203.0.113.7"));
        let c = caller(&headers, &peer, Listener::Mesh, Some(&limit()));
        assert_eq!(c.ip, peer.addr.ip(), "the mesh listener ignores the header");
        assert_eq!(c.written, "127.0.0.1");
        headers.insert("x-api-key", HeaderValue::from_static("team-a"));
        let c = caller(&headers, &peer, Listener::Public, Some(&limit()));
        let known = c.key.unwrap();
        assert!(
            known.starts_with("key:") && !known.contains("team-a"),
            "{known}"
        );
        headers.insert("x-api-key", HeaderValue::from_static("made-up"));
        let c = caller(&headers, &peer, Listener::Public, Some(&limit()));
        assert_eq!(
            c.key.as_deref(),
            Some("ip:203.0.113.7"),
            "unknown keys name no one"
        );
        assert_eq!(
            caller(&headers, &peer, Listener::Public, None).key,
            None,
            "no limits, no key"
        );
        headers.insert(
            "cf-connecting-ip",
            HeaderValue::from_static(" 2001:db8::1 "),
        );
        let c = caller(&headers, &peer, Listener::Public, None);
        assert_eq!(c.written, "2001:db8::1", "trimmed");
        headers.insert("cf-connecting-ip", HeaderValue::from_static("not-an-ip"));
        let c = caller(&headers, &peer, Listener::Public, None);
        assert_eq!(
            c.ip,
            peer.addr.ip(),
            "a header that is no address is ignored"
        );
        assert!(!c.forwarded);
    }

    #[test]
    fn only_trusted_proxies_name_the_caller() {
        let mut headers = HeaderMap::new();
        headers.insert("cf-connecting-ip", HeaderValue::from_static("203.0.113.7"));
        let outsider = Remote::new(SocketAddr::from(([198, 51, 100, 4], 5000)), &loopback());
        assert!(!outsider.trusted_proxy);
        let c = caller(&headers, &outsider, Listener::Public, Some(&limit()));
        assert_eq!(c.ip.to_string(), "198.51.100.4");
        assert_eq!(c.key.as_deref(), Some("ip:198.51.100.4"));
        assert!(!c.forwarded);
        // IPv4 through an IPv6 socket is still loopback.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert!(Remote::new(mapped, &loopback()).trusted_proxy);
        let c = caller(
            &headers,
            &Remote::new(mapped, &loopback()),
            Listener::Public,
            None,
        );
        assert!(c.forwarded);
        assert!(
            !Remote::new(mapped, &[]).trusted_proxy,
            "none configured, none trusted"
        );
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_up_otherwise() {
        assert!(usable(&HeaderValue::from_static("req-42")));
        assert!(!usable(&HeaderValue::from_static("has space")));
        assert!(!usable(&HeaderValue::from_str(&"x".repeat(200)).unwrap()));
        let a = new_request_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_request_id());
    }
}
