//! Parked registrations: a node that has not needed a lighthouse for a while closes its QUIC
//! connection to it and stays registered with a few small datagrams, so that the lighthouse
//! keeps a registration (about a kilobyte) instead of a QUIC connection (about 38 KiB).
//!
//! Before it closes the connection, the node asks to park over it; the lighthouse answers
//! [`crate::lighthouse::FromLighthouse::Parked`], and both ends derive a 32-byte park key from
//! that connection's TLS session ([`EXPORTER_LABEL`], with the reflect token as context). The
//! key authenticates three control messages (see [`crate::wire`] for the header), each
//! carrying the reflect token, a counter and an HMAC-SHA256 tag over both:
//!
//! - kind `4`, **parked ping**, node to the lighthouse's reflector port, from the WireGuard
//!   socket: keeps the NAT mapping peers use open, and tells the lighthouse the node is alive
//!   and where its socket appears. The counter must grow from one ping to the next, so a
//!   replayed ping changes nothing. Padded to [`PING_BODY_LEN`], so that the answer is never
//!   longer.
//! - kind `5`, **parked ack**, the lighthouse's answer to a ping that verified: the ping's
//!   counter, a digest of the revocation lists the lighthouse holds (a node whose lists differ
//!   connects again to fetch them) and the address the ping came from.
//! - kind `6`, **wake**, from the lighthouse to the node's public address: a peer asked for the
//!   node, or has packets for it to relay, so it should connect again. Its counter grows with
//!   each wake the lighthouse sends.
//!
//! A node that misses its acks, or wakes, connects again and registers as it did at start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

use crate::wire::TOKEN_LEN;

pub const KEY_LEN: usize = 32;
/// The tag: a whole HMAC-SHA256, checked in constant time.
const TAG_LEN: usize = 32;
/// The TLS exporter label (RFC 5705) both ends derive the park key with.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-rma-mesh-park-key";
/// A ping's body: token, counter and tag, then zero padding to this length, which is no
/// shorter than an ack's.
pub const PING_BODY_LEN: usize = 88;
const PING_SIGNED: usize = TOKEN_LEN + 8;
/// An ack's body: token, counter, lists digest, address (a family byte, 16 address bytes and
/// the port) and tag.
pub const ACK_BODY_LEN: usize = TOKEN_LEN + 8 + 8 + 19 + TAG_LEN;
pub const WAKE_BODY_LEN: usize = TOKEN_LEN + 8 + TAG_LEN;

/// What each kind's tag is computed over, after the key: a label of its own, so that no
/// message can pass for another.
const PING_LABEL: &[u8] = b"rma-park ping\0";
const ACK_LABEL: &[u8] = b"rma-park ack\0";
const WAKE_LABEL: &[u8] = b"rma-park wake\0";

/// A parked ping as it arrived; [`Key::verify_ping`] says whether it is genuine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    pub token: [u8; TOKEN_LEN],
    pub counter: u64,
    tag: [u8; TAG_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub token: [u8; TOKEN_LEN],
    pub counter: u64,
    pub lists: u64,
    pub observed: SocketAddr,
    tag: [u8; TAG_LEN],
    signed: [u8; ACK_BODY_LEN - TAG_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    pub token: [u8; TOKEN_LEN],
    pub counter: u64,
    tag: [u8; TAG_LEN],
}

fn token_and_counter(token: &[u8; TOKEN_LEN], counter: u64) -> [u8; PING_SIGNED] {
    let mut signed = [0u8; PING_SIGNED];
    signed[..TOKEN_LEN].copy_from_slice(token);
    signed[TOKEN_LEN..].copy_from_slice(&counter.to_be_bytes());
    signed
}

fn split_token_counter(body: &[u8]) -> Option<([u8; TOKEN_LEN], u64, &[u8])> {
    let (token, rest) = body.split_first_chunk::<TOKEN_LEN>()?;
    let (counter, rest) = rest.split_first_chunk::<8>()?;
    Some((*token, u64::from_be_bytes(*counter), rest))
}

fn encode_addr(addr: SocketAddr) -> [u8; 19] {
    let mut out = [0u8; 19];
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&ip.octets());
        }
    }
    out[17..].copy_from_slice(&addr.port().to_be_bytes());
    out
}

