//! Drives the real `rma-ca` binary through an operator's whole flow, checks the results with
//! openssl, and checks that every kind of bad input is refused with a one-line error naming
//! the file, a non-zero exit, and nothing written or changed.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rma_ca::authority::Authority;
use time::{Duration, OffsetDateTime};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `program` in `dir` with `args`, a command line split on whitespace.
fn run_in(dir: &Path, program: &str, args: &str) -> Run {
    let output = Command::new(program)
        .args(args.split_whitespace())
        .current_dir(dir)
        .env_remove("RMA_CA_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (install it; .ci/run does)"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn rma_ca(dir: &Path, args: &str) -> Run {
    run_in(dir, env!("CARGO_BIN_EXE_rma-ca"), args)
}

fn openssl(dir: &Path, args: &str) -> Run {
    run_in(dir, "openssl", args)
}

fn ok(dir: &Path, args: &str) -> String {
    let run = rma_ca(dir, args);
    assert_eq!(run.code, 0, "rma-ca {args} failed: {}", run.stderr);
    run.stdout
}

fn json(dir: &Path, args: &str) -> serde_json::Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

/// Every file below `dir` with its contents, to show that a refused command changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs a command that must be refused: non-zero exit, one line on stderr that contains
/// `expected`, nothing on stdout, and no file created, changed or removed.
fn refused(dir: &Path, args: &str, expected: &str) {
    let before = snapshot(dir);
    let run = rma_ca(dir, args);
    assert_ne!(
        run.code, 0,
        "rma-ca {args} should fail; stdout: {}",
        run.stdout
    );
    let line = run.stderr.trim_end();
    assert_eq!(
        line.lines().count(),
        1,
        "rma-ca {args}: expected one line, got {line:?}"
    );
    assert!(
        line.contains(expected),
        "rma-ca {args}: {line:?} lacks {expected:?}"
    );
    assert!(
        run.stdout.is_empty(),
        "rma-ca {args} printed {:?}",
        run.stdout
    );
    assert!(
        before == snapshot(dir),
        "rma-ca {args} changed files although it failed"
    );
}

#[test]
fn an_operator_flow_from_init_to_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(
        dir,
        "init --dir ca --name rma --network 10.42.0.0/16 --duration 5y",
    );
    ok(dir, "keygen --out-key worker.key --out-pub worker.pub");
    let signed = ok(
        dir,
        "sign --dir ca --name worker-1 --pub worker.pub --groups workers,gpu --out-crt worker.crt",
    );
    assert!(signed.contains("mesh IP 10.42.0.1/16"), "{signed}");

    let printed = json(dir, "print --json worker.crt");
    assert_eq!(printed["name"], "worker-1");
    assert_eq!(printed["mesh_ip"], "10.42.0.1");
    assert_eq!(printed["groups"], serde_json::json!(["gpu", "workers"]));
    assert_eq!(printed["issuer"], "rma");
    let public = fs::read(dir.join("worker.pub")).unwrap();
    let public = rma_ca::NodePublicKeys::from_pem(&public).unwrap();
    assert_eq!(printed["wireguard_key"], public.wireguard.to_string());
    let text = ok(dir, "print worker.crt");
    for field in [
        "name:",
        "mesh ip:",
        "groups:",
        "wireguard key:",
        "not after:",
        "issuer:",
    ] {
        assert!(text.contains(field), "print lacks {field}: {text}");
    }
    assert!(text.contains(&printed["fingerprint"].as_str().unwrap().to_owned()));

    let trusted = ok(dir, "verify --ca ca/ca.crt worker.crt");
    assert!(trusted.contains("trusted"), "{trusted}");

    // Standard tools read and trust what rma-ca issues.
    let x509 = openssl(dir, "x509 -noout -text -in worker.crt");
    assert_eq!(x509.code, 0, "{}", x509.stderr);
    assert!(
        x509.stdout.contains("IP Address:10.42.0.1"),
        "{}",
        x509.stdout
    );
    assert!(x509.stdout.contains("DNS:worker-1"), "{}", x509.stdout);
    let verified = openssl(dir, "verify -CAfile ca/ca.crt worker.crt");
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified.stdout.contains("worker.crt: OK"),
        "{}",
        verified.stdout
    );

    // A second CA trusts none of it, by openssl's judgement or by ours.
    ok(dir, "init --dir other --name other --network 10.43.0.0/16");
    let foreign = openssl(dir, "verify -CAfile other/ca.crt worker.crt");
    assert_ne!(
        foreign.code, 0,
        "openssl trusted a foreign CA: {}",
        foreign.stdout
    );
    refused(
        dir,
        "verify --ca other/ca.crt worker.crt",
        "signed by another CA",
    );

    // Revocation reaches verification through the CRL, for rma-ca and for openssl.
    assert_eq!(json(dir, "list --dir ca --json")[0]["status"], "valid");
    ok(dir, "revoke --dir ca worker-1 --reason retired");
    ok(dir, "crl --dir ca --out revoked.crl");
    refused(
        dir,
        "verify --ca ca/ca.crt --crl revoked.crl worker.crt",
        "revoked at",
    );
    let crl_check = openssl(
        dir,
        "verify -crl_check -CAfile ca/ca.crt -CRLfile revoked.crl worker.crt",
    );
    assert_ne!(
        crl_check.code, 0,
        "openssl ignored the CRL: {}",
        crl_check.stdout
    );
    let listed = json(dir, "list --dir ca --json");
    assert_eq!(listed[0]["status"], "revoked");
    assert_eq!(listed[0]["revoke_reason"], "retired");
}

