//! The registry: the single writer of roster's state.
//!
//! Every front door sends [`Command`]s to one writer (a thread of its own on
//! the embedded store, a task on a cluster). The writer drains
//! whatever commands are queued, applies them to a copy of the state, writes
//! the durable ones to the store in one commit (group commit: one fsync for
//! the whole batch), then publishes the new state and record table, and only
//! then answers each caller. So an acknowledged change is durable, and the
//! very next DNS query sees it (read-your-writes).
//!
//! Owns: the state, the record table, the index. Must not: do network I/O or
//! block the DNS path (readers only ever load an `Arc`).

mod cluster;
mod commands;
mod commit_log;
pub mod embedded;
#[cfg(test)]
pub(crate) mod failing_store;
mod instances;
pub mod state;
pub mod store;
#[cfg(test)]
mod store_conformance;
mod watchers;

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{
    sync::{Notify, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use crate::{
    metrics::{Metrics, WRITE_APPLIED, WRITE_FAILED, WRITE_REFUSED},
    model::{DnsLabel, Instance, ValidationError},
};

pub use crate::dns::table::{RecordTable, ServiceRecords, TableSettings};
pub use commands::{
    Change, Command, InOtherService, Outcome, Reporter, Transaction, TransactionRefused,
};
pub use embedded::EmbeddedStore;
pub use instances::InstanceDelta;
pub use state::{CheckState, InstanceState, RegistryState, ServiceState};
pub use store::{
    BackendError, Loaded, MemoryStore, Mutation, OpenProblem, Store, StoreError, StoreOperation,
    StoredInstance,
};

/// How far above the current index the stored ceiling is raised at a time:
/// one extra commit per this many index changes.
const INDEX_RESERVE: u64 = 10_000;

/// Most commands folded into one commit. Bounds the latency one batch adds.
const MAX_BATCH: usize = 4096;
/// How long the writer holds a batch of sporadic writes open for company
/// (see [`GroupCommit`]), from the batch's first command, once durable
/// writes come more often than one per `HOLD`: then a hold can expect
/// company. tokio's timer ticks in milliseconds.
const HOLD: Duration = Duration::from_millis(4);
/// How long a cluster node's start-up waits for etcd to answer its first
/// listing (an election under way, members still starting) before it
/// stops with the error. A refusal (credentials) stops it at once.
const STARTUP_PATIENCE: Duration = Duration::from_secs(15);
/// Between two tries of that listing.
const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// The registry as etcd holds it, for a node starting up: tried again
/// while etcd does not answer, for up to [`STARTUP_PATIENCE`]. A
/// certificate either side refuses is a setting to fix, not a member still
/// starting: it stops the node at once. Where the etcd client saw only a
/// closed connection, handshakes of roster's own look for such a refusal,
/// after each failure until one reaches a member (etcd may start after
/// the node).
async fn first_listing(
    cluster: &crate::cluster::Cluster,
) -> Result<crate::cluster::etcd::Listing, StoreError> {
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let mut reached = false;
    loop {
        match cluster.etcd.list(cluster.keys.prefix()).await {
            Err(error)
                if error.is_unreachable()
                    && !error.is_untrusted()
                    && tokio::time::Instant::now() < deadline =>
            {
                if !reached {
                    reached = cluster.tls_refusal().await?;
                }
                warn!(%error, "etcd does not answer yet; trying again");
                tokio::time::sleep(STARTUP_RETRY).await;
            }
            listed => return listed,
        }
    }
}

/// Queue depth in front of the writer; senders wait when it is full, which
/// pushes back on clients instead of growing memory without bound.
const QUEUE_DEPTH: usize = 16_384;

/// Why a command failed. Each variant says what went wrong in terms of
/// the registry, with the names involved, so that each front door maps it
/// to its own answer (the native API's 409 for a clash is the Consul API's
/// 400); the messages are the ones users see.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No instance has this ID.
    #[error("no instance with ID {id:?}")]
    NoInstance { id: String },
    /// The instance exists, but not in the service the request named.
    #[error("no instance {id:?} in service {service:?}")]
    NotInService { id: String, service: String },
    /// The instance has no check with this ID.
    #[error("instance {id:?} has no check {check_id:?}")]
    NoCheck { id: String, check_id: String },
    /// A report to "every TTL check" of an instance that has none.
    #[error("instance {id:?} has no ttl check to report to")]
    NoTtlCheck { id: String },
    /// Another service's name maps to the same DNS label.
    #[error(
        "service {service:?} maps to the DNS label \"{label}\", which service {owner:?} already uses; pick a name that differs in letters or digits"
    )]
    ServiceLabelTaken {
        service: String,
        label: DnsLabel,
        /// The service already registered under the label.
        owner: String,
    },
    /// Another instance of the service has an ID with the same DNS label.
    #[error(
        "instance ID {id:?} maps to the DNS label {label:?}, which instance {owner:?} of this service already uses"
    )]
    IdLabelTaken {
        id: String,
        label: String,
        /// The instance already registered under the label.
        owner: String,
    },
    /// The ID is registered in another service, and the request may not
    /// move it ([`InOtherService::Refuse`]).
    #[error(
        "instance ID {id:?} is registered in service {service:?}; IDs are unique across services, so deregister it there first"
    )]
    InOtherService { id: String, service: String },
    /// An import names one ID twice.
    #[error("instance ID {id:?} appears more than once; each ID names one instance")]
    DuplicateId { id: String },
    /// An imported (or stored) instance fails the API's validation.
    #[error("instance {id:?}: {error}")]
    InvalidStored {
        id: String,
        #[source]
        error: ValidationError,
    },
    /// A [`Command::Transaction`] refused to change anything; the reason
    /// is the front door's own (downcast it).
    #[error("{0}")]
    Unmet(#[source] commands::TransactionRefused),
    /// A [`Command::Edit`] lost a race with another change.
    #[error("instance {id:?} changed while this request was editing it")]
    Stale { id: String },
    /// A [`Registry::edit`] lost the race [`EDIT_ATTEMPTS`] times in a row.
    #[error("instance {id:?} kept changing while this request edited it; try again")]
    Contended {
        /// The instance being edited.
        id: String,
    },
    /// The batch the change was in could not be committed. Shared: every
    /// command of the batch fails with the same store error.
    #[error("the change was not saved: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The store's contents could not be loaded at start-up.
    #[error("cannot load the stored registry: {0}")]
    Load(#[source] StoreError),
    /// The writer's thread could not be started.
    #[error("cannot start the registry writer's thread: {0}")]
    WriterThread(#[source] std::io::Error),
    #[error("roster is shutting down")]
    Closed,
}

/// How many times [`Registry::edit`] reads again and retries when another
/// change to the same instance lands between its read and its write. Each
/// lost race means someone else's write succeeded, so the registry as a
/// whole made progress; the bound only stops one request from retrying
/// forever under a storm of writes to one instance.
pub const EDIT_ATTEMPTS: usize = 64;

/// Why a [`Registry::edit`] wrote nothing.
#[derive(Debug)]
pub enum EditError<E> {
    /// The caller's change refused the instance as it found it.
    Refused(E),
    /// The registry refused the write, or every attempt lost its race
    /// ([`RegistryError::Contended`]).
    Registry(RegistryError),
}

/// What the health checker needs to hear about.
#[derive(Clone, Debug)]
pub enum RegistryEvent {
    /// An instance was registered or re-registered: (re)schedule its checks.
    Upserted(Arc<InstanceState>),
    /// An instance is gone: stop checking it.
    Removed { id: String },
    /// A result the checker sent was rejected with its batch (the store
    /// failed): the check's status is what the registry holds, not what
    /// the checker sent. `check_id: None` for a reaping that failed.
    NotApplied {
        id: String,
        check_id: Option<String>,
    },
    /// The service reported to a TTL check: restart its timer.
    Heartbeat {
        id: String,
        check_id: String,
        status: crate::model::Status,
    },
}

struct Envelope {
    command: Command,
    reply: Option<oneshot::Sender<Result<Outcome, RegistryError>>>,
    /// From a client of [`Pace::Sporadic`]: the writer may hold it for
    /// company.
    sporadic: bool,
}

/// How the client of a write sends its writes, as its front door sees it.
/// The writer holds a batch open for company (a group commit that waits
/// for its group) only when every write in it is sporadic, commits come
/// often, and they sync: see `GroupCommit` in this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// The client wrote again right after its last answer: one connection
    /// writing back to back, which waits on each write, so a hold would
    /// cost it the hold on every write and gather nothing. Also what a
    /// command from no client (the checker, a DNS UPDATE) counts as.
    BackToBack,
    /// The client's last answer is a while ago, or it has none: one of a
    /// fleet's writers.
    Sporadic,
}

tokio::task_local! {
    /// The pace of the client whose request the current task serves.
    static PACE: Pace;
}

impl Pace {
    /// Runs `future` with every command it sends marked as from a client
    /// of this pace (the HTTP server wraps each request in it).
    pub async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        PACE.scope(self, future).await
    }

    /// The pace the current task was given, [`Pace::BackToBack`] if none.
    pub(crate) fn current() -> Self {
        PACE.try_with(|pace| *pace).unwrap_or(Pace::BackToBack)
    }
}

