//! `make bench-dataplane`: meshd against raw veth and three anchors (Nebula, wireguard-go and
//! boringtun-cli), measured in one run on the same two namespaces joined by one veth link.
//!
//! For each path, from namespace a to b, every tunnel at MTU 1420:
//! - TCP throughput over one stream and over four parallel streams (iperf3 `-P 4`), as the
//!   receiver counted it: BENCH_SECONDS seconds, BENCH_REPS repetitions, median;
//! - UDP throughput: the highest rate the receiver gets with under 1% loss, in 1392-byte
//!   datagrams (what fills MTU 1420), found by at most six 2-second trials that start at the
//!   path's TCP rate and bisect; printed with the loss at that rate;
//! - round-trip latency: 5,000 TCP request/response exchanges of 64 bytes, median and
//!   p99, and the median's excess over raw veth; and the CPU time both ends' daemons spent on
//!   them (all their threads, from /proc/PID/task/*/schedstat), per exchange;
//! - each daemon's resident memory, the larger of the two ends: VmRSS once the tunnel carries a
//!   ping and before any traffic, and VmHWM (the peak so far) after the single-stream TCP runs.
//!
//! Prints a markdown table with ratios to the best anchor, then meshd's single-stream TCP as a
//! share of raw veth's. Needs root. Installs what is missing: Nebula, wireguard-go,
//! wireguard-tools and iperf3 with apt-get; boringtun-cli, which only crates.io ships, with
//! `cargo install --locked` into target/anchors.
//!
//! `BENCH_PATHS=meshd,nebula` runs only the paths it names (raw veth, and the baseline below,
//! always run); without an anchor, the ratio to the best anchor is infinite.
//! `BENCH_RR_EXCHANGES` (5000) sets the length of the latency test.
//! `BENCH_BUSY_POLL_US=N` sets `[tun] busy_poll_us` for the meshd path (not the baseline).
//! `BENCH_BASELINE=/path/to/meshd` adds a path: that build of meshd, so a change can be
//! measured against the build before it. `BENCH_ROUNDS` (1) runs every path that many times,
//! one after another in each round, and reports each path's median over the rounds: with
//! `BENCH_REPS=1`, the two builds alternate, and drift on a shared machine falls on both.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use integration::bench::{
    crate_binary, ensure_crate_installed, ensure_installed, env_number, median,
};
use integration::lab::{Lab, Ns, cpu_time, run};
use integration::mesh::{self, NodeConfig, Pki};
use integration::wait;

const MTU: &str = "1420";

/// The UDP payload that fills MTU 1420 after the IPv4 (20) and UDP (8) headers: the largest
/// datagram no tunnel has to fragment.
const UDP_PAYLOAD: &str = "1392";
/// The length of one UDP trial in seconds, and the most trials per path: the search adds at
/// most 12 seconds of traffic to a path.
const UDP_SECONDS: &str = "2";
const UDP_TRIALS: usize = 6;
/// The loss under which a UDP rate counts as carried.
const UDP_MAX_LOSS_PERCENT: f64 = 1.0;
/// How long a failed iperf3 run is tried again.
const IPERF3_RETRY: Duration = Duration::from_secs(30);

/// The request/response exchanges of the latency test, unless BENCH_RR_EXCHANGES says.
const RR_EXCHANGES: u32 = 5000;

const BORINGTUN: &str = "boringtun-cli";
const BORINGTUN_VERSION: &str = "0.7.1";

/// The paths meshd is compared against; "vs best anchor" is against the fastest of them.
const ANCHORS: [&str; 3] = ["wireguard-go", "nebula", BORINGTUN];

#[derive(Clone)]
struct Measured {
    name: &'static str,
    tcp_mbit_s: f64,
    /// Four parallel TCP streams, summed.
    tcp4_mbit_s: f64,
    /// The best UDP rate with under 1% loss, and the loss at it.
    udp_mbit_s: f64,
    udp_lost_percent: f64,
    rr_median_us: f64,
    rr_p99_us: f64,
    /// CPU µs both ends' daemons spent per exchange; `None` for a path without a daemon.
    rr_cpu_us: Option<f64>,
    /// The larger end's resident memory before traffic; `None` for a path without a daemon.
    idle_rss_mib: Option<f64>,
    /// The larger end's peak resident memory, after the single-stream TCP runs.
    peak_rss_mib: Option<f64>,
}

