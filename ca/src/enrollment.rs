//! The enrollment service's decisions, without its HTTP: what `rma-ca serve` answers a join or
//! a renewal with, given the request's bytes and the time.
//!
//! It runs with an issuing CA only, so that the root key stays offline. Work is ordered by
//! cost: a join is parsed and its token looked up (one SHA-256) before any signature is
//! checked, and a renewal's certificate is looked up in the index by fingerprint before its
//! proof is, so that a request costs an Ed25519 verification only if it carries a live token
//! or a live certificate this CA issued (certificates are public: one verification each).

use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use crate::authority::{Authority, AuthorityError, IpChoice, SignRequest, issue_in};
use crate::ca_cert::CaCert;
use crate::crl::RevocationList;
use crate::index::IndexTx;
use crate::issue::{self, CrlParams, IssueError};
use crate::join::{self, Answer, JoinRequest, RenewRequest};
use crate::keys::NodePublicKeys;
use crate::names::NodeName;
use crate::node_cert::NodeCert;
use crate::proof::{self, Signed};
use crate::tokens::{Credential, TokenId, TokenStatus};

/// Certificates issued through the service last this long unless `--cert-duration` says
/// otherwise; meshd renews them at two-thirds of it.
pub const DEFAULT_ENROLLED_VALIDITY: Duration = Duration::days(90);
/// How far a signed request's time may be from the service's clock.
pub const PROOF_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);
/// A certificate may be renewed once this share of its lifetime has passed (meshd renews at
/// two-thirds), so that a node holds at most about two certificates per lifetime.
const RENEWABLE_AFTER: f64 = 0.5;
/// Where bundles live in the CA directory: `bundles/NAME.toml`.
pub const BUNDLES_DIR: &str = "bundles";

/// Why a request was refused, with the HTTP status it is answered with.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the token is not known to this CA (mistyped, or made by another CA)")]
    UnknownToken,
    #[error("the token expired at {}; ask for a new one", crate::timefmt::rfc3339(*at))]
    TokenExpired { at: OffsetDateTime },
    #[error("the token is used up ({uses} of {uses} certificates issued); ask for a new one")]
    TokenUsedUp { uses: u32 },
    #[error("the token was revoked; ask for a new one")]
    TokenRevoked,
    #[error("the request is not signed by the key it asks a certificate for: {0}")]
    Proof(#[from] proof::ProofError),
    #[error(
        "the name {name:?} is already held by a live certificate; join with another --name, or have the operator revoke it"
    )]
    NameTaken { name: String },
    #[error("the certificate was not issued by this CA")]
    NotIssuedHere,
    #[error("the certificate is revoked")]
    Revoked,
    #[error("the certificate expired at {}; join again with a new token", crate::timefmt::rfc3339(*at))]
    Expired { at: OffsetDateTime },
    #[error("too early to renew: a certificate may be renewed from {}", crate::timefmt::rfc3339(*from))]
    TooEarly { from: OffsetDateTime },
    #[error("the name is now held by another key's certificate")]
    Superseded,
    #[error(
        "the issuing CA's certificate ends at {}, so a renewal could not outlast this certificate; the operator must renew the issuing CA",
        crate::timefmt::rfc3339(*ca_not_after)
    )]
    CaEnding { ca_not_after: OffsetDateTime },
    #[error(
        "{0}: the issuing CA may no longer give it; the operator must make a new token within the issuing CA's groups"
    )]
    GroupNotPermitted(IssueError),
    #[error("the CA cannot issue: {0}")]
    Unavailable(AuthorityError),
    #[error("the service is misconfigured: {0}")]
    Internal(String),
}

impl EnrollError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::UnknownToken | Self::Proof(_) => 401,
            Self::TokenExpired { .. }
            | Self::TokenUsedUp { .. }
            | Self::TokenRevoked
            | Self::NotIssuedHere
            | Self::Revoked
            | Self::Expired { .. }
            | Self::GroupNotPermitted(_) => 403,
            Self::NameTaken { .. } | Self::TooEarly { .. } | Self::Superseded => 409,
            Self::Unavailable(_) | Self::CaEnding { .. } => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The short word the index records for a refusal.
    fn outcome(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::UnknownToken => "wrong-secret",
            Self::TokenExpired { .. } => "expired",
            Self::TokenUsedUp { .. } => "used-up",
            Self::TokenRevoked => "revoked",
            Self::Proof(_) => "bad-proof",
            Self::NameTaken { .. } => "name-taken",
            Self::GroupNotPermitted(_) => "group-not-permitted",
            Self::Unavailable(_) => "unavailable",
            _ => "refused",
        }
    }
}

