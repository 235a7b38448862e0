//! A CA directory (`ca.crt`, `ca.key`, `ca.db`) and the rules for issuing from it: unique names
//! and mesh IPs among live certificates, automatic IP allocation, validity inside the CA's,
//! revocation and revocation lists.
//!
//! A root's directory holds its self-signed `ca.crt`. An issuing CA's directory holds its own
//! key, `ca.crt` signed by the root, and the root's certificate as `root.crt`; it is made in
//! three steps so that neither private key leaves its machine: [`Authority::init_issuing`]
//! makes the key and the request `ca.pub`, the root's [`Authority::sign_ca`] signs it, and
//! [`Authority::install_issuing`] puts the certificate in place.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use time::{Duration, OffsetDateTime};

use crate::ca_cert::{CaCert, CaCertError};
use crate::crl::RevocationList;
use crate::files::{FileError, Mode, OutputFiles};
use crate::ids::Serial;
use crate::index::{Index, IndexError, IndexTx, IssuedCert, Status};
use crate::issue::{self, CaParams, CrlParams, IssueError, NodeCertParams};
use crate::keys::{CaKey, KeyError, NodePublicKeys};
use crate::names::{Group, NodeName};
use crate::node_cert::NodeCert;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const INDEX_FILE: &str = "ca.db";
/// In an issuing CA's directory: the root that signed it.
pub const ROOT_CERT_FILE: &str = "root.crt";
/// In an issuing CA's directory before its certificate arrives: the public key to sign.
pub const REQUEST_FILE: &str = "ca.pub";

/// Issuing CAs last a year unless asked otherwise, and never beyond the root.
pub const DEFAULT_ISSUING_VALIDITY: Duration = Duration::days(365);

/// Node certificates last a year unless asked otherwise, and never beyond the CA.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::days(365);
/// Revocation lists are due to be replaced after this long.
pub const DEFAULT_CRL_VALIDITY: Duration = Duration::days(30);
/// New certificates start this far in the past, so peers whose clocks lag accept them: as far
/// as the enrollment service lets a signed request's clock be off
/// ([`crate::enrollment::PROOF_WINDOW`]), so that a node it accepts a join from accepts the
/// certificate it gets.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{}: a CA already exists here; refusing to replace it", path.display())]
    AlreadyInitialised { path: PathBuf },
    #[error("{}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {cause}", path.display())]
    CaCert { path: PathBuf, cause: CaCertError },
    #[error("{}: {cause}", path.display())]
    Key { path: PathBuf, cause: KeyError },
    #[error("{}: key does not match the CA certificate {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: the CA expired at {}; make a new CA", path.display(), crate::timefmt::rfc3339(*not_after))]
    CaExpired {
        path: PathBuf,
        not_after: OffsetDateTime,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error(
        "name {name:?} is already held by a live certificate ({ip}, fingerprint {fingerprint}); revoke it or pass --force"
    )]
    NameTaken {
        name: String,
        ip: Ipv4Addr,
        fingerprint: String,
    },
    #[error(
        "mesh IP {ip} is already held by live certificate {holder:?}; choose another or pass --force"
    )]
    IpTaken { ip: Ipv4Addr, holder: String },
    #[error("network {network} is too small for a mesh; use a /30 or larger")]
    NetworkTooSmall { network: Ipv4Net },
    #[error("no free address left in {network}")]
    NetworkFull { network: Ipv4Net },
    #[error("no certificate named {selector:?} or with a fingerprint starting with it")]
    NotFound { selector: String },
    #[error("every certificate matching {selector:?} is already revoked")]
    AlreadyRevoked { selector: String },
    #[error("fingerprint prefix {selector:?} matches {count} certificates; give more digits")]
    Ambiguous { selector: String, count: usize },
    #[error("{}: {cause}", path.display())]
    IssuingCert { path: PathBuf, cause: CaCertError },
    #[error("{}: not signed by the root CA in {}", cert.display(), root.display())]
    NotFromRoot { cert: PathBuf, root: PathBuf },
    #[error("{}: an issuing CA signs nodes only; sign issuing CAs with the root", dir.display())]
    NotARoot { dir: PathBuf },
    #[error("{}: the certificate is for another key than this directory's ca.key", cert.display())]
    NotThisKey { cert: PathBuf },
    #[error("{}: this is the root CA, whose key stays offline; serve and make tokens with an issuing CA (rma-ca init-issuing)", dir.display())]
    RootOnline { dir: PathBuf },
    #[error("{}: {problem}", path.display())]
    Lists { path: PathBuf, problem: String },
    #[error("{0}")]
    Token(String),
    #[error(
        "network {network} overlaps {other}, the network of live issuing CA {holder:?}; give each CA its own part of the network, or pass --force"
    )]
    NetworkOverlaps {
        network: Ipv4Net,
        other: Ipv4Net,
        holder: String,
    },
    #[error(
        "network {network} holds {ip}, the mesh IP of live certificate {holder:?} from this root; choose a part of the network the root has not given out, or pass --force"
    )]
    NetworkInUse {
        network: Ipv4Net,
        ip: Ipv4Addr,
        holder: String,
    },
    #[error(
        "mesh IP {ip} is in {network}, the network of live issuing CA {holder:?}, which gives those out; choose another or pass --force"
    )]
    IpOfIssuingCa {
        ip: Ipv4Addr,
        network: Ipv4Net,
        holder: String,
    },
}

