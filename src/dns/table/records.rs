//! One service's records: its servable instances in the compact form the
//! DNS fast path encodes from, the names that exist under it, and the
//! hickory `Record`s the general path builds from them on demand.
//!
//! The records hold no pointers into the registry's state: every instance,
//! servable or not, is a plain [`Member`] with ranges into a few byte
//! blobs. So a change to one instance of a large service copies those
//! arrays (sequential memory, in cache) and reads only the changed
//! instances from the registry ([`ServiceRecords::update`]), instead of
//! following a pointer or two per instance, each a cache miss, and
//! touching a reference count per instance in the build and again in the
//! drop: that was a quarter of a durable write's CPU.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, SRV, TXT},
};

use super::{InlineLabel, TableSettings, endpoint};
use crate::{
    dns::{
        prefetch::{prefetch, prefetch_lines},
        wire::{self, A_RDATA_LEN, AAAA_RDATA_LEN},
    },
    registry::{InstanceDelta, InstanceState, ServiceState},
};

/// One servable instance as the DNS fast path encodes it, packed inline
/// (no pointers to follow) in `ServiceRecords::packed`.
#[derive(Clone, Copy, Debug)]
pub struct PackedEndpoint {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub priority: u16,
    /// Where the label is in `ServiceRecords::labels`: start and length.
    label: (u32, u8),
}

/// What an instance name holds: see [`ServiceRecords::instance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceLookup {
    /// Servable: its records are those of the instance at this position.
    Servable(usize),
    /// Registered but not servable (unhealthy or drained): the name exists
    /// and holds nothing (NODATA).
    NotServable,
    /// No such instance: the name does not exist (NXDOMAIN).
    Unknown,
}

/// One instance of the service, servable or not, as the records keep it:
/// values, and ranges into the records' blobs.
#[derive(Clone, Copy, Debug)]
struct Member {
    address: IpAddr,
    port: u16,
    weight: u16,
    priority: u16,
    servable: bool,
    /// Its label in `labels`: start and length (a label is at most 63
    /// octets).
    label_start: u32,
    label_len: u8,
    /// Its TXT strings in `txt`, each a DNS <character-string> (a length
    /// octet, then the octets): start and length (at most `MAX_META`
    /// strings of 256 octets each).
    txt_start: u32,
    txt_len: u16,
    /// Its tags in `member_tags`: start and count (at most `MAX_TAGS`).
    tags_start: u32,
    tags_len: u8,
}

/// Where the instances of a rebuilt service come from.
enum Source<'a> {
    /// Unchanged since the old records: their members `from..from + len`,
    /// copied as one run (a run's labels, TXT strings and tags are
    /// contiguous in the old records' blobs, which are laid out in member
    /// order).
    Kept { from: usize, len: usize },
    /// Added or changed: read from the registry, with its tag labels.
    Fresh(&'a InstanceState, Vec<String>),
}

impl<'a> Source<'a> {
    fn fresh(state: &'a Arc<InstanceState>) -> Self {
        Self::Fresh(state, endpoint::tag_labels(&state.instance))
    }
}

