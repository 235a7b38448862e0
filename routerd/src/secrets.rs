//! The secrets routerd makes and compares: heartbeat session tokens, the admin token, and the
//! API keys its rate limits know, which it holds only as SHA-256 digests.

use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};

use crate::registry::SessionToken;

/// Compares in time that does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh session token from the operating system's generator.
pub fn new_session() -> SessionToken {
    let mut token = SessionToken::default();
    OsRng.fill_bytes(&mut token);
    token
}

/// The digest an API key is known by.
pub fn api_key_digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_comparisons_need_every_byte() {
        assert_ne!(new_session(), new_session());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        // `echo -n key | sha256sum`
        assert_eq!(
            api_key_digest(b"key")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "2c70e12b7a0646f92279f427c7b38e7334d8e5389cff167a1dc30e73f826b683"
        );
    }
}
