//! `make install`'s script installs into a temporary DESTDIR: the layout, the units pointing at
//! PREFIX, the configs where the units read them, and an existing config left alone.

#![allow(clippy::unwrap_used)] // test code

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

fn install(destdir: &Path, binaries: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/install.sh"))
        .env("DESTDIR", destdir)
        .env("PREFIX", "/opt/rma")
        .env("BINARIES", binaries)
        .env_remove("UNITDIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "install.sh: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn install_lays_out_binaries_units_and_configs_and_keeps_existing_configs() {
    // The binaries this build made (`make e2e` builds all four).
    let binaries = integration::mesh::binary("meshd")
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let destdir = tempfile::tempdir().unwrap();
    let root = destdir.path();
    install(root, &binaries);

    for program in ["rma-ca", "meshd", "lighthouse", "routerd"] {
        let path = root.join("opt/rma/bin").join(program);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
    }
    for daemon in ["meshd", "lighthouse", "routerd"] {
        let unit = std::fs::read_to_string(
            root.join("etc/systemd/system")
                .join(format!("{daemon}.service")),
        )
        .unwrap();
        assert!(
            unit.contains(&format!("ExecStart=/opt/rma/bin/{daemon} ")),
            "{daemon}.service does not run the installed binary:\n{unit}"
        );
        assert!(
            !unit.contains("/usr/local/bin/") && !unit.contains("/usr/bin/"),
            "{unit}"
        );
    }
    for config in [
        "etc/meshd/meshd.toml",
        "etc/rma-mesh/lighthouse.toml",
        "etc/rma-mesh/routerd.toml",
        "etc/cloudflared/config.yml",
    ] {
        assert!(root.join(config).is_file(), "{config} was not installed");
    }
    // Each unit reads its config where it was installed.
    let meshd_unit =
        std::fs::read_to_string(root.join("etc/systemd/system/meshd.service")).unwrap();
    assert!(meshd_unit.contains("--config /etc/meshd/meshd.toml"));
    let examples = root.join("opt/rma/share/rma-mesh/examples");
    for example in [
        "meshd.toml",
        "lighthouse.toml",
        "routerd.toml",
        "cloudflared/config.yml",
        "prometheus/alerts.yml",
        "systemd/meshd.service",
    ] {
        assert!(
            examples.join(example).is_file(),
            "example {example} missing"
        );
    }

    // An operator's config survives a second install; the example is refreshed beside it.
    let edited = root.join("etc/rma-mesh/routerd.toml");
    std::fs::write(&edited, "# the operator's routerd.toml\n").unwrap();
    let second = install(root, &binaries);
    assert_eq!(
        std::fs::read_to_string(&edited).unwrap(),
        "# the operator's routerd.toml\n"
    );
    assert!(
        second.contains("kept /etc/rma-mesh/routerd.toml"),
        "{second}"
    );
    assert!(
        std::fs::read_to_string(examples.join("routerd.toml"))
            .unwrap()
            .contains("[listen]")
    );
}

#[test]
fn install_refuses_without_built_binaries_and_writes_nothing() {
    let destdir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/install.sh"))
        .env("DESTDIR", destdir.path())
        .env("BINARIES", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing: build it first"));
    assert_eq!(std::fs::read_dir(destdir.path()).unwrap().count(), 0);
}
