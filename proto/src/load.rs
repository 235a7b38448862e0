//! What a worker reports in its heartbeats besides being alive: the machine's load, and the
//! state and load of each service it can run (the fields of seed 003's heartbeat:
//! `current_load`, `loaded_models`, `active_requests`, `gpu_utilization`). Sizes travel as the
//! capabilities write them (`"31.2 GiB"`, see [`gib`] and [`parse_size`]) or as byte counts.

use serde::{Deserialize, Serialize};

/// `12.3 GiB` for a byte count: how capabilities write sizes.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Bytes in a size as capabilities and configs write it: a number (with a fraction, as in
/// `31.2 GiB`), an optional space and a unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`, or `KB`, `MB`,
/// `GB`, `TB` as powers of ten, as the configs' sizes read). `None` for anything else
/// (`"unknown"`).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => f64::from(1u32 << 20),
        "GiB" => f64::from(1u32 << 30),
        "TiB" => (1u64 << 40) as f64,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    let bytes = number * scale;
    (number.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The machine, as measured for one heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineLoad {
    /// The one-minute load average.
    #[serde(default)]
    pub load_average: f64,
    #[serde(default)]
    pub memory_used_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_disk_bytes: Option<u64>,
    /// Percent, the busiest GPU's; absent without `nvidia-smi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used_bytes: Option<u64>,
}

/// Where a service stands on its worker. A state this build does not know reads as
/// [`ServiceState::Unknown`], which routerd neither routes to nor counts as running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Not assigned, so not running.
    Stopped,
    /// Started, its health check not yet passed.
    Starting,
    /// Started and its health check passed.
    Running,
    /// It exited, or never became healthy; meshd restarts it with backoff while it is
    /// assigned.
    Failed,
    /// Run by the operator, not by meshd: meshd neither starts nor stops it.
    External,
    #[serde(other)]
    Unknown,
}

impl ServiceState {
    /// Up, or on its way up: an assignment in this state is kept.
    pub fn holds(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::External)
    }

    /// Calls may go to it (routerd's own health checks still decide).
    pub fn serves(self) -> bool {
        matches!(self, Self::Running | Self::External)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::External => "external",
            Self::Unknown => "unknown",
        }
    }
}

/// One service on a worker, as its heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    /// How it last ended, such as `exit status 1` or `killed by signal 9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Restarts since it last ran healthy for a minute.
    #[serde(default)]
    pub restarts: u32,
    /// From its health endpoint, when it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loaded_models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
}

impl ServiceStatus {
    pub fn new(name: &str, state: ServiceState) -> Self {
        Self {
            name: name.to_owned(),
            state,
            last_exit: None,
            restarts: 0,
            active_requests: None,
            loaded_models: Vec::new(),
            current_load: None,
            gpu_utilization: None,
        }
    }

    /// Takes what a service's health body reports about its load (seed 003's fields): a JSON
    /// object sets each (absent when it lacks one); a body that is not a JSON object changes
    /// nothing. A new start of the service forgets them.
    pub fn read_health_body(&mut self, body: &[u8]) {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
            return;
        };
        self.active_requests = fields
            .get("active_requests")
            .and_then(serde_json::Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        self.current_load = fields
            .get("current_load")
            .and_then(serde_json::Value::as_f64);
        self.gpu_utilization = fields
            .get("gpu_utilization")
            .and_then(serde_json::Value::as_f64);
        self.loaded_models = fields
            .get("loaded_models")
            .and_then(serde_json::Value::as_array)
            .map(|models| {
                models
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .take(64)
                    .map(|m| m.chars().take(128).collect())
                    .collect()
            })
            .unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_capabilities_and_operators_write_them() {
        assert_eq!(
            parse_size("31.2 GiB"),
            Some((31.2 * f64::from(1 << 30)) as u64)
        );
        assert_eq!(parse_size("24GiB"), Some(24 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        assert_eq!(parse_size("2 TB"), Some(2_000_000_000_000));
        assert_eq!(parse_size("2TiB"), Some(2 << 40));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size(&gib(24 << 30)), Some(24 << 30));
        for bad in ["unknown", "", "GiB", "1 parsec", "1e400 GiB", "-3 GiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_state_from_a_newer_build_is_unknown_and_neither_holds_nor_serves() {
        let status: ServiceStatus =
            serde_json::from_str(r#"{"name": "ocr", "state": "draining", "extra": 1}"#).unwrap();
        assert_eq!(status.state, ServiceState::Unknown);
        assert!(!status.state.holds() && !status.state.serves());
        assert!(ServiceState::Starting.holds() && !ServiceState::Starting.serves());
        assert!(ServiceState::External.serves() && !ServiceState::Failed.holds());
    }

    #[test]
    fn a_health_body_gives_the_seeds_load_fields_and_anything_else_gives_none() {
        let mut status = ServiceStatus::new("llm-inference", ServiceState::Running);
        status.read_health_body(
            br#"{"status": "ok", "active_requests": 3, "current_load": 0.5,
                 "gpu_utilization": 71.0, "loaded_models": ["llama-3-8b", 7]}"#,
        );
        assert_eq!(status.active_requests, Some(3));
        assert_eq!(status.current_load, Some(0.5));
        assert_eq!(status.gpu_utilization, Some(71.0));
        assert_eq!(status.loaded_models, ["llama-3-8b"]);
        status.read_health_body(b"ok");
        assert_eq!(
            status.active_requests,
            Some(3),
            "a plain body changes nothing"
        );
        status.read_health_body(b"{}");
        assert_eq!(
            (status.active_requests, status.loaded_models.len()),
            (None, 0)
        );
    }
}
