//! Response-rate limiting (RRL) over UDP, as in Knot and BIND: at most
//! `rate_limit` answers per second to one source network (/24 for IPv4,
//! /56 for IPv6), in bursts of at most `rate_limit`. Over the limit an
//! answer is dropped, except every `rate_limit_slip`-th, which is sent
//! *slipped*: truncated (TC=1, no records) so that a real client behind a
//! spoofed address asks again over TCP, which is never limited.
//!
//! UDP answers are up to ~90 times the query's size, and a UDP source
//! address can be forged, so an open roster is a reflection amplifier; RRL
//! bounds what any one victim network can be sent.
//!
//! One table for all UDP threads. SO_REUSEPORT spreads one source's
//! datagrams over the sockets by a hash of the 4-tuple, so a client using
//! several source ports (every resolver does) reaches several threads:
//! per-thread tables would multiply the limit by `dns.udp_sockets`. The
//! table is a fixed array of atomics, touched without locks: one
//! compare-and-swap per run of answers to the same network in a batch
//! (see [`RateLimiter::decide`]), so the cost with RRL on is one
//! `Instant::now` per batch and, at the usual batch sizes, a few atomic
//! operations per batch. With `rate_limit = 0` there is no limiter at all;
//! the UDP loop skips it with one branch per batch.
//!
//! Owns: the per-network buckets and the shape of a slipped answer. Must
//! not: allocate per answer, wait, or limit anything but UDP answers.

use std::{
    hash::BuildHasher,
    net::IpAddr,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    time::Instant,
};

use super::{
    precheck::{find_opt, skip_questions},
    wire::{FLAG_TC, HEADER_LEN},
};

/// Buckets in the table, a power of two: 16 octets each, so 1 MiB whatever
/// the traffic. Networks are hashed (with a per-process random seed) to a
/// bucket, and networks that collide share one: they are limited together,
/// which can only make the limit stricter for them, never looser. With up to
/// a few thousand active networks collisions are rare; a flood from many
/// spoofed networks fills buckets, but each bucket still passes at most
/// `rate_limit` answers per second.
const BUCKETS: usize = 1 << 16;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The `[dns]` response-rate-limiting settings that [`super::serve`] takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Answers per second (and largest burst) to one source network over
    /// UDP; 0 turns rate limiting off.
    pub per_second: u32,
    /// Of the answers over the limit, every this many is sent truncated
    /// instead of dropped; 0 drops them all, 1 truncates them all.
    pub slip: u32,
}

/// What happens to one UDP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the limit: sent as it is.
    Send,
    /// Over the limit, but its turn to slip: sent truncated ([`slip`]).
    Slip,
    /// Over the limit: not sent.
    Drop,
}

/// Answers dropped and slipped since start, over all UDP threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitCounts {
    /// Answers not sent.
    pub dropped: u64,
    /// Answers sent truncated instead.
    pub slipped: u64,
}

/// A handle on the limiter's counters, for the metrics endpoint.
#[derive(Clone)]
pub struct RateLimitCounter(pub(super) std::sync::Arc<RateLimiter>);

impl RateLimitCounter {
    /// Answers dropped and slipped so far.
    pub fn counts(&self) -> RateLimitCounts {
        self.0.counts()
    }
}

/// One bucket: a token bucket kept as GCRA's theoretical arrival time
/// (equivalent, and one word wide, so one compare-and-swap updates it).
#[derive(Default)]
struct Bucket {
    /// Nanoseconds since [`RateLimiter::start`] at which the bucket is full
    /// again; `now + burst` at most.
    full_at: AtomicU64,
    /// Answers over the limit so far: every `slip`-th slips. Wraps.
    limited: AtomicU32,
}

/// The limiter the UDP threads share (behind an `Arc`).
pub(super) struct RateLimiter {
    buckets: Box<[Bucket]>,
    /// Nanoseconds per answer: the refill interval of one token.
    interval: u64,
    /// Nanoseconds of credit a full bucket holds: `per_second` tokens.
    burst: u64,
    slip: u32,
    seed: u64,
    start: Instant,
    dropped: AtomicU64,
    slipped: AtomicU64,
}

