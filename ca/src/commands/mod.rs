//! What each `rma-ca` subcommand does. Time comes in as an argument, like everywhere else.

mod inspect;
mod issue;
mod revocation;
mod serve;
mod token;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use time::OffsetDateTime;

use crate::cli::Command;

pub fn run(command: Command, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init {
            ca,
            name,
            network,
            duration,
        } => issue::init(&ca.dir, name, network, duration, now),
        Command::InitIssuing { ca } => issue::init_issuing(&ca.dir),
        Command::SignCa {
            ca,
            public,
            name,
            network,
            groups,
            any_groups: _,
            duration,
            out_crt,
            force,
        } => issue::sign_ca(
            &ca.dir,
            issue::CaRequest {
                public: &public,
                name,
                network,
                groups: groups.map(|g| g.0),
                duration,
                out_crt: &out_crt,
                force,
            },
            now,
        ),
        Command::InstallCa {
            ca,
            cert,
            root,
            force,
        } => issue::install_ca(&ca.dir, &cert, &root, force),
        Command::Keygen(args) => args.run().map_err(Into::into),
        Command::Sign(args) => issue::sign(args, now),
        Command::Print { cert, json } => inspect::print(&cert, json, now),
        Command::Verify {
            ca,
            crl,
            untrusted,
            cert,
        } => inspect::verify(&ca, crl.as_deref(), untrusted.as_deref(), &cert, now),
        Command::List { ca, json } => inspect::list(&ca.dir, json, now),
        Command::Revoke {
            ca,
            selector,
            reason,
        } => revocation::revoke(&ca.dir, &selector, reason.as_deref(), now),
        Command::Token(command) => token::run(command, now),
        Command::Serve {
            ca,
            listen,
            crl,
            cert_duration,
        } => serve::run(&ca.dir, listen, crl, cert_duration),
        Command::Crl {
            ca,
            out,
            include,
            duration,
            force,
        } => revocation::crl(&ca.dir, &out, &include, duration, force, now),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a whole input file, naming it in the error.
fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| path.display().to_string())
}

/// Error context naming a file: `node.pub: holds a private key, ...`.
fn named<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: {e}", path.display())
}
