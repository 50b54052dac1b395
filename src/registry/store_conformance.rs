//! What every [`Store`] must do, as one battery of tests any implementation
//! runs (the embedded store, the memory store, and the etcd one to come):
//! puts, deletes, overwrites, a batch applied in order as one change, the
//! index kept as given, and for a durable store, all of it read back after
//! a reopen. Test-only.
//!
//! The battery loads each store once right after opening it, before any
//! commit, as the registry does at start-up: the embedded store answers
//! that first load from what it read while opening, so a `load` right after
//! a commit only shows the commit from the second `load` on.

use std::path::Path;

use super::store::{Loaded, Mutation, Store, StoredInstance};

/// A store kind under test: how to open one over `dir`, and whether what
/// it holds survives being closed and opened again there.
pub(crate) struct Subject {
    /// Opens the store kept in `dir` (a memory store ignores it).
    pub open: fn(&Path) -> Box<dyn Store>,
    /// What was committed survives a reopen of the same `dir`.
    pub durable: bool,
}

fn stored(id: &str, port: u16) -> StoredInstance {
    StoredInstance {
        service: "web".into(),
        id: id.into(),
        address: "10.0.0.1".parse().expect("an IP address"),
        address_as_given: None,
        port,
        tags: vec!["blue".into()],
        meta: [("zone".to_owned(), "a".to_owned())].into(),
        weight: 1,
        priority: 0,
        checks: vec![],
        maintenance: None,
        create_index: 3,
        enable_tag_override: false,
        tagged_addresses: None,
    }
}

fn put(id: &str, port: u16) -> Mutation {
    Mutation::Put(stored(id, port))
}

fn delete(id: &str) -> Mutation {
    Mutation::Delete { id: id.into() }
}

/// What `store` holds, in ID order (the battery does not ask for an order).
fn contents(store: &dyn Store) -> (u64, Vec<StoredInstance>) {
    let Loaded {
        index,
        mut instances,
    } = store.load().expect("load");
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    (index, instances)
}

/// Opens a store of `subject` in `dir` and takes its start-up load.
fn open(subject: &Subject, dir: &Path) -> (Box<dyn Store>, (u64, Vec<StoredInstance>)) {
    let store = (subject.open)(dir);
    let loaded = contents(&*store);
    (store, loaded)
}

/// Runs the whole battery against `subject`.
pub(crate) fn run(subject: &Subject) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, loaded) = open(subject, dir.path());
    assert_eq!(loaded, (0, vec![]), "a new store holds nothing");

    // Puts, and the index as given.
    store
        .commit(&[put("a", 1), put("b", 1)], 10)
        .expect("commit");
    assert_eq!(
        contents(&*store),
        (10, vec![stored("a", 1), stored("b", 1)])
    );

    // An overwrite replaces the whole instance.
    let mut changed = stored("a", 2);
    changed.tags.clear();
    changed.maintenance = Some("drained".into());
    store
        .commit(&[Mutation::Put(changed.clone())], 11)
        .expect("commit");
    assert_eq!(
        contents(&*store),
        (11, vec![changed.clone(), stored("b", 1)])
    );

    // A delete removes; deleting what is absent is no error (the writer
    // rewrites in-doubt IDs as deletes without knowing what the store has).
    store
        .commit(&[delete("b"), delete("never-stored")], 12)
        .expect("commit");
    assert_eq!(contents(&*store), (12, vec![changed.clone()]));

    // A batch applies in order, each mutation over the ones before it.
    store
        .commit(
            &[
                put("c", 1),
                delete("c"),
                delete("d"),
                put("d", 1),
                put("e", 1),
                put("e", 3),
                delete("a"),
            ],
            13,
        )
        .expect("commit");
    let after_batch = (13, vec![stored("d", 1), stored("e", 3)]);
    assert_eq!(contents(&*store), after_batch);

    // A batch with no mutations still records its index (the writer
    // raises its index ceiling that way).
    store.commit(&[], 20_013).expect("commit");
    let last = (20_013, after_batch.1);
    assert_eq!(contents(&*store), last);

    if subject.durable {
        drop(store);
        let (store, reloaded) = open(subject, dir.path());
        assert_eq!(reloaded, last, "a reopened store holds what was committed");
        store.commit(&[put("f", 1)], 20_014).expect("commit");
        drop(store);
        let (_store, reloaded) = open(subject, dir.path());
        assert_eq!(
            reloaded,
            (20_014, vec![stored("d", 1), stored("e", 3), stored("f", 1)]),
            "commits after a reopen are durable too"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EmbeddedStore, MemoryStore, failing_store::FailingStore};

    #[test]
    fn the_embedded_store_conforms() {
        run(&Subject {
            open: |dir| Box::new(EmbeddedStore::open(dir).expect("open")),
            durable: true,
        });
    }

    #[test]
    fn the_memory_store_conforms() {
        run(&Subject {
            open: |_| Box::new(MemoryStore::default()),
            durable: false,
        });
    }

    #[test]
    fn the_failing_store_conforms_while_it_does_not_fail() {
        run(&Subject {
            open: |_| Box::new(FailingStore::default()),
            durable: false,
        });
    }
}