/// A cheap-clone handle to the registry.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    commands: mpsc::Sender<Envelope>,
    /// Told when a command that may not wait is queued: it ends the
    /// writer's hold, which sleeps through the ones that may (see
    /// [`hold_open`]).
    hurry: Arc<Notify>,
    /// Latest published state, for API reads. Swapped whole by the writer.
    state: ArcSwap<RegistryState>,
    /// Latest published record table, shared with the DNS handler.
    table: Arc<ArcSwap<RecordTable>>,
    /// The index, for blocking queries: receivers wake when it moves.
    index: watch::Receiver<u64>,
    /// The cluster's live members; always empty on the embedded store.
    members: watch::Receiver<crate::cluster::members::Members>,
    /// Per-service wake-ups for blocking queries on one service.
    service_watchers: watchers::ServiceWatchers,
}

impl Registry {
    /// Loads `store`, publishes what it holds, and starts the writer on a
    /// thread of its own (see `on_own_thread`). Events for the health
    /// checker go to `events`. The writer stops, and closes the store, when
    /// every `Registry` handle is dropped; the returned handle completes
    /// then.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: TableSettings,
        events: mpsc::UnboundedSender<RegistryEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, JoinHandle<()>), RegistryError> {
        let (registry, writer) = Self::prepare(store, settings, events, metrics).await?;
        let writer = on_own_thread(writer).map_err(RegistryError::WriterThread)?;
        Ok((registry, writer))
    }

    /// [`Registry::start`] with the writer as a task of the caller's
    /// runtime: for tests that pause the runtime's clock, which a runtime
    /// of the writer's own would not follow.
    #[cfg(test)]
    pub(crate) async fn start_in_task(
        store: Arc<dyn Store>,
        settings: TableSettings,
        events: mpsc::UnboundedSender<RegistryEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, JoinHandle<()>), RegistryError> {
        let (registry, writer) = Self::prepare(store, settings, events, metrics).await?;
        Ok((registry, tokio::spawn(writer)))
    }

    /// Loads `store` and publishes what it holds: the registry, and its
    /// writer to run.
    async fn prepare(
        store: Arc<dyn Store>,
        settings: TableSettings,
        events: mpsc::UnboundedSender<RegistryEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, impl std::future::Future<Output = ()> + Send + 'static), RegistryError> {
        let loaded = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.load())
                .await
                .map_err(|e| RegistryError::Load(StoreError::Crashed(e.to_string())))?
                .map_err(RegistryError::Load)?
        };
        // The index never goes back across restarts: the store holds a
        // ceiling above every index handed out, and restored instances get
        // indexes above it.
        let loaded_ceiling = loaded.index;
        let mut state = RegistryState::default();
        state.index = loaded.index;
        let mut effects = commands::Effects::default();
        // What the store holds is not written back, so no mutations. (At
        // start-up a bad instance is skipped, not an error.)
        commands::restore(
            &mut state,
            loaded.instances,
            commands::RestoreFrom::StartUp,
            &mut effects,
        )?;
        state.index = state.index.max(1);
        // A service emptied before the restart must not answer an index
        // lower than it did then.
        state.restart_service_indexes();
        let mut table = RecordTable::default();
        for label in &effects.touched {
            table.update_service(
                label.as_str(),
                state.services.get(label).map(|s| &**s),
                &settings,
            );
        }
        table.set_index(state.index, &settings);
        for event in effects.events {
            let _ = events.send(event);
        }

        let (commands, queue) = mpsc::channel(QUEUE_DEPTH);
        let hurry = Arc::new(Notify::new());
        let (index_tx, index_rx) = watch::channel(state.index);
        let table = Arc::new(ArcSwap::from_pointee(table));
        let shared = Arc::new(Shared {
            commands,
            hurry: hurry.clone(),
            state: ArcSwap::from_pointee(state),
            table: table.clone(),
            index: index_rx,
            members: watch::channel(Default::default()).1,
            service_watchers: Default::default(),
        });
        let writer = Writer {
            shared: Arc::downgrade(&shared),
            store,
            settings,
            events,
            index: index_tx,
            metrics,
            index_ceiling: loaded_ceiling,
            in_doubt: Default::default(),
            batch_ids: Vec::new(),
        };
        Ok((Self { shared }, writer.run(queue, hurry)))
    }

    /// Starts the registry on a cluster: lists everything under the
    /// cluster's prefix in etcd, publishes it, and starts the writer and
    /// the feed that follows etcd from there. Fails if etcd cannot be read
    /// (a node that cannot load the registry must not serve an empty one).
    pub async fn start_cluster(
        cluster: crate::cluster::Cluster,
        settings: TableSettings,
        events: mpsc::UnboundedSender<RegistryEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, JoinHandle<()>), RegistryError> {
        let listing = first_listing(&cluster).await.map_err(RegistryError::Load)?;
        let (commands, queue) = mpsc::channel(QUEUE_DEPTH);
        let (index_tx, index_rx) = watch::channel(0);
        let (members_tx, members_rx) = watch::channel(Default::default());
        let shared = Arc::new(Shared {
            commands,
            // The cluster writer does not hold batches (it batches what
            // queued while etcd answered), so nothing waits on this.
            hurry: Default::default(),
            state: ArcSwap::from_pointee(RegistryState::default()),
            table: Arc::new(ArcSwap::from_pointee(RecordTable::default())),
            index: index_rx,
            members: members_rx,
            service_watchers: Default::default(),
        });
        let mut writer = cluster::ClusterWriter::new(cluster::Wiring {
            shared: Arc::downgrade(&shared),
            cluster: cluster.clone(),
            settings,
            events,
            index: index_tx,
            metrics,
            members: members_tx,
        });
        writer.reset(&shared, listing.kvs, listing.revision);
        let (feed_tx, feed_rx) = mpsc::channel(1024);
        let feed = tokio::spawn(crate::cluster::feed::run(
            cluster.etcd.clone(),
            cluster.keys.prefix().to_owned(),
            listing.revision + 1,
            feed_tx,
        ));
        let writer = tokio::spawn(async move {
            writer.run(queue, feed_rx).await;
            feed.abort();
        });
        Ok((Self { shared }, writer))
    }

    /// The cluster's live members (empty on the embedded store).
    pub fn members(&self) -> watch::Receiver<crate::cluster::members::Members> {
        self.shared.members.clone()
    }

    /// Sends a command and waits until it is durable and published.
    pub async fn execute(&self, command: Command) -> Result<Outcome, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .send(Envelope {
                command,
                reply: Some(reply),
                sporadic: Pace::current() == Pace::Sporadic,
            })
            .await?;
        answer.await.map_err(|_| RegistryError::Closed)?
    }

    /// A read-modify-write of one instance that cannot lose a concurrent
    /// change: `change` gets the published state and the instance `id` as it
    /// is there (`None`: not registered) and returns the instance to
    /// register; it is written only if that instance is still as read, else
    /// `change` runs again on a fresh read. So two doors adding a check to
    /// one instance at once both keep theirs.
    ///
    /// `change` may run several times and must not have side effects. The
    /// instance it returns may move between services (as in Consul). Every
    /// door that edits one instance rather than replacing it uses this (the
    /// Consul API), so the retry lives in one place; a change that reads
    /// more than the instances it writes (DNS UPDATE's prerequisites) is a
    /// [`Command::Transaction`] instead.
    pub async fn edit<E>(
        &self,
        id: &str,
        mut change: impl FnMut(&RegistryState, Option<&Arc<InstanceState>>) -> Result<Instance, E>,
    ) -> Result<Outcome, EditError<E>> {
        for _ in 0..EDIT_ATTEMPTS {
            let state = self.state();
            let instance = change(&state, state.instance(id)).map_err(EditError::Refused)?;
            // The guard is on the instance written, read from the same
            // snapshot `change` saw, even if `change` renamed it.
            let modify_index = state
                .instance(instance.id.as_str())
                .map(|current| current.modify_index);
            let command = Command::Edit {
                instance,
                modify_index,
            };
            match self.execute(command).await {
                Err(RegistryError::Stale { .. }) => continue,
                done => return done.map_err(EditError::Registry),
            }
        }
        Err(EditError::Registry(RegistryError::Contended {
            id: id.to_owned(),
        }))
    }

    /// Sends a command without waiting for it (the checker's results).
    pub async fn submit(&self, command: Command) {
        let _ = self
            .shared
            .send(Envelope {
                command,
                reply: None,
                sporadic: false,
            })
            .await;
    }

    /// The latest published state.
    pub fn state(&self) -> Arc<RegistryState> {
        self.shared.state.load_full()
    }

    /// The table handle the DNS server reads from.
    pub fn table(&self) -> Arc<ArcSwap<RecordTable>> {
        self.shared.table.clone()
    }

    /// A receiver that changes whenever the index does.
    pub fn watch_index(&self) -> watch::Receiver<u64> {
        self.shared.index.clone()
    }

    /// A receiver that changes whenever the service `name` does (see
    /// [`RegistryState::service_index`]); `None` for a name no service can
    /// have. Subscribe before reading the state, so no change is missed.
    pub fn watch_service(&self, name: &str) -> Option<watch::Receiver<()>> {
        let label = crate::model::DnsLabel::from_name(name, "service").ok()?;
        Some(self.shared.service_watchers.subscribe(&label))
    }
}

