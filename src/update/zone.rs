//! RFC 2136 section 3.4.2 over the part of the registry an update touches:
//! each instance it names is drafted from the registry's view of it (its
//! address, TXT, DHCID and SRV values, its tags), the update's adds and
//! deletes are applied to those drafts in order, and [`super::mapping`]
//! turns the result back into instances.
//!
//! Some names are views of the same data, and are changed together: the
//! SRV RRsets at `_<service>._tcp`, `_<service>._udp` and `<service>` are
//! one RRset (each instance's port, priority and weight), and the A/AAAA
//! RRset at `<service>` is the instances' addresses.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use super::{
    UpdateRefusal, UpdateSettings,
    names::Owner,
    view::{self, DHCID, DHCID_META_KEY, SrvValues, Value},
};
use crate::{
    model::DnsLabel,
    registry::{InstanceState, RegistryState, ServiceState},
};

/// Most instances one update may touch: an update is applied in one step
/// of the registry's writer, which every other change waits behind.
pub(super) const MAX_TOUCHED: usize = 64;

/// One change of the update section, after the prescan.
#[derive(Clone, Debug)]
pub(super) enum Operation {
    /// Class IN: add the RR (a duplicate is ignored).
    Add(Value),
    /// Class ANY, type ANY: delete every RRset at the name.
    DeleteAll,
    /// Class ANY: delete the RRset of this type.
    DeleteRrset(RecordType),
    /// Class NONE: delete this RR.
    DeleteRr(Value),
}

/// One instance as the update leaves it so far.
#[derive(Debug)]
pub(super) struct InstanceDraft {
    /// The instance as registered, if it is.
    pub existing: Option<Arc<InstanceState>>,
    /// A and AAAA values: exactly one in the end, or the instance goes.
    pub addresses: BTreeSet<IpAddr>,
    /// TXT records, each its strings.
    pub txt: BTreeSet<Vec<Vec<u8>>>,
    /// DHCID RDATA.
    pub dhcid: BTreeSet<Vec<u8>>,
    /// The instance's SRV values (at most one in the end).
    pub srv: BTreeSet<SrvValues>,
    /// Its tags, as registered or changed.
    pub tags: Vec<String>,
    /// SRV values added at a tag's name, which must be the instance's own.
    pub tag_srv: Vec<(DnsLabel, SrvValues)>,
}

impl InstanceDraft {
    fn new() -> Self {
        Self {
            existing: None,
            addresses: BTreeSet::new(),
            txt: BTreeSet::new(),
            dhcid: BTreeSet::new(),
            srv: BTreeSet::new(),
            tags: Vec::new(),
            tag_srv: Vec::new(),
        }
    }

    fn from_existing(existing: &Arc<InstanceState>) -> Self {
        let instance = &existing.instance;
        let strings = view::txt_strings(instance);
        Self {
            existing: Some(existing.clone()),
            addresses: BTreeSet::from([instance.address]),
            txt: if strings.is_empty() {
                BTreeSet::new()
            } else {
                BTreeSet::from([strings])
            },
            dhcid: view::dhcid(instance).into_iter().collect(),
            srv: BTreeSet::from([SrvValues::of(instance)]),
            tags: instance.tags.clone(),
            tag_srv: Vec::new(),
        }
    }

    fn has_tag(&self, tag: &DnsLabel) -> bool {
        self.tags.iter().any(|t| tag_label_is(t, tag))
    }

    fn clear(&mut self) {
        self.addresses.clear();
        self.txt.clear();
        self.dhcid.clear();
        self.srv.clear();
    }
}

/// Whether `tag`'s DNS label is `label` (as the record table compares
/// tags).
fn tag_label_is(tag: &str, label: &DnsLabel) -> bool {
    DnsLabel::from_name(tag, "tag").is_ok_and(|l| l == *label)
}

/// The drafts of one service's instances that the update touches.
#[derive(Debug, Default)]
pub(super) struct ServiceDraft {
    /// The service as registered, if it is.
    pub existing: Option<Arc<ServiceState>>,
    /// By instance label.
    pub instances: BTreeMap<DnsLabel, InstanceDraft>,
}

