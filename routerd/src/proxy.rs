//! Service calls: `/service/{service}/{*path}` and `/api/service/{type}/{*path}` go to one of
//! the service's workers at its mesh IP, bodies streamed both ways. A call whose connection
//! failed goes to another worker once; a call that was sent is sent again only if its method
//! is idempotent and its body was small enough to keep. Retries come out of the budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt as _, Limited};
use serde_json::json;

use crate::app::Shared;
use crate::balance::{Candidate, Pick};
use crate::catalog::ServiceSpec;
use crate::edge::{CF_CONNECTING_IP, Caller, Listener, REQUEST_ID, Remote, caller};
use crate::pace::{Payload, RequestBody, TooSlow};
use crate::plan::{FailureKind, Next, Plan};
use crate::pool::{ConnectError, Pool};
use crate::routes::Route;
use rma_daemon::http1::{self, Conn, Head, Reader, WorkerBody};

/// Headers that belong to one connection and are not passed on (RFC 9110, section 7.6.1).
/// Names are constants, not strings: a string name is parsed on every lookup.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An answer routerd makes itself: `{"error": ..., "service": ...}` with a status.
fn refuse(status: StatusCode, service: &str, reason: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "reason": reason, "service": service })),
    )
        .into_response()
}

/// The answer to a call whose body could not be read from the caller: 408 when it came too
/// slowly ([`crate::pace`]), else 400.
fn unreadable(service: &str, cause: &(dyn std::error::Error + 'static)) -> Response {
    let (status, reason) = if cause.is::<TooSlow>() {
        (StatusCode::REQUEST_TIMEOUT, "body_too_slow")
    } else {
        (StatusCode::BAD_REQUEST, "body_unreadable")
    };
    let mut response = refuse(status, service, reason, format!("request body: {cause}"));
    // Whatever is left of the body is not read: the connection cannot carry another call.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to a call whose body is larger than `spec` allows.
fn too_large(service: &str, spec: &ServiceSpec) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        service,
        "body_too_large",
        format!("{service} takes bodies up to {} bytes", spec.max_body),
    )
}

/// Splits `/service/rag/stats?x=1` into (`rag`, `/stats?x=1`).
pub fn split_target(uri: &Uri) -> Option<(&str, String)> {
    let path = uri.path();
    let rest = path
        .strip_prefix("/service/")
        .or_else(|| path.strip_prefix("/api/service/"))?;
    let (service, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = match uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_owned(),
    };
    Some((service, target))
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names finds out, where removing each
    // absent one would hash it.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // `Connection` may name any header as hop-by-hop, but not the request ID routerd itself
    // set for the call ([`crate::edge::Stamp`]).
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .filter(|name| *name != REQUEST_ID)
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The headers a worker gets: the caller's, without hop-by-hop or framing ones, without a
/// `CF-Connecting-IP` that was not believed or an `Authorization` that carries routerd's
/// admin token, with the caller's address appended to `X-Forwarded-For`. Each attempt adds
/// the worker as `Host`.
pub fn upstream_headers(mut headers: HeaderMap, caller: &Caller, admin_token: &str) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    // What a proxy says about the caller counts only from a trusted proxy: anyone else's copy
    // stays behind, and routerd's own account takes its place.
    if !caller.forwarded {
        for name in [CF_CONNECTING_IP, X_FORWARDED_FOR, X_FORWARDED_HOST] {
            if headers.contains_key(&name) {
                headers.remove(name);
            }
        }
    }
    let carries_admin_token = headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        let value = v.as_bytes();
        let token = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii());
        token.is_some_and(|t| crate::secrets::constant_time_eq(t, admin_token.as_bytes()))
    });
    if carries_admin_token {
        headers.remove(header::AUTHORIZATION);
    }
    let client = caller.written.clone();
    // The body's framing is written for the worker by the client ([`upstream`]), which sends
    // the body without waiting for a 100 Continue.
    for name in [header::CONTENT_LENGTH, header::EXPECT] {
        if headers.contains_key(&name) {
            headers.remove(name);
        }
    }
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let forwarded = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(earlier) => {
            let mut joined = Vec::with_capacity(earlier.len() + 2 + client.len());
            joined.extend_from_slice(earlier);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or(client)
        }
        None => client,
    };
    headers.insert(X_FORWARDED_FOR, forwarded);
    headers
}

