//! DNS wire knowledge in one place: the fixed sizes of a message's parts,
//! the header flag bits, the record types roster encodes by hand, the
//! classic 512-octet UDP limit, and the size formulas of the answers.
//!
//! Two sides must agree on sizes. The record table ([`super::table`])
//! computes, when a service changes, how large its answers will be: exactly,
//! for the fast path's compressed answers, and as an upper bound for the
//! general path's (so `fit` can skip a trial encoding). The fast path
//! ([`super::fast`]) then writes those answers and sizes its records with the
//! same functions, so a formula cannot change on one side only. The table's
//! unit tests encode real answers and compare.
//!
//! Owns: numbers and formulas from RFC 1035, 2782 and 6891. Must not: read
//! or write messages (that is `fast`, `udp`, `tcp` and hickory).

use std::net::IpAddr;

use hickory_proto::rr::{Name, RData, Record};

/// A message header: ID, flags, and the four section counts.
pub(crate) const HEADER_LEN: usize = 12;
/// An OPT record without options: root name (1), type, class, TTL,
/// RDLENGTH (RFC 6891 section 6.1.2).
pub(crate) const OPT_LEN: usize = 11;
/// Type, class, TTL and RDLENGTH: what follows every record's owner name.
pub(crate) const RR_FIXED_LEN: usize = 10;
/// A compression pointer (RFC 1035 section 4.1.4).
pub(crate) const POINTER_LEN: usize = 2;
/// A label is at most this long (RFC 1035 section 2.3.4).
pub(crate) const MAX_LABEL_LEN: usize = 63;

/// The largest UDP message without EDNS, and the least an EDNS client may
/// offer (RFC 1035 section 2.3.4, RFC 6891 section 6.2.5).
pub(crate) const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// Header octet 2: QR (this is a response).
pub(crate) const FLAG_QR: u8 = 0x80;
/// Header octet 2: the four OPCODE bits.
pub(crate) const OPCODE_MASK: u8 = 0x78;
/// Header octet 2: AA (authoritative answer).
pub(crate) const FLAG_AA: u8 = 0x04;
/// Header octet 2: TC (truncated: the client should ask again over TCP).
pub(crate) const FLAG_TC: u8 = 0x02;
/// Header octet 2: RD (recursion desired), echoed in the response.
pub(crate) const FLAG_RD: u8 = 0x01;
/// Header octet 3: CD (checking disabled), echoed in the response.
pub(crate) const FLAG_CD: u8 = 0x10;
/// DNSSEC OK, the top bit of an OPT record's EDNS flags (RFC 3225).
pub(crate) const FLAG_DO: u16 = 0x8000;

/// The two high bits of a length octet that make it a compression pointer.
pub(crate) const POINTER_TAG: u8 = 0xC0;
/// Compression pointers hold 14-bit offsets.
pub(crate) const MAX_POINTER_TARGET: usize = 0x3FFF;
/// A compression pointer to the question name, which always starts right
/// after the header.
pub(crate) const QUESTION_POINTER: [u8; 2] = pointer(HEADER_LEN as u16);

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_SRV: u16 = 33;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const CLASS_IN: u16 = 1;

/// RDATA of an A record: the IPv4 address.
pub(crate) const A_RDATA_LEN: usize = 4;
/// RDATA of an AAAA record: the IPv6 address.
pub(crate) const AAAA_RDATA_LEN: usize = 16;
/// SRV RDATA before the target name: priority, weight, port.
pub(crate) const SRV_RDATA_FIXED_LEN: usize = 6;
/// SOA RDATA after the two names: serial, refresh, retry, expire, minimum.
const SOA_RDATA_FIXED_LEN: usize = 20;

/// A compression pointer to `offset` (at most [`MAX_POINTER_TARGET`]).
pub(crate) const fn pointer(offset: u16) -> [u8; 2] {
    (offset | ((POINTER_TAG as u16) << 8)).to_be_bytes()
}

/// The UDP payload size a response's OPT record offers: the client's size,
/// at least [`CLASSIC_UDP_PAYLOAD`], capped by roster's `max_udp_payload`.
pub(crate) fn response_payload(requested: u16, max_udp_payload: u16) -> u16 {
    requested.max(CLASSIC_UDP_PAYLOAD).min(max_udp_payload)
}

/// The largest UDP response: the response OPT record's size, or
/// [`CLASSIC_UDP_PAYLOAD`] without EDNS.
pub(crate) fn udp_limit(response_payload: Option<u16>) -> u16 {
    response_payload.unwrap_or(CLASSIC_UDP_PAYLOAD)
}

/// RDATA of the A or AAAA record of `address`.
pub(crate) const fn address_rdata_len(address: IpAddr) -> usize {
    match address {
        IpAddr::V4(_) => A_RDATA_LEN,
        IpAddr::V6(_) => AAAA_RDATA_LEN,
    }
}

/// The OPT record `edns` is written as: its fixed part and each option's
/// code, length and data (a server cookie's 28 octets); 0 without one.
pub(crate) fn opt_record_len(edns: Option<&hickory_proto::op::Edns>) -> usize {
    edns.map_or(0, |edns| {
        let options: usize = edns
            .options()
            .as_ref()
            .iter()
            .map(|(_, option)| 4 + usize::from(option.len()))
            .sum();
        OPT_LEN + options
    })
}

