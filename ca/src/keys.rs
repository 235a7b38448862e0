//! Key material: a node's Ed25519 identity key and X25519 WireGuard key, and the CA's key.
//!
//! Files use the standard encodings so that `openssl pkey` reads them:
//! - a private key file holds PKCS#8 `PRIVATE KEY` blocks (RFC 8410 form: the key is an OCTET
//!   STRING inside `privateKey`); a node's file holds the Ed25519 block, then the X25519 block;
//! - a public key file holds SubjectPublicKeyInfo `PUBLIC KEY` blocks in the same order.
//!
//! Secrets are zeroized on drop and never appear in `Debug` output.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::asn1::{BitStringRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode};
use ed25519_dalek::{SigningKey, VerifyingKey};
use pkcs8::PrivateKeyInfo;
use rand_core::OsRng;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::encoding::describe_block;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const PRIVATE_KEY_TAG: &str = "PRIVATE KEY";
const PUBLIC_KEY_TAG: &str = "PUBLIC KEY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid PEM: {0}")]
    Pem(String),
    #[error("contains no PEM block")]
    Empty,
    #[error("holds {found}, expected {expected}")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("holds a key of algorithm {oid}; only Ed25519 and X25519 are used")]
    UnsupportedAlgorithm { oid: String },
    #[error("holds more than one {what}")]
    Duplicate { what: &'static str },
    #[error("is missing the {what}")]
    Missing { what: &'static str },
    #[error("the X25519 public key is not a valid WireGuard key: {0}")]
    WireGuardKey(String),
}

/// A WireGuard (X25519) public key. Displays as base64, like `wg pubkey`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireGuardKey(pub [u8; 32]);

impl fmt::Display for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WireGuardKey({self})")
    }
}

impl FromStr for WireGuardKey {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| KeyError::WireGuardKey(e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::WireGuardKey(format!("{} bytes, not 32", b.len())))?;
        Ok(Self(bytes))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Ed25519,
    X25519,
}

impl Algorithm {
    fn from_oid(oid: ObjectIdentifier) -> Result<Self, KeyError> {
        match oid {
            OID_ED25519 => Ok(Self::Ed25519),
            OID_X25519 => Ok(Self::X25519),
            other => Err(KeyError::UnsupportedAlgorithm {
                oid: other.to_string(),
            }),
        }
    }
    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Ed25519 => OID_ED25519,
            Self::X25519 => OID_X25519,
        }
    }
}

/// Parses every PEM block of a key file, requiring all to carry `tag`.
fn key_blocks(
    bytes: &[u8],
    tag: &'static str,
    expected: &'static str,
) -> Result<Vec<pem::Pem>, KeyError> {
    let blocks = pem::parse_many(bytes).map_err(|e| KeyError::Pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(KeyError::Empty);
    }
    if let Some(other) = blocks.iter().find(|b| b.tag() != tag) {
        return Err(KeyError::WrongKind {
            found: describe_block(other.tag()),
            expected,
        });
    }
    Ok(blocks)
}

/// Decodes one PKCS#8 block into its algorithm and 32 secret bytes.
fn decode_private(der: &[u8]) -> Result<(Algorithm, Zeroizing<[u8; 32]>), KeyError> {
    let malformed = |detail: String| KeyError::Malformed {
        what: "PKCS#8 private key",
        detail,
    };
    let info = PrivateKeyInfo::try_from(der).map_err(|e| malformed(e.to_string()))?;
    let algorithm = Algorithm::from_oid(info.algorithm.oid)?;
    let inner = OctetStringRef::from_der(info.private_key).map_err(|e| malformed(e.to_string()))?;
    let secret: [u8; 32] = inner
        .as_bytes()
        .try_into()
        .map_err(|_| malformed(format!("{} key bytes, not 32", inner.as_bytes().len())))?;
    Ok((algorithm, Zeroizing::new(secret)))
}

fn encode_private(algorithm: Algorithm, secret: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    let inner = Zeroizing::new(
        OctetStringRef::new(secret)
            .and_then(|o| o.to_der())
            .expect("a 32-byte OCTET STRING always encodes"),
    );
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: algorithm.oid(),
            parameters: None,
        },
        &inner,
    );
    Zeroizing::new(info.to_der().expect("a PKCS#8 v1 structure always encodes"))
}

fn decode_public(der: &[u8]) -> Result<(Algorithm, [u8; 32]), KeyError> {
    let malformed = |detail: String| KeyError::Malformed {
        what: "public key",
        detail,
    };
    let info = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| malformed(e.to_string()))?;
    let algorithm = Algorithm::from_oid(info.algorithm.oid)?;
    let raw = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed("bit string with unused bits".into()))?;
    let key: [u8; 32] = raw
        .try_into()
        .map_err(|_| malformed(format!("{} key bytes, not 32", raw.len())))?;
    Ok((algorithm, key))
}

