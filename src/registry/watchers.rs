//! Wakes the blocking queries that wait on one service when that service
//! changes, and no others.
//!
//! A blocked `health/service/web` must not wake for a change to `db`: with
//! thousands of watchers and hundreds of writes a second, waking all of
//! them for every change is millions of wake-ups (and, before each query
//! had its service's own index, as many full answers) for nothing. Each
//! watched service has one `watch` channel here, made when the first query
//! waits on it and dropped once no query does; the writers ring the
//! channels of the services a published batch touched.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::watch;

use crate::model::DnsLabel;

/// Past this many channels, one without receivers is dropped as soon as a
/// new one is made (below it they wait for their service's next change).
const PRUNE_ABOVE: usize = 1024;

#[derive(Default)]
pub(crate) struct ServiceWatchers {
    /// One channel per watched service. Held only for a map operation,
    /// never across an await.
    channels: Mutex<HashMap<DnsLabel, watch::Sender<()>>>,
}

impl ServiceWatchers {
    /// A receiver that sees a change each time `label`'s service is
    /// published changed, from now on.
    pub(crate) fn subscribe(&self, label: &DnsLabel) -> watch::Receiver<()> {
        let mut channels = self.lock();
        if let Some(sender) = channels.get(label) {
            return sender.subscribe();
        }
        if channels.len() >= PRUNE_ABOVE {
            channels.retain(|_, sender| sender.receiver_count() > 0);
        }
        let (sender, receiver) = watch::channel(());
        channels.insert(label.clone(), sender);
        receiver
    }

    /// Wakes the watchers of every service in `touched`.
    pub(crate) fn notify<'a>(&self, touched: impl IntoIterator<Item = &'a DnsLabel>) {
        let mut channels = self.lock();
        if channels.is_empty() {
            return;
        }
        for label in touched {
            let Some(sender) = channels.get(label) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                channels.remove(label);
            } else {
                sender.send_replace(());
            }
        }
    }

    /// How many services have a channel, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DnsLabel, watch::Sender<()>>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (each operation is one insert or remove): keep using it.
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet as Touched;

    use super::*;

    fn label(name: &str) -> DnsLabel {
        DnsLabel::from_name(name, "service").expect("a valid label")
    }

    #[tokio::test]
    async fn only_the_watchers_of_a_touched_service_wake() {
        let watchers = ServiceWatchers::default();
        let mut web = watchers.subscribe(&label("web"));
        let db = watchers.subscribe(&label("db"));
        watchers.notify(&Touched::from([label("web")]));
        assert!(web.has_changed().expect("open"), "web's watcher wakes");
        assert!(!db.has_changed().expect("open"), "db's does not");
        web.borrow_and_update();
        watchers.notify(&Touched::from([label("db"), label("other")]));
        assert!(db.has_changed().expect("open"));
        assert!(!web.has_changed().expect("open"));
    }

    #[test]
    fn channels_without_watchers_go() {
        let watchers = ServiceWatchers::default();
        drop(watchers.subscribe(&label("web")));
        assert_eq!(watchers.len(), 1);
        watchers.notify(&Touched::from([label("web")]));
        assert_eq!(watchers.len(), 0, "dropped at the service's next change");
        for i in 0..PRUNE_ABOVE + 10 {
            drop(watchers.subscribe(&label(&format!("s{i}"))));
        }
        assert!(watchers.len() <= PRUNE_ABOVE + 1, "{}", watchers.len());
    }
}
