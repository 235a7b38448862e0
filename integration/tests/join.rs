//! One-command join with the real binaries, on loopback: an operator makes a root, an issuing
//! CA and a token with `rma-ca`; `rma-ca serve` runs the enrollment service; `meshd join`
//! enrolls a machine and writes a config that `meshd --check-config` accepts. Every refusal
//! (a used-up, revoked or foreign token, a name already held, a service that cannot be
//! reached, a machine that has joined) is clear and leaves nothing behind.

#![allow(clippy::unwrap_used)] // test code

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration::enroll::Operator;
use integration::mesh::binary;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str]) -> Run {
    run_with(program, args, &[])
}

fn run_with(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary(program).unwrap())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RMA_CA_DIR")
        .env_remove("RMA_JOIN_URL")
        .env_remove("RMA_JOIN_TOKEN")
        .output()
        .unwrap();
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn ok(program: &str, args: &[&str]) -> Run {
    let run = run(program, args);
    assert!(run.ok, "{program} {args:?}: {}{}", run.stdout, run.stderr);
    run
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file below `dir` with its contents and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode();
                files.insert(p.clone(), (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    files
}

/// `rma-ca serve`, stopped when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, crl: &Path) -> Serve {
    let mut child = Command::new(binary("rma-ca").unwrap())
        .args(["serve", "--dir", path(dir), "--listen", "127.0.0.1:0"])
        .args(["--crl", path(crl), "--cert-duration", "30d"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            let _ = tx.send(line);
        }
    });
    let mut serve = Serve {
        child,
        url: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while serve.url.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("rma-ca serve said where it listens");
        if let Some((_, url)) = line.split_once(" on ") {
            serve.url = url.trim().to_owned();
        }
    }
    serve
}

/// A root, an issuing CA it signed, the root's list, and the shipped worker bundle: what an
/// operator prepares once.
fn operator(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let operator = Operator::new(dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/bundles/worker.toml");
    operator
        .bundle("worker", &std::fs::read_to_string(shipped).unwrap())
        .unwrap();
    (operator.root, operator.issuing, operator.crl)
}

fn token(issuing: &Path, url: &str, uses: &str) -> String {
    let run = ok(
        "rma-ca",
        &[
            "token",
            "create",
            "--dir",
            path(issuing),
            "--groups",
            "workers",
            "--name-prefix",
            "worker-",
            "--uses",
            uses,
            "--ttl",
            "1h",
            "--bundle",
            "worker",
            "--url",
            url,
        ],
    );
    let token = run.stdout.trim().to_owned();
    assert!(
        run.stderr
            .contains(&format!("RMA_JOIN_TOKEN={token} meshd join {url} --start")),
        "the exact join command is printed: {}",
        run.stderr
    );
    token
}

/// A `meshd join` that must be refused with `expected` in its error, leaving `dir` as it was
/// (absent if it was).
fn refused(url: &str, token: &str, name: &str, dir: &Path, extra: &[&str], expected: &str) {
    let before = dir.exists().then(|| snapshot(dir));
    let mut args = vec!["join", url, token, "--name", name, "--dir", path(dir)];
    args.extend_from_slice(extra);
    let run = run("meshd", &args);
    assert!(!run.ok, "meshd join should be refused: {}", run.stdout);
    assert!(
        run.stderr.contains(expected),
        "{:?} lacks {expected:?}",
        run.stderr
    );
    assert_eq!(
        before,
        dir.exists().then(|| snapshot(dir)),
        "{}",
        run.stderr
    );
}

#[test]
fn a_machine_joins_with_one_command_and_every_refusal_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, issuing, crl) = operator(tmp.path());
    let service = serve(&issuing, &crl);
    let url = service.url.clone();
    let token = token(&issuing, &url, "1");

    let node = tmp.path().join("node-a/etc/meshd");
    let started = Instant::now();
    let joined = ok(
        "meshd",
        &["join", &url, &token, "--name", "a", "--dir", path(&node)],
    );
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("join took {seconds:.2} s: {}", joined.stdout);
    assert!(
        joined
            .stdout
            .contains("joined as worker-a (10.42.128.1) in groups workers")
    );
    let files = snapshot(&node);
    let names: Vec<String> = files
        .keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names
            .iter()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "ca.crt",
            "meshd.toml",
            "node.crt",
            "node.key",
            "node.pub",
            "pki.crl"
        ]
        .into(),
        "nothing else, no scratch left: {names:?}"
    );
    assert_eq!(files[&node.join("node.key")].1 & 0o777, 0o600);
    let config = node.join("meshd.toml");
    ok("meshd", &["--config", path(&config), "--check-config"]);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("name = \"lighthouse-1\"") && text.contains(&format!("url = \"{url}\"")));
    // The chain verifies against the root with the lists it got, as openssl sees it too.
    ok(
        "rma-ca",
        &[
            "verify",
            "--ca",
            path(&root.join("ca.crt")),
            "--crl",
            path(&node.join("pki.crl")),
            path(&node.join("node.crt")),
        ],
    );
    assert_eq!(
        std::fs::read(node.join("ca.crt")).unwrap(),
        std::fs::read(root.join("ca.crt")).unwrap()
    );

    // Joined already; the token is used up; nothing changes either way.
    refused(&url, &token, "a", &node, &[], "has joined already");
    let elsewhere = tmp.path().join("node-b");
    refused(&url, &token, "b", &elsewhere, &[], "used up");
    refused(&url, &token, "b", &node, &["--force"], "used up");

    // A token naming another root: a machine in the middle, or the wrong URL.
    let second = self::token(&issuing, &url, "3");
    let (head, _) = second.rsplit_once('_').unwrap();
    let foreign = format!("{head}_{}", "ab".repeat(32));
    refused(
        &url,
        &foreign,
        "b",
        &elsewhere,
        &[],
        "not the CA the token came from",
    );
    // A name a live certificate holds, an unreachable service, a malformed token.
    refused(&url, &second, "a", &elsewhere, &[], "already held");
    refused(
        "http://127.0.0.1:1",
        &second,
        "b",
        &elsewhere,
        &[],
        "cannot reach",
    );
    refused(
        &url,
        "rmajoin1_nonsense",
        "b",
        &elsewhere,
        &[],
        "not a join token",
    );
    // Revoked.
    let id = second.split('_').nth(1).unwrap();
    ok(
        "rma-ca",
        &["token", "revoke", "--dir", path(&issuing), &id[..8]],
    );
    refused(&url, &second, "b", &elsewhere, &[], "revoked");

    // --force joins again over the first machine's files, with new keys.
    let third = self::token(&issuing, &url, "1");
    let old_key = std::fs::read(node.join("node.key")).unwrap();
    ok(
        "meshd",
        &[
            "join",
            &url,
            &third,
            "--name",
            "a2",
            "--dir",
            path(&node),
            "--force",
        ],
    );
    assert_ne!(std::fs::read(node.join("node.key")).unwrap(), old_key);
    ok("meshd", &["--config", path(&config), "--check-config"]);

    // A machine with the package's example config only: the join sets the example aside.
    let packaged = tmp.path().join("node-c");
    std::fs::create_dir(&packaged).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/meshd.toml");
    std::fs::copy(&example, packaged.join("meshd.toml")).unwrap();
    let fourth = self::token(&issuing, &url, "1");
    ok(
        "meshd",
        &[
            "join",
            &url,
            &fourth,
            "--name",
            "c",
            "--dir",
            path(&packaged),
        ],
    );
    assert_eq!(
        std::fs::read(packaged.join("meshd.toml.before-join")).unwrap(),
        std::fs::read(&example).unwrap()
    );
    ok(
        "meshd",
        &[
            "--config",
            path(&packaged.join("meshd.toml")),
            "--check-config",
        ],
    );

    // Every use is on record.
    let list = ok(
        "rma-ca",
        &["token", "list", "--dir", path(&issuing), "--json"],
    );
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    let statuses: Vec<&str> = tokens
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["used-up", "revoked", "used-up", "used-up"]);
    let first_id = token.split('_').nth(1).unwrap();
    let uses = ok(
        "rma-ca",
        &["token", "uses", "--dir", path(&issuing), first_id],
    );
    let outcomes: Vec<&str> = uses
        .stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["issued", "used-up", "used-up"],
        "{}",
        uses.stdout
    );
}

