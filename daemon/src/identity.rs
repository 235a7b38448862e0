//! Loading a daemon's own certificate, keys and trust anchor, and refusing to run on bad ones.

use std::path::Path;

use rma_ca::{CaCert, NodeCert, NodeKeys, RevocationList};
use time::OffsetDateTime;

use crate::config::PkiPaths;

/// The identity and trust anchor a daemon runs with.
#[derive(Debug)]
pub struct Identity {
    pub cert: NodeCert,
    pub keys: NodeKeys,
    pub ca: CaCert,
    pub crl: Option<RevocationList>,
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

/// Reads a node certificate (not yet verified).
pub fn load_cert(path: &Path) -> anyhow::Result<NodeCert> {
    NodeCert::from_bytes(&read(path)?).map_err(named(path))
}

/// Reads a revocation list and checks its signature against `ca`.
pub fn load_crl(path: &Path, ca: &CaCert) -> anyhow::Result<RevocationList> {
    RevocationList::from_bytes(&read(path)?, ca).map_err(named(path))
}

/// Reads the PKI files and checks that they belong together and are trusted at `now`: the key
/// matches the certificate, and the certificate verifies against the CA and revocation list.
pub fn load(pki: &PkiPaths, now: OffsetDateTime) -> anyhow::Result<Identity> {
    let ca = load_ca(&pki.ca)?;
    let cert = load_cert(&pki.cert)?;
    let keys = NodeKeys::from_pem(&read(&pki.key)?).map_err(named(&pki.key))?;
    let crl = match &pki.crl {
        Some(path) => Some(load_crl(path, &ca)?),
        None => None,
    };
    let public = keys.public();
    if public.identity != *cert.identity_key() || Some(&public.wireguard) != cert.wireguard_key() {
        anyhow::bail!(
            "{}: keys do not match the certificate {}",
            pki.key.display(),
            pki.cert.display()
        );
    }
    rma_ca::verify(&cert, &ca, crl.as_ref(), now)
        .map_err(|e| anyhow::anyhow!("{}: not trusted: {e}", pki.cert.display()))?;
    Ok(Identity {
        cert,
        keys,
        ca,
        crl,
    })
}
