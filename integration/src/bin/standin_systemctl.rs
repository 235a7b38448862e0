//! `standin-systemctl`: what the deployment guide's test (`integration/tests/guide.rs`) puts
//! on each namespace machine as `systemctl`, since those machines have no systemd. It runs the
//! installed unit files as systemd would, as far as the guide relies on them: `ExecStartPre=`
//! then `ExecStart=` with `LoadCredential=` files in `$CREDENTIALS_DIRECTORY`
//! (/run/credentials/UNIT), `StateDirectory=` and `RuntimeDirectory=` made, in `/` with
//! systemd's clean environment (its PATH and the unit's `Environment=`), and, for
//! `Type=notify`, a wait for `READY=1` on `$NOTIFY_SOCKET`. Verbs: `enable [--now]`, `start`,
//! `restart`, `reload` (`ExecReload=` with `$MAINPID`), `stop`, `is-active`, `daemon-reload`.
//! It does not switch users (`DynamicUser=`), sandbox, or restart a unit that fails, and it
//! refuses unit syntax it does not read (quotes, line continuations, prefixes other than `-`)
//! rather than misread it; output goes to /var/log/standin/UNIT.log.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
const STATE: &str = "/run/standin";
const LOGS: &str = "/var/log/standin";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The PATH systemd gives a service.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of a unit's [Service] section this stand-in acts on.
#[derive(Debug, Default)]
struct Unit {
    notify: bool,
    exec_start: Vec<String>,
    exec_start_pre: Vec<Vec<String>>,
    exec_reload: Vec<Vec<String>>,
    credentials: Vec<(String, PathBuf)>,
    state_dirs: Vec<String>,
    runtime_dirs: Vec<String>,
    environment: Vec<(String, String)>,
}

fn unit_name(arg: &str) -> String {
    if arg.contains('.') {
        arg.to_owned()
    } else {
        format!("{arg}.service")
    }
}

fn load(name: &str) -> anyhow::Result<Unit> {
    let path = UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("Unit {name} not found."))?;
    let text = std::fs::read_to_string(&path)?;
    let mut unit = Unit::default();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.ends_with('\\') {
            bail!("{name}: a continued line, which this stand-in does not read: {line}");
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_service || line.starts_with('#') {
            continue;
        }
        let (key, value) = (key.trim(), value.trim());
        let words = || {
            value
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let command = || -> anyhow::Result<Vec<String>> {
            if value.contains(['"', '\'']) || value.starts_with(['@', '+', '!', ':']) {
                bail!("{name}: {key}={value}: quoting or a prefix this stand-in does not read");
            }
            Ok(words())
        };
        match key {
            "Type" => unit.notify = value == "notify",
            "ExecStart" => unit.exec_start = command()?,
            "ExecStartPre" => unit.exec_start_pre.push(command()?),
            "ExecReload" => unit.exec_reload.push(command()?),
            "LoadCredential" => {
                let (id, source) = value
                    .split_once(':')
                    .with_context(|| format!("{name}: LoadCredential={value}"))?;
                unit.credentials
                    .push((id.to_owned(), PathBuf::from(source)));
            }
            "StateDirectory" => unit.state_dirs.extend(words()),
            "RuntimeDirectory" => unit.runtime_dirs.extend(words()),
            "Environment" => {
                for pair in words() {
                    if let Some((k, v)) = pair.split_once('=') {
                        unit.environment.push((k.to_owned(), v.to_owned()));
                    }
                }
            }
            _ => {}
        }
    }
    anyhow::ensure!(!unit.exec_start.is_empty(), "{name}: no ExecStart=");
    Ok(unit)
}

fn pid_file(name: &str) -> PathBuf {
    Path::new(STATE).join(format!("{name}.pid"))
}

/// A process's state and start time (fields 3 and 22 of /proc/PID/stat).
fn process(pid: u32) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(((*fields.first()?).to_owned(), (*fields.get(19)?).to_owned()))
}

/// The unit's process, if it still runs: the pid file holds its pid and start time, so that a
/// pid used again by another process is not taken for it.
fn running(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file(name)).ok()?;
    let (pid, started) = text.trim().split_once(' ')?;
    let pid: u32 = pid.parse().ok()?;
    let (state, start) = process(pid)?;
    (state != "Z" && start == started).then_some(pid)
}

