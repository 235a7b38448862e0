//! The registry on disk (embedded SQLite), so that a restarted routerd routes to the workers
//! it knew at once. One row per worker: its name and its registration as JSON.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::registry::Worker;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY NOT NULL,
    registration TEXT NOT NULL
) STRICT;";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("registry database: worker {name:?} cannot be stored: {cause}")]
    Encode {
        name: String,
        cause: serde_json::Error,
    },
}

/// What a load found: the workers, and rows that no longer parse (kept on disk, not used).
#[derive(Debug, Default)]
pub struct Loaded {
    pub workers: Vec<Worker>,
    pub unreadable: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Store {
    db: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Self { db })
    }

    /// Writes (or replaces) a worker's registration.
    pub fn save(&self, worker: &Worker) -> Result<(), StoreError> {
        let json = serde_json::to_string(worker).map_err(|cause| StoreError::Encode {
            name: worker.name.clone(),
            cause,
        })?;
        self.db.execute(
            "INSERT INTO workers (name, registration) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET registration = excluded.registration",
            params![worker.name, json],
        )?;
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM workers WHERE name = ?1", params![name])?;
        Ok(())
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut statement = self
            .db
            .prepare("SELECT name, registration FROM workers ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut loaded = Loaded::default();
        for row in rows {
            let (name, json) = row?;
            match serde_json::from_str::<Worker>(&json) {
                Ok(worker) if worker.name == name => loaded.workers.push(worker),
                Ok(worker) => loaded
                    .unreadable
                    .push((name, format!("the row holds worker {:?}", worker.name))),
                Err(e) => loaded.unreadable.push((name, e.to_string())),
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::registry::{Capabilities, Offered};

    fn worker(name: &str, port: u16) -> Worker {
        Worker {
            name: name.into(),
            mesh_ip: Ipv4Addr::new(10, 42, 0, 7),
            capabilities: Capabilities::default(),
            offered: vec![Offered {
                name: "rag-embeddings".into(),
                port,
                health: "/health".into(),
            }],
            assigned: vec!["rag-embeddings".into()],
            refused: Vec::new(),
            states: Vec::new(),
            load: None,
        }
    }

    #[test]
    fn registrations_survive_a_reopen_and_updates_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        {
            let store = Store::open(&path).unwrap();
            store.save(&worker("a", 1)).unwrap();
            store.save(&worker("b", 2)).unwrap();
            store.save(&worker("a", 3)).unwrap();
            store.remove("b").unwrap();
        }
        let loaded = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.workers, vec![worker("a", 3)]);
        assert!(loaded.unreadable.is_empty());
    }

    #[test]
    fn an_unreadable_row_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("registry.db")).unwrap();
        store.save(&worker("a", 1)).unwrap();
        store
            .db
            .execute(
                "INSERT INTO workers (name, registration) VALUES ('b', '{not json')",
                [],
            )
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.workers.len(), 1);
        assert_eq!(loaded.unreadable.len(), 1);
        assert_eq!(loaded.unreadable[0].0, "b");
        assert_eq!(
            store.load().unwrap().unreadable.len(),
            1,
            "the row stays on disk"
        );
    }
}
