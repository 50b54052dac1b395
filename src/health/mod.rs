//! The health checker: probes HTTP and TCP checks on their interval, expires
//! TTL checks that stop hearing from their service, and reaps instances
//! critical for longer than `deregister_critical_after`.
//!
//! One task owns every deadline, in one ordered map (as mini-redis does for
//! key expiry): it sleeps until the earliest, fires what is due, and wakes
//! early for registry events and probe results. Probes run through the
//! [`Prober`] seam as separate tasks under a semaphore that bounds
//! concurrency; the scheduler owns those tasks (a `JoinSet`), so none
//! outlives it. The HTTP client is shared so connections are reused. Results
//! go back to the registry as commands, so the DNS path never waits on a
//! check.
//!
//! Owns: check schedules and consecutive-result counters. Must not: change
//! registry state except through commands.

mod probe;
#[cfg(test)]
mod tests;
mod thresholds;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use rand::RngExt;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
    time::{Instant, sleep_until},
};
use tracing::{debug, error, info};

use crate::{
    config::HealthConfig,
    metrics::Metrics,
    model::{CheckDefinition, CheckKind, InstanceId, MIN_INTERVAL, Status, format_go_duration},
    registry::{Command, Registry, RegistryEvent, Reporter},
};
pub use probe::{ClientError, NetworkProber, ProbeResult, Prober, Probing};
use thresholds::Streak;

/// Most probes in flight at once. Enough for 10,000 one-second checks with
/// slow endpoints; few enough that a flood of dead endpoints cannot exhaust
/// file descriptors.
const MAX_IN_FLIGHT: usize = 2048;

/// How soon a TTL expiry or a reaping that the store failed to record is
/// tried again.
const RETRY_AFTER_STORE_FAILURE: Duration = Duration::from_secs(1);

/// Identifies one check for the scheduler's lifetime.
type Handle = u64;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Probe,
    TtlExpiry,
    Deregister,
}

/// The scheduler's view of one check.
struct CheckRuntime {
    instance: InstanceId,
    definition: CheckDefinition,
    /// The status the registry holds (as far as the checker knows).
    status: Status,
    streak: Streak,
    /// When the check last became critical, for `deregister_critical_after`.
    critical_since: Option<Instant>,
    /// A probe is running; at most one runs per check.
    in_flight: bool,
    /// A round came due while a probe was still running (a slow endpoint
    /// with a timeout close to the interval): it starts the moment that
    /// probe finishes, late rather than skipped, so failure detection keeps
    /// its bound. A second such round is skipped.
    deferred: Option<Instant>,
    /// No probe has started yet: the next start sets the check's phase.
    first_probe: bool,
    /// When a TTL check expires without a heartbeat.
    ttl_deadline: Option<Instant>,
    /// The output last sent to the registry, to skip sending it again.
    last_output: String,
}

/// A finished probe, handed back to the scheduler by its task.
struct ProbeDone {
    /// The check the probe was for.
    handle: Handle,
    /// What it found.
    result: ProbeResult,
}

/// The running checker; stop it before dropping the registry. Dropping it
/// stops the scheduler too (its stop channel closes).
pub struct HealthChecker {
    /// Tells the scheduler to stop.
    stop: oneshot::Sender<()>,
    /// The scheduler task, which owns every probe task. `None` once
    /// [`Self::ended`] has seen it end.
    task: Option<JoinHandle<()>>,
}

impl HealthChecker {
    /// Starts checking every instance the registry reports in `events`,
    /// probing over the network within `policy` (`[health]`: the methods
    /// and networks a probe may use). If the HTTP client cannot be built,
    /// the error is logged and every HTTP check goes critical with it as
    /// its output; no other client is used in its place.
    pub fn start(
        registry: Registry,
        events: mpsc::UnboundedReceiver<RegistryEvent>,
        metrics: Arc<Metrics>,
        ownership: Option<Ownership>,
        policy: &HealthConfig,
    ) -> Self {
        let prober: Arc<dyn Prober> = match NetworkProber::new(policy) {
            Ok(prober) => Arc::new(prober),
            Err(err) => {
                error!(error = %err, "HTTP checks will report critical until roster restarts");
                Arc::new(probe::WithoutHttp::new(&err, policy))
            }
        };
        Self::start_with(registry, events, metrics, prober, ownership)
    }