/// A TLS terminator in front of `rma-ca serve`, as cloudflared is in front of it in public:
/// a certificate for `localhost` from a CA of the test's own. Returns its port.
fn tls_proxy(backend: &str, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> u16 {
    use tokio_rustls::rustls;
    let backend: std::net::SocketAddr = backend.trim_start_matches("http://").parse().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                });
            }
        });
    });
    port
}

#[test]
fn a_join_over_https_checks_the_services_certificate_against_the_systems_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, issuing, crl) = operator(tmp.path());
    let service = serve(&issuing, &crl);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let roots = tmp.path().join("roots.pem");
    std::fs::write(&roots, cert.cert.pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_roots = tmp.path().join("other-roots.pem");
    std::fs::write(&other_roots, other.cert.pem()).unwrap();
    let port = tls_proxy(&service.url, &cert);
    let url = format!("https://localhost:{port}");
    let token = token(&issuing, &url, "1");
    let node = tmp.path().join("node");

    // A certificate the system does not trust: refused before the token is sent.
    let args = [
        "join",
        url.as_str(),
        &token,
        "--name",
        "t",
        "--dir",
        path(&node),
    ];
    let untrusted = run_with("meshd", &args, &[("SSL_CERT_FILE", &other_roots)]);
    assert!(
        !untrusted.ok && untrusted.stderr.contains("TLS handshake"),
        "{}",
        untrusted.stderr
    );
    assert!(!node.exists());

    let joined = run_with("meshd", &args, &[("SSL_CERT_FILE", &roots)]);
    assert!(joined.ok, "{}{}", joined.stdout, joined.stderr);
    assert!(
        joined.stdout.contains("joined as worker-t"),
        "{}",
        joined.stdout
    );
    let config = std::fs::read_to_string(node.join("meshd.toml")).unwrap();
    assert!(config.contains(&format!("url = \"{url}\"")), "{config}");
    ok(
        "meshd",
        &["--config", path(&node.join("meshd.toml")), "--check-config"],
    );
}
