//! Reading PEM-or-DER input and naming what was found when it is the wrong thing.

use std::borrow::Cow;

pub(crate) const CERTIFICATE_TAG: &str = "CERTIFICATE";
pub(crate) const CRL_TAG: &str = "X509 CRL";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("not valid PEM: {0}")]
    Pem(String),
    #[error("holds {found}, expected {expected}")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    #[error("holds no complete PEM block (truncated?), expected {expected}")]
    NoBlock { expected: &'static str },
    #[error("holds {count} PEM blocks, expected just {expected}")]
    Count {
        count: usize,
        expected: &'static str,
    },
}

/// Describes a PEM block that was found where another was expected.
pub(crate) fn describe_block(tag: &str) -> String {
    match tag {
        CERTIFICATE_TAG => "a certificate".into(),
        "PUBLIC KEY" => "a public key".into(),
        "PRIVATE KEY" => "a private key".into(),
        "ENCRYPTED PRIVATE KEY" => "an encrypted private key (decrypt it first)".into(),
        CRL_TAG => "a revocation list".into(),
        other => format!("a PEM block labelled {other:?}"),
    }
}

/// Returns the DER inside `bytes`: the single PEM block labelled `tag`, or `bytes` itself when
/// they do not look like PEM.
pub(crate) fn pem_or_der<'a>(
    bytes: &'a [u8],
    tag: &'static str,
    expected: &'static str,
) -> Result<Cow<'a, [u8]>, EncodingError> {
    let trimmed = bytes.trim_ascii_start();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut blocks = pem::parse_many(trimmed).map_err(|e| EncodingError::Pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(EncodingError::NoBlock { expected });
    }
    if blocks.len() != 1 {
        return Err(EncodingError::Count {
            count: blocks.len(),
            expected,
        });
    }
    let block = blocks.remove(0);
    if block.tag() != tag {
        return Err(EncodingError::WrongKind {
            found: describe_block(block.tag()),
            expected,
        });
    }
    Ok(Cow::Owned(block.into_contents()))
}

/// Returns the DER of one to `max` PEM blocks labelled `tag`, back to back (a certificate and
/// the issuing CA's after it), or `bytes` itself when they do not look like PEM.
pub(crate) fn pem_chain_or_der<'a>(
    bytes: &'a [u8],
    tag: &'static str,
    expected: &'static str,
    max: usize,
) -> Result<Cow<'a, [u8]>, EncodingError> {
    let trimmed = bytes.trim_ascii_start();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(Cow::Borrowed(bytes));
    }
    let blocks = pem::parse_many(trimmed).map_err(|e| EncodingError::Pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(EncodingError::NoBlock { expected });
    }
    if blocks.len() > max {
        return Err(EncodingError::Count {
            count: blocks.len(),
            expected,
        });
    }
    let mut der = Vec::new();
    for block in blocks {
        if block.tag() != tag {
            return Err(EncodingError::WrongKind {
                found: describe_block(block.tag()),
                expected,
            });
        }
        der.extend_from_slice(block.contents());
    }
    Ok(Cow::Owned(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_passes_through_and_pem_is_unwrapped() {
        assert_eq!(
            &*pem_or_der(b"\x30\x00", CRL_TAG, "a CRL").unwrap(),
            b"\x30\x00"
        );
        let text = pem::encode(&pem::Pem::new(CRL_TAG, vec![1, 2, 3]));
        assert_eq!(
            &*pem_or_der(text.as_bytes(), CRL_TAG, "a CRL").unwrap(),
            [1, 2, 3]
        );
        let err = pem_or_der(text.as_bytes(), CERTIFICATE_TAG, "a certificate").unwrap_err();
        assert!(err.to_string().contains("holds a revocation list"), "{err}");
        let two = format!("{text}{text}");
        assert!(matches!(
            pem_or_der(two.as_bytes(), CRL_TAG, "a CRL").unwrap_err(),
            EncodingError::Count { count: 2, .. }
        ));
        assert!(matches!(
            pem_or_der(b"-----BEGIN X509 CRL-----\nAAA", CRL_TAG, "a CRL").unwrap_err(),
            EncodingError::NoBlock { .. }
        ));
    }
}
