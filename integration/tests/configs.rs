//! Every file in `configs/` must load with the parser of the daemon it is for, so the examples
//! operators copy never rot. A file with no parser here fails the test.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let dir_name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                ["systemd", "cloudflared", "prometheus", "bundles"].contains(&dir_name.as_str()),
                "configs/{dir_name}: no test covers this directory"
            );
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match name.as_str() {
            n if n.starts_with("meshd") && n.ends_with(".toml") => {
                meshd::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            n if n.starts_with("lighthouse") && n.ends_with(".toml") => {
                lighthouse::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            n if n.starts_with("routerd") && n.ends_with(".toml") => {
                routerd::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            other => panic!("configs/{other}: no test loads this file; add its parser here"),
        }
        checked += 1;
    }
    assert!(checked >= 1, "configs/ holds no example");
}

/// Every bundle for `rma-ca serve` is a meshd.toml without its [pki] section: the service
/// accepts it, and with the section `meshd join` adds it loads as meshd's config.
#[test]
fn every_example_bundle_is_a_meshd_config_without_pki() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/bundles");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert_eq!(path.extension().unwrap(), "toml", "{}", path.display());
        let text = rma_ca::enrollment::read_bundle(&dir.join(".."), &name)
            .unwrap_or_else(|e| panic!("{e}"));
        let joined =
            format!("{text}\n[pki]\nca = \"ca.crt\"\ncert = \"node.crt\"\nkey = \"node.key\"\n");
        meshd::config::Config::parse(&joined, &path).unwrap_or_else(|e| panic!("{e}"));
        checked += 1;
    }
    assert!(checked >= 1, "configs/bundles/ holds no example");
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Cloudflared {
    tunnel: String,
    credentials_file: String,
    ingress: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    hostname: Option<String>,
    path: Option<String>,
    service: String,
    origin_request: Option<serde_yaml_ng::Value>,
}

/// cloudflared's config parses, sends the public hostname to routerd's public listener (as
/// the example routerd.toml sets it), keeps /metrics private and ends with the catch-all.
#[test]
fn cloudflared_routes_the_hostname_to_routerds_public_listener() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let text = std::fs::read_to_string(dir.join("cloudflared/config.yml")).unwrap();
    let config: Cloudflared = serde_yaml_ng::from_str(&text).unwrap();
    assert!(!config.tunnel.is_empty() && config.credentials_file.ends_with(".json"));
    for entry in std::fs::read_dir(dir.join("cloudflared")).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(
            name, "config.yml",
            "configs/cloudflared/{name:?}: not tested"
        );
    }
    let routerd = routerd::config::Config::load(&dir.join("routerd.toml")).unwrap();
    let public = format!("http://{}", routerd.public);
    let to_routerd: Vec<&Rule> = config
        .ingress
        .iter()
        .filter(|r| r.service == public)
        .collect();
    assert_eq!(
        to_routerd.len(),
        1,
        "one rule sends the hostname to {public}"
    );
    assert!(to_routerd[0].hostname.is_some());
    let origin = to_routerd[0]
        .origin_request
        .as_ref()
        .expect("originRequest settings");
    assert!(origin.get("connectTimeout").is_some(), "{origin:?}");
    let metrics = config
        .ingress
        .iter()
        .position(|r| r.path.as_deref() == Some("^/metrics$"))
        .expect("a rule keeps /metrics private");
    assert!(config.ingress[metrics].service.starts_with("http_status:"));
    let last = config.ingress.last().unwrap();
    assert!(
        last.hostname.is_none() && last.path.is_none(),
        "the last rule is the catch-all"
    );
    assert_eq!(last.service, "http_status:404");
}

/// `systemd-analyze verify` accepts every unit. The binary path in `ExecStart=` must exist for
/// verify, so each unit is checked as a copy pointing at the binaries this build made.
#[test]
fn systemd_units_verify() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/systemd");
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze is missing: install Debian's systemd package (.ci/run does)");
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".service"),
            "configs/systemd/{name}: not a unit"
        );
        let mut unit = std::fs::read_to_string(&path).unwrap();
        for daemon in ["meshd", "lighthouse", "routerd", "rma-ca"] {
            let installed = format!("/usr/bin/{daemon} ");
            if unit.contains(&installed) {
                let built = integration::mesh::binary(daemon).unwrap();
                unit = unit.replace(&installed, &format!("{} ", built.display()));
            }
        }
        let copy = scratch.path().join(&name);
        std::fs::write(&copy, unit).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
        checked += 1;
    }
    assert!(checked >= 1, "no unit in configs/systemd");
}

/// `promtool check rules` accepts the alerting rules, and `promtool test rules` runs the cases
/// in `tests/prometheus/alerts_test.yml`: each alert fires when it should and only then.
#[test]
fn prometheus_alert_rules_check_and_fire_when_they_should() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = manifest.join("../configs/prometheus");
    for entry in std::fs::read_dir(&rules).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert_eq!(
            name, "alerts.yml",
            "configs/prometheus/{name}: no test covers it"
        );
    }
    let promtool = |args: &[&str], dir: &Path| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool is missing: install Debian's prometheus package (.ci/run does)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
        text
    };
    let checked = promtool(&["check", "rules", "alerts.yml"], &rules);
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    promtool(
        &["test", "rules", "alerts_test.yml"],
        &manifest.join("tests/prometheus"),
    );
}
