//! `lighthouse`: the RMA Mesh rendezvous and relay server.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use lighthouse::config::Config;
use rma_daemon::lifecycle::Daemon;
use rma_daemon::{Log, Reload};

/// The RMA Mesh lighthouse: nodes register their endpoints with it over QUIC (mutual TLS with
/// CA-signed certificates); it introduces nodes to each other so they can punch through their
/// NATs, and relays WireGuard ciphertext when they cannot.
#[derive(Debug, Parser)]
#[command(name = "lighthouse", version)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration and the certificate, key and CA it names, then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match rma_daemon::lifecycle::main::<Lighthouse>(cli.config, cli.check_config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lighthouse: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Lighthouse;

impl Daemon for Lighthouse {
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

    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }

    fn run(
        config: Config,
        reload: Reload,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ready: impl FnOnce() + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> {
        lighthouse::shell::run(config, Some(reload), shutdown, move |_, _| ready())
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