/// The root stays offline: an issuing CA is made on its own machine, signed by the root from
/// its public key, and signs nodes whose chains rma-ca and openssl both trust; both CAs'
/// revocations reach verification through one list file.
#[test]
fn an_issuing_ca_signs_nodes_that_openssl_verifies_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, "init --dir ca --name rma --network 10.42.0.0/16");
    let started = ok(dir, "init-issuing --dir issuing");
    assert!(started.contains("sign-ca"), "{started}");
    assert!(!dir.join("issuing/ca.crt").exists());
    // The groups it may give are required (clap's usage message names the option).
    let ungrouped = rma_ca(
        dir,
        "sign-ca --dir ca --pub issuing/ca.pub --name enroll --network 10.42.128.0/17 --out-crt issuing.crt",
    );
    assert!(
        ungrouped.code != 0 && ungrouped.stderr.contains("--groups <GROUPS>"),
        "{}",
        ungrouped.stderr
    );
    assert!(!dir.join("issuing.crt").exists());
    ok(
        dir,
        "sign-ca --dir ca --pub issuing/ca.pub --name enroll --network 10.42.128.0/17 --groups workers,gpu --duration 1y --out-crt issuing.crt",
    );
    refused(
        dir,
        "sign-ca --dir ca --pub issuing/ca.pub --name wide --network 10.0.0.0/8 --any-groups --out-crt wide.crt",
        "not inside the root CA network",
    );
    ok(
        dir,
        "install-ca --dir issuing --cert issuing.crt --root ca/ca.crt",
    );
    let printed = json(dir, "print --json issuing.crt");
    assert_eq!(printed["issuer"], "rma");
    assert_eq!(printed["path_len"], 0);
    assert_eq!(printed["network"], "10.42.128.0/17");
    assert_eq!(
        printed["permitted_groups"],
        serde_json::json!(["gpu", "workers"])
    );

    ok(dir, "keygen --out-key w.key --out-pub w.pub");
    let signed = ok(
        dir,
        "sign --dir issuing --name w1 --pub w.pub --groups workers --out-crt w1.crt",
    );
    assert!(signed.contains("mesh IP 10.42.128.1/17"), "{signed}");
    refused(
        dir,
        "sign --dir issuing --name w9 --pub w.pub --ip 10.42.0.9 --out-crt w9.crt",
        "outside the CA network",
    );
    // The issuing CA gives only its groups: a machine it signs is never routerd.
    refused(
        dir,
        "sign --dir issuing --name w8 --pub w.pub --groups workers,routerd --out-crt w8.crt",
        "group \"routerd\" is not one CA \"enroll\" may give (its groups: gpu,workers)",
    );
    assert!(!dir.join("w8.crt").exists());
    // Signed again, narrower: the earlier certificate stays valid for the chains that
    // present it, and sign-ca says so and how to revoke it.
    let fingerprint = json(dir, "print --json issuing.crt")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let narrowed = rma_ca(
        dir,
        "sign-ca --dir ca --pub issuing/ca.pub --name enroll --network 10.42.128.0/17 --groups workers --force --out-crt narrowed.crt",
    );
    assert_eq!(narrowed.code, 0, "{}", narrowed.stderr);
    assert!(
        narrowed.stderr.contains("note: the earlier certificate")
            && narrowed
                .stderr
                .contains(&format!("rma-ca revoke --dir ca {fingerprint}")),
        "{}",
        narrowed.stderr
    );
    let chain = pem::parse_many(fs::read(dir.join("w1.crt")).unwrap()).unwrap();
    assert_eq!(
        chain.len(),
        2,
        "the node certificate, then the issuing CA's"
    );
    let trusted = ok(dir, "verify --ca ca/ca.crt w1.crt");
    assert!(trusted.contains("issuing CA of"), "{trusted}");
    let verified = openssl(
        dir,
        "verify -CAfile ca/ca.crt -untrusted issuing.crt w1.crt",
    );
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    fs::write(dir.join("leaf.crt"), pem::encode(&chain[0])).unwrap();
    ok(
        dir,
        "verify --ca ca/ca.crt --untrusted issuing.crt leaf.crt",
    );
    refused(
        dir,
        "verify --ca ca/ca.crt leaf.crt",
        "signed by another CA",
    );
    let without = openssl(dir, "verify -CAfile ca/ca.crt leaf.crt");
    assert_ne!(without.code, 0, "openssl trusted a chain without its link");

    // The issuing CA revokes its node; the root revokes the issuing CA. One file carries both.
    ok(
        dir,
        "sign --dir issuing --name w2 --pub w.pub --out-crt w2.crt --force",
    );
    ok(dir, "revoke --dir issuing w1");
    ok(dir, "crl --dir issuing --out issuing.crl");
    ok(dir, "crl --dir ca --out lists.crl --include issuing.crl");
    refused(
        dir,
        "verify --ca ca/ca.crt --crl lists.crl w1.crt",
        "revoked at",
    );
    ok(dir, "verify --ca ca/ca.crt --crl lists.crl w2.crt");
    let crl_check = openssl(
        dir,
        "verify -crl_check_all -CAfile ca/ca.crt -untrusted issuing.crt -CRLfile lists.crl w1.crt",
    );
    assert_ne!(crl_check.code, 0, "openssl ignored the issuing CA's list");
    let fine = openssl(
        dir,
        "verify -crl_check_all -CAfile ca/ca.crt -untrusted issuing.crt -CRLfile lists.crl w2.crt",
    );
    assert_eq!(fine.code, 0, "{}{}", fine.stdout, fine.stderr);

    ok(dir, "revoke --dir ca enroll --reason retired");
    ok(
        dir,
        "crl --dir ca --out lists.crl --include issuing.crl --force",
    );
    refused(
        dir,
        "verify --ca ca/ca.crt --crl lists.crl w2.crt",
        "issuing CA \"enroll\": revoked",
    );
    let listed = json(dir, "list --dir ca --json");
    assert_eq!(listed[0]["kind"], "issuing-ca");
    assert_eq!(listed[0]["status"], "revoked");
}

