//! RFC 2136 section 3.2: the prerequisite section, checked against the
//! registry as it is before the update, every instance counted whether
//! healthy or not.

use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, Record, RecordType},
};

use super::{
    UpdateRefusal,
    names::{Owner, classify},
    view::{self, Value},
};
use crate::registry::RegistryState;

/// Checks every prerequisite; the first unmet one says why, with its RCODE.
pub(super) fn check(
    prerequisites: &[Record],
    state: &RegistryState,
    domain: &Name,
) -> Result<(), UpdateRefusal> {
    // Section 3.2.3: RRs of the zone class are gathered into RRsets and
    // compared whole, after every other form has been checked.
    let mut gathered: BTreeMap<(Owner, RecordType), (Name, BTreeSet<Value>)> = BTreeMap::new();
    for record in prerequisites {
        let name = &record.name;
        let rtype = record.record_type();
        let refuse = |rcode, reason: String| Err(UpdateRefusal::new(rcode, reason));
        if record.ttl != 0 {
            return refuse(
                ResponseCode::FormErr,
                format!("prerequisite {name} {rtype}: TTL must be 0"),
            );
        }
        let Some(owner) = classify(name, domain) else {
            return refuse(
                ResponseCode::NotZone,
                format!("prerequisite {name} is outside the zone {domain}"),
            );
        };
        let data = view::value(&record.data);
        match record.dns_class {
            DNSClass::ANY | DNSClass::NONE if data.is_some() => {
                return refuse(
                    ResponseCode::FormErr,
                    format!("prerequisite {name} {rtype}: class ANY or NONE must have no RDATA"),
                );
            }
            DNSClass::ANY if rtype == RecordType::ANY => {
                if !view::in_use(state, &owner) {
                    return refuse(ResponseCode::NXDomain, format!("{name} is not in use"));
                }
            }
            DNSClass::ANY => {
                if !view::exists(state, &owner, rtype, domain) {
                    return refuse(ResponseCode::NXRRSet, format!("no {rtype} RRset at {name}"));
                }
            }
            DNSClass::NONE if rtype == RecordType::ANY => {
                if view::in_use(state, &owner) {
                    return refuse(ResponseCode::YXDomain, format!("{name} is in use"));
                }
            }
            DNSClass::NONE => {
                if view::exists(state, &owner, rtype, domain) {
                    return refuse(ResponseCode::YXRRSet, format!("{name} has a {rtype} RRset"));
                }
            }
            DNSClass::IN => {
                let Some(value) = data.filter(|_| !is_meta_type(rtype)) else {
                    return refuse(
                        ResponseCode::FormErr,
                        format!("prerequisite {name} {rtype}: class IN needs a value"),
                    );
                };
                gathered
                    .entry((owner, rtype))
                    .or_insert_with(|| (name.clone(), BTreeSet::new()))
                    .1
                    .insert(value);
            }
            class => {
                return refuse(
                    ResponseCode::FormErr,
                    format!("prerequisite {name} {rtype}: class {class} is not the zone's"),
                );
            }
        }
    }
    for ((owner, rtype), (name, expected)) in gathered {
        if view::rrset(state, &owner, rtype, domain) != expected {
            return Err(UpdateRefusal::new(
                ResponseCode::NXRRSet,
                format!("the {rtype} RRset at {name} is not the one required"),
            ));
        }
    }
    Ok(())
}

/// Types that are questions or transaction data, not zone data (RFC 1035
/// section 3.2.3, TKEY, TSIG, MAILA, MAILB): no RR of the zone class
/// carries them.
pub(super) fn is_meta_type(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::ANY
            | RecordType::AXFR
            | RecordType::IXFR
            | RecordType::OPT
            | RecordType::TSIG
            | RecordType::ZERO
    ) || matches!(u16::from(rtype), 249 | 253 | 254)
}