/// A path's median over the rounds, each figure on its own.
fn over_rounds(name: &'static str, rounds: &[Measured]) -> Measured {
    let of = |f: fn(&Measured) -> f64| median(rounds.iter().map(f).collect());
    // A path has daemons in every round or in none.
    let of_daemons = |f: fn(&Measured) -> Option<f64>| {
        rounds
            .iter()
            .map(f)
            .collect::<Option<Vec<f64>>>()
            .map(median)
    };
    Measured {
        name,
        tcp_mbit_s: of(|m| m.tcp_mbit_s),
        tcp4_mbit_s: of(|m| m.tcp4_mbit_s),
        udp_mbit_s: of(|m| m.udp_mbit_s),
        udp_lost_percent: of(|m| m.udp_lost_percent),
        rr_median_us: of(|m| m.rr_median_us),
        rr_p99_us: of(|m| m.rr_p99_us),
        rr_cpu_us: of_daemons(|m| m.rr_cpu_us),
        idle_rss_mib: of_daemons(|m| m.idle_rss_mib),
        peak_rss_mib: of_daemons(|m| m.peak_rss_mib),
    }
}

fn field(text: &str, key: &str) -> anyhow::Result<f64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == key)
        .with_context(|| format!("{key} in {text:?}"))?;
    Ok(words[at + 1].parse()?)
}

/// Everything the table shows for one path from `a` to `target` (an address in `b`), whose
/// daemons, if it has any, have process IDs `daemons`.
fn measure(
    lab: &mut Lab,
    a: &Ns,
    b: &Ns,
    target: Ipv4Addr,
    name: &'static str,
    daemons: Option<[u32; 2]>,
) -> anyhow::Result<Measured> {
    let probe = mesh::binary("probe")?;
    wait::until(
        &format!("{name} to carry a ping"),
        Duration::from_secs(20),
        || {
            lab.exec(a, "ping", &["-c", "1", "-W", "1", &target.to_string()])
                .ok()
        },
    )?;
    let rss = |field: &str| daemons.map(|pids| larger_rss_mib(pids, field)).transpose();
    let idle_rss_mib = rss("VmRSS:")?;
    let iperf = lab.spawn_listening(
        b,
        &format!("iperf3-{name}"),
        Path::new("/usr/bin/iperf3"),
        &["-s", "-p", "5201", "--forceflush"],
    )?;
    let tcp_mbit_s = tcp_rate(a, target, 1)?;
    // The high-water mark since the daemon started: the single-stream runs are its peak load.
    let peak_rss_mib = rss("VmHWM:")?;
    let tcp4_mbit_s = tcp_rate(a, target, 4)?;
    let udp = best_udp(a, target, tcp_mbit_s)?;
    lab.stop(iperf);
    let cpu_before = daemons.map(cpu_ns).transpose()?;
    let (rr_median_us, rr_p99_us) = round_trips(lab, a, b, target, name, &probe)?;
    let exchanges = f64::from(env_number("BENCH_RR_EXCHANGES", RR_EXCHANGES));
    let rr_cpu_us = match (daemons, cpu_before) {
        (Some(pids), Some(before)) => {
            Some(cpu_ns(pids)?.saturating_sub(before) as f64 / 1e3 / exchanges)
        }
        _ => None,
    };
    let measured = Measured {
        name,
        tcp_mbit_s,
        tcp4_mbit_s,
        udp_mbit_s: udp.mbit_s,
        udp_lost_percent: udp.lost_percent,
        rr_median_us,
        rr_p99_us,
        rr_cpu_us,
        idle_rss_mib,
        peak_rss_mib,
    };
    eprintln!(
        "{name}: TCP {:.0} Mbit/s, 4 streams {:.0} Mbit/s, UDP {:.0} Mbit/s at {:.2}% loss, \
         rr median {} us, p99 {} us, {} CPU us per exchange, RSS idle {} MiB, peak {} MiB",
        measured.tcp_mbit_s,
        measured.tcp4_mbit_s,
        measured.udp_mbit_s,
        measured.udp_lost_percent,
        measured.rr_median_us,
        measured.rr_p99_us,
        cpu_us(measured.rr_cpu_us),
        mib(measured.idle_rss_mib),
        mib(measured.peak_rss_mib)
    );
    Ok(measured)
}

