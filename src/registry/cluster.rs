//! The registry's writer in cluster mode, where etcd is the store and
//! several nodes write to it.
//!
//! The state is never changed by a command directly: it follows etcd's
//! change feed (`cluster::feed`), so every node applies every change, its
//! own and the others', in etcd's order, and the index is etcd's revision.
//! A command is applied to a copy of the state only to validate it and to
//! find what to write; the writes go to etcd as one transaction that
//! compares every key the command read (the instance keys by revision, the
//! DNS labels by owner), so the cluster-wide rules (an ID is unique, a label
//! has one service, an edit does not lose a concurrent one) hold however
//! many nodes write at once. A transaction that lost such a race is tried
//! again, alone, once the feed has caught up with what beat it. A committed
//! write is acknowledged once the feed has applied its revision here, so the
//! node that acknowledged it shows it in its very next answer.
//!
//! Must not: publish anything the feed did not deliver; wait on etcd
//! without a bound.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    time::Duration,
};

use etcd_client::{Compare, CompareOp, DeleteOptions, KeyValue, Txn, TxnOp};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{error, info, warn};

use super::{
    Envelope, RegistryError, RegistryEvent, RegistryState, Shared, StoreError, StoredInstance,
    TableSettings, build_table,
    commands::{self, Command, Effects, Outcome},
    publish, report,
};
use crate::{
    cluster::{
        Cluster,
        etcd::TxnOutcome,
        feed::{Change, FeedItem},
        keys::{HealthRecord, Key, MemberRecord},
        members::Members,
    },
    metrics::{Metrics, WRITE_APPLIED, WRITE_FAILED, WRITE_REFUSED},
};

/// Most commands taken from the queue at a time.
const MAX_TXN_COMMANDS: usize = 64;
/// Most operations (or compares) planned for one transaction: etcd refuses
/// more than 128 (`--max-txn-ops`); see [`operations_of`].
const MAX_TXN_OPERATIONS: usize = 100;
/// How many times a command is tried again after losing a race before it
/// fails as contended: each lost race means another write succeeded.
const MAX_ATTEMPTS: u32 = 16;
/// How long a committed write waits for the feed to show it here before it
/// is acknowledged anyway (it is committed; only read-your-writes on this
/// node is late, and only while etcd's watch is failing).
const FEED_WAIT: Duration = Duration::from_secs(5);
/// How often a writer that cannot take new commands checks for shutdown.
const STOP_CHECK: Duration = Duration::from_millis(250);
/// Instances per transaction when an import is written in parts.
const IMPORT_CHUNK: usize = 40;

/// A command accepted by validation, waiting for its transaction.
struct Pending {
    reply: Option<oneshot::Sender<Result<Outcome, RegistryError>>>,
    outcome: Outcome,
    /// The command, kept to try it again after a lost race.
    command: Command,
    attempts: u32,
    /// For a checker's own report: which check, so that it hears if the
    /// write failed.
    check: Option<(String, Option<String>)>,
    /// For a part of a large import: the import it belongs to, which
    /// answers its caller once every part has.
    part_of: Option<Arc<ImportJob>>,
}

/// A large import written in parts (see `ClusterWriter::import_in_parts`).
struct ImportJob {
    count: usize,
    state: std::sync::Mutex<ImportState>,
}

struct ImportState {
    reply: Option<oneshot::Sender<Result<Outcome, RegistryError>>>,
    /// Parts not yet written and shown here.
    remaining: usize,
}

impl ImportJob {
    /// Whether a part before this one failed, so the rest are not written.
    fn failed(&self) -> bool {
        self.state.lock().map_or(true, |s| s.reply.is_none())
    }

    /// One part's end: the first failure answers the caller with it; the
    /// last success answers with the whole import's count.
    fn part_done(&self, outcome: Result<Outcome, RegistryError>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let answer = match outcome {
            Err(error) => Some(Err(error)),
            Ok(_) => {
                state.remaining = state.remaining.saturating_sub(1);
                (state.remaining == 0).then_some(Ok(Outcome::Imported(self.count)))
            }
        };
        if let Some(answer) = answer
            && let Some(reply) = state.reply.take()
        {
            let _ = reply.send(answer);
        }
    }
}

