//! The CA's index of issued certificates, in embedded SQLite.
//!
//! Rows are never deleted: a revoked or expired certificate stays as the record of what was
//! issued, and its mesh IP is never handed out again by automatic allocation. Every command's
//! writes happen in one IMMEDIATE transaction, so concurrent `rma-ca` runs serialise and an
//! interrupted one leaves the index as it was.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use time::OffsetDateTime;

use crate::ids::{Fingerprint, Serial};
use crate::node_cert::NodeCert;

/// Version 2 added issuing CAs (rows with a `network`), version 3 join tokens; an older index
/// is upgraded when opened.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE certs (
    serial        TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    ip            INTEGER NOT NULL,
    groups        TEXT NOT NULL,
    not_before    INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT,
    der           BLOB NOT NULL
);
CREATE INDEX certs_name ON certs(name);
CREATE INDEX certs_ip ON certs(ip);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('crl_number', 0);
";

/// From version 1 to 2: an issuing CA the root signed is a row with its network (and IP 0,
/// which no mesh network holds).
const UPGRADE_TO_2: &str = "ALTER TABLE certs ADD COLUMN network TEXT;";

/// From version 2 to 3: join tokens (the secret's SHA-256 only) and every use of one.
const UPGRADE_TO_3: &str = "
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    groups        TEXT NOT NULL,
    name_prefix   TEXT NOT NULL,
    bundle        TEXT NOT NULL,
    uses_allowed  INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE TABLE token_uses (
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    at          INTEGER NOT NULL,
    name        TEXT NOT NULL,
    fingerprint TEXT,
    outcome     TEXT NOT NULL
);
CREATE INDEX token_uses_token ON token_uses(token_id);
";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: already exists", path.display())]
    Exists { path: PathBuf },
    #[error("{}: missing (is this the CA directory?)", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {cause}", path.display())]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("{}: not an RMA Mesh CA index (schema version {found}, expected {SCHEMA_VERSION})", path.display())]
    Schema { path: PathBuf, found: i64 },
    #[error("CA index: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("CA index holds a corrupt row: {0}")]
    Corrupt(String),
}

/// Whether an issued certificate is still usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Valid,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub at: OffsetDateTime,
    pub reason: Option<String>,
}

/// One row of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub serial: Serial,
    pub fingerprint: Fingerprint,
    pub name: String,
    pub mesh_ip: Ipv4Addr,
    pub groups: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub issued_at: OffsetDateTime,
    pub revoked: Option<Revocation>,
    /// For an issuing CA this root signed: its network. `None` for a node.
    pub network: Option<Ipv4Net>,
}

impl IssuedCert {
    pub fn status(&self, now: OffsetDateTime) -> Status {
        if self.revoked.is_some() {
            Status::Revoked
        } else if now > self.not_after {
            Status::Expired
        } else {
            Status::Valid
        }
    }
}

#[derive(Debug)]
pub struct Index {
    conn: Connection,
}

fn open_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> IndexError + '_ {
    move |cause| IndexError::Open {
        path: path.to_owned(),
        cause,
    }
}

impl Index {
    /// Creates a new, empty index; fails if the file exists.
    pub fn create(path: &Path) -> Result<Self, IndexError> {
        if path.exists() {
            return Err(IndexError::Exists {
                path: path.to_owned(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_error(path))?;
        let tx = conn.transaction().map_err(open_error(path))?;
        tx.execute_batch(SCHEMA).map_err(open_error(path))?;
        tx.execute_batch(UPGRADE_TO_2).map_err(open_error(path))?;
        tx.execute_batch(UPGRADE_TO_3).map_err(open_error(path))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_error(path))?;
        tx.commit().map_err(open_error(path))?;
        Ok(Self { conn })
    }

    /// Opens an existing index and checks that it is one.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        if !path.exists() {
            return Err(IndexError::Missing {
                path: path.to_owned(),
            });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(open_error(path))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_error(path))?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_error(path))?;
        if !(1..=SCHEMA_VERSION).contains(&found) {
            return Err(IndexError::Schema {
                path: path.to_owned(),
                found,
            });
        }
        let mut index = Self { conn };
        if found < SCHEMA_VERSION {
            index.upgrade().map_err(open_error(path))?;
        }
        Ok(index)
    }

    /// Brings an older index to this version, one step at a time, in one write transaction
    /// that re-reads the version under its lock: two commands opening the same old index
    /// upgrade it once.
    fn upgrade(&mut self) -> Result<(), rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for (version, sql) in [(2, UPGRADE_TO_2), (3, UPGRADE_TO_3)] {
            if found < version {
                tx.execute_batch(sql)?;
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()
    }

    /// Starts a write transaction that holds the index's write lock until it ends.
    pub fn transaction(&mut self) -> Result<IndexTx<'_>, IndexError> {
        Ok(IndexTx(self.conn.transaction_with_behavior(
            TransactionBehavior::Immediate,
        )?))
    }

    /// Every certificate ever issued, oldest first.
    pub fn list(&self) -> Result<Vec<IssuedCert>, IndexError> {
        select(&self.conn, "1 = 1", [])
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

const COLUMNS: &str = "serial, fingerprint, name, ip, groups, not_before, not_after, issued_at, \
                       revoked_at, revoke_reason, network";

pub(crate) fn timestamp(secs: i64) -> Result<OffsetDateTime, IndexError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| IndexError::Corrupt(e.to_string()))
}

