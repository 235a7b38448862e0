//! The `request_heads` fuzz target's body.

use std::net::SocketAddr;

use arbitrary::{Arbitrary, Unstructured};
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use rma_daemon::http1::{Conn, Head, Payload};
use routerd::edge::{self, Listener, REQUEST_ID, Remote, Stamp};
use routerd::proxy;

use super::scripted::{Scripted, run};

const ADMIN_TOKEN: &str = "fuzz-admin-token";
const WORKER: &str = "10.42.0.11:8101";

/// The hop-by-hop headers (RFC 9110 section 7.6.1, and the older `Keep-Alive` and
/// `Proxy-Connection`): this target's own list, not routerd's.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Other header names routerd treats specially.
const SPECIAL: [&str; 11] = [
    "content-length",
    "expect",
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "cf-connecting-ip",
    "x-request-id",
    "authorization",
    "x-api-key",
    "content-type",
    "x-custom",
];

/// The `i`th of the names a caller may send that routerd treats specially: the hop-by-hop
/// ones, then the others.
fn known(i: u8) -> &'static str {
    let i = usize::from(i) % (HOP_BY_HOP.len() + SPECIAL.len());
    HOP_BY_HOP
        .get(i)
        .copied()
        .unwrap_or_else(|| SPECIAL[i - HOP_BY_HOP.len()])
}

#[derive(Debug, Arbitrary)]
struct Input {
    method: Vec<u8>,
    /// `/api/service/` (else `/service/`) before `path`.
    api: bool,
    path: Vec<u8>,
    headers: Vec<(Name, Value)>,
    body: Vec<u8>,
    /// The caller is cloudflared on loopback (a trusted proxy), on the public listener.
    proxied: bool,
    mesh: bool,
    /// The sizes routerd's writes go out in.
    splits: Vec<u16>,
}

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Other(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Bytes(Vec<u8>),
    /// A list of header names, as `Connection` carries.
    Names(Vec<u8>),
    /// routerd's admin token, with this scheme's spelling and spacing.
    AdminToken(u8),
    Address(u8),
}

fn name(name: &Name) -> Option<HeaderName> {
    match name {
        Name::Known(i) => Some(HeaderName::from_static(known(*i))),
        Name::Other(bytes) => HeaderName::from_bytes(bytes).ok(),
    }
}

fn value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::Bytes(bytes) => return HeaderValue::from_bytes(bytes).ok(),
        Value::Names(list) => list
            .iter()
            .map(|i| known(*i))
            .collect::<Vec<_>>()
            .join(", "),
        Value::AdminToken(style) => {
            let scheme = ["Bearer", "bearer", "BEARER", "Basic"][usize::from(style % 4)];
            let space = if style & 4 == 0 { " " } else { "  " };
            format!("{scheme}{space}{ADMIN_TOKEN}")
        }
        Value::Address(n) => format!("198.51.100.{n}"),
    };
    HeaderValue::from_str(&text).ok()
}

