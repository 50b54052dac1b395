//! The change feed: one etcd watch on the cluster's prefix, from the
//! revision after the last one applied, handed to the registry writer in
//! order. When etcd is out of reach the feed says so and keeps trying; when
//! it comes back, the watch resumes from the next revision, or, if etcd
//! compacted that revision away meanwhile, the whole prefix is listed again
//! and handed over to replace the registry whole.

use std::time::Duration;

use etcd_client::{EventType, KeyValue, WatchOptions};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::etcd::Etcd;

/// What the feed hands the writer.
pub enum FeedItem {
    /// Changes in revision order; `revision` is the last one's.
    Changes { changes: Vec<Change>, revision: i64 },
    /// The watch could not resume where it stopped (etcd compacted the
    /// revision): everything under the prefix, listed at `revision`.
    Reset { kvs: Vec<KeyValue>, revision: i64 },
    /// Whether the feed is following etcd (false: etcd is out of reach and
    /// the registry may be stale).
    Live(bool),
}

/// One key's change.
pub struct Change {
    /// The key's new value and revisions; for a deletion, its key and the
    /// revision it was deleted at.
    pub kv: KeyValue,
    pub deleted: bool,
}

/// Waits between attempts to reach etcd again, growing to the last. The
/// first retry is at once: it goes to the next endpoint, and writes wait
/// for the feed to show them.
const BACKOFF: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// How a watch ended.
enum Ended {
    /// The writer is gone: roster is stopping.
    Closed,
    /// The revision to resume from was compacted.
    Compacted,
    /// etcd failed or went away.
    Failed(String),
}

/// Follows `prefix` from `next` (the first revision not yet applied) until
/// the writer drops its receiver.
pub async fn run(etcd: Etcd, prefix: String, mut next: i64, feed: mpsc::Sender<FeedItem>) {
    let mut failures = 0usize;
    let mut live = true;
    loop {
        let ended = follow(&etcd, &prefix, &mut next, &feed, &mut live, &mut failures).await;
        match ended {
            Ended::Closed => return,
            Ended::Compacted => {
                warn!(
                    revision = next,
                    "etcd compacted the revision the feed resumes from; listing the registry anew"
                );
                match etcd.list(&prefix).await {
                    Ok(listing) => {
                        next = listing.revision + 1;
                        let reset = FeedItem::Reset {
                            kvs: listing.kvs,
                            revision: listing.revision,
                        };
                        if feed.send(reset).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(error) => {
                        if !stale(&feed, &mut live, &error.to_string()).await {
                            return;
                        }
                    }
                }
            }
            Ended::Failed(error) => {
                if !stale(&feed, &mut live, &error).await {
                    return;
                }
            }
        }
        tokio::time::sleep(BACKOFF[failures.min(BACKOFF.len() - 1)]).await;
        failures += 1;
    }
}

/// Tells the writer the feed is no longer live (once per outage). False
/// when the writer is gone.
async fn stale(feed: &mpsc::Sender<FeedItem>, live: &mut bool, error: &str) -> bool {
    if *live {
        warn!(%error, "lost the etcd watch; reconnecting. Until then DNS answers from the last table");
        *live = false;
        return feed.send(FeedItem::Live(false)).await.is_ok();
    }
    !feed.is_closed()
}

async fn follow(
    etcd: &Etcd,
    prefix: &str,
    next: &mut i64,
    feed: &mpsc::Sender<FeedItem>,
    live: &mut bool,
    failures: &mut usize,
) -> Ended {
    let options = WatchOptions::new().with_prefix().with_start_revision(*next);
    let (which, client) = etcd.client().await;
    let mut client = match client {
        Ok(client) => client,
        Err(error) => {
            etcd.failed(which);
            return Ended::Failed(etcd.describe(&error));
        }
    };
    let watch = tokio::time::timeout(
        super::etcd::REQUEST_TIMEOUT,
        client.watch(prefix.as_bytes().to_vec(), Some(options)),
    )
    .await;
    // Any failure moves the next attempt to another endpoint: a watch
    // that ended says nothing good about the member it was on.
    let mut stream = match watch {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            etcd.failed(which);
            return Ended::Failed(etcd.describe(&error));
        }
        Err(_) => {
            etcd.failed(which);
            return Ended::Failed("no answer to the watch request".into());
        }
    };
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = feed.closed() => return Ended::Closed,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                etcd.failed(which);
                return Ended::Failed("etcd ended the watch".into());
            }
            Err(error) => {
                etcd.failed(which);
                return Ended::Failed(error.to_string());
            }
        };
        if response.compact_revision() > 0 {
            return Ended::Compacted;
        }
        if response.canceled() {
            // etcd 3.4 cancels a watch whose token it no longer knows (a
            // restart, `auth disable` and `enable`) in the stream, as
            // "permission denied", where the etcd client does not sign in
            // again as it does for a call that fails.
            etcd.sign_in_again(&client).await;
            etcd.failed(which);
            return Ended::Failed(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            ));
        }
        if response.created() {
            *failures = 0;
            if !*live {
                info!(revision = *next, "etcd watch resumed; catching up");
                *live = true;
                if feed.send(FeedItem::Live(true)).await.is_err() {
                    return Ended::Closed;
                }
            }
        }
        let changes: Vec<Change> = response
            .events()
            .iter()
            .filter_map(|event| {
                Some(Change {
                    kv: event.kv()?.clone(),
                    deleted: event.event_type() == EventType::Delete,
                })
            })
            .collect();
        let Some(revision) = changes.last().map(|c| c.kv.mod_revision()) else {
            continue;
        };
        *next = revision + 1;
        if feed
            .send(FeedItem::Changes { changes, revision })
            .await
            .is_err()
        {
            return Ended::Closed;
        }
    }
}
