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

use super::store::{Loaded, Mutation, Store, StoreError, StoredInstance};

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
            path: path.display().to_string(),
            message: format!("is damaged ({reason}). {DAMAGED_ADVICE}"),
        })
    })
}

/// What to do about a store file roster cannot read.
const DAMAGED_ADVICE: &str = "roster will not replace it: move it aside and restore a backup \
     with `roster import`, or start with an empty data directory";

/// redb's page cache. roster reads the store only at start-up and keeps
/// everything it serves in memory anyway, so redb's default (1 GiB) would
/// mostly duplicate the registry; a small cache keeps writes fast.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

fn builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

/// A redb database in a locked data directory.
pub struct EmbeddedStore {
    /// The open database, or `None` after a failed commit until a reopen
    /// succeeds. Std mutex: the registry's single writer is the only one
    /// that commits, from a blocking thread, so it is never contended and
    /// never held across an await.
    db: Mutex<Option<Database>>,
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
        let open_error = |path: &Path, message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(dir, format!("cannot create the data directory: {e}")))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_error(&lock_path, format!("cannot open the lock file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(open_error(
                    dir,
                    "is in use by another roster process; stop it, or give this one its own --data-dir"
                        .into(),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(open_error(&lock_path, format!("cannot lock: {e}")));
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
                Err(e) => {
                    return Err(open_error(
                        &path,
                        format!("cannot be opened: {e}. It may be damaged: {DAMAGED_ADVICE}"),
                    ));
                }
            }
        }
        let db = contain_panics(&path, || {
            if created {
                builder().create(&path)
            } else {
                builder().open(&path)
            }
            .map_err(|e| {
                open_error(
                    &path,
                    format!("cannot be opened: {e}. It may be damaged: {DAMAGED_ADVICE}"),
                )
            })
        })?;
        let store = Self {
            db: Mutex::new(Some(db)),
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
        let write =
            |e: &dyn std::fmt::Display| StoreError::Write(format!("{}: {e}", self.path.display()));
        let db = self
            .db
            .lock()
            .map_err(|_| StoreError::Write("store lock poisoned".into()))?;
        let db = db
            .as_ref()
            .ok_or_else(|| StoreError::Write("store is not open".into()))?;
        let txn = db.begin_write().map_err(|e| write(&e))?;
        txn.open_table(INSTANCES).map_err(|e| write(&e))?;
        txn.open_table(META).map_err(|e| write(&e))?;
        txn.commit().map_err(|e| write(&e))
    }
}

impl Store for EmbeddedStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let preloaded = self.preloaded.lock().ok().and_then(|mut p| p.take());
        match preloaded {
            Some(loaded) => Ok(loaded),
            None => {
                let db = self
                    .db
                    .lock()
                    .map_err(|_| StoreError::Read("store lock poisoned".into()))?;
                let db = db
                    .as_ref()
                    .ok_or_else(|| StoreError::Read("store is not open".into()))?;
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
        let mut db = self
            .db
            .lock()
            .map_err(|_| StoreError::Write("store lock poisoned".into()))?;
        if db.is_none() {
            *db = Some(self.reopen()?);
            tracing::info!(path = %self.path.display(), "store reopened after a failed write");
        }
        let Some(open) = db.as_ref() else {
            return Err(StoreError::Write("store is not open".into()));
        };
        let committed = commit_to(open, &self.path, batch, index);
        if committed.is_err() {
            // Dropped now: redb allows one open handle per file.
            *db = None;
        }
        committed
    }
}

impl EmbeddedStore {
    /// Opens the database again after a failed commit, and reads it through
    /// to check that what is on disk is whole before writing to it again.
    fn reopen(&self) -> Result<Database, StoreError> {
        let not_yet = |e: &dyn std::fmt::Display| {
            StoreError::Write(format!(
                "{} cannot be reopened after a failed write: {e}; it is retried with the next write",
                self.path.display()
            ))
        };
        let db = contain_panics(&self.path, || {
            builder().open(&self.path).map_err(|e| not_yet(&e))
        })?;
        contain_panics(&self.path, || load_from(&db, &self.path))?;
        Ok(db)
    }
}

/// Writes one batch in one transaction.
fn commit_to(db: &Database, path: &Path, batch: &[Mutation], index: u64) -> Result<(), StoreError> {
    let write = |e: &dyn std::fmt::Display| StoreError::Write(format!("{}: {e}", path.display()));
    let txn = db.begin_write().map_err(|e| write(&e))?;
    {
        let mut table = txn.open_table(INSTANCES).map_err(|e| write(&e))?;
        for mutation in batch {
            match mutation {
                Mutation::Put(instance) => {
                    let bytes = serde_json::to_vec(instance).map_err(|e| write(&e))?;
                    table
                        .insert(instance.id.as_str(), bytes.as_slice())
                        .map_err(|e| write(&e))?;
                }
                Mutation::Delete { id } => {
                    table.remove(id.as_str()).map_err(|e| write(&e))?;
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(|e| write(&e))?;
        meta.insert("index", index).map_err(|e| write(&e))?;
    }
    // Durability::Immediate (the default): commit returns after fsync.
    txn.commit().map_err(|e| write(&e))
}

/// Reads every instance and the index.
fn load_from(db: &impl ReadableDatabase, path: &Path) -> Result<Loaded, StoreError> {
    let read = |e: &dyn std::fmt::Display| StoreError::Read(format!("{}: {e}", path.display()));
    let txn = db.begin_read().map_err(|e| read(&e))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        // A file whose first commit never happened holds nothing yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Loaded::default()),
        Err(e) => return Err(read(&e)),
    };
    let index = meta
        .get("index")
        .map_err(|e| read(&e))?
        .map(|v| v.value())
        .unwrap_or(0);
    let table = txn.open_table(INSTANCES).map_err(|e| read(&e))?;
    let mut instances = Vec::new();
    for entry in table.iter().map_err(|e| read(&e))? {
        let (key, value) = entry.map_err(|e| read(&e))?;
        let instance: StoredInstance =
            serde_json::from_slice(value.value()).map_err(|e| StoreError::Corrupt {
                key: key.value().to_owned(),
                message: format!("{e}"),
                path: path.display().to_string(),
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
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = EmbeddedStore::open(dir.path()).expect("open");
        let err = EmbeddedStore::open(dir.path()).err().expect("locked");
        assert!(err.to_string().contains("another roster"), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = b"this is not a redb file, not at all".repeat(200);
        std::fs::write(dir.path().join(STORE_FILE), &garbage).expect("write");
        let err = EmbeddedStore::open(dir.path()).err().expect("corrupt");
        assert!(err.to_string().contains(STORE_FILE), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(STORE_FILE)).expect("read"),
            garbage
        );
    }
}
