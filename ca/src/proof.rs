//! Proof that a request comes from the holder of a node certificate: an Ed25519 signature,
//! with the node's identity key, over the request's method, path, time and body. Certificates
//! are public, and a mesh IP can be borrowed by any local user of the machine that holds it,
//! so neither names a sender; only a signature with the certificate's key does.
//!
//! The time bounds a replay to a window, and a verifier that remembers the last time it
//! accepted from a node can refuse anything not newer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, Verifier as _};

use crate::{NodeCert, NodeKeys};

/// The headers a signed HTTP request carries: its time (milliseconds since the Unix epoch) and
/// the signature (base64).
pub const TIME_HEADER: &str = "x-rma-time";
pub const SIGNATURE_HEADER: &str = "x-rma-signature";

/// Separates these signatures from every other use of the identity key (TLS handshakes).
const DOMAIN: &[u8] = b"rma-mesh signed request v1\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the request is not signed (headers {TIME_HEADER} and {SIGNATURE_HEADER})")]
    Unsigned,
    #[error("{TIME_HEADER} is not a time in milliseconds")]
    BadTime,
    #[error("{SIGNATURE_HEADER} is not a base64 Ed25519 signature")]
    BadSignatureEncoding,
    #[error(
        "the request was signed {skew_secs} s away from this host's clock (at most {window_secs} s)"
    )]
    OutsideWindow { skew_secs: i64, window_secs: u64 },
    #[error("the signature is not by the certificate's identity key")]
    WrongKey,
}

