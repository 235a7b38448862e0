//! Mesh names from a test's point of view: Debian's `dig` against a meshd, and a namespace's
//! resolver pointed at one.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::lab::{Lab, Ns};

/// What `dig @server name A` from `ns` got: the status (`NOERROR`, `NXDOMAIN`...), the A
/// records, and the query time in milliseconds.
pub fn dig(
    lab: &Lab,
    ns: &Ns,
    server: Ipv4Addr,
    name: &str,
) -> anyhow::Result<(String, Vec<String>, u64)> {
    let server = format!("@{server}");
    let out = lab.exec(ns, "dig", &[&server, name, "A", "+time=3", "+tries=1"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .ok_or_else(|| anyhow::anyhow!("no status in {text}"))?
        .to_owned();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    let msec = text
        .split("Query time: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no query time in {text}"))?;
    Ok((status, answers, msec))
}

/// `ns`'s resolver pointed at `server` (`ip netns exec` mounts `/etc/netns/NS/resolv.conf`
/// over the system's), until this is dropped, passed or failed.
#[derive(Debug)]
pub struct NetnsResolver(PathBuf);

impl NetnsResolver {
    pub fn point(ns: &Ns, server: Ipv4Addr) -> anyhow::Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir)?;
        let resolver = Self(dir);
        std::fs::write(
            resolver.0.join("resolv.conf"),
            format!("nameserver {server}\n"),
        )?;
        Ok(resolver)
    }
}

impl Drop for NetnsResolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