fn decode_addr(bytes: &[u8; 19]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([bytes[17], bytes[18]]);
    let ip = match bytes[0] {
        4 if bytes[5..17].iter().all(|&b| b == 0) => {
            IpAddr::V4(Ipv4Addr::new(bytes[1], bytes[2], bytes[3], bytes[4]))
        }
        6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[1..17]);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The ping in a kind-4 body: its exact length, zero padding after the tag.
pub(crate) fn parse_ping(body: &[u8]) -> Option<Ping> {
    if body.len() != PING_BODY_LEN {
        return None;
    }
    let (token, counter, rest) = split_token_counter(body)?;
    let (tag, padding) = rest.split_first_chunk::<TAG_LEN>()?;
    padding.iter().all(|&b| b == 0).then_some(Ping {
        token,
        counter,
        tag: *tag,
    })
}

pub(crate) fn parse_ack(body: &[u8]) -> Option<Ack> {
    let body: &[u8; ACK_BODY_LEN] = body.try_into().ok()?;
    let (signed, tag) = body.split_at(ACK_BODY_LEN - TAG_LEN);
    let (token, counter, rest) = split_token_counter(signed)?;
    let (lists, addr) = rest.split_first_chunk::<8>()?;
    Some(Ack {
        token,
        counter,
        lists: u64::from_be_bytes(*lists),
        observed: decode_addr(addr.try_into().ok()?)?,
        tag: tag.try_into().ok()?,
        signed: signed.try_into().ok()?,
    })
}

pub(crate) fn parse_wake(body: &[u8]) -> Option<Wake> {
    if body.len() != WAKE_BODY_LEN {
        return None;
    }
    let (token, counter, tag) = split_token_counter(body)?;
    Some(Wake {
        token,
        counter,
        tag: tag.try_into().ok()?,
    })
}

impl Ping {
    /// The datagram: token, counter, tag and zero padding (a parsed ping's tag as it came).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = [0u8; PING_BODY_LEN];
        body[..PING_SIGNED].copy_from_slice(&token_and_counter(&self.token, self.counter));
        body[PING_SIGNED..PING_SIGNED + TAG_LEN].copy_from_slice(&self.tag);
        crate::wire::encode_kind(crate::wire::KIND_PARKED_PING, &body, out);
    }
}

impl Ack {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = [0u8; ACK_BODY_LEN];
        body[..ACK_BODY_LEN - TAG_LEN].copy_from_slice(&self.signed);
        body[ACK_BODY_LEN - TAG_LEN..].copy_from_slice(&self.tag);
        crate::wire::encode_kind(crate::wire::KIND_PARKED_ACK, &body, out);
    }
}

impl Wake {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = [0u8; WAKE_BODY_LEN];
        body[..PING_SIGNED].copy_from_slice(&token_and_counter(&self.token, self.counter));
        body[PING_SIGNED..].copy_from_slice(&self.tag);
        crate::wire::encode_kind(crate::wire::KIND_WAKE, &body, out);
    }
}

/// A park key: what one parked registration's messages are signed with.
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("parked::Key(..)")
    }
}

