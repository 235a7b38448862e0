//! The `control_messages` fuzz target's body.

use rma_proto::wire::{self, Control, Kind, MAX_CERT_LEN};

/// Every datagram meshd's UDP socket can receive, classified and parsed as a control message:
/// no panic, and whatever parses encodes back to a message that parses the same.
pub fn control_messages(data: &[u8]) {
    let kind = wire::classify(data);
    let Ok(control) = wire::parse_control(data) else {
        return;
    };
    assert_eq!(kind, Kind::Control);
    let mut out = Vec::new();
    match control {
        Control::CertHello {
            cert_der,
            reply_wanted,
        } => {
            if cert_der.len() > MAX_CERT_LEN {
                return;
            }
            wire::encode_cert_hello(cert_der, reply_wanted, &mut out);
            if reply_wanted {
                assert!(out.len() >= wire::HELLO_REQUEST_MIN);
            }
        }
        Control::Punch {
            mesh_ip,
            reply_wanted,
        } => wire::encode_punch(mesh_ip, reply_wanted, &mut out),
        Control::Reflect { token } => wire::encode_reflect(&token, &mut out),
        Control::ParkedPing(ping) => ping.encode(&mut out),
        Control::ParkedAck(ack) => ack.encode(&mut out),
        Control::Wake(wake) => wake.encode(&mut out),
    }
    assert_eq!(wire::parse_control(&out), Ok(control));
}
