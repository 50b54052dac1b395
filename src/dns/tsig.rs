//! TSIG (RFC 8945): the keys of `[[dns.update.keys]]`, checking a signed
//! request against them, and signing the answer.
//!
//! Every signed request gets a signed answer (a query too: `nsupdate` asks
//! for the SOA with its key before it updates, and gives up on an unsigned
//! answer). A key roster does not hold gets BADKEY, a MAC that does not
//! verify BADSIG, both unsigned (a MAC needs a key both sides trust); a
//! request signed outside its time window gets BADTIME, signed, with
//! roster's clock in the Other Data field so the client can tell by how
//! much it is off (section 5.2.3).

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use hickory_proto::rr::{
    Name, Record, TSigner,
    rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record},
};

use super::updates::ServiceScope;
use crate::config::UpdateKey;

/// How far a request's signing time may be from roster's clock, in
/// seconds, whatever fudge the client asks for: RFC 8945 section 10
/// recommends 300.
const MAX_FUDGE: u16 = 300;

/// The keys roster verifies signed requests with, by lower-case name.
#[derive(Default)]
pub struct KeyRing {
    keys: HashMap<Name, Key>,
}

/// One key: how to sign with it, and what it may change.
pub(super) struct Key {
    pub(super) signer: TSigner,
    pub(super) scope: ServiceScope,
}