impl Shared {
    /// Queues `envelope` for the writer; one that may not wait also ends a
    /// hold in progress.
    async fn send(&self, envelope: Envelope) -> Result<(), RegistryError> {
        let hurry = !envelope.sporadic;
        self.commands
            .send(envelope)
            .await
            .map_err(|_| RegistryError::Closed)?;
        if hurry {
            // Only a hold in progress listens; none stores the call.
            self.hurry.notify_waiters();
        }
        Ok(())
    }
}

struct Writer {
    /// Weak, so that dropping the last `Registry` handle ends the writer.
    shared: std::sync::Weak<Shared>,
    store: Arc<dyn Store>,
    settings: TableSettings,
    events: mpsc::UnboundedSender<RegistryEvent>,
    index: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    /// The index ceiling last committed to the store: every index handed
    /// out is below it.
    index_ceiling: u64,
    /// IDs written by a commit that failed, rewritten with the next one.
    in_doubt: std::collections::BTreeSet<String>,
    /// IDs the commit in progress writes, kept in case it fails.
    batch_ids: Vec<String>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Envelope>, hurry: Arc<Notify>) {
        let mut batch = Vec::with_capacity(64);
        let mut group = GroupCommit::new(self.store.commit_syncs());
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let arrived = tokio::time::Instant::now();
            if group.holds(batch.iter().map(|envelope| envelope.sporadic)) {
                let may_wait = |envelope: &Envelope| envelope.sporadic;
                hold_open(&mut queue, &mut batch, arrived + HOLD, &hurry, may_wait).await;
            }
            let Some(shared) = self.shared.upgrade() else {
                break;
            };
            let commands = batch.len();
            let committed = self.process(&shared, std::mem::take(&mut batch)).await;
            group.done(committed.then_some(commands), arrived);
        }
    }

    /// Applies, commits and publishes one batch, then answers its callers.
    /// Returns whether it wrote to the store.
    async fn process(&mut self, shared: &Shared, batch: Vec<Envelope>) -> bool {
        let mut state = (*shared.state.load_full()).clone();
        let mut effects = commands::Effects::default();
        let mut replies = Vec::with_capacity(batch.len());
        // For each command the checker sent without waiting for an answer
        // (a probe result, a TTL expiry, a reaping): which check it was.
        let mut unacknowledged = Vec::with_capacity(batch.len());
        for envelope in batch {
            unacknowledged.push(match (&envelope.reply, &envelope.command) {
                (None, Command::CheckResult { id, check_id, .. }) => {
                    Some((id.as_str().to_owned(), check_id.clone()))
                }
                (None, Command::Deregister { id, .. }) => Some((id.as_str().to_owned(), None)),
                _ => None,
            });
            // Each command sees the state left by the ones before it; one
            // that fails leaves the state as it found it (`commands` checks
            // everything before it changes anything). No snapshot per
            // command: it would share every service with the state and make
            // the next change to a service copy it again.
            let marks = effects.marks();
            let outcome = commands::apply(&mut state, envelope.command, &mut effects);
            if outcome.is_err() {
                effects.truncate(marks);
            }
            replies.push((envelope.reply, outcome));
        }
        // Check results move the index without touching the store, so the
        // store keeps a ceiling above every index handed out instead of the
        // index itself, raised a block at a time; a restart, even after a
        // crash, resumes from the ceiling and never goes back.
        let reserve = state.index >= self.index_ceiling;
        let reconcile = !self.in_doubt.is_empty();
        let commit = (!effects.mutations.is_empty() || reserve || reconcile).then(|| {
            let mut mutations = std::mem::take(&mut effects.mutations);
            // Instances a failed commit touched are written again as the
            // state holds them, after this batch's own changes: a commit
            // that failed may still have reached the disk (an fsync error
            // says nothing of what was written), and the store must end up
            // as the acknowledged state, not as a rejected batch.
            for id in &self.in_doubt {
                mutations.push(match state.instance(id) {
                    Some(current) => Mutation::Put(StoredInstance::new(
                        &current.instance,
                        current.maintenance.clone(),
                        current.create_index,
                    )),
                    None => Mutation::Delete { id: id.clone() },
                });
            }
            let ids: Vec<String> = mutations
                .iter()
                .map(|m| match m {
                    Mutation::Put(instance) => instance.id.clone(),
                    Mutation::Delete { id } => id.clone(),
                })
                .collect();
            self.batch_ids = ids;
            let ceiling = if reserve {
                state.index + INDEX_RESERVE
            } else {
                self.index_ceiling
            };
            let started = std::time::Instant::now();
            // On this thread: it is the writer's own (see `on_own_thread`),
            // and handing the commit to another thread cost two wake-ups.
            let committed = commit_contained(&*self.store, &mutations, ceiling);
            // From handing the batch to the store to its fsync returning,
            // failed commits included: a slow failing disk shows here.
            self.metrics
                .registry
                .commit_duration
                .record(started.elapsed());
            (committed, ceiling)
        });
        let wrote = commit.is_some();
        if let Some((committed, ceiling)) = commit {
            if let Err(failure) = committed {
                error!(message = %failure, "store commit failed; the batch is rejected");
                let failure = Arc::new(failure);
                self.in_doubt.extend(std::mem::take(&mut self.batch_ids));
                // The checker's own results went nowhere: tell it, or it
                // would believe a status the registry never took on.
                for (check, outcome) in unacknowledged.iter().zip(&replies) {
                    if let (Some((id, check_id)), Ok(_)) = (check, &outcome.1) {
                        let _ = self.events.send(RegistryEvent::NotApplied {
                            id: id.clone(),
                            check_id: check_id.clone(),
                        });
                    }
                }
                count_writes(&self.metrics, &replies, WRITE_FAILED);
                for (reply, outcome) in replies {
                    let failed = outcome.and(Err(RegistryError::Store(failure.clone())));
                    if let Some(reply) = reply {
                        let _ = reply.send(failed);
                    }
                }
                return wrote;
            }
            self.index_ceiling = ceiling;
            self.in_doubt.clear();
        }
        // Nothing is published before the commit is durable.
        if !effects.touched.is_empty() || state.index != shared.state.load().index {
            let table = build_table(shared, &state, &effects.touched, &self.settings);
            publish(shared, state, &effects.touched, table, &self.index);
        }
        report(effects, &self.metrics, &self.events);
        count_writes(&self.metrics, &replies, WRITE_APPLIED);
        for (reply, outcome) in replies {
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        wrote
    }
}