/// The whole response as the fast path writes it: header, the question
/// as asked, `records_len` octets of records, and an OPT record if any.
pub(crate) const fn response_len(question_len: usize, records_len: usize, with_opt: bool) -> usize {
    HEADER_LEN + question_len + records_len + if with_opt { OPT_LEN } else { 0 }
}

// The fast path's answers: every owner name at the service name is a
// pointer to the question, and every additional record's owner is a
// pointer to its SRV target. SRV targets themselves are written out in
// full: RFC 2782 forbids compressing them, and RFC 3597 section 4 any name
// inside RDATA of a type newer than RFC 1035 (a cache that keeps RDATA as
// bytes would keep a pointer that means nothing outside the message).

/// One A or AAAA record whose owner name is a pointer.
pub(crate) const fn compressed_address_len(rdata_len: usize) -> usize {
    POINTER_LEN + RR_FIXED_LEN + rdata_len
}

/// The wire length of `name`, uncompressed: a length octet and the octets
/// of each label, then the root.
pub(crate) fn name_wire_len(name: &Name) -> usize {
    name.iter().map(|label| 1 + label.len()).sum::<usize>() + 1
}

/// RDATA of an SRV record whose target is `label` under the service name
/// (`service_name_len` octets on the wire), written out in full.
pub(crate) const fn srv_rdata_len(label_len: usize, service_name_len: usize) -> usize {
    SRV_RDATA_FIXED_LEN + 1 + label_len + service_name_len
}

/// One SRV answer (owner a pointer, target in full) and its address record
/// in the additional section (owner a pointer to the target): what one
/// instance adds to a fast-path SRV response.
pub(crate) const fn srv_pair_len(
    label_len: usize,
    service_name_len: usize,
    address: IpAddr,
) -> usize {
    POINTER_LEN
        + RR_FIXED_LEN
        + srv_rdata_len(label_len, service_name_len)
        + compressed_address_len(address_rdata_len(address))
}

// Upper bounds without compression, for answers the general path builds:
// if they fit, the answer fits, and `fit` needs no trial encoding.

/// The wire length of a fully qualified name, uncompressed, generously:
/// `Name::len` is the presentation length (with the final dot), the wire
/// form one octet longer; counted +2 so it is an upper bound.
pub(crate) fn name_bound(name: &Name) -> usize {
    name.len() + 2
}

/// The name `<label>.<parent>`, given [`name_bound`] of the parent.
pub(crate) const fn child_name_bound(parent_bound: usize, label_len: usize) -> usize {
    parent_bound + 1 + label_len
}

/// One record, its owner uncompressed.
pub(crate) const fn record_bound(owner_bound: usize, rdata_len: usize) -> usize {
    owner_bound + RR_FIXED_LEN + rdata_len
}

/// One SRV answer at the service name and its address record in the
/// additional section (at the target), uncompressed.
pub(crate) const fn srv_pair_bound(
    service_bound: usize,
    label_len: usize,
    address: IpAddr,
) -> usize {
    let target = child_name_bound(service_bound, label_len);
    record_bound(service_bound, SRV_RDATA_FIXED_LEN + target)
        + record_bound(target, address_rdata_len(address))
}

/// An upper bound on a record's encoded size, ignoring name compression.
pub(crate) fn max_encoded_len(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::A(_) => A_RDATA_LEN,
        RData::AAAA(_) => AAAA_RDATA_LEN,
        RData::SRV(srv) => SRV_RDATA_FIXED_LEN + name_bound(&srv.target),
        // Each character-string is a length octet and its text.
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        RData::NS(ns) => name_bound(&ns.0),
        RData::CNAME(cname) => name_bound(&cname.0),
        RData::SOA(soa) => name_bound(&soa.mname) + name_bound(&soa.rname) + SOA_RDATA_FIXED_LEN,
        // Anything else is rare here: make the caller encode to find out.
        _ => return usize::MAX / 4,
    };
    record_bound(name_bound(&record.name), rdata)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message};

    use super::*;

    /// The fixed sizes are what hickory encodes: an empty message is a
    /// header, and an OPT record without options adds `OPT_LEN`.
    #[test]
    fn fixed_sizes_match_hickory() {
        let mut message = Message::query();
        assert_eq!(message.to_vec().expect("encodes").len(), HEADER_LEN);
        message.set_edns(Edns::new());
        let with_opt = message.to_vec().expect("encodes");
        assert_eq!(with_opt.len(), HEADER_LEN + OPT_LEN);
        assert_eq!(
            u16::from_be_bytes([with_opt[HEADER_LEN + 1], with_opt[HEADER_LEN + 2]]),
            TYPE_OPT
        );
        assert_eq!(response_len(0, 0, true), with_opt.len());
    }

    #[test]
    fn pointers_and_payload_rules() {
        assert_eq!(QUESTION_POINTER, [0xC0, 0x0C]);
        assert_eq!(pointer(0x3FFF), [0xFF, 0xFF]);
        assert_eq!(response_payload(100, 4096), CLASSIC_UDP_PAYLOAD);
        assert_eq!(response_payload(1232, 4096), 1232);
        assert_eq!(response_payload(8192, 4096), 4096);
        assert_eq!(udp_limit(None), 512);
        assert_eq!(udp_limit(Some(1232)), 1232);
    }
}
