//! `rma-ca token create|list|uses|revoke`.

use rma_ca::authority::Authority;
use rma_ca::enrollment::TokenTerms;
use rma_ca::timefmt::rfc3339;
use rma_ca::tokens::TokenRow;
use time::OffsetDateTime;

use crate::cli::TokenCommand;

pub fn run(command: TokenCommand, now: OffsetDateTime) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let mut authority = Authority::open(&args.ca.dir)?;
            let token = authority.create_token(
                &TokenTerms {
                    groups: args.groups.0,
                    name_prefix: args.name_prefix,
                    uses: args.uses,
                    ttl: args.ttl,
                    bundle: args.bundle,
                },
                now,
            )?;
            println!("{token}");
            eprintln!(
                "token {} made: {} use{}, until {}",
                token.credential.id,
                args.uses,
                if args.uses == 1 { "" } else { "s" },
                rfc3339(now + args.ttl)
            );
            // In the environment rather than the command line, which every local user can read
            // in /proc while the join runs.
            eprintln!("on the new machine, as root:");
            eprintln!("  RMA_JOIN_TOKEN={token} meshd join {} --start", args.url);
            Ok(())
        }
        TokenCommand::List { ca, json } => {
            let tokens = Authority::open(&ca.dir)?.tokens()?;
            if json {
                let rows: Vec<_> = tokens.iter().map(|t| row_json(t, now)).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<16}  {:<8}  {:>9}  {:<20}  {:<12}  {:<10}  EXPIRES",
                "ID", "STATUS", "USED", "GROUPS", "NAME PREFIX", "BUNDLE"
            );
            for t in &tokens {
                println!(
                    "{:<16}  {:<8}  {:>9}  {:<20}  {:<12}  {:<10}  {}",
                    t.id,
                    t.status(now).as_str(),
                    format!("{}/{}", t.used, t.policy.uses),
                    groups(t),
                    t.policy.name_prefix,
                    t.policy.bundle,
                    rfc3339(t.policy.expires_at)
                );
            }
            Ok(())
        }
        TokenCommand::Uses { ca, id } => {
            let mut authority = Authority::open(&ca.dir)?;
            let token = authority.token(&id)?;
            for used in authority.token_uses(token.id)? {
                let issued = used
                    .fingerprint
                    .map(|f| format!(" fingerprint {f}"))
                    .unwrap_or_default();
                println!(
                    "{}  {:<12}  {}{issued}",
                    rfc3339(used.at),
                    used.outcome,
                    used.name
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { ca, id } => {
            let id = Authority::open(&ca.dir)?.revoke_token(&id, now)?;
            println!("revoked token {id}");
            Ok(())
        }
    }
}

fn groups(t: &TokenRow) -> String {
    let names: Vec<&str> = t.policy.groups.iter().map(|g| g.as_str()).collect();
    names.join(",")
}

fn row_json(t: &TokenRow, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "id": t.id.to_string(),
        "status": t.status(now).as_str(),
        "used": t.used,
        "uses": t.policy.uses,
        "groups": t.policy.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "name_prefix": t.policy.name_prefix,
        "bundle": t.policy.bundle,
        "created_at": rfc3339(t.created_at),
        "expires_at": rfc3339(t.policy.expires_at),
        "revoked_at": t.revoked_at.map(rfc3339),
    })
}
