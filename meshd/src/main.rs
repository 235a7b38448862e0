//! `meshd`: the RMA Mesh node daemon and its command line.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use meshd::config::Config;
use meshd::control::PingLine;
use meshd::status::Status;
use rma_daemon::lifecycle::Daemon;
use rma_daemon::{Log, Reload};

/// The RMA Mesh node daemon: gives this machine its mesh IP on a TUN device and carries its
/// traffic in WireGuard tunnels to certified peers.
#[derive(Debug, Parser)]
#[command(name = "meshd", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and the certificate, key and CA it names, then exit.
    #[arg(long, requires = "config")]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write this node's keys: an Ed25519 identity key and an X25519 WireGuard key. Send the
    /// public file to the CA (`rma-ca sign --pub`); the private file (mode 0600) stays here.
    Keygen(rma_ca::keygen::KeygenArgs),
    /// Join the mesh with a token from `rma-ca token create`: make this machine's keys, send
    /// only their public halves to the enrollment service (`rma-ca serve`), check its answer
    /// against the root CA the token names, and write the keys (0600), the certificate, the
    /// root, the revocation lists and a complete meshd.toml. Nothing is written unless all of
    /// it checks out.
    Join(meshd::join::JoinArgs),
    /// Probe a peer through its tunnel, like `tailscale ping`: prints the path, the endpoint and
    /// the round-trip time of each probe. Exits 1 if no probe is answered.
    Ping {
        /// The peer's node name or mesh IP.
        target: String,
        /// How many probes, one a second.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
        /// The status socket; by default the one named in --config.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Read the status socket path from this configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show this node's peers: name, mesh IP, endpoint, last handshake, bytes and drops.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The status socket; by default the one named in --config.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Read the status socket path from this configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meshd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match (cli.command, cli.config) {
        (Some(Command::Keygen(args)), _) => Ok(args.run()?),
        (Some(Command::Join(args)), _) => {
            let joined = runtime()?.block_on(args.run(time::OffsetDateTime::now_utc()))?;
            let cert = &joined.checked.cert;
            println!(
                "joined as {} ({}) in groups {}, certificate valid until {}",
                cert.name(),
                cert.mesh_ip(),
                cert.groups()
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                rma_ca::timefmt::rfc3339(cert.not_after())
            );
            println!("wrote {} and the files it names", joined.config.display());
            if args.start {
                let status = std::process::Command::new("systemctl")
                    .args(["enable", "--now", "meshd.service"])
                    .status()
                    .context("running systemctl")?;
                anyhow::ensure!(
                    status.success(),
                    "systemctl enable --now meshd.service: {status}"
                );
                println!("meshd.service enabled and started");
            } else {
                println!("start it: systemctl enable --now meshd");
            }
            Ok(())
        }
        (
            Some(Command::Ping {
                target,
                count,
                socket,
                config,
            }),
            _,
        ) => {
            let socket = status_socket(socket, config)?;
            let lines = runtime()?.block_on(meshd::control::ping(&socket, &target, count))?;
            let mut answered = 0;
            for line in &lines {
                match line {
                    PingLine::Pong(p) => {
                        answered += 1;
                        let endpoint = p.endpoint.map(|e| format!(" {e}")).unwrap_or_default();
                        println!(
                            "pong from {} ({}) {}{endpoint} in {:.3} ms",
                            p.peer,
                            p.mesh_ip,
                            p.path,
                            p.rtt.as_secs_f64() * 1e3
                        );
                    }
                    PingLine::Timeout { seq } => println!("probe {seq}: no answer"),
                    PingLine::Error { message } => anyhow::bail!("{message}"),
                }
            }
            anyhow::ensure!(answered > 0, "{target}: no probe answered");
            Ok(())
        }
        (
            Some(Command::Status {
                json,
                socket,
                config,
            }),
            _,
        ) => {
            let socket = status_socket(socket, config)?;
            let status = runtime()?.block_on(meshd::control::fetch(&socket))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        (None, Some(path)) => rma_daemon::lifecycle::main::<Meshd>(path, cli.check_config),
        (None, None) => anyhow::bail!("nothing to do: pass --config FILE to run (see --help)"),
    }
}