/// Writes committed at `revision`, waiting for the feed to apply it.
struct Parked {
    revision: i64,
    deadline: Instant,
    pending: Vec<Pending>,
}

type TxnFuture = Pin<Box<dyn Future<Output = Result<TxnOutcome, StoreError>> + Send>>;

pub(super) struct ClusterWriter {
    shared: Weak<Shared>,
    cluster: Cluster,
    settings: TableSettings,
    events: mpsc::UnboundedSender<RegistryEvent>,
    index: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    members: watch::Sender<Members>,
    /// The mod revision of every instance key, as the feed last showed it.
    revisions: HashMap<String, i64>,
    /// Every health record the feed showed, by (instance, check).
    health: HashMap<(String, String), HealthRecord>,
    /// The last revision the feed delivered and the state holds.
    applied: i64,
    /// Committed writes, in revision order.
    waiting: VecDeque<Parked>,
    /// No transaction starts before the feed reaches this revision: the
    /// one the last transaction committed at, or lost its race at.
    catch_up_to: i64,
    /// Commands to try again, one per transaction, before new ones.
    retry: VecDeque<Pending>,
    /// Since when the writer waits for the feed to reach `catch_up_to`.
    catching_up_since: Option<Instant>,
    /// Commands taken from the queue and not yet in a transaction.
    backlog: VecDeque<Pending>,
}

/// What the cluster writer is started with.
pub(super) struct Wiring {
    pub shared: Weak<Shared>,
    pub cluster: Cluster,
    pub settings: TableSettings,
    pub events: mpsc::UnboundedSender<RegistryEvent>,
    pub index: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    pub members: watch::Sender<Members>,
}