impl From<AuthorityError> for EnrollError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::NameTaken { name, .. } => Self::NameTaken { name },
            AuthorityError::Issue(e @ IssueError::GroupNotPermitted { .. }) => {
                Self::GroupNotPermitted(e)
            }
            AuthorityError::NetworkFull { .. } | AuthorityError::CaExpired { .. } => {
                Self::Unavailable(e)
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::index::IndexError> for EnrollError {
    fn from(e: crate::index::IndexError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// An answer to send: the body and its signature.
#[derive(Debug, Clone)]
pub struct Signed200 {
    pub body: Vec<u8>,
    pub signature: String,
    /// The certificate issued (or served again).
    pub cert: NodeCert,
}

/// The enrollment service's state: an issuing CA, where the other lists are published, and
/// how long certificates last.
#[derive(Debug)]
pub struct Enrollment {
    authority: Authority,
    /// A file of every list the operator publishes (the root's among them), handed to joining
    /// nodes with a fresh list of this CA's.
    lists: Option<PathBuf>,
    /// The file's lists, checked once, with the file's modification time and length when read:
    /// a request costs a `stat`, and signatures are checked again only when the file changes.
    lists_read: Option<(std::time::SystemTime, u64, Vec<RevocationList>)>,
    cert_duration: Duration,
}

/// Reads bundle `name` from `dir`/bundles: a meshd config without its `[pki]` section.
pub fn read_bundle(dir: &Path, name: &str) -> Result<String, String> {
    check_bundle_name(name)?;
    let path = dir.join(BUNDLES_DIR).join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{}: not TOML: {}", path.display(), e.message()))?;
    if table.contains_key("pki") {
        return Err(format!(
            "{}: a bundle has no [pki] section; meshd join writes it",
            path.display()
        ));
    }
    Ok(text)
}

fn check_bundle_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bundle name {name:?}: use ASCII letters, digits, '-' and '_'"
        ))
    }
}

impl Enrollment {
    /// Opens the issuing CA in `dir`; a root is refused, since its key must stay offline.
    pub fn open(
        dir: &Path,
        lists: Option<PathBuf>,
        cert_duration: Duration,
    ) -> Result<Self, AuthorityError> {
        let authority = Authority::open(dir)?;
        if authority.ca().is_self_signed() {
            return Err(AuthorityError::RootOnline {
                dir: dir.to_owned(),
            });
        }
        let mut service = Self {
            authority,
            lists,
            lists_read: None,
            cert_duration,
        };
        service.other_lists().map_err(|e| AuthorityError::Lists {
            path: service.lists.clone().unwrap_or_default(),
            problem: e,
        })?;
        Ok(service)
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The lists in the published file other than this CA's own (a fresh one of which goes
    /// with every answer), read again only when the file has changed.
    fn other_lists(&mut self) -> Result<Vec<RevocationList>, String> {
        let Some(path) = &self.lists else {
            return Ok(Vec::new());
        };
        let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| named(&e))?;
        let stamp = (meta.modified().map_err(|e| named(&e))?, meta.len());
        if let Some((modified, len, lists)) = &self.lists_read
            && (*modified, *len) == stamp
        {
            return Ok(lists.clone());
        }
        let bytes = std::fs::read(path).map_err(|e| named(&e))?;
        let own = self.authority.ca().identity();
        let lists: Vec<RevocationList> = RevocationList::read_all(&bytes, self.authority.root())
            .map_err(|e| named(&e))?
            .into_iter()
            .filter(|l| l.ca_identity() != own)
            .collect();
        self.lists_read = Some((stamp.0, stamp.1, lists.clone()));
        Ok(lists)
    }

