//! Checks on a query's raw bytes that hickory's parser does not make, run
//! before it on both transports (UDP's general path and TCP), so that UDP
//! and TCP answer a malformed query alike: FORMERR, with no log line per
//! message. The fast path makes the same checks as it parses. Also the
//! walks over a raw message that find its parts without parsing it (the
//! question's end, the OPT record, a COOKIE option), which the rate
//! limiter's slipped answers use too.

use std::ops::Range;

use super::wire::{HEADER_LEN, POINTER_TAG, RR_FIXED_LEN, TYPE_OPT};

/// Compression pointers followed per question name before it counts as a
/// loop (a name has at most 127 labels).
const MAX_POINTER_HOPS: usize = 128;

/// Whether hickory may parse and answer `query`: its question decodes the
/// same in the response ([`question_is_self_contained`]) and its EDNS
/// options add up ([`opt_options_add_up`]). `false` means FORMERR.
pub(super) fn well_formed(query: &[u8]) -> bool {
    question_is_self_contained(query) && opt_options_add_up(query)
}

/// Whether every compression pointer in the question names points back
/// into the question section itself. hickory echoes the question section
/// byte for byte at the same offset, so a pointer into the header (which
/// the response rewrites) or past the questions (records the response
/// drops) would name something else in the response, or nothing that
/// decodes. `true` for anything too broken to walk: hickory refuses it.
pub(super) fn question_is_self_contained(query: &[u8]) -> bool {
    let Some(count) = query.get(4..6).map(|c| u16::from_be_bytes([c[0], c[1]])) else {
        return true;
    };
    // Where the section ends: each name in place, then type and class.
    let mut end = HEADER_LEN;
    for _ in 0..count {
        let Some(name_end) = skip_name(query, end) else {
            return true;
        };
        end = name_end + 4;
    }
    let mut start = HEADER_LEN;
    for _ in 0..count {
        let mut at = start;
        let mut hops = 0;
        // Follows the name to its end, wherever its pointers lead.
        loop {
            let Some(&len) = query.get(at) else {
                return true;
            };
            match len {
                0 => break,
                1..=63 => at += 1 + usize::from(len),
                _ if len & POINTER_TAG == POINTER_TAG => {
                    let Some(&low) = query.get(at + 1) else {
                        return true;
                    };
                    let target = usize::from(u16::from_be_bytes([len & !POINTER_TAG, low]));
                    hops += 1;
                    if !(HEADER_LEN..end).contains(&target) || hops > MAX_POINTER_HOPS {
                        return false;
                    }
                    at = target;
                }
                _ => return true, // Reserved label types: hickory refuses them.
            }
        }
        start = skip_name(query, start).map_or(end, |name_end| name_end + 4);
    }
    true
}

/// Whether every OPT record's options exactly fill its RDATA. hickory
/// drops options that do not add up, with a WARN line per datagram; roster
/// answers FORMERR instead, as its fast path does. `true` for anything too
/// broken to walk: hickory refuses it.
pub(super) fn opt_options_add_up(query: &[u8]) -> bool {
    let Some(header) = query.get(..HEADER_LEN) else {
        return true;
    };
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let mut at = HEADER_LEN;
    for _ in 0..count(4) {
        let Some(name_end) = skip_name(query, at) else {
            return true;
        };
        at = name_end + 4;
    }
    for _ in 0..count(6) + count(8) + count(10) {
        // Owner name, then type, class, TTL, RDLENGTH.
        let Some(name_end) = skip_name(query, at) else {
            return true;
        };
        let Some(fixed) = query.get(name_end..name_end + RR_FIXED_LEN) else {
            return true;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdata_len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let start = name_end + RR_FIXED_LEN;
        let Some(mut options) = query.get(start..start + rdata_len) else {
            return true;
        };
        if rtype == TYPE_OPT {
            while !options.is_empty() {
                let Some(option) = options.get(..4) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([option[2], option[3]]));
                let Some(rest) = options.get(4 + len..) else {
                    return false;
                };
                options = rest;
            }
        }
        at = start + rdata_len;
    }
    true
}

