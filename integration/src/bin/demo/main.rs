//! `demo` (`make demo`): the whole system on this machine, in network namespaces with no route
//! out. A CA enrolls five machines from their public keys; a lighthouse on a public host;
//! routerd and three workers behind NATs (one symmetric, so its paths are relayed); the
//! daemons start from the example configs in `configs/`; then service calls go through
//! routerd's public listener. Each step shows the commands it runs and what they print. It
//! exits non-zero if a step fails, and always removes what it started, unless `--keep`.

mod config_edit;
mod shell;
mod system;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use integration::lab;

/// The whole RMA Mesh system, run locally in network namespaces (needs root).
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Cli {
    /// Leave everything running when the demo succeeds; `demo --stop` ends it.
    #[arg(long)]
    keep: bool,
    /// Stop a demo left running by --keep (or killed), and exit.
    #[arg(long, conflicts_with = "keep")]
    stop: bool,
    /// The example configs the daemons start from.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))]
    configs: PathBuf,
    /// Where the CA, keys, configs and logs go; emptied first. Default: target/demo.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Marks a directory as the demo's, so that emptying it never removes anything else.
const MARKER: &str = ".rma-demo";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.stop {
        let removed = lab::remove_namespaces(system::NAME);
        println!("demo: stopped ({removed} namespaces removed)");
        return ExitCode::SUCCESS;
    }
    let removed = lab::remove_namespaces(system::NAME);
    if removed > 0 {
        println!("demo: stopped an earlier demo ({removed} namespaces)");
    }
    let mut steps = shell::Steps::new();
    match prepare(&cli).and_then(|options| {
        let running = system::run(&options, &mut steps)?;
        Ok((options, running))
    }) {
        Ok((_, running)) => {
            println!("\n{}", running.summary);
            if cli.keep {
                running.keep();
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            // Everything the failed step started is gone: the lab was dropped on the way out.
            eprintln!(
                "\ndemo: FAILED at step {} ({}): {error:#}",
                steps.done + 1,
                steps.current
            );
            if let Some(dir) = demo_dir(&cli).ok().filter(|d| d.is_dir()) {
                print_logs(&dir);
                eprintln!("demo: its files and logs are in {}", dir.display());
            }
            ExitCode::FAILURE
        }
    }
}

/// Checks the configs, empties the demo's directory and sets up cleanup on Ctrl-C.
fn prepare(cli: &Cli) -> anyhow::Result<system::Options> {
    lab::require_root();
    let configs = cli
        .configs
        .canonicalize()
        .with_context(|| format!("the example configs: {}", cli.configs.display()))?;
    let dir = demo_dir(cli)?;
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARKER).exists() || std::fs::read_dir(&dir)?.next().is_none(),
            "{} is not empty and is not a demo's directory; choose another --dir",
            dir.display()
        );
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(MARKER), "")?;
    clean_up_on_signal()?;
    Ok(system::Options { dir, configs })
}

fn demo_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.dir {
        return Ok(std::path::absolute(dir)?);
    }
    // target/<profile>/demo -> target/demo
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the demo binary is not inside a target directory")?;
    Ok(target.join("demo"))
}

/// On SIGINT or SIGTERM, removes the demo's namespaces (which kills its daemons, each in a
/// process group of its own, out of the terminal's reach) and exits.
fn clean_up_on_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        anyhow::Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        let removed = lab::remove_namespaces(system::NAME);
        eprintln!("\ndemo: interrupted; stopped everything ({removed} namespaces removed)");
        std::process::exit(130);
    });
    Ok(())
}

/// The last lines of every daemon's log, for a failed run.
fn print_logs(dir: &Path) {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("---- last lines of {} ----", log.display());
        for line in &lines[lines.len().saturating_sub(12)..] {
            eprintln!("{line}");
        }
    }
}