/// The servable instances of one service, and the names that exist in it.
///
/// Servable instances are numbered by position (an index into `packed`);
/// one shuffle of positions orders the answer and additional sections
/// alike. Positions follow instance ID order, as `members` does.
///
/// `repr(C)`, fields in this order: what the DNS fast path reads of a
/// service (its label, then what it encodes) comes first, in as few cache
/// lines as possible; the rest is for the general path and rebuilds.
#[derive(Debug, Default)]
#[repr(C)]
pub struct ServiceRecords {
    /// The service's label, lower-case: the `ServiceMap` key, inline.
    pub label: InlineLabel,
    /// Set once a published table no longer holds these records (see
    /// `dns::service_cache`): caches must not answer from them.
    retired: AtomicBool,
    /// TTL of every record built from this service.
    pub ttl: u32,
    /// What the DNS fast path reads of each servable instance, by position,
    /// inline: an A, AAAA or SRV answer then reads this block and `labels`,
    /// nothing else.
    pub packed: Box<[PackedEndpoint]>,
    /// Every member's label, concatenated; `PackedEndpoint::label` and
    /// `Member::label_start` index it.
    labels: Box<[u8]>,
    /// Positions of the instances with an IPv4 address (the A answer), and
    /// with IPv6 (AAAA).
    pub v4_positions: Box<[u32]>,
    pub v6_positions: Box<[u32]>,
    /// Exact size of the SRV answer and additional sections as the DNS fast
    /// path encodes them (owner names compressed, SRV targets in full).
    pub srv_fast_len: usize,
    /// The service's name, e.g. `web.service.local.`.
    pub name: Name,
    /// Every instance, servable or not, in ID order.
    members: Box<[Member]>,
    /// Every member's TXT strings, concatenated (see `Member::txt_start`).
    txt: Box<[u8]>,
    /// What the general path looks instances and tags up in. It depends
    /// only on the members' labels, servability, address families and tags,
    /// so an update that changes none of those (a metadata, port or weight
    /// change) shares it with the old records.
    shape: Arc<Shape>,
    /// The `ServiceState::generation` these records were built from: an
    /// update may copy members only from records of the state it diffs.
    generation: u64,
    /// Upper bounds on the encoded size of all A records, all AAAA records,
    /// and all SRV records with their additional records, without name
    /// compression, so that answers that surely fit a datagram skip the
    /// trial encoding (see `dns::fit`).
    pub a_wire_bound: usize,
    pub aaaa_wire_bound: usize,
    pub srv_wire_bound: usize,
}

/// The lookup indexes of a service's records: see [`ServiceRecords::shape`].
#[derive(Debug, Default)]
struct Shape {
    /// The member at each position.
    position_members: Box<[u32]>,
    /// Positions sorted by instance label, for instance-name lookups.
    by_label: Box<[u32]>,
    /// The members that are not servable, sorted by label: their names
    /// exist (NODATA, not NXDOMAIN) but hold nothing.
    down: Box<[u32]>,
    /// Every member's tags as indexes into `tag_names`, concatenated.
    member_tags: Box<[u32]>,
    /// Every tag label an instance (servable or not) carries, sorted: a tag
    /// whose instances are all unhealthy still exists (NODATA).
    tag_names: Box<[Box<str>]>,
    /// The servable positions carrying tag `t` are
    /// `tag_positions[tag_starts[t]..tag_starts[t + 1]]`, in order.
    tag_starts: Box<[u32]>,
    tag_positions: Box<[u32]>,
}

/// How much of the old records an update leaves as it was, by what its
/// fresh instances change of the members they replace. Each level includes
/// the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Sameness {
    /// Members come or go, or move: everything is rebuilt.
    Nothing,
    /// The same labels at the same indexes: `labels` is shared.
    Labels,
    /// Also the same servability, address family and tags for every
    /// member: the shape, the address positions and the wire sizes too.
    Shape,
    /// Also the same address, port, weight and priority: only TXT strings
    /// differ (or nothing), and `packed` is shared as well.
    Packed,
}

impl Sameness {
    /// What `sources`, the instances of an update in ID order, leave as it
    /// was in `old`: a kept run in its old place changes nothing; a fresh
    /// instance is compared with the member it replaces, at the same index.
    fn of(sources: &[Source<'_>], old: &ServiceRecords, include_warning: bool) -> Self {
        let mut same = Self::Packed;
        let mut at = 0;
        for source in sources {
            match *source {
                Source::Kept { from, len } => {
                    if from != at {
                        return Self::Nothing;
                    }
                    at += len;
                }
                Source::Fresh(state, ref tags) => {
                    let instance = &state.instance;
                    let Some(was) = old.members.get(at) else {
                        return Self::Nothing;
                    };
                    if old.member_label(was) != instance.id.label().as_str().as_bytes() {
                        return Self::Nothing;
                    }
                    let old_tags = old.member_tag_indexes(was).iter();
                    let old_tags = old_tags
                        .map(|&tag| old.shape.tag_names.get(tag as usize).map(|name| &**name));
                    let same_shape = was.servable == state.is_servable(include_warning)
                        && was.address.is_ipv4() == instance.address.is_ipv4()
                        && old_tags.eq(tags.iter().map(|tag| Some(&**tag)));
                    let same_endpoint = (was.address, was.port, was.weight, was.priority)
                        == (
                            instance.address,
                            instance.port,
                            instance.weight,
                            instance.priority,
                        );
                    same = match (same_shape, same_endpoint) {
                        (false, _) => same.min(Self::Labels),
                        (true, false) => same.min(Self::Shape),
                        (true, true) => same,
                    };
                    at += 1;
                }
            }
        }
        if at == old.members.len() {
            same
        } else {
            Self::Nothing
        }
    }
}

impl ServiceRecords {
    /// Builds the records of `service`. Cost: O(instances of the service),
    /// reading each of them.
    pub fn build(service: &ServiceState, settings: &TableSettings) -> Self {
        let sources = service.instances().map(Source::fresh);
        Self::assemble(service, sources.collect(), None, settings)
    }

