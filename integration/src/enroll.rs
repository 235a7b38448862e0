//! An operator's CAs for the enrollment tests, made with the real `rma-ca` as the README's
//! guide has them made: a root, an issuing CA it signed for 10.42.128.0/17 (the part of the
//! mesh `rma-ca serve` gives out), certificates the root signs offline, and the service itself
//! in a lab namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use rma_ca::{NodeCert, NodeKeys};

use crate::lab::{Lab, Ns};
use crate::mesh::{Issued, binary};
use crate::wait;

/// The issuing CA's part of the mesh network.
pub const ISSUING_NETWORK: &str = "10.42.128.0/17";

/// Runs `rma-ca` with `args`; its standard output, or why it failed.
pub fn rma_ca(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary("rma-ca")?)
        .args(args)
        .env_remove("RMA_CA_DIR")
        .output()
        .context("running rma-ca")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "rma-ca {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

fn text(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The two CA directories and the root's list.
#[derive(Debug)]
pub struct Operator {
    dir: PathBuf,
    pub root: PathBuf,
    pub issuing: PathBuf,
    /// The root's certificate, which every machine trusts.
    pub ca: PathBuf,
    /// The root's revocation list, as the lighthouses and routerd are given it.
    pub crl: PathBuf,
}

impl Operator {
    /// `rma-ca init`, `init-issuing`, `sign-ca`, `install-ca` and `crl` in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let root = dir.join("root");
        let issuing = dir.join("issuing");
        let crl = dir.join("root.crl");
        let issuing_crt = dir.join("issuing.crt");
        rma_ca(&[
            "init",
            "--dir",
            text(&root)?,
            "--name",
            "lab",
            "--network",
            "10.42.0.0/16",
        ])?;
        rma_ca(&["init-issuing", "--dir", text(&issuing)?])?;
        rma_ca(&[
            "sign-ca",
            "--dir",
            text(&root)?,
            "--pub",
            text(&issuing.join("ca.pub"))?,
            "--name",
            "enroll",
            "--network",
            ISSUING_NETWORK,
            "--groups",
            "workers",
            "--out-crt",
            text(&issuing_crt)?,
        ])?;
        rma_ca(&[
            "install-ca",
            "--dir",
            text(&issuing)?,
            "--cert",
            text(&issuing_crt)?,
            "--root",
            text(&root.join("ca.crt"))?,
        ])?;
        rma_ca(&["crl", "--dir", text(&root)?, "--out", text(&crl)?])?;
        std::fs::create_dir(issuing.join(rma_ca::enrollment::BUNDLES_DIR))?;
        Ok(Self {
            ca: root.join("ca.crt"),
            dir: dir.to_owned(),
            root,
            issuing,
            crl,
        })
    }

    /// A certificate the root signs offline with `rma-ca sign --out-key` (the lab shortcut for
    /// keys made on the machine), for a lighthouse or routerd's machine.
    pub fn sign_offline(&self, name: &str, ip: &str, groups: &str) -> anyhow::Result<Issued> {
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        rma_ca(&[
            "sign",
            "--dir",
            text(&self.root)?,
            "--name",
            name,
            "--ip",
            ip,
            "--groups",
            groups,
            "--out-key",
            text(&key_path)?,
            "--out-crt",
            text(&cert_path)?,
        ])?;
        Ok(Issued {
            cert: NodeCert::from_bytes(&std::fs::read(&cert_path)?)?,
            keys: NodeKeys::from_pem(&std::fs::read(&key_path)?)?,
            cert_path,
            key_path,
        })
    }

    /// Writes bundle `name` (a meshd.toml without `[pki]`) into the issuing CA's directory.
    pub fn bundle(&self, name: &str, config: &str) -> anyhow::Result<()> {
        let path = self
            .issuing
            .join(rma_ca::enrollment::BUNDLES_DIR)
            .join(format!("{name}.toml"));
        Ok(std::fs::write(path, config)?)
    }

    /// `rma-ca token create` for group `workers` with the `worker-` prefix: the token.
    pub fn token(&self, url: &str, uses: u32, bundle: &str) -> anyhow::Result<String> {
        let out = rma_ca(&[
            "token",
            "create",
            "--dir",
            text(&self.issuing)?,
            "--groups",
            "workers",
            "--name-prefix",
            "worker-",
            "--uses",
            &uses.to_string(),
            "--ttl",
            "1h",
            "--bundle",
            bundle,
            "--url",
            url,
        ])?;
        Ok(out.trim().to_owned())
    }

    /// `rma-ca serve` on the issuing CA in `ns`, listening on `listen`, with `extra` options;
    /// its lab handle once it listens.
    pub fn serve(
        &self,
        lab: &mut Lab,
        ns: &Ns,
        listen: &str,
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        let mut args = vec!["serve", "--dir", text(&self.issuing)?, "--listen", listen];
        args.extend_from_slice(extra);
        let serve = lab.spawn(ns, "rma-ca-serve", &binary("rma-ca")?, &args)?;
        wait::until("rma-ca serve to listen", Duration::from_secs(10), || {
            lab.proc(serve).log_text().contains("serving").then_some(())
        })?;
        Ok(serve)
    }
}