impl RateLimiter {
    /// The limiter for `limit`, or `None` when it is off.
    pub(super) fn new(limit: RateLimit) -> Option<Self> {
        if limit.per_second == 0 {
            return None;
        }
        let per_second = u64::from(limit.per_second);
        // Above 10^9 per second the interval rounds to 1 ns: no client gets
        // near either.
        let interval = (NANOS_PER_SECOND / per_second).max(1);
        Some(Self {
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            interval,
            burst: interval * per_second,
            slip: limit.slip,
            seed: std::hash::RandomState::new().hash_one(0u64),
            start: Instant::now(),
            dropped: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
        })
    }

    /// The limiter's clock: nanoseconds since it was made. The UDP loop
    /// reads it once per batch.
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Answers dropped and slipped so far.
    pub(super) fn counts(&self) -> RateLimitCounts {
        RateLimitCounts {
            dropped: self.dropped.load(Relaxed),
            slipped: self.slipped.load(Relaxed),
        }
    }

    /// Decides, in order, what happens to answers to `sources` at `now`:
    /// `verdicts[i]` for the i-th source (sources beyond `verdicts` are
    /// ignored). Consecutive answers to the same network (the common case
    /// in a batch) take their tokens in one step. Returns whether any
    /// answer was over the limit.
    pub(super) fn decide(
        &self,
        sources: impl IntoIterator<Item = IpAddr>,
        now: u64,
        verdicts: &mut [Verdict],
    ) -> bool {
        let mut networks = sources
            .into_iter()
            .map(network)
            .take(verdicts.len())
            .peekable();
        let (mut dropped, mut slipped) = (0u64, 0u64);
        let mut start = 0;
        while let Some(network) = networks.next() {
            let mut end = start + 1;
            while networks.next_if_eq(&network).is_some() {
                end += 1;
            }
            let run = &mut verdicts[start..end];
            self.decide_run(network, now, run);
            if run.last() != Some(&Verdict::Send) {
                for verdict in run.iter() {
                    match verdict {
                        Verdict::Send => {}
                        Verdict::Slip => slipped += 1,
                        Verdict::Drop => dropped += 1,
                    }
                }
            }
            start = end;
        }
        // Shared counters are touched only when something was limited.
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Relaxed);
        }
        if slipped > 0 {
            self.slipped.fetch_add(slipped, Relaxed);
        }
        dropped + slipped > 0
    }

    /// [`Self::decide`] for a run of answers to one network.
    fn decide_run(&self, network: u64, now: u64, verdicts: &mut [Verdict]) {
        let bucket = &self.buckets[self.index(network)];
        let wanted = u64::try_from(verdicts.len()).unwrap_or(u64::MAX);
        let sent = usize::try_from(self.admit(&bucket.full_at, wanted, now)).unwrap_or(0);
        let (within, over) = verdicts.split_at_mut(sent.min(verdicts.len()));
        within.fill(Verdict::Send);
        match self.slip {
            _ if over.is_empty() => {}
            0 => over.fill(Verdict::Drop),
            1 => over.fill(Verdict::Slip),
            slip => {
                let over_len = u32::try_from(over.len()).unwrap_or(u32::MAX);
                let first = bucket.limited.fetch_add(over_len, Relaxed);
                for (n, verdict) in (1u32..).zip(over.iter_mut()) {
                    *verdict = if first.wrapping_add(n) % slip == 0 {
                        Verdict::Slip
                    } else {
                        Verdict::Drop
                    };
                }
            }
        }
    }

    /// Takes up to `wanted` tokens from the bucket whose full-at time is
    /// `full_at`; returns how many it took. GCRA: a token is an `interval`
    /// of credit, and the bucket may run at most `burst` ahead of `now`.
    fn admit(&self, full_at: &AtomicU64, wanted: u64, now: u64) -> u64 {
        let mut current = full_at.load(Relaxed);
        loop {
            let base = current.max(now);
            let room = now.saturating_add(self.burst).saturating_sub(base);
            let taken = (room / self.interval).min(wanted);
            if taken == 0 {
                return 0;
            }
            let next = base + taken * self.interval;
            match full_at.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return taken,
                Err(actual) => current = actual,
            }
        }
    }

    /// The bucket of `network`: a seeded 64-bit mix (SplitMix64's
    /// finaliser), so which networks share a bucket differs per process.
    fn index(&self, network: u64) -> usize {
        let mut x = network ^ self.seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x as usize) & (BUCKETS - 1)
    }
}

/// The source network an answer counts against: the /24 of an IPv4 address
/// (also when it arrives IPv4-mapped on an IPv6 socket), the /56 of an IPv6
/// one, tagged so the two families never meet.
fn network(source: IpAddr) -> u64 {
    match source.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (1 << 63) | (u128::from(v6) >> 72) as u64,
    }
}

