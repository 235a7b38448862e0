//! What a worker's meshd sends routerd to register and heartbeat, and what routerd answers,
//! as JSON. The field names are those the old coordinator's workers sent (seed 000, section
//! 11), plus `version`.
//!
//! Compatibility: a reader ignores fields it does not know, so a newer meshd that adds one can
//! still register with an older routerd, and the other way round. [`VERSION`] changes only when
//! the meaning of an existing field changes; a reader refuses a version it does not speak (see
//! [`check_version`]). A registration without a version is version 1.

use serde::{Deserialize, Serialize};

pub use crate::load::{MachineLoad, ServiceState, ServiceStatus};

/// The contract this build speaks.
pub const VERSION: u32 = 1;

pub const REGISTER_PATH: &str = "/api/worker/register";
pub const HEARTBEAT_PATH: &str = "/api/worker/heartbeat";

/// What a worker's machine has, as its meshd detects it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub cpu_cores: u32,
    /// Total memory, such as `"31.2 GiB"`.
    pub ram: String,
    pub has_gpu: bool,
    /// GPU memory, such as `"24.0 GiB"`; absent without a GPU or when it is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<String>,
    /// Free disk, such as `"120.0 GiB"`.
    #[serde(default)]
    pub free_disk: String,
    /// `cpu`, `gpu`, `storage` or `edge`.
    pub worker_type: String,
}

/// A service a worker runs, reachable on its mesh IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its name in routerd's catalog (or an alias of it).
    pub name: String,
    pub port: u16,
    /// The path routerd's health checks fetch, such as `/health`.
    pub health: String,
}

/// `POST /api/worker/register`, signed with the certificate's identity key
/// (`rma_ca::proof`) and sent from the certificate's mesh IP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Not written when it is 1, so that a routerd from before the field (which refused
    /// fields it did not know) still reads this build's registrations.
    #[serde(default = "first_version", skip_serializing_if = "is_first_version")]
    pub version: u32,
    /// The node name; optional, but if given it must be the certificate's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The worker's node certificate, PEM.
    pub certificate: String,
    pub capabilities: Capabilities,
    #[serde(default)]
    pub services: Vec<Service>,
    /// Where each offered service stands now, so that a routerd that has just started keeps
    /// what is already running where it runs. A service left out is taken as run by its
    /// operator (what a meshd from before this field meant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<ServiceStatus>,
    /// The routerd mesh URLs this worker registers with: how each replica learns the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coordinators: Vec<String>,
}

fn first_version() -> u32 {
    1
}

fn is_first_version(version: &u32) -> bool {
    *version == 1
}

/// routerd's answer to a registration. Only the session is needed to go on; a reader
/// takes the rest as absent when an answer lacks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub worker_id: String,
    /// Services the coordinator asks this worker to run.
    #[serde(default)]
    pub assigned_services: Vec<String>,
    /// Offered services refused, each with why; the rest of the registration stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_services: Vec<RefusedService>,
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_secs: u64,
    /// The session this registration opened (hex): heartbeats carry it.
    pub session: String,
}

/// An offered service routerd will not assign, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedService {
    pub name: String,
    pub reason: String,
}

/// The heartbeat interval when an answer does not say (routerd's).
fn default_heartbeat_interval() -> u64 {
    5
}

/// `POST /api/worker/heartbeat`, from the worker's mesh IP. Everything but the identity is
/// optional, so that a heartbeat from an older meshd still counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: String,
    pub session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<MachineLoad>,
    /// Where each offered service stands; as in [`Registration::states`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    /// When this worker last heard from each routerd it registers with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coordinators: Vec<CoordinatorContact>,
}

/// A routerd replica as one worker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorContact {
    /// Its mesh URL, such as `http://10.42.0.1:8080`.
    pub url: String,
    /// Seconds since it last answered; absent if it never has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_secs: Option<u64>,
}

/// routerd's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub ttl_secs: u64,
    /// What the worker should run now; absent from a routerd that does not assign, in which
    /// case the registration's answer stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_services: Option<Vec<String>>,
}

/// A registration in a version this build does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registration contract version {got} is not spoken here (this build speaks {VERSION})")]
pub struct UnknownVersion {
    pub got: u32,
}

