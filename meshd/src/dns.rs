//! Names on the mesh: the answer to a DNS query for `NAME.DOMAIN` (`worker-1.mesh`), from the
//! certificates this node holds. Pure logic; the shell serves it on the node's mesh IP.
//!
//! One question per query, class IN. A name that no held certificate bears is asked of the
//! lighthouses ([`crate::node::Node::lookup_name`]) while the query waits; a name neither
//! bears is NXDOMAIN, and one the lighthouses did not answer in time is SERVFAIL. A name in
//! the mesh domain that no node bears is NXDOMAIN, and the domain itself, or a type other than A for a known name, is an empty
//! answer (NODATA); both are authoritative, so a resolver does not ask further. A name outside
//! the domain is REFUSED: meshd answers for the mesh only, and split DNS sends it nothing else.
//! A query that does not parse, or is itself a response, gets no answer at all.

use std::net::Ipv4Addr;

use simple_dns::rdata::{A, RData};

pub use crate::node::Lookup;
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

    /// The node name in `name` when it is one label below the domain (`routerd.mesh` gives
    /// `routerd`), in any case.
    pub fn host_of<'n>(&self, name: &'n str) -> Option<&'n str> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let (host, rest) = name.split_once('.')?;
        (!host.is_empty() && rest.eq_ignore_ascii_case(&self.to_string())).then_some(host)
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

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this reply.
    Reply(Vec<u8>),
    /// The name is being asked of the lighthouses: keep the query, and answer it again when
    /// they have answered or [`crate::node::names`]' wait is over.
    Wait,
    /// Send nothing: not a query for one name (see the module's notes).
    Ignore,
}

impl Answer {
    /// The reply, if there is one to send now.
    pub fn reply(self) -> Option<Vec<u8>> {
        match self {
            Self::Reply(bytes) => Some(bytes),
            Self::Wait | Self::Ignore => None,
        }
    }
}

