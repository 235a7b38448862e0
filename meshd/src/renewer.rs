//! The shell's side of renewal: asks the enrollment service when [`Schedule`] says it is time,
//! off the event loop, and when the answer checks out writes the certificate, swaps it into the
//! node (every session stays), has new lighthouse connections present it and live ones told,
//! and registers again with every coordinator. A failure is logged and retried with backoff.

use std::path::PathBuf;
use std::sync::Arc;

use rma_ca::files::{Mode, OutputFiles};
use rma_ca::join::{Checked, RenewRequest};
use rma_ca::{Fingerprint, NodeCert, NodeKeys};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::config::Enrollment;
use crate::enroll_http::EnrollUrl;
use crate::lighthouse_links::LighthouseLinks;
use crate::node::{Node, Now};
use crate::renewal::Schedule;

/// How often the shell looks whether a renewal is due.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
/// An attempt that has not reported by then is given up (it has a 30 s deadline of its own),
/// so that one lost attempt never ends the renewals.
const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// What a renewal attempt came back with.
pub type Outcome = anyhow::Result<Checked>;

#[derive(Debug)]
pub struct Renewer {
    url: EnrollUrl,
    schedule: Schedule,
    keys: NodeKeys,
    root: Fingerprint,
    /// Where the certificate is written (`[pki] cert`).
    cert_path: PathBuf,
    /// When the attempt under way started.
    in_flight: Option<std::time::Instant>,
    results: mpsc::Sender<Outcome>,
}

/// What a swapped-in certificate reaches: the node, the lighthouse links, the TLS trust.
#[derive(Debug)]
pub struct Targets<'a> {
    pub node: &'a mut Node,
    pub links: &'a mut LighthouseLinks,
    pub trust: &'a Arc<rma_daemon::mesh_tls::Trust>,
    pub batch: &'a mut Batch,
}

impl Renewer {
    /// A renewer for the node's certificate `cert`, and the receiver of its attempts' outcomes.
    pub fn new(
        enrollment: &Enrollment,
        cert: &NodeCert,
        keys: NodeKeys,
        root: Fingerprint,
        cert_path: PathBuf,
    ) -> (Self, mpsc::Receiver<Outcome>) {
        let (results, receiver) = mpsc::channel(1);
        let schedule = Schedule::new(cert, enrollment.renew_at_permille);
        tracing::info!(
            due = %rma_ca::timefmt::rfc3339(schedule.next()),
            service = %enrollment.url,
            "certificate renewal scheduled"
        );
        let renewer = Self {
            url: enrollment.url.clone(),
            schedule,
            keys,
            root,
            cert_path,
            in_flight: None,
            results,
        };
        (renewer, receiver)
    }

    pub fn next_attempt(&self) -> OffsetDateTime {
        self.schedule.next()
    }

    /// Starts an attempt for `cert` if one is due and none is under way (or the one under way
    /// has gone silent past [`GIVE_UP_AFTER`]).
    pub fn poll(&mut self, cert: &NodeCert, now: OffsetDateTime) {
        if !self.schedule.is_due(now) {
            return;
        }
        if let Some(started) = self.in_flight {
            if started.elapsed() < GIVE_UP_AFTER {
                return;
            }
            tracing::warn!("a renewal attempt never reported; trying again");
        }
        self.in_flight = Some(std::time::Instant::now());
        let body = match serde_json::to_vec(&RenewRequest {
            cert: cert.to_pem(),
        }) {
            Ok(body) => body,
            Err(e) => {
                let _ = self.results.try_send(Err(e.into()));
                return;
            }
        };
        let (url, keys, root, results) = (
            self.url.clone(),
            self.keys.clone(),
            self.root,
            self.results.clone(),
        );
        tracing::info!(service = %url, "renewing this node's certificate");
        tokio::spawn(async move {
            let outcome =
                crate::join::request(&url, rma_ca::join::RENEW_PATH, &keys, body, &root, now).await;
            let _ = results.send(outcome).await;
        });
    }

