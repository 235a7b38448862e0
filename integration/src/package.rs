//! The Debian package in a lab: the one `make package-check` builds (as `make deb` does, from a
//! quick build), installed with dpkg into a scratch root of its own. Maintainer scripts run
//! outside a chroot with `DPKG_ROOT` set (the root has no shell), in a private mount namespace
//! whose /run shows no systemd, so that nothing reaches the host.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The package in `target/debian-check`.
pub fn deb() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian-check");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{} (run `make package-check`; `make e2e` does)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    match found.as_slice() {
        [deb] => Ok(deb.clone()),
        _ => anyhow::bail!("expected one package in {}: {found:?}", dir.display()),
    }
}

/// A root directory with dpkg's database and the directories systemd's package gives every
/// Debian system (where deb-systemd-helper keeps the units' state), removed when dropped.
#[derive(Debug)]
pub struct ScratchRoot {
    dir: tempfile::TempDir,
}

impl ScratchRoot {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for sub in [
            "var/lib/dpkg/updates",
            "var/lib/dpkg/info",
            "var/lib/dpkg/triggers",
            "etc/systemd/system",
            "var/lib/systemd",
        ] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        std::fs::write(dir.path().join("var/lib/dpkg/status"), "")?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A program the package installed, such as `usr/bin/meshd`.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.path().join(relative)
    }

    /// Runs dpkg on this root with `args`; its output, or why it failed.
    pub fn dpkg(&self, args: &[&str]) -> anyhow::Result<String> {
        let script = format!(
            "mount -t tmpfs none /run && exec dpkg --root={} --force-script-chrootless \
             --force-depends --force-not-root {}",
            self.path().display(),
            args.join(" ")
        );
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .context("unshare")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(out.status.success(), "dpkg {args:?}: {text}");
        Ok(text)
    }

    /// Every file and directory below the root except dpkg's database, sorted.
    pub fn tree(&self) -> Vec<String> {
        let root = self.path();
        let mut found = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let relative = path
                    .strip_prefix(root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if relative.starts_with("var/lib/dpkg") {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                }
                found.push(relative);
            }
        }
        found.sort();
        found
    }
}
