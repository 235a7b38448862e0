//! The codec on byte strings alone: heads written and parsed, and bodies decoded the same
//! however their bytes are cut.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::*;

/// Decodes a response whose bytes arrive `cut` at a time, as the connection would: the
/// status, the body, whether the connection may be kept, and how many bytes came after the
/// response.
fn decode(
    response: &[u8],
    head_request: bool,
    cut: usize,
) -> Result<(u16, Vec<u8>, bool, usize), Error> {
    let mut buffered = Vec::new();
    let mut arrived = 0;
    let mut arrive = |buffered: &mut Vec<u8>| {
        let n = cut.min(response.len() - arrived);
        buffered.extend_from_slice(&response[arrived..arrived + n]);
        arrived += n;
        n
    };
    let (parts, mut decoder) = loop {
        match parse_head(&buffered)? {
            Some((parts, length, taken)) => {
                buffered.drain(..taken);
                if parts.status.is_informational() {
                    continue;
                }
                let decoder = BodyDecoder::new(&parts, head_request, length)?;
                break (parts, decoder);
            }
            None if arrive(&mut buffered) == 0 => return Err(Error::Closed),
            None => {}
        }
    };
    let mut body = Vec::new();
    let mut ended = false;
    loop {
        match decoder.step(&buffered, ended)? {
            Step::Data(n) => body.extend(buffered.drain(..n)),
            Step::Framing(n) => {
                buffered.drain(..n);
            }
            Step::More => ended = arrive(&mut buffered) == 0,
            Step::End => break,
        }
    }
    Ok((
        parts.status.as_u16(),
        body,
        decoder.keep_alive(),
        // What came after the response: buffered, or still to arrive.
        buffered.len() + (response.len() - arrived),
    ))
}

/// Every cut from one byte at a time to all at once reads the same.
fn decode_every_cut(
    response: &[u8],
    head_request: bool,
) -> Result<(u16, Vec<u8>, bool, usize), Error> {
    let whole = decode(response, head_request, usize::MAX);
    for cut in 1..=response.len() {
        let cut_result = decode(response, head_request, cut);
        assert_eq!(
            format!("{cut_result:?}"),
            format!("{whole:?}"),
            "cut every {cut}: {}",
            String::from_utf8_lossy(response)
        );
    }
    whole
}

#[test]
fn heads_carry_the_target_host_headers_and_framing() {
    let target = Uri::from_static("/stats?x=1");
    let host = HeaderValue::from_static("10.42.0.11:8101");
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", HeaderValue::from_static("abc"));
    let head = |method| Head {
        method,
        target: &target,
        host: &host,
        headers: &headers,
    };
    let written = |method, length| {
        let mut out = Vec::new();
        write_head(&mut out, head(method), length);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        written(&Method::GET, Some(0)),
        "GET /stats?x=1 HTTP/1.1\r\nhost: 10.42.0.11:8101\r\nx-request-id: abc\r\n\r\n"
    );
    assert_eq!(
        written(&Method::POST, Some(0)),
        "POST /stats?x=1 HTTP/1.1\r\nhost: 10.42.0.11:8101\r\nx-request-id: abc\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(written(&Method::PUT, None).ends_with("transfer-encoding: chunked\r\n\r\n"));
}

/// A response's status, body, whether its connection may be kept, and the bytes after it.
type Decoded<'a> = (u16, &'a [u8], bool, usize);

#[test]
fn bodies_decode_the_same_however_their_bytes_are_cut() {
    let cases: [(&[u8], bool, Decoded<'_>); 7] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false, (200, b"hello", true, 0)),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
            false,
            (200, b"hello, world", true, 0),
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", false, (200, b"until the end", false, 0)),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", true, (200, b"", true, 0)),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
            (204, b"", true, 0),
        ),
        // Bytes after a complete response are left over, never taken as its body.
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1", false, (200, b"ok", true, 8)),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            (200, b"ok", false, 0),
        ),
    ];
    for (response, head_request, (status, body, keep, left)) in cases {
        let got = decode_every_cut(response, head_request).unwrap();
        assert_eq!(
            got,
            (status, body.to_vec(), keep, left),
            "{}",
            String::from_utf8_lossy(response)
        );
    }
}

#[test]
fn malformed_or_cut_bodies_fail_the_same_however_they_are_cut() {
    let long_line = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x={}\r\nok\r\n0\r\n\r\n",
        "e".repeat(MAX_LINE)
    );
    // The same line ended by a bare LF, one byte longer than the limit.
    let long_lf_line = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x={}\nok\r\n0\r\n\r\n",
        "e".repeat(MAX_LINE - 3)
    );
    let cases: [(&[u8], &str); 7] = [
        (long_line.as_bytes(), "invalid"),
        (long_lf_line.as_bytes(), "invalid"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "invalid"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "invalid",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "invalid",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokk\r\n",
            "invalid",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
            "closed",
        ),
    ];
    for (response, kind) in cases {
        let error = decode_every_cut(response, false).unwrap_err();
        let matched = match kind {
            "invalid" => matches!(error, Error::Invalid(_)),
            _ => matches!(error, Error::Closed),
        };
        assert!(matched, "{}: {error}", String::from_utf8_lossy(response));
    }
}

#[test]
fn a_head_too_large_is_refused_however_much_was_buffered() {
    let mut head = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    head.extend(std::iter::repeat_n(b'b', MAX_HEAD));
    assert!(
        matches!(parse_head(&head), Err(Error::Invalid(_))),
        "partial"
    );
    head.extend_from_slice(b"\r\n\r\n");
    assert!(
        matches!(parse_head(&head), Err(Error::Invalid(_))),
        "complete"
    );
    let small = b"HTTP/1.1 204 No Content\r\n\r\n";
    let (parts, length, taken) = parse_head(small).unwrap().unwrap();
    assert_eq!(
        (parts.status, length, taken),
        (StatusCode::NO_CONTENT, None, small.len())
    );
    assert!(parse_head(&small[..10]).unwrap().is_none());
}
