//! `make demo` as a newcomer runs it: with `--keep` the system stays up and answers, and
//! `--stop` removes it; a demo whose step fails exits non-zero, names the step, and leaves no
//! namespace or daemon behind. (`make test` also runs the plain demo.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use integration::lab::{self, Ns};
use integration::{mesh, traffic, wait};

const NAME: &str = "rmademo";

fn demo(args: &[&str]) -> Output {
    Command::new(mesh::binary("demo").unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The demo's namespaces.
fn namespaces() -> Vec<String> {
    lab::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{NAME}-")))
        .collect()
}

/// Removes whatever a failed assertion left running.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        lab::remove_namespaces(NAME);
    }
}

#[test]
fn the_demo_kept_running_answers_calls_until_it_is_stopped() {
    lab::require_root();
    let _cleanup = Cleanup;
    let dir = tempfile::tempdir().unwrap();
    let out = demo(&["--keep", "--dir", &dir.path().to_string_lossy()]);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("demo: all 12 steps passed"), "{printed}");
    assert!(
        printed.contains("routerd assigned 6 of the 10 services they offered"),
        "{printed}"
    );
    assert!(printed.contains("served again elsewhere in"), "{printed}");
    assert!(printed.contains("relayed via lighthouse-1"), "{printed}");
    assert!(printed.contains("make demo-stop"), "{printed}");

    // Still up after the demo exited: a call through routerd reaches a worker.
    assert_eq!(namespaces().len(), 10, "{:?}", namespaces());
    let routerd = Ns(format!("{NAME}-routerd"));
    let (status, _, body) = traffic::http(
        &routerd,
        "127.0.0.1:8080",
        "GET /service/rag/after-exit",
        None,
        &[],
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(["worker-1", "worker-2", "worker-3"].contains(&body["worker"].as_str().unwrap()));
    // The config each daemon ran is the example with the recorded edits.
    let config = std::fs::read_to_string(dir.path().join("worker-2/meshd.toml")).unwrap();
    assert!(
        config.starts_with("# Written by the demo from "),
        "{config}"
    );
    assert!(config.contains("gpu_memory = \"24 GiB\""), "{config}");

    let daemons: Vec<String> = namespaces().iter().flat_map(|ns| lab::pids(ns)).collect();
    assert!(daemons.len() >= 9, "{daemons:?}");
    let stop = demo(&["--stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(namespaces().is_empty(), "{:?}", namespaces());
    wait::until(
        "the demo's daemons to exit after demo --stop",
        Duration::from_secs(5),
        || (!daemons.iter().any(|pid| alive(pid))).then_some(()),
    )
    .unwrap();
}

/// Whether a process runs (a killed daemon whose parent, the demo, is gone may stay a zombie
/// until init reaps it: that is not running).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

#[test]
fn a_demo_whose_step_fails_exits_non_zero_and_leaves_nothing_running() {
    lab::require_root();
    let _cleanup = Cleanup;
    // The examples, with routerd's made invalid: routerd refuses to start.
    let configs = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for name in ["meshd.toml", "lighthouse.toml", "routerd.toml"] {
        std::fs::copy(examples.join(name), configs.path().join(name)).unwrap();
    }
    let routerd = configs.path().join("routerd.toml");
    let broken = std::fs::read_to_string(&routerd)
        .unwrap()
        .replace("balance = \"least-outstanding\"", "balance = \"fastest\"");
    std::fs::write(&routerd, broken).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = demo(&[
        "--configs",
        &configs.path().to_string_lossy(),
        "--dir",
        &dir.path().to_string_lossy(),
    ]);
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("demo: FAILED at step 5 (routerd's machine"),
        "{printed}"
    );
    assert!(
        printed.contains("fastest"),
        "routerd's own error is shown: {printed}"
    );
    assert!(namespaces().is_empty(), "{:?}", namespaces());
    let leftover = Command::new("pgrep")
        .args(["-f", &dir.path().to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "daemons of the failed demo still run: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}