fn encode_public(algorithm: Algorithm, key: &[u8; 32]) -> Vec<u8> {
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: algorithm.oid(),
            parameters: None,
        },
        subject_public_key: BitStringRef::from_bytes(key).expect("32 bytes fit a bit string"),
    }
    .to_der()
    .expect("a SubjectPublicKeyInfo always encodes")
}

fn identity_public(key: [u8; 32]) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&key).map_err(|e| KeyError::Malformed {
        what: "Ed25519 public key",
        detail: e.to_string(),
    })
}

/// Picks exactly one Ed25519 and one X25519 key out of decoded blocks.
fn both_halves<T>(decoded: Vec<(Algorithm, T)>) -> Result<(T, T), KeyError> {
    let (mut ed, mut x) = (None, None);
    for (algorithm, key) in decoded {
        let (slot, name) = match algorithm {
            Algorithm::Ed25519 => (&mut ed, "Ed25519 key"),
            Algorithm::X25519 => (&mut x, "X25519 key"),
        };
        if slot.replace(key).is_some() {
            return Err(KeyError::Duplicate { what: name });
        }
    }
    let ed = ed.ok_or(KeyError::Missing {
        what: "Ed25519 identity key",
    })?;
    let x = x.ok_or(KeyError::Missing {
        what: "X25519 WireGuard key",
    })?;
    Ok((ed, x))
}

/// A node's private keys: the Ed25519 identity (certificate subject and QUIC mTLS key) and the
/// X25519 static key of its WireGuard tunnels.
#[derive(Clone)]
pub struct NodeKeys {
    identity: SigningKey,
    wireguard: StaticSecret,
}

impl NodeKeys {
    pub fn generate() -> Self {
        Self {
            identity: SigningKey::generate(&mut OsRng),
            wireguard: StaticSecret::random_from_rng(OsRng),
        }
    }

    /// Builds keys from fixed secret bytes; used for reproducible test fixtures.
    pub fn from_secrets(identity: [u8; 32], wireguard: [u8; 32]) -> Self {
        Self {
            identity: SigningKey::from_bytes(&identity),
            wireguard: StaticSecret::from(wireguard),
        }
    }

    pub fn from_pem(bytes: &[u8]) -> Result<Self, KeyError> {
        const EXPECTED: &str = "a node private key file (Ed25519 and X25519 PRIVATE KEY blocks)";
        let blocks = key_blocks(bytes, PRIVATE_KEY_TAG, EXPECTED)?;
        let decoded = blocks
            .iter()
            .map(|b| decode_private(b.contents()))
            .collect::<Result<Vec<_>, _>>()?;
        let (ed, x) = both_halves(decoded)?;
        Ok(Self {
            identity: SigningKey::from_bytes(&ed),
            wireguard: StaticSecret::from(*x),
        })
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        let identity = encode_private(Algorithm::Ed25519, self.identity.as_bytes());
        let wireguard = encode_private(Algorithm::X25519, self.wireguard.as_bytes());
        Zeroizing::new(pem::encode_many(&[
            pem::Pem::new(PRIVATE_KEY_TAG, identity.to_vec()),
            pem::Pem::new(PRIVATE_KEY_TAG, wireguard.to_vec()),
        ]))
    }

    pub fn public(&self) -> NodePublicKeys {
        NodePublicKeys {
            identity: self.identity.verifying_key(),
            wireguard: WireGuardKey(X25519Public::from(&self.wireguard).to_bytes()),
        }
    }

    pub fn identity(&self) -> &SigningKey {
        &self.identity
    }

    /// The Ed25519 identity key as PKCS#8 DER, the form TLS libraries load.
    pub fn identity_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        encode_private(Algorithm::Ed25519, self.identity.as_bytes())
    }

    pub fn wireguard_secret(&self) -> &StaticSecret {
        &self.wireguard
    }
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// The public half of [`NodeKeys`]: what a node hands to the CA to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePublicKeys {
    pub identity: VerifyingKey,
    pub wireguard: WireGuardKey,
}

impl NodePublicKeys {
    pub fn from_pem(bytes: &[u8]) -> Result<Self, KeyError> {
        const EXPECTED: &str = "a node public key file (Ed25519 and X25519 PUBLIC KEY blocks)";
        let blocks = key_blocks(bytes, PUBLIC_KEY_TAG, EXPECTED)?;
        let decoded = blocks
            .iter()
            .map(|b| decode_public(b.contents()))
            .collect::<Result<Vec<_>, _>>()?;
        let (ed, x) = both_halves(decoded)?;
        Ok(Self {
            identity: identity_public(ed)?,
            wireguard: WireGuardKey(x),
        })
    }

