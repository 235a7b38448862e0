//! Split DNS through systemd-resolved: meshd hands resolved the mesh domain for its TUN link,
//! so that `NAME.mesh` goes to meshd on the mesh IP and every other name stays with the
//! system's resolver, and takes it back on shutdown. It drives `resolvectl` and `busctl`, the
//! tools systemd ships for this (their calls go over D-Bus to `org.freedesktop.resolve1`).

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::dns::Domain;

/// How long one `resolvectl` call may take before meshd gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The `resolvectl` calls that hand `domain` on `link` to the DNS server at `server`:
/// only that domain is routed there (`~`), the link is no default route for other names, and
/// neither multicast name protocol nor DNSSEC or DNS-over-TLS is tried on it (meshd answers
/// plain DNS, carried inside WireGuard).
pub fn registration(link: &str, server: Ipv4Addr, domain: &Domain) -> Vec<Vec<String>> {
    let call = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect();
    vec![
        call(&["dns", link, &server.to_string()]),
        call(&["domain", link, &format!("~{domain}")]),
        call(&["default-route", link, "false"]),
        call(&["llmnr", link, "no"]),
        call(&["mdns", link, "no"]),
        call(&["dnssec", link, "no"]),
        call(&["dnsovertls", link, "no"]),
    ]
}

/// The mesh domain registered with systemd-resolved for a link, until [`Registration::revert`].
#[derive(Debug)]
pub struct Registration {
    link: String,
}

impl Registration {
    /// Registers `domain` on `link` with resolved; `None` (logged) when resolved is not here,
    /// serves another network namespace, or refused, in which case nothing is left behind.
    pub async fn register(link: &str, server: Ipv4Addr, domain: &Domain) -> Option<Self> {
        let not_here = |why: &str| {
            tracing::info!(
                %domain,
                "{why}: point the system's resolver at {server} for ~{domain} to resolve mesh names here"
            );
        };
        match resolved_pid().await {
            Ok(pid) if !same_network_namespace(pid) => {
                not_here("systemd-resolved serves another network namespace");
                return None;
            }
            Ok(_) => {}
            Err(Failure::Absent(program)) => {
                not_here(&format!("no {program} here, so no systemd-resolved"));
                return None;
            }
            Err(Failure::Refused(_)) => {
                not_here("systemd-resolved is not running");
                return None;
            }
        }
        for args in registration(link, server, domain) {
            if let Err(e) = run("resolvectl", &args).await {
                let why = match e {
                    Failure::Absent(program) => format!("no {program}"),
                    Failure::Refused(why) => why,
                };
                tracing::warn!(
                    %domain,
                    "could not register the mesh domain with systemd-resolved ({why}); set [dns] systemd_resolved = false if resolved is not in use"
                );
                // Whatever was set before the refusal goes with the link's settings.
                let _ = run("resolvectl", &["revert".to_owned(), link.to_owned()]).await;
                return None;
            }
        }
        tracing::info!(%domain, %link, %server, "mesh domain registered with systemd-resolved");
        Some(Self {
            link: link.to_owned(),
        })
    }

    /// Gives the link's DNS settings back to resolved.
    pub async fn revert(self) {
        match run("resolvectl", &["revert".to_owned(), self.link.clone()]).await {
            Ok(_) => {
                tracing::info!(link = %self.link, "mesh domain unregistered from systemd-resolved")
            }
            Err(Failure::Absent(_)) => {}
            Err(Failure::Refused(why)) => {
                tracing::warn!(link = %self.link, "systemd-resolved kept the link's DNS settings: {why}");
            }
        }
    }
}

/// The process that owns resolved's name on the system bus.
async fn resolved_pid() -> Result<u32, Failure> {
    let args = [
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixProcessID",
        "s",
        "org.freedesktop.resolve1",
    ];
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = run("busctl", &args).await?;
    // busctl prints the reply's signature and value: `u 1234`.
    out.trim()
        .strip_prefix("u ")
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| Failure::Refused(format!("busctl said {out:?}")))
}

/// Whether process `pid`, which the bus says is resolved, is resolved as this process sees it
/// and shares its network namespace. A meshd in a namespace of its own that reaches the
/// host's D-Bus would otherwise hand resolved a link index that names another link there; in
/// a PID namespace of its own, the bus's PID names another process, or none. When the network
/// namespace cannot be read (a sandbox without CAP_SYS_PTRACE, as meshd's unit is, in the
/// host's namespace), it is taken to be shared.
fn same_network_namespace(pid: u32) -> bool {
    // The kernel keeps 15 bytes of the program's name.
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if comm.trim_end() == "systemd-resolve" => {}
        _ => return false,
    }
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    let ours = std::fs::read_link("/proc/self/ns/net");
    match (theirs, ours) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => true,
    }
}

enum Failure {
    /// The program is not on the PATH.
    Absent(&'static str),
    Refused(String),
}

/// Runs `program` and returns its standard output.
async fn run(program: &'static str, args: &[String]) -> Result<String, Failure> {
    let mut command = Command::new(program);
    command
        .args(args)
        // systemd's tools report their own failures to a notification socket they inherit,
        // which is meshd's service manager's.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(CALL_TIMEOUT, command.output()).await {
        Err(_) => {
            return Err(Failure::Refused(format!(
                "{program} {} timed out",
                args.join(" ")
            )));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::Absent(program));
        }
        Ok(Err(e)) => return Err(Failure::Refused(format!("{program}: {e}"))),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Failure::Refused(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mesh_domain_is_routed_to_the_link() {
        let domain = Domain::parse("corp.mesh").unwrap();
        let calls = registration("rma0", Ipv4Addr::new(10, 42, 0, 5), &domain);
        let line = |i: usize| calls[i].join(" ");
        assert_eq!(line(0), "dns rma0 10.42.0.5");
        assert_eq!(line(1), "domain rma0 ~corp.mesh");
        assert_eq!(line(2), "default-route rma0 false");
        assert!(calls[3..].iter().all(|c| c[1] == "rma0" && c[2] == "no"));
    }
}
