//! Join tokens: what an operator hands a new machine so that `meshd join` can enroll it with
//! an issuing CA's enrollment service (`rma-ca serve`).
//!
//! A token reads `rmajoin1_ID_SECRET_ROOT`: a public id (for listing and revoking), a 128-bit
//! secret, and the SHA-256 fingerprint of the root CA, as `kubeadm join
//! --discovery-token-ca-cert-hash` carries it. Only `ID_SECRET` is sent to the service; the
//! root's fingerprint stays on the joining machine, which refuses an answer whose root is any
//! other, so a machine in the middle cannot hand it another CA. The index keeps only the
//! secret's SHA-256.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore as _};
use time::OffsetDateTime;

use crate::ids::Fingerprint;
use crate::names::Group;

const PREFIX: &str = "rmajoin1";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 16;

/// The most refusals kept per token: enough to see what went wrong, never a table that a
/// token holder can grow without bound.
pub const MAX_REFUSALS_KEPT: usize = 16;

/// A token's public id: 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; ID_LEN]);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for TokenId {
    type Err = TokenError;
    fn from_str(text: &str) -> Result<Self, TokenError> {
        hex_array(text).map(Self).ok_or(TokenError::Malformed)
    }
}

/// What the joining machine sends: the id and the secret, `ID_SECRET`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: TokenId,
    secret: [u8; SECRET_LEN],
}

impl Credential {
    /// The SHA-256 of the secret, as the index keeps it.
    pub fn secret_hash(&self) -> [u8; 32] {
        sha256(&self.secret)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}_…)", self.id)
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_", self.id)?;
        self.secret.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Credential {
    type Err = TokenError;
    fn from_str(text: &str) -> Result<Self, TokenError> {
        let (id, secret) = text.split_once('_').ok_or(TokenError::Malformed)?;
        Ok(Self {
            id: id.parse()?,
            secret: hex_array(secret).ok_or(TokenError::Malformed)?,
        })
    }
}

/// A whole token, as `rma-ca token create` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub credential: Credential,
    /// The root CA the joining machine must end up trusting.
    pub root: Fingerprint,
}

impl JoinToken {
    pub fn generate(root: Fingerprint) -> Self {
        let mut id = [0u8; ID_LEN];
        let mut secret = [0u8; SECRET_LEN];
        OsRng.fill_bytes(&mut id);
        OsRng.fill_bytes(&mut secret);
        Self {
            credential: Credential {
                id: TokenId(id),
                secret,
            },
            root,
        }
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({:?}, root {})", self.credential, self.root)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}_{}_{}", self.credential, self.root)
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let rest = text
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(TokenError::Malformed)?;
        let (credential, root) = rest.rsplit_once('_').ok_or(TokenError::Malformed)?;
        Ok(Self {
            credential: credential.parse()?,
            root: root.parse().map_err(|_| TokenError::Malformed)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "not a join token (expected rmajoin1_ID_SECRET_ROOTFINGERPRINT, as `rma-ca token create` prints it)"
    )]
    Malformed,
}

/// What a token allows, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// The groups every certificate issued with it holds.
    pub groups: Vec<Group>,
    /// Names issued with it start with this (a name asked for without it gets it in front).
    pub name_prefix: String,
    /// How many certificates it may issue.
    pub uses: u32,
    pub expires_at: OffsetDateTime,
    /// The bundle (`bundles/NAME.toml` in the CA directory) its machines get.
    pub bundle: String,
}

/// A token's row in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: TokenId,
    pub policy: TokenPolicy,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// Certificates issued with it.
    pub used: u32,
    pub(crate) secret_hash: [u8; 32],
}

/// Whether a token can still issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Usable,
    Expired,
    UsedUp,
    Revoked,
}

impl TokenStatus {
    /// The word `rma-ca token list` shows (and its JSON carries).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::Expired => "expired",
            Self::UsedUp => "used-up",
            Self::Revoked => "revoked",
        }
    }
}

impl TokenRow {
    pub fn status(&self, now: OffsetDateTime) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if now >= self.policy.expires_at {
            TokenStatus::Expired
        } else if self.used >= self.policy.uses {
            TokenStatus::UsedUp
        } else {
            TokenStatus::Usable
        }
    }

    /// Whether `credential`'s secret is this token's, compared in constant time.
    pub fn secret_matches(&self, credential: &Credential) -> bool {
        let given = credential.secret_hash();
        given
            .iter()
            .zip(self.secret_hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// One use of a token, issued or refused, as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    pub at: OffsetDateTime,
    /// The name asked for (or given).
    pub name: String,
    /// The certificate issued; `None` when refused.
    pub fingerprint: Option<Fingerprint>,
    /// `issued`, or why it was refused.
    pub outcome: String,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_their_credential_is_sent() {
        let root = Fingerprint::of(b"root");
        let token = JoinToken::generate(root);
        let text = token.to_string();
        assert!(text.starts_with("rmajoin1_"), "{text}");
        assert_eq!(text.len(), 8 + 1 + 16 + 1 + 32 + 1 + 64);
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert_eq!(format!(" {text}\n").parse::<JoinToken>().unwrap(), token);
        let sent = token.credential.to_string();
        assert!(!sent.contains(&root.to_string()));
        assert_eq!(sent.parse::<Credential>().unwrap(), token.credential);
        // Debug never shows the secret.
        assert!(!format!("{token:?}").contains(&sent[17..]));
        assert_ne!(JoinToken::generate(root), token);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = JoinToken::generate(Fingerprint::of(b"r")).to_string();
        let cut = &good[..good.len() - 2];
        let foreign = good.replacen("rmajoin1", "rmajoin2", 1);
        let non_hex = good.replacen('_', "_zz", 1);
        for bad in ["", "rmajoin1", "rmajoin1___", cut, &foreign, &non_hex, "ü"] {
            assert_eq!(
                bad.parse::<JoinToken>(),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        for bad in ["", "_", "00_11", "0011223344556677", "ééééééééééééééé_00"] {
            assert!(bad.parse::<Credential>().is_err(), "{bad:?}");
        }
    }
}
