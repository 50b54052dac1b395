//! Host name resolution with its own concurrency bound.
//!
//! The system resolver (`getaddrinfo`) blocks, so tokio runs each lookup on
//! its blocking pool. Consul registrations with a hostname `Address`, HTTP
//! checks and TCP checks all resolve names; unbounded, a burst of slow
//! lookups took every blocking thread, and every durable write stalled
//! (8.4 s above ~512 in flight) while the store's commits ran on that pool.
//! They run on the registry writer's own thread now, but each lookup in
//! flight is still a thread: every lookup in roster goes through
//! [`Resolver::shared`], which lets at most [`MAX_IN_FLIGHT`] run at once
//! and makes the rest wait at most [`WAIT_LIMIT`] for a turn, so a burst
//! costs a few threads and a clear error, not hundreds.
//!
//! A lookup holds its permit until `getaddrinfo` returns, even when the
//! caller has given up (timed out, dropped the request): the thread is busy
//! until then, and the bound is on threads, not on callers.
//!
//! Owns: the lookup permits. Must not: cache answers (the system resolver
//! and its TTLs decide freshness).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Semaphore;

/// Lookups running at once, across the process: a small share of tokio's
/// 512 blocking threads, and plenty for registrations and checks, whose
/// names are few and usually answered from `/etc/hosts` or a local cache.
pub const MAX_IN_FLIGHT: usize = 16;
/// How long a lookup waits for a turn before it fails as [`ResolveError::Busy`].
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "too many host name lookups are in flight ({MAX_IN_FLIGHT} at once); retry later, or give an IP address"
    )]
    Busy,
    #[error("resolving it timed out")]
    TimedOut,
    #[error("cannot resolve it: {0}")]
    Failed(#[source] io::Error),
}

/// A bounded gateway to the system resolver; see the module doc.
pub struct Resolver {
    /// One permit per lookup allowed to run; a semaphore rather than a
    /// queue of our own because waiters must be able to give up (timeout,
    /// dropped request) without leaving anything behind.
    permits: Arc<Semaphore>,
    /// The most lookups seen running at once, for tests and diagnostics; an
    /// atomic because it is only ever raised, from any task.
    peak: Arc<AtomicUsize>,
    max_in_flight: usize,
    wait_limit: Duration,
}

static SHARED: LazyLock<Resolver> = LazyLock::new(|| Resolver::new(MAX_IN_FLIGHT, WAIT_LIMIT));

impl Resolver {
    /// A resolver running at most `max_in_flight` lookups, each waiting at
    /// most `wait_limit` for its turn.
    pub fn new(max_in_flight: usize, wait_limit: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            peak: Arc::new(AtomicUsize::new(0)),
            max_in_flight,
            wait_limit,
        }
    }

    /// The process's resolver. Process-wide because the blocking pool it
    /// protects is shared by everything roster runs.
    pub fn shared() -> &'static Resolver {
        &SHARED
    }

    /// The most lookups that have run at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Resolves `host` (a name or an address literal) with `port`, giving
    /// up after `timeout` in all (waiting included).
    pub async fn lookup(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let host = host.to_owned();
        self.run(timeout, async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(Iterator::collect)
        })
        .await
    }

    /// Runs `lookup` under a permit. The lookup runs as its own task, which
    /// keeps the permit until the lookup ends even if this caller stops
    /// waiting for it.
    async fn run<F>(&self, timeout: Duration, lookup: F) -> Result<Vec<SocketAddr>, ResolveError>
    where
        F: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let wait = self.wait_limit.min(timeout);
        let permit = match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it as busy if it were.
            Ok(Err(_)) => return Err(ResolveError::Busy),
            Err(_) if wait < timeout => return Err(ResolveError::Busy),
            Err(_) => return Err(ResolveError::TimedOut),
        };
        let running = self.max_in_flight - self.permits.available_permits();
        self.peak.fetch_max(running, Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let _permit = permit;
            lookup.await
        });
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(ResolveError::TimedOut),
            Ok(Err(join)) => Err(ResolveError::Failed(io::Error::other(join))),
            Ok(Ok(result)) => result.map_err(ResolveError::Failed),
        }
    }
}

/// reqwest's hook: HTTP checks' host names go through the shared resolver.
pub struct CheckResolver {
    /// Bounds one lookup; the request's own timeout still applies on top.
    pub timeout: Duration,
}

impl reqwest::dns::Resolve for CheckResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let timeout = self.timeout;
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let found = Resolver::shared().lookup(&host, 0, timeout).await?;
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    /// A lookup that counts how many run at once and ends when released.
    async fn held_lookup(
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        release: Arc<Notify>,
    ) -> io::Result<Vec<SocketAddr>> {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        release.notified().await;
        running.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
    }

    #[tokio::test]
    async fn no_more_than_the_bound_run_at_once_and_the_rest_wait_or_fail_busy() {
        // Short limits on the real clock (tokio's test-util is not enabled);
        // nothing below depends on how long anything takes.
        let resolver = Arc::new(Resolver::new(4, Duration::from_millis(50)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let mut callers = Vec::new();
        for _ in 0..20 {
            let resolver = resolver.clone();
            let lookup = held_lookup(running.clone(), most.clone(), release.clone());
            callers.push(tokio::spawn(async move {
                resolver.run(Duration::from_millis(200), lookup).await
            }));
        }
        // Let every caller reach the semaphore, then check the bound.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(running.load(Ordering::SeqCst), 4);
        // Nothing is released: the 16 waiters give up as busy after the
        // wait limit, and the 4 running lookups time out.
        let mut busy = 0;
        let mut timed_out = 0;
        for caller in callers {
            match caller.await.expect("caller task") {
                Err(ResolveError::Busy) => busy += 1,
                Err(ResolveError::TimedOut) => timed_out += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((busy, timed_out), (16, 4));
        assert_eq!(most.load(Ordering::SeqCst), 4);
        assert_eq!(resolver.peak_in_flight(), 4);
        // The timed-out lookups still hold their permits: the threads they
        // stand for are still busy.
        assert_eq!(resolver.permits.available_permits(), 0);
        release.notify_waiters();
        let all_back = resolver.permits.acquire_many(4);
        let _permits = tokio::time::timeout(Duration::from_secs(20), all_back)
            .await
            .expect("permits come back once the lookups end")
            .expect("semaphore open");
    }

    #[tokio::test]
    async fn waiters_get_their_turn_when_lookups_end() {
        let resolver = Arc::new(Resolver::new(2, Duration::from_secs(30)));
        let mut callers = Vec::new();
        for _ in 0..10 {
            let resolver = resolver.clone();
            callers.push(tokio::spawn(async move {
                resolver
                    .run(Duration::from_secs(60), async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
                    })
                    .await
            }));
        }
        for caller in callers {
            assert!(caller.await.expect("caller task").is_ok());
        }
        assert_eq!(resolver.peak_in_flight(), 2);
    }

    #[tokio::test]
    async fn localhost_resolves() {
        let found = Resolver::shared()
            .lookup("localhost", 80, Duration::from_secs(5))
            .await
            .expect("localhost resolves");
        assert!(found.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