/// The drafts of every service the update touches.
pub(super) struct Zone<'a> {
    state: &'a RegistryState,
    settings: &'a UpdateSettings,
    pub services: BTreeMap<DnsLabel, ServiceDraft>,
    touched: usize,
}

fn refused(reason: impl Into<String>) -> UpdateRefusal {
    UpdateRefusal::new(ResponseCode::Refused, reason)
}

impl<'a> Zone<'a> {
    pub(super) fn new(state: &'a RegistryState, settings: &'a UpdateSettings) -> Self {
        Self {
            state,
            settings,
            services: BTreeMap::new(),
            touched: 0,
        }
    }

    fn service(&mut self, label: &DnsLabel) -> &mut ServiceDraft {
        let state = self.state;
        self.services
            .entry(label.clone())
            .or_insert_with(|| ServiceDraft {
                existing: state.services.get(label).cloned(),
                instances: BTreeMap::new(),
            })
    }

    /// The draft of instance `label` of `service`: drafted from the
    /// registry if it is registered, created empty if `create`, else
    /// `None`.
    fn instance(
        &mut self,
        service: &DnsLabel,
        label: &DnsLabel,
        create: bool,
    ) -> Result<Option<&mut InstanceDraft>, UpdateRefusal> {
        let draft = self.service(service);
        if !draft.instances.contains_key(label) {
            let existing = draft
                .existing
                .as_deref()
                .and_then(|s| view::find_instance(s, label))
                .map(InstanceDraft::from_existing);
            let Some(new) = existing.or_else(|| create.then(InstanceDraft::new)) else {
                return Ok(None);
            };
            draft.instances.insert(label.clone(), new);
            self.touched += 1;
            if self.touched > MAX_TOUCHED {
                return Err(refused(format!(
                    "an update may touch at most {MAX_TOUCHED} instances"
                )));
            }
        }
        Ok(self
            .services
            .get_mut(service)
            .and_then(|s| s.instances.get_mut(label)))
    }

    /// Drafts every instance of `service` that `pick` picks (by its draft
    /// if it has one, else as registered) and returns their labels.
    fn select(
        &mut self,
        service: &DnsLabel,
        pick: Pick<'_>,
    ) -> Result<Vec<DnsLabel>, UpdateRefusal> {
        let draft = self.service(service);
        let mut picked: Vec<DnsLabel> = draft
            .instances
            .iter()
            .filter(|(_, d)| pick.draft(d))
            .map(|(label, _)| label.clone())
            .collect();
        let registered: Vec<DnsLabel> = draft
            .existing
            .iter()
            .flat_map(|s| s.instances())
            .filter(|i| !draft.instances.contains_key(i.instance.id.label()) && pick.registered(i))
            .map(|i| i.instance.id.label().clone())
            .collect();
        for label in registered {
            self.instance(service, &label, false)?;
            picked.push(label);
        }
        Ok(picked)
    }

    /// Applies every picked instance's draft to `change`.
    fn change_each(
        &mut self,
        service: &DnsLabel,
        pick: Pick<'_>,
        change: impl Fn(&mut InstanceDraft),
    ) -> Result<(), UpdateRefusal> {
        for label in self.select(service, pick)? {
            if let Some(draft) = self.instance(service, &label, false)? {
                change(draft);
            }
        }
        Ok(())
    }

    /// Applies one operation at `owner` (already checked to be one roster
    /// can hold there).
    pub(super) fn apply(
        &mut self,
        owner: &Owner,
        operation: &Operation,
    ) -> Result<(), UpdateRefusal> {
        match owner {
            Owner::Instance { service, label } => self.at_instance(service, label, operation),
            Owner::Service(service) => match operation {
                Operation::Add(Value::Address(address)) => {
                    self.add_service_address(service, *address)
                }
                Operation::DeleteRr(Value::Address(address)) => {
                    let address = *address;
                    self.change_each(service, Pick::Address(address), |d| {
                        d.addresses.remove(&address);
                    })
                }
                Operation::DeleteRrset(RecordType::A) => {
                    self.change_each(service, Pick::Family { v4: true }, |d| {
                        d.addresses.retain(IpAddr::is_ipv6)
                    })
                }
                Operation::DeleteRrset(RecordType::AAAA) => {
                    self.change_each(service, Pick::Family { v4: false }, |d| {
                        d.addresses.retain(IpAddr::is_ipv4)
                    })
                }
                Operation::DeleteAll => self.change_each(service, Pick::All, InstanceDraft::clear),
                _ => self.srv(service, None, operation),
            },
            Owner::Protocol(service) => self.srv(service, None, operation),
            Owner::Tag { service, tag } => self.srv(service, Some(tag), operation),
            Owner::Apex | Owner::Other => Err(refused("roster holds nothing there")),
        }
    }