/// One iperf3 run from `a` against the server at `target`, with `args` added; its JSON report.
/// A run that failed, or whose report has no receiver's sum (one such run ended a four-round
/// run after eight minutes), is run again, for at most IPERF3_RETRY: a server whose last
/// client died may turn the next away until it notices. Each failure's reason is printed.
fn iperf3(a: &Ns, target: Ipv4Addr, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let target = target.to_string();
    let mut full = vec![
        "netns",
        "exec",
        a.name(),
        "iperf3",
        "-c",
        &target,
        "-p",
        "5201",
        "-J",
    ];
    full.extend_from_slice(args);
    let once = || -> anyhow::Result<serde_json::Value> {
        // With -J, iperf3 puts the reason for a failure in its report on stdout, and exits 1.
        let out = Command::new("ip").args(&full).output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "iperf3 {args:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        match report.get("error").and_then(serde_json::Value::as_str) {
            Some(error) => anyhow::bail!("iperf3 {args:?} ({}): {error}", out.status),
            None if !out.status.success() => anyhow::bail!("iperf3 {args:?}: {}", out.status),
            None if report.pointer("/end/sum_received").is_none() => {
                anyhow::bail!("iperf3 {args:?}: a report without a receiver's sum")
            }
            None => Ok(report),
        }
    };
    let mut last = None;
    wait::until("iperf3 to complete a run", IPERF3_RETRY, || match once() {
        Ok(report) => Some(report),
        Err(e) => {
            eprintln!("{e:#}; running it again");
            last = Some(e);
            None
        }
    })
    .map_err(|timeout| last.take().unwrap_or(timeout))
}

/// A number in an iperf3 report, by JSON pointer.
fn reported(report: &serde_json::Value, pointer: &str) -> anyhow::Result<f64> {
    report
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("iperf3 report without {pointer}"))
}

