//! The embedded store: one redb file in the data directory.
//!
//! redb gives crash-safe, fsync'd transactions; roster commits one
//! transaction per writer batch (group commit), so durability costs one
//! fsync per batch rather than one per registration. A lock file keeps a
//! second roster off the same directory, since redb itself allows several
//! processes to open one file.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::{Path, PathBuf},
    sync::Mutex,
};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{
    BackendError, Loaded, Mutation, OpenProblem, Store, StoreError, StoreOperation, StoredInstance,
};

/// Instances by ID, as JSON (readable by people, stable across versions).
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// Registry-wide values; `index` is the registry index.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// File names inside the data directory.
pub const STORE_FILE: &str = "roster.redb";
const LOCK_FILE: &str = "roster.lock";

thread_local! {
    /// Set while this thread runs redb code on a file that may be damaged:
    /// redb panics on some corruptions, and roster reports those as errors.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside redb into an error that names the file
/// and says what to do, without the panic's own report on stderr.
fn contain_panics<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|quiet| quiet.get()) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|quiet| quiet.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|quiet| quiet.set(false));
    result.unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown damage");
        Err(StoreError::Open {
            path: path.to_owned(),
            problem: OpenProblem::Damaged(reason.to_owned()),
        })
    })
}

/// A commit (or table set-up) after a panic poisoned the store's lock.
const POISONED_FOR_WRITE: StoreError = StoreError::Unavailable {
    operation: StoreOperation::Write,
    reason: "store lock poisoned",
};
/// A commit with no open database (cannot happen: a failed reopen returns
/// before this is reached).
const NOT_OPEN_FOR_WRITE: StoreError = StoreError::Unavailable {
    operation: StoreOperation::Write,
    reason: "store is not open",
};

/// redb's page cache. roster reads the store only at start-up and keeps
/// everything it serves in memory anyway, so redb's default (1 GiB) would
/// mostly duplicate the registry; a small cache keeps writes fast.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

fn builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

/// An open database and what this handle knows it last wrote.
struct Open {
    db: Database,
    /// The index ceiling the last commit through this handle made durable,
    /// `None` until one has. The ceiling moves once every `INDEX_RESERVE`
    /// index changes, so most commits carry the value already on disk:
    /// those leave the `meta` table alone and write one B-tree fewer (its
    /// page, and its root in the table of tables).
    index: Option<u64>,
}

/// A redb database in a locked data directory.
pub struct EmbeddedStore {
    /// The open database, or `None` after a failed commit until a reopen
    /// succeeds. Std mutex: the registry's single writer is the only one
    /// that commits, from a blocking thread, so it is never contended and
    /// never held across an await.
    db: Mutex<Option<Open>>,
    path: PathBuf,
    /// What the read-only check at open loaded, handed out by the first
    /// `load` instead of reading everything twice. Std mutex: taken once.
    preloaded: Mutex<Option<Loaded>>,
    /// Held for the store's lifetime: the OS releases the lock when roster
    /// exits, even by kill -9, so a crash never leaves a stale lock.
    _lock: File,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_error = |path: &Path, problem: OpenProblem| StoreError::Open {
            path: path.to_owned(),
            problem,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(dir, OpenProblem::CreateDirectory(e)))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_error(&lock_path, OpenProblem::OpenLockFile(e)))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(open_error(dir, OpenProblem::InUse));
            }
            Err(TryLockError::Error(e)) => {
                return Err(open_error(&lock_path, OpenProblem::Lock(e)));
            }
        }
        let path = dir.join(STORE_FILE);
        let created = !path.exists();
        // An existing file is first read through a read-only handle, which
        // never writes: a damaged file is reported exactly as found. Only a
        // file that reads cleanly (or one that needs redb's crash recovery
        // after an unclean stop) is then opened for writing.
        let mut preloaded = None;
        if !created {
            let checked = contain_panics(&path, || match builder().open_read_only(&path) {
                Ok(db) => load_from(&db, &path).map(Ok),
                Err(e) => Ok(Err(e)),
            })?;
            match checked {
                Ok(loaded) => preloaded = Some(loaded),
                Err(DatabaseError::RepairAborted) => {} // recovered below
                Err(e) => return Err(open_error(&path, OpenProblem::Unopenable(e.into()))),
            }
        }
        let db = contain_panics(&path, || {
            if created {
                builder().create(&path)
            } else {
                builder().open(&path)
            }
            .map_err(|e| open_error(&path, OpenProblem::Unopenable(e.into())))
        })?;
        let store = Self {
            db: Mutex::new(Some(Open { db, index: None })),
            path,
            preloaded: Mutex::new(preloaded),
            _lock: lock,
        };
        if created {
            store.ensure_tables()?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ensure_tables(&self) -> Result<(), StoreError> {
        let write = |source: BackendError| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let db = self.db.lock().map_err(|_| POISONED_FOR_WRITE)?;
        let db = &db.as_ref().ok_or(NOT_OPEN_FOR_WRITE)?.db;
        let txn = db.begin_write().map_err(|e| write(e.into()))?;
        txn.open_table(INSTANCES).map_err(|e| write(e.into()))?;
        txn.open_table(META).map_err(|e| write(e.into()))?;
        txn.commit().map_err(|e| write(e.into()))
    }
}