fn select(
    conn: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<IssuedCert>, IndexError> {
    let sql = format!("SELECT {COLUMNS} FROM certs WHERE {condition} ORDER BY issued_at, rowid");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params, |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, i64>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, i64>(7)?,
            row.get::<_, Option<i64>>(8)?,
            row.get::<_, Option<String>>(9)?,
            row.get::<_, Option<String>>(10)?,
        ))
    })?;
    rows.map(|row| {
        let (serial, fp, name, ip, groups, nb, na, issued, revoked_at, reason, network) = row?;
        let network = network
            .map(|n| n.parse::<Ipv4Net>())
            .transpose()
            .map_err(|e| IndexError::Corrupt(e.to_string()))?;
        let serial = serial
            .parse::<Serial>()
            .map_err(|e| IndexError::Corrupt(e.to_string()))?;
        let fingerprint = fp
            .parse()
            .map_err(|e: crate::BadFingerprint| IndexError::Corrupt(e.to_string()))?;
        let revoked = match revoked_at {
            Some(at) => Some(Revocation {
                at: timestamp(at)?,
                reason,
            }),
            None => None,
        };
        Ok(IssuedCert {
            serial,
            fingerprint,
            name,
            mesh_ip: Ipv4Addr::from(ip),
            groups: groups
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            not_before: timestamp(nb)?,
            not_after: timestamp(na)?,
            issued_at: timestamp(issued)?,
            revoked,
            network,
        })
    })
    .collect()
}

/// A write transaction on the index. Dropping it without [`IndexTx::commit`] rolls back.
#[derive(Debug)]
pub struct IndexTx<'a>(pub(crate) rusqlite::Transaction<'a>);

