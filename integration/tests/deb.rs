//! The Debian package (`make package-check` builds it as `make deb` does, from a quick build):
//! lintian finds no error; installed into a scratch root of its own with dpkg, it lays out the
//! programs, the units (which `systemd-analyze verify` accepts) and the example configs as
//! conffiles; a changed conffile survives a reinstall; purging leaves the root as it was. The
//! host is not touched (see `integration::package`).

#![allow(clippy::unwrap_used)] // test code

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

use integration::package::{self, ScratchRoot};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (make deps installs it)"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_installs_into_a_scratch_root_keeps_changed_configs_and_purges_cleanly() {
    let deb = package::deb().unwrap();
    let deb = deb.to_str().unwrap();
    // lintian: no errors (the warnings left are listed in the README).
    let lint = run("lintian", &["--fail-on", "error", deb]);
    assert!(
        lint.status.success(),
        "lintian: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let report = String::from_utf8_lossy(&lint.stdout).into_owned();
    for line in report.lines() {
        let known = ["no-manual-page", "initial-upload-closes-no-bugs"];
        assert!(
            known.iter().any(|k| line.contains(k)),
            "a lintian finding the README does not list: {line}"
        );
    }

    let scratch = ScratchRoot::new().unwrap();
    let root = scratch.path();
    let before = scratch.tree();
    scratch.dpkg(&["--install", deb]).unwrap();

    for program in ["rma-ca", "meshd", "lighthouse", "routerd"] {
        let path = root.join("usr/bin").join(program);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        let version = ok(path.to_str().unwrap(), &["--version"]);
        assert!(version.starts_with(program), "{version}");
    }
    let conffiles = ok(
        "dpkg-query",
        &[
            &format!("--admindir={}", root.join("var/lib/dpkg").display()),
            "--showformat=${Conffiles}",
            "--show",
            "rma-mesh",
        ],
    );
    for config in [
        "/etc/meshd/meshd.toml.example",
        "/etc/rma-mesh/lighthouse.toml",
        "/etc/rma-mesh/routerd.toml",
    ] {
        assert!(
            conffiles.contains(config),
            "{config} is not a conffile: {conffiles}"
        );
        assert!(root.join(&config[1..]).is_file(), "{config}");
    }
    for example in [
        "meshd.toml",
        "bundles/worker.toml",
        "cloudflared/config.yml",
        "prometheus/alerts.yml",
    ] {
        assert!(
            root.join("usr/share/rma-mesh/examples")
                .join(example)
                .is_file(),
            "{example}"
        );
    }
    // The units as installed, verified by systemd-analyze with the host's systemd and the
    // installed binaries (the scratch root has no systemd of its own).
    let units = tempfile::tempdir().unwrap();
    for (unit, program) in [
        ("meshd", "meshd"),
        ("lighthouse", "lighthouse"),
        ("routerd", "routerd"),
        ("rma-enroll", "rma-ca"),
    ] {
        let path = root.join(format!("usr/lib/systemd/system/{unit}.service"));
        let text = std::fs::read_to_string(&path).unwrap();
        let installed = format!("/usr/bin/{program} ");
        assert!(text.contains(&format!("ExecStart={installed}")), "{text}");
        let scratch_binary = format!("{} ", root.join("usr/bin").join(program).display());
        let copy = units.path().join(format!("{unit}.service"));
        std::fs::write(&copy, text.replace(&installed, &scratch_binary)).unwrap();
        let out = run("systemd-analyze", &["verify", copy.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
    // Neither enabled nor started: nothing under etc/systemd.
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants")
            .exists()
    );

    // A changed conffile survives reinstalling the package.
    let lighthouse = root.join("etc/rma-mesh/lighthouse.toml");
    let mut changed = std::fs::read_to_string(&lighthouse).unwrap();
    changed.push_str("# changed by the operator\n");
    std::fs::write(&lighthouse, &changed).unwrap();
    scratch.dpkg(&["--install", deb]).unwrap();
    assert_eq!(std::fs::read_to_string(&lighthouse).unwrap(), changed);

    // Purged: the root is as it was.
    scratch.dpkg(&["--purge", "rma-mesh"]).unwrap();
    assert_eq!(scratch.tree(), before);
}
