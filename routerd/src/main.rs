//! `routerd`: the RMA Mesh coordinator daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use routerd::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The RMA Mesh coordinator: workers register with it over the mesh, and it routes each
/// service call to a worker's mesh IP.
#[derive(Debug, Parser)]
#[command(name = "routerd", version)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration, the CA, revocation list and store it names, then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("routerd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    if cli.check_config {
        routerd::shell::prepare(&config)?;
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    let _set_log_filter = rma_daemon::logging::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(routerd::shell::run(
        config,
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