impl Store for EmbeddedStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let preloaded = self.preloaded.lock().ok().and_then(|mut p| p.take());
        match preloaded {
            Some(loaded) => Ok(loaded),
            None => {
                let db = self.db.lock().map_err(|_| StoreError::Unavailable {
                    operation: StoreOperation::Read,
                    reason: "store lock poisoned",
                })?;
                let db = &db
                    .as_ref()
                    .ok_or(StoreError::Unavailable {
                        operation: StoreOperation::Read,
                        reason: "store is not open",
                    })?
                    .db;
                contain_panics(&self.path, || load_from(db, &self.path))
            }
        }
    }

    /// Commits `batch`. After a failed commit (a full disk, an I/O error)
    /// redb refuses every later transaction ("Previous I/O error"), so the
    /// database is closed and, on the next commit, opened again (redb
    /// repairs it from its last durable commit, which a failed one never
    /// changed) and read through once, before the batch is written: once
    /// space is back, writes resume without a restart. While the disk is
    /// still full the reopen fails too, and so does that commit, clearly.
    fn commit(&self, batch: &[Mutation], index: u64) -> Result<(), StoreError> {
        let mut db = self.db.lock().map_err(|_| POISONED_FOR_WRITE)?;
        if db.is_none() {
            *db = Some(Open {
                db: self.reopen()?,
                index: None,
            });
            tracing::info!(path = %self.path.display(), "store reopened after a failed write");
        }
        let Some(open) = db.as_mut() else {
            return Err(NOT_OPEN_FOR_WRITE);
        };
        // A ceiling this handle already made durable is on disk as it is.
        let new_index = (open.index != Some(index)).then_some(index);
        let committed = commit_to(&open.db, &self.path, batch, new_index);
        match committed {
            Ok(()) => open.index = Some(index),
            // Dropped now: redb allows one open handle per file.
            Err(_) => *db = None,
        }
        committed
    }
}

impl EmbeddedStore {
    /// Opens the database again after a failed commit, and reads it through
    /// to check that what is on disk is whole before writing to it again.
    fn reopen(&self) -> Result<Database, StoreError> {
        let db = contain_panics(&self.path, || {
            builder().open(&self.path).map_err(|e| StoreError::Reopen {
                path: self.path.clone(),
                source: e.into(),
            })
        })?;
        contain_panics(&self.path, || load_from(&db, &self.path))?;
        Ok(db)
    }
}

/// Writes one batch in one transaction, and the index ceiling if it is
/// `Some` (a new value).
fn commit_to(
    db: &Database,
    path: &Path,
    batch: &[Mutation],
    index: Option<u64>,
) -> Result<(), StoreError> {
    let write = |source: BackendError| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let txn = db.begin_write().map_err(|e| write(e.into()))?;
    {
        let mut table = txn.open_table(INSTANCES).map_err(|e| write(e.into()))?;
        for mutation in batch {
            match mutation {
                Mutation::Put(instance) => {
                    let bytes = serde_json::to_vec(instance).map_err(|e| write(e.into()))?;
                    table
                        .insert(instance.id.as_str(), bytes.as_slice())
                        .map_err(|e| write(e.into()))?;
                }
                Mutation::Delete { id } => {
                    table.remove(id.as_str()).map_err(|e| write(e.into()))?;
                }
            }
        }
        if let Some(index) = index {
            let mut meta = txn.open_table(META).map_err(|e| write(e.into()))?;
            meta.insert("index", index).map_err(|e| write(e.into()))?;
        }
    }
    // Durability::Immediate (the default): commit returns after fsync.
    txn.commit().map_err(|e| write(e.into()))
}

