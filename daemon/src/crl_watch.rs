//! Watching a revocation list file: a daemon looks on SIGHUP and on a timer, and takes the
//! file's list only when it changed, verifies against the CA and is newer than the one in
//! use (an older file never un-revokes anyone).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rma_ca::{CRL_WARNING_WINDOW, CaCert, RevocationList};
use time::OffsetDateTime;

/// Logs a warning when the list in use is within [`CRL_WARNING_WINDOW`] of its next-update time,
/// or past it. Daemons call it at start, when they take a newer list, and once a day; they also
/// export the time left as a metric, which the alert rules watch.
pub fn warn_if_due(crl: Option<&RevocationList>, now: OffsetDateTime) {
    if let Some(warning) = crl.and_then(|c| c.next_update_warning(now, CRL_WARNING_WINDOW)) {
        tracing::warn!("{warning}; it stays in use until a newer one arrives");
    }
}

#[derive(Debug)]
pub struct CrlWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

impl CrlWatch {
    /// Watches `path`, taking its current contents as already loaded.
    pub fn new(path: PathBuf) -> Self {
        let seen = Self::stamp(&path);
        Self { path, seen }
    }

    fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// The file's list if it changed since the last look (or `force`, on SIGHUP), verifies
    /// against `ca` and supersedes `current`. Refusals are logged; the caller keeps its list.
    pub fn newer(
        &mut self,
        ca: &CaCert,
        current: Option<&RevocationList>,
        force: bool,
    ) -> Option<RevocationList> {
        let stamp = Self::stamp(&self.path);
        if !force && stamp == self.seen {
            return None;
        }
        self.seen = stamp;
        let crl = match crate::identity::load_crl(&self.path, ca) {
            Ok(crl) => crl,
            Err(e) => {
                tracing::error!("revocation list refused, keeping the one in use: {e:#}");
                return None;
            }
        };
        if !crl.supersedes(current) {
            if !force {
                tracing::warn!(number = ?crl.number(), "the revocation list file is not newer than the one in use; keeping it");
            }
            return None;
        }
        tracing::info!(path = %self.path.display(), revoked = crl.len(), number = ?crl.number(), "revocation list loaded");
        Some(crl)
    }
}
