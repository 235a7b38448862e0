//! A lab: named network namespaces, links between them, and processes inside them, all removed
//! when the lab is dropped, even when a test panics. Namespaces get no route to the host's own
//! network: nothing here ever connects them to the root namespace.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use crate::wait;

/// Every namespace a lab makes starts with this and the creating process's ID.
const PREFIX: &str = "rmt";
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails unless the process can build namespaces: root and a TUN device are required, and the
/// end-to-end tests must not pass by quietly doing nothing.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    assert!(
        uid == "0" && Path::new("/dev/net/tun").exists(),
        "the end-to-end tests need root and /dev/net/tun (network namespaces, veth, TUN, \
         nftables): run them as root, e.g. `sudo make e2e`"
    );
}

/// Runs a command to completion, failing with its stderr when it fails.
/// Writes a private file (a key, a token) readable by its owner only, as the daemons demand.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    file.write_all(contents)
        .with_context(|| path.display().to_string())
}

pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// A namespace in a lab, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ns(pub String);

impl Ns {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// A daemon or tool running in a namespace, with its output going to a log file.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Its process ID (`ip netns exec` execs the program, so this is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Lab {
    id: String,
    namespaces: Vec<Ns>,
    procs: Vec<Proc>,
    dir: PathBuf,
    /// The scratch directory of a test lab, removed with it.
    _scratch: Option<tempfile::TempDir>,
    /// Whether processes get a process group of their own (see [`Lab::named`]).
    detach: bool,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        require_root();
        sweep_stale();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let scratch = tempfile::tempdir()?;
        Ok(Self {
            id: format!("{PREFIX}{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir: scratch.path().to_owned(),
            _scratch: Some(scratch),
            detach: false,
        })
    }

    /// A lab for people rather than tests (the demo): namespaces are `<name>-<role>`, files stay
    /// in `dir` (which must exist), and each process runs in a process group of its own, so a
    /// Ctrl-C in the terminal reaches only the program that owns the lab, which cleans up (see
    /// [`remove_namespaces`]), and [`Lab::keep`] can leave everything running.
    pub fn named(name: &str, dir: &Path) -> anyhow::Result<Self> {
        require_root();
        anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
        Ok(Self {
            id: name.to_owned(),
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir: dir.to_owned(),
            _scratch: None,
            detach: true,
        })
    }

    /// Leaves every namespace and process running ([`remove_namespaces`] ends them).
    pub fn keep(mut self) {
        self.procs.clear();
        self.namespaces.clear();
    }

