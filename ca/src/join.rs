//! The enrollment protocol between `meshd join` (and meshd's renewal) and `rma-ca serve`: what
//! each side sends, and the checks the joining side makes of the answer.
//!
//! Both requests are JSON bodies signed with the node's identity key ([`crate::proof`]), so
//! that a certificate is only ever issued for a key its requester holds. A join carries the
//! token's credential and the node's public keys; a renewal carries the node's current
//! certificate, which is its only authority.
//!
//! Answers are signed by the issuing CA's key over the whole body (header
//! [`ANSWER_SIGNATURE_HEADER`]), and the joining side checks the root in the answer against
//! the fingerprint its token carries, the certificate against that root, and the signature
//! against the certificate's issuer. So an answer is trusted, bundle and all, even where the
//! transport (plain HTTP inside a lab, a TLS proxy) is not.

use std::net::Ipv4Addr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, Verifier as _, VerifyingKey};
use time::OffsetDateTime;

use crate::ca_cert::CaCert;
use crate::crl::RevocationList;
use crate::ids::Fingerprint;
use crate::keys::{CaKey, NodeKeys};
use crate::node_cert::NodeCert;

pub const JOIN_PATH: &str = "/v1/join";
pub const RENEW_PATH: &str = "/v1/renew";
/// `GET`: the root CA's certificate (PEM), which a joining machine checks against its token's
/// fingerprint before it sends the token anywhere.
pub const ROOT_PATH: &str = "/v1/root";
/// The issuing CA's signature over an answer's body (base64 Ed25519).
pub const ANSWER_SIGNATURE_HEADER: &str = "x-rma-ca-signature";
/// The most a request body may hold: a node's public keys, or its certificate chain.
pub const MAX_REQUEST: usize = 16 << 10;

/// Separates answer signatures from every other use of a CA key (certificates, lists).
const ANSWER_DOMAIN: &[u8] = b"rma-mesh enrollment answer v1\0";

#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token's `ID_SECRET`, never its root fingerprint.
    pub token: String,
    /// The name asked for; the token's prefix is put in front when it lacks it.
    pub name: String,
    /// The node's public keys (node.pub).
    pub public: String,
}

/// Never shows the token's secret.
impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.token.split('_').next().unwrap_or_default();
        f.debug_struct("JoinRequest")
            .field("token", &format_args!("{id}_…"))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The node's current certificate, with its issuing CA's (PEM).
    pub cert: String,
}

/// What the service answers a join or a renewal with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The node's certificate and its issuing CA's (PEM).
    pub cert: String,
    /// The root CA's certificate (PEM).
    pub root: String,
    /// Every revocation list the service holds (PEM).
    pub crl: String,
    /// For a join: the bundle, the config every machine joining with this token gets, without
    /// its `[pki]` section. Empty for a renewal.
    pub config: String,
}

/// A refusal's body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    pub error: String,
}

/// The value of [`ANSWER_SIGNATURE_HEADER`] for `body`.
pub fn sign_answer(key: &CaKey, body: &[u8]) -> String {
    let signature = key.signing_key().sign(&answer_message(body));
    STANDARD.encode(signature.to_bytes())
}

fn answer_message(body: &[u8]) -> Vec<u8> {
    [ANSWER_DOMAIN, body].concat()
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer is not an enrollment answer: {0}")]
    Malformed(String),
    #[error(
        "the service's root CA has fingerprint {got}, but the token names {expected}: this is not the CA the token came from (a wrong URL, or a machine in the middle)"
    )]
    WrongRoot {
        expected: Fingerprint,
        got: Fingerprint,
    },
    #[error("the certificate in the answer is not trusted by the root: {0}")]
    Untrusted(#[from] crate::VerifyError),
    #[error("the certificate in the answer is for other keys than this machine's")]
    OtherKeys,
    #[error("the answer is not signed by the CA that issued the certificate")]
    BadSignature,
}

/// An answer that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub cert: NodeCert,
    pub root: CaCert,
    pub lists: Vec<RevocationList>,
    pub config: String,
}

impl Checked {
    pub fn name(&self) -> &str {
        self.cert.name().as_str()
    }

    pub fn mesh_ip(&self) -> Ipv4Addr {
        self.cert.mesh_ip()
    }
}

/// Checks an answer as the joining (or renewing) node must: the root is the one `root`
/// fingerprints, the certificate is trusted by it now (through its issuing CA, against the
/// lists in the answer), it binds `keys`, and the CA that issued it signed the whole body.
pub fn check_answer(
    body: &[u8],
    signature: Option<&[u8]>,
    root: &Fingerprint,
    keys: &NodeKeys,
    now: OffsetDateTime,
) -> Result<Checked, AnswerError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    let malformed =
        |what: &str, e: &dyn std::fmt::Display| AnswerError::Malformed(format!("{what}: {e}"));
    let ca = CaCert::from_bytes(answer.root.as_bytes()).map_err(|e| malformed("root", &e))?;
    if ca.fingerprint() != *root {
        return Err(AnswerError::WrongRoot {
            expected: *root,
            got: ca.fingerprint(),
        });
    }
    let cert =
        NodeCert::from_bytes(answer.cert.as_bytes()).map_err(|e| malformed("certificate", &e))?;
    let lists = if answer.crl.trim().is_empty() {
        Vec::new()
    } else {
        RevocationList::read_all(answer.crl.as_bytes(), &ca).map_err(|e| malformed("crl", &e))?
    };
    let refs: Vec<&RevocationList> = lists.iter().collect();
    crate::verify(&cert, &ca, &refs, now)?;
    let public = keys.public();
    if *cert.identity_key() != public.identity || cert.wireguard_key() != Some(&public.wireguard) {
        return Err(AnswerError::OtherKeys);
    }
    let issuer: &VerifyingKey = cert.issuing_ca().unwrap_or(&ca).public_key();
    let signature = signature
        .filter(|s| s.len() <= 88)
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or(AnswerError::BadSignature)?;
    issuer
        .verify(&answer_message(body), &Signature::from_bytes(&signature))
        .map_err(|_| AnswerError::BadSignature)?;
    Ok(Checked {
        cert,
        root: ca,
        lists,
        config: answer.config,
    })
}