    /// The records of `service`, given `old`, the records of `before`: the
    /// instances that are the same in both (the same `Arc`: the registry
    /// replaces an instance's state whenever it changes) are copied from
    /// `old` in runs, and only the others are read. Cost: O(instances) of
    /// copying plain arrays a run at a time, plus reading the changed
    /// instances. Falls back to [`Self::build`] if `old` was not built
    /// from `before`.
    pub fn update(
        old: &Self,
        before: &ServiceState,
        service: &ServiceState,
        settings: &TableSettings,
    ) -> Self {
        if old.generation != before.generation() || old.members.len() != before.len() {
            return Self::build(service, settings);
        }
        let sources: Vec<Source<'_>> = service
            .delta(before)
            .into_iter()
            .map(|delta| match delta {
                InstanceDelta::Kept { from, len } => Source::Kept { from, len },
                InstanceDelta::Fresh(state) => Source::fresh(state),
            })
            .collect();
        #[cfg(test)]
        tests::KEPT.with(|kept| {
            let copied = sources.iter().map(|source| match source {
                Source::Kept { len, .. } => *len,
                Source::Fresh(..) => 0,
            });
            kept.set(kept.get() + copied.sum::<usize>())
        });
        Self::assemble(service, sources, Some(old), settings)
    }

    /// The records of `service`, whose instances, in ID order, are
    /// `sources` (`Kept` ones from `old`). What the changes leave as it was
    /// ([`Sameness`]) is shared with `old` or copied from it, not derived
    /// again.
    fn assemble(
        service: &ServiceState,
        sources: Vec<Source<'_>>,
        old: Option<&Self>,
        settings: &TableSettings,
    ) -> Self {
        let empty = Self::default();
        let (old, same) = match old {
            Some(old) => (old, Sameness::of(&sources, old, settings.include_warning)),
            None => (&empty, Sameness::Nothing),
        };
        #[cfg(test)]
        tests::SAMENESS.with(|seen| seen.borrow_mut().push(same));
        // Shared blobs keep every member's range in them: a kept run is
        // where it was, a fresh member takes the range of the one it
        // replaces.
        let share_labels = same >= Sameness::Labels;
        let share_shape = same >= Sameness::Shape;
        let (tag_names, old_tag_index) = match share_shape {
            true => (Box::default(), Vec::new()),
            false => merge_tag_names(&sources, old),
        };

        let mut members = Vec::with_capacity(service.len());
        let mut labels = match share_labels {
            true => Vec::new(),
            false => Vec::with_capacity(old.labels.len() + 16),
        };
        let mut txt = Vec::with_capacity(old.txt.len());
        let mut member_tags = match share_shape {
            true => Vec::new(),
            false => Vec::with_capacity(old.shape.member_tags.len() + 4),
        };
        for source in &sources {
            match *source {
                Source::Kept { from, len } => {
                    let run = old.members.get(from..from + len).unwrap_or_default();
                    let Some(spans) = RunSpans::of(run) else {
                        continue;
                    };
                    // A member's new start in each blob is its old one moved
                    // by where the run's part lands.
                    let (from_txt, txt_len) = spans.txt;
                    let txt_shift = (txt.len() as u32).wrapping_sub(from_txt);
                    txt.extend_from_slice(slice(&old.txt, from_txt, txt_len));
                    let mut label_shift = 0;
                    if !share_labels {
                        let (from_label, label_len) = spans.labels;
                        label_shift = (labels.len() as u32).wrapping_sub(from_label);
                        labels.extend_from_slice(slice(&old.labels, from_label, label_len));
                    }
                    let mut tags_shift = 0;
                    if !share_shape {
                        let (from_tags, tags_len) = spans.tags;
                        tags_shift = (member_tags.len() as u32).wrapping_sub(from_tags);
                        let tags = slice(&old.shape.member_tags, from_tags, tags_len);
                        member_tags.extend(tags.iter().map(|&t| old_tag_index[t as usize]));
                    }
                    members.extend(run.iter().map(|was| Member {
                        label_start: was.label_start.wrapping_add(label_shift),
                        txt_start: was.txt_start.wrapping_add(txt_shift),
                        tags_start: was.tags_start.wrapping_add(tags_shift),
                        ..*was
                    }));
                }
                Source::Fresh(state, ref tags) => {
                    let instance = &state.instance;
                    // Sharing a blob, `Sameness` found the member this one
                    // replaces at its index: its range there is this one's.
                    let replaced = old.members.get(members.len());
                    let (label_start, label_len) = match replaced {
                        Some(was) if share_labels => (was.label_start, was.label_len),
                        _ => {
                            let start = labels.len() as u32;
                            labels.extend_from_slice(instance.id.label().as_str().as_bytes());
                            (start, (labels.len() as u32 - start) as u8)
                        }
                    };
                    let (tags_start, tags_len) = match replaced {
                        Some(was) if share_shape => (was.tags_start, was.tags_len),
                        _ => {
                            let start = member_tags.len() as u32;
                            member_tags.extend(tags.iter().filter_map(|tag| {
                                tag_names
                                    .binary_search_by(|name| (**name).cmp(tag.as_str()))
                                    .ok()
                                    .map(|index| index as u32)
                            }));
                            (start, (member_tags.len() as u32 - start) as u8)
                        }
                    };
                    let txt_start = txt.len() as u32;
                    endpoint::push_txt(instance, &mut txt);
                    members.push(Member {
                        address: instance.address,
                        port: instance.port,
                        weight: instance.weight,
                        priority: instance.priority,
                        servable: state.is_servable(settings.include_warning),
                        label_start,
                        label_len,
                        txt_start,
                        txt_len: (txt.len() as u32 - txt_start) as u16,
                        tags_start,
                        tags_len,
                    });
                }
            }
        }
        let label = service.name.label().as_str();
        let mut records = Self {
            // DnsLabel guarantees at most 63 octets.
            label: InlineLabel::new(label.as_bytes()).unwrap_or_default(),
            retired: AtomicBool::new(false),
            name: child(&settings.domain, label),
            ttl: settings.ttl,
            members: members.into_boxed_slice(),
            labels: match share_labels {
                true => old.labels.clone(),
                false => labels.into_boxed_slice(),
            },
            txt: txt.into_boxed_slice(),
            generation: service.generation(),
            ..Self::default()
        };
        if share_shape {
            records.shape = Arc::clone(&old.shape);
            records.packed = match same {
                Sameness::Packed => old.packed.clone(),
                _ => pack(&records.members, &records.shape.position_members),
            };
            records.v4_positions = old.v4_positions.clone();
            records.v6_positions = old.v6_positions.clone();
            records.srv_fast_len = old.srv_fast_len;
            records.a_wire_bound = old.a_wire_bound;
            records.aaaa_wire_bound = old.aaaa_wire_bound;
            records.srv_wire_bound = old.srv_wire_bound;
        } else {
            records.derive(tag_names, member_tags, service.ids_are_labels());
        }
        records
    }