/// Where a new certificate's mesh IP comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpChoice {
    /// The lowest address in the network that no certificate has ever held.
    Auto,
    Fixed(Ipv4Addr),
}

/// A request to issue a node certificate.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub name: NodeName,
    pub ip: IpChoice,
    pub groups: Vec<Group>,
    pub keys: NodePublicKeys,
    /// `None`: the default, shortened to end with the CA. `Some`: exactly this, or refused.
    pub duration: Option<Duration>,
    /// Allow a name or IP that a live certificate already holds.
    pub force: bool,
}

/// An opened CA directory.
#[derive(Debug)]
pub struct Authority {
    pub(crate) dir: PathBuf,
    pub(crate) ca: CaCert,
    pub(crate) key: CaKey,
    pub(crate) index: Index,
    /// For an issuing CA: the root that signed it.
    pub(crate) root: Option<CaCert>,
}

fn read(path: &Path) -> Result<Vec<u8>, AuthorityError> {
    std::fs::read(path).map_err(|cause| AuthorityError::Read {
        path: path.to_owned(),
        cause,
    })
}

impl Authority {
    /// Creates a new CA in `dir`. Refuses if any of its files already exists.
    pub fn init(
        dir: &Path,
        name: NodeName,
        network: Ipv4Net,
        duration: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        if network.prefix_len() > 30 {
            return Err(AuthorityError::NetworkTooSmall { network });
        }
        let (cert_path, key_path, index_path) = paths(dir);
        for path in [&cert_path, &key_path, &index_path] {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(AuthorityError::AlreadyInitialised { path: path.clone() });
            }
        }
        create_private_dir(dir)?;
        let key = CaKey::generate();
        let now = now
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let ca = issue::self_sign_ca(
            &key,
            &CaParams {
                name,
                network: network.trunc(),
                not_before: now - BACKDATE,
                not_after: now + duration,
                serial: Serial::random(),
                groups: None,
            },
        )?;
        let mut out = OutputFiles::new(false);
        out.stage(&key_path, key.to_pem().as_bytes(), Mode::Private)?;
        out.stage(&cert_path, ca.to_pem().as_bytes(), Mode::Public)?;
        let index = Index::create(&index_path)?;
        if let Err(e) = out.commit() {
            drop(index);
            let _ = std::fs::remove_file(&index_path);
            return Err(e.into());
        }
        Ok(Self {
            dir: dir.to_owned(),
            ca,
            key,
            index,
            root: None,
        })
    }

    /// Starts an issuing CA in `dir`: its key (mode 0600), its index, and `ca.pub`, the public
    /// key for the root's holder to sign with `rma-ca sign-ca`. Refuses if `dir` holds a CA.
    pub fn init_issuing(dir: &Path) -> Result<ed25519_dalek::VerifyingKey, AuthorityError> {
        let (cert_path, key_path, index_path) = paths(dir);
        let request = dir.join(REQUEST_FILE);
        for path in [&cert_path, &key_path, &index_path, &request] {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(AuthorityError::AlreadyInitialised { path: path.clone() });
            }
        }
        create_private_dir(dir)?;
        let key = CaKey::generate();
        let mut out = OutputFiles::new(false);
        out.stage(&key_path, key.to_pem().as_bytes(), Mode::Private)?;
        out.stage(&request, key.public_pem().as_bytes(), Mode::Public)?;
        let index = Index::create(&index_path)?;
        drop(index);
        if let Err(e) = out.commit() {
            let _ = std::fs::remove_file(&index_path);
            return Err(e.into());
        }
        Ok(key.verifying_key())
    }

    /// Puts the certificate the root signed for this directory's key in place, with the root's
    /// certificate beside it: both are checked first (the root self-signed, the certificate
    /// signed by it and for this key). Refuses to replace a certificate unless `force`.
    pub fn install_issuing(
        dir: &Path,
        cert: &[u8],
        root: &[u8],
        force: bool,
    ) -> Result<Self, AuthorityError> {
        let (cert_path, key_path, _) = paths(dir);
        let root_path = dir.join(ROOT_CERT_FILE);
        let (issuing, root) = issuing_and_root(&cert_path, cert, &root_path, root)?;
        let key = read_key(&key_path)?;
        if key.verifying_key() != *issuing.public_key() {
            return Err(AuthorityError::NotThisKey { cert: cert_path });
        }
        let mut out = OutputFiles::new(force);
        out.stage(&cert_path, issuing.to_pem().as_bytes(), Mode::Public)?;
        out.stage(&root_path, root.to_pem().as_bytes(), Mode::Public)?;
        out.commit()?;
        Self::open(dir)
    }

    /// Opens the CA in `dir`, checking that the key belongs to the certificate and, for an
    /// issuing CA, that the root in `root.crt` signed it.
    pub fn open(dir: &Path) -> Result<Self, AuthorityError> {
        let (cert_path, key_path, index_path) = paths(dir);
        let cert = read(&cert_path)?;
        let ca_error = |cause| AuthorityError::CaCert {
            path: cert_path.clone(),
            cause,
        };
        let (ca, root) = match CaCert::from_bytes(&cert) {
            Ok(ca) => (ca, None),
            Err(CaCertError::NotSelfSigned) => {
                let root_path = dir.join(ROOT_CERT_FILE);
                let (ca, root) =
                    issuing_and_root(&cert_path, &cert, &root_path, &read(&root_path)?)?;
                (ca, Some(root))
            }
            Err(cause) => return Err(ca_error(cause)),
        };
        let key = read_key(&key_path)?;
        if key.verifying_key() != *ca.public_key() {
            return Err(AuthorityError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let index = Index::open(&index_path)?;
        Ok(Self {
            dir: dir.to_owned(),
            ca,
            key,
            index,
            root,
        })
    }

    pub fn ca(&self) -> &CaCert {
        &self.ca
    }

    /// The root: this CA itself, or the root that signed this issuing CA.
    pub fn root(&self) -> &CaCert {
        self.root.as_ref().unwrap_or(&self.ca)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs an issuing CA for `public` with this root and records it: path length 0, `network`
    /// inside the root's, valid for `duration` (default a year, shortened to end with the root;
    /// a duration given that outlives the root is refused). Its name is unique among live
    /// certificates unless `force`. `persist` runs before the index commits.
    pub fn sign_ca(
        &mut self,
        public: &ed25519_dalek::VerifyingKey,
        scope: IssuingScope,
        duration: Option<Duration>,
        force: bool,
        now: OffsetDateTime,
        persist: impl FnOnce(&CaCert) -> Result<(), FileError>,
    ) -> Result<CaCert, AuthorityError> {
        let IssuingScope {
            name,
            network,
            groups: scope_groups,
        } = scope;
        if self.root.is_some() {
            return Err(AuthorityError::NotARoot {
                dir: self.dir.clone(),
            });
        }
        self.ensure_ca_valid(now)?;
        let now = now
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let not_after = match duration {
            Some(duration) => now + duration,
            None => (now + DEFAULT_ISSUING_VALIDITY).min(self.ca.not_after()),
        };
        let tx = self.index.transaction()?;
        if !force && let Some(holder) = tx.live_with_name(name.as_str(), now)?.first() {
            return Err(AuthorityError::NameTaken {
                name: holder.name.clone(),
                ip: holder.mesh_ip,
                fingerprint: holder.fingerprint.to_string(),
            });
        }
        if !force {
            check_network_free(&tx, network, public, now)?;
        }
        let issuing = issue::sign_issuing_ca(
            &self.ca,
            &self.key,
            public,
            &CaParams {
                name,
                network,
                not_before: (now - BACKDATE).max(self.ca.not_before()),
                not_after,
                serial: Serial::random(),
                groups: scope_groups,
            },
        )?;
        tx.record_ca(&issuing, now)?;
        persist(&issuing)?;
        tx.commit()?;
        Ok(issuing)
    }

    pub fn list(&self) -> Result<Vec<IssuedCert>, AuthorityError> {
        Ok(self.index.list()?)
    }

    fn ensure_ca_valid(&self, now: OffsetDateTime) -> Result<(), AuthorityError> {
        if now > self.ca.not_after() {
            return Err(AuthorityError::CaExpired {
                path: self.dir.join(CA_CERT_FILE),
                not_after: self.ca.not_after(),
            });
        }
        Ok(())
    }

    /// Issues a node certificate and records it. `persist` runs after the certificate is made
    /// and before the index commits: if it fails, nothing is recorded.
    pub fn sign(
        &mut self,
        request: &SignRequest,
        now: OffsetDateTime,
        persist: impl FnOnce(&NodeCert) -> Result<(), FileError>,
    ) -> Result<NodeCert, AuthorityError> {
        self.ensure_ca_valid(now)?;
        let now = now
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let tx = self.index.transaction()?;
        let cert = issue_in(&tx, &self.ca, &self.key, request, now)?;
        persist(&cert)?;
        tx.commit()?;
        Ok(cert)
    }

    /// Revokes every unrevoked certificate named `selector`, or the one whose fingerprint starts
    /// with it. Returns what was revoked.
    pub fn revoke(
        &mut self,
        selector: &str,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<IssuedCert>, AuthorityError> {
        let tx = self.index.transaction()?;
        let matches = tx.find(selector)?;
        let by_name = matches.iter().any(|c| c.name == selector);
        if !by_name && matches.len() > 1 {
            return Err(AuthorityError::Ambiguous {
                selector: selector.to_owned(),
                count: matches.len(),
            });
        }
        let found_any = !matches.is_empty();
        let targets: Vec<IssuedCert> = matches
            .into_iter()
            .filter(|c| c.status(now) != Status::Revoked)
            .collect();
        if targets.is_empty() {
            let selector = selector.to_owned();
            return Err(if found_any {
                AuthorityError::AlreadyRevoked { selector }
            } else {
                AuthorityError::NotFound { selector }
            });
        }
        let now = now
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        for cert in &targets {
            tx.mark_revoked(&cert.serial, now, reason)?;
        }
        tx.commit()?;
        Ok(targets)
    }

    /// Signs a revocation list of every revoked certificate, valid for `duration`. `persist`
    /// runs before the CRL number is committed.
    pub fn crl(
        &mut self,
        now: OffsetDateTime,
        duration: Duration,
        persist: impl FnOnce(&RevocationList) -> Result<(), FileError>,
    ) -> Result<RevocationList, AuthorityError> {
        self.ensure_ca_valid(now)?;
        let now = now
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let tx = self.index.transaction()?;
        let crl = issue::sign_crl(
            &self.ca,
            &self.key,
            &CrlParams {
                number: tx.next_crl_number()?,
                this_update: now,
                next_update: (now + duration).min(self.ca.not_after()),
                revoked: tx.revoked()?,
            },
        )?;
        persist(&crl)?;
        tx.commit()?;
        Ok(crl)
    }
}

/// Issues a node certificate inside `tx` and records it there: unique name and IP among live
/// certificates (unless forced), automatic allocation, validity inside the CA's. `now` has no
/// fraction of a second.
pub(crate) fn issue_in(
    tx: &IndexTx<'_>,
    ca: &CaCert,
    key: &CaKey,
    request: &SignRequest,
    now: OffsetDateTime,
) -> Result<NodeCert, AuthorityError> {
    // A short certificate (an enrolled one renewed every few minutes in a test) is backdated
    // by a tenth of its life at most, so that its lifetime is what was asked for.
    let backdate = request.duration.map_or(BACKDATE, |d| BACKDATE.min(d / 10));
    let not_before = (now - backdate).max(ca.not_before());
    let not_after = match request.duration {
        Some(duration) => now + duration,
        None => (now + DEFAULT_NODE_VALIDITY).min(ca.not_after()),
    };
    let network = ca.network();
    // A root leaves its issuing CAs' networks to them.
    let delegated = if ca.is_self_signed() {
        tx.live_issuing(now)?
    } else {
        Vec::new()
    };
    if !request.force
        && let Some(holder) = tx.live_with_name(request.name.as_str(), now)?.first()
    {
        return Err(AuthorityError::NameTaken {
            name: holder.name.clone(),
            ip: holder.mesh_ip,
            fingerprint: holder.fingerprint.to_string(),
        });
    }
    let mesh_ip = match request.ip {
        IpChoice::Auto => {
            let skip: Vec<Ipv4Net> = delegated.iter().map(CaCert::network).collect();
            tx.next_free_ip(network, &skip)?
                .ok_or(AuthorityError::NetworkFull { network })?
        }
        IpChoice::Fixed(ip) => {
            issue::check_mesh_ip(ip, network)?;
            if !request.force
                && let Some(holder) = delegated.iter().find(|c| c.network().contains(&ip))
            {
                return Err(AuthorityError::IpOfIssuingCa {
                    ip,
                    network: holder.network(),
                    holder: holder.name().to_owned(),
                });
            }
            if !request.force
                && let Some(holder) = tx.live_with_ip(ip, now)?.first()
            {
                return Err(AuthorityError::IpTaken {
                    ip,
                    holder: holder.name.clone(),
                });
            }
            ip
        }
    };
    let cert = issue::sign_node(
        ca,
        key,
        &NodeCertParams {
            name: request.name.clone(),
            mesh_ip,
            groups: request.groups.clone(),
            keys: request.keys.clone(),
            not_before,
            not_after,
            serial: Serial::random(),
        },
    )?;
    tx.record(&cert, now)?;
    Ok(cert)
}

/// Refuses an issuing CA's network that overlaps another live issuing CA's (one for the same
/// key, being renewed, may keep its network) or holds a mesh IP of a live node certificate
/// from this root.
fn check_network_free(
    tx: &IndexTx<'_>,
    network: Ipv4Net,
    public: &ed25519_dalek::VerifyingKey,
    now: OffsetDateTime,
) -> Result<(), AuthorityError> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    for other in tx.live_issuing(now)? {
        if other.public_key() != public && overlaps(&network, &other.network()) {
            return Err(AuthorityError::NetworkOverlaps {
                network,
                other: other.network(),
                holder: other.name().to_owned(),
            });
        }
    }
    let live_nodes = tx.live_in(network, now)?;
    if let Some(node) = live_nodes.first() {
        return Err(AuthorityError::NetworkInUse {
            network,
            ip: node.mesh_ip,
            holder: node.name.clone(),
        });
    }
    Ok(())
}

/// What an issuing CA is signed for: its name, its part of the root's network, and the only
/// groups it may give (`None`: any).
#[derive(Debug, Clone)]
pub struct IssuingScope {
    pub name: NodeName,
    pub network: Ipv4Net,
    pub groups: Option<Vec<Group>>,
}

/// Creates the CA directory, readable by its owner only, if it does not exist yet.
fn create_private_dir(dir: &Path) -> Result<(), AuthorityError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|cause| {
            FileError::Io {
                path: dir.to_owned(),
                cause,
            }
            .into()
        })
}

