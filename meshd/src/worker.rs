//! Registering this machine's services with routerd: a task per coordinator that registers
//! (certificate, capabilities, services) from the node's mesh IP, signed with the node's
//! identity key, heartbeats with the session the registration opened at the interval routerd
//! asks for, and registers again when routerd refuses a heartbeat or after an error, with
//! backoff.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use rma_ca::NodeKeys;
use rma_daemon::http_client;
use rma_proto::registration::{
    Capabilities, HEARTBEAT_PATH, Heartbeat, REGISTER_PATH, Registered, Registration, Service,
    VERSION,
};
use serde_json::Value;
use time::OffsetDateTime;

const TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a registration says.
pub fn registration(
    name: &str,
    certificate_pem: &str,
    capabilities: &Capabilities,
    services: &[Service],
) -> Registration {
    Registration {
        version: VERSION,
        worker_id: Some(name.to_owned()),
        certificate: certificate_pem.to_owned(),
        capabilities: capabilities.clone(),
        services: services.to_vec(),
        states: Vec::new(),
        coordinators: Vec::new(),
    }
}

/// Posts `body` to `path`; signed with `keys` when given.
async fn post(
    coordinator: SocketAddr,
    mesh_ip: Ipv4Addr,
    path: &str,
    body: &impl serde::Serialize,
    keys: Option<&NodeKeys>,
) -> anyhow::Result<(u16, Value)> {
    let body = Bytes::from(serde_json::to_vec(body)?);
    let signed = keys.map(|keys| {
        let now = rma_ca::proof::unix_ms(OffsetDateTime::now_utc());
        rma_ca::proof::signed_headers(keys, "POST", path, now, &body)
    });
    let mut headers = vec![("content-type", "application/json")];
    for (name, value) in signed.iter().flatten() {
        headers.push((name, value.as_str()));
    }
    let reply = http_client::call(
        coordinator,
        Some(IpAddr::V4(mesh_ip)),
        "POST",
        path,
        &headers,
        body,
        TIMEOUT,
    )
    .await?;
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok((reply.status.as_u16(), value))
}

/// Keeps this machine registered with one coordinator, forever.
pub async fn run(
    coordinator: SocketAddr,
    mesh_ip: Ipv4Addr,
    name: String,
    registration: Registration,
    keys: NodeKeys,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut complained = false;
    loop {
        let registered = post(
            coordinator,
            mesh_ip,
            REGISTER_PATH,
            &registration,
            Some(&keys),
        )
        .await;
        let answer = match registered {
            Ok((200, reply)) => serde_json::from_value::<Registered>(reply)
                .map_err(|e| format!("the answer is not a registration's: {e}")),
            Ok((status, reply)) => Err(format!("HTTP {status}: {}", reply["error"])),
            Err(e) => Err(format!("{e:#}")),
        };
        let (interval, session) = match answer {
            Ok(answer) => {
                tracing::info!(%coordinator, assigned = ?answer.assigned_services, "registered with routerd");
                backoff = FIRST_BACKOFF;
                complained = false;
                let interval = Duration::from_secs(answer.heartbeat_interval_secs.max(1));
                (interval, answer.session)
            }
            Err(why) => {
                // The first failure is worth a warning; the retries that follow are not.
                if complained {
                    tracing::debug!(%coordinator, error = %why, "registration failed; retrying");
                } else {
                    tracing::warn!(%coordinator, error = %why, "registration failed; retrying with backoff");
                    complained = true;
                }
                let jitter =
                    Duration::from_millis(fastrand::u64(..=backoff.as_millis() as u64 / 4));
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let beat = Heartbeat {
            worker_id: name.clone(),
            session,
            load: None,
            services: Vec::new(),
            coordinators: Vec::new(),
        };
        loop {
            tokio::time::sleep(interval).await;
            match post(coordinator, mesh_ip, HEARTBEAT_PATH, &beat, None).await {
                Ok((200, _)) => {}
                Ok((status, reply)) => {
                    tracing::warn!(%coordinator, status, error = %reply["error"], "heartbeat refused; registering again");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%coordinator, error = %format!("{e:#}"), "heartbeat failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_carries_what_routerd_reads() {
        let caps = Capabilities {
            cpu_cores: 8,
            ram: "31.2 GiB".into(),
            has_gpu: false,
            gpu_memory: None,
            free_disk: "100.0 GiB".into(),
            worker_type: "cpu".into(),
        };
        let services = [Service {
            name: "rag-embeddings".into(),
            port: 8101,
            health: "/health".into(),
        }];
        let value =
            serde_json::to_value(registration("worker-1", "PEM", &caps, &services)).unwrap();
        assert!(value.get("version").is_none(), "version 1 is not written");
        assert_eq!(value["worker_id"], "worker-1");
        assert_eq!(value["certificate"], "PEM");
        assert_eq!(value["capabilities"]["cpu_cores"], 8);
        assert!(value["capabilities"].get("gpu_memory").is_none());
        assert_eq!(
            value["services"],
            serde_json::json!([{"name": "rag-embeddings", "port": 8101, "health": "/health"}])
        );
    }
}