/// Turns a complete UDP answer into its slipped form, in place and without
/// growing it: the header (ID, opcode, AA, RD, CD and RCODE as the answer
/// had them) with TC set, the question, and no records but the answer's
/// OPT record if it had one. Knot sends the same (header, question, TC and
/// AA, its OPT record); keeping OPT tells an EDNS client that roster still
/// speaks EDNS. An answer whose question does not parse (not one roster
/// writes) keeps only its header.
pub(super) fn slip(answer: &mut Vec<u8>) {
    if answer.len() < HEADER_LEN {
        return;
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([answer[at], answer[at + 1]]));
    let (questions, answers, authority, additional) = (count(4), count(6), count(8), count(10));
    let (question_end, opt) = match skip_questions(answer, questions) {
        Some(end) => (end, find_opt(answer, end, answers + authority, additional)),
        None => (HEADER_LEN, None),
    };
    if question_end == HEADER_LEN {
        answer[4..6].fill(0);
    }
    answer[2] |= FLAG_TC;
    answer[6..10].fill(0);
    let mut len = question_end;
    let mut additional = 0u16;
    if let Some(opt) = opt {
        len += opt.len();
        answer.copy_within(opt, question_end);
        additional = 1;
    }
    answer[10..12].copy_from_slice(&additional.to_be_bytes());
    answer.truncate(len);
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::{
        op::{Edns, Message, OpCode, Query, ResponseCode},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };

    use super::*;

    /// A limiter with a fixed seed, so which test networks share a bucket
    /// does not change from run to run (none do).
    fn limiter(per_second: u32, slip: u32) -> RateLimiter {
        let mut limiter = RateLimiter::new(RateLimit { per_second, slip }).expect("limiting is on");
        limiter.seed = 0;
        limiter
    }

    fn verdicts(limiter: &RateLimiter, sources: &[IpAddr], now: u64) -> Vec<Verdict> {
        let mut verdicts = vec![Verdict::Drop; sources.len()];
        limiter.decide(sources.iter().copied(), now, &mut verdicts);
        verdicts
    }

    fn v4(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn sent(verdicts: &[Verdict]) -> usize {
        verdicts.iter().filter(|&&v| v == Verdict::Send).count()
    }

    #[test]
    fn off_means_no_limiter() {
        assert!(RateLimiter::new(RateLimit::default()).is_none());
    }

    #[test]
    fn a_burst_of_rate_then_rate_per_second() {
        let limiter = limiter(10, 0);
        let from = [v4("192.0.2.1"); 25];
        let first = verdicts(&limiter, &from, 0);
        assert_eq!(sent(&first), 10);
        assert_eq!(&first[..10], &[Verdict::Send; 10]);
        assert_eq!(&first[10..], &[Verdict::Drop; 15]);
        // A tenth of a second refills one token; half a second five.
        assert_eq!(sent(&verdicts(&limiter, &from, NANOS_PER_SECOND / 10)), 1);
        let later = NANOS_PER_SECOND / 10 + NANOS_PER_SECOND / 2;
        assert_eq!(sent(&verdicts(&limiter, &from, later)), 5);
        // Idle for long: never more than one burst.
        assert_eq!(sent(&verdicts(&limiter, &from, 100 * NANOS_PER_SECOND)), 10);
        assert_eq!(
            limiter.counts(),
            RateLimitCounts {
                dropped: 15 + 24 + 20 + 15,
                slipped: 0
            }
        );
    }

    #[test]
    fn one_answer_at_a_time_counts_the_same_as_a_run() {
        let limiter = limiter(10, 0);
        let mut sent_total = 0;
        for _ in 0..25 {
            sent_total += sent(&verdicts(&limiter, &[v4("192.0.2.1")], 5));
        }
        assert_eq!(sent_total, 10);
    }

    #[test]
    fn networks_are_slash_24_and_slash_56() {
        let limiter = limiter(2, 0);
        let same = [v4("192.0.2.1"), v4("192.0.2.200"), v4("192.0.2.7")];
        assert_eq!(sent(&verdicts(&limiter, &same, 0)), 2);
        // Another /24 has a bucket of its own; an IPv4-mapped address
        // counts against its IPv4 network.
        assert_eq!(sent(&verdicts(&limiter, &[v4("192.0.3.1")], 0)), 1);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
        assert_eq!(sent(&verdicts(&limiter, &[mapped], 0)), 0);

        let six = |text: &str| IpAddr::V6(text.parse::<Ipv6Addr>().expect("address"));
        let site = [
            six("2001:db8:0:100::1"),
            six("2001:db8:0:1ff::2"),
            six("2001:db8:0:120::3"),
        ];
        assert_eq!(sent(&verdicts(&limiter, &site, 0)), 2);
        assert_eq!(sent(&verdicts(&limiter, &[six("2001:db8:0:200::1")], 0)), 1);
    }

    #[test]
    fn every_slip_th_limited_answer_slips() {
        let from = [v4("198.51.100.1"); 11];
        let two = verdicts(&limiter(1, 2), &from, 0);
        assert_eq!(two[0], Verdict::Send);
        let slipped: Vec<bool> = two[1..].iter().map(|&v| v == Verdict::Slip).collect();
        assert_eq!(
            slipped,
            [
                false, true, false, true, false, true, false, true, false, true
            ]
        );
        assert!(
            verdicts(&limiter(1, 1), &from, 0)[1..]
                .iter()
                .all(|&v| v == Verdict::Slip)
        );
        assert!(
            verdicts(&limiter(1, 0), &from, 0)[1..]
                .iter()
                .all(|&v| v == Verdict::Drop)
        );
        let three = limiter(1, 3);
        let counted = verdicts(&three, &from, 0);
        assert_eq!(counted.iter().filter(|&&v| v == Verdict::Slip).count(), 3);
        assert_eq!(
            three.counts(),
            RateLimitCounts {
                dropped: 7,
                slipped: 3
            }
        );
    }

    #[test]
    fn threads_share_one_limit() {
        let limiter = std::sync::Arc::new(limiter(1000, 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| sent(&verdicts(&limiter, &[v4("203.0.113.5")], 7)))
                        .sum::<usize>()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(total, 1000);
    }

    fn answer(edns: bool, records: usize) -> Vec<u8> {
        let name = Name::from_ascii("web.service.local.").expect("name");
        let mut response = Message::response(0x4242, OpCode::Query);
        response.metadata.authoritative = true;
        response.metadata.response_code = ResponseCode::NoError;
        response.add_query(Query::query(name.clone(), RecordType::A));
        for n in 0..records {
            let address = Ipv4Addr::new(10, 0, 0, u8::try_from(n).expect("few"));
            response.add_answer(Record::from_rdata(name.clone(), 30, RData::A(A(address))));
            response.add_additional(Record::from_rdata(name.clone(), 30, RData::A(A(address))));
        }
        if edns {
            let mut opt = Edns::new();
            opt.set_max_payload(1232);
            opt.set_dnssec_ok(true);
            response.set_edns(opt);
        }
        response.to_vec().expect("encodes")
    }

    #[test]
    fn a_slipped_answer_keeps_header_question_and_opt() {
        for edns in [false, true] {
            let full = answer(edns, 3);
            let mut slipped = full.clone();
            slip(&mut slipped);
            assert!(slipped.len() < full.len());
            let message = Message::from_vec(&slipped).expect("the slipped answer decodes");
            let original = Message::from_vec(&full).expect("decodes");
            assert_eq!(message.metadata.id, 0x4242);
            assert!(message.metadata.truncation);
            assert!(message.metadata.authoritative);
            assert_eq!(
                message.metadata.message_type,
                original.metadata.message_type
            );
            assert_eq!(message.queries, original.queries);
            assert!(message.answers.is_empty());
            assert!(message.authorities.is_empty());
            assert!(message.additionals.is_empty());
            assert_eq!(message.edns.is_some(), edns);
            if let Some(opt) = message.edns {
                assert_eq!(opt.max_payload(), 1232);
                assert!(opt.flags().dnssec_ok);
            }
        }
    }

    #[test]
    fn slipping_a_damaged_answer_keeps_the_header() {
        let mut damaged = answer(true, 2);
        damaged.truncate(HEADER_LEN + 5);
        slip(&mut damaged);
        assert_eq!(damaged.len(), HEADER_LEN);
        assert_eq!(damaged[2] & FLAG_TC, FLAG_TC);
        assert_eq!(&damaged[4..12], &[0; 8]);

        let mut short = vec![1, 2, 3];
        slip(&mut short);
        assert_eq!(short, [1, 2, 3]);
    }
}