/// The data of the first COOKIE option (RFC 7873) in `query`'s OPT
/// record, for the UDP loop's rate limiter; `None` without one or when the
/// message does not walk. Walks names' labels and records' lengths only.
pub(super) fn cookie_option(query: &[u8]) -> Option<&[u8]> {
    let header = query.get(..HEADER_LEN)?;
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let questions_end = skip_questions(query, count(4))?;
    let opt = find_opt(query, questions_end, count(6) + count(8), count(10))?;
    let mut options = query.get(skip_name(query, opt.start)? + RR_FIXED_LEN..opt.end)?;
    while let Some((option, rest)) = options.split_first_chunk::<4>() {
        let len = usize::from(u16::from_be_bytes([option[2], option[3]]));
        let data = rest.get(..len)?;
        if u16::from_be_bytes([option[0], option[1]]) == super::cookies::OPTION_CODE {
            return Some(data);
        }
        options = &rest[len..];
    }
    None
}

/// Where the question section of `message` ends, if its `questions`
/// entries all parse.
pub(super) fn skip_questions(message: &[u8], questions: usize) -> Option<usize> {
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = skip_name(message, at)? + 4; // QTYPE, QCLASS
        if at > message.len() {
            return None;
        }
    }
    Some(at)
}

/// The OPT record among the `additional` records that follow `before`
/// others, starting at `at`: its octets, if it is there and whole.
pub(super) fn find_opt(
    message: &[u8],
    mut at: usize,
    before: usize,
    additional: usize,
) -> Option<Range<usize>> {
    for index in 0..before + additional {
        let start = at;
        let fixed = skip_name(message, at)?;
        let rr_type = u16::from_be_bytes([*message.get(fixed)?, *message.get(fixed + 1)?]);
        let rdlength = u16::from_be_bytes([*message.get(fixed + 8)?, *message.get(fixed + 9)?]);
        at = fixed + RR_FIXED_LEN + usize::from(rdlength);
        if at > message.len() {
            return None;
        }
        if index >= before && rr_type == TYPE_OPT {
            return Some(start..at);
        }
    }
    None
}

/// The type of the first question in `query`, for the counters; `None`
/// when there is none or it does not read. Walks the name's labels only
/// (a few octets each): no parsing, no allocation.
pub(super) fn question_type(query: &[u8]) -> Option<u16> {
    let count = query.get(4..6)?;
    if count == [0, 0] {
        return None;
    }
    let end = skip_name(query, HEADER_LEN)?;
    let qtype = query.get(end..end + 2)?;
    Some(u16::from_be_bytes([qtype[0], qtype[1]]))
}

/// The offset just past the name starting at `at`, without following a
/// compression pointer; `None` if it runs off the end or uses a reserved
/// label type.
fn skip_name(query: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *query.get(at)?;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + usize::from(len),
            _ if len & POINTER_TAG == POINTER_TAG => {
                return Some(at + 2).filter(|&end| end <= query.len());
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    #[test]
    fn question_type_reads_the_first_question() {
        let mut message = Message::query();
        let name = Name::from_ascii("web.service.local.").expect("name");
        message.add_query(Query::query(name, RecordType::SRV));
        let bytes = message.to_vec().expect("encodes");
        assert_eq!(question_type(&bytes), Some(33));
        // Cut inside the type, or no question at all: nothing to count.
        assert_eq!(question_type(&bytes[..bytes.len() - 3]), None);
        assert_eq!(question_type(&bytes[..HEADER_LEN]), None);
        let mut none = bytes.clone();
        none[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(question_type(&none), None);
    }

    #[test]
    fn cookie_option_is_found_among_the_options() {
        use hickory_proto::{
            op::Edns,
            rr::rdata::opt::{EdnsCode, EdnsOption},
        };
        let query = |options: Vec<EdnsOption>| {
            let mut message = Message::query();
            let name = Name::from_ascii("web.service.local.").expect("name");
            message.add_query(Query::query(name, RecordType::A));
            let mut edns = Edns::new();
            for option in options {
                edns.options_mut().insert(option);
            }
            message.set_edns(edns);
            message.to_vec().expect("encodes")
        };
        let cookie = EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let nsid = EdnsOption::Unknown(u16::from(EdnsCode::NSID), vec![]);
        let second = EdnsOption::Unknown(10, vec![9; 24]);
        let bytes = query(vec![nsid, cookie, second]);
        assert_eq!(cookie_option(&bytes), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
        assert_eq!(cookie_option(&query(vec![])), None);
        // Cut inside the option: nothing.
        assert_eq!(cookie_option(&bytes[..bytes.len() - 30]), None);
        let mut no_edns = Message::query();
        no_edns.add_query(Query::query(Name::root(), RecordType::A));
        assert_eq!(cookie_option(&no_edns.to_vec().expect("encodes")), None);
    }
}
