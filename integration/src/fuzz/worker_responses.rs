//! The `worker_responses` fuzz target's body.

use std::fmt::Write as _;
use std::future::poll_fn;

use arbitrary::{Arbitrary, Unstructured};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use bytes::Bytes;
use rma_daemon::http1::{Conn, Head, Payload, Reader};

use super::scripted::{Scripted, run};

#[derive(Debug, Arbitrary)]
struct Input {
    answer: Answer,
    /// The sizes the worker's bytes arrive in.
    splits: Vec<u16>,
    /// The request was a HEAD (its answer has no body, whatever its head says).
    head: bool,
    /// The worker closes the connection after its bytes (else it stays silent).
    closes: bool,
}

#[derive(Debug, Arbitrary)]
enum Answer {
    /// Any bytes at all.
    Raw(Vec<u8>),
    /// A well-formed response, and what it should read as.
    Built(Built),
}

#[derive(Debug, Arbitrary)]
struct Built {
    /// 100 Continue or 103 Early Hints answers first.
    interim: Vec<bool>,
    status: u16,
    http_1_0: bool,
    close: bool,
    headers: Vec<(u8, Vec<u8>)>,
    body: Body,
    /// What the worker sends after the response (as the next response, or as garbage).
    after: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Body {
    Length(Vec<u8>),
    Chunked {
        chunks: Vec<Vec<u8>>,
        extensions: bool,
        trailers: Vec<(u8, Vec<u8>)>,
    },
    /// Neither a length nor a coding: the body ends at the close.
    UntilClose(Vec<u8>),
    /// A Content-Length (any) and chunked coding both.
    Both(u32, Vec<Vec<u8>>),
}

/// Whatever a worker sends, in whatever pieces, read as routerd reads a response: no panic,
/// and a connection is kept for another request only when the response was read exactly to
/// its end. A well-formed response reads as what it says, and is reused when it may be.
pub fn worker_responses(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut splits = input.splits;
    splits.truncate(64);
    match input.answer {
        Answer::Raw(bytes) => {
            // However the bytes are cut, they read the same as when they come in one piece.
            // Whether the connection is kept may differ (bytes after a response may or may not
            // have been read with it), but not whether it can carry another request.
            let cut = exchange(bytes.clone(), splits, input.head, input.closes);
            let whole = exchange(bytes, Vec::new(), input.head, input.closes);
            let seen = |e: Result<Exchange, HeadFailed>| e.map(|e| (e.status, e.outcome, e.usable));
            assert_eq!(seen(cut), seen(whole));
        }
        Answer::Built(built) => check_built(built, splits, input.head, input.closes),
    }
}

/// How reading a response's body ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// At its end, with these bytes.
    Ended(Vec<u8>),
    /// With an error, after some bytes.
    Failed,
    /// Waiting for bytes that never come.
    Waiting,
}

/// Why no response head came.
#[derive(Debug, PartialEq, Eq)]
enum HeadFailed {
    /// The client gave up: malformed, closed, a protocol switch.
    Refused,
    /// Waiting for bytes that never come.
    Waiting,
}

/// What came of one request: the response's status, how its body ended, whether the
/// connection was kept, and whether it can then carry another request (kept, and the pool
/// finds nothing more from the worker on it).
#[derive(Debug, PartialEq, Eq)]
struct Exchange {
    status: u16,
    outcome: Outcome,
    kept: bool,
    usable: bool,
}

/// Sends a request on a scripted connection and reads the answer.
fn exchange(
    answer: Vec<u8>,
    splits: Vec<u16>,
    head: bool,
    closes: bool,
) -> Result<Exchange, HeadFailed> {
    let method = if head { Method::HEAD } else { Method::GET };
    let target = Uri::from_static("/v1/answer");
    let host = HeaderValue::from_static("10.42.0.11:8101");
    let headers = HeaderMap::new();
    let head = Head {
        method: &method,
        target: &target,
        host: &host,
        headers: &headers,
    };
    let conn = Conn::new(Scripted::new(answer, splits, closes));
    let mut payload: Payload = Payload::Kept(Bytes::new());
    let (parts, reader) = run(conn.send(head, &mut payload))
        .ok_or(HeadFailed::Waiting)?
        .map_err(|_| HeadFailed::Refused)?;
    let (outcome, conn) = read_body(reader);
    Ok(Exchange {
        status: parts.status.as_u16(),
        outcome,
        kept: conn.is_some(),
        usable: conn.is_some_and(|c| !c.closed()),
    })
}

fn read_body(mut reader: Reader<Scripted>) -> (Outcome, Option<Conn<Scripted>>) {
    let mut body = Vec::new();
    let outcome = loop {
        match run(poll_fn(|cx| reader.poll_data(cx))) {
            Some(Ok(Some(data))) => body.extend_from_slice(&data),
            Some(Ok(None)) => break Outcome::Ended(body),
            Some(Err(_)) => break Outcome::Failed,
            None => break Outcome::Waiting,
        }
    };
    (outcome, reader.into_reusable())
}

