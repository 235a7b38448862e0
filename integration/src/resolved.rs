//! A machine that runs systemd-resolved, for a test: `scripts/resolved-machine.sh` in a lab
//! namespace, and programs run inside its mount namespace, where its D-Bus and resolver are.

use std::path::Path;
use std::process::Output;

use crate::lab::{self, Lab, Ns};
use crate::mesh::{self, MeshNode, NodeConfig, Started};

/// Where `scripts/install-deps.sh` puts resolved's `resolvectl` and `systemd-resolved`.
pub const BIN: &str = "/opt/rma-mesh-test/systemd-resolved/bin";

#[derive(Debug)]
pub struct ResolvedMachine {
    /// The script's process, whose mount namespace holds the machine's /run and /etc files.
    pid: String,
}

impl ResolvedMachine {
    /// Starts resolved and its bus in `ns`, and waits until resolved owns its bus name.
    pub fn start(lab: &mut Lab, ns: &Ns) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/resolved-machine.sh");
        let state = lab.dir().join(format!("resolved-{}", ns.name()));
        let handle = lab.spawn_listening(
            ns,
            "systemd-resolved",
            Path::new("unshare"),
            &[
                "-m",
                "--propagation",
                "private",
                &script.to_string_lossy(),
                &state.to_string_lossy(),
            ],
        )?;
        Ok(Self {
            pid: lab.proc(handle).pid().to_string(),
        })
    }

    /// The arguments that run `program` on this machine, with resolved's tools on its PATH.
    fn entered<'a>(&'a self, path: &'a str, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["-t", &self.pid, "-m", "-n", "env", path, program];
        full.extend_from_slice(args);
        full
    }

    fn path() -> String {
        format!("PATH={BIN}:{}", std::env::var("PATH").unwrap_or_default())
    }

    /// Runs `program` on this machine to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let path = Self::path();
        lab::run("nsenter", &self.entered(&path, program, args))
    }

    /// Starts meshd on this machine, as [`mesh::start`] does in a plain namespace.
    pub fn start_meshd(
        &self,
        lab: &mut Lab,
        ns: &Ns,
        node: &NodeConfig<'_>,
    ) -> anyhow::Result<MeshNode> {
        let meshd = mesh::binary("meshd")?;
        let (config, socket) = mesh::write_config(lab, node)?;
        let started = Started {
            name: node.name,
            mesh_ip: node.issued.cert.mesh_ip(),
            config,
            socket,
        };
        let path = Self::path();
        let meshd = meshd.to_string_lossy();
        mesh::start_config_with(lab, ns, started, |lab, name, args| {
            let full = self.entered(&path, &meshd, args);
            lab.spawn_outside(name, Path::new("nsenter"), &full, &[])
        })
    }
}