    pub fn to_pem(&self) -> String {
        pem::encode_many(&[
            pem::Pem::new(
                PUBLIC_KEY_TAG,
                encode_public(Algorithm::Ed25519, self.identity.as_bytes()),
            ),
            pem::Pem::new(
                PUBLIC_KEY_TAG,
                encode_public(Algorithm::X25519, &self.wireguard.0),
            ),
        ])
    }
}

/// The CA's Ed25519 signing key.
#[derive(Clone)]
pub struct CaKey(SigningKey);

impl CaKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    /// Builds a key from fixed secret bytes; used for reproducible test fixtures.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&secret))
    }

    pub fn from_pem(bytes: &[u8]) -> Result<Self, KeyError> {
        const EXPECTED: &str = "a CA private key (one Ed25519 PRIVATE KEY block)";
        let blocks = key_blocks(bytes, PRIVATE_KEY_TAG, EXPECTED)?;
        let [block] = blocks.as_slice() else {
            return Err(KeyError::WrongKind {
                found: format!("{} private keys", blocks.len()),
                expected: EXPECTED,
            });
        };
        match decode_private(block.contents())? {
            (Algorithm::Ed25519, secret) => Ok(Self(SigningKey::from_bytes(&secret))),
            (Algorithm::X25519, _) => Err(KeyError::WrongKind {
                found: "an X25519 (WireGuard) key".into(),
                expected: EXPECTED,
            }),
        }
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        let der = encode_private(Algorithm::Ed25519, self.0.as_bytes());
        Zeroizing::new(pem::encode(&pem::Pem::new(PRIVATE_KEY_TAG, der.to_vec())))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// The public key as one Ed25519 `PUBLIC KEY` PEM block: what an issuing CA's holder sends
    /// the root's holder to sign.
    pub fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new(
            PUBLIC_KEY_TAG,
            encode_public(Algorithm::Ed25519, self.verifying_key().as_bytes()),
        ))
    }

    /// Reads a CA public key written by [`CaKey::public_pem`].
    pub fn public_from_pem(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
        const EXPECTED: &str = "a CA public key (one Ed25519 PUBLIC KEY block)";
        let blocks = key_blocks(bytes, PUBLIC_KEY_TAG, EXPECTED)?;
        let [block] = blocks.as_slice() else {
            return Err(KeyError::WrongKind {
                found: format!("{} public keys", blocks.len()),
                expected: EXPECTED,
            });
        };
        match decode_public(block.contents())? {
            (Algorithm::Ed25519, key) => identity_public(key),
            (Algorithm::X25519, _) => Err(KeyError::WrongKind {
                found: "an X25519 (WireGuard) key".into(),
                expected: EXPECTED,
            }),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CaKey").field(&self.verifying_key()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_round_trip() {
        let keys = NodeKeys::generate();
        let again = NodeKeys::from_pem(keys.to_pem().as_bytes()).unwrap();
        assert_eq!(keys.public(), again.public());
        let public = NodePublicKeys::from_pem(keys.public().to_pem().as_bytes()).unwrap();
        assert_eq!(public, keys.public());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let keys = NodeKeys::from_secrets([7; 32], [9; 32]);
        let shown = format!("{keys:?} {:?}", CaKey::from_secret([7; 32]));
        assert!(!shown.contains("7, 7, 7"), "{shown}");
        assert!(!shown.contains("9, 9, 9"), "{shown}");
    }

    #[test]
    fn wrong_kinds_are_named() {
        let keys = NodeKeys::generate();
        let public = keys.public().to_pem();
        let err = NodeKeys::from_pem(public.as_bytes()).unwrap_err();
        assert!(matches!(err, KeyError::WrongKind { ref found, .. } if found == "a public key"));
        let err = NodePublicKeys::from_pem(keys.to_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, KeyError::WrongKind { ref found, .. } if found == "a private key"));
        let err = CaKey::from_pem(keys.to_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, KeyError::WrongKind { .. }), "{err}");
        assert_eq!(NodeKeys::from_pem(b"").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn a_node_key_needs_both_halves() {
        let ca = CaKey::generate();
        let err = NodeKeys::from_pem(ca.to_pem().as_bytes()).unwrap_err();
        assert_eq!(
            err,
            KeyError::Missing {
                what: "X25519 WireGuard key"
            }
        );
        let doubled = format!("{}{}", *ca.to_pem(), *ca.to_pem());
        assert!(matches!(
            NodeKeys::from_pem(doubled.as_bytes()).unwrap_err(),
            KeyError::Duplicate { .. }
        ));
    }

    #[test]
    fn wireguard_key_base64() {
        let key = WireGuardKey([1; 32]);
        assert_eq!(key.to_string().parse::<WireGuardKey>().unwrap(), key);
        assert!("AAAA".parse::<WireGuardKey>().is_err());
        assert!("not base64!".parse::<WireGuardKey>().is_err());
    }
}