impl ClusterWriter {
    pub(super) fn new(wiring: Wiring) -> Self {
        let Wiring {
            shared,
            cluster,
            settings,
            events,
            index,
            metrics,
            members,
        } = wiring;
        Self {
            shared,
            cluster,
            settings,
            events,
            index,
            metrics,
            members,
            revisions: HashMap::new(),
            health: HashMap::new(),
            applied: 0,
            waiting: VecDeque::new(),
            catch_up_to: 0,
            retry: VecDeque::new(),
            backlog: VecDeque::new(),
            catching_up_since: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut queue: mpsc::Receiver<Envelope>,
        mut feed: mpsc::Receiver<FeedItem>,
    ) {
        let mut in_flight: Option<(TxnFuture, Vec<Pending>)> = None;
        let mut batch = Vec::with_capacity(MAX_TXN_COMMANDS);
        loop {
            // Ready for a transaction; past this `if`, also out of commands
            // already taken from the queue.
            let ready = in_flight.is_none() && self.applied >= self.catch_up_to;
            if ready && !(self.retry.is_empty() && self.backlog.is_empty()) {
                let Some(shared) = self.shared.upgrade() else {
                    break;
                };
                let batch = self.next_batch();
                in_flight = self.prepare(&shared, batch);
                continue;
            }
            // While no new command can start, look now and then whether
            // roster is stopping (the queue cannot say: it is not polled).
            let deadline = self
                .waiting
                .front()
                .map(|p| p.deadline)
                .or_else(|| (!ready).then(|| Instant::now() + STOP_CHECK));
            // No strong handle is held while waiting: the queue closes, and
            // the writer ends, when the last `Registry` handle is dropped.
            tokio::select! {
                biased;
                item = feed.recv() => {
                    let (Some(item), Some(shared)) = (item, self.shared.upgrade()) else {
                        break;
                    };
                    self.on_feed(&shared, item);
                }
                done = async { in_flight.as_mut().expect("guarded").0.as_mut().await }, if in_flight.is_some() => {
                    let (_, pending) = in_flight.take().expect("guarded");
                    self.on_txn_done(done, pending);
                }
                received = queue.recv_many(&mut batch, MAX_TXN_COMMANDS), if ready => {
                    if received == 0 {
                        break;
                    }
                    self.backlog.extend(batch.drain(..).map(Pending::new));
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let Some(shared) = self.shared.upgrade() else {
                        break;
                    };
                    self.release_late(&shared);
                    if self.applied < self.catch_up_to && self.catching_up_since.is_some_and(|since| since.elapsed() > FEED_WAIT) {
                        // The feed is not delivering what etcd committed;
                        // plan on what it has rather than stall every write.
                        warn!(applied = self.applied, awaited = self.catch_up_to, "the etcd feed is behind; writing without waiting for it");
                        self.catch_up_to = self.applied;
                    }
                }
            }
        }
    }

    /// The commands of the next transaction: one command to try again
    /// after a lost race, alone; else queued commands while their
    /// estimated operations fit in one etcd transaction.
    fn next_batch(&mut self) -> Vec<Pending> {
        if let Some(pending) = self.retry.pop_front() {
            return vec![pending];
        }
        let mut batch = Vec::new();
        let mut operations = 0;
        while let Some(next) = self.backlog.front() {
            let weight = operations_of(&next.command);
            if !batch.is_empty() && operations + weight > MAX_TXN_OPERATIONS {
                break;
            }
            operations += weight;
            batch.extend(self.backlog.pop_front());
        }
        batch
    }

    /// Validates each command against a copy of the state and starts one
    /// transaction for those that pass. Commands that change nothing are
    /// answered at once; refused ones get their error.
    fn prepare(
        &mut self,
        shared: &Shared,
        batch: Vec<Pending>,
    ) -> Option<(TxnFuture, Vec<Pending>)> {
        let published = shared.state.load_full();
        let mut state = (*published).clone();
        let mut effects = Effects::default();
        let mut accepted = Vec::with_capacity(batch.len());
        for mut pending in batch {
            if let Command::Import { instances } = &pending.command
                && instances.len() > IMPORT_CHUNK
            {
                // Too large for one transaction: validated whole here, then
                // written in parts (see `import_in_parts`).
                self.import_in_parts(shared, pending);
                continue;
            }
            if pending.part_of.as_ref().is_some_and(|job| job.failed()) {
                continue;
            }
            let marks = effects.marks();
            match commands::apply(&mut state, pending.command.clone(), &mut effects) {
                Ok(outcome) => {
                    pending.outcome = outcome;
                    accepted.push(pending);
                }
                Err(error) => {
                    effects.truncate(marks);
                    self.count_writes(WRITE_REFUSED, 1);
                    pending.answer(Err(error));
                }
            }
        }
        if accepted.is_empty() {
            return None;
        }
        let Some(txn) = self.transaction(&published, &state, &effects) else {
            // Nothing to write (a re-registration of what is there).
            self.count_writes(WRITE_APPLIED, accepted.len());
            for pending in accepted {
                let outcome = pending_outcome(&published, &pending.outcome);
                pending.answer(Ok(outcome));
            }
            return None;
        };
        let etcd = self.cluster.etcd.clone();
        let metrics = self.metrics.clone();
        let future: TxnFuture = Box::pin(async move {
            // The commit latency in cluster mode: one etcd transaction,
            // failed ones included.
            let started = std::time::Instant::now();
            let done = etcd.txn(txn).await;
            metrics.registry.commit_duration.record(started.elapsed());
            done
        });
        Some((future, accepted))
    }

    /// An import larger than one transaction: validated whole against the
    /// state, so bad input writes nothing, then queued as parts of
    /// [`IMPORT_CHUNK`] instances, each its own transaction; the caller is
    /// answered once every part is written and shown here (read-your-writes
    /// holds for the whole import). A part that fails (etcd went away)
    /// fails the import, with the parts before it written, and the rest are
    /// dropped.
    fn import_in_parts(&mut self, shared: &Shared, mut pending: Pending) {
        let Command::Import { instances } = &pending.command else {
            return;
        };
        let mut state = (*shared.state.load_full()).clone();
        let checked = commands::apply(
            &mut state,
            Command::Import {
                instances: instances.clone(),
            },
            &mut Effects::default(),
        );
        let count = match checked {
            Ok(Outcome::Imported(count)) => count,
            Ok(_) => instances.len(),
            Err(error) => {
                pending.answer(Err(error));
                return;
            }
        };
        let parts: Vec<Vec<StoredInstance>> = instances
            .chunks(IMPORT_CHUNK)
            .map(<[StoredInstance]>::to_vec)
            .collect();
        let job = Arc::new(ImportJob {
            count,
            state: std::sync::Mutex::new(ImportState {
                reply: pending.reply.take(),
                remaining: parts.len(),
            }),
        });
        for part in parts {
            self.retry.push_back(Pending {
                reply: None,
                outcome: Outcome::Imported(0),
                command: Command::Import { instances: part },
                attempts: 0,
                check: None,
                part_of: Some(job.clone()),
            });
        }
    }

    /// The transaction that writes what `effects` changed between
    /// `published` and `state`, guarded by a compare on everything the
    /// change depended on; `None` when there is nothing to write.
    fn transaction(
        &self,
        published: &RegistryState,
        state: &RegistryState,
        effects: &Effects,
    ) -> Option<Txn> {
        let keys = &self.cluster.keys;
        let mut compares: BTreeMap<String, Compare> = BTreeMap::new();
        let mut ops = Vec::new();
        let guard = |compares: &mut BTreeMap<String, Compare>, id: &str| {
            let key = keys.instance(id);
            let known = self.revisions.get(id).copied().unwrap_or(0);
            compares
                .entry(key.clone())
                .or_insert_with(|| Compare::mod_revision(key, CompareOp::Equal, known));
        };
        // Each instance written once, as the batch left it: etcd refuses a
        // transaction that names a key twice.
        let mut written = BTreeSet::new();
        let mut deleted = BTreeSet::new();
        for mutation in &effects.mutations {
            let id = match mutation {
                super::Mutation::Put(stored) => stored.id.as_str(),
                super::Mutation::Delete { id } => id.as_str(),
            };
            if !written.insert(id.to_owned()) {
                continue;
            }
            guard(&mut compares, id);
            match state.instance(id) {
                Some(current) => {
                    let stored = StoredInstance::new(
                        &current.instance,
                        current.maintenance.clone(),
                        current.create_index,
                    );
                    let value = serde_json::to_vec(&stored).unwrap_or_default();
                    ops.push(TxnOp::put(keys.instance(id), value, None));
                    // A check the instance no longer has loses its record,
                    // or a check later added under its ID would inherit it.
                    if let Some(previous) = published.instance(id) {
                        for check in &previous.instance.checks {
                            if current.check(&check.id).is_none() {
                                ops.push(TxnOp::delete(keys.health(id, &check.id), None));
                            }
                        }
                    }
                }
                None => {
                    ops.push(TxnOp::delete(keys.instance(id), None));
                    ops.push(TxnOp::delete(
                        keys.health_of(id),
                        Some(DeleteOptions::new().with_prefix()),
                    ));
                    deleted.insert(id.to_owned());
                }
            }
        }
        let mut health: BTreeMap<(String, String), HealthRecord> = BTreeMap::new();
        for write in &effects.health {
            // Only checks the instance still has once the batch is done
            // (a record deleted above must not be written again).
            let current = state.instance(&write.id);
            if deleted.contains(&write.id) || current.and_then(|i| i.check(&write.check)).is_none()
            {
                continue;
            }
            guard(&mut compares, &write.id);
            let record = HealthRecord {
                id: write.id.clone(),
                check: write.check.clone(),
                status: write.status,
                output: write.output.clone(),
                heartbeat: write.heartbeat,
            };
            health.insert((write.id.clone(), write.check.clone()), record);
        }
        for ((id, check), record) in health {
            let value = serde_json::to_vec(&record).unwrap_or_default();
            ops.push(TxnOp::put(keys.health(&id, &check), value, None));
        }
        if ops.is_empty() {
            return None;
        }
        // The DNS labels: a service's label key exists exactly while it has
        // instances, holding its name, so two nodes cannot give one label
        // to two services, nor one empty a service the other adds to.
        for label in &effects.touched {
            let key = keys.label(label.as_str());
            let before = published.services.get(label).map(|s| s.name.as_str());
            let after = state.services.get(label).map(|s| s.name.as_str());
            match (before, after) {
                (None, None) => {}
                (None, Some(name)) => {
                    compares.insert(
                        key.clone(),
                        Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    );
                    ops.push(TxnOp::put(key, name, None));
                }
                (Some(owner), after) => {
                    compares.insert(
                        key.clone(),
                        Compare::value(key.clone(), CompareOp::Equal, owner),
                    );
                    match after {
                        Some(name) if name == owner => {}
                        Some(name) => ops.push(TxnOp::put(key, name, None)),
                        None => ops.push(TxnOp::delete(key, None)),
                    }
                }
            }
        }
        Some(
            Txn::new()
                .when(compares.into_values().collect::<Vec<_>>())
                .and_then(ops),
        )
    }

    fn on_txn_done(&mut self, done: Result<TxnOutcome, StoreError>, pending: Vec<Pending>) {
        match done {
            Ok(TxnOutcome::Committed(revision)) => {
                self.count_writes(WRITE_APPLIED, pending.len());
                // The next transaction is planned on a state that holds
                // this one, or it would conflict with its own writes.
                self.await_feed(revision);
                self.waiting.push_back(Parked {
                    revision,
                    deadline: Instant::now() + FEED_WAIT,
                    pending,
                });
                if let Some(shared) = self.shared.upgrade() {
                    self.release(&shared);
                }
            }
            Ok(TxnOutcome::Conflict(revision)) => {
                // Someone else changed what this read: once the feed shows
                // it, each command is tried again on its own, so one that
                // now fails validation takes no other down with it.
                self.await_feed(revision);
                for mut pending in pending {
                    pending.attempts += 1;
                    if pending.attempts >= MAX_ATTEMPTS {
                        self.count_writes(WRITE_FAILED, 1);
                        let id = pending.command.instance_id().unwrap_or_default();
                        pending.answer(Err(RegistryError::Contended { id }));
                    } else {
                        self.retry.push_back(pending);
                    }
                }
            }
            Err(failure) => {
                error!(message = %failure, "etcd transaction failed; the batch is rejected");
                self.count_writes(WRITE_FAILED, pending.len());
                let failure = Arc::new(failure);
                for pending in pending {
                    if let Some((id, check_id)) = &pending.check {
                        let _ = self.events.send(RegistryEvent::NotApplied {
                            id: id.clone(),
                            check_id: check_id.clone(),
                        });
                    }
                    pending.answer(Err(RegistryError::Store(failure.clone())));
                }
            }
        }
    }

    /// Counts `n` commands as `result` (an index in
    /// `metrics::WRITE_RESULTS`) for `/metrics`.
    fn count_writes(&self, result: usize, n: usize) {
        self.metrics.registry.writes[result]
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds new transactions until the feed has applied `revision`.
    fn await_feed(&mut self, revision: i64) {
        if revision > self.catch_up_to {
            self.catch_up_to = revision;
            self.catching_up_since = Some(Instant::now());
        }
    }

    /// Answers every committed write whose revision the feed has applied.
    fn release(&mut self, shared: &Shared) {
        while self
            .waiting
            .front()
            .is_some_and(|parked| parked.revision <= self.applied)
        {
            let Some(parked) = self.waiting.pop_front() else {
                break;
            };
            let state = shared.state.load_full();
            for pending in parked.pending {
                let outcome = pending_outcome(&state, &pending.outcome);
                pending.answer(Ok(outcome));
            }
        }
    }

    /// Answers committed writes the feed has not shown within
    /// [`FEED_WAIT`]: they are committed, so they succeed, late.
    fn release_late(&mut self, shared: &Shared) {
        let now = Instant::now();
        while self.waiting.front().is_some_and(|p| p.deadline <= now) {
            let Some(parked) = self.waiting.pop_front() else {
                break;
            };
            warn!(
                revision = parked.revision,
                applied = self.applied,
                "a committed write is acknowledged before this node's feed showed it"
            );
            let state = shared.state.load_full();
            for pending in parked.pending {
                let outcome = pending_outcome(&state, &pending.outcome);
                pending.answer(Ok(outcome));
            }
        }
    }

    fn on_feed(&mut self, shared: &Shared, item: FeedItem) {
        match item {
            FeedItem::Changes { changes, revision } => {
                let mut state = (*shared.state.load_full()).clone();
                let mut effects = Effects::default();
                for change in changes {
                    self.apply_change(&mut state, change, &mut effects);
                }
                self.applied = self.applied.max(revision);
                state.index = state.index.max(revision_index(revision));
                let table = build_table(shared, &state, &effects.touched, &self.settings);
                publish(shared, state, &effects.touched, table, &self.index);
                report(effects, &self.metrics, &self.events);
                self.release(shared);
            }
            FeedItem::Reset { kvs, revision } => {
                self.reset(shared, kvs, revision);
                self.release(shared);
            }
            FeedItem::Live(live) => {
                self.metrics
                    .cluster_stale
                    .store(!live, std::sync::atomic::Ordering::Relaxed);
                if live {
                    info!("following etcd again");
                }
            }
        }
    }

    /// Replaces the whole state with a listing of etcd (at start-up, and
    /// when the feed could not resume), and publishes it.
    pub(super) fn reset(&mut self, shared: &Shared, kvs: Vec<KeyValue>, revision: i64) {
        let before = shared.state.load_full();
        self.revisions.clear();
        self.health.clear();
        let mut members = BTreeMap::new();
        // Health first, so each instance takes its recorded statuses.
        let (health, rest): (Vec<_>, Vec<_>) = kvs.into_iter().partition(|kv| {
            matches!(
                self.cluster.keys.parse(kv.key_str().unwrap_or_default()),
                Key::Health { .. }
            )
        });
        let mut state = RegistryState::default();
        let mut effects = Effects::default();
        for kv in health.into_iter().chain(rest) {
            if let Key::Member(node) = self.cluster.keys.parse(kv.key_str().unwrap_or_default()) {
                if let Ok(record) = serde_json::from_slice::<MemberRecord>(kv.value()) {
                    members.insert(node.to_owned(), record);
                }
                continue;
            }
            self.apply_change(&mut state, Change { kv, deleted: false }, &mut effects);
        }
        self.members.send_replace(Arc::new(members));
        // Instances that are gone stop being checked; every service that
        // was or is there gets its records rebuilt.
        for id in before.ids.keys() {
            if state.instance(id).is_none() {
                effects
                    .events
                    .push(RegistryEvent::Removed { id: id.to_string() });
            }
        }
        effects.touched.extend(before.services.keys().cloned());
        self.applied = revision;
        state.index = revision_index(revision).max(before.index);
        // Deletions compacted away are not in the listing: without this, a
        // service that lost its newest instance would answer a lower index.
        state.restart_service_indexes();
        let table = build_table(shared, &state, &effects.touched, &self.settings);
        publish(shared, state, &effects.touched, table, &self.index);
        report(effects, &self.metrics, &self.events);
    }

    fn apply_change(&mut self, state: &mut RegistryState, change: Change, effects: &mut Effects) {
        let Change { kv, deleted } = change;
        let revision = revision_index(kv.mod_revision());
        let Ok(key) = kv.key_str() else {
            return;
        };
        match self.cluster.keys.parse(key) {
            Key::Instance(id) if deleted => {
                self.revisions.remove(id);
                commands::remove_from_feed(state, id, revision, effects);
            }
            Key::Instance(id) => {
                let stored = match serde_json::from_slice::<StoredInstance>(kv.value()) {
                    Ok(stored) if stored.id == id => stored,
                    Ok(stored) => {
                        error!(key, id = %stored.id, "an etcd instance key holds another ID; ignored");
                        return;
                    }
                    Err(e) => {
                        error!(key, error = %e, "an etcd instance key does not decode; ignored");
                        return;
                    }
                };
                self.revisions.insert(id.to_owned(), kv.mod_revision());
                let health = &self.health;
                let recorded = |check: &str| {
                    health
                        .get(&(id.to_owned(), check.to_owned()))
                        .map(|r| (r.status, r.output.clone()))
                };
                let created = revision_index(kv.create_revision());
                if let Err(e) =
                    commands::put_from_feed(state, stored, revision, created, recorded, effects)
                {
                    error!(key, error = %e, "an instance in etcd is not served");
                }
            }
            Key::Health { id, check } if deleted => {
                self.health.remove(&(id, check));
            }
            Key::Health { id, check } => {
                let record = match serde_json::from_slice::<HealthRecord>(kv.value()) {
                    Ok(record) => record,
                    Err(e) => {
                        error!(key, error = %e, "an etcd health key does not decode; ignored");
                        return;
                    }
                };
                commands::set_check_from_feed(
                    state,
                    &id,
                    &check,
                    record.status,
                    record.output.clone(),
                    revision,
                    effects,
                );
                if record.heartbeat {
                    effects.events.push(RegistryEvent::Heartbeat {
                        id: id.clone(),
                        check_id: check.clone(),
                        status: record.status,
                    });
                }
                self.health.insert((id, check), record);
            }
            Key::Member(node) => {
                let node = node.to_owned();
                self.members.send_modify(|members| {
                    let members = Arc::make_mut(members);
                    if deleted {
                        members.remove(&node);
                    } else if let Ok(record) = serde_json::from_slice::<MemberRecord>(kv.value()) {
                        members.insert(node, record);
                    }
                });
                state.index = state.index.max(revision);
            }
            Key::Label(_) | Key::Other => {
                state.index = state.index.max(revision);
            }
        }
    }
}

impl Pending {
    fn new(envelope: Envelope) -> Self {
        let check = match (&envelope.reply, &envelope.command) {
            (None, Command::CheckResult { id, check_id, .. }) => {
                Some((id.as_str().to_owned(), check_id.clone()))
            }
            (None, Command::Deregister { id, .. }) => Some((id.as_str().to_owned(), None)),
            _ => None,
        };
        Self {
            reply: envelope.reply,
            outcome: Outcome::Removed,
            command: envelope.command,
            attempts: 0,
            check,
            part_of: None,
        }
    }

    fn answer(self, outcome: Result<Outcome, RegistryError>) {
        if let Some(job) = self.part_of {
            job.part_done(outcome);
        } else if let Some(reply) = self.reply {
            let _ = reply.send(outcome);
        }
    }
}

/// The outcome to answer with: the instance as the published state holds
/// it (with etcd's revisions as its indexes), not the copy validation made.
fn pending_outcome(state: &RegistryState, outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Instance(local) => match state.instance(local.instance.id.as_str()) {
            Some(published) => Outcome::Instance(published.clone()),
            None => Outcome::Instance(local.clone()),
        },
        Outcome::Removed => Outcome::Removed,
        Outcome::Imported(count) => Outcome::Imported(*count),
        Outcome::Transacted(count) => Outcome::Transacted(*count),
    }
}

/// At most how many operations or compares a command adds to a
/// transaction: its instance and label keys, and one per check report.
fn operations_of(command: &Command) -> usize {
    match command {
        Command::Register { instance, .. } | Command::Edit { instance, .. } => {
            // A move touches two services' labels.
            4 + instance.checks.len()
        }
        Command::Deregister { .. } | Command::Maintenance { .. } => 4,
        Command::CheckResult { .. } => 2 + crate::model::MAX_CHECKS,
        Command::Import { instances } => 2 * instances.len() + 2,
        // Unknown until it runs: a transaction goes alone.
        Command::Transaction(_) => MAX_TXN_OPERATIONS,
    }
}

/// etcd's revisions start at 1 and only grow; the index is the revision.
fn revision_index(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}