/// Why an attempt failed.
enum Failure {
    /// The worker's connection failed (before or after the request went out: see
    /// [`FailureKind::sent`]), with the cause.
    Worker(FailureKind, String),
    /// The body was larger than the service allows (found while streaming it).
    TooLarge,
    /// The caller's body broke off, was malformed or came too slowly while it was streamed
    /// to the worker.
    CallerBody(Box<dyn std::error::Error + Send + Sync>),
    /// The worker answered 101: an answer routerd cannot carry, not a failing worker.
    Switched,
    TimedOut,
}

/// Whether `path` is a service call: `/service/{service}/...` or `/api/service/{type}/...`.
pub fn is_service_call(path: &str) -> bool {
    path.starts_with("/service/") || path.starts_with("/api/service/")
}

/// A service call whose request head has been read and let in: its route, and what every
/// attempt sends. Checking a call is synchronous ([`Call::admit`]); only sending it waits
/// ([`Call::send`]). The split keeps a call's future small (it is written to the heap once per
/// call, and copied whole when moved), where one async fn would hold the request twice: as
/// its argument and as its locals.
#[derive(Debug)]
pub struct Call {
    route: Arc<Route>,
    method: Method,
    target: Uri,
    /// The worker's headers but `Host` ([`upstream_headers`]).
    headers: HeaderMap,
    /// The body is read into memory before the first attempt, so that it can be sent again.
    keep: bool,
    arrived: Instant,
}