/// TCP throughput in Mbit/s over `streams` parallel streams, the median of BENCH_REPS runs.
/// The receiver's sum counts only what arrived, not what the sender's buffers took.
fn tcp_rate(a: &Ns, target: Ipv4Addr, streams: u32) -> anyhow::Result<f64> {
    let seconds = env_number("BENCH_SECONDS", 10).to_string();
    let streams = streams.to_string();
    let rates = (0..env_number("BENCH_REPS", 3))
        .map(|_| {
            let report = iperf3(a, target, &["-t", &seconds, "-P", &streams])?;
            Ok(reported(&report, "/end/sum_received/bits_per_second")? / 1e6)
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(median(rates))
}

/// One UDP trial as the receiver saw it: the rate that arrived, and the share lost.
#[derive(Clone, Copy)]
struct UdpTrial {
    mbit_s: f64,
    lost_percent: f64,
}

/// Offers `offered` Mbit/s of UDP for UDP_SECONDS. The figures are the receiver's
/// (`sum_received`): iperf3's plain `sum` carries the sender's rate.
fn udp_trial(a: &Ns, target: Ipv4Addr, offered: f64) -> anyhow::Result<UdpTrial> {
    // At least 1 Mbit/s: to iperf3, a rate of 0 means unlimited.
    let rate = format!("{:.0}M", offered.max(1.0));
    let report = iperf3(
        a,
        target,
        &["-u", "-l", UDP_PAYLOAD, "-b", &rate, "-t", UDP_SECONDS],
    )?;
    Ok(UdpTrial {
        mbit_s: reported(&report, "/end/sum_received/bits_per_second")? / 1e6,
        lost_percent: reported(&report, "/end/sum_received/lost_percent")?,
    })
}

/// The highest UDP rate the path carries with under 1% loss: the first offer is the path's TCP
/// rate, then it doubles while offers pass and bisects between the last pass and the last
/// failure. It stops after UDP_TRIALS trials, once the two are within 10%, or when a passing
/// offer arrives short by more than 10%: then the sender is the limit, and offering more
/// changes nothing. If nothing passes, the trial with the least loss stands, and the loss
/// column shows it.
fn best_udp(a: &Ns, target: Ipv4Addr, tcp_mbit_s: f64) -> anyhow::Result<UdpTrial> {
    let mut best: Option<UdpTrial> = None;
    let mut least_lossy: Option<UdpTrial> = None;
    let (mut passed_at, mut failed_at) = (0.0, None);
    let mut offered = tcp_mbit_s;
    for _ in 0..UDP_TRIALS {
        let trial = udp_trial(a, target, offered)?;
        if trial.lost_percent < UDP_MAX_LOSS_PERCENT {
            passed_at = offered;
            if best.is_none_or(|b| trial.mbit_s > b.mbit_s) {
                best = Some(trial);
            }
            if trial.mbit_s < 0.9 * offered {
                break;
            }
        } else {
            failed_at = Some(offered);
            if least_lossy.is_none_or(|l| trial.lost_percent < l.lost_percent) {
                least_lossy = Some(trial);
            }
        }
        offered = match failed_at {
            None => 2.0 * passed_at,
            Some(failed) if passed_at >= 0.9 * failed => break,
            Some(failed) => (passed_at + failed) / 2.0,
        };
    }
    best.or(least_lossy).context("no UDP trial ran")
}

/// Round-trip latency in µs, median and p99: BENCH_RR_EXCHANGES (5,000) TCP request/response
/// exchanges of 64 bytes from `a` to the probe's server at `target`.
fn round_trips(
    lab: &mut Lab,
    a: &Ns,
    b: &Ns,
    target: Ipv4Addr,
    name: &str,
    probe: &Path,
) -> anyhow::Result<(f64, f64)> {
    let listen = format!("{target}:6000");
    let exchanges = env_number("BENCH_RR_EXCHANGES", RR_EXCHANGES).to_string();
    let server = lab.spawn_listening(
        b,
        &format!("rr-{name}"),
        probe,
        &["rr-server", "--listen", &listen],
    )?;
    let out = lab.exec(
        a,
        &probe.to_string_lossy(),
        &["rr-client", "--connect", &listen, "--count", &exchanges],
    )?;
    lab.stop(server);
    let text = String::from_utf8_lossy(&out.stdout);
    Ok((field(&text, "median_us")?, field(&text, "p99_us")?))
}

/// The larger of two processes' `key` in /proc/PID/status (`VmRSS:`, `VmHWM:`), in MiB.
fn larger_rss_mib(pids: [u32; 2], key: &str) -> anyhow::Result<f64> {
    let mut larger_kib: u64 = 0;
    for pid in pids {
        larger_kib = larger_kib.max(status_kib(pid, key)?);
    }
    Ok(larger_kib as f64 / 1024.0)
}

/// A `key:    1234 kB` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("{key} in {path}"))?;
    Ok(value.parse()?)
}

/// The CPU time in ns that processes `pids` have run together, all their threads.
fn cpu_ns(pids: [u32; 2]) -> anyhow::Result<u64> {
    let mut total = Duration::ZERO;
    for pid in pids {
        total += cpu_time(pid)?;
    }
    Ok(u64::try_from(total.as_nanos())?)
}

/// A CPU figure for the table: "-" for a path without a daemon.
fn cpu_us(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// A memory figure for the table: "-" for a path without a daemon.
fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn start_meshd(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    let busy_poll_us = match std::env::var("BENCH_BUSY_POLL_US") {
        Ok(us) => Some(us.parse().context("BENCH_BUSY_POLL_US")?),
        Err(_) => None,
    };
    start_meshd_binary(lab, a, b, &mesh::binary("meshd")?, busy_poll_us)
}

/// The meshd that BENCH_BASELINE names.
fn start_baseline(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    let path = std::env::var_os("BENCH_BASELINE").context("BENCH_BASELINE")?;
    start_meshd_binary(lab, a, b, &PathBuf::from(path), None)
}

fn start_meshd_binary(
    lab: &mut Lab,
    a: &Ns,
    b: &Ns,
    meshd: &Path,
    busy_poll_us: Option<u32>,
) -> anyhow::Result<(usize, usize)> {
    let pki = Pki::new(lab.dir(), "bench-ca", "10.42.0.0/16")?;
    let mut procs = Vec::new();
    for (ns, name, n, other) in [(a, "a", 1u8, 2u8), (b, "b", 2, 1)] {
        let issued = pki.issue(name, Ipv4Addr::new(10, 42, 0, n))?;
        let peer = (
            Ipv4Addr::new(10, 42, 0, other),
            SocketAddr::from(([192, 168, 100, other], 4242)),
        );
        let config = NodeConfig {
            name,
            ca: &pki.ca_path,
            issued: &issued,
            crl: None,
            static_peers: &[peer],
            firewall: None,
            metrics: None,
            lighthouses: &[],
            mtu: Some(1420),
            busy_poll_us,
            park_after: None,
            extra: "",
        };
        procs.push(mesh::start_binary(lab, ns, &config, meshd)?.proc);
    }
    Ok((procs[0], procs[1]))
}

fn wg_key(private: &str) -> anyhow::Result<String> {
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("stdin")?,
        private.as_bytes(),
    )?;
    Ok(String::from_utf8(child.wait_with_output()?.stdout)?
        .trim()
        .to_owned())
}

/// A fresh WireGuard key pair, (private, public), in the base64 that `wg` reads.
fn wg_keypair() -> anyhow::Result<(String, String)> {
    let private = String::from_utf8(run("wg", &["genkey"])?.stdout)?
        .trim()
        .to_owned();
    let public = wg_key(&private)?;
    Ok((private, public))
}

/// A userspace WireGuard that runs in the foreground and that `wg set` configures through its
/// UAPI socket, `/var/run/wireguard/<iface>.sock`. That directory is the host's, the same in
/// every namespace, so each end needs an interface name of its own.
struct Userspace<'a> {
    program: &'a Path,
    /// Its arguments before the interface name.
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a Path)],
    /// The interfaces at a and at b.
    ifaces: [&'a str; 2],
    /// The tunnel's subnet is 10.<net>.0.0/24, with a at .1 and b at .2.
    net: u8,
}