/// When the writer holds a batch open for more writes before committing
/// it: a group commit that waits for its group, but only where that saves
/// syncs and costs no client a wait on every write.
///
/// Each commit costs a sync, and on a virtual machine a sync stalls the
/// guest beyond its own CPU: 1,000 writes a second from a fleet, each
/// arriving alone, were 1,000 syncs a second and cost DNS a fifth of its
/// queries (bench/RESULTS.md, churn). Held for [`HOLD`], those writes share
/// syncs. The writer holds a batch only when
///
/// - its commits sync (not on the memory store);
/// - durable writes have been coming more often than one per [`HOLD`]: a
///   write every few seconds has no company to wait for;
/// - every write in it is [`Pace::Sporadic`]. A client writing back to
///   back (one connection, or 64 of them in a load test) waits on each
///   write: a hold would cost it the hold on every write, and what the
///   writer needs for company is queued anyway while it syncs. A
///   back-to-back write arriving during a hold ends it.
struct GroupCommit {
    syncs: bool,
    /// The time between durable writes, smoothed over the last few
    /// commits.
    spacing: Duration,
    /// When the last commit's batch arrived, and how many commands it held.
    last_commit: Option<(tokio::time::Instant, usize)>,
}

impl GroupCommit {
    fn new(syncs: bool) -> Self {
        Self {
            syncs,
            spacing: Duration::MAX,
            last_commit: None,
        }
    }