/// The answer to `query`. `lookup` says what this node knows of a node name (lowercase
/// ASCII); it is called at most once, and only for a name one label below the domain.
pub fn answer(query: &[u8], domain: &Domain, lookup: impl FnOnce(&str) -> Lookup) -> Answer {
    if query.len() > MAX_QUERY {
        return Answer::Ignore;
    }
    let Ok(packet) = Packet::parse(query) else {
        return Answer::Ignore;
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Answer::Ignore;
    }
    let mut reply = Packet::new_reply(packet.id());
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let [question] = packet.questions.as_slice() else {
        *reply.rcode_mut() = RCODE::FormatError;
        return built(reply.build_bytes_vec());
    };
    reply.questions.push(question.clone());
    if packet.opcode() != OPCODE::StandardQuery {
        *reply.rcode_mut() = RCODE::NotImplemented;
        return built(reply.build_bytes_vec_compressed());
    }
    let in_class = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    let rcode = match domain.place(&question.qname) {
        Place::Outside => RCODE::Refused,
        _ if !in_class => RCODE::Refused,
        Place::Apex => RCODE::NoError,
        Place::Deeper => RCODE::NameError,
        // Node names are ASCII; a label that is not cannot name one.
        Place::Host(host) if !host.is_ascii() => RCODE::NameError,
        Place::Host(host) => {
            let name = String::from_utf8_lossy(host).to_ascii_lowercase();
            match lookup(&name) {
                Lookup::Unknown => RCODE::NameError,
                Lookup::Failed => RCODE::ServerFailure,
                Lookup::Pending => return Answer::Wait,
                Lookup::Found(ip) => {
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
    if !matches!(rcode, RCODE::Refused | RCODE::ServerFailure) {
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    }
    *reply.rcode_mut() = rcode;
    built(reply.build_bytes_vec_compressed())
}

fn built(bytes: simple_dns::Result<Vec<u8>>) -> Answer {
    bytes.map_or(Answer::Ignore, Answer::Reply)
}

/// A query for the A record of `name`, with `id` (for this node's own lookups of mesh names,
/// which go to its DNS socket like any program's).
pub fn a_query(name: &str, id: u16) -> Result<Vec<u8>, String> {
    let qname = Name::new(name).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let mut packet = Packet::new_query(id);
    packet.questions.push(simple_dns::Question::new(
        qname,
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().map_err(|e| e.to_string())
}

/// The address an answer to [`a_query`] with `id` gives: `Ok(None)` when the name does not
/// exist (or has no address), an error when the server could not say.
pub fn a_answer(reply: &[u8], id: u16) -> Result<Option<Ipv4Addr>, String> {
    let packet = Packet::parse(reply).map_err(|e| format!("malformed DNS answer: {e}"))?;
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return Err("not the answer to this query".into());
    }
    match packet.rcode() {
        RCODE::NoError => Ok(packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::A(a) => Some(Ipv4Addr::from(a.address)),
            _ => None,
        })),
        RCODE::NameError => Ok(None),
        other => Err(format!("the server answered {other:?}")),
    }
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

    fn lookup(name: &str) -> Lookup {
        match name {
            "routerd" => Lookup::Found(Ipv4Addr::new(10, 42, 0, 1)),
            "worker-1" => Lookup::Found(Ipv4Addr::new(10, 42, 0, 11)),
            "asked" => Lookup::Pending,
            "unanswered" => Lookup::Failed,
            _ => Lookup::Unknown,
        }
    }

    /// The reply's code and A records.
    fn ask(name: &str, qtype: QTYPE) -> (RCODE, Vec<Ipv4Addr>, bool) {
        let domain = Domain::parse("mesh").unwrap();
        let q = query(name, qtype);
        let bytes = answer(&q, &domain, lookup).reply().expect("an answer");
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
        assert_eq!(
            ask("unanswered.mesh", a),
            (RCODE::ServerFailure, vec![], false),
            "the lighthouses did not answer: try again, do not cache"
        );
        let domain = Domain::parse("mesh").unwrap();
        let q = query("asked.mesh", a);
        assert_eq!(answer(&q, &domain, lookup), Answer::Wait);
        // A label that is not ASCII names no node.
        let mut odd = query("xouterd.mesh", a);
        let at = odd.windows(7).position(|w| w == b"xouterd").unwrap();
        odd[at] = 0xc3;
        let reply = Packet::parse(&answer(&odd, &domain, lookup).reply().unwrap())
            .unwrap()
            .rcode();
        assert_eq!(reply, RCODE::NameError);
    }

    #[test]
    fn what_is_not_a_query_for_one_name_gets_no_name() {
        let domain = Domain::parse("mesh").unwrap();
        assert_eq!(answer(b"", &domain, lookup), Answer::Ignore);
        assert_eq!(answer(&[0; 11], &domain, lookup), Answer::Ignore);
        let q = query("routerd.mesh", QTYPE::TYPE(TYPE::A));
        for cut in 0..q.len() {
            assert_eq!(
                answer(&q[..cut], &domain, lookup),
                Answer::Ignore,
                "cut at {cut}"
            );
        }
        // A response is never answered (no loops between two resolvers).
        let mut response = q.clone();
        response[2] |= 0x80;
        assert_eq!(answer(&response, &domain, lookup), Answer::Ignore);
        let mut long = q.clone();
        long.resize(MAX_QUERY + 1, 0);
        assert_eq!(answer(&long, &domain, lookup), Answer::Ignore);
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
        let reply = answer(&two.build_bytes_vec().unwrap(), &domain, lookup)
            .reply()
            .unwrap();
        let reply = Packet::parse(&reply).unwrap();
        assert_eq!(
            (reply.rcode(), reply.answers.len()),
            (RCODE::FormatError, 0)
        );
    }

    #[test]
    fn this_nodes_own_queries_read_the_answers_it_gives() {
        let domain = Domain::parse("mesh").unwrap();
        let ask = |name: &str| {
            let q = a_query(name, 99).unwrap();
            let reply = answer(&q, &domain, lookup).reply().unwrap();
            a_answer(&reply, 99)
        };
        assert_eq!(ask("routerd.mesh"), Ok(Some(Ipv4Addr::new(10, 42, 0, 1))));
        assert_eq!(ask("nobody.mesh"), Ok(None));
        assert!(
            ask("unanswered.mesh")
                .unwrap_err()
                .contains("ServerFailure")
        );
        let q = a_query("routerd.mesh", 99).unwrap();
        let reply = answer(&q, &domain, lookup).reply().unwrap();
        assert!(a_answer(&reply, 98).is_err(), "another query's id");
        assert!(a_answer(&q, 99).is_err(), "a query is no answer");
        assert!(a_answer(&reply[..reply.len() - 1], 99).is_err());
        assert!(a_query(&format!("{}.mesh", "a".repeat(64)), 1).is_err());
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
        assert_eq!(domain.host_of("routerd.corp.mesh"), Some("routerd"));
        assert_eq!(domain.host_of("Routerd.CORP.mesh."), Some("Routerd"));
        assert_eq!(domain.host_of("routerd.mesh"), None);
        assert_eq!(domain.host_of("a.routerd.corp.mesh"), None);
        assert_eq!(domain.host_of("corp.mesh"), None);
        let q = query("routerd.corp.mesh", QTYPE::TYPE(TYPE::A));
        assert!(
            answer(&q, &domain, lookup)
                .reply()
                .is_some_and(|r| r.len() > q.len())
        );
        let q = query("routerd.mesh", QTYPE::TYPE(TYPE::A));
        let reply = Packet::parse(&answer(&q, &domain, lookup).reply().unwrap())
            .unwrap()
            .rcode();
        assert_eq!(reply, RCODE::Refused);
    }
}
