//! Names on the mesh: the answer to a DNS query for `NAME.DOMAIN` (`worker-1.mesh`), from the
//! certificates this node holds. Pure logic; the shell serves it on the node's mesh IP.
//!
//! One question per query, class IN. A name in the mesh domain that no held certificate bears
//! is NXDOMAIN, and the domain itself, or a type other than A for a known name, is an empty
//! answer (NODATA); both are authoritative, so a resolver does not ask further. A name outside
//! the domain is REFUSED: meshd answers for the mesh only, and split DNS sends it nothing else.
//! A query that does not parse, or is itself a response, gets no answer at all.

use std::net::Ipv4Addr;

use simple_dns::rdata::{A, RData};
use simple_dns::{
    CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE,
};

/// How long a resolver may keep an answer: short, so that a revoked name is soon forgotten.
pub const TTL_SECS: u32 = 30;
/// The most a query may carry; anything longer is not a query for one name.
pub const MAX_QUERY: usize = 512;

/// The mesh domain, lowercase labels (`mesh`, or `corp.mesh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    labels: Vec<String>,
}

impl Domain {
    /// Parses a domain: dot-separated labels of lowercase letters, digits and hyphens, none
    /// empty, none starting or ending with a hyphen.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let labels: Vec<String> = text.split('.').map(str::to_owned).collect();
        for label in &labels {
            let valid = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(format!(
                    "{text:?}: each label must be 1-63 lowercase letters, digits or hyphens"
                ));
            }
        }
        Ok(Self { labels })
    }

    /// Where a name stands against the domain.
    fn place<'n>(&self, name: &'n Name<'_>) -> Place<'n> {
        let labels = name.get_labels();
        let n = self.labels.len();
        if labels.len() < n {
            return Place::Outside;
        }
        let (host, tail) = labels.split_at(labels.len() - n);
        let inside = tail
            .iter()
            .zip(&self.labels)
            .all(|(label, ours)| label.as_ref().eq_ignore_ascii_case(ours.as_bytes()));
        match (inside, host) {
            (false, _) => Place::Outside,
            (true, []) => Place::Apex,
            (true, [host]) => Place::Host(host.as_ref()),
            (true, _) => Place::Deeper,
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.labels.join("."))
    }
}

enum Place<'n> {
    Outside,
    Apex,
    /// One label below the domain: a node's name, as its bytes.
    Host(&'n [u8]),
    /// More than one label below it: no node is named so.
    Deeper,
}

