//! `meshd join URL TOKEN`: enroll this machine with an issuing CA's enrollment service
//! (`rma-ca serve`) and write everything meshd needs to run.
//!
//! The keys are made here and never leave: only the public keys go out, with the token's
//! credential, in a request signed by the new identity key. The answer is checked against the
//! root fingerprint the token carries before anything is written (see [`rma_ca::join`]). The
//! files are then written to a scratch directory beside their destination, the config is
//! checked there as `--check-config` checks it, and only then are they moved into place, all
//! or none: a refusal, an unreachable URL or a bad answer leaves the machine as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use rma_ca::NodeKeys;
use rma_ca::files::{Mode, OutputFiles};
use rma_ca::join::{self, Checked, JoinRequest, Refusal};
use rma_ca::tokens::JoinToken;
use time::OffsetDateTime;

use crate::config::Config;
use crate::enroll_http::{self, EnrollUrl};

pub const CONFIG_FILE: &str = "meshd.toml";
pub const KEY_FILE: &str = "node.key";
pub const PUB_FILE: &str = "node.pub";
pub const CERT_FILE: &str = "node.crt";
pub const CA_FILE: &str = "ca.crt";
pub const CRL_FILE: &str = "pki.crl";
/// Where a config that was there before the join (the package's example) is kept.
pub const CONFIG_BEFORE_JOIN: &str = "meshd.toml.before-join";

/// How long the service has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `meshd join`.
#[derive(Clone, clap::Args)]
pub struct JoinArgs {
    /// The enrollment service (`rma-ca serve`), such as https://enroll.example.org.
    #[arg(env = "RMA_JOIN_URL")]
    pub url: String,
    /// The token from `rma-ca token create` (rmajoin1_...). Better given as RMA_JOIN_TOKEN:
    /// other local users can read a command line in /proc, not another user's environment.
    #[arg(env = "RMA_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The name to ask for (the token's name prefix is put in front if it lacks it). Default:
    /// this machine's hostname.
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write meshd.toml, the keys, the certificates and the lists.
    #[arg(long, value_name = "DIR", default_value = "/etc/meshd")]
    pub dir: PathBuf,
    /// Then enable and start meshd.service (systemctl enable --now).
    #[arg(long)]
    pub start: bool,
    /// Join again on a machine that has joined: new keys, new certificate, new config.
    #[arg(long)]
    pub force: bool,
}

/// Never shows the token.
impl std::fmt::Debug for JoinArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinArgs")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("start", &self.start)
            .field("force", &self.force)
            .finish_non_exhaustive()
    }
}

/// What a join wrote.
#[derive(Debug)]
pub struct Joined {
    pub checked: Checked,
    pub config: PathBuf,
}

impl JoinArgs {
    /// Joins, and says what was written.
    pub async fn run(&self, now: OffsetDateTime) -> anyhow::Result<Joined> {
        let token: JoinToken = self.token.parse()?;
        let url: EnrollUrl = self.url.parse()?;
        let config = self.dir.join(CONFIG_FILE);
        // A machine has joined when it has an identity; a config alone is the package's
        // example, which the join sets aside.
        let identity = [KEY_FILE, PUB_FILE, CERT_FILE, CA_FILE, CRL_FILE];
        if !self.force
            && let Some(existing) = identity
                .iter()
                .map(|f| self.dir.join(f))
                .find(|p| p.exists())
        {
            anyhow::bail!(
                "{}: this machine has joined already; pass --force to join again with new keys",
                existing.display()
            );
        }
        // What could refuse the files after the service has issued is checked first, so that a
        // refusal never spends a use of the token.
        if !self.force && config.exists() {
            rma_ca::files::check_absent([self.dir.join(CONFIG_BEFORE_JOIN).as_path()], false)?;
        }
        let name = match &self.name {
            Some(name) => name.clone(),
            None => hostname()?,
        };
        check_root(&url, &token).await?;
        let keys = NodeKeys::generate();
        let body = serde_json::to_vec(&JoinRequest {
            token: token.credential.to_string(),
            name,
            public: keys.public().to_pem(),
        })?;
        let checked = request(&url, join::JOIN_PATH, &keys, body, &token.root, now).await?;
        let text = config_text(&checked, &url);
        write_all(&self.dir, &keys, &checked, &text, self.force, now)?;
        Ok(Joined { checked, config })
    }
}

/// Fetches the service's root and checks it is the one the token names, before the token is
/// sent: a wrong URL then learns nothing of it. (A machine in the middle that shows the right
/// root still cannot forge the signed answer.)
async fn check_root(url: &EnrollUrl, token: &JoinToken) -> anyhow::Result<()> {
    let reply = enroll_http::get(url, join::ROOT_PATH, ANSWER_TIMEOUT).await?;
    anyhow::ensure!(
        reply.status.is_success(),
        "{url} is not an enrollment service (HTTP {} for {})",
        reply.status.as_u16(),
        join::ROOT_PATH
    );
    let root = rma_ca::CaCert::from_bytes(&reply.body)
        .with_context(|| format!("{url}: the root it shows"))?;
    if root.fingerprint() != token.root {
        return Err(join::AnswerError::WrongRoot {
            expected: token.root,
            got: root.fingerprint(),
        })
        .with_context(|| format!("{url} refused before the token was sent"));
    }
    Ok(())
}