fn start_wireguard_go(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    let wireguard_go = Userspace {
        program: Path::new("/usr/bin/wireguard-go"),
        args: &[],
        // Without it, wireguard-go forks away from the process the lab stops.
        env: &[("WG_PROCESS_FOREGROUND", Path::new("1"))],
        ifaces: ["wgbench-a", "wgbench-b"],
        net: 99,
    };
    start_userspace(lab, a, b, &wireguard_go)
}

fn start_boringtun(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    // One worker thread per core, as wireguard-go runs (GOMAXPROCS), not boringtun's fixed 4.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let program = crate_binary(BORINGTUN);
    let boringtun = Userspace {
        program: &program,
        // --foreground: daemonizing would leave the lab holding a parent that has exited.
        // --disable-drop-privileges: it would setuid to getlogin()'s user, and exit when there
        // is none (no login session, as under make or sudo in a script).
        args: &[
            "--foreground",
            "--disable-drop-privileges",
            "--threads",
            &threads,
        ],
        env: &[],
        ifaces: ["btbench-a", "btbench-b"],
        net: 97,
    };
    start_userspace(lab, a, b, &boringtun)
}

/// Starts `wg.program` in `a` and in `b`, and makes the two peers of each other over the veth
/// link with `wg set`.
fn start_userspace(
    lab: &mut Lab,
    a: &Ns,
    b: &Ns,
    wg: &Userspace<'_>,
) -> anyhow::Result<(usize, usize)> {
    let keys = [wg_keypair()?, wg_keypair()?];
    let mut procs = Vec::new();
    for (i, (ns, iface)) in [a, b].into_iter().zip(wg.ifaces).enumerate() {
        let (me, peer) = (i + 1, 2 - i);
        let mut args = wg.args.to_vec();
        args.push(iface);
        let proc = lab.spawn_env(ns, iface, wg.program, &args, wg.env)?;
        // `wg show` succeeds only once the daemon answers on its UAPI socket: the device alone
        // is not enough for `wg set`, and a socket file may be left from an earlier run.
        wait::until(
            &format!("{} to answer on {iface}", wg.program.display()),
            Duration::from_secs(10),
            || lab.exec(ns, "wg", &["show", iface]).ok(),
        )?;
        let key_file = lab.dir().join(format!("{iface}.key"));
        std::fs::write(&key_file, &keys[i].0)?;
        let endpoint = format!("192.168.100.{peer}:51820");
        let allowed = format!("10.{}.0.{peer}/32", wg.net);
        lab.exec(
            ns,
            "wg",
            &[
                "set",
                iface,
                "private-key",
                &key_file.to_string_lossy(),
                "listen-port",
                "51820",
                "peer",
                &keys[1 - i].1,
                "endpoint",
                &endpoint,
                "allowed-ips",
                &allowed,
            ],
        )?;
        lab.addr(ns, iface, &format!("10.{}.0.{me}/24", wg.net))?;
        lab.ip(ns, &["link", "set", iface, "mtu", MTU, "up"])?;
        procs.push(proc);
    }
    Ok((procs[0], procs[1]))
}

