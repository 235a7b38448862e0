//! WireGuard handshake messages that anyone can make, for hostile-traffic tests. MAC1, the only
//! check a handshake passes before a receiver spends work on it, is keyed with the receiver's
//! public key alone, and that key is in its certificate, which is public. So a forger with no
//! secret at all can make handshakes that every receiver counts against its load limit.

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};

const LABEL_MAC1: &[u8] = b"mac1----";
pub use crate::node::HANDSHAKE_INIT_LEN;
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;

/// A handshake response (type 2) to `receiver_idx`, with a valid MAC1 for `receiver_public`
/// and `filler` as its ephemeral key and empty ciphertext.
pub fn handshake_response(
    receiver_public: &[u8; 32],
    sender_idx: u32,
    receiver_idx: u32,
    filler: &[u8; 48],
) -> [u8; HANDSHAKE_RESPONSE_LEN] {
    let mut message = [0u8; HANDSHAKE_RESPONSE_LEN];
    message[..4].copy_from_slice(&2u32.to_le_bytes());
    message[4..8].copy_from_slice(&sender_idx.to_le_bytes());
    message[8..12].copy_from_slice(&receiver_idx.to_le_bytes());
    message[12..60].copy_from_slice(filler);
    seal_mac1(receiver_public, &mut message);
    message
}

/// A handshake initiation (type 1) with a valid MAC1 for `receiver_public` and `filler` in place
/// of the ephemeral key, the encrypted static key and the timestamp.
pub fn handshake_init(
    receiver_public: &[u8; 32],
    sender_idx: u32,
    filler: &[u8; 108],
) -> [u8; HANDSHAKE_INIT_LEN] {
    let mut message = [0u8; HANDSHAKE_INIT_LEN];
    message[..4].copy_from_slice(&1u32.to_le_bytes());
    message[4..8].copy_from_slice(&sender_idx.to_le_bytes());
    message[8..116].copy_from_slice(filler);
    seal_mac1(receiver_public, &mut message);
    message
}

/// Writes MAC1 over everything before the two MACs; MAC2 stays zero (no cookie).
fn seal_mac1(receiver_public: &[u8; 32], message: &mut [u8]) {
    let key: [u8; 32] = Blake2s256::new()
        .chain_update(LABEL_MAC1)
        .chain_update(receiver_public)
        .finalize()
        .into();
    let body = message.len() - 32;
    let mut mac = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(&key)
        .expect("a 32-byte key fits Blake2s");
    Update::update(&mut mac, &message[..body]);
    let mac1: [u8; 16] = mac.finalize_fixed().into();
    message[body..body + 16].copy_from_slice(&mac1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::rate_limiter::RateLimiter;
    use boringtun::x25519::{PublicKey, StaticSecret};

    #[test]
    fn boringtun_accepts_the_forged_mac1_and_refuses_a_wrong_one() {
        let public = PublicKey::from(&StaticSecret::from([7u8; 32]));
        let limiter = RateLimiter::new(&public, 1_000);
        let mut scratch = [0u8; 256];
        let response = handshake_response(public.as_bytes(), 1, 2, &[9; 48]);
        assert!(limiter.verify_packet(None, &response, &mut scratch).is_ok());
        let init = handshake_init(public.as_bytes(), 1, &[9; 108]);
        assert!(limiter.verify_packet(None, &init, &mut scratch).is_ok());
        let other = PublicKey::from(&StaticSecret::from([8u8; 32]));
        let foreign = handshake_response(other.as_bytes(), 1, 2, &[9; 48]);
        assert!(limiter.verify_packet(None, &foreign, &mut scratch).is_err());
    }
}
