//! The worker image in a lab: the archive `make image-check` builds (as `make image` does, from
//! the quick package), loaded into a podman storage of the test's own. The storage uses the
//! vfs driver, so nothing is mounted, and goes with its directory; containers are removed
//! first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context as _;

/// The image's name in the archive (scripts/build-image.sh's default tag).
pub const IMAGE: &str = "localhost/rma-mesh-worker:latest";

/// The archive in `target/image-check`.
pub fn archive() -> anyhow::Result<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image-check/rma-mesh-worker.tar");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing (run `make image-check`; `make e2e` does)",
        path.display()
    );
    Ok(path)
}

/// A podman storage, run root and temporary directory of this test's own.
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
    /// Host directories podman makes whatever its options say (a run directory for its
    /// networks, a cache of blob digests) that were not there before: removed at the end.
    made: Vec<PathBuf>,
}

/// Where podman writes outside its `--root` and `--runroot`.
const OUTSIDE: [&str; 2] = ["/run/containers", "/var/lib/containers"];

/// A resource limit of this process (`Max open files`, `Max processes`): the hard value.
fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let rest = line[name.len()..].split_whitespace().nth(1)?;
    rest.parse().ok()
}

impl Podman {
    pub fn new() -> anyhow::Result<Self> {
        let made = OUTSIDE
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        Ok(Self {
            dir: tempfile::tempdir()?,
            made,
        })
    }

    /// The global options that keep podman inside this test's directory. runc rather than
    /// crun, which refuses the hybrid cgroup layout of machines such as this one.
    pub fn global_args(&self) -> Vec<String> {
        let dir = self.dir.path();
        let at = |sub: &str| dir.join(sub).display().to_string();
        vec![
            "--root".into(),
            at("storage"),
            "--runroot".into(),
            at("run"),
            "--tmpdir".into(),
            at("tmp"),
            "--storage-driver".into(),
            "vfs".into(),
            "--runtime".into(),
            "runc".into(),
            "--events-backend".into(),
            "none".into(),
            "--network-config-dir".into(),
            at("networks"),
        ]
    }

    /// Options for `podman run` that keep the container's limits at this process's own: podman
    /// would raise them (to 1048576 open files), which root without CAP_SYS_RESOURCE, as in a
    /// sandbox like this one, may not. A volunteer's podman needs neither.
    pub fn limit_args() -> Vec<String> {
        let files = hard_limit("Max open files").unwrap_or(1024);
        let procs = hard_limit("Max processes").unwrap_or(4096).min(16384);
        vec![
            "--ulimit".into(),
            format!("nofile={files}:{files}"),
            "--ulimit".into(),
            format!("nproc={procs}:{procs}"),
        ]
    }

    /// Runs `podman` with `args` to the end: its output, or why it failed.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = Command::new("podman")
            .args(self.global_args())
            .args(args)
            .output()
            .context("running podman")?;
        anyhow::ensure!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    }

    /// Where a named volume's files are, as seen from the host.
    pub fn volume_path(&self, volume: &str) -> anyhow::Result<PathBuf> {
        let out = self.run(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume])?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--force", "--all", "--time", "0"]);
        let _ = self.run(&["volume", "rm", "--force", "--all"]);
        for dir in &self.made {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