/// What is signed: method, path and time, each ended so that none can run into the next,
/// then the body.
fn message(method: &str, path: &str, unix_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + method.len() + path.len() + 10 + body.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(method.as_bytes());
    m.push(0);
    m.extend_from_slice(path.as_bytes());
    m.push(0);
    m.extend_from_slice(&unix_ms.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The value of [`SIGNATURE_HEADER`] for a request made at `unix_ms`.
pub fn sign_request(
    keys: &NodeKeys,
    method: &str,
    path: &str,
    unix_ms: u64,
    body: &[u8],
) -> String {
    let signature = keys.identity().sign(&message(method, path, unix_ms, body));
    STANDARD.encode(signature.to_bytes())
}

/// The two headers that sign a request made at `unix_ms`, as (name, value).
pub fn signed_headers(
    keys: &NodeKeys,
    method: &str,
    path: &str,
    unix_ms: u64,
    body: &[u8],
) -> [(&'static str, String); 2] {
    [
        (TIME_HEADER, unix_ms.to_string()),
        (
            SIGNATURE_HEADER,
            sign_request(keys, method, path, unix_ms, body),
        ),
    ]
}

/// Milliseconds since the Unix epoch at `now`, as [`TIME_HEADER`] carries them.
pub fn unix_ms(now: time::OffsetDateTime) -> u64 {
    u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// A signed request's headers, as sent: its time and its signature.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub time: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

impl<'a> Signed<'a> {
    /// The headers [`signed_headers`] made, as the receiver reads them.
    pub fn from_headers(headers: &'a [(&'static str, String); 2]) -> Self {
        Self {
            time: Some(headers[0].1.as_bytes()),
            signature: Some(headers[1].1.as_bytes()),
        }
    }
}

/// Checks that `cert`'s identity key signed this request within `window` of `now_ms`; returns
/// the request's time. The cheap checks come first: an unsigned or stale request costs no
/// signature verification.
pub fn verify_request(
    cert: &NodeCert,
    method: &str,
    path: &str,
    signed: Signed<'_>,
    body: &[u8],
    now_ms: u64,
    window: std::time::Duration,
) -> Result<u64, ProofError> {
    verify_request_by(
        cert.identity_key(),
        method,
        path,
        signed,
        body,
        now_ms,
        window,
    )
}

/// [`verify_request`] with the identity key itself: a node enrolling has no certificate yet.
pub fn verify_request_by(
    key: &ed25519_dalek::VerifyingKey,
    method: &str,
    path: &str,
    signed: Signed<'_>,
    body: &[u8],
    now_ms: u64,
    window: std::time::Duration,
) -> Result<u64, ProofError> {
    let (Some(time), Some(signature)) = (signed.time, signed.signature) else {
        return Err(ProofError::Unsigned);
    };
    let unix_ms: u64 = std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(ProofError::BadTime)?;
    let skew_ms = i128::from(unix_ms) - i128::from(now_ms);
    if skew_ms.unsigned_abs() > window.as_millis() {
        return Err(ProofError::OutsideWindow {
            skew_secs: i64::try_from(skew_ms / 1000).unwrap_or(i64::MAX),
            window_secs: window.as_secs(),
        });
    }
    // A signature is 64 bytes, 88 in base64: anything longer is refused before decoding.
    if signature.len() > 88 {
        return Err(ProofError::BadSignatureEncoding);
    }
    let bytes: [u8; 64] = STANDARD
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ProofError::BadSignatureEncoding)?;
    key.verify(
        &message(method, path, unix_ms, body),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| ProofError::WrongKey)?;
    Ok(unix_ms)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::test_ca::TestCa;

    const WINDOW: Duration = Duration::from_secs(300);

    fn check(
        cert: &NodeCert,
        path: &str,
        time: &str,
        signature: &str,
        body: &[u8],
        now: u64,
    ) -> Result<u64, ProofError> {
        let signed = Signed {
            time: Some(time.as_bytes()),
            signature: Some(signature.as_bytes()),
        };
        verify_request(cert, "POST", path, signed, body, now, WINDOW)
    }

    #[test]
    fn only_the_certificates_key_signs_and_every_part_of_the_request_is_covered() {
        let pki = TestCa::new("ca");
        let (cert, keys) = pki.node("worker-1", Ipv4Addr::new(10, 42, 0, 5));
        let (_, other_keys) = pki.node("worker-2", Ipv4Addr::new(10, 42, 0, 6));
        let t = 1_800_000_000_000u64;
        let body = br#"{"services":[]}"#;
        let sig = sign_request(&keys, "POST", "/api/worker/register", t, body);
        let ts = t.to_string();
        assert_eq!(
            check(&cert, "/api/worker/register", &ts, &sig, body, t + 1_000),
            Ok(t)
        );
        // Another path, another body, another time, another key: all refused.
        assert_eq!(
            check(&cert, "/api/worker/heartbeat", &ts, &sig, body, t),
            Err(ProofError::WrongKey)
        );
        assert_eq!(
            check(&cert, "/api/worker/register", &ts, &sig, b"{}", t),
            Err(ProofError::WrongKey)
        );
        let later = (t + 1).to_string();
        assert_eq!(
            check(&cert, "/api/worker/register", &later, &sig, body, t),
            Err(ProofError::WrongKey)
        );
        let forged = sign_request(&other_keys, "POST", "/api/worker/register", t, body);
        assert_eq!(
            check(&cert, "/api/worker/register", &ts, &forged, body, t),
            Err(ProofError::WrongKey)
        );
        // Outside the window either way.
        let stale = t + WINDOW.as_millis() as u64 + 1;
        assert!(matches!(
            check(&cert, "/api/worker/register", &ts, &sig, body, stale),
            Err(ProofError::OutsideWindow { .. })
        ));
        let early = t - WINDOW.as_millis() as u64 - 1;
        assert!(matches!(
            check(&cert, "/api/worker/register", &ts, &sig, body, early),
            Err(ProofError::OutsideWindow { .. })
        ));
        // Malformed headers.
        assert_eq!(
            check(&cert, "/p", "soon", &sig, body, t),
            Err(ProofError::BadTime)
        );
        assert_eq!(
            check(&cert, "/p", &ts, "!!", body, t),
            Err(ProofError::BadSignatureEncoding)
        );
        assert_eq!(
            check(&cert, "/p", &ts, &"A".repeat(4096), body, t),
            Err(ProofError::BadSignatureEncoding)
        );
        let unsigned = Signed {
            time: None,
            signature: Some(sig.as_bytes()),
        };
        assert_eq!(
            verify_request(&cert, "POST", "/p", unsigned, body, t, WINDOW),
            Err(ProofError::Unsigned)
        );
    }
}