fn start_nebula(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    // A fresh CA each time: nebula-cert refuses to overwrite one (BENCH_ROUNDS starts it again).
    let dir = lab.dir().join("nebula");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    run(
        "nebula-cert",
        &[
            "ca",
            "-name",
            "bench",
            "-out-crt",
            &path("ca.crt"),
            "-out-key",
            &path("ca.key"),
        ],
    )?;
    let mut procs = Vec::new();
    for (ns, name, n, other) in [(a, "a", 1u8, 2u8), (b, "b", 2, 1)] {
        run(
            "nebula-cert",
            &[
                "sign",
                "-ca-crt",
                &path("ca.crt"),
                "-ca-key",
                &path("ca.key"),
                "-name",
                name,
                "-ip",
                &format!("10.98.0.{n}/24"),
                "-out-crt",
                &path(&format!("{name}.crt")),
                "-out-key",
                &path(&format!("{name}.key")),
            ],
        )?;
        let config = format!(
            "pki:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n\
             static_host_map:\n  \"10.98.0.{other}\": [\"192.168.100.{other}:4243\"]\n\
             lighthouse:\n  am_lighthouse: false\n  hosts: []\n\
             listen:\n  host: 0.0.0.0\n  port: 4243\n\
             punchy:\n  punch: false\n\
             tun:\n  dev: nebula-{name}\n  mtu: {MTU}\n\
             logging:\n  level: warning\n\
             firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n  inbound:\n    - port: any\n      proto: any\n      host: any\n",
            ca = path("ca.crt"),
            cert = path(&format!("{name}.crt")),
            key = path(&format!("{name}.key")),
        );
        let config_path = dir.join(format!("{name}.yml"));
        std::fs::write(&config_path, config)?;
        procs.push(lab.spawn(
            ns,
            &format!("nebula-{name}"),
            Path::new("/usr/bin/nebula"),
            &["-config", &config_path.to_string_lossy()],
        )?);
    }
    Ok((procs[0], procs[1]))
}

