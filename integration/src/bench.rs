//! What the benchmarks share: their knobs from the environment, medians, and installing what
//! they compare against: Debian packages, and crates that only crates.io ships.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::lab::run;

/// A numeric knob such as `BENCH_SECONDS`, or `default` when unset or not a number.
pub fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `values` (the upper one of an even count); `values` must not be empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Installs, with apt-get, the packages whose program (`(program, package)`) is not on PATH.
pub fn ensure_installed(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| {
            Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("installing {}", missing.join(" "));
        run("apt-get", &["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(missing);
        run("apt-get", &args)?;
    }
    Ok(())
}

/// Where [`ensure_crate_installed`] installs (`cargo install --root`): inside the workspace's
/// target directory, so a benchmark never touches the user's `~/.cargo/bin`.
fn anchors_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/anchors")
}

/// The binary of a crate that [`ensure_crate_installed`] installed (named like the crate).
pub fn crate_binary(krate: &str) -> PathBuf {
    anchors_root().join("bin").join(krate)
}

/// Installs `krate` at exactly `version` with its own lock file (`cargo install --locked`, with
/// `$CARGO` or else `cargo`) unless its binary is there already: a pinned build keeps the numbers
/// comparable from one run to the next. Cargo's progress goes to stderr, away from the results.
pub fn ensure_crate_installed(krate: &str, version: &str) -> anyhow::Result<()> {
    if crate_binary(krate).exists() {
        return Ok(());
    }
    let root = anchors_root();
    eprintln!("installing {krate} {version} into {}", root.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["install", krate, "--version", version, "--locked", "--root"])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    anyhow::ensure!(
        status.success(),
        "cargo install {krate} {version}: {status}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_takes_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
