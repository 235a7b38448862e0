//! A throwaway CA for tests and simulations: keys in memory, certificates signed on demand.
//! Only built with the `test-ca` feature, which test and benchmark code enables.

use std::net::Ipv4Addr;

use time::OffsetDateTime;

use crate::{
    CaCert, CaKey, CaParams, CrlParams, Group, NodeCert, NodeCertParams, NodeKeys, RevocationList,
    Serial,
};

/// The network a [`TestCa`] made by [`TestCa::new`] may issue in.
pub const TEST_NETWORK: &str = "10.42.0.0/16";

#[derive(Debug)]
pub struct TestCa {
    pub ca: CaCert,
    key: CaKey,
    /// The moment the CA was made, to the second; validity windows are measured from it.
    pub start: OffsetDateTime,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        Self::with_network(name, TEST_NETWORK)
    }

    /// A CA valid from thirty days ago for a year, for `network`.
    ///
    /// # Panics
    /// On a name or network that does not parse: the caller's test is wrong.
    pub fn with_network(name: &str, network: &str) -> Self {
        let key = CaKey::generate();
        let start = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let ca = crate::self_sign_ca(
            &key,
            &CaParams {
                name: name.parse().expect("test CA name"),
                network: network.parse().expect("test CA network"),
                not_before: start - time::Duration::days(30),
                not_after: start + time::Duration::days(365),
                serial: Serial::random(),
                groups: None,
            },
        )
        .expect("test CA signs");
        Self { ca, key, start }
    }

    /// An issuing CA signed by this root for `network`, valid from a week ago for ninety days:
    /// the nodes it signs are presented with its certificate.
    ///
    /// # Panics
    /// On a name or network the root refuses: the caller's test is wrong.
    pub fn issuing(&self, name: &str, network: &str) -> Self {
        self.issuing_valid(
            name,
            network,
            self.start - time::Duration::days(7),
            self.start + time::Duration::days(90),
        )
    }

    /// An issuing CA with the given validity (see [`TestCa::issuing`]).
    pub fn issuing_valid(
        &self,
        name: &str,
        network: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Self {
        self.issuing_signed(name, network, not_before, not_after, None)
    }

    /// As [`TestCa::issuing`], permitted to give only `groups`.
    pub fn issuing_for_groups(&self, name: &str, network: &str, groups: &[&str]) -> Self {
        let groups = Group::parse_list(&groups.join(",")).expect("test groups");
        self.issuing_signed(
            name,
            network,
            self.start - time::Duration::days(7),
            self.start + time::Duration::days(90),
            Some(groups),
        )
    }

    fn issuing_signed(
        &self,
        name: &str,
        network: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        groups: Option<Vec<Group>>,
    ) -> Self {
        let key = CaKey::generate();
        let ca = crate::sign_issuing_ca(
            &self.ca,
            &self.key,
            &key.verifying_key(),
            &CaParams {
                name: name.parse().expect("test issuing CA name"),
                network: network.parse().expect("test issuing CA network"),
                not_before,
                not_after,
                serial: Serial::random(),
                groups,
            },
        )
        .expect("the root signs the issuing CA");
        Self {
            ca,
            key,
            start: self.start,
        }
    }

    /// `issuing`'s CA renewed by this root: a new certificate for the same name, network and
    /// key, valid until `not_after`.
    ///
    /// # Panics
    /// When the root refuses: the caller's test is wrong.
    pub fn renew_issuing(&self, issuing: &Self, not_after: OffsetDateTime) -> Self {
        let ca = crate::sign_issuing_ca(
            &self.ca,
            &self.key,
            &issuing.key.verifying_key(),
            &CaParams {
                name: issuing.ca.name().parse().expect("its name parsed before"),
                network: issuing.ca.network(),
                not_before: self.start - time::Duration::days(1),
                not_after,
                serial: Serial::random(),
                groups: issuing.ca.permitted_groups().map(<[_]>::to_vec),
            },
        )
        .expect("the root renews the issuing CA");
        Self {
            ca,
            key: issuing.key.clone(),
            start: self.start,
        }
    }

    /// A revocation list of this CA numbered `number` that revokes the CAs `cas` (a root's list
    /// revoking its issuing CAs).
    pub fn crl_revoking_cas(&self, number: u64, cas: &[&CaCert]) -> RevocationList {
        self.crl_of(number, cas.iter().map(|c| c.serial().clone()).collect())
    }

    /// The CA's key, for this crate's tests that sign what the CA would refuse.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &CaKey {
        &self.key
    }

    /// A node in group `workers`, valid from a day ago for thirty days.
    pub fn node(&self, name: &str, ip: Ipv4Addr) -> (NodeCert, NodeKeys) {
        self.node_in(name, ip, "workers")
    }

    /// A node in `groups` (comma-separated), valid from a day ago for thirty days.
    pub fn node_in(&self, name: &str, ip: Ipv4Addr, groups: &str) -> (NodeCert, NodeKeys) {
        self.node_full(
            name,
            ip,
            groups,
            self.start - time::Duration::days(1),
            self.start + time::Duration::days(30),
        )
    }

    /// A node in group `workers` with the given validity.
    pub fn node_valid(
        &self,
        name: &str,
        ip: Ipv4Addr,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (NodeCert, NodeKeys) {
        self.node_full(name, ip, "workers", not_before, not_after)
    }

    /// # Panics
    /// When the CA refuses the parameters: the caller's test is wrong.
    pub fn node_full(
        &self,
        name: &str,
        ip: Ipv4Addr,
        groups: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (NodeCert, NodeKeys) {
        let keys = NodeKeys::generate();
        let cert = self.sign(name, ip, groups, &keys, not_before, not_after);
        (cert, keys)
    }

    /// A certificate in group `workers` for existing `keys` (a renewal).
    pub fn sign_keys(
        &self,
        name: &str,
        ip: Ipv4Addr,
        keys: &NodeKeys,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> NodeCert {
        self.sign(name, ip, "workers", keys, not_before, not_after)
    }

    fn sign(
        &self,
        name: &str,
        ip: Ipv4Addr,
        groups: &str,
        keys: &NodeKeys,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> NodeCert {
        crate::sign_node(
            &self.ca,
            &self.key,
            &NodeCertParams {
                name: name.parse().expect("test node name"),
                mesh_ip: ip,
                groups: Group::parse_list(groups).expect("test node groups"),
                keys: keys.public(),
                not_before,
                not_after,
                serial: Serial::random(),
            },
        )
        .expect("test CA signs the node")
    }

    /// A revocation list numbered `number` that revokes `certs`, issued at [`TestCa::start`].
    pub fn crl(&self, number: u64, certs: &[&NodeCert]) -> RevocationList {
        self.crl_of(number, certs.iter().map(|c| c.serial().clone()).collect())
    }

    fn crl_of(&self, number: u64, serials: Vec<Serial>) -> RevocationList {
        crate::sign_crl(
            &self.ca,
            &self.key,
            &CrlParams {
                number,
                this_update: self.start,
                next_update: self.start + time::Duration::days(7),
                revoked: serials.into_iter().map(|s| (s, self.start)).collect(),
            },
        )
        .expect("test CA signs the list")
    }

    /// The same as [`TestCa::crl`] numbered 1.
    pub fn crl_revoking(&self, certs: &[&NodeCert]) -> RevocationList {
        self.crl(1, certs)
    }
}