    /// Whether to hold a batch whose writes are `sporadic` or not.
    fn holds(&self, mut sporadic: impl Iterator<Item = bool>) -> bool {
        self.syncs && self.spacing < HOLD && sporadic.all(|s| s)
    }

    /// Notes a batch whose first command arrived at `arrived`: `committed`
    /// with its number of commands if it wrote to the store.
    fn done(&mut self, committed: Option<usize>, arrived: tokio::time::Instant) {
        let Some(commands) = committed else {
            return;
        };
        if let Some((last, last_commands)) = self.last_commit {
            // The last batch's writes came over the time from its start to
            // this one's (a held batch's over its hold, and then some).
            let writes = u32::try_from(last_commands.max(1)).unwrap_or(u32::MAX);
            let spacing = arrived.saturating_duration_since(last) / writes;
            self.spacing = match self.spacing {
                Duration::MAX => spacing,
                smoothed => (smoothed * 7 + spacing) / 8,
            };
        }
        self.last_commit = Some((arrived, commands));
    }
}

/// Adds to `batch` what the queue holds at `deadline`, or earlier when
/// `hurry` is told that a command that may not wait (`may_wait` false) was
/// queued; at once if one is queued already, the batch is full or the
/// queue closed.
///
/// The writer sleeps meanwhile: the commands that arrive do not wake it.
/// Taking each as it came woke the writer once a write, for nothing it
/// could not take at the deadline: at 1,000 writes/s that was 0.9 of a
/// write's 4.7 context switches, and about a tenth of its CPU
/// (bench/RESULTS.md, DNS, 2026-12-07 13:15–14:45).
async fn hold_open<T>(
    queue: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    deadline: tokio::time::Instant,
    hurry: &Notify,
    may_wait: impl Fn(&T) -> bool,
) {
    let hurried = hurry.notified();
    tokio::pin!(hurried);
    // Listening before looking at the queue: a command that may not wait
    // is either queued by then, or its sender's call comes after this.
    hurried.as_mut().enable();
    if !take_queued(queue, batch, &may_wait) {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep_until(deadline) => {}
        () = hurried => {}
    }
    take_queued(queue, batch, &may_wait);
}