/// What checking a signed request found.
pub(super) enum Verdict<'a> {
    /// Signed by `key`, in time: answer, signed with `request_mac`.
    Valid { key: &'a Key, request_mac: Vec<u8> },
    /// No key by this name and algorithm: BADKEY, unsigned.
    UnknownKey,
    /// The MAC does not verify: BADSIG, unsigned.
    BadSignature,
    /// A good MAC, made too long ago or too far ahead: BADTIME, signed.
    BadTime { key: &'a Key, request_mac: Vec<u8> },
}

impl KeyRing {
    /// The keys of a validated config (see `config::UpdateConfig`).
    pub fn from_config(keys: &[UpdateKey]) -> Result<Self, String> {
        let mut ring = HashMap::new();
        for key in keys {
            let name = Name::from_ascii(format!("{}.", key.name.trim_end_matches('.')))
                .map_err(|e| format!("key {:?}: {e}", key.name))?
                .to_lowercase();
            let algorithm = match key.algorithm.to_ascii_lowercase().as_str() {
                "hmac-sha256" => TsigAlgorithm::HmacSha256,
                "hmac-sha384" => TsigAlgorithm::HmacSha384,
                "hmac-sha512" => TsigAlgorithm::HmacSha512,
                other => return Err(format!("key {:?}: algorithm {other:?}", key.name)),
            };
            let signer = TSigner::new(key.secret_bytes()?, algorithm, name.clone(), MAX_FUDGE)
                .map_err(|e| format!("key {:?}: {e}", key.name))?;
            let scope = if key.services.iter().any(|s| s == "*") {
                ServiceScope::All
            } else {
                let labels = key.services.iter().map(|service| {
                    crate::model::DnsLabel::from_name(service, "services")
                        .map(|label| label.as_str().to_owned())
                        .map_err(|e| format!("key {:?}: service {service:?}: {e}", key.name))
                });
                ServiceScope::Only(labels.collect::<Result<_, _>>()?)
            };
            ring.insert(name, Key { signer, scope });
        }
        Ok(Self { keys: ring })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `raw`, a request whose TSIG record (owner `key_name`, data
    /// `tsig`) is its last, at time `now` (seconds since the epoch).
    pub(super) fn verify(&self, raw: &[u8], key_name: &Name, tsig: &TSIG, now: u64) -> Verdict<'_> {
        let Some(key) = self.keys.get(&key_name.to_lowercase()) else {
            return Verdict::UnknownKey;
        };
        if tsig.algorithm != *key.signer.algorithm() {
            return Verdict::UnknownKey;
        }
        match key.signer.verify_message_byte(raw, None, true) {
            Ok((request_mac, signed, _)) => {
                // The client's fudge, but never a window wider than ours.
                let fudge = u64::from(tsig.fudge.min(MAX_FUDGE));
                if now.abs_diff(signed) > fudge {
                    Verdict::BadTime { key, request_mac }
                } else {
                    Verdict::Valid { key, request_mac }
                }
            }
            Err(_) => Verdict::BadSignature,
        }
    }
}

/// Seconds since the epoch, as TSIG counts time.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The TSIG record that signs `response` (encoded without it), the answer
/// to a request with MAC `request_mac` and original ID `id`: at `time`
/// with no error, or with `error` (BADTIME: the request's time, and
/// roster's clock in Other Data, as BIND and Knot send it).
pub(super) fn sign(
    key: &Key,
    request_mac: &[u8],
    response: &[u8],
    id: u16,
    time: u64,
    error: Option<(TsigError, u64)>,
) -> Option<Box<Record<TSIG>>> {
    let signer = &key.signer;
    // Other Data of an error: roster's clock as 48 bits.
    let other = error.map_or_else(Vec::new, |(_, now)| now.to_be_bytes()[2..].to_vec());
    let error = error.map(|(error, _)| error);
    let stub = TSIG::new(
        signer.algorithm().clone(),
        time,
        signer.fudge(),
        Vec::new(),
        id,
        error,
        other,
    );
    let tbs = signer
        .encode_response_tbs(request_mac, response, &stub)
        .ok()?;
    let mac = signer.sign(&tbs).ok()?;
    Some(Box::new(make_tsig_record(
        signer.signer_name().clone(),
        stub.set_mac(mac),
    )))
}

/// The unsigned TSIG of an answer that cannot be signed (BADKEY, BADSIG):
/// the request's key name, algorithm, time, fudge and ID, no MAC (RFC 8945
/// section 5.3.2), so the client can tell which request failed and why.
pub(super) fn unsigned(key_name: &Name, request: &TSIG, error: TsigError) -> Record<TSIG> {
    let rdata = TSIG::new(
        request.algorithm.clone(),
        request.time,
        request.fudge,
        Vec::new(),
        request.oid,
        Some(error),
        Vec::new(),
    );
    make_tsig_record(key_name.clone(), rdata)
}

/// At most how long the TSIG record `key` signs with is (its names
/// uncompressed), to leave room for it in a UDP answer.
pub(super) fn record_len(key: &Key) -> usize {
    let signer = &key.signer;
    let name = signer.signer_name().len() + 1;
    let algorithm = signer.algorithm().to_name().len() + 1;
    let mac = match signer.algorithm() {
        TsigAlgorithm::HmacSha256 => 32,
        TsigAlgorithm::HmacSha384 => 48,
        _ => 64,
    };
    // Owner, type/class/TTL/length, algorithm, time (6), fudge, MAC size,
    // MAC, original ID, error, other length, and 6 bytes of Other Data.
    name + 10 + algorithm + 6 + 2 + 2 + mac + 2 + 2 + 2 + 6
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::{Arc, Mutex},
    };

    use arc_swap::ArcSwap;
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query, ResponseCode},
        rr::{DNSClass, LowerName, RecordType, TSigVerifier},
    };

    use super::*;
    use crate::dns::{
        DnsHandler,
        fixture::{self, DOMAIN},
        fuzzing::run_to_end,
        udp::{self, Reply},
        updates::{UpdateApplier, UpdateFuture},
        zones::StaticZones,
    };

    const SECRET: &str = "c2l4dGVlbi1ieXRlcy1vZi1zZWNyZXQtbWF0ZXJpYWw=";

    fn key(name: &str, algorithm: &str, secret: &str) -> UpdateKey {
        UpdateKey {
            name: name.to_owned(),
            algorithm: algorithm.to_owned(),
            secret: secret.to_owned(),
            services: vec!["web".to_owned()],
        }
    }

    /// Records what it was asked to apply, and answers NOERROR.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Name, ServiceScope, usize)>>);

    impl UpdateApplier for Recorder {
        fn apply(
            &self,
            key: &Name,
            scope: ServiceScope,
            _prerequisites: Vec<Record>,
            updates: Vec<Record>,
        ) -> UpdateFuture {
            if let Ok(mut calls) = self.0.lock() {
                calls.push((key.clone(), scope, updates.len()));
            }
            Box::pin(async { ResponseCode::NoError })
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

    impl Reply for Capture {
        fn send(&self, bytes: &[u8]) {
            if let Ok(mut sent) = self.0.lock() {
                *sent = Some(bytes.to_vec());
            }
        }
    }

    fn handler(recorder: Arc<Recorder>) -> DnsHandler {
        let keys =
            KeyRing::from_config(&[key("roster-key", "hmac-sha256", SECRET)]).expect("a valid key");
        DnsHandler::new(
            Arc::new(ArcSwap::from_pointee(fixture::table(&[fixture::web()]))),
            Arc::new(StaticZones::default()),
            LowerName::new(&fixture::domain()),
            1232,
        )
        .with_updates(keys, recorder)
    }

    /// `message` signed with `key` at `time`, and the verifier of the
    /// answer that the client keeps.
    fn signed(message: &mut Message, key: &UpdateKey, time: u64) -> (Vec<u8>, TSigVerifier) {
        let ring = KeyRing::from_config(std::slice::from_ref(key)).expect("a valid key");
        let signer = &ring.keys.values().next().expect("one key").signer;
        let (signature, verifier) = signer.sign_message(message, time).expect("signed");
        message.set_signature(signature);
        (
            message.to_vec().expect("encodes"),
            verifier.expect("a verifier"),
        )
    }

    fn answer(handler: &DnsHandler, bytes: &[u8]) -> Vec<u8> {
        let reply = Capture::default();
        let source = SocketAddr::from(([127, 0, 0, 1], 5353));
        run_to_end(udp::answer_general(handler, bytes, source, reply.clone()));
        let sent = reply.0.lock().expect("lock").take();
        sent.expect("an answer")
    }

    fn soa_query() -> Message {
        let mut message = Message::query();
        message.metadata.id = 0x2136;
        message.add_query(Query::query(
            Name::from_ascii(DOMAIN).expect("name"),
            RecordType::SOA,
        ));
        message
    }

    fn update() -> Message {
        let mut message = Message::new(0x2137, MessageType::Query, OpCode::Update);
        let mut zone = Query::query(Name::from_ascii(DOMAIN).expect("name"), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        message.add_query(zone);
        message
    }

    #[test]
    fn a_signed_query_gets_an_answer_signed_with_its_key() {
        let handler = handler(Arc::default());
        let key = key("roster-key.", "hmac-sha256", SECRET);
        let (bytes, mut verifier) = signed(&mut soa_query(), &key, now());
        let response = answer(&handler, &bytes);
        let verified = verifier
            .verify(&response)
            .expect("the answer's TSIG verifies");
        assert_eq!(verified.metadata.response_code, ResponseCode::NoError);
        assert_eq!(verified.answers.len(), 1, "the SOA");
    }

    #[test]
    fn a_signed_update_goes_to_the_applier_with_the_keys_scope() {
        let recorder = Arc::new(Recorder::default());
        let handler = handler(recorder.clone());
        let key = key("Roster-Key", "hmac-sha256", SECRET);
        let (bytes, mut verifier) = signed(&mut update(), &key, now());
        let response = answer(&handler, &bytes);
        let verified = verifier
            .verify(&response)
            .expect("the answer's TSIG verifies");
        assert_eq!(verified.metadata.response_code, ResponseCode::NoError);
        assert_eq!(verified.metadata.op_code, OpCode::Update);
        let calls = recorder.0.lock().expect("lock");
        let [(name, scope, _)] = calls.as_slice() else {
            panic!("one update applied, got {calls:?}");
        };
        assert_eq!(name.to_ascii(), "roster-key.");
        assert!(scope.allows("web") && !scope.allows("db"));
    }

    #[test]
    fn tsig_failures_get_notauth_with_their_error_and_apply_nothing() {
        let recorder = Arc::new(Recorder::default());
        let handler = handler(recorder.clone());
        let other_secret = "b3RoZXItc2l4dGVlbi1ieXRlcy1vZi1zZWNyZXQ=";
        let cases = [
            (
                key("roster-key", "hmac-sha256", other_secret),
                now(),
                TsigError::BadSig,
            ),
            (
                key("other-key", "hmac-sha256", SECRET),
                now(),
                TsigError::BadKey,
            ),
            (
                key("roster-key", "hmac-sha512", SECRET),
                now(),
                TsigError::BadKey,
            ),
            (
                key("roster-key", "hmac-sha256", SECRET),
                now() - 301,
                TsigError::BadTime,
            ),
            (
                key("roster-key", "hmac-sha256", SECRET),
                now() + 301,
                TsigError::BadTime,
            ),
        ];
        for (key, time, error) in cases {
            let (bytes, mut verifier) = signed(&mut update(), &key, time);
            let response = Message::from_vec(&answer(&handler, &bytes)).expect("decodes");
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NotAuth,
                "{key:?}"
            );
            let tsig = response.signature().expect("a TSIG record");
            assert_eq!(tsig.data.error, Some(error), "{key:?}");
            let bytes = response.to_vec().expect("encodes");
            if error == TsigError::BadTime {
                // Signed (over the request's MAC, at the request's time),
                // with roster's clock in Other Data.
                assert_eq!(tsig.data.time, time);
                assert_eq!(tsig.data.other.len(), 6);
                verifier.verify(&bytes).expect("BADTIME is signed");
            } else {
                assert!(tsig.data.mac.is_empty(), "{key:?}: unsigned");
                assert!(verifier.verify(&bytes).is_err());
            }
        }
        assert!(recorder.0.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_tsig_that_is_not_the_last_record_gets_formerr() {
        let handler = handler(Arc::default());
        let key = key("roster-key", "hmac-sha256", SECRET);
        let (mut bytes, _) = signed(&mut soa_query(), &key, now());
        // One more additional record after the TSIG: an empty OPT.
        let arcount = u16::from_be_bytes([bytes[10], bytes[11]]) + 1;
        bytes[10..12].copy_from_slice(&arcount.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        let response = Message::from_vec(&answer(&handler, &bytes)).expect("decodes");
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn every_update_answer_is_counted_by_rcode_and_queries_are_not() {
        let counters = Arc::new(crate::metrics::UpdateCounters::default());
        let handler = handler(Arc::default()).with_update_counters(counters.clone());
        let key = key("roster-key", "hmac-sha256", SECRET);
        let wrong = self::key(
            "roster-key",
            "hmac-sha256",
            "b3RoZXItc2l4dGVlbi1ieXRlcy1vZi1zZWNyZXQ=",
        );
        answer(&handler, &signed(&mut update(), &key, now()).0);
        answer(&handler, &signed(&mut update(), &wrong, now()).0);
        answer(&handler, &update().to_vec().expect("encodes"));
        answer(&handler, &signed(&mut soa_query(), &key, now()).0);
        let counts: Vec<u64> = counters
            .0
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let by_name = |name: &str| {
            let index = crate::metrics::UPDATE_RCODES
                .iter()
                .position(|n| *n == name)
                .expect("a label");
            counts[index]
        };
        assert_eq!(by_name("NOERROR"), 1, "{counts:?}");
        assert_eq!(by_name("NOTAUTH"), 1, "{counts:?}");
        assert_eq!(by_name("REFUSED"), 1, "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), 3, "the query is not an update");
    }

    #[test]
    fn unsigned_updates_are_refused_and_other_zones_are_not_ours() {
        let recorder = Arc::new(Recorder::default());
        let handler = handler(recorder.clone());
        let response = Message::from_vec(&answer(&handler, &update().to_vec().expect("encodes")))
            .expect("decodes");
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);

        let mut elsewhere = Message::new(7, MessageType::Query, OpCode::Update);
        elsewhere.add_query(Query::query(
            Name::from_ascii("example.org.").expect("name"),
            RecordType::SOA,
        ));
        let key = key("roster-key", "hmac-sha256", SECRET);
        let (bytes, mut verifier) = signed(&mut elsewhere, &key, now());
        let response = verifier
            .verify(&answer(&handler, &bytes))
            .expect("signed: the key is good");
        assert_eq!(response.metadata.response_code, ResponseCode::NotAuth);
        assert!(recorder.0.lock().expect("lock").is_empty());
    }
}
