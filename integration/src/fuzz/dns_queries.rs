//! The `dns_queries` fuzz target's body.

use std::net::Ipv4Addr;

use meshd::dns::{self, Domain, Lookup};

/// What a process or a peer sends meshd's DNS socket: any bytes. No panic; an answer carries
/// the query's id with the response bit set, never grows past one question and one record,
/// and is given only to a query.
pub fn dns_queries(data: &[u8]) {
    let domain = Domain::parse("mesh").expect("a valid domain");
    // Every kind of knowledge, chosen by the name's first byte.
    let lookup = |name: &str| match name.as_bytes().first().map(|b| b % 4) {
        Some(0) => Lookup::Found(Ipv4Addr::new(10, 42, 0, 1)),
        Some(1) => Lookup::Pending,
        Some(2) => Lookup::Failed,
        _ => Lookup::Unknown,
    };
    let Some(reply) = dns::answer(data, &domain, lookup).reply() else {
        return;
    };
    assert!(
        data.len() >= 12 && reply.len() >= 12,
        "an answer to a non-query"
    );
    assert_eq!(reply[..2], data[..2], "the query's id");
    assert!(reply[2] & 0x80 != 0, "the response bit");
    assert_eq!(data[2] & 0x80, 0, "a response was answered");
    // The question's name (at most 255 bytes) twice at worst, the header and one A record.
    assert!(
        reply.len() <= 12 + 2 * (255 + 4) + 14,
        "{} bytes",
        reply.len()
    );
}