impl Call {
    /// `ANY /service/{service}/{*path}` or `ANY /api/service/{type}/{*path}` from `peer` on
    /// `listener`, checked: its service and target, its caller's rate limit and its declared
    /// body size; with its body, for [`Call::send`]. `Err` is the answer for a call that goes
    /// no further.
    #[expect(
        clippy::result_large_err,
        reason = "the call is larger than the refusal; either is moved once, to its caller"
    )]
    pub fn admit(
        app: &Shared,
        peer: &Remote,
        listener: Listener,
        request: hyper::Request<RequestBody>,
    ) -> Result<(Self, RequestBody), Response> {
        let arrived = Instant::now();
        let (parts, body) = request.into_parts();
        let Some((alias, target)) = split_target(&parts.uri) else {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "",
                "unknown_route",
                format!("no route for {}", parts.uri.path()),
            ));
        };
        let Ok(target) = Uri::from_maybe_shared(Bytes::from(target)) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                alias,
                "bad_path",
                format!("{:?} is not a path a worker can be sent", parts.uri.path()),
            ));
        };
        let caller = caller(&parts.headers, peer, listener, app.rate_limit.as_ref());
        // Only a caller with a rate limit (there are limits) takes the data path's lock here.
        if let Some(key) = caller.key.as_deref() {
            let mut t = app.traffic();
            if let Some(limiter) = t.rate_limiter.as_mut()
                && let Err(wait) = limiter.check(key, arrived)
            {
                t.stats.rate_limited += 1;
                let mut response = refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    alias,
                    "rate_limited",
                    format!("rate limit reached; retry in {} ms", wait.as_millis()),
                );
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                return Err(response);
            }
        }
        let Some(route) = app.registry().route(alias) else {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                alias,
                "unknown_service",
                format!("no service called {alias:?}"),
            ));
        };
        let (service, spec) = (route.service.as_str(), &route.spec);
        let declared = body.size_hint().exact().or_else(|| {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        if declared.is_some_and(|n| n > spec.max_body) {
            return Err(finish(app, service, arrived, too_large(service, spec)));
        }
        let keep = idempotent(&parts.method)
            && (body.is_end_stream() || declared.is_some_and(|n| n <= app.routing.retry_buffer));
        let call = Self {
            method: parts.method,
            target,
            headers: upstream_headers(parts.headers, &caller, &app.admin_token),
            keep,
            arrived,
            route,
        };
        Ok((call, body))
    }

    /// The request body as the attempts send it; `Err` is the answer when it cannot be read.
    async fn payload(&self, app: &Shared, body: RequestBody) -> Result<Payload, Response> {
        let service = self.route.service.as_str();
        let limit = usize::try_from(self.route.spec.max_body).unwrap_or(usize::MAX);
        if !self.keep {
            return Ok(Payload::Streamed(Limited::new(body, limit)));
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(Payload::Kept(collected.to_bytes())),
            Err(e) => Err(finish(app, service, self.arrived, unreadable(service, &*e))),
        }
    }

    /// Sends one attempt to `worker`: the response head, and the reader of its body.
    async fn attempt(
        &self,
        pool: &Pool,
        worker: &Candidate,
        payload: &mut Payload,
    ) -> Result<(axum::http::response::Parts, Reader), Failure> {
        let conn: Conn = pool.checkout(worker.addr).await.map_err(|e| match e {
            ConnectError::Timeout(_) => Failure::Worker(FailureKind::ConnectTimeout, e.to_string()),
            _ => Failure::Worker(FailureKind::Connect, e.to_string()),
        })?;
        let reused = conn.reused;
        let head = Head {
            method: &self.method,
            target: &self.target,
            host: &worker.host,
            headers: &self.headers,
        };
        conn.send(head, payload).await.map_err(|e| {
            if e.error.too_large() {
                return Failure::TooLarge;
            }
            let unsent = e.unsent;
            let error = match e.error {
                http1::Error::Body(cause) => return Failure::CallerBody(cause),
                http1::Error::Switched => return Failure::Switched,
                error => error,
            };
            let cause = error.to_string();
            let kind = match (unsent, reused) {
                (true, true) => FailureKind::StaleConnection,
                (true, false) => FailureKind::Connect,
                (false, _) => FailureKind::Reset,
            };
            Failure::Worker(kind, cause)
        })
    }

    /// Sends the call, with `body`, to one of its service's workers, on connections from
    /// `pool` (the serving thread's), and returns the answer: the worker's response, its body
    /// streamed through, or routerd's refusal.
    pub async fn send(&self, app: &Shared, pool: &Arc<Pool>, body: RequestBody) -> Response {
        let mut payload = match self.payload(app, body).await {
            Ok(payload) => payload,
            Err(response) => return response,
        };
        let call = self;
        let (route, arrived) = (&call.route, call.arrived);
        let (service, spec) = (route.service.as_str(), &route.spec);
        let deadline = arrived + spec.timeout;
        let mut plan = Plan::new(matches!(payload, Payload::Kept(_)));
        // The last failure's answer: status, reason and message.
        let mut last: Option<(StatusCode, &'static str, String)> = None;
        loop {
            let pick = {
                let mut t = app.traffic();
                if plan.pick() {
                    t.retry_budget.called();
                }
                let pick = t.balancer.pick(
                    service,
                    &route.workers,
                    plan.failed(),
                    Instant::now(),
                    |n| fastrand::usize(..n),
                );
                if let Pick::Worker(w) = pick {
                    t.balancer.started(service, &w.worker);
                }
                pick
            };
            let worker = match pick {
                Pick::Worker(w) => w,
                Pick::NoWorkers => {
                    let r = refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        service,
                        "no_workers",
                        format!("no worker is registered for {service}"),
                    );
                    return finish(app, service, arrived, r);
                }
                Pick::NoneHealthy { registered } => {
                    let r = match last {
                        Some((status, reason, message)) => refuse(status, service, reason, message),
                        None => refuse(
                            StatusCode::SERVICE_UNAVAILABLE,
                            service,
                            "no_healthy_workers",
                            format!("none of the {registered} workers for {service} is healthy"),
                        ),
                    };
                    return finish(app, service, arrived, r);
                }
            };
            let outcome =
                tokio::time::timeout_at(deadline.into(), call.attempt(pool, worker, &mut payload))
                    .await
                    .unwrap_or(Err(Failure::TimedOut));
            let (kind, cause) = match outcome {
                Ok((response, reader)) => {
                    let status = response.status;
                    let unavailable = status == StatusCode::BAD_GATEWAY
                        || status == StatusCode::SERVICE_UNAVAILABLE;
                    if !unavailable {
                        // One lock for the worker's success and the call's figures.
                        let now = Instant::now();
                        let mut t = app.traffic();
                        t.balancer.succeeded(service, &worker.worker, now);
                        t.stats.answered(service, status.as_u16(), now - arrived);
                        drop(t);
                        return stream_back(app, pool, route, worker, response, reader);
                    }
                    let kind = FailureKind::Unavailable;
                    note_failure(app, service, worker, &route.workers, kind.label());
                    if plan.next(&worker.worker, kind) == Next::Retry
                        && spend_retry(app, service, kind.label())
                    {
                        done(app, service, &worker.worker);
                        // Unread, its connection closes.
                        drop(reader);
                        continue;
                    }
                    let response = stream_back(app, pool, route, worker, response, reader);
                    return finish(app, service, arrived, response);
                }
                Err(Failure::Worker(kind, cause)) => (kind, cause),
                Err(failure) => {
                    done(app, service, &worker.worker);
                    let r = answer_failure(app, service, spec, worker, failure);
                    return finish(app, service, arrived, r);
                }
            };
            done(app, service, &worker.worker);
            let reason = kind.label();
            if kind.counts_against_the_worker() {
                note_failure(app, service, worker, &route.workers, reason);
            }
            let request_id = call.headers.get(REQUEST_ID);
            tracing::warn!(
                request_id = request_id.and_then(|v| v.to_str().ok()).unwrap_or_default(),
                service, worker = %worker.worker, reason, error = %cause,
                "call to worker failed"
            );
            let message = format!("{}: {cause}", worker.worker);
            let retry = match plan.next(&worker.worker, kind) {
                Next::RetryFree => true,
                Next::Retry => spend_retry(app, service, reason),
                Next::Answer => false,
            };
            if !retry {
                let r = refuse(StatusCode::BAD_GATEWAY, service, reason, message);
                return finish(app, service, arrived, r);
            }
            last = Some((StatusCode::BAD_GATEWAY, reason, message));
        }
    }
}