impl Key {
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn tag(&self, label: &[u8], signed: &[u8]) -> [u8; TAG_LEN] {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(label);
        context.update(signed);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    fn verify(&self, label: &[u8], signed: &[u8], tag: &[u8; TAG_LEN]) -> bool {
        // On the stack: a forged ping costs the lighthouse one HMAC and no allocation.
        let mut message = [0u8; 96];
        let len = label.len() + signed.len();
        let Some(message) = message.get_mut(..len) else {
            return false;
        };
        message[..label.len()].copy_from_slice(label);
        message[label.len()..].copy_from_slice(signed);
        hmac::verify(&self.0, message, tag).is_ok()
    }

    /// Encodes a ping into `out` (cleared first).
    pub fn ping(&self, token: &[u8; TOKEN_LEN], counter: u64, out: &mut Vec<u8>) {
        let tag = self.tag(PING_LABEL, &token_and_counter(token, counter));
        Ping {
            token: *token,
            counter,
            tag,
        }
        .encode(out);
    }

    pub fn verify_ping(&self, ping: &Ping) -> bool {
        self.verify(
            PING_LABEL,
            &token_and_counter(&ping.token, ping.counter),
            &ping.tag,
        )
    }

    /// Encodes the ack to the ping with `counter`, which came from `observed`.
    pub fn ack(
        &self,
        token: &[u8; TOKEN_LEN],
        counter: u64,
        lists: u64,
        observed: SocketAddr,
        out: &mut Vec<u8>,
    ) {
        let mut signed = [0u8; ACK_BODY_LEN - TAG_LEN];
        signed[..PING_SIGNED].copy_from_slice(&token_and_counter(token, counter));
        signed[PING_SIGNED..PING_SIGNED + 8].copy_from_slice(&lists.to_be_bytes());
        signed[PING_SIGNED + 8..].copy_from_slice(&encode_addr(observed));
        Ack {
            token: *token,
            counter,
            lists,
            observed,
            tag: self.tag(ACK_LABEL, &signed),
            signed,
        }
        .encode(out);
    }

    pub fn verify_ack(&self, ack: &Ack) -> bool {
        self.verify(ACK_LABEL, &ack.signed, &ack.tag)
    }

    pub fn wake(&self, token: &[u8; TOKEN_LEN], counter: u64, out: &mut Vec<u8>) {
        let tag = self.tag(WAKE_LABEL, &token_and_counter(token, counter));
        Wake {
            token: *token,
            counter,
            tag,
        }
        .encode(out);
    }

    pub fn verify_wake(&self, wake: &Wake) -> bool {
        self.verify(
            WAKE_LABEL,
            &token_and_counter(&wake.token, wake.counter),
            &wake.tag,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Control, parse_control};

    const TOKEN: [u8; TOKEN_LEN] = [9; TOKEN_LEN];

    #[test]
    fn each_message_round_trips_and_verifies_only_under_its_key() {
        let key = Key::new(&[1; KEY_LEN]);
        let other = Key::new(&[2; KEY_LEN]);
        let mut out = Vec::new();

        key.ping(&TOKEN, 7, &mut out);
        let Ok(Control::ParkedPing(ping)) = parse_control(&out) else {
            panic!("{:?}", parse_control(&out));
        };
        assert_eq!((ping.token, ping.counter), (TOKEN, 7));
        assert!(key.verify_ping(&ping));
        assert!(!other.verify_ping(&ping));
        let ping_len = out.len();

        let observed: SocketAddr = "[2001:db8::1]:4242".parse().unwrap();
        key.ack(&TOKEN, 7, 0xabcd, observed, &mut out);
        assert!(
            out.len() <= ping_len,
            "an ack is never longer than its ping"
        );
        let Ok(Control::ParkedAck(ack)) = parse_control(&out) else {
            panic!("{:?}", parse_control(&out));
        };
        assert_eq!(
            (ack.counter, ack.lists, ack.observed),
            (7, 0xabcd, observed)
        );
        assert!(key.verify_ack(&ack));
        assert!(!other.verify_ack(&ack));

        key.wake(&TOKEN, 3, &mut out);
        let Ok(Control::Wake(wake)) = parse_control(&out) else {
            panic!("{:?}", parse_control(&out));
        };
        assert_eq!(wake.counter, 3);
        assert!(key.verify_wake(&wake));
        assert!(!other.verify_wake(&wake));
    }

    #[test]
    fn a_changed_field_or_a_tag_moved_between_kinds_does_not_verify() {
        let key = Key::new(&[1; KEY_LEN]);
        let mut out = Vec::new();
        key.ping(&TOKEN, 7, &mut out);
        // The counter's last byte: 8 header bytes, the token, then the counter.
        let mut changed = out.clone();
        changed[8 + TOKEN_LEN + 7] ^= 1;
        let Ok(Control::ParkedPing(ping)) = parse_control(&changed) else {
            panic!()
        };
        assert!(!key.verify_ping(&ping));
        // A ping's token, counter and tag as a wake: the labels differ.
        let mut wake = out[..8 + WAKE_BODY_LEN].to_vec();
        wake[4] = crate::wire::KIND_WAKE;
        wake[6..8].copy_from_slice(&(WAKE_BODY_LEN as u16).to_be_bytes());
        let Ok(Control::Wake(wake)) = parse_control(&wake) else {
            panic!()
        };
        assert!(!key.verify_wake(&wake));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let key = Key::new(&[1; KEY_LEN]);
        let mut out = Vec::new();
        key.ping(&TOKEN, 1, &mut out);
        let mut padded = out.clone();
        *padded.last_mut().unwrap() = 1;
        assert!(parse_control(&padded).is_err(), "padding must be zeros");
        out.pop();
        out[7] -= 1;
        assert!(parse_control(&out).is_err(), "a short ping");
        key.ack(&TOKEN, 1, 0, "192.0.2.1:1".parse().unwrap(), &mut out);
        // A family that is neither 4 nor 6.
        out[8 + TOKEN_LEN + 16] = 5;
        assert!(parse_control(&out).is_err());
    }
}