    /// Derives everything answers read from `members`: the servable
    /// positions, the lookup indexes and the wire sizes. Plain passes over
    /// arrays already in memory. `ids_are_labels`: every member's label is
    /// its ID, so members are in label order already.
    fn derive(&mut self, tag_names: Box<[Box<str>]>, member_tags: Vec<u32>, ids_are_labels: bool) {
        // Each array is sized before it is filled: collecting a filter
        // into a boxed slice grows a vector and then shrinks it, a copy.
        let servable = self.members.iter().filter(|m| m.servable).count();
        let mut position_members = Vec::with_capacity(servable);
        let mut down = Vec::with_capacity(self.members.len() - servable);
        for (index, member) in self.members.iter().enumerate() {
            match member.servable {
                true => position_members.push(index as u32),
                false => down.push(index as u32),
            }
        }
        let mut shape = Shape {
            position_members: position_members.into_boxed_slice(),
            member_tags: member_tags.into_boxed_slice(),
            tag_names,
            ..Shape::default()
        };
        self.packed = pack(&self.members, &shape.position_members);
        let v4 = self.packed.iter().filter(|e| e.address.is_ipv4()).count();
        let mut v4_positions = Vec::with_capacity(v4);
        let mut v6_positions = Vec::with_capacity(self.packed.len() - v4);
        for (position, endpoint) in self.packed.iter().enumerate() {
            if endpoint.address.is_ipv4() {
                v4_positions.push(position as u32);
            } else {
                v6_positions.push(position as u32);
            }
        }
        self.v4_positions = v4_positions.into_boxed_slice();
        self.v6_positions = v6_positions.into_boxed_slice();

        // IDs that are their own labels sort as their labels do: then the
        // positions and the down members are already in label order.
        let mut by_label: Vec<u32> = (0..self.packed.len() as u32).collect();
        let position_label = |&position: &u32| self.packed_label(&self.packed[position as usize]);
        let member_label = |&member: &u32| self.member_label(&self.members[member as usize]);
        if !ids_are_labels {
            by_label.sort_unstable_by(|a, b| position_label(a).cmp(position_label(b)));
            down.sort_unstable_by(|a, b| member_label(a).cmp(member_label(b)));
        }
        debug_assert!(by_label.is_sorted_by_key(position_label));
        debug_assert!(down.is_sorted_by_key(member_label));
        shape.by_label = by_label.into_boxed_slice();
        shape.down = down.into_boxed_slice();

        // The positions by tag, in position order: count, then place.
        let member_tags = |member: u32| {
            let member = &self.members[member as usize];
            let (start, len) = (member.tags_start, usize::from(member.tags_len));
            slice(&shape.member_tags, start, len)
        };
        let mut tag_starts = vec![0u32; shape.tag_names.len() + 1];
        for &member in &shape.position_members {
            for &tag in member_tags(member) {
                tag_starts[tag as usize + 1] += 1;
            }
        }
        for tag in 1..tag_starts.len() {
            tag_starts[tag] += tag_starts[tag - 1];
        }
        let mut next = tag_starts.clone();
        let mut tag_positions = vec![0u32; tag_starts.last().copied().unwrap_or(0) as usize];
        for (position, &member) in shape.position_members.iter().enumerate() {
            for &tag in member_tags(member) {
                let slot = &mut next[tag as usize];
                tag_positions[*slot as usize] = position as u32;
                *slot += 1;
            }
        }
        shape.tag_starts = tag_starts.into_boxed_slice();
        shape.tag_positions = tag_positions.into_boxed_slice();
        self.shape = Arc::new(shape);

        // Sizes on the wire, by the formulas the fast path writes with and
        // `fit` bounds with (see `dns::wire`).
        let name_bound = wire::name_bound(&self.name);
        self.a_wire_bound = self.v4_positions.len() * wire::record_bound(name_bound, A_RDATA_LEN);
        self.aaaa_wire_bound =
            self.v6_positions.len() * wire::record_bound(name_bound, AAAA_RDATA_LEN);
        let name_len = wire::name_wire_len(&self.name);
        let (mut srv_wire_bound, mut srv_fast_len) = (0, 0);
        for endpoint in &self.packed {
            let label_len = usize::from(endpoint.label.1);
            srv_wire_bound += wire::srv_pair_bound(name_bound, label_len, endpoint.address);
            srv_fast_len += wire::srv_pair_len(label_len, name_len, endpoint.address);
        }
        self.srv_wire_bound = srv_wire_bound;
        self.srv_fast_len = srv_fast_len;
    }

