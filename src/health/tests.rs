//! The scheduler on tokio's paused clock, with a scripted prober and the
//! real registry over a [`FailingStore`]: every time below is exact, in
//! virtual time, and no test waits in real time.
//!
//! How the tests read results: on a paused clock the runtime runs every
//! ready task before it moves the clock, so once a probe (or a deadline) has
//! fired, its result is through the registry before the next timer. Tests
//! read the registry between timers (or wait on its index), never at the
//! instant a probe starts, when the order of ready tasks would decide.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use hickory_proto::rr::Name;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep, sleep_until, timeout},
};

use super::{HealthChecker, ProbeResult, Prober, Probing, RETRY_AFTER_STORE_FAILURE};
use crate::{
    metrics::Metrics,
    model::{CheckKind, GoDuration, Instance, InstanceBody, InstanceId, MIN_INTERVAL, Status},
    registry::{
        Command, InOtherService, Registry, RegistryState, Reporter, TableSettings,
        failing_store::FailingStore,
    },
};

/// The longest any wait below may take, in virtual time: far beyond every
/// schedule the tests set up, so only a scheduler that never acts hits it.
const WAIT_LIMIT: Duration = Duration::from_secs(3600);

/// One probe the scheduler started: its target (URL or address) and when.
type Call = (String, Instant);

/// A prober that answers from a script, per target, and reports each call.
struct ScriptedProber {
    /// Results still to give, per target; once a target's run out (or it
    /// has none), `otherwise`.
    script: Mutex<HashMap<String, VecDeque<Status>>>,
    /// The result for targets without a script left.
    otherwise: Status,
    /// Never answer: each probe waits until it is cancelled.
    hang: bool,
    /// Panic instead of answering, as a buggy prober would.
    panic: bool,
    /// Probes started and not yet ended (finished or dropped).
    running: Arc<AtomicUsize>,
    /// Where each call is reported.
    calls: mpsc::UnboundedSender<Call>,
}

/// Decrements `running` when a probe's future ends or is dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Prober for ScriptedProber {
    fn probe(&self, kind: &CheckKind, _timeout: Duration) -> Probing {
        let target = match kind {
            CheckKind::Http { url, .. } => url.clone(),
            CheckKind::Tcp { address, .. } => address.clone(),
            CheckKind::Ttl { .. } => panic!("the scheduler probed a TTL check"),
        };
        let status = self
            .script
            .lock()
            .expect("script lock")
            .get_mut(&target)
            .and_then(VecDeque::pop_front)
            .unwrap_or(self.otherwise);
        let _ = self.calls.send((target.clone(), Instant::now()));
        self.running.fetch_add(1, SeqCst);
        let running = Running(self.running.clone());
        let hang = self.hang;
        let panic = self.panic;
        Box::pin(async move {
            let _running = running;
            if hang {
                std::future::pending::<()>().await;
            }
            assert!(!panic, "scripted panic probing {target}");
            ProbeResult {
                status,
                output: format!("scripted {target}: {status:?}"),
            }
        })
    }
}

/// A checker over a real registry, probing through a script.
struct Harness {
    registry: Registry,
    checker: HealthChecker,
    store: Arc<FailingStore>,
    /// Every probe the scheduler started, in order.
    calls: mpsc::UnboundedReceiver<Call>,
    /// Probes running right now.
    running: Arc<AtomicUsize>,
}

struct Script {
    per_target: Vec<(&'static str, Vec<Status>)>,
    otherwise: Status,
    hang: bool,
    panic: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            per_target: Vec::new(),
            otherwise: Status::Passing,
            hang: false,
            panic: false,
        }
    }
}

async fn start(script: Script) -> Harness {
    let store = Arc::new(FailingStore::default());
    let metrics = Arc::new(Metrics::default());
    let (events_tx, events) = mpsc::unbounded_channel();
    let settings = TableSettings {
        domain: Name::from_ascii("service.local.").expect("valid name"),
        ttl: 30,
        negative_ttl: 5,
        include_warning: false,
        nameserver: std::sync::Arc::new(crate::dns::table::Nameserver::conventional(
            &Name::from_ascii("service.local.").expect("valid name"),
        )),
    };
    let (registry, _writer) =
        Registry::start_in_task(store.clone(), settings, events_tx, metrics.clone())
            .await
            .expect("registry starts");
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let running = Arc::new(AtomicUsize::new(0));
    let prober = ScriptedProber {
        script: Mutex::new(
            script
                .per_target
                .into_iter()
                .map(|(target, results)| (target.to_owned(), results.into()))
                .collect(),
        ),
        otherwise: script.otherwise,
        hang: script.hang,
        panic: script.panic,
        running: running.clone(),
        calls: calls_tx,
    };
    let checker =
        HealthChecker::start_with(registry.clone(), events, metrics, Arc::new(prober), None);
    Harness {
        registry,
        checker,
        store,
        calls,
        running,
    }
}

