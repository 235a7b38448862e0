//! The `stream_frames` fuzz target's body.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rma_proto::lighthouse::{self, FromLighthouse, MAX_FRAME, MAX_RELAYED, ToLighthouse};
use rma_proto::stream::{self, Frame, MAX_HEAD};

/// Runs a future over an in-memory stream, which never waits.
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("a byte slice never waits"),
    }
}

/// The bytes a TCP link carries, as either end reads them: an HTTP head (checked as a
/// request and as a response), then frames until the stream ends or one is refused. No
/// panic; a head never runs past its blank line or its limit; a frame is never longer than
/// its kind allows, and its body decodes or is refused.
pub fn stream_frames(data: &[u8]) {
    let mut input = data;
    let Ok(head) = ready(stream::read_head(&mut input)) else {
        return;
    };
    assert!(head.len() <= MAX_HEAD && head.ends_with(b"\r\n\r\n"));
    assert_eq!(head.len() + input.len(), data.len());
    let request = stream::check_request(&head);
    let response = stream::check_response(&head);
    assert!(request.is_err() || response.is_err(), "a head is not both");
    let mut buf = Vec::new();
    while let Ok(Some(frame)) = ready(stream::read_frame(&mut input, &mut buf)) {
        match frame {
            Frame::Control => {
                assert!(buf.len() <= MAX_FRAME);
                let _ = lighthouse::decode::<ToLighthouse>(&buf);
                let _ = lighthouse::decode::<FromLighthouse>(&buf);
            }
            Frame::Relay => {
                assert!(buf.len() <= 4 + MAX_RELAYED);
                if let Some((_, datagram)) = lighthouse::split_relay(&buf) {
                    let again = stream::relay_frame(&buf);
                    assert_eq!(again.len(), 5 + 4 + datagram.len());
                }
            }
            Frame::Keepalive => assert!(buf.is_empty()),
        }
    }
}
