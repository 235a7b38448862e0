//! `routerd`: the RMA Mesh coordinator daemon.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use rma_daemon::lifecycle::{Args, Daemon};
use rma_daemon::{Log, Reload};
use routerd::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The RMA Mesh coordinator: workers register with it over the mesh, and it routes each
/// service call to a worker's mesh IP.
#[derive(Debug, Parser)]
#[command(name = "routerd", version)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> ExitCode {
    let Cli { args } = Cli::parse();
    rma_daemon::lifecycle::exit::<Routerd>("routerd", args.config, args.check_config)
}

struct Routerd;

impl Daemon for Routerd {
    type Config = Config;

    fn load(path: &Path) -> anyhow::Result<Config> {
        Ok(Config::load(path)?)
    }

    fn log(config: &Config) -> &Log {
        &config.log
    }

    fn check(config: &Config) -> anyhow::Result<()> {
        routerd::shell::prepare(config).map(drop)
    }

    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }

    fn run(
        config: Config,
        reload: Reload,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ready: impl FnOnce() + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> {
        routerd::shell::run(config, Some(reload), shutdown, move |_, _| ready())
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
