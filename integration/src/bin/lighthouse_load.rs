//! Registers many simulated nodes with a real lighthouse and reports what it costs the
//! lighthouse. One process plays every node: each has its own certificate from a test CA, its
//! own QUIC connection (mutual TLS) and its own UDP socket for the reflect token, as a meshd
//! would. The lighthouse runs as a child process on loopback; its resident memory is read from
//! /proc before and after. With `--park each`, every node parks its connection as soon as it
//! has registered, as an idle meshd does after `park_after` (it closes the connection and
//! stays registered with signed pings): nodes that join over time. With `--park all`, every
//! node registers first and all of them park after: the lighthouse's memory then shows what the
//! allocator keeps of connections that were all open at once. Run it inside a network
//! namespace (the test does).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use integration::quic_client;
use rma_ca::test_ca::TestCa;
use rma_proto::lighthouse::FromLighthouse;

/// Tries of one registration before the run fails.
const REGISTER_ATTEMPTS: u32 = 3;
/// A registration slower than this is reported on stderr.
const SLOW_REGISTRATION: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(name = "lighthouse-load")]
struct Cli {
    /// How many nodes to register.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Registrations in flight at once, as nodes that start together would make them.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// The lighthouse binary (by default the one next to this tool).
    #[arg(long)]
    lighthouse: Option<PathBuf>,
    /// Whether and when the nodes park their connections.
    #[arg(long, value_enum, default_value_t = Park::None)]
    park: Park,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Park {
    /// The nodes stay connected.
    None,
    /// Each node parks as soon as it has registered.
    Each,
    /// Every node registers, then all park.
    All,
}

/// What keeps a simulated node registered: its connection, or (parked) its ping socket.
enum Held {
    Connected(Node),
    Parked(
        #[expect(dead_code, reason = "held open: the socket its pings come from")]
        tokio::net::UdpSocket,
    ),
}

impl Held {
    fn connected(self) -> Option<Node> {
        match self {
            Self::Connected(node) => Some(node),
            Self::Parked(_) => None,
        }
    }
}

/// One simulated node: registers over QUIC, then sends its reflect token from a UDP socket
/// of its own (its WireGuard socket). Returns what must stay open for the node to stay
/// registered.
async fn register_node(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    i: u32,
    address: SocketAddr,
    reflector: SocketAddr,
) -> anyhow::Result<Node> {
    let wireguard = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = vec![SocketAddr::from(([192, 0, 2, (i % 250 + 1) as u8], 4242))];
    let registered =
        quic_client::register(&endpoint, config, address, "lighthouse-1", local).await?;
    let FromLighthouse::Welcome { token, .. } = registered.welcome else {
        anyhow::bail!("expected a welcome, got {:?}", registered.welcome);
    };
    let mut reflect = Vec::new();
    rma_proto::wire::encode_reflect(&token, &mut reflect);
    wireguard.send_to(&reflect, reflector).await?;
    Ok(Node {
        registered,
        token,
        wireguard,
    })
}

/// A simulated node: its registration and its WireGuard socket.
struct Node {
    registered: quic_client::Registered,
    token: [u8; rma_proto::wire::TOKEN_LEN],
    wireguard: tokio::net::UdpSocket,
}

/// Parks a node and sends its first ping; returns what must stay open for it to stay
/// registered (the socket its pings come from).
async fn park_node(node: Node, reflector: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    let (key, _) = quic_client::park(node.registered, &node.token).await?;
    let mut ping = Vec::new();
    key.ping(&node.token, 1, &mut ping);
    node.wireguard.send_to(&ping, reflector).await?;
    let mut ack = [0u8; 256];
    let len = tokio::time::timeout(Duration::from_secs(10), node.wireguard.recv(&mut ack))
        .await
        .context("no ack to the first ping")??;
    match rma_proto::wire::parse_control(&ack[..len]) {
        Ok(rma_proto::wire::Control::ParkedAck(ack)) if key.verify_ack(&ack) => {}
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }
    Ok(node.wireguard)
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory the process has had, in KiB.
fn peak_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key}"))
}

