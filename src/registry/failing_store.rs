//! A store whose commits fail on demand, for tests of the writer's
//! store-error path (a full disk, an fsync error) and of the health
//! checker's reaction to a result the registry could not keep.
//!
//! A failing commit still writes its batch before it answers the error: an
//! fsync error says nothing of what reached the disk, and that is the case
//! the writer's `in_doubt` rewrite exists for. Test-only; must not be used
//! by anything that serves.

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering::SeqCst},
};

use super::store::{Loaded, MemoryStore, Mutation, Store, StoreError};

/// A [`MemoryStore`] whose next commits can be made to fail.
#[derive(Default)]
pub(crate) struct FailingStore {
    /// What a real disk would hold, failed commits' batches included.
    inner: MemoryStore,
    /// How many of the next commits fail. Atomic: the test sets it while
    /// the writer commits from its own thread.
    failures_left: AtomicUsize,
    /// How many of the next commits panic (after writing their batch).
    panics_left: AtomicUsize,
    /// Every batch handed to `commit`, failed ones included, in order, with
    /// the name of the thread that committed it. Std mutex: held only to
    /// push or copy, never across an await.
    batches: Mutex<Vec<(Vec<Mutation>, Option<String>)>>,
}

impl FailingStore {
    /// Makes the next `count` commits fail.
    pub(crate) fn fail_next(&self, count: usize) {
        self.failures_left.store(count, SeqCst);
    }

    /// Makes the next `count` commits panic, as a store's bug would.
    pub(crate) fn panic_next(&self, count: usize) {
        self.panics_left.store(count, SeqCst);
    }

    /// Every batch `commit` was given so far.
    pub(crate) fn batches(&self) -> Vec<Vec<Mutation>> {
        let batches = self.batches.lock();
        batches
            .map(|b| b.iter().map(|(batch, _)| batch.clone()).collect())
            .unwrap_or_default()
    }

    /// The name of the thread each commit ran on, in order.
    pub(crate) fn commit_threads(&self) -> Vec<Option<String>> {
        let batches = self.batches.lock();
        batches
            .map(|b| b.iter().map(|(_, thread)| thread.clone()).collect())
            .unwrap_or_default()
    }
}