/// Reads every instance and the index.
fn load_from(db: &impl ReadableDatabase, path: &Path) -> Result<Loaded, StoreError> {
    let read = |source: BackendError| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let txn = db.begin_read().map_err(|e| read(e.into()))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        // A file whose first commit never happened holds nothing yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Loaded::default()),
        Err(e) => return Err(read(e.into())),
    };
    let index = meta
        .get("index")
        .map_err(|e| read(e.into()))?
        .map(|v| v.value())
        .unwrap_or(0);
    let table = txn.open_table(INSTANCES).map_err(|e| read(e.into()))?;
    let mut instances = Vec::new();
    for entry in table.iter().map_err(|e| read(e.into()))? {
        let (key, value) = entry.map_err(|e| read(e.into()))?;
        let instance: StoredInstance =
            serde_json::from_slice(value.value()).map_err(|source| StoreError::Corrupt {
                key: key.value().to_owned(),
                source,
                path: path.to_owned(),
            })?;
        instances.push(instance);
    }
    Ok(Loaded { index, instances })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str) -> StoredInstance {
        StoredInstance {
            service: "web".into(),
            id: id.into(),
            address: "10.0.0.1".parse().expect("ip"),
            address_as_given: None,
            port: 80,
            tags: vec![],
            meta: Default::default(),
            weight: 1,
            priority: 0,
            checks: vec![],
            maintenance: None,
            create_index: 1,
            enable_tag_override: false,
            tagged_addresses: None,
        }
    }

    #[test]
    fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .commit(&[Mutation::Put(stored("a")), Mutation::Put(stored("b"))], 7)
                .expect("commit");
            store
                .commit(&[Mutation::Delete { id: "a".into() }], 8)
                .expect("commit");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.index, 8);
        assert_eq!(loaded.instances, vec![stored("b")]);
    }

    #[test]
    fn an_unchanged_ceiling_stays_as_written_and_a_new_one_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .commit(&[Mutation::Put(stored("a"))], 7)
                .expect("commit");
            // The same ceiling again: the batch is written, the meta table
            // is not touched.
            store
                .commit(&[Mutation::Put(stored("b"))], 7)
                .expect("commit");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.index, 7);
        assert_eq!(loaded.instances, vec![stored("a"), stored("b")]);
        // A fresh handle knows nothing it wrote: its first commit writes
        // the ceiling even when it is the one on disk, and a later new one
        // replaces it.
        store
            .commit(&[Mutation::Delete { id: "a".into() }], 7)
            .expect("commit");
        store.commit(&[], 9).expect("commit");
        drop(store);
        let loaded = EmbeddedStore::open(dir.path())
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(loaded.index, 9);
        assert_eq!(loaded.instances, vec![stored("b")]);
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = EmbeddedStore::open(dir.path()).expect("open");
        let err = EmbeddedStore::open(dir.path()).err().expect("locked");
        assert!(
            matches!(
                &err,
                StoreError::Open {
                    problem: OpenProblem::InUse,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("another roster"), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = b"this is not a redb file, not at all".repeat(200);
        std::fs::write(dir.path().join(STORE_FILE), &garbage).expect("write");
        let err = EmbeddedStore::open(dir.path()).err().expect("corrupt");
        assert!(err.to_string().contains(STORE_FILE), "{err}");
        // Structured: the path is a path, and redb's own error is the
        // source, not text folded into a string.
        match &err {
            StoreError::Open {
                path,
                problem: OpenProblem::Unopenable(source),
            } => {
                assert_eq!(path, &dir.path().join(STORE_FILE));
                assert!(!source.to_string().is_empty());
            }
            other => panic!("expected an unopenable file, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(dir.path().join(STORE_FILE)).expect("read"),
            garbage
        );
    }
}