/// CPU time a process has used, user and system, from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no command name")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("a short stat line")?.parse()?)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from 0 after the
    // name. /proc counts in USER_HZ, which is 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: lighthouse\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// Waits until the lighthouse's metric `name` reaches `value`.
async fn wait_metric(metrics: SocketAddr, name: &str, value: f64) -> anyhow::Result<()> {
    wait_metric_by(metrics, name, &format!("reach {value}"), |v| v >= value).await
}

/// Waits until the lighthouse's metric `name` falls to `value`.
async fn wait_metric_at_most(metrics: SocketAddr, name: &str, value: f64) -> anyhow::Result<()> {
    wait_metric_by(metrics, name, &format!("fall to {value}"), |v| v <= value).await
}

async fn wait_metric_by(
    metrics: SocketAddr,
    name: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(metrics).await.unwrap_or_default();
        if metric(&text, name).is_some_and(&ok) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} did not {what}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::tempdir()?;
    let pki = TestCa::new("load-ca");
    let (lh_cert, lh_keys) =
        pki.node_in("lighthouse-1", Ipv4Addr::new(10, 42, 255, 1), "lighthouses");
    let files = [
        ("ca.crt", pki.ca.to_pem()),
        ("lighthouse.crt", lh_cert.to_pem()),
        ("lighthouse.key", lh_keys.to_pem().to_string()),
        (
            "lighthouse.toml",
            "listen = \"127.0.0.1:4243\"\n[pki]\nca = \"ca.crt\"\ncert = \"lighthouse.crt\"\n\
             key = \"lighthouse.key\"\n[metrics]\nlisten = \"127.0.0.1:9243\"\n[log]\nlevel = \"warn\"\n"
                .to_owned(),
        ),
    ];
    for (name, text) in files {
        let path = dir.path().join(name);
        if name.ends_with(".key") {
            integration::lab::write_private(&path, text.as_bytes())?;
        } else {
            std::fs::write(path, text)?;
        }
    }
    let binary = match cli.lighthouse {
        Some(path) => path,
        None => integration::mesh::binary("lighthouse")?,
    };
    let mut child = std::process::Command::new(binary)
        .arg("--config")
        .arg(dir.path().join("lighthouse.toml"))
        .spawn()
        .context("starting the lighthouse")?;
    let pid = child.id();
    let address = SocketAddr::from(([127, 0, 0, 1], 4243));
    let reflector = SocketAddr::from(([127, 0, 0, 1], 4244));
    let metrics = SocketAddr::from(([127, 0, 0, 1], 9243));
    let outcome = async {
        wait_metric(metrics, "lighthouse_registered_nodes", 0.0).await?;
        let idle = rss_kib(pid)?;

        let issued: Vec<_> = (0..cli.nodes)
            .map(|i| {
                let ip = Ipv4Addr::new(10, 42, (i / 250) as u8, (i % 250 + 1) as u8);
                pki.node(&format!("node-{i}"), ip)
            })
            .collect();
        let configs = issued
            .iter()
            .map(|(cert, keys)| quic_client::client_config(cert, keys, &pki.ca))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let endpoint = quic_client::endpoint([127, 0, 0, 1].into())?;
        let started = Instant::now();
        let cpu_before = cpu_seconds(pid)?;
        let mut held = Vec::with_capacity(configs.len());
        let mut running = tokio::task::JoinSet::new();
        let park_each = cli.park == Park::Each;
        let retried = Arc::new(AtomicU32::new(0));
        let slowest_ms = Arc::new(AtomicU64::new(0));
        for (i, config) in (0..).zip(configs) {
            if running.len() >= cli.parallel.max(1) {
                held.push(running.join_next().await.context("a registration")???);
            }
            let endpoint = endpoint.clone();
            let retried = Arc::clone(&retried);
            let slowest_ms = Arc::clone(&slowest_ms);
            running.spawn(async move {
                let began = Instant::now();
                // A registration whose handshake or welcome takes over 10 s (packets lost
                // while both processes saturate the two cores) is tried again, as meshd
                // would; the report says how many were.
                let mut attempt = 1;
                let node = loop {
                    match register_node(endpoint.clone(), config.clone(), i, address, reflector)
                        .await
                    {
                        Ok(node) => break node,
                        Err(e) if attempt < REGISTER_ATTEMPTS => {
                            eprintln!("node-{i}: {e:#}; trying again");
                            retried.fetch_add(1, Ordering::Relaxed);
                            attempt += 1;
                        }
                        Err(e) => return Err(e.context(format!("node-{i}, {attempt} attempts"))),
                    }
                };
                let took = began.elapsed();
                slowest_ms.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
                if took > SLOW_REGISTRATION {
                    eprintln!(
                        "node-{i} took {:.1} s to register, {:.1} s into the run",
                        took.as_secs_f64(),
                        began.duration_since(started).as_secs_f64()
                    );
                }
                anyhow::Ok(if park_each {
                    Held::Parked(park_node(node, reflector).await?)
                } else {
                    Held::Connected(node)
                })
            });
        }
        while let Some(node) = running.join_next().await {
            held.push(node??);
        }
        let nodes = f64::from(cli.nodes);
        wait_metric(metrics, "lighthouse_registered_nodes", nodes).await?;
        wait_metric(metrics, "lighthouse_reflected_nodes", nodes).await?;
        if park_each {
            wait_metric(metrics, "lighthouse_parked_nodes", nodes).await?;
        }
        let elapsed = started.elapsed();
        let loaded = rss_kib(pid)?;
        let cpu = cpu_seconds(pid)? - cpu_before;
        let retried = match retried.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} tried again after a timeout"),
        };
        let slowest = slowest_ms.load(Ordering::Relaxed) as f64 / 1e3;
        println!(
            "registered {} nodes{} in {:.1} s (lighthouse cpu {:.1} s{retried}, slowest \
             {slowest:.2} s); lighthouse rss idle {} KiB, with {} {}nodes {} KiB ({:.1} KiB per node), peak {} KiB",
            cli.nodes,
            if park_each {
                ", each parking at once,"
            } else {
                ""
            },
            elapsed.as_secs_f64(),
            cpu,
            idle,
            cli.nodes,
            if park_each { "parked " } else { "" },
            loaded,
            loaded.saturating_sub(idle) as f64 / nodes,
            peak_kib(pid)?
        );
        if cli.park == Park::All {
            let held: Vec<Node> = held.drain(..).filter_map(Held::connected).collect();
            let started = Instant::now();
            let cpu_before = cpu_seconds(pid)?;
            let mut sockets = Vec::with_capacity(held.len());
            let mut running = tokio::task::JoinSet::new();
            for node in held {
                if running.len() >= cli.parallel.max(1) {
                    sockets.push(running.join_next().await.context("a park")???);
                }
                running.spawn(park_node(node, reflector));
            }
            while let Some(socket) = running.join_next().await {
                sockets.push(socket??);
            }
            wait_metric(metrics, "lighthouse_parked_nodes", nodes).await?;
            wait_metric_at_most(metrics, "lighthouse_connections", 0.0).await?;
            let parked = rss_kib(pid)?;
            println!(
                "parked {} nodes in {:.1} s (lighthouse cpu {:.1} s); lighthouse rss with {} \
                 parked nodes {} KiB ({:.1} KiB per node)",
                cli.nodes,
                started.elapsed().as_secs_f64(),
                cpu_seconds(pid)? - cpu_before,
                cli.nodes,
                parked,
                parked.saturating_sub(idle) as f64 / nodes
            );
            drop(sockets);
        }
        drop(held);
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}
