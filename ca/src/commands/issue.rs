//! `rma-ca init`, `keygen` and `sign`.

use std::path::Path;

use ipnet::Ipv4Net;
use rma_ca::authority::{Authority, IssuingScope, SignRequest};
use rma_ca::files::{self, Mode, OutputFiles};
use rma_ca::timefmt::rfc3339;
use rma_ca::{CaKey, DEFAULT_WARNING_WINDOW, Expiring, Group, NodeKeys, NodeName, NodePublicKeys};
use time::{Duration, OffsetDateTime};

use super::{named, read};
use crate::cli::SignArgs;

pub fn init(
    dir: &Path,
    name: NodeName,
    network: Ipv4Net,
    duration: Duration,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let authority = Authority::init(dir, name, network, duration, now)?;
    let ca = authority.ca();
    println!(
        "created CA {:?} for network {}, valid until {}",
        ca.name(),
        ca.network(),
        rfc3339(ca.not_after())
    );
    println!(
        "  {}  (certificate)",
        dir.join(rma_ca::authority::CA_CERT_FILE).display()
    );
    println!(
        "  {}  (private key, mode 0600: keep it offline)",
        dir.join(rma_ca::authority::CA_KEY_FILE).display()
    );
    println!(
        "  {}  (index of issued certificates)",
        dir.join(rma_ca::authority::INDEX_FILE).display()
    );
    println!("fingerprint {}", ca.fingerprint());
    Ok(())
}

pub fn init_issuing(dir: &Path) -> anyhow::Result<()> {
    Authority::init_issuing(dir)?;
    let request = dir.join(rma_ca::authority::REQUEST_FILE);
    println!("created an issuing CA's key in {}", dir.display());
    println!(
        "  {}  (private key, mode 0600: it stays here)",
        dir.join(rma_ca::authority::CA_KEY_FILE).display()
    );
    println!("  {}  (public key to sign)", request.display());
    println!("next, on the root's machine:");
    println!(
        "  rma-ca sign-ca --dir ROOT --pub ca.pub --name NAME --network CIDR --groups GROUPS --out-crt issuing.crt"
    );
    println!("then here:");
    println!(
        "  rma-ca install-ca --dir {} --cert issuing.crt --root ca.crt",
        dir.display()
    );
    Ok(())
}

/// What `rma-ca sign-ca` was asked for.
#[derive(Debug)]
pub struct CaRequest<'a> {
    pub public: &'a Path,
    pub name: NodeName,
    pub network: Option<Ipv4Net>,
    /// The only groups it may give; `None` (`--any-groups`) for any.
    pub groups: Option<Vec<Group>>,
    pub duration: Option<Duration>,
    pub out_crt: &'a Path,
    pub force: bool,
}

pub fn sign_ca(dir: &Path, request: CaRequest<'_>, now: OffsetDateTime) -> anyhow::Result<()> {
    files::check_absent([request.out_crt], request.force)?;
    let public = CaKey::public_from_pem(&read(request.public)?).map_err(named(request.public))?;
    let mut root = Authority::open(dir)?;
    let network = request.network.unwrap_or(root.ca().network());
    // Earlier certificates of this issuing CA (a renewal, or a narrowing with --force): each
    // stays valid, with its own network and groups, for the chains that present it.
    let earlier: Vec<_> = root
        .list()?
        .into_iter()
        .filter(|c| {
            c.network.is_some()
                && c.name == request.name.as_str()
                && c.status(now) == rma_ca::index::Status::Valid
        })
        .collect();
    let mut out = OutputFiles::new(request.force);
    let issuing = root.sign_ca(
        &public,
        IssuingScope {
            name: request.name,
            network,
            groups: request.groups,
        },
        request.duration,
        request.force,
        now,
        |ca| out.stage(request.out_crt, ca.to_pem().as_bytes(), Mode::Public),
    )?;
    out.commit()?;
    let groups = issuing.permitted_groups().map_or_else(
        || "any group".to_owned(),
        |g| {
            let names: Vec<&str> = g.iter().map(|g| g.as_str()).collect();
            format!("groups {}", names.join(","))
        },
    );
    println!(
        "signed issuing CA {:?} for network {} and {groups}, valid until {}",
        issuing.name(),
        issuing.network(),
        rfc3339(issuing.not_after())
    );
    println!("wrote {}", request.out_crt.display());
    println!("fingerprint {}", issuing.fingerprint());
    for cert in &earlier {
        eprintln!(
            "note: the earlier certificate {} of {:?} stays valid until {}, with its own network \
             and groups, for every node chain that presents it. Once its nodes have renewed onto \
             the new one (meshd renews at two-thirds of its certificate's lifetime), revoke it: \
             rma-ca revoke --dir {} {}",
            cert.fingerprint,
            cert.name,
            rfc3339(cert.not_after),
            dir.display(),
            cert.fingerprint
        );
    }
    Ok(())
}

pub fn install_ca(dir: &Path, cert: &Path, root: &Path, force: bool) -> anyhow::Result<()> {
    let authority = Authority::install_issuing(dir, &read(cert)?, &read(root)?, force)?;
    let ca = authority.ca();
    println!(
        "installed issuing CA {:?} for network {}, signed by {:?}, valid until {}",
        ca.name(),
        ca.network(),
        authority.root().name(),
        rfc3339(ca.not_after())
    );
    Ok(())
}

pub fn sign(args: SignArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let outputs: Vec<&Path> = [Some(args.out_crt.as_path()), args.out_key.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    files::check_absent(outputs.iter().copied(), args.force)?;
    let mut authority = Authority::open(&args.ca.dir)?;
    // clap's argument group makes --out-key present whenever --pub is not.
    let (keys, generated) = match &args.public {
        Some(path) => (
            NodePublicKeys::from_pem(&read(path)?).map_err(named(path))?,
            None,
        ),
        None => {
            let keys = NodeKeys::generate();
            (keys.public(), Some(keys))
        }
    };
    let request = SignRequest {
        name: args.name,
        ip: args.ip,
        groups: args.groups.0,
        keys,
        duration: args.duration,
        force: args.force,
    };
    let mut out = OutputFiles::new(args.force);
    let cert = authority.sign(&request, now, |cert| {
        if let (Some(keys), Some(path)) = (&generated, &args.out_key) {
            out.stage(path, keys.to_pem().as_bytes(), Mode::Private)?;
        }
        out.stage(&args.out_crt, cert.to_pem().as_bytes(), Mode::Public)
    })?;
    out.commit()?;
    let groups: Vec<&str> = cert.groups().iter().map(|g| g.as_str()).collect();
    println!(
        "signed {} with mesh IP {}/{} groups [{}], valid until {}",
        cert.name(),
        cert.mesh_ip(),
        authority.ca().network().prefix_len(),
        groups.join(","),
        rfc3339(cert.not_after())
    );
    println!("wrote {}", args.out_crt.display());
    if let Some(path) = &args.out_key {
        println!("wrote {} (mode 0600)", path.display());
    }
    println!("fingerprint {}", cert.fingerprint());
    if let Some(warning) = authority.ca().expiry_warning(now, DEFAULT_WARNING_WINDOW) {
        eprintln!("rma-ca: warning: {warning}; node certificates cannot outlive it");
    }
    Ok(())
}
