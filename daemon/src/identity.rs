//! Loading a daemon's own certificate, keys and trust anchor, and refusing to run on bad ones.

use std::path::Path;

use rma_ca::{CaCert, NodeCert, NodeKeys, RevocationList, TrustStore};
use time::OffsetDateTime;

use crate::config::PkiPaths;

/// The identity and trust anchor a daemon runs with.
#[derive(Debug)]
pub struct Identity {
    /// The daemon's certificate, with its issuing CA's when one signed it.
    pub cert: NodeCert,
    pub keys: NodeKeys,
    /// The root CA.
    pub ca: CaCert,
    /// The revocation lists in use: the root's and issuing CAs'.
    pub crls: Vec<RevocationList>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn named<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: {e}", path.display())
}

/// Reads a CA certificate.
pub fn load_ca(path: &Path) -> anyhow::Result<CaCert> {
    CaCert::from_bytes(&read(path)?).map_err(named(path))
}

/// Reads a node certificate, and its issuing CA's after it if any (not yet verified).
pub fn load_cert(path: &Path) -> anyhow::Result<NodeCert> {
    NodeCert::from_bytes(&read(path)?).map_err(named(path))
}

/// Reads every revocation list in a file (the root's, and issuing CAs' each with its CA's
/// certificate) and checks each signature against the root `ca`.
pub fn load_crls(path: &Path, ca: &CaCert) -> anyhow::Result<Vec<RevocationList>> {
    RevocationList::read_all(&read(path)?, ca).map_err(named(path))
}

/// Reads the PKI files and checks that they belong together and are trusted at `now`: the key
/// matches the certificate, and the certificate verifies against the CA and revocation list.
pub fn load(pki: &PkiPaths, now: OffsetDateTime) -> anyhow::Result<Identity> {
    let ca = load_ca(&pki.ca)?;
    let cert = load_cert(&pki.cert)?;
    // A key others may read is refused, as ssh refuses one: it may already be another user's.
    let key_pem = rma_ca::files::read_private(&pki.key)?;
    let keys = NodeKeys::from_pem(&key_pem).map_err(named(&pki.key))?;
    let crls = match &pki.crl {
        Some(path) => load_crls(path, &ca)?,
        None => Vec::new(),
    };
    let public = keys.public();
    if public.identity != *cert.identity_key() || Some(&public.wireguard) != cert.wireguard_key() {
        anyhow::bail!(
            "{}: keys do not match the certificate {}",
            pki.key.display(),
            pki.cert.display()
        );
    }
    let trust = TrustStore::with_lists(ca, crls);
    trust
        .check(&cert, now)
        .map_err(|e| anyhow::anyhow!("{}: not trusted: {e}", pki.cert.display()))?;
    Ok(Identity {
        cert,
        keys,
        ca: trust.ca().clone(),
        crls: trust.lists().cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_key_others_may_read_is_refused_naming_the_file_and_its_mode() {
        let pki = rma_ca::test_ca::TestCa::new("ca");
        let (cert, keys) = pki.node("n1", std::net::Ipv4Addr::new(10, 42, 0, 1));
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths {
            ca: dir.path().join("ca.crt"),
            cert: dir.path().join("node.crt"),
            key: dir.path().join("node.key"),
            crl: None,
        };
        std::fs::write(&paths.ca, pki.ca.to_pem()).unwrap();
        std::fs::write(&paths.cert, cert.to_pem()).unwrap();
        std::fs::write(&paths.key, keys.to_pem().as_bytes()).unwrap();
        let chmod = |mode| {
            std::fs::set_permissions(&paths.key, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(0o644);
        let error = load(&paths, pki.start).unwrap_err().to_string();
        assert!(error.contains("node.key"), "{error}");
        assert!(error.contains("mode 0644"), "{error}");
        chmod(0o600);
        assert_eq!(load(&paths, pki.start).unwrap().cert.name().as_str(), "n1");
    }
}