/// Moves what `queue` holds into `batch`, up to [`MAX_BATCH`]. Returns
/// whether a hold may go on: all it took may wait, the batch has room and
/// the queue is open.
fn take_queued<T>(
    queue: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    may_wait: impl Fn(&T) -> bool,
) -> bool {
    let before = batch.len();
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(mpsc::error::TryRecvError::Empty) => {
                return batch[before..].iter().all(may_wait);
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    false
}

/// Counts a batch's commands for `/metrics`: the refused ones, and the rest
/// as `done` (an index in `metrics::WRITE_RESULTS`: applied, or failed
/// with their commit).
fn count_writes<R>(
    metrics: &Metrics,
    replies: &[(R, Result<Outcome, RegistryError>)],
    done: usize,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let refused = replies
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .count() as u64;
    let writes = &metrics.registry.writes;
    writes[WRITE_REFUSED].fetch_add(refused, Relaxed);
    writes[done].fetch_add(replies.len() as u64 - refused, Relaxed);
}

/// Commits `batch` to `store`, a panic in the store's code reported as a
/// crashed commit: the batch fails, and the writer lives on to answer.
fn commit_contained(store: &dyn Store, batch: &[Mutation], ceiling: u64) -> Result<(), StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.commit(batch, ceiling)
    }))
    .unwrap_or_else(|panic| {
        let reason = store::panic_message(&*panic).unwrap_or("no message");
        Err(StoreError::Crashed(format!(
            "the commit panicked: {reason}"
        )))
    })
}

/// Runs the embedded store's writer on a thread of its own, in a runtime
/// of its own, and returns a handle that completes when it ends (with the
/// writer's panic, if it panicked).
///
/// Why not a task: a write handed between the runtime's workers and a
/// blocking thread for its commit woke a thread up to six times (the
/// request's worker, a second worker told to steal the writer task, the
/// blocking thread, the first worker again for the commit's end, the
/// second for the replies), where here it wakes three: the request's
/// worker, this thread (or not, while it holds a batch), and a worker for
/// the reply. At 1,000 writes/s that took a write from 3.61 context
/// switches and 105 µs of CPU to 3.15 and 94 (bench/RESULTS.md, DNS,
/// 2026-12-07 15:50–16:58). The writer blocks only this thread, in its
/// commits' syncs.
fn on_own_thread(
    writer: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (ended_tx, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name("roster-writer".into())
        .spawn(move || {
            let ended =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(writer)));
            let _ = ended_tx.send(ended);
        })?;
    Ok(tokio::spawn(async move {
        if let Ok(Err(panic)) = ended.await {
            std::panic::resume_unwind(panic);
        }
    }))
}

/// The record table of `state`: the published one with the `touched`
/// services rebuilt.
fn build_table(
    shared: &Shared,
    state: &RegistryState,
    touched: &std::collections::BTreeSet<DnsLabel>,
    settings: &TableSettings,
) -> RecordTable {
    let mut table = (**shared.table.load()).clone();
    // The published table was built from the published state: unchanged
    // instances are copied from its records (which check that they are).
    let published = shared.state.load();
    for label in touched {
        let before = published.services.get(label).map(|s| &**s);
        let service = state.services.get(label).map(|s| &**s);
        table.update_service_since(label.as_str(), before, service, settings);
    }
    table.set_index(state.index, settings);
    table
}

/// Makes `state` and its `table` the ones every reader sees, and moves the
/// index watch.
fn publish(
    shared: &Shared,
    state: RegistryState,
    touched: &std::collections::BTreeSet<DnsLabel>,
    table: RecordTable,
    index_watch: &watch::Sender<u64>,
) {
    let index = state.index;
    shared.state.store(Arc::new(state));
    // Every touched service gets new records or none. The old ones are
    // retired *before* the new table is published, so a DNS thread that
    // sees the new table also sees them retired and never answers from
    // them out of its cache (a thread still on the old table may: it is
    // answering as of that table).
    let current = shared.table.load();
    for label in touched {
        if let Some(records) = current.services.get(label.as_str()) {
            records.retire();
        }
    }
    shared.table.store(Arc::new(table));
    index_watch.send_if_modified(|current| {
        let moved = *current != index;
        *current = index;
        moved
    });
    shared.service_watchers.notify(touched);
}

