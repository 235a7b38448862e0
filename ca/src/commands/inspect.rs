//! `rma-ca print`, `verify` and `list`.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use rma_ca::authority::Authority;
use rma_ca::index::IssuedCert;
use rma_ca::timefmt::rfc3339;
use rma_ca::{CaCert, DEFAULT_WARNING_WINDOW, Expiring, NodeCert, NodeCertError, RevocationList};
use serde_json::json;
use time::OffsetDateTime;

use super::{named, read};

fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> String {
    let days = (not_after - now).whole_days();
    if not_after < now {
        "expired".into()
    } else {
        format!("in {days} days")
    }
}

pub fn print(path: &Path, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    let bytes = read(path)?;
    match NodeCert::from_bytes(&bytes) {
        Ok(cert) => print_node(&cert, json, now),
        Err(NodeCertError::IsCa) => {
            let ca = match CaCert::from_bytes(&bytes) {
                Err(rma_ca::CaCertError::NotSelfSigned) => CaCert::issuing_from_bytes(&bytes),
                other => other,
            }
            .map_err(named(path))?;
            print_ca(&ca, json, now)
        }
        Err(e) => Err(named(path)(e)),
    }
}

fn print_node(cert: &NodeCert, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    let identity = base64::engine::general_purpose::STANDARD.encode(cert.identity_key().as_bytes());
    let groups: Vec<&str> = cert.groups().iter().map(|g| g.as_str()).collect();
    let wireguard = cert.wireguard_key().map(ToString::to_string);
    if json {
        let value = json!({
            "kind": "node",
            "name": cert.name().as_str(),
            "mesh_ip": cert.mesh_ip().to_string(),
            "groups": groups,
            "wireguard_key": wireguard,
            "identity_key": identity,
            "serial": cert.serial().to_string(),
            "not_before": rfc3339(cert.not_before()),
            "not_after": rfc3339(cert.not_after()),
            "fingerprint": cert.fingerprint().to_string(),
            "issuer": cert.issuer_name(),
            "issuing_ca": cert.issuing_ca().map(|ca| ca.fingerprint().to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("name:          {}", cert.name());
    println!("mesh ip:       {}", cert.mesh_ip());
    println!(
        "groups:        {}",
        if groups.is_empty() {
            "(none)".into()
        } else {
            groups.join(", ")
        }
    );
    println!(
        "wireguard key: {}",
        wireguard.as_deref().unwrap_or("(missing)")
    );
    println!("identity key:  {identity}");
    println!("serial:        {}", cert.serial());
    println!("not before:    {}", rfc3339(cert.not_before()));
    println!(
        "not after:     {} ({})",
        rfc3339(cert.not_after()),
        days_left(cert.not_after(), now)
    );
    println!("issuer:        {}", cert.issuer_name());
    println!("fingerprint:   {}", cert.fingerprint());
    Ok(())
}

fn print_ca(ca: &CaCert, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    let groups: Option<Vec<&str>> = ca
        .permitted_groups()
        .map(|g| g.iter().map(|g| g.as_str()).collect());
    if json {
        let value = json!({
            "kind": "ca",
            "name": ca.name(),
            "network": ca.network().to_string(),
            "serial": ca.serial().to_string(),
            "not_before": rfc3339(ca.not_before()),
            "not_after": rfc3339(ca.not_after()),
            "fingerprint": ca.fingerprint().to_string(),
            "issuer": ca.issuer_name(),
            "path_len": ca.path_len(),
            "permitted_groups": groups,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("CA name:       {}", ca.name());
    println!("network:       {}", ca.network());
    match &groups {
        Some(groups) => println!("gives groups:  {}", groups.join(",")),
        None => println!("gives groups:  any"),
    }
    println!("serial:        {}", ca.serial());
    println!("not before:    {}", rfc3339(ca.not_before()));
    println!(
        "not after:     {} ({})",
        rfc3339(ca.not_after()),
        days_left(ca.not_after(), now)
    );
    if ca.is_self_signed() {
        println!("issuer:        {} (self-signed root)", ca.name());
    } else {
        println!(
            "issuer:        {} (this is an issuing CA)",
            ca.issuer_name()
        );
    }
    println!("fingerprint:   {}", ca.fingerprint());
    Ok(())
}

pub fn verify(
    ca_path: &Path,
    crl_path: Option<&Path>,
    untrusted: Option<&Path>,
    cert_path: &Path,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let ca = CaCert::from_bytes(&read(ca_path)?).map_err(named(ca_path))?;
    let lists = match crl_path {
        Some(path) => RevocationList::read_all(&read(path)?, &ca).map_err(named(path))?,
        None => Vec::new(),
    };
    for crl in lists.iter().filter(|c| c.is_stale(now)) {
        let due = crl.next_update().map(rfc3339).unwrap_or_default();
        eprintln!("rma-ca: warning: a revocation list was due to be replaced at {due}");
    }
    let untrusted_context = || format!("{}: untrusted", cert_path.display());
    let mut cert = NodeCert::from_bytes(&read(cert_path)?).with_context(untrusted_context)?;
    if let Some(path) = untrusted {
        let issuing = CaCert::issuing_from_bytes(&read(path)?).map_err(named(path))?;
        cert = cert
            .with_issuing_ca(issuing)
            .with_context(untrusted_context)?;
    }
    // The lists that apply, the newest of each CA's: the root's, and the issuing CA's that
    // signed the certificate.
    let store = rma_ca::TrustStore::with_lists(ca.clone(), lists);
    store.check(&cert, now).with_context(untrusted_context)?;
    let warnings = [
        Some(ca.expiry_warning(now, DEFAULT_WARNING_WINDOW)),
        cert.issuing_ca()
            .map(|issuing| issuing.expiry_warning(now, DEFAULT_WARNING_WINDOW)),
        Some(cert.expiry_warning(now, DEFAULT_WARNING_WINDOW)),
    ];
    for warning in warnings.into_iter().flatten().flatten() {
        eprintln!("rma-ca: warning: {warning}");
    }
    let signed_by = match cert.issuing_ca() {
        Some(issuing) => format!("{:?} (issuing CA of {:?})", issuing.name(), ca.name()),
        None => format!("{:?}", ca.name()),
    };
    println!(
        "{}: trusted: {} ({}) signed by {signed_by}, valid until {}",
        cert_path.display(),
        cert.name(),
        cert.mesh_ip(),
        rfc3339(cert.not_after())
    );
    Ok(())
}

pub fn list(dir: &Path, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    let certs = Authority::open(dir)?.list()?;
    if json {
        let rows: Vec<_> = certs.iter().map(|c| row_json(c, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<15} {:<20} {:<8} {:<20} FINGERPRINT",
        "NAME", "MESH IP", "GROUPS", "STATUS", "NOT AFTER"
    );
    for cert in &certs {
        let status = serde_json::to_value(cert.status(now))?;
        println!(
            "{:<24} {:<15} {:<20} {:<8} {:<20} {}",
            cert.name,
            cert.network
                .map_or(cert.mesh_ip.to_string(), |n| format!("CA {n}")),
            cert.groups.join(","),
            status.as_str().unwrap_or_default(),
            rfc3339(cert.not_after),
            &cert.fingerprint.to_string()[..16]
        );
    }
    Ok(())
}

fn row_json(cert: &IssuedCert, now: OffsetDateTime) -> serde_json::Value {
    json!({
        "name": cert.name,
        "kind": if cert.network.is_some() { "issuing-ca" } else { "node" },
        "mesh_ip": cert.network.is_none().then(|| cert.mesh_ip.to_string()),
        "network": cert.network.map(|n| n.to_string()),
        "groups": cert.groups,
        "status": cert.status(now),
        "serial": cert.serial.to_string(),
        "fingerprint": cert.fingerprint.to_string(),
        "not_before": rfc3339(cert.not_before),
        "not_after": rfc3339(cert.not_after),
        "issued_at": rfc3339(cert.issued_at),
        "revoked_at": cert.revoked.as_ref().map(|r| rfc3339(r.at)),
        "revoke_reason": cert.revoked.as_ref().and_then(|r| r.reason.clone()),
    })
}
