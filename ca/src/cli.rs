//! The `rma-ca` command line. Doc comments here are the `--help` text.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use rma_ca::authority::IpChoice;
use rma_ca::{Group, NodeName};

/// The RMA Mesh certificate authority: issues node certificates that bind a node's name, mesh
/// IP, groups and WireGuard key, and revokes them.
#[derive(Debug, Parser)]
#[command(name = "rma-ca", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the CA lives.
#[derive(Debug, Args)]
pub struct CaDir {
    /// The CA directory, holding ca.crt, ca.key (mode 0600) and the index ca.db.
    #[arg(long, value_name = "DIR", default_value = ".", env = "RMA_CA_DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new CA: an Ed25519 self-signed X.509 certificate whose network becomes an IP
    /// name constraint. Refuses if the directory already holds a CA.
    Init {
        #[command(flatten)]
        ca: CaDir,
        /// The CA's name (its certificate's common name).
        #[arg(long)]
        name: NodeName,
        /// The network mesh IPs come from, such as 10.42.0.0/16.
        #[arg(long, value_name = "CIDR")]
        network: Ipv4Net,
        /// How long the CA is valid, such as 5y, 18months or 365d.
        #[arg(long, default_value = "5y", value_parser = parse_duration)]
        duration: time::Duration,
    },
    /// Start an issuing CA, one that an online enrollment service can sign nodes with while the
    /// root key stays offline: makes its key (ca.key, mode 0600), its index and ca.pub, the
    /// public key to have signed with `rma-ca sign-ca` on the root's machine. Refuses if the
    /// directory already holds a CA.
    InitIssuing {
        #[command(flatten)]
        ca: CaDir,
    },
    /// On the root's machine: sign an issuing CA's public key (its ca.pub). The issuing CA gets
    /// path length 0 (it signs nodes, never another CA), a network inside the root's, and a
    /// validity inside the root's; it is recorded in the root's index, so that `rma-ca revoke`
    /// can revoke it.
    SignCa {
        #[command(flatten)]
        ca: CaDir,
        /// The issuing CA's public key file (ca.pub from `rma-ca init-issuing`).
        #[arg(long = "pub", value_name = "FILE")]
        public: PathBuf,
        /// The issuing CA's name (its certificate's common name).
        #[arg(long)]
        name: NodeName,
        /// The part of the root's network the issuing CA may give out, such as 10.42.128.0/17
        /// (default: all of it).
        #[arg(long, value_name = "CIDR")]
        network: Option<Ipv4Net>,
        /// The only groups the issuing CA may give, comma-separated, such as workers,gpu: a
        /// machine that joins through it can never be in another group (routerd, lighthouses).
        #[arg(long, value_parser = parse_groups, required_unless_present = "any_groups")]
        groups: Option<Groups>,
        /// Let the issuing CA give any group instead.
        #[arg(long, conflicts_with = "groups")]
        any_groups: bool,
        /// How long it is valid. Default: a year, shortened to end with the root.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<time::Duration>,
        /// Where to write the issuing CA's certificate.
        #[arg(long, value_name = "FILE")]
        out_crt: PathBuf,
        /// Overwrite an existing output file, and allow a name a live certificate holds.
        #[arg(long)]
        force: bool,
    },
    /// On the issuing CA's machine: put the certificate `rma-ca sign-ca` made in place, with
    /// the root's certificate as root.crt. Both are checked first.
    InstallCa {
        #[command(flatten)]
        ca: CaDir,
        /// The issuing CA's certificate from `rma-ca sign-ca`.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The root CA's certificate (its ca.crt).
        #[arg(long, value_name = "FILE")]
        root: PathBuf,
        /// Replace a certificate already installed (a renewed issuing CA).
        #[arg(long)]
        force: bool,
    },
    /// Generate a node's keys: an Ed25519 identity key and an X25519 WireGuard key. The
    /// private file is written with mode 0600; the public file holds only public keys and is
    /// what the CA signs (`rma-ca sign --pub`).
    Keygen(rma_ca::keygen::KeygenArgs),
    /// Issue a node certificate and record it in the index.
    Sign(SignArgs),
    /// Show a certificate: name, mesh IP, groups, WireGuard key, validity, fingerprint, issuer.
    Print {
        /// A node or CA certificate, PEM or DER.
        cert: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check that a node certificate is trusted now: signature chain to the root CA (through
    /// its issuing CA, if one signed it), validity windows, networks, revocation lists and
    /// WireGuard key. Exits 0 when trusted, 1 otherwise.
    Verify {
        /// The root CA certificate to trust.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// Revocation lists of that root or its issuing CAs (one file may hold several).
        #[arg(long, value_name = "FILE")]
        crl: Option<PathBuf>,
        /// The issuing CA's certificate, when the node certificate file does not carry it
        /// (as `openssl verify -untrusted`).
        #[arg(long, value_name = "FILE")]
        untrusted: Option<PathBuf>,
        /// The node certificate to check.
        cert: PathBuf,
    },
    /// List every certificate the CA has issued, with its status.
    List {
        #[command(flatten)]
        ca: CaDir,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a node's live certificates by name, or one certificate by (a unique prefix of)
    /// its fingerprint. Publish the change with `rma-ca crl`.
    Revoke {
        #[command(flatten)]
        ca: CaDir,
        /// A node name, or a certificate fingerprint or unique prefix of one.
        #[arg(value_name = "NAME|FINGERPRINT")]
        selector: String,
        /// Why, kept in the index.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Join tokens: what a new machine needs to enroll itself with `meshd join`, through
    /// `rma-ca serve` on this issuing CA.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the enrollment service on an issuing CA: an HTTP API (POST /v1/join, /v1/renew)
    /// for `meshd join` and meshd's renewals, meant to sit behind cloudflared on a public
    /// hostname. It sees public keys only, never a node's private key. Refuses a root CA.
    Serve {
        #[command(flatten)]
        ca: CaDir,
        /// Address to listen on (cloudflared's ingress points here).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The revocation lists the operator publishes (the root's among them), handed to
        /// joining nodes with a fresh list of this CA's; re-read on every answer.
        #[arg(long, value_name = "FILE")]
        crl: Option<PathBuf>,
        /// How long the certificates it issues last; meshd renews them at two-thirds.
        #[arg(long, default_value = "90d", value_parser = parse_duration)]
        cert_duration: time::Duration,
    },
    /// Write a CA-signed X.509 revocation list of every revoked certificate, for lighthouses to
    /// hand to every node. An issuing CA's list is written with its certificate, so that nodes
    /// can check it against the root.
    Crl {
        #[command(flatten)]
        ca: CaDir,
        /// Where to write the list (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Other lists of the same root (the root's, or another issuing CA's) to write into the
        /// same file, so that one file carries every list; each is checked first.
        #[arg(long, value_name = "FILE")]
        include: Vec<PathBuf>,
        /// When the list is due to be replaced, such as 30d.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        duration: time::Duration,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it with the exact `meshd join` command. Its secret is kept
    /// hashed; the token carries the root CA's fingerprint, which the joining machine checks.
    Create(TokenCreateArgs),
    /// List every token: status, uses, groups, name prefix, bundle, expiry.
    List {
        #[command(flatten)]
        ca: CaDir,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show every recorded use of a token: certificates issued, and recent refusals.
    Uses {
        #[command(flatten)]
        ca: CaDir,
        /// The token's id, or a unique prefix of it.
        id: String,
    },
    /// Revoke a token: no machine can join with it any more (certificates it issued stay
    /// valid; revoke those with `rma-ca revoke`).
    Revoke {
        #[command(flatten)]
        ca: CaDir,
        /// The token's id, or a unique prefix of it.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub ca: CaDir,
    /// Comma-separated groups every machine joining with it gets, such as workers.
    #[arg(long, value_parser = parse_groups)]
    pub groups: Groups,
    /// Names start with this; a name asked for without it gets it in front.
    #[arg(long, default_value = "")]
    pub name_prefix: String,
    /// How many machines may join with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// How long it can be used, such as 24h or 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: time::Duration,
    /// The bundle joining machines get: bundles/NAME.toml in the CA directory, a meshd.toml
    /// without its [pki] section.
    #[arg(long, default_value = "default")]
    pub bundle: String,
    /// The enrollment service's public URL, for the printed join command.
    #[arg(long, env = "RMA_JOIN_URL")]
    pub url: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["public", "out_key"])))]
pub struct SignArgs {
    #[command(flatten)]
    pub ca: CaDir,
    /// The node's name: certificate common name and DNS name.
    #[arg(long)]
    pub name: NodeName,
    /// The node's public key file, from `rma-ca keygen` on the node. The private key
    /// never leaves the node.
    #[arg(long = "pub", value_name = "FILE")]
    pub public: Option<PathBuf>,
    /// Lab shortcut instead of --pub: generate the node's keys here and write them to FILE.
    #[arg(long, value_name = "FILE")]
    pub out_key: Option<PathBuf>,
    /// The mesh IP: an address inside the CA network, or `auto` for the lowest address no
    /// certificate has ever held.
    #[arg(long, default_value = "auto", value_parser = parse_ip_choice)]
    pub ip: IpChoice,
    /// Comma-separated groups, such as gpu,workers.
    #[arg(long, default_value = "", value_parser = parse_groups)]
    pub groups: Groups,
    /// How long the certificate is valid. Default: a year, shortened to end with the CA; a
    /// duration given here that outlives the CA is refused.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<time::Duration>,
    /// Where to write the certificate.
    #[arg(long, value_name = "FILE")]
    pub out_crt: PathBuf,
    /// Overwrite existing output files, and allow a name or mesh IP that a live certificate
    /// already holds.
    #[arg(long)]
    pub force: bool,
}

/// A parsed `--groups` list (clap needs one value type per argument).
#[derive(Debug, Clone)]
pub struct Groups(pub Vec<Group>);

fn parse_groups(text: &str) -> Result<Groups, String> {
    Group::parse_list(text)
        .map(Groups)
        .map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<time::Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (try 5y, 90d or 12h)"))?;
    let duration = time::Duration::try_from(duration).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

fn parse_ip_choice(text: &str) -> Result<IpChoice, String> {
    if text == "auto" {
        return Ok(IpChoice::Auto);
    }
    text.parse::<Ipv4Addr>()
        .map(IpChoice::Fixed)
        .map_err(|_| format!("{text:?} is neither `auto` nor an IPv4 address such as 10.42.0.7"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_and_subcommand_explains_itself() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "`{}` has no help",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                assert!(
                    builtin || arg.get_help().is_some(),
                    "`rma-ca {} --{}` has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_duration("5y").unwrap().whole_days(), 1826);
        assert_eq!(parse_duration("90d").unwrap().whole_days(), 90);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_ip_choice("auto").unwrap(), IpChoice::Auto);
        assert_eq!(
            parse_ip_choice("10.0.0.7").unwrap(),
            IpChoice::Fixed(Ipv4Addr::new(10, 0, 0, 7))
        );
        assert!(parse_ip_choice("10.0.0.7/16").is_err());
        assert_eq!(parse_groups("b,a").unwrap().0.len(), 2);
    }
}