impl IndexTx<'_> {
    /// Unrevoked, unexpired certificates for `name`.
    pub fn live_with_name(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<IssuedCert>, IndexError> {
        select(
            &self.0,
            "name = ?1 AND revoked_at IS NULL AND not_after >= ?2",
            params![name, now.unix_timestamp()],
        )
    }

    /// Unrevoked, unexpired node certificates with a mesh IP in `network`.
    pub fn live_in(
        &self,
        network: Ipv4Net,
        now: OffsetDateTime,
    ) -> Result<Vec<IssuedCert>, IndexError> {
        select(
            &self.0,
            "ip BETWEEN ?1 AND ?2 AND network IS NULL AND revoked_at IS NULL AND not_after >= ?3",
            params![
                u32::from(network.network()),
                u32::from(network.broadcast()),
                now.unix_timestamp()
            ],
        )
    }

    /// Unrevoked, unexpired certificates for mesh IP `ip`.
    pub fn live_with_ip(
        &self,
        ip: Ipv4Addr,
        now: OffsetDateTime,
    ) -> Result<Vec<IssuedCert>, IndexError> {
        select(
            &self.0,
            "ip = ?1 AND revoked_at IS NULL AND not_after >= ?2",
            params![u32::from(ip), now.unix_timestamp()],
        )
    }

    /// The issuing CAs this root signed that are live at `now` (neither revoked nor expired).
    pub fn live_issuing(&self, now: OffsetDateTime) -> Result<Vec<crate::CaCert>, IndexError> {
        let mut stmt = self.0.prepare(
            "SELECT der FROM certs WHERE network IS NOT NULL AND revoked_at IS NULL AND \
             not_after >= ?1",
        )?;
        let rows = stmt.query_map(params![now.unix_timestamp()], |row| {
            row.get::<_, Vec<u8>>(0)
        })?;
        rows.map(|der| {
            crate::CaCert::issuing_from_der(&der?).map_err(|e| IndexError::Corrupt(e.to_string()))
        })
        .collect()
    }

    /// The lowest host address of `network` that no certificate has ever held, outside the
    /// networks in `skip` (a root skips its issuing CAs' networks: they give out their own).
    pub fn next_free_ip(
        &self,
        network: Ipv4Net,
        skip: &[Ipv4Net],
    ) -> Result<Option<Ipv4Addr>, IndexError> {
        let first = u32::from(network.network());
        let last = u32::from(network.broadcast());
        let (first_host, last_host) = if network.prefix_len() >= 31 {
            (first, last)
        } else {
            (first + 1, last - 1)
        };
        let mut stmt = self
            .0
            .prepare("SELECT DISTINCT ip FROM certs WHERE ip BETWEEN ?1 AND ?2 ORDER BY ip")?;
        let used: Vec<u32> = stmt
            .query_map(params![first_host, last_host], |row| row.get::<_, u32>(0))?
            .collect::<Result<_, _>>()?;
        let mut used = used.into_iter().peekable();
        let mut candidate = first_host;
        while candidate <= last_host {
            if let Some(net) = skip.iter().find(|n| n.contains(&Ipv4Addr::from(candidate))) {
                match u32::from(net.broadcast()).checked_add(1) {
                    Some(next) => candidate = next,
                    None => return Ok(None),
                }
                continue;
            }
            while used.next_if(|u| *u < candidate).is_some() {}
            if used.peek() == Some(&candidate) {
                candidate += 1;
                continue;
            }
            return Ok(Some(Ipv4Addr::from(candidate)));
        }
        Ok(None)
    }

    /// Records an issued certificate.
    pub fn record(&self, cert: &NodeCert, issued_at: OffsetDateTime) -> Result<(), IndexError> {
        let groups: Vec<&str> = cert.groups().iter().map(|g| g.as_str()).collect();
        self.0.execute(
            "INSERT INTO certs (serial, fingerprint, name, ip, groups, not_before, not_after, \
             issued_at, der) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                cert.serial().to_string(),
                cert.fingerprint().to_string(),
                cert.name().as_str(),
                u32::from(cert.mesh_ip()),
                groups.join(","),
                cert.not_before().unix_timestamp(),
                cert.not_after().unix_timestamp(),
                issued_at.unix_timestamp(),
                cert.der(),
            ],
        )?;
        Ok(())
    }

    /// Records an issuing CA this root signed, so that it can be listed and revoked.
    pub fn record_ca(
        &self,
        ca: &crate::CaCert,
        issued_at: OffsetDateTime,
    ) -> Result<(), IndexError> {
        self.0.execute(
            "INSERT INTO certs (serial, fingerprint, name, ip, groups, not_before, not_after, \
             issued_at, der, network) VALUES (?1, ?2, ?3, 0, '', ?4, ?5, ?6, ?7, ?8)",
            params![
                ca.serial().to_string(),
                ca.fingerprint().to_string(),
                ca.name(),
                ca.not_before().unix_timestamp(),
                ca.not_after().unix_timestamp(),
                issued_at.unix_timestamp(),
                ca.der(),
                ca.network().to_string(),
            ],
        )?;
        Ok(())
    }

    /// Certificates whose name is `selector`, or whose fingerprint starts with it.
    pub fn find(&self, selector: &str) -> Result<Vec<IssuedCert>, IndexError> {
        let by_name = select(&self.0, "name = ?1", params![selector])?;
        if !by_name.is_empty() {
            return Ok(by_name);
        }
        let is_hex = !selector.is_empty() && selector.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex {
            return Ok(Vec::new());
        }
        select(
            &self.0,
            "substr(fingerprint, 1, length(?1)) = ?1",
            params![selector.to_ascii_lowercase()],
        )
    }

    pub fn mark_revoked(
        &self,
        serial: &Serial,
        at: OffsetDateTime,
        reason: Option<&str>,
    ) -> Result<(), IndexError> {
        self.0.execute(
            "UPDATE certs SET revoked_at = ?2, revoke_reason = ?3 \
             WHERE serial = ?1 AND revoked_at IS NULL",
            params![serial.to_string(), at.unix_timestamp(), reason],
        )?;
        Ok(())
    }

    /// Serial numbers and revocation times of every revoked certificate.
    pub fn revoked(&self) -> Result<Vec<(Serial, OffsetDateTime)>, IndexError> {
        Ok(select(&self.0, "revoked_at IS NOT NULL", [])?
            .into_iter()
            .filter_map(|c| c.revoked.map(|r| (c.serial, r.at)))
            .collect())
    }

    /// Takes the next CRL number: CRL numbers only ever increase.
    pub fn next_crl_number(&self) -> Result<u64, IndexError> {
        let number: i64 = self.0.query_row(
            "UPDATE counters SET value = value + 1 WHERE name = 'crl_number' RETURNING value",
            [],
            |row| row.get(0),
        )?;
        u64::try_from(number).map_err(|_| IndexError::Corrupt(format!("crl_number {number}")))
    }

    pub fn commit(self) -> Result<(), IndexError> {
        Ok(self.0.commit()?)
    }
}