    fn member_label(&self, member: &Member) -> &[u8] {
        slice(
            &self.labels,
            member.label_start,
            usize::from(member.label_len),
        )
    }

    fn member_txt(&self, member: &Member) -> &[u8] {
        slice(&self.txt, member.txt_start, usize::from(member.txt_len))
    }

    fn member_tag_indexes(&self, member: &Member) -> &[u32] {
        slice(
            &self.shape.member_tags,
            member.tags_start,
            usize::from(member.tags_len),
        )
    }

    /// Marks these records as about to be replaced in the published table:
    /// called by the registry right before it publishes the new table.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Asks the CPU to start fetching what an A, AAAA or SRV answer reads,
    /// without waiting for it (see `FastPath::answer_batch`).
    pub fn prefetch_answer_data(&self) {
        prefetch_lines(self.packed.as_ptr().cast(), size_of_val(&*self.packed));
        prefetch_lines(self.labels.as_ptr(), self.labels.len());
        prefetch(self.v4_positions.as_ptr().cast());
    }

    /// Like [`Self::prefetch_answer_data`], for the fields the fast path
    /// reads first (see the field order).
    pub fn prefetch_header(&self) {
        prefetch_lines((self as *const Self).cast(), 192);
    }

    /// The label of `endpoint`, as the fast path writes it.
    pub fn packed_label(&self, endpoint: &PackedEndpoint) -> &[u8] {
        let (start, len) = endpoint.label;
        slice(&self.labels, start, usize::from(len))
    }

