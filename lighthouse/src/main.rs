//! `lighthouse`: the RMA Mesh rendezvous and relay server.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use lighthouse::config::Config;
use rma_daemon::lifecycle::{Args, Daemon};
use rma_daemon::{Log, Reload};

/// The RMA Mesh lighthouse: nodes register their endpoints with it over QUIC (mutual TLS with
/// CA-signed certificates); it introduces nodes to each other so they can punch through their
/// NATs, and relays WireGuard ciphertext when they cannot.
#[derive(Debug, Parser)]
#[command(name = "lighthouse", version)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> ExitCode {
    let Cli { args } = Cli::parse();
    rma_daemon::lifecycle::exit::<Lighthouse>("lighthouse", args.config, args.check_config)
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
