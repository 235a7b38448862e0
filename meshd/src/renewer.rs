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
    in_flight: bool,
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
            in_flight: false,
            results,
        };
        (renewer, receiver)
    }

    pub fn next_attempt(&self) -> OffsetDateTime {
        self.schedule.next()
    }

    /// Starts an attempt for `cert` if one is due and none is under way.
    pub fn poll(&mut self, cert: &NodeCert, now: OffsetDateTime) {
        if self.in_flight || !self.schedule.is_due(now) {
            return;
        }
        self.in_flight = true;
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
        self.in_flight = false;
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
        let client = rma_daemon::mesh_tls::client_config(&cert, &self.keys, Arc::clone(to.trust))?;
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