    /// The label of the instance in `position`, as text.
    fn position_label(&self, position: usize) -> &str {
        // Labels are ASCII (DnsLabel's invariant).
        std::str::from_utf8(self.packed_label(&self.packed[position])).unwrap_or_default()
    }

    /// Number of servable instances.
    pub fn servable(&self) -> usize {
        self.packed.len()
    }

    /// Looks up an instance by label.
    pub fn instance(&self, label: &str) -> InstanceLookup {
        let label = label.as_bytes();
        let found = self.shape.by_label.binary_search_by(|&position| {
            self.packed_label(&self.packed[position as usize])
                .cmp(label)
        });
        if let Ok(at) = found {
            return InstanceLookup::Servable(self.shape.by_label[at] as usize);
        }
        let down = self.shape.down.binary_search_by(|&member| {
            self.member_label(&self.members[member as usize]).cmp(label)
        });
        match down {
            Ok(_) => InstanceLookup::NotServable,
            Err(_) => InstanceLookup::Unknown,
        }
    }

    /// Positions of the servable instances carrying `tag`, if any instance
    /// of the service (servable or not) carries it.
    pub fn tag(&self, tag: &str) -> Option<&[u32]> {
        let index = self
            .shape
            .tag_names
            .binary_search_by(|name| (**name).cmp(tag))
            .ok()?;
        let start = self.shape.tag_starts[index];
        let len = self.shape.tag_starts[index + 1] - start;
        Some(slice(&self.shape.tag_positions, start, len as usize))
    }

    /// Every tag label carried by an instance of the service.
    pub fn tag_labels(&self) -> impl Iterator<Item = &str> {
        self.shape.tag_names.iter().map(|tag| &**tag)
    }

    /// The SRV target of the instance in `position`: `<id>.<service>.<domain>.`.
    pub fn target(&self, position: usize) -> Name {
        child(&self.name, self.position_label(position))
    }

    /// The A or AAAA record of the instance in `position`, owned by `owner`.
    pub fn address_record(&self, position: usize, owner: Name) -> Record {
        Record::from_rdata(
            owner,
            self.ttl,
            address_rdata(self.packed[position].address),
        )
    }

    /// The SRV record of the instance in `position`, owned by `owner`.
    pub fn srv_record(&self, position: usize, owner: Name) -> Record {
        let endpoint = &self.packed[position];
        let srv = SRV::new(
            endpoint.priority,
            endpoint.weight,
            endpoint.port,
            self.target(position),
        );
        Record::from_rdata(owner, self.ttl, RData::SRV(srv))
    }

