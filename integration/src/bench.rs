//! What the benchmarks share: their knobs from the environment, medians, and installing the
//! Debian packages they compare against.

use std::process::{Command, Stdio};

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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_takes_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