    fn at_instance(
        &mut self,
        service: &DnsLabel,
        label: &DnsLabel,
        operation: &Operation,
    ) -> Result<(), UpdateRefusal> {
        let create = matches!(operation, Operation::Add(_));
        let Some(draft) = self.instance(service, label, create)? else {
            // Deleting from an instance that is not there deletes nothing.
            return Ok(());
        };
        match operation {
            Operation::Add(value) => match value {
                Value::Address(address) => {
                    draft.addresses.insert(*address);
                }
                Value::Txt(strings) => {
                    check_txt(strings)?;
                    draft.txt.insert(strings.clone());
                }
                Value::Dhcid(bytes) => {
                    draft.dhcid.insert(bytes.clone());
                }
                Value::Srv { .. } | Value::Other(_) => {
                    return Err(refused("only A, AAAA, TXT and DHCID live at an instance"));
                }
            },
            Operation::DeleteRr(value) => match value {
                Value::Address(address) => {
                    draft.addresses.remove(address);
                }
                Value::Txt(strings) => {
                    draft.txt.remove(strings);
                }
                Value::Dhcid(bytes) => {
                    draft.dhcid.remove(bytes);
                }
                Value::Srv { .. } | Value::Other(_) => {}
            },
            Operation::DeleteRrset(RecordType::A) => draft.addresses.retain(IpAddr::is_ipv6),
            Operation::DeleteRrset(RecordType::AAAA) => draft.addresses.retain(IpAddr::is_ipv4),
            Operation::DeleteRrset(RecordType::TXT) => draft.txt.clear(),
            Operation::DeleteRrset(t) if *t == DHCID => draft.dhcid.clear(),
            Operation::DeleteRrset(_) => {}
            // The instance's own name: what is at other names (its SRV
            // records) goes with it if it is left without an address.
            Operation::DeleteAll => {
                draft.addresses.clear();
                draft.txt.clear();
                draft.dhcid.clear();
            }
        }
        Ok(())
    }

    /// An address at `<service>`: an instance of the service with it
    /// already is enough; else one is created with an ID made from the
    /// address, so a re-sent add finds it.
    fn add_service_address(
        &mut self,
        service: &DnsLabel,
        address: IpAddr,
    ) -> Result<(), UpdateRefusal> {
        if !self.select(service, Pick::Address(address))?.is_empty() {
            return Ok(());
        }
        let id = generated_id(service, address);
        let label = DnsLabel::parse_query_label(&id).ok_or_else(|| {
            refused(format!(
                "the ID {id:?} made for {address} in {service} is not a DNS label (too long?): \
                 add the address at an instance name instead"
            ))
        })?;
        if let Some(draft) = self.instance(service, &label, true)? {
            draft.addresses.insert(address);
        }
        Ok(())
    }