    /// The TXT record (metadata) at the instance name, if it has metadata.
    pub fn txt_record(&self, position: usize) -> Option<Record> {
        let member = &self.members[self.shape.position_members[position] as usize];
        let mut rest = self.member_txt(member);
        if rest.is_empty() {
            return None;
        }
        let mut strings = Vec::new();
        while let Some((&len, tail)) = rest.split_first() {
            let (string, tail) = tail.split_at(usize::from(len).min(tail.len()));
            strings.push(String::from_utf8_lossy(string).into_owned());
            rest = tail;
        }
        Some(Record::from_rdata(
            self.target(position),
            self.ttl,
            RData::TXT(TXT::new(strings)),
        ))
    }
}

/// The tag labels of a rebuilt service, sorted: the old records' tags
/// that a kept member still carries, and the fresh members' tags. Also
/// where each old tag index went (`u32::MAX` for one no longer carried).
fn merge_tag_names(sources: &[Source<'_>], old: &ServiceRecords) -> (Box<[Box<str>]>, Vec<u32>) {
    let mut kept = vec![false; old.shape.tag_names.len()];
    let mut fresh: Vec<&str> = Vec::new();
    for source in sources {
        match *source {
            Source::Kept { from, len } => {
                let run = old.members.get(from..from + len).unwrap_or_default();
                if let Some(RunSpans {
                    tags: (start, len), ..
                }) = RunSpans::of(run)
                {
                    for &tag in slice(&old.shape.member_tags, start, len) {
                        kept[tag as usize] = true;
                    }
                }
            }
            Source::Fresh(_, ref tags) => fresh.extend(tags.iter().map(String::as_str)),
        }
    }
    fresh.sort_unstable();
    fresh.dedup();
    let mut old_index = vec![u32::MAX; old.shape.tag_names.len()];
    let mut names: Vec<Box<str>> = Vec::with_capacity(old.shape.tag_names.len() + fresh.len());
    let mut olds = (0..old.shape.tag_names.len())
        .filter(|&tag| kept[tag])
        .peekable();
    let mut fresh = fresh.into_iter().peekable();
    loop {
        let next_old = olds.peek().map(|&tag| &*old.shape.tag_names[tag]);
        let take_old = match (next_old, fresh.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(&b)) => {
                let order = a.cmp(b);
                if order.is_eq() {
                    // Kept and fresh members carry it: one name.
                    fresh.next();
                }
                order.is_le()
            }
        };
        if take_old {
            if let Some(tag) = olds.next() {
                old_index[tag] = names.len() as u32;
                names.push(old.shape.tag_names[tag].clone());
            }
        } else if let Some(tag) = fresh.next() {
            names.push(Box::from(tag));
        }
    }
    (names.into_boxed_slice(), old_index)
}

/// The endpoint of each member in `position_members`, in order.
fn pack(members: &[Member], position_members: &[u32]) -> Box<[PackedEndpoint]> {
    // Positions index `members` (see `derive`): none is left out.
    let servable = position_members
        .iter()
        .filter_map(|&m| members.get(m as usize));
    servable
        .map(|member| PackedEndpoint {
            address: member.address,
            port: member.port,
            weight: member.weight,
            priority: member.priority,
            label: (member.label_start, member.label_len),
        })
        .collect()
}

/// The parts of the blobs that consecutive members own, each as a start
/// and a length: from the first member's start to the last member's end
/// (the blobs are laid out in member order).
struct RunSpans {
    labels: (u32, usize),
    txt: (u32, usize),
    tags: (u32, usize),
}

impl RunSpans {
    fn of(run: &[Member]) -> Option<Self> {
        let (first, last) = (run.first()?, run.last()?);
        let span = |first_start: u32, last_start: u32, last_len: usize| {
            let end = last_start as usize + last_len;
            (first_start, end.saturating_sub(first_start as usize))
        };
        Some(Self {
            labels: span(
                first.label_start,
                last.label_start,
                usize::from(last.label_len),
            ),
            txt: span(first.txt_start, last.txt_start, usize::from(last.txt_len)),
            tags: span(
                first.tags_start,
                last.tags_start,
                usize::from(last.tags_len),
            ),
        })
    }
}

/// `len` items of `items` from `start`; empty if out of range (never, for
/// ranges the records made themselves).
fn slice<T>(items: &[T], start: u32, len: usize) -> &[T] {
    let start = start as usize;
    items.get(start..start + len).unwrap_or_default()
}

pub(super) fn address_rdata(address: IpAddr) -> RData {
    match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `label.parent`; labels here are validated DNS labels, so this cannot fail
/// unless the whole name exceeds 255 octets, which the config check rules
/// out by bounding the domain's length.
pub(super) fn child(parent: &Name, label: &str) -> Name {
    parent
        .prepend_label(label)
        .unwrap_or_else(|_| parent.clone())
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::{Cell, RefCell};

    use super::Sameness;

    thread_local! {
        /// How many members `ServiceRecords::update` has copied on this
        /// thread, so that a test can tell it did not fall back to a build.
        pub(in crate::dns::table) static KEPT: Cell<usize> = const { Cell::new(0) };
        /// What each `ServiceRecords::assemble` on this thread found left
        /// as it was, so that a test can tell it shared.
        pub(in crate::dns::table) static SAMENESS: RefCell<Vec<Sameness>> =
            const { RefCell::new(Vec::new()) };
    }
}