    /// The directory for configs, certificates and logs (a test lab's is removed with it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a namespace with loopback up.
    pub fn namespace(&mut self, role: &str) -> anyhow::Result<Ns> {
        let ns = Ns(format!("{}-{role}", self.id));
        run("ip", &["netns", "add", &ns.0])?;
        self.namespaces.push(ns.clone());
        self.ip(&ns, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip` inside `ns`.
    pub fn ip(&self, ns: &Ns, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", ns.name()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs any command inside `ns` to completion.
    pub fn exec(&self, ns: &Ns, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["netns", "exec", ns.name(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Joins `a` and `b` with a veth pair whose ends are created directly inside them (so the
    /// host's namespace never holds them), and brings both ends up.
    pub fn link(&self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> anyhow::Result<()> {
        run(
            "ip",
            &[
                "link",
                "add",
                "name",
                a_if,
                "netns",
                a.name(),
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                b.name(),
            ],
        )?;
        self.ip(a, &["link", "set", a_if, "up"])?;
        self.ip(b, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    pub fn addr(&self, ns: &Ns, iface: &str, cidr: &str) -> anyhow::Result<()> {
        self.ip(ns, &["addr", "add", cidr, "dev", iface]).map(drop)
    }

    /// Loads an nftables ruleset into `ns`.
    pub fn nft(&self, ns: &Ns, ruleset: &str) -> anyhow::Result<()> {
        let path = self.dir().join(format!("{}.nft", ns.name()));
        std::fs::write(&path, ruleset)?;
        self.exec(ns, "nft", &["-f", &path.to_string_lossy()])
            .map(drop)
    }

    /// Starts `program` inside `ns` with its output in `<dir>/<name>.log`.
    pub fn spawn(
        &mut self,
        ns: &Ns,
        name: &str,
        program: &Path,
        args: &[&str],
    ) -> anyhow::Result<usize> {
        self.spawn_env(ns, name, program, args, &[])
    }

    /// Like [`Lab::spawn`], with extra environment variables.
    pub fn spawn_env(
        &mut self,
        ns: &Ns,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> anyhow::Result<usize> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name()])
            .arg(program)
            .args(args)
            .envs(env.iter().copied());
        self.track(name, program, command)
    }

    /// Starts `program` in the host's namespaces, as [`Lab::spawn_env`] does in a lab
    /// namespace: for a program that puts what it starts into a namespace itself (podman's
    /// `--network ns:PATH`), and is stopped with the lab.
    pub fn spawn_outside(
        &mut self,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> anyhow::Result<usize> {
        let mut command = Command::new(program);
        command.args(args).envs(env.iter().copied());
        self.track(name, program, command)
    }

    /// Runs `command` with its output in `<dir>/<name>.log`, stopped with the lab.
    fn track(&mut self, name: &str, program: &Path, mut command: Command) -> anyhow::Result<usize> {
        let log = self.dir().join(format!("{name}.log"));
        let out = File::create(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if self.detach {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(self.procs.len() - 1)
    }

    pub fn proc(&mut self, handle: usize) -> &mut Proc {
        &mut self.procs[handle]
    }

    /// Starts a server that prints a line containing `listening` once it accepts (the probe's
    /// servers, `iperf3 --forceflush`), and waits until it has.
    pub fn spawn_listening(
        &mut self,
        ns: &Ns,
        name: &str,
        program: &Path,
        args: &[&str],
    ) -> anyhow::Result<usize> {
        let handle = self.spawn(ns, name, program, args)?;
        let proc = &mut self.procs[handle];
        wait::until(
            &format!("{name} to listen"),
            Duration::from_secs(10),
            || proc.log_text().contains("listening").then_some(()),
        )?;
        Ok(handle)
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to a process.
    pub fn signal(&mut self, handle: usize, signal: &str) -> anyhow::Result<()> {
        let pid = self.procs[handle].child.id().to_string();
        run("kill", &["-s", signal, &pid]).map(drop)
    }

    /// Stops a process and waits for it.
    pub fn stop(&mut self, handle: usize) {
        self.procs[handle].stop();
    }

    /// Waits for a process to exit by itself and returns its status.
    pub fn wait_exit(
        &mut self,
        handle: usize,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let proc = &mut self.procs[handle];
        let name = proc.name.clone();
        wait::until(&format!("{name} to exit"), timeout, || proc.exited())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for proc in &mut self.procs {
            proc.stop();
            if failed {
                let text = proc.log_text();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("---- last lines of {} ----", proc.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            kill_namespace(&ns.0);
        }
    }
}

/// Kills whatever still runs in a namespace, then deletes it.
fn kill_namespace(name: &str) {
    for pid in pids(name) {
        let _ = Command::new("kill").args(["-9", &pid]).status();
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// The CPU time process `pid` has run, all its live threads summed: the first field (ns) of
/// each /proc/PID/task/TID/schedstat. A thread that exits takes its time with it, so subtract
/// two readings with `saturating_sub`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let tasks = format!("/proc/{pid}/task");
    let (mut total, mut read) = (0, 0);
    for task in std::fs::read_dir(&tasks).with_context(|| tasks.clone())? {
        let path = task?.path().join("schedstat");
        // A thread that exited since the listing has nothing left to count.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ran: u64 = text
            .split_whitespace()
            .next()
            .with_context(|| format!("an empty {}", path.display()))?
            .parse()
            .with_context(|| path.display().to_string())?;
        total += ran;
        read += 1;
    }
    anyhow::ensure!(
        read > 0,
        "no thread of process {pid} could be read in {tasks}"
    );
    Ok(Duration::from_nanos(total))
}

/// The processes running in namespace `name`.
pub fn pids(name: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Kills everything running in the namespaces named `<name>-*` and deletes them: what a
/// [`Lab::named`] lab leaves after [`Lab::keep`] or when its owner is killed. Returns how many
/// there were.
pub fn remove_namespaces(name: &str) -> usize {
    let prefix = format!("{name}-");
    let mut removed = 0;
    for ns in namespaces().iter().filter(|ns| ns.starts_with(&prefix)) {
        kill_namespace(ns);
        removed += 1;
    }
    removed
}

/// The names of every network namespace.
pub fn namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Removes namespaces left by labs whose process no longer exists (a run that was killed).
fn sweep_stale() {
    for name in namespaces() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            kill_namespace(&name);
        }
    }
}
