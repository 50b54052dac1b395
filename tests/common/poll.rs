//! Waiting for a state to show: poll, with an overall limit, and fail with
//! what was last seen. The limit is a hang guard, never a timing assertion.

use std::{future::Future, time::Duration};

use tokio::time::{Instant, sleep};

/// The usual overall limit of a wait for a state change. Generous: the
/// machine is shared, and these are correctness tests, not benchmarks.
pub const LIMIT: Duration = Duration::from_secs(10);
/// Between two polls.
pub const POLL: Duration = Duration::from_millis(20);

/// What one poll found: done, with a value, or not yet.
pub trait Polled {
    /// What [`eventually`] returns once the poll is done.
    type Value;
    /// `Ok` when done; otherwise `Err` with what was seen instead.
    fn done(self) -> Result<Self::Value, String>;
}

/// `Err` carries what the state was instead, for the failure message.
impl<T> Polled for Result<T, String> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self
    }
}

impl<T> Polled for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_owned())
    }
}

impl Polled for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".to_owned())
        }
    }
}

/// Polls `probe` every [`POLL`] until it is done (`Ok`, `Some` or `true`),
/// failing after `limit` with the last thing it saw.
pub async fn eventually<P, F, Fut>(what: &str, limit: Duration, mut probe: F) -> P::Value
where
    P: Polled,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await.done() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}; last seen: {last}")
            }
            Err(_) => sleep(POLL).await,
        }
    }
}
