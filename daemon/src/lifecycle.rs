//! The one lifecycle every daemon's `main` goes through: load the configuration (or check it
//! and everything it names, and exit), start logging, run on the daemon's runtime until SIGTERM
//! or SIGINT, and tell systemd (`Type=notify`) when it is ready and when it stops. SIGHUP is
//! the daemon's own: each re-reads its file through the [`Reload`] it is given.
//!
//! Each daemon has one `run(config, reload, shutdown, ready)`; `main` reaches it through
//! [`Daemon`], and the tests start it in-process with a shutdown of their own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Log;
use crate::logging::{self, Reload};
use crate::signals;

/// The command line of a daemon that only runs: `--config FILE [--check-config]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration and everything it names (certificates, keys, the CA, the
    /// revocation list, the store), then exit.
    #[arg(long)]
    pub check_config: bool,
}

/// [`main`] with its error printed as `NAME: error: ...` and turned into the exit status.
pub fn exit<D: Daemon>(name: &str, config_path: PathBuf, check_config: bool) -> ExitCode {
    match main::<D>(config_path, check_config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub trait Daemon {
    /// The validated configuration.
    type Config;

    fn load(path: &Path) -> anyhow::Result<Self::Config>;

    fn log(config: &Self::Config) -> &Log;

    /// What `--check-config` loads besides the file: certificates, keys, stores, as a start
    /// would, so that a check and a start fail alike.
    fn check(config: &Self::Config) -> anyhow::Result<()>;

    /// The runtime the daemon runs on.
    fn runtime() -> std::io::Result<tokio::runtime::Runtime>;

    /// Runs until `shutdown` completes; calls `ready` once it serves.
    fn run(
        config: Self::Config,
        reload: Reload,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ready: impl FnOnce() + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>>;
}

/// A daemon's `main` after its arguments are parsed.
pub fn main<D: Daemon>(config_path: PathBuf, check_config: bool) -> anyhow::Result<()> {
    let config = D::load(&config_path)?;
    if check_config {
        D::check(&config)?;
        println!("{}: ok", config_path.display());
        return Ok(());
    }
    let reload = Reload {
        set_log_filter: logging::init(D::log(&config)),
        config_path,
    };
    let runtime = D::runtime().context("starting the async runtime")?;
    let result = runtime.block_on(D::run(
        config,
        reload,
        signals::shutdown(),
        signals::notify_ready,
    ));
    signals::notify_stopping();
    result
}