fn log_tail(name: &str) -> String {
    let text =
        std::fs::read_to_string(Path::new(LOGS).join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(20).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn command(unit: &Unit, argv: &[String], credentials: &Path) -> anyhow::Result<Command> {
    let (program, args) = argv.split_first().context("an empty command line")?;
    // A leading `-` (failure ignored) is not part of the path.
    let mut cmd = Command::new(program.trim_start_matches('-'));
    cmd.args(args)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .envs(unit.environment.iter().map(|(k, v)| (k, v)))
        .env("CREDENTIALS_DIRECTORY", credentials)
        .current_dir("/")
        .stdin(Stdio::null());
    if let Some(dir) = unit.state_dirs.first() {
        cmd.env("STATE_DIRECTORY", Path::new("/var/lib").join(dir));
    }
    Ok(cmd)
}

fn start(name: &str) -> anyhow::Result<()> {
    if running(name).is_some() {
        return Ok(());
    }
    let unit = load(name)?;
    std::fs::create_dir_all(STATE)?;
    std::fs::create_dir_all(LOGS)?;
    let credentials = Path::new("/run/credentials").join(name);
    std::fs::create_dir_all(&credentials)?;
    for (id, source) in &unit.credentials {
        let target = credentials.join(id);
        let _ = std::fs::remove_file(&target);
        std::fs::copy(source, &target)
            .with_context(|| format!("{name}: LoadCredential {}", source.display()))?;
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
    }
    for dir in &unit.state_dirs {
        std::fs::create_dir_all(Path::new("/var/lib").join(dir))?;
    }
    for dir in &unit.runtime_dirs {
        std::fs::create_dir_all(Path::new("/run").join(dir))?;
    }
    let log_path = Path::new(LOGS).join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    for pre in &unit.exec_start_pre {
        let status = command(&unit, pre, &credentials)?
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()?;
        if !status.success() && !pre[0].starts_with('-') {
            bail!(
                "{name}: ExecStartPre {pre:?} failed ({status}):\n{}",
                log_tail(name)
            );
        }
    }
    let socket_path = Path::new(STATE).join(format!("{name}.notify"));
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path)?;
    let mut main = command(&unit, &unit.exec_start, &credentials)?;
    if unit.notify {
        main.env("NOTIFY_SOCKET", &socket_path);
    }
    let mut child = main
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("{name}: starting {:?}", unit.exec_start))?;
    let (_, started) = process(child.id()).context("the process ended at once")?;
    std::fs::write(pid_file(name), format!("{} {started}", child.id()))?;
    if unit.notify {
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name}: exited before it was ready ({status}):\n{}",
                    log_tail(name)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name}: not ready after {READY_TIMEOUT:?}:\n{}",
                    log_tail(name)
                );
            }
        }
    }
    Ok(())
}

fn signal(name: &str, signal: &str) -> anyhow::Result<bool> {
    let Some(pid) = running(name) else {
        return Ok(false);
    };
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()?;
    Ok(status.success())
}

/// Runs the unit's `ExecReload=` lines with `$MAINPID` set to the running process.
fn reload(name: &str) -> anyhow::Result<()> {
    let unit = load(name)?;
    let pid = running(name).with_context(|| format!("{name} is not active, cannot reload."))?;
    anyhow::ensure!(!unit.exec_reload.is_empty(), "{name}: no ExecReload=");
    let credentials = Path::new("/run/credentials").join(name);
    for line in &unit.exec_reload {
        let argv: Vec<String> = line
            .iter()
            .map(|w| w.replace("$MAINPID", &pid.to_string()))
            .collect();
        let status = command(&unit, &argv, &credentials)?.status()?;
        anyhow::ensure!(
            status.success() || line[0].starts_with('-'),
            "{name}: ExecReload {argv:?} failed ({status})"
        );
    }
    Ok(())
}

fn stop(name: &str) -> anyhow::Result<()> {
    if signal(name, "TERM")? {
        let deadline = Instant::now() + Duration::from_secs(20);
        while running(name).is_some() {
            if Instant::now() > deadline {
                signal(name, "KILL")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(pid_file(name));
    Ok(())
}

fn enable(name: &str) -> anyhow::Result<()> {
    load(name)?;
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(wants)?;
    std::fs::write(wants.join(name), "")?;
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let now = args.iter().any(|a| a == "--now");
    let words: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some((verb, units)) = words.split_first() else {
        bail!("usage: systemctl VERB [UNIT...]");
    };
    let units: Vec<String> = units.iter().map(|u| unit_name(u)).collect();
    match verb.as_str() {
        "daemon-reload" => {}
        "enable" => {
            for unit in &units {
                enable(unit)?;
                if now {
                    start(unit)?;
                }
            }
        }
        "start" => units.iter().try_for_each(|u| start(u))?,
        "stop" => units.iter().try_for_each(|u| stop(u))?,
        "restart" => units
            .iter()
            .try_for_each(|u| stop(u).and_then(|()| start(u)))?,
        "reload" => units.iter().try_for_each(|u| reload(u))?,
        "is-active" => {
            let active = units.iter().all(|u| running(u).is_some());
            println!("{}", if active { "active" } else { "inactive" });
            return Ok(if active {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        other => bail!("standin-systemctl: {other} is not a verb the guide uses"),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