struct Meshd;

impl Daemon for Meshd {
    type Config = Config;

    fn load(path: &Path) -> anyhow::Result<Config> {
        Ok(Config::load(path)?)
    }

    fn log(config: &Config) -> &Log {
        &config.log
    }

    fn check(config: &Config) -> anyhow::Result<()> {
        rma_daemon::identity::load(&config.pki, time::OffsetDateTime::now_utc()).map(drop)
    }

    /// One thread: the event loop owns the node.
    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        current_thread()
    }

    /// Under systemd (Type=notify): READY once the TUN is up.
    fn run(
        config: Config,
        reload: Reload,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ready: impl FnOnce() + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> {
        meshd::shell::run(config, Some(reload), shutdown, ready)
    }
}

/// The status socket named on the command line, or in the config file (by default
/// /etc/meshd/meshd.toml).
fn status_socket(socket: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match (socket, config) {
        (Some(socket), _) => socket,
        (None, Some(config)) => Config::load(&config)?.status_socket,
        (None, None) => {
            Config::load(Path::new("/etc/meshd/meshd.toml"))
                .context("no --socket or --config given")?
                .status_socket
        }
    })
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    current_thread().context("starting the async runtime")
}

fn print_status(status: &Status) {
    println!(
        "{} ({}), certificate valid until {} ({} days left)",
        status.name,
        status.mesh_ip,
        status.cert_not_after,
        status.cert_expires_in_secs / 86_400
    );
    println!(
        "{:<18} {:<13} {:<24} {:<21} {:>9} {:>6} {:>11} {:>11} {:>7} {:>8} {:>8}",
        "PEER",
        "MESH IP",
        "PATH",
        "ENDPOINT",
        "HANDSHAKE",
        "RTT",
        "RX",
        "TX",
        "SPOOFED",
        "FIREWALL",
        "REJECTED"
    );
    for peer in &status.peers {
        let handshake = peer
            .last_handshake_secs
            .map_or_else(|| "never".to_owned(), |s| format!("{s}s ago"));
        let rtt = peer
            .rtt_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let path = match &peer.via {
            Some(via) => format!("{} via {via}", peer.path),
            None => peer.path.clone(),
        };
        println!(
            "{:<18} {:<13} {:<24} {:<21} {:>9} {:>6} {:>11} {:>11} {:>7} {:>8} {:>8}",
            peer.name,
            peer.mesh_ip,
            path,
            peer.endpoint,
            handshake,
            rtt,
            peer.rx_bytes,
            peer.tx_bytes,
            peer.drops.spoofed,
            peer.drops.firewall_in + peer.drops.firewall_out,
            peer.drops.rejected
        );
    }
    for lighthouse in &status.lighthouses {
        println!(
            "lighthouse {} at {}: {}{}",
            lighthouse.name,
            lighthouse.address,
            match (lighthouse.connected, lighthouse.transport.as_deref()) {
                (true, Some("tcp")) => "connected (tcp)",
                (true, _) => "connected",
                (false, _) if lighthouse.parked => "parked (registered, pinging)",
                (false, _) => "not connected",
            },
            lighthouse
                .observed
                .as_ref()
                .map(|o| format!(", sees this node at {o}"))
                .unwrap_or_default()
        );
    }
    let d = status.drops;
    println!(
        "drops: bad_cert={} malformed={} unknown_peer={} no_route={} queue_dropped={} send_failed={} over_budget={} hello_conflict={} tun_failed={}",
        d.bad_cert,
        d.malformed,
        d.unknown_peer,
        d.no_route,
        d.queue_dropped,
        d.send_failed,
        d.over_budget,
        d.hello_conflict,
        d.tun_failed
    );
    let b = status.busy_polls;
    if b.spins > 0 {
        println!("busy polls: {} spins, {} caught input", b.spins, b.caught);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
