//! The worker client against a scripted worker on loopback: it reads each request and answers
//! with the bytes a test gives, so framing, reuse and malformed answers are exercised on a
//! real socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

/// A worker that answers each request on one connection with the next of `answers`, then
/// closes it; it returns the requests it read (head and body).
async fn worker(answers: Vec<&'static [u8]>) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut requests = Vec::new();
        let mut pending = Vec::new();
        for answer in answers {
            // A request: its head, then as many body bytes as its Content-Length says.
            let request = loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(pending[..end + 4].to_vec()).unwrap();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |n| n.trim().parse().unwrap());
                    if pending.len() >= end + 4 + length {
                        let all: Vec<u8> = pending.drain(..end + 4 + length).collect();
                        break String::from_utf8(all).unwrap();
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return requests;
                }
                pending.extend_from_slice(&chunk[..n]);
            };
            requests.push(request);
            socket.write_all(answer).await.unwrap();
        }
        requests
    });
    (addr, task)
}

fn head<'a>(
    method: &'a Method,
    target: &'a Uri,
    host: &'a HeaderValue,
    headers: &'a HeaderMap,
) -> Head<'a> {
    Head {
        method,
        target,
        host,
        headers,
    }
}

/// Sends one request on `conn`; the status, the body, and the connection if it can be reused.
async fn exchange(
    conn: Conn,
    method: Method,
    payload: &[u8],
) -> Result<(StatusCode, Vec<u8>, Option<Conn>), Error> {
    let target = Uri::from_static("/stats?x=1");
    let host = HeaderValue::from_static("10.42.0.11:8101");
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", HeaderValue::from_static("abc"));
    let mut payload: Payload = Payload::Kept(Bytes::copy_from_slice(payload));
    let (parts, reader) = conn
        .send(head(&method, &target, &host, &headers), &mut payload)
        .await
        .map_err(|e| e.error)?;
    let kept = Arc::new(Mutex::new(None));
    let slot = kept.clone();
    let body = WorkerBody::new(reader, move |conn| *slot.lock().unwrap() = conn);
    let bytes = body.collect().await?.to_bytes();
    let conn = kept.lock().unwrap().take();
    Ok((parts.status, bytes.to_vec(), conn))
}

#[tokio::test]
async fn a_length_framed_answer_is_read_and_its_connection_reused() {
    let (addr, worker) = worker(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-worker: w1\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    ])
    .await;
    let conn = connect(addr).await.unwrap();
    let (status, body, conn) = exchange(conn, Method::GET, b"").await.unwrap();
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"hello"[..]));
    let conn = conn.expect("reusable after a complete answer");
    assert!(conn.reused);
    assert!(!conn.closed(), "open while the worker keeps it");
    let (status, body, _) = exchange(conn, Method::POST, b"{\"q\":1}").await.unwrap();
    assert_eq!((status, body.as_slice()), (StatusCode::CREATED, &b"ok"[..]));
    let requests = worker.await.unwrap();
    assert_eq!(
        requests[0],
        "GET /stats?x=1 HTTP/1.1\r\nhost: 10.42.0.11:8101\r\nx-request-id: abc\r\n\r\n"
    );
    assert_eq!(
        requests[1],
        "POST /stats?x=1 HTTP/1.1\r\nhost: 10.42.0.11:8101\r\nx-request-id: abc\r\ncontent-length: 7\r\n\r\n{\"q\":1}"
    );
}

#[tokio::test]
async fn chunked_answers_are_decoded_with_extensions_and_trailers() {
    let (addr, _worker) = worker(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
    ])
    .await;
    let (status, body, conn) = exchange(connect(addr).await.unwrap(), Method::GET, b"")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"hello, world"[..])
    );
    assert!(conn.is_some(), "read to its end: reusable");
}

#[tokio::test]
async fn answers_without_a_length_end_at_the_close_and_are_not_reused() {
    let (addr, _worker) = worker(vec![
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
    ])
    .await;
    let (_, body, conn) = exchange(connect(addr).await.unwrap(), Method::GET, b"")
        .await
        .unwrap();
    assert_eq!(body, b"until the end");
    assert!(conn.is_none());
}

#[tokio::test]
async fn head_answers_and_interim_answers_carry_no_body() {
    let (addr, _worker) = worker(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ])
    .await;
    let (status, body, conn) = exchange(connect(addr).await.unwrap(), Method::HEAD, b"")
        .await
        .unwrap();
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    let (status, body, conn) = exchange(conn.unwrap(), Method::GET, b"").await.unwrap();
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    assert!(conn.is_some());
}

#[tokio::test]
async fn connection_close_http_1_0_and_doubly_framed_answers_are_not_reused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        // Framed twice: the chunked coding is read, and the connection is not trusted again.
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ] {
        let (addr, _worker) = worker(vec![answer]).await;
        let (_, body, conn) = exchange(connect(addr).await.unwrap(), Method::GET, b"")
            .await
            .unwrap();
        assert_eq!(body, b"ok");
        assert!(conn.is_none(), "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn malformed_or_cut_answers_are_errors() {
    let cases: [(&[u8], &str); 5] = [
        (b"HTTP/1.1 abc OK\r\n\r\n", "invalid"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "invalid",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "invalid",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
            "closed",
        ),
    ];
    for (answer, kind) in cases {
        let (addr, _worker) = worker(vec![answer]).await;
        let error = exchange(connect(addr).await.unwrap(), Method::GET, b"")
            .await
            .err()
            .unwrap_or_else(|| panic!("{} was taken", String::from_utf8_lossy(answer)));
        let matched = match kind {
            "invalid" => matches!(error, Error::Invalid(_)),
            _ => matches!(error, Error::Closed),
        };
        assert!(matched, "{}: {error}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn a_worker_that_closes_before_answering_is_reported_as_closed() {
    let (addr, _worker) = worker(vec![]).await;
    let error = exchange(connect(addr).await.unwrap(), Method::GET, b"")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, Error::Closed | Error::Read(_)), "{error}");
}

#[tokio::test]
async fn an_idle_connection_the_worker_closed_is_found_closed() {
    let (addr, worker) = worker(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let (_, _, conn) = exchange(connect(addr).await.unwrap(), Method::GET, b"")
        .await
        .unwrap();
    let conn = conn.unwrap();
    worker.await.unwrap(); // the worker has closed it
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !conn.closed() {
        tokio::time::timeout_at(deadline, conn.io.readable())
            .await
            .expect("the close was seen in time")
            .unwrap();
    }
}