/// Logs and counts the status changes a published batch made, and tells
/// the health checker what it must hear.
fn report(
    effects: commands::Effects,
    metrics: &Metrics,
    events: &mpsc::UnboundedSender<RegistryEvent>,
) {
    for t in &effects.transitions {
        info!(
            instance = %t.instance,
            check = %t.check,
            from = t.from.as_str(),
            to = t.to.as_str(),
            output = %t.output,
            "check status changed"
        );
        metrics.count_transition(t.to);
    }
    for event in effects.events {
        if events.send(event).is_err() {
            warn!("health checker is gone; dropping registry events");
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;

    use super::*;
    use crate::model::InstanceBody;

    #[test]
    fn a_taken_service_label_is_named_as_the_label_not_as_a_rust_value() {
        let error = RegistryError::ServiceLabelTaken {
            service: "Web".into(),
            label: DnsLabel::from_name("Web", "service").expect("valid"),
            owner: "web".into(),
        };
        let text = error.to_string();
        assert!(text.contains(r#"the DNS label "web","#), "{text}");
        assert!(!text.contains("DnsLabel"), "{text}");
    }

    /// A queue holding `items`, and its sender (kept open: a closed queue
    /// ends a hold early).
    fn queue_of(items: &[u32]) -> (mpsc::Sender<u32>, mpsc::Receiver<u32>) {
        let (tx, rx) = mpsc::channel(64);
        for &item in items {
            tx.try_send(item).expect("room");
        }
        (tx, rx)
    }

    /// Notes 20 batches, one every `every`, each `committed` as
    /// `GroupCommit::done` takes it.
    fn batches(group: &mut GroupCommit, every: Duration, committed: Option<usize>) {
        let start = tokio::time::Instant::now();
        for i in 0..20 {
            group.done(committed, start + every * i);
        }
    }

    /// A writer on a syncing store that has committed 20 single writes,
    /// one every `every`.
    fn committing(every: Duration) -> GroupCommit {
        let mut group = GroupCommit::new(true);
        batches(&mut group, every, Some(1));
        group
    }

    #[test]
    fn a_fleets_sporadic_writes_are_held_for_company() {
        let group = committing(Duration::from_millis(1));
        assert!(group.holds([true, true].into_iter()));
    }

    #[test]
    fn held_batches_keep_holding_while_their_writes_come_often() {
        // Each commit 5 ms after the last (a hold and a sync), of 5 writes.
        let mut group = GroupCommit::new(true);
        batches(&mut group, Duration::from_millis(5), Some(5));
        assert!(group.holds([true].into_iter()));
    }

    #[test]
    fn a_batch_with_a_write_sent_back_to_back_is_never_held() {
        let group = committing(Duration::from_millis(1));
        assert!(!group.holds([true, false, true].into_iter()));
    }

    #[test]
    fn writes_seconds_apart_are_never_held() {
        assert!(
            !GroupCommit::new(true).holds([true].into_iter()),
            "a new writer"
        );
        let group = committing(Duration::from_millis(10));
        assert!(!group.holds([true].into_iter()));
    }

    #[test]
    fn batches_that_write_nothing_do_not_count_as_commits() {
        let mut group = GroupCommit::new(true);
        batches(&mut group, Duration::from_millis(1), None);
        assert!(!group.holds([true].into_iter()));
    }

    #[test]
    fn a_store_that_does_not_sync_is_never_held_for() {
        let mut group = GroupCommit::new(false);
        batches(&mut group, Duration::from_millis(1), Some(1));
        assert!(!group.holds([true].into_iter()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_batch_takes_what_arrives_until_its_deadline() {
        let (tx, mut rx) = queue_of(&[1]);
        let mut batch = vec![rx.recv().await.expect("queued")];
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(300)).await;
            tx.send(2).await.expect("open");
            tokio::task::yield_now().await;
            tx.send(3).await.expect("open");
            tokio::time::sleep(Duration::from_millis(5)).await;
            // After the deadline: the next batch's.
            tx.send(4).await.expect("open");
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let deadline = start + Duration::from_millis(2);
        hold_open(&mut rx, &mut batch, deadline, &Notify::new(), |_| true).await;
        assert_eq!(batch, [1, 2, 3]);
        assert_eq!(start.elapsed(), Duration::from_millis(2));
    }

    #[tokio::test(start_paused = true)]
    async fn commands_that_may_wait_do_not_wake_a_hold() {
        let (tx, mut rx) = queue_of(&[1]);
        let mut batch = vec![rx.recv().await.expect("queued")];
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            for item in 2..=4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.send(item).await.expect("open");
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let hurry = Notify::new();
        let deadline = start + Duration::from_millis(5);
        let polls = polls_to_end(hold_open(&mut rx, &mut batch, deadline, &hurry, |_| true)).await;
        assert_eq!(batch, [1, 2, 3, 4]);
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        // Polled once to start, and once at the deadline: not per command.
        assert_eq!(polls, 2);
    }

    /// Runs `future` to its end; how many times it was polled.
    async fn polls_to_end(future: impl Future<Output = ()>) -> usize {
        let mut future = std::pin::pin!(future);
        let mut polls = 0;
        std::future::poll_fn(|cx| {
            polls += 1;
            future.as_mut().poll(cx)
        })
        .await;
        polls
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_may_not_wait_ends_the_hold() {
        let (tx, mut rx) = queue_of(&[1]);
        let mut batch = vec![rx.recv().await.expect("queued")];
        let start = tokio::time::Instant::now();
        let hurry = Arc::new(Notify::new());
        let told = hurry.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send(2).await.expect("open");
            told.notify_waiters();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let odd = |item: &u32| item % 2 == 1;
        let deadline = start + Duration::from_secs(1);
        hold_open(&mut rx, &mut batch, deadline, &hurry, odd).await;
        assert_eq!(batch, [1, 2]);
        assert_eq!(start.elapsed(), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_command_that_may_not_wait_ends_the_hold_at_once() {
        let (_tx, mut rx) = queue_of(&[1, 2, 3]);
        let mut batch = vec![rx.recv().await.expect("queued")];
        let start = tokio::time::Instant::now();
        let odd = |item: &u32| item % 2 == 1;
        let deadline = start + Duration::from_secs(1);
        hold_open(&mut rx, &mut batch, deadline, &Notify::new(), odd).await;
        assert_eq!(batch, [1, 2, 3]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_ends_the_hold() {
        let (tx, mut rx) = queue_of(&[1, 2]);
        drop(tx);
        let mut batch = vec![rx.recv().await.expect("queued")];
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(1);
        hold_open(&mut rx, &mut batch, deadline, &Notify::new(), |_| true).await;
        assert_eq!(batch, [1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_writer_on_its_own_thread_ends_its_handle_as_it_ended() {
        let ended = on_own_thread(async {}).expect("thread").await;
        assert!(ended.is_ok());
        let ended = on_own_thread(async { panic!("the writer's bug") })
            .expect("thread")
            .await;
        // What `serve` checks to tell a writer that panicked.
        assert!(ended.expect_err("it panicked").is_panic());
    }

    async fn started() -> Registry {
        started_on(Arc::new(MemoryStore::default())).await
    }

    async fn started_on(store: Arc<dyn Store>) -> Registry {
        let settings = TableSettings {
            domain: Name::from_ascii("service.local.").expect("valid name"),
            ttl: 30,
            negative_ttl: 5,
            include_warning: false,
            nameserver: std::sync::Arc::new(crate::dns::table::Nameserver::conventional(
                &Name::from_ascii("service.local.").expect("valid name"),
            )),
        };
        // The events go nowhere: no checker listens in these tests.
        let (events, _) = mpsc::unbounded_channel();
        let (registry, _writer) =
            Registry::start_in_task(store, settings, events, Arc::new(Metrics::default()))
                .await
                .expect("start");
        registry
    }

    /// Registers `id` as a client of `pace` would.
    async fn register_at(registry: &Registry, pace: Pace, id: &str) {
        let command = Command::Register {
            instance: instance(id, &[]),
            in_other_service: InOtherService::Refuse,
        };
        pace.scope(registry.execute(command))
            .await
            .expect("registered");
    }

    /// Two writes, of pace `first` and a millisecond later of pace
    /// `second`, at a writer committing a write every millisecond: how many
    /// commits they took, and how long the first waited for its answer.
    async fn two_writes(first: Pace, second: Pace) -> (usize, Duration) {
        let store = Arc::new(failing_store::FailingStore::default());
        let registry = started_on(store.clone()).await;
        // Back to back, so that none is held: a durable write a millisecond.
        for i in 0..20 {
            register_at(&registry, Pace::BackToBack, &format!("warm-{i}")).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = store.batches().len();
        let start = tokio::time::Instant::now();
        let later = {
            let registry = registry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                register_at(&registry, second, "second").await;
            })
        };
        register_at(&registry, first, "first").await;
        let first_took = start.elapsed();
        later.await.expect("second write");
        (store.batches().len() - before, first_took)
    }

    #[tokio::test(start_paused = true)]
    async fn sporadic_writes_at_a_busy_writer_share_a_commit() {
        let (commits, _) = two_writes(Pace::Sporadic, Pace::Sporadic).await;
        assert_eq!(commits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_sent_back_to_back_are_committed_at_once() {
        let (commits, _) = two_writes(Pace::BackToBack, Pace::BackToBack).await;
        assert_eq!(commits, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_sent_back_to_back_ends_a_hold_under_way() {
        let (commits, first_took) = two_writes(Pace::Sporadic, Pace::BackToBack).await;
        assert_eq!(
            first_took,
            Duration::from_millis(1),
            "held past the second write"
        );
        assert_eq!(commits, 1, "one commit for both");
    }

    fn instance(id: &str, tags: &[&str]) -> Instance {
        let body = serde_json::json!({ "address": "10.0.0.1", "port": 80, "tags": tags });
        let body: InstanceBody = serde_json::from_value(body).expect("valid body");
        body.validate("web", id).expect("valid instance")
    }

    fn tags(registry: &Registry, id: &str) -> Vec<String> {
        let state = registry.state();
        let found = state.instance(id).expect("registered");
        found.instance.tags.clone()
    }

    /// Registers `tag` added to "a" from outside the edit under way, and
    /// waits until it is durable: the race an edit must not lose.
    fn add_tag_meanwhile(registry: &Registry, tag: &str) {
        let mut changed = (*registry.state().instance("a").expect("a").instance).clone();
        changed.tags.push(tag.to_owned());
        let command = Command::Register {
            instance: changed,
            in_other_service: InOtherService::Refuse,
        };
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(registry.execute(command))
        })
        .expect("the concurrent change is written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_that_lost_a_race_reads_again_and_keeps_both_changes() {
        let registry = started().await;
        registry
            .execute(Command::Register {
                instance: instance("a", &[]),
                in_other_service: InOtherService::Refuse,
            })
            .await
            .expect("registered");
        let mut calls = 0;
        let edited = registry
            .edit("a", |_, current| {
                calls += 1;
                if calls == 1 {
                    add_tag_meanwhile(&registry, "theirs");
                }
                let mut instance = (*current.expect("registered").instance).clone();
                instance.tags.push("mine".into());
                Ok::<_, ()>(instance)
            })
            .await;
        assert!(edited.is_ok(), "{edited:?}");
        assert_eq!(calls, 2, "the stale first attempt is done again");
        assert_eq!(tags(&registry, "a"), ["theirs", "mine"]);
    }

    #[tokio::test]
    async fn an_edit_the_change_refuses_writes_nothing() {
        let registry = started().await;
        let index = registry.state().index;
        let edited = registry
            .edit("a", |_, current| match current {
                Some(_) => Ok(instance("a", &[])),
                None => Err("not registered"),
            })
            .await;
        assert!(matches!(edited, Err(EditError::Refused("not registered"))));
        assert_eq!(registry.state().index, index);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_that_loses_every_race_gives_up_as_contended() {
        let registry = started().await;
        registry
            .execute(Command::Register {
                instance: instance("a", &[]),
                in_other_service: InOtherService::Refuse,
            })
            .await
            .expect("registered");
        let mut calls = 0;
        let edited = registry
            .edit("a", |_, current| {
                calls += 1;
                add_tag_meanwhile(&registry, &format!("theirs-{calls}"));
                Ok::<_, ()>((*current.expect("registered").instance).clone())
            })
            .await;
        assert!(
            matches!(
                &edited,
                Err(EditError::Registry(RegistryError::Contended { id })) if id == "a"
            ),
            "{edited:?}"
        );
        assert_eq!(calls, EDIT_ATTEMPTS);
    }
}
