//! `rma-ca revoke` and `crl`.

use std::path::Path;

use std::path::PathBuf;

use rma_ca::RevocationList;
use rma_ca::authority::Authority;
use rma_ca::files::{Mode, OutputFiles};
use rma_ca::timefmt::rfc3339;
use time::{Duration, OffsetDateTime};

use super::{named, read};

pub fn revoke(
    dir: &Path,
    selector: &str,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let mut authority = Authority::open(dir)?;
    for cert in authority.revoke(selector, reason, now)? {
        println!(
            "revoked {} ({}), fingerprint {}",
            cert.name, cert.mesh_ip, cert.fingerprint
        );
    }
    println!(
        "publish the change: rma-ca crl --dir {} --out revoked.crl --force",
        dir.display()
    );
    Ok(())
}

pub fn crl(
    dir: &Path,
    out_path: &Path,
    include: &[PathBuf],
    duration: Duration,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    rma_ca::files::check_absent([out_path], force)?;
    let mut authority = Authority::open(dir)?;
    let mut others = Vec::new();
    for path in include {
        for list in RevocationList::read_all(&read(path)?, authority.root()).map_err(named(path))? {
            if list.ca_identity() == authority.ca().identity() {
                anyhow::bail!(
                    "{}: holds a list of this CA; the new one replaces it, leave it out",
                    path.display()
                );
            }
            others.push(list);
        }
    }
    let mut out = OutputFiles::new(force);
    let crl = authority.crl(now, duration, |crl| {
        let mut text = crl.to_pem();
        for other in &others {
            text.push_str(&other.to_pem());
        }
        out.stage(out_path, text.as_bytes(), Mode::Public)
    })?;
    out.commit()?;
    println!(
        "wrote {}: revocation list #{} of {:?} with {} revoked certificate(s), next update {}",
        out_path.display(),
        crl.number().unwrap_or_default(),
        authority.ca().name(),
        crl.len(),
        crl.next_update().map(rfc3339).unwrap_or_default()
    );
    for other in &others {
        println!(
            "  with list #{} of {:?} ({} revoked)",
            other.number().unwrap_or_default(),
            other
                .issuing_ca()
                .map_or(authority.root().name(), |ca| ca.name()),
            other.len()
        );
    }
    Ok(())
}
