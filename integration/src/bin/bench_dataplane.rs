//! `make bench-dataplane`: meshd against raw veth, Nebula and wireguard-go, measured in one run
//! on the same two namespaces joined by one veth link.
//!
//! For each path: single-stream TCP throughput (iperf3, BENCH_SECONDS seconds, BENCH_REPS
//! repetitions, median) and round-trip latency (1,000 TCP request/response exchanges of 64
//! bytes, median and p99). Every tunnel uses MTU 1420. Prints a markdown table with ratios to
//! the better anchor. Needs root; installs the anchors with apt-get if they are missing.
//!
//! `BENCH_BASELINE=/path/to/meshd` adds a path: that build of meshd, so a change can be
//! measured against the build before it. `BENCH_ROUNDS` (1) runs every path that many times,
//! one after another in each round, and reports each path's median over the rounds: with
//! `BENCH_REPS=1`, the two builds alternate, and drift on a shared machine falls on both.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use integration::bench::{ensure_installed, env_number, median};
use integration::lab::{Lab, Ns, run};
use integration::mesh::{self, NodeConfig, Pki};
use integration::wait;

const MTU: &str = "1420";

#[derive(Clone)]
struct Measured {
    name: &'static str,
    mbit_s: f64,
    rr_median_us: f64,
    rr_p99_us: f64,
}

/// A path's median over the rounds.
fn over_rounds(name: &'static str, rounds: &[Measured]) -> Measured {
    let of = |f: fn(&Measured) -> f64| median(rounds.iter().map(f).collect());
    Measured {
        name,
        mbit_s: of(|m| m.mbit_s),
        rr_median_us: of(|m| m.rr_median_us),
        rr_p99_us: of(|m| m.rr_p99_us),
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

/// Throughput and latency from `a` to `target` (an address in `b`).
fn measure(
    lab: &mut Lab,
    a: &Ns,
    b: &Ns,
    target: Ipv4Addr,
    name: &'static str,
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
    let iperf = lab.spawn_listening(
        b,
        &format!("iperf3-{name}"),
        Path::new("/usr/bin/iperf3"),
        &["-s", "-p", "5201", "--forceflush"],
    )?;
    let seconds = env_number("BENCH_SECONDS", 10).to_string();
    let mut rates = Vec::new();
    for _ in 0..env_number("BENCH_REPS", 3) {
        let out = lab.exec(
            a,
            "iperf3",
            &[
                "-c",
                &target.to_string(),
                "-p",
                "5201",
                "-t",
                &seconds,
                "-J",
            ],
        )?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let bits = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 report without sum_received")?;
        rates.push(bits / 1e6);
    }
    lab.stop(iperf);
    let listen = format!("{target}:6000");
    let rr = lab.spawn_listening(
        b,
        &format!("rr-{name}"),
        &probe,
        &["rr-server", "--listen", &listen],
    )?;
    let out = lab.exec(
        a,
        &probe.to_string_lossy(),
        &["rr-client", "--connect", &listen, "--count", "1000"],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    lab.stop(rr);
    let measured = Measured {
        name,
        mbit_s: median(rates),
        rr_median_us: field(&text, "median_us")?,
        rr_p99_us: field(&text, "p99_us")?,
    };
    eprintln!(
        "{name}: {:.0} Mbit/s, rr median {} us, p99 {} us",
        measured.mbit_s, measured.rr_median_us, measured.rr_p99_us
    );
    Ok(measured)
}

fn start_meshd(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    start_meshd_binary(lab, a, b, &mesh::binary("meshd")?)
}

/// The meshd that BENCH_BASELINE names.
fn start_baseline(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    let path = std::env::var_os("BENCH_BASELINE").context("BENCH_BASELINE")?;
    start_meshd_binary(lab, a, b, &PathBuf::from(path))
}

fn start_meshd_binary(
    lab: &mut Lab,
    a: &Ns,
    b: &Ns,
    meshd: &Path,
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

fn start_wireguard_go(lab: &mut Lab, a: &Ns, b: &Ns) -> anyhow::Result<(usize, usize)> {
    let keys: Vec<(String, String)> = (0..2)
        .map(|_| {
            let private = String::from_utf8(run("wg", &["genkey"])?.stdout)?
                .trim()
                .to_owned();
            let public = wg_key(&private)?;
            Ok((private, public))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut procs = Vec::new();
    // The interface names are global (wireguard-go's control socket lives in /var/run), so
    // each end gets its own.
    for (i, (ns, iface, n, other)) in [(a, "wgbench-a", 1u8, 2u8), (b, "wgbench-b", 2, 1)]
        .into_iter()
        .enumerate()
    {
        let foreground = Path::new("1");
        let proc = lab.spawn_env(
            ns,
            iface,
            Path::new("/usr/bin/wireguard-go"),
            &[iface],
            &[("WG_PROCESS_FOREGROUND", foreground)],
        )?;
        wait::until(
            "wireguard-go to make its device",
            Duration::from_secs(10),
            || lab.ip(ns, &["link", "show", iface]).ok(),
        )?;
        let key_file = lab.dir().join(format!("{iface}.key"));
        std::fs::write(&key_file, &keys[i].0)?;
        let endpoint = format!("192.168.100.{other}:51820");
        let allowed = format!("10.99.0.{other}/32");
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
        lab.addr(ns, iface, &format!("10.99.0.{n}/24"))?;
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
    ])?;
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
    let rounds = env_number("BENCH_ROUNDS", 1).max(1);
    let mut by_path: Vec<Vec<Measured>> = vec![Vec::new(); tunnels.len()];
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        for (i, (name, start, target)) in tunnels.iter().enumerate() {
            let procs = match start {
                Some(start) => Some(start(&mut lab, &a, &b)?),
                None => None,
            };
            by_path[i].push(measure(&mut lab, &a, &b, *target, name)?);
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

    let raw = &results[0];
    let best_anchor = results
        .iter()
        .filter(|r| r.name == "wireguard-go" || r.name == "nebula")
        .map(|r| r.mbit_s)
        .fold(0.0, f64::max);
    println!(
        "| path | TCP Mbit/s (median of {} x {rounds}) | vs better anchor | RR median µs | RR p99 µs | added median µs |",
        env_number("BENCH_REPS", 3)
    );
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.2}x | {:.0} | {:.0} | {:+.0} |",
            r.name,
            r.mbit_s,
            r.mbit_s / best_anchor,
            r.rr_median_us,
            r.rr_p99_us,
            r.rr_median_us - raw.rr_median_us
        );
    }
    if let (Some(now), Some(before)) = (
        results.iter().find(|r| r.name == "meshd"),
        results.iter().find(|r| r.name == "meshd baseline"),
    ) {
        println!(
            "\nmeshd against its baseline: {:.3}x the throughput, {:+.0} µs at the RR median, {:+.0} µs at p99",
            now.mbit_s / before.mbit_s,
            now.rr_median_us - before.rr_median_us,
            now.rr_p99_us - before.rr_p99_us
        );
    }
    Ok(())
}
