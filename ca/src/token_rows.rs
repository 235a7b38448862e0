//! Join tokens in the CA's index: their rows, and every use of each.
//!
//! A token row keeps the secret's SHA-256, never the secret. Uses that issued a certificate are
//! bounded by the token's `uses`; refusals of a known token are kept too, but only the newest
//! [`MAX_REFUSALS_KEPT`] of each, so that a holder of a spent token cannot grow the index.

use rusqlite::{Connection, OptionalExtension as _, params};
use time::OffsetDateTime;

use crate::ids::Fingerprint;
use crate::index::{Index, IndexError, IndexTx, timestamp};
use crate::names::Group;
use crate::tokens::{MAX_REFUSALS_KEPT, TokenId, TokenPolicy, TokenRow, TokenUse};

const COLUMNS: &str = "id, secret_sha256, groups, name_prefix, bundle, uses_allowed, created_at, \
     expires_at, revoked_at, \
     (SELECT count(*) FROM token_uses u WHERE u.token_id = t.id AND u.fingerprint IS NOT NULL)";

fn corrupt(e: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt(e.to_string())
}

fn select(
    conn: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<TokenRow>, IndexError> {
    let sql =
        format!("SELECT {COLUMNS} FROM tokens t WHERE {condition} ORDER BY created_at, rowid");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params, |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Vec<u8>>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, u32>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, i64>(7)?,
            row.get::<_, Option<i64>>(8)?,
            row.get::<_, u32>(9)?,
        ))
    })?;
    rows.map(|row| {
        let (id, hash, groups, name_prefix, bundle, uses, created, expires, revoked, used) = row?;
        Ok(TokenRow {
            id: id.parse().map_err(corrupt)?,
            secret_hash: hash.try_into().map_err(|_| corrupt("token hash length"))?,
            policy: TokenPolicy {
                groups: Group::parse_list(&groups).map_err(corrupt)?,
                name_prefix,
                uses,
                expires_at: timestamp(expires)?,
                bundle,
            },
            created_at: timestamp(created)?,
            revoked_at: revoked.map(timestamp).transpose()?,
            used,
        })
    })
    .collect()
}

impl Index {
    /// Every token, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, IndexError> {
        select(self.conn(), "1 = 1", [])
    }

    /// Every recorded use of a token, oldest first.
    pub fn token_uses(&self, id: TokenId) -> Result<Vec<TokenUse>, IndexError> {
        let mut stmt = self.conn().prepare(
            "SELECT at, name, fingerprint, outcome FROM token_uses WHERE token_id = ?1 \
             ORDER BY at, rowid",
        )?;
        let rows = stmt.query_map(params![id.to_string()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (at, name, fingerprint, outcome) = row?;
            Ok(TokenUse {
                at: timestamp(at)?,
                name,
                fingerprint: fingerprint
                    .map(|f| f.parse::<Fingerprint>())
                    .transpose()
                    .map_err(corrupt)?,
                outcome,
            })
        })
        .collect()
    }
}

impl IndexTx<'_> {
    pub fn insert_token(
        &self,
        id: TokenId,
        secret_hash: &[u8; 32],
        policy: &TokenPolicy,
        now: OffsetDateTime,
    ) -> Result<(), IndexError> {
        let groups: Vec<&str> = policy.groups.iter().map(Group::as_str).collect();
        self.0.execute(
            "INSERT INTO tokens (id, secret_sha256, groups, name_prefix, bundle, uses_allowed, \
             created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id.to_string(),
                &secret_hash[..],
                groups.join(","),
                policy.name_prefix,
                policy.bundle,
                policy.uses,
                now.unix_timestamp(),
                policy.expires_at.unix_timestamp(),
            ],
        )?;
        Ok(())
    }

    pub fn token(&self, id: TokenId) -> Result<Option<TokenRow>, IndexError> {
        Ok(select(&self.0, "id = ?1", params![id.to_string()])?
            .into_iter()
            .next())
    }

    /// Tokens whose id starts with `prefix`.
    pub fn tokens_starting(&self, prefix: &str) -> Result<Vec<TokenRow>, IndexError> {
        select(
            &self.0,
            "substr(id, 1, length(?1)) = ?1",
            params![prefix.to_ascii_lowercase()],
        )
    }

    /// Revokes a token; returns whether it was live.
    pub fn revoke_token(&self, id: TokenId, now: OffsetDateTime) -> Result<bool, IndexError> {
        let changed = self.0.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id.to_string(), now.unix_timestamp()],
        )?;
        Ok(changed > 0)
    }

    /// Records a use: the certificate it issued, or (with `None`) a refusal, keeping only the
    /// newest [`MAX_REFUSALS_KEPT`] refusals of the token.
    pub fn record_token_use(
        &self,
        id: TokenId,
        at: OffsetDateTime,
        name: &str,
        issued: Option<Fingerprint>,
        outcome: &str,
    ) -> Result<(), IndexError> {
        let id = id.to_string();
        self.0.execute(
            "INSERT INTO token_uses (token_id, at, name, fingerprint, outcome) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                at.unix_timestamp(),
                name,
                issued.map(|f| f.to_string()),
                outcome
            ],
        )?;
        if issued.is_none() {
            self.0.execute(
                "DELETE FROM token_uses WHERE token_id = ?1 AND fingerprint IS NULL AND rowid \
                 NOT IN (SELECT rowid FROM token_uses WHERE token_id = ?1 AND fingerprint IS \
                 NULL ORDER BY rowid DESC LIMIT ?2)",
                params![id, MAX_REFUSALS_KEPT as i64],
            )?;
        }
        Ok(())
    }

    /// The newest live node certificate named `name` (without its issuing CA's).
    pub fn newest_live(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<crate::NodeCert>, IndexError> {
        let der: Option<Vec<u8>> = self
            .0
            .query_row(
                "SELECT der FROM certs WHERE name = ?1 AND revoked_at IS NULL AND \
                 not_after >= ?2 AND network IS NULL ORDER BY issued_at DESC, rowid DESC LIMIT 1",
                params![name, now.unix_timestamp()],
                |row| row.get(0),
            )
            .optional()?;
        der.map(|d| crate::NodeCert::from_der(&d).map_err(corrupt))
            .transpose()
    }
}
