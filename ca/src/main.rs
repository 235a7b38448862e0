//! `rma-ca`: the RMA Mesh certificate authority.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli.command, time::OffsetDateTime::now_utc()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rma-ca: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