    /// Answers a join: a live token, a request signed by the key it names, a free name.
    pub fn join(
        &mut self,
        signed: Signed<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Signed200, EnrollError> {
        let now = whole_seconds(now);
        let request: JoinRequest = serde_json::from_slice(body)
            .map_err(|e| EnrollError::BadRequest(format!("not a join request: {e}")))?;
        let credential: Credential = request
            .token
            .parse()
            .map_err(|e| EnrollError::BadRequest(format!("token: {e}")))?;
        let keys = NodePublicKeys::from_pem(request.public.as_bytes())
            .map_err(|e| EnrollError::BadRequest(format!("public keys: {e}")))?;
        let result = self.join_in(&credential, &request, &keys, signed, body, now);
        // Refusals are recorded only for the token's holder (the secret matched): an id alone
        // is public, and costs no write.
        if let Err(error) = &result
            && !matches!(error, EnrollError::Internal(_) | EnrollError::UnknownToken)
        {
            let tx = self.authority.index.transaction()?;
            tx.record_token_use(credential.id, now, &request.name, None, error.outcome())?;
            tx.commit()?;
        }
        result
    }

    fn join_in(
        &mut self,
        credential: &Credential,
        request: &JoinRequest,
        keys: &NodePublicKeys,
        signed: Signed<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Signed200, EnrollError> {
        let other_lists = self.other_lists().map_err(EnrollError::Internal)?;
        let cert_duration = self.enrolled_validity(now);
        let (signer, index, dir) = Signer::split(&mut self.authority)?;
        let tx = index.transaction()?;
        let token = tx
            .token(credential.id)?
            .filter(|t| t.secret_matches(credential))
            .ok_or(EnrollError::UnknownToken)?;
        match token.status(now) {
            TokenStatus::Usable => {}
            TokenStatus::Expired => {
                return Err(EnrollError::TokenExpired {
                    at: token.policy.expires_at,
                });
            }
            TokenStatus::UsedUp => {
                return Err(EnrollError::TokenUsedUp {
                    uses: token.policy.uses,
                });
            }
            TokenStatus::Revoked => return Err(EnrollError::TokenRevoked),
        }
        proof::verify_request_by(
            &keys.identity,
            "POST",
            join::JOIN_PATH,
            signed,
            body,
            proof::unix_ms(now),
            PROOF_WINDOW,
        )?;
        let prefix = &token.policy.name_prefix;
        let name = if request.name.starts_with(prefix.as_str()) {
            request.name.clone()
        } else {
            format!("{prefix}{}", request.name)
        };
        let name: NodeName = name
            .parse()
            .map_err(|e| EnrollError::BadRequest(format!("name: {e}")))?;
        let config = read_bundle(dir, &token.policy.bundle).map_err(EnrollError::Internal)?;
        let cert = issue_in(
            &tx,
            signer.ca,
            signer.key,
            &SignRequest {
                name,
                ip: IpChoice::Auto,
                groups: token.policy.groups.clone(),
                keys: keys.clone(),
                duration: Some(cert_duration),
                force: false,
            },
            now,
        )?;
        tx.record_token_use(
            credential.id,
            now,
            cert.name().as_str(),
            Some(cert.fingerprint()),
            "issued",
        )?;
        let answer = answer(signer, &tx, &cert, other_lists, config, now)?;
        tx.commit()?;
        Ok(answer)
    }

    /// Answers a renewal: a live certificate this CA issued, past half its lifetime, the
    /// newest of its name, and a request signed by its key. The new certificate has the same
    /// name, mesh IP, groups and keys. Asked again with the certificate just replaced (an
    /// answer lost on the way), the service answers with the replacement again.
    pub fn renew(
        &mut self,
        signed: Signed<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Signed200, EnrollError> {
        let now = whole_seconds(now);
        let request: RenewRequest = serde_json::from_slice(body)
            .map_err(|e| EnrollError::BadRequest(format!("not a renewal request: {e}")))?;
        let cert = NodeCert::from_bytes(request.cert.as_bytes())
            .map_err(|e| EnrollError::BadRequest(format!("certificate: {e}")))?;
        // This CA by identity, so that nodes still presenting its previous certificate renew.
        let own = self.authority.ca().identity();
        if cert.issuing_ca().map(CaCert::identity) != Some(own) {
            return Err(EnrollError::NotIssuedHere);
        }
        let other_lists = self.other_lists().map_err(EnrollError::Internal)?;
        let cert_duration = self.enrolled_validity(now);
        let (signer, index, _) = Signer::split(&mut self.authority)?;
        let tx = index.transaction()?;
        // Only a certificate in the index is one this CA issued: no signature to check first.
        let record = tx
            .find(&cert.fingerprint().to_string())?
            .into_iter()
            .find(|r| r.fingerprint == cert.fingerprint())
            .ok_or(EnrollError::NotIssuedHere)?;
        if record.revoked.is_some() {
            return Err(EnrollError::Revoked);
        }
        if now > record.not_after {
            return Err(EnrollError::Expired {
                at: record.not_after,
            });
        }
        proof::verify_request(
            &cert,
            "POST",
            join::RENEW_PATH,
            signed,
            body,
            proof::unix_ms(now),
            PROOF_WINDOW,
        )?;
        let newest = tx
            .newest_live(cert.name().as_str(), now)?
            .ok_or(EnrollError::Revoked)?;
        let renewed = if newest.fingerprint() == cert.fingerprint() {
            let lifetime = cert.not_after() - cert.not_before();
            let from = cert.not_before() + lifetime * RENEWABLE_AFTER;
            if now < from {
                return Err(EnrollError::TooEarly { from });
            }
            if now + cert_duration <= cert.not_after() {
                return Err(EnrollError::CaEnding {
                    ca_not_after: signer.ca.not_after(),
                });
            }
            let wireguard = cert
                .wireguard_key()
                .copied()
                .ok_or_else(|| EnrollError::BadRequest("no WireGuard key".into()))?;
            issue_in(
                &tx,
                signer.ca,
                signer.key,
                &SignRequest {
                    name: cert.name().clone(),
                    ip: IpChoice::Fixed(cert.mesh_ip()),
                    groups: cert.groups().to_vec(),
                    keys: NodePublicKeys {
                        identity: *cert.identity_key(),
                        wireguard,
                    },
                    duration: Some(cert_duration),
                    // The name and IP are held by the certificate being replaced.
                    force: true,
                },
                now,
            )?
        } else if newest.identity_key() == cert.identity_key() {
            newest
                .with_issuing_ca(signer.ca.clone())
                .map_err(|e| EnrollError::Internal(e.to_string()))?
        } else {
            return Err(EnrollError::Superseded);
        };
        let answer = answer(signer, &tx, &renewed, other_lists, String::new(), now)?;
        tx.commit()?;
        Ok(answer)
    }

    /// The validity of a new certificate: the configured duration, cut to end with the CA.
    fn enrolled_validity(&self, now: OffsetDateTime) -> Duration {
        self.cert_duration
            .min(self.authority.ca().not_after() - now)
            .max(Duration::ZERO)
    }
}

fn whole_seconds(now: OffsetDateTime) -> OffsetDateTime {
    now.replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
}

/// What signs an answer: the issuing CA's fields, borrowed beside its index's transaction.
#[derive(Clone, Copy)]
struct Signer<'a> {
    ca: &'a CaCert,
    key: &'a crate::keys::CaKey,
    root: &'a CaCert,
}

impl<'a> Signer<'a> {
    /// The fields of `authority` apart from its index, which the caller's transaction holds.
    fn split(
        authority: &'a mut Authority,
    ) -> Result<(Self, &'a mut crate::index::Index, &'a Path), EnrollError> {
        let Authority {
            dir,
            ca,
            key,
            index,
            root,
        } = authority;
        let root = root
            .as_ref()
            .ok_or_else(|| EnrollError::Internal("not an issuing CA".into()))?;
        Ok((Self { ca, key, root }, index, dir))
    }
}

/// The signed answer: the certificate with its chain, the root, a fresh list of this CA and
/// the other lists, and the bundle.
fn answer(
    authority: Signer<'_>,
    tx: &IndexTx<'_>,
    cert: &NodeCert,
    other_lists: Vec<RevocationList>,
    config: String,
    now: OffsetDateTime,
) -> Result<Signed200, EnrollError> {
    let own = issue::sign_crl(
        authority.ca,
        authority.key,
        &CrlParams {
            number: tx.next_crl_number()?,
            this_update: now,
            next_update: (now + crate::authority::DEFAULT_CRL_VALIDITY)
                .min(authority.ca.not_after()),
            revoked: tx.revoked()?,
        },
    )
    .map_err(|e| EnrollError::Internal(e.to_string()))?;
    let crl: String = other_lists
        .iter()
        .chain(std::iter::once(&own))
        .map(RevocationList::to_pem)
        .collect();
    let body = serde_json::to_vec(&Answer {
        cert: cert.to_pem(),
        root: authority.root.to_pem(),
        crl,
        config,
    })
    .map_err(|e| EnrollError::Internal(e.to_string()))?;
    let signature = join::sign_answer(authority.key, &body);
    Ok(Signed200 {
        body,
        signature,
        cert: cert.clone(),
    })
}

/// A token's terms, as `rma-ca token create` takes them.
#[derive(Debug, Clone)]
pub struct TokenTerms {
    pub groups: Vec<crate::names::Group>,
    pub name_prefix: String,
    pub uses: u32,
    pub ttl: Duration,
    pub bundle: String,
}

impl Authority {
    /// Makes a token that enrolls up to `terms.uses` machines with this issuing CA, and records
    /// it (its secret hashed). Refused in a root's directory, and for a bundle that is missing
    /// or not one.
    pub fn create_token(
        &mut self,
        terms: &TokenTerms,
        now: OffsetDateTime,
    ) -> Result<crate::tokens::JoinToken, AuthorityError> {
        let Some(root) = &self.root else {
            return Err(AuthorityError::RootOnline {
                dir: self.dir.clone(),
            });
        };
        if terms.uses == 0 || terms.ttl <= Duration::ZERO {
            return Err(AuthorityError::Token(
                "a token needs at least one use and a positive --ttl".into(),
            ));
        }
        if !terms.name_prefix.is_empty() {
            // The prefix must itself begin a valid name.
            format!("{}x", terms.name_prefix)
                .parse::<NodeName>()
                .map_err(|e| AuthorityError::Token(format!("--name-prefix: {e}")))?;
        }
        read_bundle(&self.dir, &terms.bundle).map_err(AuthorityError::Token)?;
        issue::check_groups(&terms.groups, &self.ca)
            .map_err(|e| AuthorityError::Token(format!("--groups: {e}")))?;
        let token = crate::tokens::JoinToken::generate(root.fingerprint());
        let now = whole_seconds(now);
        let policy = crate::tokens::TokenPolicy {
            groups: terms.groups.clone(),
            name_prefix: terms.name_prefix.clone(),
            uses: terms.uses,
            expires_at: now + terms.ttl,
            bundle: terms.bundle.clone(),
        };
        let tx = self.index.transaction()?;
        tx.insert_token(
            token.credential.id,
            &token.credential.secret_hash(),
            &policy,
            now,
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// Revokes the token whose id starts with `prefix`.
    pub fn revoke_token(
        &mut self,
        prefix: &str,
        now: OffsetDateTime,
    ) -> Result<TokenId, AuthorityError> {
        let tx = self.index.transaction()?;
        let token = one_token(&tx, prefix)?;
        if !tx.revoke_token(token.id, whole_seconds(now))? {
            return Err(AuthorityError::Token(format!(
                "token {} is already revoked",
                token.id
            )));
        }
        tx.commit()?;
        Ok(token.id)
    }

    /// The one token whose id starts with `prefix`.
    pub fn token(&mut self, prefix: &str) -> Result<crate::tokens::TokenRow, AuthorityError> {
        let tx = self.index.transaction()?;
        one_token(&tx, prefix)
    }

    pub fn tokens(&self) -> Result<Vec<crate::tokens::TokenRow>, AuthorityError> {
        Ok(self.index.tokens()?)
    }

    pub fn token_uses(&self, id: TokenId) -> Result<Vec<crate::tokens::TokenUse>, AuthorityError> {
        Ok(self.index.token_uses(id)?)
    }
}

/// The one token whose id starts with `prefix`, or why there is not exactly one.
fn one_token(tx: &IndexTx<'_>, prefix: &str) -> Result<crate::tokens::TokenRow, AuthorityError> {
    let mut found = tx.tokens_starting(prefix)?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(AuthorityError::Token(format!(
            "no token has an id starting with {prefix:?}"
        ))),
        n => Err(AuthorityError::Token(format!(
            "{prefix:?} starts {n} token ids; give more digits"
        ))),
    }
}