/// routerd's answer to a call whose attempt failed with `failure`, and that goes no further.
fn answer_failure(
    app: &Shared,
    service: &str,
    spec: &ServiceSpec,
    worker: &Candidate,
    failure: Failure,
) -> Response {
    match failure {
        Failure::Worker(kind, cause) => refuse(
            StatusCode::BAD_GATEWAY,
            service,
            kind.label(),
            format!("{}: {cause}", worker.worker),
        ),
        Failure::TooLarge => too_large(service, spec),
        Failure::CallerBody(cause) => unreadable(service, &*cause),
        Failure::Switched => refuse(
            StatusCode::BAD_GATEWAY,
            service,
            "protocol_switch",
            format!(
                "{} switched protocols, which routerd does not carry",
                worker.worker
            ),
        ),
        Failure::TimedOut => {
            app.traffic().stats.upstream_error(service, "timeout");
            refuse(
                StatusCode::GATEWAY_TIMEOUT,
                service,
                "timeout",
                format!(
                    "{} did not answer within {} ms",
                    worker.worker,
                    spec.timeout.as_millis()
                ),
            )
        }
    }
}

/// Whether the retry budget allows another attempt; spends it if so.
fn spend_retry(app: &Shared, service: &str, reason: &'static str) -> bool {
    let mut t = app.traffic();
    if t.retry_budget.try_retry() {
        t.stats.retried(service, reason);
        true
    } else {
        t.stats.retries_refused += 1;
        false
    }
}

fn note_failure(
    app: &Shared,
    service: &str,
    worker: &Candidate,
    candidates: &[Candidate],
    kind: &'static str,
) {
    let mut t = app.traffic();
    t.stats.upstream_error(service, kind);
    if let Some(length) = t
        .balancer
        .failed(service, &worker.worker, candidates, Instant::now())
    {
        tracing::warn!(service, worker = %worker.worker, seconds = length.as_secs_f64(), "worker ejected after consecutive errors");
    }
}

fn done(app: &Shared, service: &str, worker: &str) {
    app.traffic().balancer.finished(service, worker);
}