    /// SRV operations at `_<service>._tcp`, `_<service>._udp` or
    /// `<service>` (`tag` `None`), or at `_<service>._<tag>`.
    fn srv(
        &mut self,
        service: &DnsLabel,
        tag: Option<&DnsLabel>,
        operation: &Operation,
    ) -> Result<(), UpdateRefusal> {
        match operation {
            Operation::Add(Value::Srv { values, target }) => {
                let values = *values;
                let Some(label) = self.target_label(service, target) else {
                    return Err(refused(format!(
                        "SRV target {target} is not an instance of {service}: \
                         it must be <id>.{service}.{}",
                        view::name_text(&self.settings.domain)
                    )));
                };
                let Some(draft) = self.instance(service, &label, true)? else {
                    return Ok(());
                };
                match tag {
                    None => {
                        draft.srv.insert(values);
                    }
                    Some(tag) => {
                        if !draft.has_tag(tag) {
                            draft.tags.push(tag.as_str().to_owned());
                        }
                        draft.tag_srv.push((tag.clone(), values));
                    }
                }
                Ok(())
            }
            Operation::DeleteRr(Value::Srv { values, target }) => {
                let values = *values;
                let Some(label) = self.target_label(service, target) else {
                    return Ok(());
                };
                let Some(draft) = self.instance(service, &label, false)? else {
                    return Ok(());
                };
                match tag {
                    None => {
                        draft.srv.remove(&values);
                    }
                    Some(tag) => {
                        let listed = draft.srv.contains(&values)
                            || draft.tag_srv.iter().any(|(t, v)| t == tag && *v == values);
                        if draft.has_tag(tag) && listed {
                            remove_tag(draft, tag);
                        }
                    }
                }
                Ok(())
            }
            Operation::DeleteRrset(_) | Operation::DeleteAll => match tag {
                None => self.change_each(service, Pick::All, |d| d.srv.clear()),
                Some(tag) => self.change_each(service, Pick::Tag(tag), |d| remove_tag(d, tag)),
            },
            // Types other than SRV were refused before any was applied;
            // deleting a value roster never holds deletes nothing.
            Operation::Add(_) => Err(refused("only SRV records live at an SRV name")),
            Operation::DeleteRr(_) => Ok(()),
        }
    }

    /// The label of the instance an SRV target names in `service`, if it
    /// names one there.
    fn target_label(&self, service: &DnsLabel, target: &str) -> Option<DnsLabel> {
        let suffix = view::target("", service.as_str(), &self.settings.domain);
        // `suffix` is ".<service>.<domain>." after the empty label.
        let label = target.strip_suffix(&suffix)?;
        DnsLabel::parse_query_label(label)
    }
}

/// Which instances of a service an operation on a service-wide RRset
/// changes: asked of a draft, or of a registered instance without drafting
/// it (a service may have many more instances than an update may touch).
#[derive(Clone, Copy)]
enum Pick<'a> {
    All,
    Address(IpAddr),
    Family { v4: bool },
    Tag(&'a DnsLabel),
}

impl Pick<'_> {
    fn draft(self, draft: &InstanceDraft) -> bool {
        match self {
            Self::All => true,
            Self::Address(address) => draft.addresses.contains(&address),
            Self::Family { v4 } => draft.addresses.iter().any(|a| a.is_ipv4() == v4),
            Self::Tag(tag) => draft.has_tag(tag),
        }
    }

    fn registered(self, instance: &InstanceState) -> bool {
        match self {
            Self::All => true,
            Self::Address(address) => instance.instance.address == address,
            Self::Family { v4 } => instance.instance.address.is_ipv4() == v4,
            Self::Tag(tag) => view::has_tag(instance, tag),
        }
    }
}

fn remove_tag(draft: &mut InstanceDraft, tag: &DnsLabel) {
    draft.tags.retain(|t| !tag_label_is(t, tag));
    draft.tag_srv.retain(|(t, _)| t != tag);
}

/// A TXT record roster can keep: every string `key=value`, the DHCID's key
/// not among them.
fn check_txt(strings: &[Vec<u8>]) -> Result<(), UpdateRefusal> {
    for string in strings {
        let text = String::from_utf8_lossy(string);
        match text.split_once('=') {
            None => {
                return Err(refused(format!(
                    "TXT string {text:?} is not key=value: roster keeps an instance's TXT as metadata"
                )));
            }
            Some((key, _)) if key == DHCID_META_KEY => {
                return Err(refused(format!(
                    "TXT key {DHCID_META_KEY:?} is reserved for the instance's DHCID record"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The ID of an instance created from an address at `<service>`:
/// `<service>-<address>`, dots and colons written as dashes; IPv6 in full
/// (every group, none elided), so two addresses never make one ID.
pub(super) fn generated_id(service: &DnsLabel, address: IpAddr) -> String {
    let address = match address {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join("-"),
    };
    format!("{service}-{address}")
}
