//! A machine of its own, for commands written for a real host (the deployment guide's): a lab
//! namespace for its network, and a mount namespace in which /etc, /usr, /var, /srv, /opt and
//! /root are overlays of the host's (whatever the commands write lands in the machine's
//! directory) and /run and /tmp are empty directories of its own. So `dpkg -i`, `install` and
//! `systemctl` (the stand-in, `standin-systemctl`) change this machine and nothing else. A
//! holder process keeps the mount namespace; every command enters it with nsenter, and
//! whatever a command leaves running stays in it, to be stopped with the lab.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context as _;

use crate::lab::{Lab, Ns};
use crate::wait;

/// The directories each machine sees as its own copy of the host's.
const OVERLAID: [&str; 6] = ["etc", "usr", "var", "srv", "opt", "root"];
/// The PATH of a root login on Debian: /usr/local/sbin first, where `systemctl` is the stand-in.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug)]
pub struct Machine {
    pub name: String,
    pub ns: Ns,
    holder: u32,
}

impl Machine {
    /// Makes the machine's mounts in `ns` and puts the stand-in `systemctl` on it.
    pub fn new(lab: &mut Lab, ns: &Ns, name: &str) -> anyhow::Result<Self> {
        let dir = lab.dir().join("machines").join(name);
        let mut script = String::from("set -e\n");
        for sub in OVERLAID {
            let (up, work) = (
                dir.join(format!("{sub}.up")),
                dir.join(format!("{sub}.work")),
            );
            std::fs::create_dir_all(&up)?;
            std::fs::create_dir_all(&work)?;
            script.push_str(&format!(
                "mount -t overlay overlay -o lowerdir=/{sub},upperdir={},workdir={} /{sub}\n",
                up.display(),
                work.display()
            ));
        }
        for sub in ["run", "tmp"] {
            let own = dir.join(sub);
            std::fs::create_dir_all(&own)?;
            script.push_str(&format!("mount --bind {} /{sub}\n", own.display()));
        }
        script.push_str(
            "chmod 1777 /tmp\nmkdir -p /run/lock\necho machine ready\nexec sleep infinity\n",
        );
        let handle = lab.spawn(
            ns,
            &format!("machine-{name}"),
            Path::new("unshare"),
            &[
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ],
        )?;
        let proc = lab.proc(handle);
        wait::until(
            &format!("machine {name}'s mounts"),
            Duration::from_secs(10),
            || {
                if proc.exited().is_some() {
                    return Some(Err(anyhow::anyhow!("{}", proc.log_text())));
                }
                proc.log_text().contains("machine ready").then_some(Ok(()))
            },
        )??;
        let machine = Self {
            name: name.to_owned(),
            ns: ns.clone(),
            holder: proc.pid(),
        };
        let standin = crate::mesh::binary("standin-systemctl")?;
        machine.sh(&format!(
            "install -D -m 0755 {} /usr/local/sbin/systemctl",
            standin.display()
        ))?;
        Ok(machine)
    }

    /// `bash -e -o pipefail -c SCRIPT` on the machine, as root in /root with a login's PATH:
    /// its output, whether it succeeded or not.
    pub fn run(&self, script: &str) -> anyhow::Result<Output> {
        Command::new("nsenter")
            .args([
                "--target",
                &self.holder.to_string(),
                "--mount",
                "--net",
                "--",
            ])
            .args([
                "bash",
                "-e",
                "-o",
                "pipefail",
                "-c",
                &format!("cd /root\n{script}"),
            ])
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .output()
            .context("running nsenter")
    }

    /// As [`Machine::run`], failing unless the script succeeds: its standard output.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self.run(script)?;
        anyhow::ensure!(
            out.status.success(),
            "on {}, `{script}` failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Reads a file on the machine (relative to /root).
    pub fn read(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let out = self.run(&format!("cat -- {path:?}"))?;
        anyhow::ensure!(out.status.success(), "on {}: no {path}", self.name);
        Ok(out.stdout)
    }

    /// Writes a file on the machine (relative to /root), as a copy from another would.
    pub fn write(&self, path: &str, contents: &[u8]) -> anyhow::Result<()> {
        let staged = tempfile::NamedTempFile::new()?;
        std::fs::write(staged.path(), contents)?;
        // The staged file is in the host's /tmp, which the machine does not see: read it
        // through /proc of a process that does (this one).
        let fd = std::fs::File::open(staged.path())?;
        let source = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        self.sh(&format!("cat {} > {path:?}", source.display()))?;
        Ok(())
    }
}
