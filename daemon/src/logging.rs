//! Logging to stderr (journald picks it up under systemd) as text or JSON, with a filter that
//! a reload can change.

use crate::config::{Log, LogFormat};

/// Switches the log filter to a tracing filter such as `info,meshd=debug`.
pub type SetLogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How a running daemon takes a new configuration on SIGHUP: the file to read again, and how
/// to apply its log level.
pub struct Reload {
    pub config_path: std::path::PathBuf,
    pub set_log_filter: SetLogFilter,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// Warns about each setting a reload read but cannot apply: `(what, whether it changed)`.
pub fn restart_needed(daemon: &str, settings: &[(&str, bool)]) {
    for (what, _) in settings.iter().filter(|(_, changed)| *changed) {
        tracing::warn!("{what} changed: restart {daemon} to apply it");
    }
}

/// Starts logging as configured (`RUST_LOG` overrides the level) and returns how to change the
/// filter later.
pub fn init(log: &Log) -> SetLogFilter {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, fmt, reload};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match log.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init(),
    }
    Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