/// The worker's response, its body streamed through; the worker's call counts as in flight
/// until the body ends.
fn stream_back(
    app: &Shared,
    pool: &Arc<Pool>,
    route: &Arc<Route>,
    worker: &Candidate,
    mut parts: axum::http::response::Parts,
    reader: Reader,
) -> Response {
    strip_hop_by_hop(&mut parts.headers);
    if !reader.length_framed() {
        // Chunked or until the close: the caller's connection frames it anew.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let (app, route, pool) = (app.clone(), route.clone(), pool.clone());
    let (name, addr) = (worker.worker.clone(), worker.addr);
    let on_end = move |conn: Option<Conn>| {
        if let Some(conn) = conn {
            pool.checkin(addr, conn);
        }
        done(&app, &route.service, &name);
    };
    Response::from_parts(parts, Body::new(WorkerBody::new(reader, on_end)))
}

fn finish(app: &Shared, service: &str, arrived: Instant, response: Response) -> Response {
    let elapsed: Duration = arrived.elapsed();
    app.traffic()
        .stats
        .answered(service, response.status().as_u16(), elapsed);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_the_path_and_query() {
        let uri: Uri = "/service/rag/api/graph/build?x=1".parse().unwrap();
        assert_eq!(
            split_target(&uri),
            Some(("rag", "/api/graph/build?x=1".to_owned()))
        );
        let uri: Uri = "/api/service/ocr".parse().unwrap();
        assert_eq!(split_target(&uri), Some(("ocr", "/".to_owned())));
        let uri: Uri = "/health".parse().unwrap();
        assert_eq!(split_target(&uri), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_and_the_caller_is_appended() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("api.rmatool.org.uk"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        // From a trusted proxy, whose own X-Forwarded-For is kept and appended to.
        let proxy = Caller {
            forwarded: true,
            ..outsider()
        };
        let out = upstream_headers(headers, &proxy, "admin-token-0123");
        assert!(out.get(header::CONTENT_LENGTH).is_none(), "framed anew");
        assert!(out.get(header::EXPECT).is_none());
        assert!(out.get("x-secret").is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get(header::TRANSFER_ENCODING).is_none());
        assert!(
            out.get(header::HOST).is_none(),
            "each attempt sets its worker"
        );
        assert_eq!(out["x-forwarded-host"], "api.rmatool.org.uk");
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 198.51.100.4");
        assert_eq!(out["x-request-id"], "abc");
    }

    /// A caller at 198.51.100.4 whose `CF-Connecting-IP` was not believed.
    fn outsider() -> Caller {
        Caller {
            ip: "198.51.100.4".parse().unwrap(),
            written: HeaderValue::from_static("198.51.100.4"),
            key: None,
            forwarded: false,
        }
    }

    #[test]
    fn a_caller_cannot_strip_routerds_headers_or_pass_on_what_routerd_did_not_believe() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("upgrade, x-request-id, x-forwarded-for"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-request-id", HeaderValue::from_static("routerd-set"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        headers.insert("cf-connecting-ip", HeaderValue::from_static("203.0.113.50"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer admin-token-0123"),
        );
        let out = upstream_headers(headers.clone(), &outsider(), "admin-token-0123");
        assert!(out.get(header::UPGRADE).is_none(), "Upgrade is hop-by-hop");
        assert_eq!(out["x-request-id"], "routerd-set");
        assert_eq!(out["x-forwarded-for"], "198.51.100.4", "only routerd's hop");
        assert!(
            out.get("cf-connecting-ip").is_none(),
            "not believed, not passed on"
        );
        assert!(
            out.get(header::AUTHORIZATION).is_none(),
            "the admin token stays"
        );

        // From a trusted proxy the header is the caller's address and goes on; a caller's own
        // credentials go on too.
        let believed = Caller {
            forwarded: true,
            ..outsider()
        };
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer user-token"),
        );
        let out = upstream_headers(headers, &believed, "admin-token-0123");
        assert_eq!(out["cf-connecting-ip"], "203.0.113.50");
        assert_eq!(out[header::AUTHORIZATION], "Bearer user-token");
    }
}
