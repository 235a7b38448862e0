//! `lighthouse`: the RMA Mesh rendezvous and relay server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use lighthouse::config::Config;

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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lighthouse: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    if cli.check_config {
        rma_daemon::identity::load(&config.pki, time::OffsetDateTime::now_utc())?;
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    let set_log_filter = rma_daemon::logging::init(&config.log);
    let reload = lighthouse::shell::Reload {
        config_path: cli.config,
        set_log_filter,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(lighthouse::shell::run(
        config,
        Some(reload),
        rma_daemon::signals::shutdown(),
        |_, _| rma_daemon::signals::notify_ready(),
    ));
    rma_daemon::signals::notify_stopping();
    result
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
