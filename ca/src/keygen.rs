//! `keygen` as both `rma-ca keygen` and `meshd keygen` offer it: the same arguments, the same
//! files, the same report.

use std::path::PathBuf;

use crate::files::{self, FileError};
use crate::keys::NodeKeys;

/// Arguments of `keygen`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private keys (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out_key: PathBuf,
    /// Where to write the public keys, which are what the CA signs (`rma-ca sign --pub`).
    #[arg(long, value_name = "FILE")]
    pub out_pub: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

impl KeygenArgs {
    /// Generates the keys, writes both files, and says what was written.
    pub fn run(&self) -> Result<(), FileError> {
        let keys = NodeKeys::generate();
        files::write_node_keys(&keys, &self.out_key, &self.out_pub, self.force)?;
        println!(
            "wrote {} (mode 0600) and {}",
            self.out_key.display(),
            self.out_pub.display()
        );
        println!("wireguard public key {}", keys.public().wireguard);
        Ok(())
    }
}
