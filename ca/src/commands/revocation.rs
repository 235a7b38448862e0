//! `rma-ca revoke` and `crl`.

use std::path::Path;

use rma_ca::authority::Authority;
use rma_ca::files::{Mode, OutputFiles};
use rma_ca::timefmt::rfc3339;
use time::{Duration, OffsetDateTime};

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
    duration: Duration,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    rma_ca::files::check_absent([out_path], force)?;
    let mut authority = Authority::open(dir)?;
    let mut out = OutputFiles::new(force);
    let crl = authority.crl(now, duration, |crl| {
        out.stage(out_path, crl.to_pem().as_bytes(), Mode::Public)
    })?;
    out.commit()?;
    println!(
        "wrote {}: revocation list #{} with {} revoked certificate(s), next update {}",
        out_path.display(),
        crl.number().unwrap_or_default(),
        crl.len(),
        crl.next_update().map(rfc3339).unwrap_or_default()
    );
    Ok(())
}