/// An issuing CA's certificate and the root's, read and checked to belong together.
fn issuing_and_root(
    cert_path: &Path,
    cert: &[u8],
    root_path: &Path,
    root: &[u8],
) -> Result<(CaCert, CaCert), AuthorityError> {
    let root = CaCert::from_bytes(root).map_err(|cause| AuthorityError::CaCert {
        path: root_path.to_owned(),
        cause,
    })?;
    let issuing =
        CaCert::issuing_from_bytes(cert).map_err(|cause| AuthorityError::IssuingCert {
            path: cert_path.to_owned(),
            cause,
        })?;
    if !issuing.issued_by(&root) {
        return Err(AuthorityError::NotFromRoot {
            cert: cert_path.to_owned(),
            root: root_path.to_owned(),
        });
    }
    Ok((issuing, root))
}

fn read_key(path: &Path) -> Result<CaKey, AuthorityError> {
    let pem = crate::files::read_private(path)?;
    CaKey::from_pem(&pem).map_err(|cause| AuthorityError::Key {
        path: path.to_owned(),
        cause,
    })
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(CA_CERT_FILE),
        dir.join(CA_KEY_FILE),
        dir.join(INDEX_FILE),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use time::macros::datetime;

    use super::*;
    use crate::{NodeKeys, RevocationList, verify};

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    /// An issuing CA's scope with no groups constraint.
    fn scope(name: NodeName, network: Ipv4Net) -> IssuingScope {
        IssuingScope {
            name,
            network,
            groups: None,
        }
    }

    fn new_ca(network: &str) -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(
            dir.path(),
            "lab".parse().unwrap(),
            network.parse().unwrap(),
            Duration::days(730),
            NOW,
        )
        .unwrap();
        (dir, ca)
    }

    fn request(name: &str) -> SignRequest {
        SignRequest {
            name: name.parse().unwrap(),
            ip: IpChoice::Auto,
            groups: Group::parse_list("workers").unwrap(),
            keys: NodeKeys::generate().public(),
            duration: None,
            force: false,
        }
    }

    fn sign(ca: &mut Authority, request: &SignRequest) -> Result<NodeCert, AuthorityError> {
        ca.sign(request, NOW, |_| Ok(()))
    }

    #[test]
    fn init_writes_three_files_once() {
        let (dir, ca) = new_ca("10.1.0.0/16");
        let mode = |f: &str| {
            std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(ca.ca().network().to_string(), "10.1.0.0/16");
        let before = std::fs::read(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = Authority::init(
            dir.path(),
            "lab".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
            Duration::days(1),
            NOW,
        )
        .unwrap_err();
        assert!(
            matches!(err, AuthorityError::AlreadyInitialised { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.path().join(CA_KEY_FILE)).unwrap(), before);
        assert!(Authority::open(dir.path()).is_ok());
    }

    #[test]
    fn auto_ips_are_never_handed_out_twice() {
        let (_dir, mut ca) = new_ca("10.1.0.0/16");
        let a = sign(&mut ca, &request("a")).unwrap();
        let b = sign(&mut ca, &request("b")).unwrap();
        assert_eq!(a.mesh_ip().to_string(), "10.1.0.1");
        assert_eq!(b.mesh_ip().to_string(), "10.1.0.2");
        ca.revoke("a", Some("decommissioned"), NOW).unwrap();
        let c = sign(&mut ca, &request("c")).unwrap();
        assert_eq!(
            c.mesh_ip().to_string(),
            "10.1.0.3",
            "revoked IPs stay retired"
        );
        let fixed = SignRequest {
            ip: IpChoice::Fixed("10.1.0.5".parse().unwrap()),
            ..request("d")
        };
        sign(&mut ca, &fixed).unwrap();
        assert_eq!(
            sign(&mut ca, &request("e")).unwrap().mesh_ip().to_string(),
            "10.1.0.4"
        );
        assert_eq!(
            sign(&mut ca, &request("f")).unwrap().mesh_ip().to_string(),
            "10.1.0.6"
        );
    }

    #[test]
    fn a_small_network_fills_up() {
        let (_dir, mut ca) = new_ca("10.1.0.0/30");
        sign(&mut ca, &request("a")).unwrap();
        sign(&mut ca, &request("b")).unwrap();
        let err = sign(&mut ca, &request("c")).unwrap_err();
        assert!(matches!(err, AuthorityError::NetworkFull { .. }), "{err}");
    }

    #[test]
    fn names_and_ips_are_unique_among_live_certificates_unless_forced() {
        let (_dir, mut ca) = new_ca("10.1.0.0/16");
        sign(&mut ca, &request("a")).unwrap();
        let err = sign(&mut ca, &request("a")).unwrap_err();
        assert!(matches!(err, AuthorityError::NameTaken { .. }), "{err}");
        let taken = SignRequest {
            ip: IpChoice::Fixed("10.1.0.1".parse().unwrap()),
            ..request("b")
        };
        let err = sign(&mut ca, &taken).unwrap_err();
        assert!(
            matches!(err, AuthorityError::IpTaken { ref holder, .. } if holder == "a"),
            "{err}"
        );
        sign(
            &mut ca,
            &SignRequest {
                force: true,
                ..taken
            },
        )
        .unwrap();
        sign(
            &mut ca,
            &SignRequest {
                force: true,
                ..request("a")
            },
        )
        .unwrap();
        assert_eq!(ca.list().unwrap().len(), 3);
        // An expired certificate no longer holds its name.
        let short = SignRequest {
            duration: Some(Duration::hours(1)),
            ..request("brief")
        };
        ca.sign(&short, NOW, |_| Ok(())).unwrap();
        ca.sign(&request("brief"), NOW + Duration::hours(2), |_| Ok(()))
            .unwrap();
    }

    #[test]
    fn ips_must_be_hosts_in_the_network() {
        let (_dir, mut ca) = new_ca("10.1.0.0/16");
        for (ip, expected) in [
            ("10.2.0.1", "outside"),
            ("10.1.0.0", "network or broadcast"),
            ("10.1.255.255", "network or broadcast"),
        ] {
            let req = SignRequest {
                ip: IpChoice::Fixed(ip.parse().unwrap()),
                ..request("x")
            };
            let err = sign(&mut ca, &req).unwrap_err();
            assert!(err.to_string().contains(expected), "{ip}: {err}");
        }
        assert!(ca.list().unwrap().is_empty());
    }

    #[test]
    fn validity_stays_inside_the_ca() {
        let (_dir, mut ca) = new_ca("10.1.0.0/16");
        let cert = sign(&mut ca, &request("a")).unwrap();
        assert_eq!(cert.not_after(), NOW + DEFAULT_NODE_VALIDITY);
        assert_eq!(cert.not_before(), NOW - BACKDATE);
        let near_end = NOW + Duration::days(700);
        let capped = ca.sign(&request("b"), near_end, |_| Ok(())).unwrap();
        assert_eq!(capped.not_after(), ca.ca().not_after());
        let too_long = SignRequest {
            duration: Some(Duration::days(800)),
            ..request("c")
        };
        let err = sign(&mut ca, &too_long).unwrap_err();
        assert!(
            matches!(err, AuthorityError::Issue(IssueError::OutlivesCa { .. })),
            "{err}"
        );
        let err = ca
            .sign(&request("d"), NOW + Duration::days(731), |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, AuthorityError::CaExpired { .. }), "{err}");
    }

    #[test]
    fn a_failed_write_records_nothing() {
        let (_dir, mut ca) = new_ca("10.1.0.0/16");
        let err = ca
            .sign(&request("a"), NOW, |_| {
                Err(FileError::Exists {
                    path: "node.crt".into(),
                })
            })
            .unwrap_err();
        assert!(matches!(err, AuthorityError::File(_)));
        assert!(ca.list().unwrap().is_empty());
        assert_eq!(
            sign(&mut ca, &request("a")).unwrap().mesh_ip().to_string(),
            "10.1.0.1"
        );
    }

    #[test]
    fn a_foreign_key_is_refused() {
        let (dir, _ca) = new_ca("10.1.0.0/16");
        std::fs::write(
            dir.path().join(CA_KEY_FILE),
            CaKey::generate().to_pem().as_bytes(),
        )
        .unwrap();
        let err = Authority::open(dir.path()).unwrap_err();
        assert!(matches!(err, AuthorityError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn revocation_reaches_the_list() {
        let (_dir, mut ca) = new_ca("10.1.0.0/16");
        let a = sign(&mut ca, &request("a")).unwrap();
        let b = sign(&mut ca, &request("b")).unwrap();
        let err = ca.revoke("nobody", None, NOW).unwrap_err();
        assert!(matches!(err, AuthorityError::NotFound { .. }), "{err}");
        let prefix = &b.fingerprint().to_string()[..12];
        let revoked = ca.revoke(prefix, Some("lost laptop"), NOW).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].name, "b");
        let err = ca.revoke("b", None, NOW).unwrap_err();
        assert!(
            matches!(err, AuthorityError::AlreadyRevoked { .. }),
            "{err}"
        );
        let err = ca.revoke(prefix, None, NOW).unwrap_err();
        assert!(
            matches!(err, AuthorityError::AlreadyRevoked { .. }),
            "{err}"
        );

        let first = ca.crl(NOW, DEFAULT_CRL_VALIDITY, |_| Ok(())).unwrap();
        let second = ca.crl(NOW, DEFAULT_CRL_VALIDITY, |_| Ok(())).unwrap();
        assert!(second.number() > first.number());
        assert_eq!(second.len(), 1);
        assert!(verify(&a, ca.ca(), &[&second], NOW).is_ok());
        assert!(matches!(
            verify(&b, ca.ca(), &[&second], NOW),
            Err(crate::VerifyError::Revoked { .. })
        ));
        let listed = ca.list().unwrap();
        let b_row = listed.iter().find(|c| c.name == "b").unwrap();
        assert_eq!(b_row.status(NOW), Status::Revoked);
        assert_eq!(
            b_row.revoked.as_ref().unwrap().reason.as_deref(),
            Some("lost laptop")
        );
    }

    /// The three steps of an issuing CA, each on its own machine: neither key moves.
    #[test]
    fn an_issuing_ca_is_made_signed_installed_and_revoked() {
        let (_root_dir, mut root) = new_ca("10.1.0.0/16");
        let issuing_dir = tempfile::tempdir().unwrap();
        let dir = issuing_dir.path().join("issuing");
        let public = Authority::init_issuing(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let request_pem = std::fs::read(dir.join(REQUEST_FILE)).unwrap();
        assert_eq!(CaKey::public_from_pem(&request_pem).unwrap(), public);
        assert!(matches!(
            Authority::init_issuing(&dir).unwrap_err(),
            AuthorityError::AlreadyInitialised { .. }
        ));
        assert!(Authority::open(&dir).is_err(), "no certificate yet");

        let network: Ipv4Net = "10.1.128.0/17".parse().unwrap();
        let name: NodeName = "enroll".parse().unwrap();
        let err = root
            .sign_ca(
                &public,
                scope(name.clone(), "10.2.0.0/16".parse().unwrap()),
                None,
                false,
                NOW,
                |_| Ok(()),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuthorityError::Issue(IssueError::NetworkOutsideRoot { .. })
            ),
            "{err}"
        );
        let cert = root
            .sign_ca(
                &public,
                scope(name.clone(), network),
                None,
                false,
                NOW,
                |_| Ok(()),
            )
            .unwrap();
        assert_eq!(cert.not_after(), NOW + DEFAULT_ISSUING_VALIDITY);
        let err = root
            .sign_ca(&public, scope(name, network), None, false, NOW, |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, AuthorityError::NameTaken { .. }), "{err}");

        // The wrong root, or a certificate for another key, is refused at install.
        let (_elsewhere_dir, elsewhere) = new_ca("10.1.0.0/16");
        let err = Authority::install_issuing(
            &dir,
            cert.to_pem().as_bytes(),
            elsewhere.ca().to_pem().as_bytes(),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, AuthorityError::NotFromRoot { .. }), "{err}");
        // (Forced: it overlaps enroll's network, as a certificate for the wrong key would.)
        let stranger = root
            .sign_ca(
                &CaKey::generate().verifying_key(),
                scope("stranger".parse().unwrap(), network),
                None,
                true,
                NOW,
                |_| Ok(()),
            )
            .unwrap();
        let err = Authority::install_issuing(
            &dir,
            stranger.to_pem().as_bytes(),
            root.ca().to_pem().as_bytes(),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, AuthorityError::NotThisKey { .. }), "{err}");

        let mut issuing = Authority::install_issuing(
            &dir,
            cert.to_pem().as_bytes(),
            root.ca().to_pem().as_bytes(),
            false,
        )
        .unwrap();
        assert_eq!(issuing.root(), root.ca());
        let reopened = Authority::open(&dir).unwrap();
        assert_eq!(reopened.ca(), &cert);
        let node = sign(&mut issuing, &request("n1")).unwrap();
        assert_eq!(node.mesh_ip().to_string(), "10.1.128.1");
        assert_eq!(node.issuing_ca(), Some(&cert));
        assert_eq!(verify(&node, root.ca(), &[], NOW), Ok(()));
        let err = issuing
            .sign_ca(
                &public,
                scope("deeper".parse().unwrap(), network),
                None,
                false,
                NOW,
                |_| Ok(()),
            )
            .unwrap_err();
        assert!(matches!(err, AuthorityError::NotARoot { .. }), "{err}");

        // The root revokes the issuing CA by name; its list then refuses the node's chain.
        let listed = root.list().unwrap();
        let row = listed.iter().find(|c| c.name == "enroll").unwrap();
        assert_eq!(row.network, Some(network));
        root.revoke("enroll", Some("retired"), NOW).unwrap();
        let root_list = root.crl(NOW, DEFAULT_CRL_VALIDITY, |_| Ok(())).unwrap();
        assert!(matches!(
            verify(&node, root.ca(), &[&root_list], NOW),
            Err(crate::VerifyError::Issuer { .. })
        ));
        // The issuing CA's own list travels with its certificate.
        issuing.revoke("n1", None, NOW).unwrap();
        let own = issuing.crl(NOW, DEFAULT_CRL_VALIDITY, |_| Ok(())).unwrap();
        assert_eq!(own.issuing_ca(), Some(&cert));
        let read = RevocationList::read_all(own.to_pem().as_bytes(), root.ca()).unwrap();
        assert_eq!(read, vec![own]);
    }

    #[test]
    fn issuing_cas_get_networks_of_their_own_and_the_root_leaves_them_alone() {
        let (_dir, mut root) = new_ca("10.1.0.0/28");
        let early = sign(&mut root, &request("early")).unwrap();
        assert_eq!(early.mesh_ip(), Ipv4Addr::new(10, 1, 0, 1));
        let key_a = CaKey::generate().verifying_key();
        let key_b = CaKey::generate().verifying_key();
        let sign_ca = |root: &mut Authority, key, name: &str, net: &str, force| {
            root.sign_ca(
                key,
                scope(name.parse().unwrap(), net.parse().unwrap()),
                None,
                force,
                NOW,
                |_| Ok(()),
            )
        };
        // A network holding a live node of the root's is refused.
        let err = sign_ca(&mut root, &key_a, "a", "10.1.0.0/30", false).unwrap_err();
        assert!(matches!(err, AuthorityError::NetworkInUse { .. }), "{err}");
        sign_ca(&mut root, &key_a, "a", "10.1.0.4/30", false).unwrap();
        // Another CA overlapping it, inside or around, is refused unless forced.
        for net in ["10.1.0.4/31", "10.1.0.0/28"] {
            let err = sign_ca(&mut root, &key_b, "b", net, false).unwrap_err();
            assert!(
                matches!(err, AuthorityError::NetworkOverlaps { .. }),
                "{net}: {err}"
            );
        }
        // The same CA renewed (same key) keeps its network; its name needs --force.
        sign_ca(&mut root, &key_a, "a", "10.1.0.4/30", true).unwrap();
        // The root's own allocation skips the issuing CA's network, and a fixed IP in it is
        // refused.
        let ips: Vec<Ipv4Addr> = ["n2", "n3", "n4"]
            .iter()
            .map(|n| sign(&mut root, &request(n)).unwrap().mesh_ip())
            .collect();
        assert_eq!(
            ips,
            [
                Ipv4Addr::new(10, 1, 0, 2),
                Ipv4Addr::new(10, 1, 0, 3),
                Ipv4Addr::new(10, 1, 0, 8)
            ]
        );
        let mut fixed = request("n5");
        fixed.ip = IpChoice::Fixed(Ipv4Addr::new(10, 1, 0, 5));
        let err = sign(&mut root, &fixed).unwrap_err();
        assert!(matches!(err, AuthorityError::IpOfIssuingCa { .. }), "{err}");
        // Revoked, the CA gives its network back.
        root.revoke("a", None, NOW).unwrap();
        sign(&mut root, &fixed).unwrap();
    }

    #[test]
    fn a_version_1_index_is_upgraded_to_tokens_when_opened() {
        let (dir, ca) = new_ca("10.1.0.0/16");
        drop(ca);
        let path = dir.path().join(INDEX_FILE);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE token_uses; DROP TABLE tokens; ALTER TABLE certs DROP COLUMN network; \
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let mut ca = Authority::open(dir.path()).unwrap();
        sign(&mut ca, &request("a")).unwrap();
        assert_eq!(ca.list().unwrap()[0].network, None);
        assert!(ca.tokens().unwrap().is_empty(), "the token tables exist");
        drop(ca);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }

    #[test]
    fn a_version_2_index_gets_the_token_tables_when_opened() {
        let (dir, ca) = new_ca("10.1.0.0/16");
        drop(ca);
        let path = dir.path().join(INDEX_FILE);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE token_uses; DROP TABLE tokens; PRAGMA user_version = 2;")
            .unwrap();
        drop(conn);
        let ca = Authority::open(dir.path()).unwrap();
        assert!(ca.tokens().unwrap().is_empty());
        assert_eq!(ca.list().unwrap().len(), 0);
    }
}