/// An instance of `web` at 10.0.0.1:80 with the one check `check` (JSON).
fn instance(id: &str, check: &str) -> Instance {
    let body: InstanceBody = serde_json::from_str(&format!(
        r#"{{"address":"10.0.0.1","port":80,"check":{check}}}"#
    ))
    .expect("valid body");
    body.validate("web", id).expect("valid instance")
}

impl Harness {
    async fn register(&self, instance: Instance) {
        self.registry
            .execute(Command::Register {
                instance,
                in_other_service: InOtherService::Refuse,
            })
            .await
            .expect("registered");
    }

    async fn heartbeat(&self, id: &str) {
        self.registry
            .execute(Command::CheckResult {
                service: None,
                id: InstanceId::parse(id).expect("a valid ID"),
                check_id: None,
                status: Status::Passing,
                output: "alive".into(),
                from: Reporter::Service,
            })
            .await
            .expect("heartbeat taken");
    }

    /// The status the registry holds for `id`, `None` once it is gone.
    fn status(&self, id: &str) -> Option<Status> {
        self.registry.state().instance(id).map(|i| i.status())
    }

    /// Waits until the published state satisfies `done`; returns when.
    async fn wait_until(&self, done: impl Fn(&RegistryState) -> bool) -> Instant {
        let mut index = self.registry.watch_index();
        timeout(WAIT_LIMIT, async {
            loop {
                if done(&self.registry.state()) {
                    return Instant::now();
                }
                index.changed().await.expect("registry alive");
            }
        })
        .await
        .expect("the scheduler acted within the limit")
    }

    /// The next probe the scheduler starts.
    async fn next_call(&mut self) -> Call {
        timeout(WAIT_LIMIT, self.calls.recv())
            .await
            .expect("a probe within the limit")
            .expect("the prober is alive")
    }
}