    /// Starts checking with `prober` running the probes.
    pub fn start_with(
        registry: Registry,
        events: mpsc::UnboundedReceiver<RegistryEvent>,
        metrics: Arc<Metrics>,
        prober: Arc<dyn Prober>,
        ownership: Option<Ownership>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let scheduler = Scheduler {
            ownership,
            known: HashSet::new(),
            registry,
            metrics,
            prober,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            probes: JoinSet::new(),
            probe_checks: HashMap::new(),
            checks: HashMap::new(),
            by_instance: HashMap::new(),
            deadlines: BTreeMap::new(),
            next_handle: 0,
            next_seq: 0,
        };
        let task = tokio::spawn(scheduler.run(events, stopped));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Completes when the scheduler has ended without being told to stop,
    /// which only a bug (a panic) can cause: from then on no check would
    /// run, TTLs would never expire and DNS would go on serving whatever
    /// was healthy last. The caller treats it as fatal, as it does a
    /// failed registry writer. Cancel-safe: it may be dropped and called
    /// again; once it has completed, it never completes again.
    pub async fn ended(&mut self) -> Result<(), tokio::task::JoinError> {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.task = None;
        ended
    }

    /// Stops scheduling and waits for the scheduler to end. Probes still
    /// running are cancelled, and have ended when this returns.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// In a cluster: which checks this node runs, the ones the rendezvous hash
/// over the live members gives it (`cluster::members::owner`).
pub struct Ownership {
    pub node: String,
    pub members: tokio::sync::watch::Receiver<crate::cluster::members::Members>,
}

struct Scheduler {
    /// `None` on a single node: every check is this node's.
    ownership: Option<Ownership>,
    /// In a cluster, every instance the registry reported, owned checks or
    /// not, so that a membership change can hand their checks out again.
    known: HashSet<String>,
    /// Where results, expiries and reapings go, as commands.
    registry: Registry,
    /// Probe and check counters.
    metrics: Arc<Metrics>,
    /// Runs each probe: the network, or a script in tests.
    prober: Arc<dyn Prober>,
    /// Bounds the probes in flight (see [`MAX_IN_FLIGHT`]).
    permits: Arc<Semaphore>,
    /// Every running probe task. Owned here so that when the scheduler
    /// stops, its probes stop with it instead of running on unowned.
    probes: JoinSet<ProbeDone>,
    /// The check each running probe task is for, so that a probe that
    /// panics (and so hands back no [`ProbeDone`]) still ends its turn.
    probe_checks: HashMap<tokio::task::Id, Handle>,
    /// Every check being scheduled, by handle.
    checks: HashMap<Handle, CheckRuntime>,
    /// Handles of each instance's checks, by instance ID.
    by_instance: HashMap<String, Vec<(String, Handle)>>,
    /// Every pending deadline; `seq` keeps equal instants distinct. Entries
    /// of removed checks stay until they come due and are then ignored,
    /// which is cheaper than finding them.
    deadlines: BTreeMap<(Instant, u64), (Handle, Due)>,
    /// The handle the next added check gets.
    next_handle: Handle,
    /// Tie-breaker for deadlines at the same instant.
    next_seq: u64,
}

impl Scheduler {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<RegistryEvent>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        loop {
            // Deadlines first on every turn: under a steady stream of probe
            // results the select below is always ready, and deadlines
            // waiting for a quiet moment would fall behind schedule.
            self.fire_due().await;
            let next = self.deadlines.keys().next().map(|(at, _)| *at);
            let members_changed = async {
                match self.ownership.as_mut() {
                    Some(ownership) => ownership.members.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                true = members_changed => self.on_members_changed(),
                // `None` (no probe running) disables this branch for the turn.
                Some(joined) = self.probes.join_next_with_id() => {
                    if let Some(done) = self.probe_ended(joined) {
                        self.on_probe_done(done).await;
                    }
                }
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
        }
        // Cancel the probes still running and wait until they have ended, so
        // that none touches an endpoint after the checker has stopped.
        self.probes.shutdown().await;
        debug!("health checker stopped");
    }

    fn schedule(&mut self, at: Instant, handle: Handle, due: Due) {
        self.next_seq += 1;
        self.deadlines.insert((at, self.next_seq), (handle, due));
    }

    /// Hands out every known instance's checks again: this node starts the
    /// ones it now owns, from the status the registry holds (so a healthy
    /// instance stays in DNS while its check moves), and drops the rest.
    fn on_members_changed(&mut self) {
        let state = self.registry.state();
        let known: Vec<String> = self.known.iter().cloned().collect();
        for id in known {
            if let Some(instance) = state.instance(&id) {
                self.on_event(RegistryEvent::Upserted(instance.clone()));
            }
        }
    }

    /// Whether this node runs the check: always on a single node.
    fn owns(&self, id: &str, check_id: &str) -> bool {
        let Some(ownership) = &self.ownership else {
            return true;
        };
        let members = ownership.members.borrow();
        crate::cluster::members::owner(&members, id, check_id) == Some(ownership.node.as_str())
    }

    fn on_event(&mut self, event: RegistryEvent) {
        self.handle_event(event);
        self.metrics
            .checks_owned
            .store(self.checks.len() as u64, Relaxed);
    }

    fn handle_event(&mut self, event: RegistryEvent) {
        match event {
            RegistryEvent::Upserted(state) => {
                let id = state.instance.id.as_str().to_owned();
                if self.ownership.is_some() {
                    self.known.insert(id.clone());
                }
                let now = Instant::now();
                let previous = self.by_instance.remove(&id).unwrap_or_default();
                let mut handles = Vec::with_capacity(state.instance.checks.len());
                for (definition, check) in state.instance.checks.iter().zip(&state.checks) {
                    if !self.owns(&id, &definition.id) {
                        continue;
                    }
                    // A check that kept its ID and definition keeps its
                    // schedule and counters: re-registration is not a reset.
                    let kept = previous.iter().find(|(check_id, handle)| {
                        check_id == &definition.id
                            && self
                                .checks
                                .get(handle)
                                .is_some_and(|c| c.definition == *definition)
                    });
                    if let Some((check_id, handle)) = kept {
                        handles.push((check_id.clone(), *handle));
                        continue;
                    }
                    let handle = self.add_check(&state.instance.id, definition, check.status, now);
                    handles.push((definition.id.clone(), handle));
                }
                for (check_id, handle) in previous {
                    if !handles.iter().any(|(_, h)| *h == handle) {
                        self.remove_check(handle);
                        debug!(instance = %id, check = %check_id, "check removed");
                    }
                }
                if !handles.is_empty() {
                    self.by_instance.insert(id, handles);
                }
            }
            RegistryEvent::Removed { id } => {
                self.known.remove(&id);
                for (_, handle) in self.by_instance.remove(&id).unwrap_or_default() {
                    self.remove_check(handle);
                }
            }
            RegistryEvent::NotApplied { id, check_id } => self.on_not_applied(&id, check_id),
            RegistryEvent::Heartbeat {
                id,
                check_id,
                status,
            } => {
                let Some(handle) = self.handle_of(&id, &check_id) else {
                    return;
                };
                let now = Instant::now();
                let Some(check) = self.checks.get_mut(&handle) else {
                    return;
                };
                if let CheckKind::Ttl { ttl } = check.definition.kind {
                    let deadline = now + ttl.0;
                    check.ttl_deadline = Some(deadline);
                    self.schedule(deadline, handle, Due::TtlExpiry);
                }
                self.note_status(handle, status, now);
            }
        }
    }

    /// A result this checker sent was rejected with a batch whose commit
    /// failed. The check takes back the status the registry holds, so the
    /// next probe that disagrees sends its result again; an expiry or a
    /// reaping, which fire once, are tried again shortly.
    fn on_not_applied(&mut self, id: &str, check_id: Option<String>) {
        let now = Instant::now();
        let retry_at = now + RETRY_AFTER_STORE_FAILURE;
        let handles: Vec<Handle> = match &check_id {
            Some(check_id) => self.handle_of(id, check_id).into_iter().collect(),
            None => self
                .by_instance
                .get(id)
                .map(|checks| checks.iter().map(|(_, h)| *h).collect())
                .unwrap_or_default(),
        };
        let state = self.registry.state();
        let instance = state.instance(id);
        for handle in handles {
            let Some(check) = self.checks.get_mut(&handle) else {
                continue;
            };
            check.last_output.clear();
            let held = instance
                .and_then(|i| i.check(&check.definition.id))
                .map(|(_, _, held)| held.status);
            let expired = check.ttl_deadline.is_some_and(|deadline| deadline <= now);
            if let Some(held) = held {
                check.status = held;
                check.streak = Streak::default();
                self.note_status(handle, held, now);
            }
            if check_id.is_none() {
                self.schedule(retry_at, handle, Due::Deregister);
            } else if expired {
                self.schedule(retry_at, handle, Due::TtlExpiry);
            }
        }
    }

    fn handle_of(&self, id: &str, check_id: &str) -> Option<Handle> {
        self.by_instance
            .get(id)?
            .iter()
            .find(|(c, _)| c == check_id)
            .map(|(_, h)| *h)
    }

    fn add_check(
        &mut self,
        instance: &InstanceId,
        definition: &CheckDefinition,
        status: Status,
        now: Instant,
    ) -> Handle {
        self.next_handle += 1;
        let handle = self.next_handle;
        let mut runtime = CheckRuntime {
            instance: instance.clone(),
            definition: definition.clone(),
            status,
            streak: Streak::default(),
            critical_since: None,
            in_flight: false,
            deferred: None,
            first_probe: true,
            ttl_deadline: None,
            last_output: String::new(),
        };
        match definition.kind {
            // The first probe runs at once, so a healthy instance is in DNS
            // one round trip after it registers, not one interval.
            CheckKind::Http { .. } | CheckKind::Tcp { .. } => {
                self.metrics.checks_scheduled.fetch_add(1, Relaxed);
                self.schedule(now, handle, Due::Probe);
            }
            // A TTL check gets one full TTL, from registration (or from
            // roster's start-up), to send its first heartbeat.
            CheckKind::Ttl { ttl } => {
                let deadline = now + ttl.0;
                runtime.ttl_deadline = Some(deadline);
                self.schedule(deadline, handle, Due::TtlExpiry);
            }
        }
        self.checks.insert(handle, runtime);
        self.note_status(handle, status, now);
        handle
    }

    fn remove_check(&mut self, handle: Handle) {
        if let Some(check) = self.checks.remove(&handle)
            && matches!(
                check.definition.kind,
                CheckKind::Http { .. } | CheckKind::Tcp { .. }
            )
        {
            self.metrics.checks_scheduled.fetch_sub(1, Relaxed);
        }
    }

    /// Tracks how long a check has been critical, and schedules the reaping
    /// its `deregister_critical_after` asks for.
    fn note_status(&mut self, handle: Handle, status: Status, now: Instant) {
        let Some(check) = self.checks.get_mut(&handle) else {
            return;
        };
        check.status = status;
        if status != Status::Critical {
            check.critical_since = None;
            return;
        }
        if check.critical_since.is_some() {
            return;
        }
        check.critical_since = Some(now);
        if let Some(after) = check.definition.deregister_critical_after {
            self.schedule(now + after.0, handle, Due::Deregister);
        }
    }

    async fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.deadlines.first_entry() {
            let (at, _) = *entry.key();
            if at > now {
                break;
            }
            let (handle, due) = entry.remove();
            match due {
                Due::Probe => self.start_probe(handle, at, now),
                Due::TtlExpiry => self.expire_ttl(handle, now).await,
                Due::Deregister => self.reap(handle, now).await,
            }
        }
    }

    /// Starts the probe due at `due` and schedules the next one at exactly
    /// one interval later, so cadence does not drift with probe latency.
    fn start_probe(&mut self, handle: Handle, due: Instant, now: Instant) {
        let Some(check) = self.checks.get_mut(&handle) else {
            return;
        };
        let interval = match &check.definition.kind {
            CheckKind::Http { interval, .. } | CheckKind::Tcp { interval, .. } => interval.0,
            CheckKind::Ttl { .. } => return,
        };
        // Validation refuses shorter intervals at every door; the floor here
        // is the scheduler's own guarantee that whatever it is handed, the
        // next round is in the future, so `fire_due` always ends (a zero
        // interval once rescheduled itself forever on one core).
        let interval = interval.max(MIN_INTERVAL);
        let mut next = due + interval;
        if check.first_probe {
            // The first probe runs at once; the second at a random point of
            // the interval, which sets the check's phase for good. Checks
            // registered together (or loaded together at start-up) then
            // spread over the interval instead of probing in lockstep.
            check.first_probe = false;
            let jitter = rand::rng().random_range(1..=interval.as_micros().max(1) as u64);
            next = now + Duration::from_micros(jitter);
        }
        if next <= now {
            // Fallen more than a whole interval behind: skip the missed
            // rounds instead of firing them all at once.
            let behind = now.duration_since(next).as_nanos() / interval.as_nanos().max(1) + 1;
            next += interval * behind as u32;
        }
        self.next_seq += 1;
        self.deadlines
            .insert((next, self.next_seq), (handle, Due::Probe));
        if check.in_flight {
            if check.deferred.is_none() {
                check.deferred = Some(due);
            } else {
                self.metrics.probes_skipped.fetch_add(1, Relaxed);
            }
            return;
        }
        self.launch_probe(handle, due);
    }

    /// Runs one probe of `handle` (due at `due`) in its own task.
    fn launch_probe(&mut self, handle: Handle, due: Instant) {
        let Some(check) = self.checks.get_mut(&handle) else {
            return;
        };
        // The kind as `/metrics` labels it (an index in `PROBE_KINDS`).
        let (timeout, kind_index) = match &check.definition.kind {
            CheckKind::Http { timeout, .. } => (timeout.0, 0),
            CheckKind::Tcp { timeout, .. } => (timeout.0, 1),
            CheckKind::Ttl { .. } => return,
        };
        check.in_flight = true;
        let kind = check.definition.kind.clone();
        let permits = self.permits.clone();
        let prober = self.prober.clone();
        let metrics = self.metrics.clone();
        let probe = self.probes.spawn(async move {
            // The semaphore is never closed, so this waits and never fails;
            // were it closed, the probe would run unbounded rather than not.
            let _permit = permits.acquire_owned().await.ok();
            metrics
                .probe_lag
                .record(Instant::now().saturating_duration_since(due));
            metrics.probes_started.fetch_add(1, Relaxed);
            let result = prober.probe(&kind, timeout).await;
            metrics.probes_completed.fetch_add(1, Relaxed);
            metrics.count_probe(kind_index, result.status);
            ProbeDone { handle, result }
        });
        self.probe_checks.insert(probe.id(), handle);
    }

    /// What a probe task handed back. A probe that panicked (a bug in a
    /// prober) counts as a critical result with the panic as its output,
    /// rather than leaving its check in flight and never probed again.
    fn probe_ended(
        &mut self,
        joined: Result<(tokio::task::Id, ProbeDone), tokio::task::JoinError>,
    ) -> Option<ProbeDone> {
        match joined {
            Ok((id, done)) => {
                self.probe_checks.remove(&id);
                Some(done)
            }
            Err(error) => {
                let handle = self.probe_checks.remove(&error.id())?;
                error!(%error, "a health probe failed unexpectedly");
                Some(ProbeDone {
                    handle,
                    result: ProbeResult {
                        status: Status::Critical,
                        output: format!("the probe failed unexpectedly: {error}"),
                    },
                })
            }
        }
    }

    async fn on_probe_done(&mut self, done: ProbeDone) {
        let now = Instant::now();
        let Some(check) = self.checks.get_mut(&done.handle) else {
            return;
        };
        check.in_flight = false;
        let definition = &check.definition;
        let new_status = check.streak.record(
            check.status,
            done.result.status,
            definition.success_before_passing,
            definition.failures_before_critical,
        );
        // Below a threshold the status stands, and so does the output that
        // explains it: a lone failure does not rewrite a passing check.
        let explains = done.result.status == new_status && done.result.output != check.last_output;
        if new_status != check.status || explains {
            check.last_output.clone_from(&done.result.output);
            let command = Command::CheckResult {
                service: None,
                id: check.instance.clone(),
                check_id: Some(definition.id.clone()),
                status: new_status,
                output: done.result.output,
                from: Reporter::Checker,
            };
            self.registry.submit(command).await;
        }
        self.note_status(done.handle, new_status, now);
        if let Some(due) = self
            .checks
            .get_mut(&done.handle)
            .and_then(|check| check.deferred.take())
        {
            self.launch_probe(done.handle, due);
        }
    }

    async fn expire_ttl(&mut self, handle: Handle, now: Instant) {
        let Some(check) = self.checks.get(&handle) else {
            return;
        };
        let (CheckKind::Ttl { ttl }, Some(deadline)) = (&check.definition.kind, check.ttl_deadline)
        else {
            return;
        };
        if deadline > now {
            return; // A heartbeat moved the deadline; a later entry covers it.
        }
        let command = Command::CheckResult {
            service: None,
            id: check.instance.clone(),
            check_id: Some(check.definition.id.clone()),
            status: Status::Critical,
            output: format!(
                "TTL expired: no heartbeat for {}",
                format_go_duration(ttl.0)
            ),
            from: Reporter::Checker,
        };
        self.registry.submit(command).await;
        self.note_status(handle, Status::Critical, now);
    }

    async fn reap(&mut self, handle: Handle, now: Instant) {
        let Some(check) = self.checks.get(&handle) else {
            return;
        };
        let (Some(since), Some(after)) = (
            check.critical_since,
            check.definition.deregister_critical_after,
        ) else {
            return;
        };
        if now.duration_since(since) < after.0 {
            return;
        }
        info!(
            instance = %check.instance.as_str(),
            check = %check.definition.id,
            after = %format_go_duration(after.0),
            "deregistering an instance critical for too long"
        );
        self.metrics.reaped.fetch_add(1, Relaxed);
        let command = Command::Deregister {
            service: None,
            id: check.instance.clone(),
        };
        self.registry.submit(command).await;
    }
}