fn main() -> anyhow::Result<()> {
    ensure_installed(&[
        ("nebula", "nebula"),
        ("wireguard-go", "wireguard-go"),
        ("wg", "wireguard-tools"),
        ("iperf3", "iperf3"),
        // Each path's readiness is a ping through it.
        ("ping", "iputils-ping"),
    ])?;
    ensure_crate_installed(BORINGTUN, BORINGTUN_VERSION)?;
    let mut lab = Lab::new()?;
    let a = lab.namespace("bench-a")?;
    let b = lab.namespace("bench-b")?;
    lab.link(&a, "eth0", &b, "eth0")?;
    lab.addr(&a, "eth0", "192.168.100.1/24")?;
    lab.addr(&b, "eth0", "192.168.100.2/24")?;

    type Starter = fn(&mut Lab, &Ns, &Ns) -> anyhow::Result<(usize, usize)>;
    let mut tunnels: Vec<(&'static str, Option<Starter>, Ipv4Addr)> = vec![
        ("raw veth", None, Ipv4Addr::new(192, 168, 100, 2)),
        ("meshd", Some(start_meshd), Ipv4Addr::new(10, 42, 0, 2)),
    ];
    if let Some(path) = std::env::var_os("BENCH_BASELINE") {
        anyhow::ensure!(
            Path::new(&path).exists(),
            "BENCH_BASELINE: {} is missing",
            Path::new(&path).display()
        );
        tunnels.push((
            "meshd baseline",
            Some(start_baseline),
            Ipv4Addr::new(10, 42, 0, 2),
        ));
    }
    tunnels.push((
        "wireguard-go",
        Some(start_wireguard_go),
        Ipv4Addr::new(10, 99, 0, 2),
    ));
    tunnels.push(("nebula", Some(start_nebula), Ipv4Addr::new(10, 98, 0, 2)));
    tunnels.push((
        BORINGTUN,
        Some(start_boringtun),
        Ipv4Addr::new(10, 97, 0, 2),
    ));
    // Raw veth stays: every ratio is to it or to the anchors that were run. So does the
    // baseline, which is there only because BENCH_BASELINE asked for it.
    if let Ok(only) = std::env::var("BENCH_PATHS") {
        tunnels.retain(|(name, ..)| {
            matches!(*name, "raw veth" | "meshd baseline")
                || only.split(',').any(|p| p.trim() == *name)
        });
    }
    let rounds = env_number("BENCH_ROUNDS", 1).max(1);
    let mut by_path: Vec<Vec<Measured>> = vec![Vec::new(); tunnels.len()];
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        for (i, (name, start, target)) in tunnels.iter().enumerate() {
            let procs = match start {
                Some(start) => Some(start(&mut lab, &a, &b)?),
                None => None,
            };
            let pids = procs.map(|(pa, pb)| [lab.proc(pa).pid(), lab.proc(pb).pid()]);
            by_path[i].push(measure(&mut lab, &a, &b, *target, name, pids)?);
            if let Some((pa, pb)) = procs {
                lab.stop(pa);
                lab.stop(pb);
            }
        }
    }
    let results: Vec<Measured> = tunnels
        .iter()
        .zip(&by_path)
        .map(|((name, _, _), rounds)| over_rounds(name, rounds))
        .collect();
    print_table(&results, rounds);
    Ok(())
}

/// The markdown table, then meshd against raw veth and against its baseline.
fn print_table(results: &[Measured], rounds: u32) {
    let raw = &results[0];
    let best_anchor = results
        .iter()
        .filter(|r| ANCHORS.contains(&r.name))
        .map(|r| r.tcp_mbit_s)
        .fold(0.0, f64::max);
    println!(
        "| path | TCP 1-stream Mbit/s (median of {} x {rounds}) | vs best anchor | \
         TCP 4-stream Mbit/s | UDP Mbit/s at <1% loss (loss) | RR median µs | RR p99 µs | \
         added median µs | RR CPU µs per exchange (both ends) | idle RSS MiB (larger end) | peak RSS MiB (larger end) |",
        env_number("BENCH_REPS", 3)
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {:.0} | {:.2}x | {:.0} | {:.0} ({:.2}%) | {:.0} | {:.0} | {:+.0} | {} | {} | {} |",
            r.name,
            r.tcp_mbit_s,
            r.tcp_mbit_s / best_anchor,
            r.tcp4_mbit_s,
            r.udp_mbit_s,
            r.udp_lost_percent,
            r.rr_median_us,
            r.rr_p99_us,
            r.rr_median_us - raw.rr_median_us,
            cpu_us(r.rr_cpu_us),
            mib(r.idle_rss_mib),
            mib(r.peak_rss_mib)
        );
    }
    if let Some(meshd) = results.iter().find(|r| r.name == "meshd") {
        println!(
            "\nmeshd single-stream TCP: {:.1}% of raw veth",
            100.0 * meshd.tcp_mbit_s / raw.tcp_mbit_s
        );
    }
    if let (Some(now), Some(before)) = (
        results.iter().find(|r| r.name == "meshd"),
        results.iter().find(|r| r.name == "meshd baseline"),
    ) {
        println!(
            "\nmeshd against its baseline: {:.3}x the throughput, {:+.0} µs at the RR median, {:+.0} µs at p99",
            now.tcp_mbit_s / before.tcp_mbit_s,
            now.rr_median_us - before.rr_median_us,
            now.rr_p99_us - before.rr_p99_us
        );
    }
}