/// A header line from the input: a name of its own, and a value of visible characters.
fn extra_header(out: &mut String, (n, value): &(u8, Vec<u8>)) {
    let value: String = value
        .iter()
        .map(|b| char::from(b'!' + b % 94))
        .take(256)
        .collect();
    let _ = write!(out, "x-h{n}: {value}\r\n");
}

fn check_built(built: Built, splits: Vec<u16>, head: bool, closes: bool) {
    let status = 200 + built.status % 400;
    let bodiless = head || status == 204 || status == 304;
    let mut text = String::new();
    for early in built.interim.iter().take(3) {
        text.push_str(if *early {
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        } else {
            "HTTP/1.1 100 Continue\r\n\r\n"
        });
    }
    let version = if built.http_1_0 { "1.0" } else { "1.1" };
    let _ = write!(text, "HTTP/{version} {status} Answer\r\n");
    if built.close {
        text.push_str("connection: close\r\n");
    }
    for h in built.headers.iter().take(64) {
        extra_header(&mut text, h);
    }
    // The body as it is sent, what it reads as, and whether its end is in the head.
    let (sent, expected, framed): (Vec<u8>, Vec<u8>, bool) = match &built.body {
        Body::Length(body) => {
            let _ = write!(text, "content-length: {}\r\n\r\n", body.len());
            (body.clone(), body.clone(), true)
        }
        Body::Chunked {
            chunks,
            extensions,
            trailers,
        } => {
            text.push_str("transfer-encoding: chunked\r\n\r\n");
            let (sent, expected) = chunked(chunks, *extensions, trailers);
            (sent, expected, true)
        }
        Body::UntilClose(body) => {
            text.push_str("\r\n");
            (body.clone(), body.clone(), false)
        }
        Body::Both(length, chunks) => {
            let _ = write!(
                text,
                "content-length: {length}\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            let (sent, expected) = chunked(chunks, false, &[]);
            (sent, expected, false)
        }
    };
    let mut answer = text.into_bytes();
    let expected = if bodiless {
        Vec::new()
    } else {
        answer.extend_from_slice(&sent);
        expected
    };
    let mut after = built.after;
    after.truncate(256);
    answer.extend_from_slice(&after);
    let until_close = !bodiless && matches!(built.body, Body::UntilClose(_));
    let expected = if until_close {
        // Everything after the head is the body.
        [expected, after.clone()].concat()
    } else {
        expected
    };
    let whole = exchange(answer.clone(), Vec::new(), head, closes);
    let cut = exchange(answer, splits, head, closes).expect("a well-formed head");
    assert_eq!(cut.status, status);
    match &cut.outcome {
        Outcome::Ended(body) => assert_eq!(*body, expected),
        Outcome::Waiting => assert!(until_close && !closes, "a complete body waits"),
        Outcome::Failed => panic!("a well-formed body fails"),
    }
    let ambiguous = matches!(built.body, Body::Both(..));
    let may_keep =
        !built.http_1_0 && !built.close && !ambiguous && (bodiless || framed) && !until_close;
    assert!(
        may_keep || !cut.kept,
        "kept a connection that was not to be kept"
    );
    // What came after the response is never taken for the next response's start: the pool
    // finds such a connection unusable before it carries another request.
    assert!(after.is_empty() || !cut.usable, "reused with bytes pending");
    if may_keep && after.is_empty() {
        assert!(cut.kept, "a reusable connection was dropped");
        assert_eq!(
            cut.usable, !closes,
            "a closed connection looks open, or the reverse"
        );
    }
    assert_eq!(
        whole.as_ref().map(|w| (&w.outcome, w.usable)),
        Ok((&cut.outcome, cut.usable))
    );
}

/// A chunked body of `chunks` (empty ones left out: an empty chunk is the last), and what it
/// reads as.
fn chunked(chunks: &[Vec<u8>], extensions: bool, trailers: &[(u8, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let mut sent = Vec::new();
    let mut expected = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()).take(32) {
        let extension = if extensions { ";name=value" } else { "" };
        sent.extend_from_slice(format!("{:x}{extension}\r\n", chunk.len()).as_bytes());
        sent.extend_from_slice(chunk);
        sent.extend_from_slice(b"\r\n");
        expected.extend_from_slice(chunk);
    }
    sent.extend_from_slice(b"0\r\n");
    let mut text = String::new();
    for t in trailers.iter().take(8) {
        extra_header(&mut text, t);
    }
    sent.extend_from_slice(text.as_bytes());
    sent.extend_from_slice(b"\r\n");
    (sent, expected)
}
