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
            assert_eq!(
                dir_name, "systemd",
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
            other => panic!("configs/{other}: no test loads this file; add its parser here"),
        }
        checked += 1;
    }
    assert!(checked >= 1, "configs/ holds no example");
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
        for daemon in ["meshd", "lighthouse", "routerd"] {
            let installed = format!("/usr/local/bin/{daemon} ");
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
