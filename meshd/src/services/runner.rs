//! The supervisor's hands: starting a process (in a process group of its own, with the
//! service's environment, user and directory, its output in meshd's log under the service's
//! name), signalling that group, driving a systemd unit with `systemctl`, and probing a
//! service's health over HTTP. Each reports back through [`Event`]s.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rma_daemon::token_bucket::{Limit, TokenBucket};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::spec::{Exec, LocalService, Runner};
use super::supervisor::Generation;

/// What happened to a service's start `Generation`, for the supervisor.
#[derive(Debug)]
pub enum Event {
    StartFailed(String, Generation, String),
    Exited(String, Generation, String),
    Probed(String, Generation, Option<Bytes>),
}

/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A line of a service's output longer than this is cut.
const MAX_LINE: usize = 4096;
/// Lines of output logged per service: a burst, then this many a second.
const LOG_LIMIT: Limit = Limit {
    rate: 50.0,
    burst: 200.0,
};
/// How often a running unit is asked whether it is still active.
const UNIT_POLL: Duration = Duration::from_secs(2);

/// A started service: its process group, or its unit's watcher.
#[derive(Debug)]
pub enum Running {
    Process(Pid),
    Unit(tokio::task::JoinHandle<()>),
}

/// `exit status 1`, `killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Starts `service` (start `generation`); its exit (or its unit's end) is reported as
/// [`Event::Exited`].
pub fn start(
    service: &LocalService,
    generation: Generation,
    mesh_ip: Ipv4Addr,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Option<Running>, String> {
    let name = service.name().to_owned();
    match &service.runner {
        Runner::External => Ok(None),
        Runner::Exec(exec) => spawn(&name, generation, exec, service.offer.port, mesh_ip, events)
            .map(|pid| Some(Running::Process(pid))),
        Runner::Unit(unit) => Ok(Some(Running::Unit(tokio::spawn(run_unit(
            name,
            generation,
            unit.clone(),
            events.clone(),
        ))))),
    }
}

fn spawn(
    name: &str,
    generation: Generation,
    exec: &Exec,
    port: u16,
    mesh_ip: Ipv4Addr,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Pid, String> {
    let (program, args) = exec
        .argv
        .split_first()
        .ok_or_else(|| "exec is empty".to_owned())?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("RMA_SERVICE", name)
        .env("RMA_MESH_IP", mesh_ip.to_string())
        .env("RMA_PORT", port.to_string())
        .envs(&exec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a stop reaches whatever it started too.
        .process_group(0);
    if let Some(dir) = &exec.working_dir {
        command.current_dir(dir);
    }
    if let Some(user) = &exec.user {
        let found = nix::unistd::User::from_name(user)
            .map_err(|e| format!("looking up user {user:?}: {e}"))?
            .ok_or_else(|| format!("there is no user {user:?}"))?;
        command.uid(found.uid.as_raw()).gid(found.gid.as_raw());
    }
    let mut child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| "the process has no id".to_owned())?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(name.to_owned(), "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(name.to_owned(), "stderr", err));
    }
    tracing::info!(service = %name, %program, pid = pid.as_raw(), "service started");
    let events = events.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        let how = match child.wait().await {
            Ok(status) => describe(status),
            Err(e) => format!("lost: {e}"),
        };
        // Whatever it started goes with it: a child that outlived it would hold its port.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = events.send(Event::Exited(name, generation, how));
    });
    Ok(pid)
}

/// Sends `signal` to a started service: its process group, or its unit.
pub fn signal(name: &str, running: &Running, signal: Signal) {
    match running {
        Running::Process(pid) => {
            if let Err(e) = killpg(*pid, signal) {
                tracing::debug!(service = %name, error = %e, "signalling the service");
            }
        }
        Running::Unit(_) => {}
    }
}

/// Stops a unit with `systemctl stop` (its watcher has been ended), and reports the end
/// once, when that returns.
pub fn stop_unit(
    name: &str,
    generation: Generation,
    unit: &str,
    events: &mpsc::UnboundedSender<Event>,
) {
    let (name, unit, events) = (name.to_owned(), unit.to_owned(), events.clone());
    tokio::spawn(async move {
        let how = match systemctl(&["stop", &unit]).await {
            Ok(()) => format!("unit {unit} stopped"),
            Err(e) => e,
        };
        let _ = events.send(Event::Exited(name, generation, how));
    });
}

/// A unit outlived its stop grace: SIGKILL to its processes. The stop already under way
/// reports the end.
pub fn kill_unit(unit: &str) {
    let unit = unit.to_owned();
    tokio::spawn(async move {
        if let Err(e) = systemctl(&["kill", "--signal=SIGKILL", &unit]).await {
            tracing::warn!(%unit, error = %e, "killing the unit");
        }
    });
}

/// Stops every unit the services name, before any is started: one left running by an
/// earlier meshd (a crash, a restart) runs only if routerd assigns it again.
pub async fn stop_leftover_units(services: &[LocalService]) {
    for service in services {
        if let Runner::Unit(unit) = &service.runner
            && let Err(e) = systemctl(&["stop", unit]).await
        {
            tracing::debug!(service = %service.name(), %unit, error = %e, "stopping a leftover unit");
        }
    }
}

async fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(args)
        // Its failures would be reported to meshd's notification socket, as if meshd's own.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {}: {}: {}",
            args.join(" "),
            describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Starts a unit, then watches it until it is no longer active.
async fn run_unit(
    name: String,
    generation: Generation,
    unit: String,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Err(e) = systemctl(&["start", &unit]).await {
        let _ = events.send(Event::StartFailed(name, generation, e));
        return;
    }
    tracing::info!(service = %name, %unit, "unit started");
    loop {
        tokio::time::sleep(UNIT_POLL).await;
        if systemctl(&["is-active", "--quiet", &unit]).await.is_err() {
            let how = format!("unit {unit} is no longer active");
            let _ = events.send(Event::Exited(name, generation, how));
            return;
        }
    }
}

/// GETs the service's health path on the mesh IP; a 2xx answer passes, with its body.
pub fn probe(
    service: &LocalService,
    generation: Generation,
    mesh_ip: Ipv4Addr,
    events: &mpsc::UnboundedSender<Event>,
) {
    let (name, health, events) = (
        service.name().to_owned(),
        service.offer.health.clone(),
        events.clone(),
    );
    let addr = SocketAddr::from((mesh_ip, service.offer.port));
    tokio::spawn(async move {
        let reply = rma_daemon::http_client::call(
            addr,
            None,
            "GET",
            &health,
            &[("user-agent", "meshd-health")],
            Bytes::new(),
            PROBE_TIMEOUT,
        )
        .await;
        let passed = reply.ok().filter(|r| r.status.is_success()).map(|r| r.body);
        let _ = events.send(Event::Probed(name, generation, passed));
    });
}

/// Logs a service's output line by line under its name: lines cut at [`MAX_LINE`], and at
/// most [`LOG_LIMIT`] of them, with a count of those left out.
async fn forward(name: String, stream: &'static str, output: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(output);
    let mut bucket = TokenBucket::new(LOG_LIMIT, Instant::now());
    let mut dropped = 0u64;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // At most MAX_LINE bytes: a longer line is logged in pieces.
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if bucket.take(LOG_LIMIT, Instant::now()).is_ok() {
            if dropped > 0 {
                tracing::warn!(service = %name, stream, dropped, "service output lines left out of the log");
                dropped = 0;
            }
            tracing::info!(service = %name, stream, "{}", text.trim_end_matches(['\n', '\r']));
        } else {
            dropped += 1;
        }
    }
}