/// The answer to `query`, or `None` for one that gets none. `lookup` gives the mesh IP of a
/// node name (lowercase ASCII) from the certificates this node holds.
pub fn answer(
    query: &[u8],
    domain: &Domain,
    lookup: impl Fn(&str) -> Option<Ipv4Addr>,
) -> Option<Vec<u8>> {
    if query.len() > MAX_QUERY {
        return None;
    }
    let packet = Packet::parse(query).ok()?;
    if packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let mut reply = Packet::new_reply(packet.id());
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let [question] = packet.questions.as_slice() else {
        *reply.rcode_mut() = RCODE::FormatError;
        return reply.build_bytes_vec().ok();
    };
    reply.questions.push(question.clone());
    if packet.opcode() != OPCODE::StandardQuery {
        *reply.rcode_mut() = RCODE::NotImplemented;
        return reply.build_bytes_vec_compressed().ok();
    }
    let in_class = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    let rcode = match domain.place(&question.qname) {
        Place::Outside => RCODE::Refused,
        _ if !in_class => RCODE::Refused,
        Place::Apex => RCODE::NoError,
        Place::Deeper => RCODE::NameError,
        Place::Host(host) => {
            let name = std::str::from_utf8(host).ok()?.to_ascii_lowercase();
            match lookup(&name) {
                None => RCODE::NameError,
                Some(ip) => {
                    if matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) {
                        reply.answers.push(ResourceRecord::new(
                            question.qname.clone(),
                            CLASS::IN,
                            TTL_SECS,
                            RData::A(A::from(ip)),
                        ));
                    }
                    RCODE::NoError
                }
            }
        }
    };
    if rcode != RCODE::Refused {
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    }
    *reply.rcode_mut() = rcode;
    reply.build_bytes_vec_compressed().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: QTYPE) -> Vec<u8> {
        let mut packet = Packet::new_query(0x4242);
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
        packet.questions.push(simple_dns::Question::new(
            Name::new_unchecked(name),
            qtype,
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.build_bytes_vec().unwrap()
    }

    fn lookup(name: &str) -> Option<Ipv4Addr> {
        match name {
            "routerd" => Some(Ipv4Addr::new(10, 42, 0, 1)),
            "worker-1" => Some(Ipv4Addr::new(10, 42, 0, 11)),
            _ => None,
        }
    }

    /// The reply's code and A records.
    fn ask(name: &str, qtype: QTYPE) -> (RCODE, Vec<Ipv4Addr>, bool) {
        let domain = Domain::parse("mesh").unwrap();
        let q = query(name, qtype);
        let bytes = answer(&q, &domain, lookup).expect("an answer");
        let reply = Packet::parse(&bytes).unwrap();
        assert_eq!(reply.id(), 0x4242);
        assert!(reply.has_flags(PacketFlag::RESPONSE));
        assert_eq!(reply.questions.len(), 1);
        let ips = reply
            .answers
            .iter()
            .map(|rr| match &rr.rdata {
                RData::A(a) => Ipv4Addr::from(a.address),
                other => panic!("not an A record: {other:?}"),
            })
            .collect();
        let authoritative = reply.has_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        (reply.rcode(), ips, authoritative)
    }

    #[test]
    fn mesh_names_resolve_and_nothing_else_does() {
        let a = QTYPE::TYPE(TYPE::A);
        assert_eq!(
            ask("routerd.mesh", a),
            (RCODE::NoError, vec![Ipv4Addr::new(10, 42, 0, 1)], true)
        );
        assert_eq!(
            ask("Worker-1.MESH.", a),
            (RCODE::NoError, vec![Ipv4Addr::new(10, 42, 0, 11)], true),
            "names are case-insensitive"
        );
        assert_eq!(ask("routerd.mesh", QTYPE::ANY).1.len(), 1);
        assert_eq!(
            ask("routerd.mesh", QTYPE::TYPE(TYPE::AAAA)),
            (RCODE::NoError, vec![], true),
            "the mesh is IPv4: NODATA"
        );
        assert_eq!(ask("nobody.mesh", a), (RCODE::NameError, vec![], true));
        assert_eq!(ask("a.routerd.mesh", a), (RCODE::NameError, vec![], true));
        assert_eq!(ask("mesh", a), (RCODE::NoError, vec![], true));
        assert_eq!(ask("example.com", a), (RCODE::Refused, vec![], false));
        assert_eq!(
            ask("routerd.mesh.example", a),
            (RCODE::Refused, vec![], false)
        );
        assert_eq!(ask("nomesh", a), (RCODE::Refused, vec![], false));
    }

    #[test]
    fn what_is_not_a_query_for_one_name_gets_no_name() {
        let domain = Domain::parse("mesh").unwrap();
        assert_eq!(answer(b"", &domain, lookup), None);
        assert_eq!(answer(&[0; 11], &domain, lookup), None);
        let q = query("routerd.mesh", QTYPE::TYPE(TYPE::A));
        for cut in 0..q.len() {
            assert_eq!(answer(&q[..cut], &domain, lookup), None, "cut at {cut}");
        }
        // A response is never answered (no loops between two resolvers).
        let mut response = q.clone();
        response[2] |= 0x80;
        assert_eq!(answer(&response, &domain, lookup), None);
        let mut long = q.clone();
        long.resize(MAX_QUERY + 1, 0);
        assert_eq!(answer(&long, &domain, lookup), None);
        // Two questions: FORMERR, without an answer for either.
        let mut two = Packet::new_query(7);
        for name in ["routerd.mesh", "worker-1.mesh"] {
            two.questions.push(simple_dns::Question::new(
                Name::new_unchecked(name),
                QTYPE::TYPE(TYPE::A),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
        }
        let reply = answer(&two.build_bytes_vec().unwrap(), &domain, lookup).unwrap();
        let reply = Packet::parse(&reply).unwrap();
        assert_eq!(
            (reply.rcode(), reply.answers.len()),
            (RCODE::FormatError, 0)
        );
    }

    #[test]
    fn a_domain_is_lowercase_labels() {
        assert_eq!(Domain::parse("corp.mesh").unwrap().to_string(), "corp.mesh");
        assert_eq!(Domain::parse("mesh.").unwrap().to_string(), "mesh");
        for bad in [
            "",
            ".",
            "Mesh",
            "a..b",
            "-mesh",
            "mesh-",
            "me_sh",
            &"a".repeat(64),
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?}");
        }
        let domain = Domain::parse("corp.mesh").unwrap();
        let q = query("routerd.corp.mesh", QTYPE::TYPE(TYPE::A));
        assert!(answer(&q, &domain, lookup).is_some_and(|r| r.len() > q.len()));
        let q = query("routerd.mesh", QTYPE::TYPE(TYPE::A));
        let reply = Packet::parse(&answer(&q, &domain, lookup).unwrap())
            .unwrap()
            .rcode();
        assert_eq!(reply, RCODE::Refused);
    }
}
