//! RFC 2136's prerequisite checks (section 3.2) and update processing
//! (sections 3.4.1 and 3.4.2) over the RRsets roster's instances make.

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Record, RecordType},
};

use super::{
    UpdatePlan, UpdateRefusal, mapping,
    names::{Owner, classify},
    prerequisites::{self, is_meta_type},
    view::{self, DHCID},
    zone::{Operation, Zone},
};
use crate::registry::{Change, RegistryState};

/// Most records in each section: an update is planned in one step of the
/// registry's writer, which every other change waits behind.
pub(super) const MAX_RECORDS: usize = 256;

/// The changes `plan`'s update makes to `state`, or why it makes none.
pub(super) fn plan(plan: &UpdatePlan, state: &RegistryState) -> Result<Vec<Change>, UpdateRefusal> {
    let domain = &plan.settings.domain;
    for (section, records) in [
        ("prerequisite", &plan.prerequisites),
        ("update", &plan.updates),
    ] {
        if records.len() > MAX_RECORDS {
            return Err(UpdateRefusal::new(
                ResponseCode::Refused,
                format!("the {section} section has more than {MAX_RECORDS} records"),
            ));
        }
    }
    prerequisites::check(&plan.prerequisites, state, domain)?;
    let mut operations = Vec::with_capacity(plan.updates.len());
    for record in &plan.updates {
        operations.push(prescan(record, domain)?);
    }
    for (record, (owner, _)) in plan.updates.iter().zip(&operations) {
        check_holdable(record, owner)?;
        if let Some(service) = owner.service()
            && !plan.scope.allows(service.as_str())
        {
            return Err(UpdateRefusal::new(
                ResponseCode::Refused,
                format!("the key may not change the service {service}"),
            ));
        }
    }
    let mut zone = Zone::new(state, &plan.settings);
    for (owner, operation) in &operations {
        zone.apply(owner, operation)?;
    }
    mapping::changes(zone, &plan.settings)
}

/// RFC 2136 section 3.4.1.3: the update section's records are checked
/// for form before any is applied; each becomes an [`Operation`].
fn prescan(
    record: &Record,
    domain: &hickory_proto::rr::Name,
) -> Result<(Owner, Operation), UpdateRefusal> {
    let name = &record.name;
    let rtype = record.record_type();
    let formerr = |why: &str| {
        Err(UpdateRefusal::new(
            ResponseCode::FormErr,
            format!("update {name} {rtype}: {why}"),
        ))
    };
    let Some(owner) = classify(name, domain) else {
        return Err(UpdateRefusal::new(
            ResponseCode::NotZone,
            format!("update {name} is outside the zone {domain}"),
        ));
    };
    let data = view::value(&record.data);
    let operation = match record.dns_class {
        DNSClass::IN => {
            if is_meta_type(rtype) {
                return formerr("this type cannot be added");
            }
            let Some(value) = data else {
                return formerr("an add needs RDATA");
            };
            Operation::Add(value)
        }
        DNSClass::ANY => {
            if record.ttl != 0 || data.is_some() {
                return formerr("a delete (class ANY) has TTL 0 and no RDATA");
            }
            if rtype == RecordType::ANY {
                Operation::DeleteAll
            } else if is_meta_type(rtype) {
                return formerr("this type cannot be deleted");
            } else {
                Operation::DeleteRrset(rtype)
            }
        }
        DNSClass::NONE => {
            if record.ttl != 0 || is_meta_type(rtype) {
                return formerr("a delete (class NONE) has TTL 0 and a type that is data");
            }
            let Some(value) = data else {
                return formerr("deleting one RR (class NONE) needs its RDATA");
            };
            Operation::DeleteRr(value)
        }
        class => return formerr(&format!("class {class} is not the zone's")),
    };
    Ok((owner, operation))
}

/// Refuses a record of a type roster cannot hold at its name, whatever it
/// does with it: roster keeps only what its names mean, and an update it
/// cannot keep whole is refused whole.
fn check_holdable(record: &Record, owner: &Owner) -> Result<(), UpdateRefusal> {
    let name = &record.name;
    let rtype = record.record_type();
    let refuse = |reason: String| Err(UpdateRefusal::new(ResponseCode::Refused, reason));
    // `ANY` here is a class ANY delete of every RRset: prescan allowed
    // nothing else.
    let holds = |types: &[RecordType]| rtype == RecordType::ANY || types.contains(&rtype);
    match owner {
        Owner::Apex => refuse(format!(
            "{name} is the zone's apex: its SOA and NS records are roster's own"
        )),
        Owner::Other => refuse(format!(
            "roster holds no records at {name}: only <id>.<service>, <service>, \
             _<service>._tcp and _<service>._<tag> names"
        )),
        Owner::Instance { .. } => {
            if holds(&[RecordType::A, RecordType::AAAA, RecordType::TXT, DHCID]) {
                Ok(())
            } else {
                refuse(format!(
                    "roster holds only A, AAAA, TXT and DHCID at an instance name, not {rtype} \
                     at {name}"
                ))
            }
        }
        Owner::Service(_) | Owner::Protocol(_) | Owner::Tag { .. } => {
            let types: &[RecordType] = match owner {
                Owner::Service(_) => &[RecordType::A, RecordType::AAAA, RecordType::SRV],
                _ => &[RecordType::SRV],
            };
            if holds(types) {
                Ok(())
            } else if rtype == RecordType::TXT {
                refuse(format!(
                    "roster keeps no TXT records outside instances (TXT at {name}): \
                     TXT at <id>.<service> is the instance's metadata; for external-dns, \
                     run it with --registry=noop"
                ))
            } else {
                refuse(format!("roster holds no {rtype} records at {name}"))
            }
        }
    }
}