/// Whether a reader of this build can take `registration` as it means it.
pub fn check_version(registration: &Registration) -> Result<(), UnknownVersion> {
    if registration.version == VERSION {
        Ok(())
    } else {
        Err(UnknownVersion {
            got: registration.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_with_fields_this_build_does_not_know_is_read_and_they_are_ignored() {
        let newer = serde_json::json!({
            "version": 1,
            "worker_id": "w1",
            "certificate": "PEM",
            "capabilities": {
                "cpu_cores": 8, "ram": "31.2 GiB", "has_gpu": false, "free_disk": "1.0 GiB",
                "worker_type": "cpu", "npu_count": 2,
            },
            "services": [{"name": "ocr", "port": 8101, "health": "/health", "runner": "exec"}],
            "load": {"cpu": 0.5},
        });
        let read: Registration = serde_json::from_value(newer).unwrap();
        assert_eq!(read.capabilities.cpu_cores, 8);
        assert_eq!(read.services[0].port, 8101);
        assert_eq!(check_version(&read), Ok(()));
    }

    #[test]
    fn an_unversioned_registration_is_version_one_and_another_version_is_refused() {
        let old = serde_json::json!({
            "certificate": "PEM",
            "capabilities": {"cpu_cores": 1, "ram": "1 GiB", "has_gpu": false, "worker_type": "edge"},
        });
        let mut read: Registration = serde_json::from_value(old).unwrap();
        assert_eq!((read.version, read.worker_id.as_deref()), (1, None));
        assert!(read.services.is_empty());
        read.version = 2;
        let refused = check_version(&read).unwrap_err();
        assert!(refused.to_string().contains("version 2"), "{refused}");
    }

    #[test]
    fn version_one_is_not_written_so_a_routerd_from_before_the_field_reads_it() {
        let registration = Registration {
            version: VERSION,
            worker_id: None,
            certificate: "PEM".into(),
            capabilities: Capabilities::default(),
            services: Vec::new(),
            states: Vec::new(),
            coordinators: Vec::new(),
        };
        let value = serde_json::to_value(&registration).unwrap();
        assert!(value.get("version").is_none(), "{value}");
        let later = Registration {
            version: 2,
            ..registration
        };
        assert_eq!(serde_json::to_value(&later).unwrap()["version"], 2);
    }

    #[test]
    fn a_heartbeat_from_an_older_meshd_or_with_unknown_fields_is_read() {
        let old: Heartbeat =
            serde_json::from_str(r#"{"worker_id": "w1", "session": "00ff"}"#).unwrap();
        assert!(old.load.is_none() && old.services.is_empty());
        let newer: Heartbeat = serde_json::from_value(serde_json::json!({
            "worker_id": "w1", "session": "00ff", "npu_load": [1, 2],
            "load": {"load_average": 0.5, "memory_used_bytes": 1024, "fan_rpm": 900},
            "services": [{"name": "ocr", "state": "running", "restarts": 2, "queue": 4}],
        }))
        .unwrap();
        assert_eq!(newer.load.unwrap().memory_used_bytes, 1024);
        assert_eq!(newer.services[0].state, ServiceState::Running);
        let reply: HeartbeatReply = serde_json::from_str(r#"{"status": "ok"}"#).unwrap();
        assert_eq!(
            reply.assigned_services, None,
            "an older routerd assigns nothing new"
        );
    }

    #[test]
    fn an_answer_with_only_a_session_is_enough() {
        let answer: Registered = serde_json::from_str(r#"{"session": "00ff"}"#).unwrap();
        assert_eq!(
            (answer.session.as_str(), answer.heartbeat_interval_secs),
            ("00ff", 5)
        );
        assert!(serde_json::from_str::<Registered>(r#"{"status": "registered"}"#).is_err());
    }

    #[test]
    fn what_this_build_writes_it_reads_back() {
        let registration = Registration {
            version: VERSION,
            worker_id: Some("w1".into()),
            certificate: "PEM".into(),
            capabilities: Capabilities {
                cpu_cores: 4,
                ram: "8.0 GiB".into(),
                has_gpu: true,
                gpu_memory: Some("24.0 GiB".into()),
                free_disk: "100.0 GiB".into(),
                worker_type: "gpu".into(),
            },
            services: vec![Service {
                name: "llm".into(),
                port: 8200,
                health: "/health".into(),
            }],
            states: vec![ServiceStatus::new("llm", ServiceState::Starting)],
            coordinators: vec!["http://10.42.0.1:8080".into()],
        };
        let text = serde_json::to_string(&registration).unwrap();
        assert_eq!(
            serde_json::from_str::<Registration>(&text).unwrap(),
            registration
        );
    }
}