#[tokio::test(start_paused = true)]
async fn a_ttl_check_expires_exactly_one_ttl_after_registration_without_a_heartbeat() {
    let h = start(Script::default()).await;
    h.register(instance("a", r#"{"ttl":"10s","status":"passing"}"#))
        .await;
    let registered = Instant::now();

    sleep(Duration::from_millis(9_999)).await;
    assert_eq!(h.status("a"), Some(Status::Passing), "within the TTL");

    let expired = h
        .wait_until(|s| s.instance("a").map(|i| i.status()) == Some(Status::Critical))
        .await;
    assert_eq!(expired - registered, Duration::from_secs(10));
    let state = h.registry.state();
    let output = &state.instance("a").expect("a").checks[0].output;
    assert!(output.contains("TTL expired"), "{output}");
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_restarts_the_ttl() {
    let h = start(Script::default()).await;
    h.register(instance("a", r#"{"ttl":"10s","status":"passing"}"#))
        .await;
    let registered = Instant::now();

    sleep(Duration::from_secs(6)).await;
    h.heartbeat("a").await;
    sleep_until(registered + Duration::from_millis(10_001)).await;
    assert_eq!(
        h.status("a"),
        Some(Status::Passing),
        "the first deadline passed, deferred by the heartbeat"
    );

    let expired = h
        .wait_until(|s| s.instance("a").map(|i| i.status()) == Some(Status::Critical))
        .await;
    assert_eq!(expired - registered, Duration::from_secs(16));
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn probes_start_at_once_then_at_a_jittered_phase_then_at_exact_cadence() {
    const CHECKS: usize = 20;
    let interval = Duration::from_secs(10);
    let mut h = start(Script::default()).await;
    for n in 0..CHECKS {
        let check = format!(r#"{{"tcp":"10.0.0.1:{}","interval":"10s"}}"#, 1000 + n);
        h.register(instance(&format!("i{n}"), &check)).await;
    }
    let registered = Instant::now();

    let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();
    while seen.len() < CHECKS || seen.values().any(|calls| calls.len() < 3) {
        let (target, at) = h.next_call().await;
        seen.entry(target).or_default().push(at);
    }
    let mut phases = Vec::new();
    for (target, calls) in &seen {
        assert_eq!(
            calls[0], registered,
            "{target}: the first probe runs at once"
        );
        let phase = calls[1] - calls[0];
        assert!(
            phase > Duration::ZERO && phase <= interval,
            "{target}: second probe {phase:?} after the first, outside (0, {interval:?}]"
        );
        assert_eq!(calls[2] - calls[1], interval, "{target}: exact cadence");
        phases.push(phase);
    }
    phases.sort();
    phases.dedup();
    assert!(
        phases.len() > 1,
        "{CHECKS} checks registered together all probe in lockstep"
    );
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_interval_is_floored_to_the_minimum() {
    let mut h = start(Script::default()).await;
    // Validation refuses a zero interval at every door; the scheduler must
    // cope with one anyway, so build it past validation.
    let mut zero = instance("a", r#"{"tcp":"10.0.0.1:80","interval":"1s"}"#);
    match &mut zero.checks[0].kind {
        CheckKind::Tcp { interval, .. } => *interval = GoDuration(Duration::ZERO),
        other => panic!("expected a TCP check, got {other:?}"),
    }
    h.register(zero).await;

    let mut calls = Vec::new();
    for _ in 0..5 {
        calls.push(h.next_call().await.1);
    }
    let phase = calls[1] - calls[0];
    assert!(
        phase > Duration::ZERO && phase <= MIN_INTERVAL,
        "second probe {phase:?} after the first"
    );
    for pair in calls[1..].windows(2) {
        assert_eq!(pair[1] - pair[0], MIN_INTERVAL);
    }
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_when_probe_results_change_the_registry() {
    use Status::{Critical, Passing};
    let mut h = start(Script {
        per_target: vec![(
            "10.0.0.1:80",
            // The first probe, at once, confirms the starting status; the
            // rest run at an exact one-second cadence.
            vec![
                Passing, Critical, Critical, Critical, Passing, Critical, Passing, Passing,
            ],
        )],
        ..Script::default()
    })
    .await;
    h.register(instance(
        "a",
        r#"{"tcp":"10.0.0.1:80","interval":"1s","status":"passing",
            "failures_before_critical":3,"success_before_passing":2}"#,
    ))
    .await;

    h.next_call().await;
    let mut held = Vec::new();
    for _ in 0..7 {
        h.next_call().await;
        // Half a round later, this probe is recorded and the next not run.
        sleep(Duration::from_millis(500)).await;
        held.push(h.status("a").expect("registered"));
    }
    assert_eq!(
        held,
        [
            Passing, Passing, Critical, // the third failure in a row
            Critical, Critical, Critical, // one success, a failure, one success
            Passing,  // the second success in a row
        ]
    );
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_critical_for_deregister_critical_after_is_reaped_then() {
    let h = start(Script {
        otherwise: Status::Critical,
        ..Script::default()
    })
    .await;
    h.register(instance(
        "a",
        r#"{"tcp":"10.0.0.1:80","interval":"1s","deregister_critical_after":"30s"}"#,
    ))
    .await;
    // Kept as a witness: an instance that stays healthy is never reaped.
    h.register(instance(
        "b",
        r#"{"ttl":"1h","status":"passing","deregister_critical_after":"30s"}"#,
    ))
    .await;
    let registered = Instant::now();

    sleep(Duration::from_millis(29_999)).await;
    assert_eq!(h.status("a"), Some(Status::Critical), "not reaped yet");

    let reaped = h.wait_until(|s| s.instance("a").is_none()).await;
    assert_eq!(
        reaped - registered,
        Duration::from_secs(30),
        "critical from registration on"
    );
    assert_eq!(h.status("b"), Some(Status::Passing));
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_ttl_expiry_the_store_failed_to_keep_is_tried_again() {
    let h = start(Script::default()).await;
    h.register(instance("a", r#"{"ttl":"10s","status":"passing"}"#))
        .await;
    let registered = Instant::now();
    // A refused write leaves an ID in doubt, so the expiry's batch commits
    // (check results alone never reach the store), and that commit fails.
    h.store.fail_next(1);
    let refused = h
        .registry
        .execute(Command::Register {
            instance: instance("b", r#"{"ttl":"10s"}"#),
            in_other_service: InOtherService::Refuse,
        })
        .await;
    assert!(refused.is_err());
    h.store.fail_next(1);

    sleep_until(registered + Duration::from_millis(10_500)).await;
    assert_eq!(
        h.status("a"),
        Some(Status::Passing),
        "the expiry was rejected with its batch"
    );

    let expired = h
        .wait_until(|s| s.instance("a").map(|i| i.status()) == Some(Status::Critical))
        .await;
    assert_eq!(
        expired - registered,
        Duration::from_secs(10) + RETRY_AFTER_STORE_FAILURE
    );
    h.checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_probe_runs_after_the_checker_stops() {
    let mut h = start(Script {
        hang: true,
        ..Script::default()
    })
    .await;
    h.register(instance(
        "a",
        r#"{"tcp":"10.0.0.1:80","interval":"1s","timeout":"1s"}"#,
    ))
    .await;
    h.next_call().await;
    assert_eq!(h.running.load(SeqCst), 1, "a probe is in flight");

    h.checker.stop().await;
    assert_eq!(
        h.running.load(SeqCst),
        0,
        "stopping cancelled the probe in flight"
    );
    sleep(Duration::from_secs(60)).await;
    assert!(
        h.calls.try_recv().is_err(),
        "no probe started after the checker stopped"
    );
    assert_eq!(h.running.load(SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_panics_counts_as_critical_and_the_check_keeps_its_schedule() {
    let mut h = start(Script {
        panic: true,
        ..Script::default()
    })
    .await;
    h.register(instance(
        "a",
        r#"{"tcp":"10.0.0.1:80","interval":"10s","status":"passing"}"#,
    ))
    .await;

    h.wait_until(|s| s.instance("a").map(|i| i.status()) == Some(Status::Critical))
        .await;
    let state = h.registry.state();
    let output = &state.instance("a").expect("a").checks[0].output;
    assert!(output.contains("the probe failed unexpectedly"), "{output}");
    // Not left in flight: the check is probed again, and again.
    for _ in 0..3 {
        h.next_call().await;
    }
    h.checker.stop().await;
}