impl Store for FailingStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load()
    }

    fn commit(&self, batch: &[Mutation], index: u64) -> Result<(), StoreError> {
        if let Ok(mut batches) = self.batches.lock() {
            let thread = std::thread::current().name().map(str::to_owned);
            batches.push((batch.to_vec(), thread));
        }
        self.inner.commit(batch, index)?;
        let panic = self
            .panics_left
            .fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1))
            .is_ok();
        if panic {
            panic!("injected panic: the batch was written, then the store panicked");
        }
        let fail = self
            .failures_left
            .fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StoreError::Write {
                path: "failing store".into(),
                source: "injected failure: the batch was written but not synced".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hickory_proto::rr::Name;
    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        metrics::Metrics,
        model::{Instance, InstanceBody, InstanceId, Status},
        registry::{Command, InOtherService, Registry, RegistryEvent, Reporter, TableSettings},
    };

    fn settings() -> TableSettings {
        TableSettings {
            domain: Name::from_ascii("service.local.").expect("valid name"),
            ttl: 30,
            negative_ttl: 5,
            include_warning: false,
            nameserver: std::sync::Arc::new(crate::dns::table::Nameserver::conventional(
                &Name::from_ascii("service.local.").expect("valid name"),
            )),
        }
    }

    fn instance(id: &str) -> Instance {
        let body: InstanceBody = serde_json::from_str(
            r#"{"address":"10.0.0.1","port":80,"check":{"ttl":"30s","status":"passing"}}"#,
        )
        .expect("valid body");
        body.validate("web", id).expect("valid instance")
    }

    fn register(id: &str) -> Command {
        Command::Register {
            instance: instance(id),
            in_other_service: InOtherService::Refuse,
        }
    }

    /// A registry on `store` whose events go nowhere, and its writer.
    async fn started(store: &Arc<FailingStore>) -> (Registry, tokio::task::JoinHandle<()>) {
        let (events, _) = mpsc::unbounded_channel();
        Registry::start(
            store.clone(),
            settings(),
            events,
            Arc::new(Metrics::default()),
        )
        .await
        .expect("start")
    }

    fn stored_ids(store: &FailingStore) -> Vec<String> {
        let loaded = store.load().expect("load");
        let mut ids: Vec<String> = loaded.instances.into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    }

    fn deletes(batch: &[Mutation]) -> Vec<&str> {
        batch
            .iter()
            .filter_map(|m| match m {
                Mutation::Delete { id } => Some(id.as_str()),
                Mutation::Put(_) => None,
            })
            .collect()
    }

    /// Drains the events the writer sent so far.
    fn drain(events: &mut mpsc::UnboundedReceiver<RegistryEvent>) -> Vec<RegistryEvent> {
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_failed_commit_answers_an_error_publishes_nothing_and_is_reconciled_by_the_next() {
        let store = Arc::new(FailingStore::default());
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (registry, writer) = Registry::start(
            store.clone(),
            settings(),
            events_tx,
            Arc::new(Metrics::default()),
        )
        .await
        .expect("start");
        registry.execute(register("a")).await.expect("register a");
        drain(&mut events);
        let index = registry.state().index;
        let table_index = registry.table().load().index;
        let mut watched = registry.watch_index();
        watched.borrow_and_update();

        // The commit fails after its batch reached the "disk".
        store.fail_next(1);
        let failed = registry.execute(register("b")).await;
        assert!(failed.is_err(), "a write whose commit failed is refused");
        assert!(registry.state().instance("b").is_none());
        assert_eq!(registry.state().index, index, "nothing is published");
        assert_eq!(registry.table().load().index, table_index);
        assert!(!watched.has_changed().expect("registry alive"));
        assert!(
            drain(&mut events).is_empty(),
            "the checker hears of no instance the registry refused"
        );
        assert_eq!(
            stored_ids(&store),
            ["a", "b"],
            "the failed batch half-applied"
        );

        // The store recovers: the next write succeeds and also rewrites the
        // in-doubt ID as the registry holds it (absent: deleted).
        registry.execute(register("c")).await.expect("register c");
        assert!(registry.state().instance("c").is_some());
        assert!(registry.state().index > index);
        let batches = store.batches();
        let last = batches.last().expect("a commit");
        assert_eq!(deletes(last), ["b"], "{last:?}");
        assert_eq!(stored_ids(&store), ["a", "c"]);

        // A later commit has nothing left in doubt.
        registry.execute(register("d")).await.expect("register d");
        let batches = store.batches();
        assert!(deletes(batches.last().expect("a commit")).is_empty());

        drop(registry);
        writer.await.expect("writer ends");
    }

    #[tokio::test]
    async fn the_checker_hears_not_applied_for_its_results_lost_with_a_failed_commit() {
        let store = Arc::new(FailingStore::default());
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (registry, writer) = Registry::start(
            store.clone(),
            settings(),
            events_tx,
            Arc::new(Metrics::default()),
        )
        .await
        .expect("start");
        registry.execute(register("a")).await.expect("register a");
        // A refused write leaves an ID in doubt, so the next batch commits
        // even if it holds only check results (which the store never sees
        // otherwise).
        store.fail_next(1);
        assert!(registry.execute(register("b")).await.is_err());
        drain(&mut events);
        let check_id = registry.state().instance("a").expect("a").instance.checks[0]
            .id
            .clone();

        // The writer runs on a thread of its own: it may take the two
        // submissions below in one batch or in two, so the next two
        // commits fail (a second failure may fall on the probe's batch,
        // whose answer is not looked at).
        store.fail_next(2);
        let before = registry.state();
        registry
            .submit(Command::CheckResult {
                service: None,
                id: InstanceId::parse("a").expect("a valid ID"),
                check_id: Some(check_id.clone()),
                status: Status::Critical,
                output: "TTL expired".into(),
                from: Reporter::Checker,
            })
            .await;
        registry
            .submit(Command::Deregister {
                service: None,
                id: InstanceId::parse("a").expect("a valid ID"),
            })
            .await;
        // A write that waits for its answer is in a later batch than the
        // submissions before it, so once it is answered they were processed.
        let _ = registry.execute(register("probe-barrier")).await;

        let not_applied: Vec<(String, Option<String>)> = drain(&mut events)
            .into_iter()
            .filter_map(|event| match event {
                RegistryEvent::NotApplied { id, check_id } => Some((id, check_id)),
                _ => None,
            })
            .collect();
        assert!(
            not_applied.contains(&("a".to_owned(), None)),
            "the failed reaping is reported: {not_applied:?}"
        );
        assert!(
            not_applied.contains(&("a".to_owned(), Some(check_id))),
            "the failed result is reported: {not_applied:?}"
        );
        let after = registry.state();
        let held = after.instance("a").expect("a was not reaped");
        assert_eq!(
            held.status(),
            before.instance("a").expect("a").status(),
            "the registry kept the status it had"
        );

        drop(registry);
        writer.await.expect("writer ends");
    }

    #[tokio::test]
    async fn commits_run_on_the_writers_own_thread() {
        let store = Arc::new(FailingStore::default());
        let (registry, writer) = started(&store).await;
        registry.execute(register("a")).await.expect("register a");
        registry.execute(register("b")).await.expect("register b");
        // Not a blocking-pool thread: handing each commit to one cost two
        // wake-ups a batch (see `on_own_thread`).
        let threads = store.commit_threads();
        assert_eq!(threads.len(), 2, "{threads:?}");
        for thread in threads {
            assert_eq!(thread.as_deref(), Some("roster-writer"));
        }
        drop(registry);
        writer.await.expect("writer ends");
    }

    #[tokio::test]
    async fn a_commit_that_panics_fails_its_batch_and_the_writer_goes_on() {
        let store = Arc::new(FailingStore::default());
        let (registry, writer) = started(&store).await;
        registry.execute(register("a")).await.expect("register a");

        store.panic_next(1);
        let failed = registry.execute(register("b")).await;
        match failed {
            Err(crate::registry::RegistryError::Store(error)) => {
                assert!(
                    matches!(&*error, StoreError::Crashed(reason) if reason.contains("injected panic")),
                    "{error}"
                );
            }
            other => panic!("a commit that panicked is a failed write: {other:?}"),
        }
        assert!(registry.state().instance("b").is_none());

        // The writer lives on, and rewrites what the panicked commit may
        // have left behind.
        registry.execute(register("c")).await.expect("register c");
        let batches = store.batches();
        assert_eq!(deletes(batches.last().expect("a commit")), ["b"]);
        assert_eq!(stored_ids(&store), ["a", "c"]);

        drop(registry);
        writer.await.expect("the writer ends without a panic");
    }
}
