//! Fitting a response into a UDP datagram, or into the 65,535 octets of a
//! TCP message.
//!
//! hickory's encoder truncates by itself, but it sets TC when only the
//! additional section overflows (RFC 2181 section 9 says not to) and can drop
//! the OPT record. So roster decides what fits before handing the sections
//! over: answers that do not fit are trimmed and TC is set; additional
//! records that do not fit are dropped silently; the OPT record always fits.

use std::{borrow::Cow, cell::RefCell};

use hickory_proto::{ProtoError, rr::Record, serialize::binary::BinEncoder};

use super::lookup::Answer;
use super::wire::{HEADER_LEN, max_encoded_len};

thread_local! {
    /// Scratch space for trial encodings, reused to avoid an allocation per
    /// query.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Trims `answer` to fit `limit` octets beside an OPT record of `opt_len`
/// octets, its options included ([`super::wire::opt_record_len`]; 0
/// without one). Returns whether answers were dropped (the response must
/// then carry TC).
pub(super) fn fit(
    answer: &mut Answer<'_>,
    question_len: usize,
    limit: usize,
    opt_len: usize,
) -> bool {
    let budget = limit.saturating_sub(opt_len);
    let records = answer.wire_bound.unwrap_or_else(|| {
        answer
            .answers
            .iter()
            .chain(&answer.authority)
            .chain(&answer.additionals)
            .map(|r| max_encoded_len(r))
            .sum()
    });
    if HEADER_LEN + question_len + records <= budget {
        return false;
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        let mut encoder = BinEncoder::new(&mut scratch);
        encoder.set_max_size(u16::try_from(budget).unwrap_or(u16::MAX));
        // A stand-in for header and question: compression pointers into the
        // question are lost, so this never overestimates what fits.
        let prefix = vec![0u8; HEADER_LEN + question_len];
        if encoder.emit_vec(&prefix).is_err() {
            return false;
        }
        let fitted_answers = emit_count(&mut encoder, &answer.answers);
        if fitted_answers < answer.answers.len() {
            answer.answers.truncate(fitted_answers);
            answer.authority.clear();
            answer.additionals.clear();
            return true;
        }
        // A record of the authority section left out sets TC (RFC 2181
        // section 9 spares only the additional section). Compared before
        // truncating: after, it would always be false.
        let fitted_authority = emit_count(&mut encoder, &answer.authority);
        let authority_cut = fitted_authority < answer.authority.len();
        answer.authority.truncate(fitted_authority);
        let fitted_additionals = emit_count(&mut encoder, &answer.additionals);
        answer.additionals.truncate(fitted_additionals);
        authority_cut
    })
}

/// Emits records until one does not fit; returns how many did.
fn emit_count(encoder: &mut BinEncoder<'_>, records: &[Cow<'_, Record>]) -> usize {
    match encoder.emit_all(records.iter().map(|r| r.as_ref())) {
        Ok(count) => count,
        Err(ProtoError::NotAllRecordsWritten { count, .. }) => count,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, net::Ipv4Addr, str::FromStr};

    use hickory_proto::rr::{Name, RData, Record, rdata::A};

    use super::*;

    fn a(name: &str, n: u8) -> Cow<'static, Record> {
        let name = Name::from_str(name).expect("a name");
        Cow::Owned(Record::from_rdata(
            name,
            30,
            RData::A(A(Ipv4Addr::new(192, 0, 2, n))),
        ))
    }

    /// Answers that all fit, and an authority section that does not: the
    /// records left out of it set TC; additional records left out do not
    /// (RFC 2181 section 9).
    #[test]
    fn an_authority_record_left_out_sets_tc_and_an_additional_one_does_not() {
        let owner = "a-rather-long-owner-name-for-this-test.example.test.";
        let records = |n: u8| (0..n).map(|i| a(owner, i)).collect::<Vec<_>>();
        let one = HEADER_LEN + max_encoded_len(&a(owner, 0));
        // Room for two records beside the header.
        let limit = HEADER_LEN + 2 * (one - HEADER_LEN) + 4;
        let mut cut_authority = Answer {
            answers: records(1),
            authority: records(3),
            ..Answer::default()
        };
        assert!(fit(&mut cut_authority, 0, limit, 0), "TC for the authority");
        assert_eq!(cut_authority.answers.len(), 1);
        assert!(cut_authority.authority.len() < 3);

        let mut cut_additional = Answer {
            answers: records(1),
            additionals: records(3),
            ..Answer::default()
        };
        assert!(
            !fit(&mut cut_additional, 0, limit, 0),
            "no TC for additionals"
        );
        assert_eq!(cut_additional.answers.len(), 1);
        assert!(cut_additional.additionals.len() < 3);
    }
}