#[test]
fn private_keys_are_mode_0600_and_never_overwritten_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, "init --dir ca --name rma --network 10.42.0.0/16");
    ok(
        dir,
        "sign --dir ca --name lab --out-key lab.key --out-crt lab.crt",
    );
    for key in ["ca/ca.key", "lab.key"] {
        let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    ok(dir, "keygen --out-key n.key --out-pub n.pub");
    refused(
        dir,
        "keygen --out-key n.key --out-pub fresh.pub",
        "n.key: already exists",
    );
    let before = fs::read(dir.join("n.key")).unwrap();
    ok(dir, "keygen --out-key n.key --out-pub n.pub --force");
    assert_ne!(before, fs::read(dir.join("n.key")).unwrap());

    // A CA key others may read is refused, as ssh refuses such a key, and nothing is signed.
    fs::set_permissions(dir.join("ca/ca.key"), fs::Permissions::from_mode(0o640)).unwrap();
    refused(
        dir,
        "sign --dir ca --name late --out-key late.key --out-crt late.crt",
        "ca.key: a private key readable by others (mode 0640)",
    );
    fs::set_permissions(dir.join("ca/ca.key"), fs::Permissions::from_mode(0o600)).unwrap();
    ok(
        dir,
        "sign --dir ca --name late --out-key late.key --out-crt late.crt",
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for fixture in ["corrupt.pem", "truncated.der", "alpha.key"] {
        fs::copy(testdata.join(fixture), dir.join(fixture)).unwrap();
    }
    ok(dir, "init --dir ca --name rma --network 10.42.0.0/16");
    ok(dir, "keygen --out-key n.key --out-pub n.pub");
    ok(
        dir,
        "sign --dir ca --name taken --pub n.pub --ip 10.42.0.9 --out-crt taken.crt",
    );
    let sign = |rest: &str| format!("sign --dir ca --out-crt new.crt {rest}");

    // Corrupt PEM and truncated DER, wherever a certificate, list or key is read.
    refused(dir, "print corrupt.pem", "corrupt.pem: not valid PEM");
    refused(
        dir,
        "print truncated.der",
        "truncated.der: malformed certificate",
    );
    refused(
        dir,
        "verify --ca ca/ca.crt truncated.der",
        "truncated.der: untrusted: malformed",
    );
    refused(
        dir,
        "verify --ca corrupt.pem taken.crt",
        "corrupt.pem: not valid PEM",
    );
    refused(
        dir,
        "verify --ca ca/ca.crt --crl truncated.der taken.crt",
        "truncated.der: malformed revocation list",
    );
    refused(
        dir,
        &sign("--name x --pub corrupt.pem"),
        "corrupt.pem: not valid PEM",
    );

    // A key file of the wrong kind, and a key that does not match the CA.
    refused(
        dir,
        &sign("--name x --pub n.key"),
        "n.key: holds a private key, expected a node public key file",
    );
    refused(
        dir,
        &sign("--name x --pub taken.crt"),
        "taken.crt: holds a certificate",
    );
    fs::create_dir(dir.join("mixed")).unwrap();
    for file in ["ca.crt", "ca.db"] {
        fs::copy(dir.join("ca").join(file), dir.join("mixed").join(file)).unwrap();
    }
    fs::copy(dir.join("alpha.key"), dir.join("mixed/ca.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Checked out 0644, like every file git keeps; a key must be its owner's alone.
        fs::set_permissions(dir.join("mixed/ca.key"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let sign_mixed = "sign --dir mixed --name x --pub n.pub --out-crt new.crt";
    refused(
        dir,
        sign_mixed,
        "mixed/ca.key: holds 2 private keys, expected a CA private key",
    );
    ok(dir, "init --dir second --name rma --network 10.42.0.0/16");
    fs::copy(dir.join("second/ca.key"), dir.join("mixed/ca.key")).unwrap();
    refused(
        dir,
        sign_mixed,
        "mixed/ca.key: key does not match the CA certificate mixed/ca.crt",
    );

    // An expired CA: made through the library with a validity that ended nine days ago.
    Authority::init(
        &dir.join("expired"),
        "old".parse().unwrap(),
        "10.44.0.0/16".parse().unwrap(),
        Duration::days(1),
        OffsetDateTime::now_utc() - Duration::days(10),
    )
    .unwrap();
    refused(
        dir,
        "sign --dir expired --name x --pub n.pub --out-crt new.crt",
        "expired/ca.crt: the CA expired at",
    );

    // Mesh IPs outside the network or already taken, and names already taken.
    refused(
        dir,
        &sign("--name x --pub n.pub --ip 10.99.0.1"),
        "mesh IP 10.99.0.1 is outside the CA network 10.42.0.0/16",
    );
    refused(
        dir,
        &sign("--name x --pub n.pub --ip 10.42.0.9"),
        "mesh IP 10.42.0.9 is already held by live certificate \"taken\"",
    );
    refused(
        dir,
        &sign("--name taken --pub n.pub"),
        "name \"taken\" is already held",
    );

    // Existing outputs, revoking what is not there, and a second CA in the same place.
    refused(
        dir,
        "sign --dir ca --name x --pub n.pub --out-crt taken.crt",
        "taken.crt: already exists",
    );
    refused(
        dir,
        &sign("--name x --out-key n.key"),
        "n.key: already exists",
    );
    refused(
        dir,
        "revoke --dir ca ghost",
        "no certificate named \"ghost\"",
    );
    ok(dir, "crl --dir ca --out list.crl");
    refused(
        dir,
        "crl --dir ca --out list.crl",
        "list.crl: already exists",
    );
    refused(
        dir,
        "init --dir ca --name rma --network 10.42.0.0/16",
        "a CA already exists here",
    );
    refused(
        dir,
        "init --dir tiny --name rma --network 10.42.0.0/31",
        "too small",
    );
    refused(
        dir,
        "verify --ca ca/ca.crt missing.crt",
        "missing.crt: No such file",
    );

    let usage = rma_ca(dir, "print taken.crt --json extra");
    assert_eq!(usage.code, 2, "usage errors exit 2: {}", usage.stderr);
    assert!(
        usage.stderr.contains("unexpected argument 'extra'"),
        "{}",
        usage.stderr
    );
}