    /// Takes an attempt's outcome. On success returns the new certificate's PEM, for the
    /// coordinators.
    pub fn finish(&mut self, outcome: Outcome, to: Targets<'_>) -> Option<String> {
        self.in_flight = None;
        let wall = OffsetDateTime::now_utc();
        let now = Now {
            instant: std::time::Instant::now(),
            wall,
        };
        let current = to.node.certificate().clone();
        let swapped = outcome.and_then(|checked| self.swap_in(checked, now, to));
        match swapped {
            Ok(cert) => {
                self.schedule.renewed(&cert);
                tracing::info!(
                    not_after = %rma_ca::timefmt::rfc3339(cert.not_after()),
                    next = %rma_ca::timefmt::rfc3339(self.schedule.next()),
                    "certificate renewed; every session kept"
                );
                Some(cert.to_pem())
            }
            Err(e) => {
                self.schedule.failed(&current, wall);
                tracing::warn!(
                    retry = %rma_ca::timefmt::rfc3339(self.schedule.next()),
                    failures = self.schedule.failures(),
                    "certificate renewal failed: {e:#}"
                );
                None
            }
        }
    }

    fn swap_in(&self, checked: Checked, now: Now, to: Targets<'_>) -> anyhow::Result<NodeCert> {
        let cert = checked.cert;
        to.node.renew_certificate(cert.clone(), now, to.batch)?;
        for list in checked.lists {
            to.trust.offer(list.clone(), now.wall);
            to.node.offer_crl(list, now, to.batch);
        }
        let client = crate::lighthouse_links::ClientIdentity::new(&cert, &self.keys, to.trust)?;
        to.links.renewed(client, &cert.chain_der());
        // In memory it is in use already; on disk it is what the next start loads. A node
        // that cannot write it still runs on it, and renews again after a restart.
        let mut out = OutputFiles::new(true);
        let written = out
            .stage(&self.cert_path, cert.to_pem().as_bytes(), Mode::Public)
            .and_then(|()| out.commit());
        if let Err(e) = written {
            tracing::error!("the renewed certificate is in use but could not be written: {e}");
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    use rma_ca::test_ca::TestCa;

    use super::*;

    /// An attempt that fails reports its failure; one that never reports is given up after
    /// [`GIVE_UP_AFTER`], so that renewals go on.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_attempt_reports_and_a_silent_one_is_given_up() {
        let pki = TestCa::new("ca");
        let (cert, keys) = pki.node("n", Ipv4Addr::new(10, 42, 0, 9));
        // Nothing listens on port 1 of loopback: the attempt fails at once.
        let enrollment = Enrollment {
            url: "http://127.0.0.1:1".parse().unwrap(),
            renew_at_permille: 500,
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut renewer, mut outcomes) = Renewer::new(
            &enrollment,
            &cert,
            keys,
            pki.ca.fingerprint(),
            dir.path().join("node.crt"),
        );
        let due = renewer.next_attempt();
        renewer.poll(&cert, due - time::Duration::seconds(1));
        assert!(renewer.in_flight.is_none(), "not due yet");
        renewer.poll(&cert, due);
        let started = renewer.in_flight.expect("an attempt under way");
        // Under way: a second poll starts nothing.
        renewer.poll(&cert, due);
        assert_eq!(renewer.in_flight, Some(started));
        let outcome = tokio::time::timeout(Duration::from_secs(30), outcomes.recv())
            .await
            .unwrap()
            .unwrap();
        let error = outcome.unwrap_err().to_string();
        assert!(
            error.contains("cannot reach the enrollment service"),
            "{error}"
        );
        // One that never reports (its task lost): given up once silent for long enough.
        let silent = Instant::now()
            .checked_sub(GIVE_UP_AFTER + Duration::from_secs(1))
            .expect("the clock has run for minutes");
        renewer.in_flight = Some(silent);
        renewer.poll(&cert, due);
        assert!(
            renewer.in_flight.is_some_and(|t| t > silent),
            "a new attempt"
        );
        assert!(
            dir.path().read_dir().unwrap().next().is_none(),
            "nothing written"
        );
    }
}
