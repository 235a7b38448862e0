//! Watching a revocation list file, the same way in every daemon: it looks on SIGHUP and on a
//! timer, and offers the file's list to its trust store only when the file changed and the list
//! verifies against the CA. The store takes it only if it is newer than the one in use (an
//! older file never un-revokes anyone).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rma_ca::{CRL_WARNING_WINDOW, CaCert, CrlOffer, RevocationList};
use time::OffsetDateTime;

/// Logs a warning when the list in use is within [`CRL_WARNING_WINDOW`] of its next-update time,
/// or past it. Daemons call it at start, when they take a newer list, and once a day; they also
/// export the time left as a metric, which the alert rules watch.
pub fn warn_if_due(crl: Option<&RevocationList>, now: OffsetDateTime) {
    if let Some(warning) = crl.and_then(|c| c.next_update_warning(now, CRL_WARNING_WINDOW)) {
        warn_due(&warning);
    }
}

/// The warning for a list due for replacement, the same from every daemon.
pub fn warn_due(warning: &rma_ca::ExpiryWarning) {
    tracing::warn!("{warning}; it stays in use until a newer one arrives");
}

/// How often a daemon looks at its revocation list file.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
pub struct CrlWatch {
    path: PathBuf,
    /// The CA whose lists the file may hold (fixed for the life of a daemon).
    ca: CaCert,
    seen: Option<(SystemTime, u64)>,
}

impl CrlWatch {
    /// Watches `path` for lists of `ca`, taking its current contents as already loaded.
    pub fn new(path: PathBuf, ca: CaCert) -> Self {
        let seen = Self::stamp(&path);
        Self { path, ca, seen }
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// Looks at the file: if it changed since the last look (or `force`, on SIGHUP) and its
    /// lists verify against the root, hands each list to `offer` (the daemon's trust store,
    /// which keeps only a newer one per CA) and logs what became of it. Refusals are logged;
    /// the daemon keeps its lists. Returns [`CrlOffer::Replaced`] if any list was taken.
    pub fn poll(
        &mut self,
        force: bool,
        mut offer: impl FnMut(RevocationList) -> CrlOffer,
    ) -> CrlOffer {
        let stamp = Self::stamp(&self.path);
        if !force && stamp == self.seen {
            return CrlOffer::NotNewer;
        }
        self.seen = stamp;
        let lists = match crate::identity::load_crls(&self.path, &self.ca) {
            Ok(lists) => lists,
            Err(e) => {
                tracing::error!("revocation list refused, keeping the one in use: {e:#}");
                return CrlOffer::NotNewer;
            }
        };
        let mut any = CrlOffer::NotNewer;
        for crl in lists {
            let (revoked, number) = (crl.len(), crl.number());
            let ca = crl
                .issuing_ca()
                .map_or_else(|| self.ca.name().to_owned(), |ca| ca.name().to_owned());
            let due = crl.next_update_warning(OffsetDateTime::now_utc(), CRL_WARNING_WINDOW);
            match offer(crl) {
                CrlOffer::Replaced => {
                    any = CrlOffer::Replaced;
                    tracing::info!(path = %self.path.display(), %ca, revoked, number = ?number, "revocation list loaded");
                    if let Some(warning) = due {
                        warn_due(&warning);
                    }
                }
                // On SIGHUP the file is read whether or not it changed: usually it holds the
                // lists in use, which is worth a line but not a warning.
                CrlOffer::NotNewer if force => {
                    tracing::info!(%ca, number = ?number, "the revocation list in the file is not newer than the one in use; keeping it");
                }
                CrlOffer::NotNewer => {
                    tracing::warn!(%ca, number = ?number, "the revocation list in the file is not newer than the one in use; keeping it");
                }
                CrlOffer::Unrelated => {
                    tracing::warn!(%ca, "ignored a revocation list of an issuing CA that is expired or not yet valid");
                }
                CrlOffer::Full => {
                    tracing::error!(%ca, max = rma_ca::MAX_ISSUING_LISTS, "a revocation list of one issuing CA too many is not in use: that CA's nodes are checked against the root's list only; retire issuing CAs");
                }
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use rma_ca::TrustStore;

    use super::*;

    #[test]
    fn a_changed_file_is_offered_and_only_a_newer_list_is_taken() {
        let pki = rma_ca::test_ca::TestCa::new("ca");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crl");
        let write = |number: u64| std::fs::write(&path, pki.crl(number, &[]).to_pem()).unwrap();
        write(1);
        let mut store = TrustStore::new(pki.ca.clone(), None);
        let mut watch = CrlWatch::new(path.clone(), pki.ca.clone());
        let mut poll =
            |store: &mut TrustStore, force| watch.poll(force, |crl| store.offer(crl, pki.start));
        assert_eq!(
            poll(&mut store, false),
            CrlOffer::NotNewer,
            "unchanged since start"
        );
        assert_eq!(
            poll(&mut store, true),
            CrlOffer::Replaced,
            "SIGHUP reads it"
        );
        write(3);
        // The same length and, within a second, the same mtime: set the mtime apart.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(poll(&mut store, false), CrlOffer::Replaced);
        assert_eq!(store.crl().and_then(RevocationList::number), Some(3));
        write(2);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(later + std::time::Duration::from_secs(5))
            .unwrap();
        assert_eq!(poll(&mut store, false), CrlOffer::NotNewer, "an older file");
        assert_eq!(store.crl().and_then(RevocationList::number), Some(3));
        std::fs::write(&path, b"not a list").unwrap();
        assert_eq!(poll(&mut store, true), CrlOffer::NotNewer, "a corrupt file");
        assert_eq!(store.crl().and_then(RevocationList::number), Some(3));
    }
}