/// A caller's request head as hyper hands it to routerd, through everything routerd does to
/// it before a worker gets it: the request ID, the target split, the caller, the header
/// filter, and the head written on the worker's connection. The written head always parses,
/// asks for the target and carries the body's framing once; no hop-by-hop header (standard,
/// or named in `Connection`), no admin token and no untrusted forwarding header gets through,
/// and routerd's own request ID and forwarding headers are the ones the worker sees.
pub fn request_heads(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let Ok(method) = Method::from_bytes(&input.method) else {
        return;
    };
    let mut path = if input.api {
        b"/api/service/".to_vec()
    } else {
        b"/service/".to_vec()
    };
    path.extend_from_slice(&input.path);
    let Ok(uri) = Uri::from_maybe_shared(Bytes::from(path)) else {
        return;
    };
    let mut request = Request::builder().method(method.clone()).uri(uri);
    for (n, v) in input.headers.iter().take(64) {
        if let (Some(n), Some(v)) = (name(n), value(v)) {
            request = request.header(n, v);
        }
    }
    let Ok(mut request) = request.body(()) else {
        return;
    };
    let _stamp = Stamp::take(&mut request);
    let (parts, ()) = request.into_parts();
    let id = parts.headers[REQUEST_ID].clone();
    let listed: Vec<HeaderName> = parts
        .headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    let Some((_, target)) = proxy::split_target(&parts.uri) else {
        return;
    };
    let Ok(target) = Uri::from_maybe_shared(Bytes::from(target)) else {
        return;
    };
    let from: SocketAddr = if input.proxied {
        "127.0.0.1:40000".parse().expect("an address")
    } else {
        "203.0.113.9:40000".parse().expect("an address")
    };
    let loopback = ["127.0.0.0/8".parse().expect("a network")];
    let peer = Remote::new(from, &loopback);
    let listener = if input.mesh {
        Listener::Mesh
    } else {
        Listener::Public
    };
    let caller = edge::caller(&parts.headers, &peer, listener, None);
    let headers = proxy::upstream_headers(parts.headers, &caller, ADMIN_TOKEN);

    let host = HeaderValue::from_static(WORKER);
    let head = Head {
        method: &method,
        target: &target,
        host: &host,
        headers: &headers,
    };
    let mut splits = input.splits;
    splits.truncate(16);
    let stream = Scripted::new(Vec::new(), splits, true);
    let written = stream.written.clone();
    let body = Bytes::from(input.body);
    let mut payload: Payload = Payload::Kept(body.clone());
    // The worker closes without answering; what matters is what was written.
    let _ = run(Conn::new(stream).send(head, &mut payload)).expect("nothing to wait for");
    let written = written.lock().expect("one thread").clone();

    let mut fields = [httparse::EMPTY_HEADER; 96];
    let mut parsed = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(length)) = parsed.parse(&written) else {
        panic!(
            "the head written does not parse: {:?}",
            String::from_utf8_lossy(&written)
        );
    };
    assert_eq!(&written[length..], &body[..], "the body follows its head");
    assert_eq!(parsed.method, Some(method.as_str()));
    assert_eq!(
        parsed.path,
        Some(target.path_and_query().map_or("/", |p| p.as_str()))
    );
    assert_eq!(parsed.version, Some(1));
    let all = |wanted: &str| -> Vec<&[u8]> {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(wanted))
            .map(|h| h.value)
            .collect()
    };
    assert_eq!(all("host"), [WORKER.as_bytes()], "one Host: the worker");
    assert_eq!(all("x-request-id"), [id.as_bytes()], "routerd's request ID");
    let lengths = all("content-length");
    let declares = !body.is_empty() || matches!(method, Method::POST | Method::PUT | Method::PATCH);
    if declares {
        assert_eq!(lengths, [body.len().to_string().as_bytes()]);
    } else {
        assert!(lengths.is_empty(), "{lengths:?}");
    }
    assert!(
        all("expect").is_empty(),
        "Expect is answered by routerd, not the worker"
    );
    for hop in HOP_BY_HOP {
        assert!(all(hop).is_empty(), "{hop} got through");
    }
    // What `Connection` named stays behind, but for what routerd writes itself.
    let own = [
        "host",
        "content-length",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-host",
    ];
    for name in &listed {
        if !own.contains(&name.as_str()) {
            assert!(
                all(name.as_str()).is_empty(),
                "{name}, named in Connection, got through"
            );
        }
    }
    for value in all("authorization") {
        // As routerd reads it: a `Bearer` scheme in any case, the token with ASCII space
        // trimmed.
        let carried = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .is_some_and(|_| value[7..].trim_ascii() == ADMIN_TOKEN.as_bytes());
        assert!(!carried, "the admin token got through");
    }
    let forwarded = all("x-forwarded-for");
    assert_eq!(forwarded.len(), 1, "one X-Forwarded-For");
    let last = forwarded[0]
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default();
    assert_eq!(
        last.trim_ascii(),
        caller.ip.to_string().as_bytes(),
        "routerd's hop last"
    );
    if !caller.forwarded {
        assert!(
            all("cf-connecting-ip").is_empty(),
            "an unbelieved CF-Connecting-IP"
        );
        assert_eq!(
            forwarded[0],
            caller.ip.to_string().as_bytes(),
            "only routerd's hop"
        );
    }
}