/// Sends a signed request to the service and checks its answer.
pub async fn request(
    url: &EnrollUrl,
    path: &str,
    keys: &NodeKeys,
    body: Vec<u8>,
    root: &rma_ca::Fingerprint,
    now: OffsetDateTime,
) -> anyhow::Result<Checked> {
    let ms = rma_ca::proof::unix_ms(now);
    let [time, signature] = rma_ca::proof::signed_headers(keys, "POST", path, ms, &body);
    let headers = [
        (time.0, time.1.as_str()),
        (signature.0, signature.1.as_str()),
        ("content-type", "application/json"),
    ];
    let reply = enroll_http::post(url, path, &headers, Bytes::from(body), ANSWER_TIMEOUT).await?;
    if !reply.status.is_success() {
        let why = serde_json::from_slice::<Refusal>(&reply.body)
            .map(|r| r.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&reply.body).into_owned());
        anyhow::bail!("{url} refused (HTTP {}): {why}", reply.status.as_u16());
    }
    let signature = reply
        .headers
        .get(join::ANSWER_SIGNATURE_HEADER)
        .map(|v| v.as_bytes());
    join::check_answer(&reply.body, signature, root, keys, now)
        .with_context(|| format!("{url} answered, but the answer is refused"))
}

/// The complete meshd.toml: the bundle as the operator wrote it, then the `[pki]` section and
/// where to renew, with paths relative to the config's directory.
fn config_text(checked: &Checked, url: &EnrollUrl) -> String {
    format!(
        "# meshd.toml for {name} ({ip}), written by `meshd join`: the bundle from {url}, then\n\
         # this machine's certificate and keys.\n\n\
         {bundle}\n\
         [pki]\n\
         ca = \"{CA_FILE}\"\n\
         cert = \"{CERT_FILE}\"\n\
         key = \"{KEY_FILE}\"\n\
         crl = \"{CRL_FILE}\"\n\n\
         # meshd renews its certificate here, at two-thirds of its lifetime.\n\
         [enrollment]\n\
         url = \"{url}\"\n",
        name = checked.name(),
        ip = checked.mesh_ip(),
        bundle = checked.config.trim_end(),
    )
}

/// Writes every file into a scratch directory in `dir`, checks the config there, then moves
/// them into place, all or none. `dir` is made if missing, and removed again on failure.
fn write_all(
    dir: &Path,
    keys: &NodeKeys,
    checked: &Checked,
    config: &str,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let made_dir = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let result = write_checked(dir, keys, checked, config, force, now);
    if result.is_err() && made_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn write_checked(
    dir: &Path,
    keys: &NodeKeys,
    checked: &Checked,
    config: &str,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let key_pem = keys.to_pem();
    let public = keys.public().to_pem();
    let cert = checked.cert.to_pem();
    let root = checked.root.to_pem();
    let lists: String = checked.lists.iter().map(|l| l.to_pem()).collect();
    let files: [(&str, &[u8], Mode); 6] = [
        (KEY_FILE, key_pem.as_bytes(), Mode::Private),
        (PUB_FILE, public.as_bytes(), Mode::Public),
        (CERT_FILE, cert.as_bytes(), Mode::Public),
        (CA_FILE, root.as_bytes(), Mode::Public),
        (CRL_FILE, lists.as_bytes(), Mode::Public),
        (CONFIG_FILE, config.as_bytes(), Mode::Public),
    ];
    // Checked where it is written first, as `meshd --check-config` would check it.
    let scratch = tempdir_in(dir)?;
    let mut staged = OutputFiles::new(false);
    for (name, bytes, mode) in &files {
        staged.stage(&scratch.path().join(name), bytes, *mode)?;
    }
    staged.commit()?;
    let config_path = scratch.path().join(CONFIG_FILE);
    let loaded = Config::load(&config_path)?;
    rma_daemon::identity::load(&loaded.pki, now)
        .with_context(|| format!("{}: the joined identity does not load", dir.display()))?;
    let mut out = OutputFiles::new(force);
    let config_path = dir.join(CONFIG_FILE);
    let aside = dir.join(CONFIG_BEFORE_JOIN);
    let set_aside = !force && config_path.exists();
    if set_aside {
        rma_ca::files::check_absent([aside.as_path()], false)?;
    }
    for (name, bytes, mode) in files.iter().filter(|f| f.0 != CONFIG_FILE) {
        out.stage(&dir.join(name), bytes, *mode)?;
    }
    if set_aside {
        std::fs::rename(&config_path, &aside)
            .with_context(|| format!("setting {} aside", config_path.display()))?;
    }
    let committed = out
        .stage(&config_path, config.as_bytes(), Mode::Public)
        .and_then(|()| out.commit());
    if committed.is_err() && set_aside {
        let _ = std::fs::rename(&aside, &config_path);
    }
    committed?;
    Ok(())
}

/// A scratch directory inside `dir`, removed when dropped.
fn tempdir_in(dir: &Path) -> anyhow::Result<Scratch> {
    let path = dir.join(format!(".join.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir(&path).with_context(|| path.display().to_string())?;
    Ok(Scratch(path))
}

struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This machine's hostname, as a node name would have it (lowercase, `-` for anything else).
fn hostname() -> anyhow::Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname (pass --name)")?;
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    Ok(name.trim_matches(|c| c == '-' || c == '.').to_owned())
}
