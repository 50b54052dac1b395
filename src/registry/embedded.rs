//! The embedded store: a redb file and a commit log in the data directory.
//!
//! A commit appends its batch to the log (`commit_log`) and syncs it: one
//! record and one `fdatasync` per writer batch (group commit), so
//! durability costs one small in-place write per batch rather than a
//! B-tree transaction per registration. When one half of the log is full,
//! a checkpoint moves it into redb in one crash-safe transaction, on a
//! thread of its own, while appends go on into the other half. At start-up,
//! redb's contents with the log's records on top are what was
//! acknowledged. A lock file keeps a second roster off the same directory,
//! since redb itself allows several processes to open one file.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use crate::metrics::CheckpointCounters;

use super::commit_log::{AppendError, CommitLog, Entry, LOG_BYTES, LOG_FILE, Logged};
use super::store::{
    BackendError, Loaded, Mutation, OpenProblem, Store, StoreError, StoreOperation, StoredInstance,
    panic_message,
};

/// Instances by ID, as JSON (readable by people, stable across versions).
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// Registry-wide values: [`INDEX_KEY`] and [`LOG_EPOCH_KEY`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The registry's index ceiling.
const INDEX_KEY: &str = "index";
/// The last commit-log epoch a checkpoint moved into this file.
const LOG_EPOCH_KEY: &str = "log_epoch";

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
        let reason = panic_message(&*panic).unwrap_or("unknown damage");
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

/// The open database, shared with checkpoint threads; `None` after a
/// failed checkpoint, until a reopen succeeds. Std mutex: taken by one
/// checkpoint at a time, on a thread of its own or the writer's.
type SharedDb = Arc<Mutex<Option<Database>>>;

/// The log, and what became of the epoch before its current one.
struct LogState {
    log: CommitLog,
    previous: Previous,
}

/// The epoch before the log's current one (the other half's records).
enum Previous {
    /// In redb, or there was none.
    Absorbed,
    /// Being moved into redb on a thread of its own.
    Checkpointing(std::thread::JoinHandle<Result<(), StoreError>>),
    /// Not in redb: its checkpoint failed, or a crash cut it short.
    Pending,
}

/// A redb database and its commit log in a locked data directory.
pub struct EmbeddedStore {
    /// Std mutex: the registry's single writer is the only one that
    /// commits, from its own thread, so it is never contended and never
    /// held across an await.
    log: Mutex<LogState>,
    db: SharedDb,
    /// Counts every checkpoint, shared with `/metrics` once the server
    /// wires it ([`EmbeddedStore::counting_into`]).
    counters: Arc<CheckpointCounters>,
    path: PathBuf,
    /// What `open` loaded (redb's contents with the log's records on top),
    /// handed out by the first `load` instead of reading everything twice.
    /// Std mutex: taken once.
    preloaded: Mutex<Option<Loaded>>,
    /// Held for the store's lifetime: the OS releases the lock when roster
    /// exits, even by kill -9, so a crash never leaves a stale lock.
    _lock: File,
    /// Whether dropping the store checkpoints the log (always, but in tests
    /// that play a crash).
    checkpoint_on_drop: bool,
    /// Whether a full half is checkpointed on a thread of its own (always,
    /// but in tests that play a crash before that thread ran); if not, the
    /// next move to the other half does it.
    checkpoint_in_background: bool,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_log(dir, LOG_BYTES)
    }

    /// [`EmbeddedStore::open`] with a commit log of at least `log_bytes`
    /// (tests use small ones, to checkpoint often).
    fn open_with_log(dir: &Path, log_bytes: u64) -> Result<Self, StoreError> {
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
        if created {
            ensure_tables(&db, &path)?;
        }
        let (stored, absorbed) = match preloaded {
            Some(loaded) => loaded,
            None => contain_panics(&path, || load_from(&db, &path))?,
        };
        let log_path = dir.join(LOG_FILE);
        let (log, unabsorbed) =
            CommitLog::open(dir, absorbed, log_bytes).map_err(|e| StoreError::Read {
                path: log_path,
                source: e.into(),
            })?;
        let logged = unabsorbed.previous.iter().chain([&unabsorbed.current]);
        let loaded = with_logged(stored, logged, log.path())?;
        let previous = match unabsorbed.previous {
            Some(_) => Previous::Pending,
            None => Previous::Absorbed,
        };
        Ok(Self {
            log: Mutex::new(LogState { log, previous }),
            db: Arc::new(Mutex::new(Some(db))),
            counters: Arc::default(),
            path,
            preloaded: Mutex::new(Some(loaded)),
            _lock: lock,
            checkpoint_on_drop: true,
            checkpoint_in_background: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts checkpoints into `counters` (the server's metrics) from now on.
    pub fn counting_into(mut self, counters: Arc<CheckpointCounters>) -> Self {
        self.counters = counters;
        self
    }

    fn target(&self) -> Target<'_> {
        Target {
            db: &self.db,
            path: &self.path,
            counters: &self.counters,
        }
    }
}

/// A clean stop leaves everything in redb and the log empty: the file
/// alone then holds the whole registry, for an older roster, a copy of the
/// file, or a look inside it. Runs once, when the registry's writer ends;
/// a crash skips it and the next start reads the log instead.
impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let Ok(mut state) = self.log.lock() else {
            return;
        };
        if !self.checkpoint_on_drop {
            // A crash stops a running checkpoint wherever it is; a test
            // that plays one lets it end, so that its database handle
            // closes.
            if let Previous::Checkpointing(thread) =
                std::mem::replace(&mut state.previous, Previous::Pending)
            {
                let _ = thread.join();
            }
            return;
        }
        let settled = settle_previous(self.target(), &mut state).and_then(|()| {
            if state.log.is_empty() {
                return Ok(());
            }
            let epoch = state.log.epoch();
            let records = read_log(&state.log, epoch)?;
            checkpoint(&self.target(), &records, &[], 0, epoch)
        });
        if let Err(failure) = settled {
            tracing::warn!(
                message = %failure,
                "could not move the commit log into the store at shutdown; the next start reads it"
            );
        }
    }
}

/// Creates the tables in a new file, so that reading it never meets a
/// missing table.
fn ensure_tables(db: &Database, path: &Path) -> Result<(), StoreError> {
    let write = |source: BackendError| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let txn = db.begin_write().map_err(|e| write(e.into()))?;
    txn.open_table(INSTANCES).map_err(|e| write(e.into()))?;
    txn.open_table(META).map_err(|e| write(e.into()))?;
    txn.commit().map_err(|e| write(e.into()))
}

impl Store for EmbeddedStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let preloaded = self.preloaded.lock().ok().and_then(|mut p| p.take());
        if let Some(loaded) = preloaded {
            return Ok(loaded);
        }
        let unavailable = |reason| StoreError::Unavailable {
            operation: StoreOperation::Read,
            reason,
        };
        let mut state = self
            .log
            .lock()
            .map_err(|_| unavailable("store lock poisoned"))?;
        // The previous epoch into redb first, so that redb and the current
        // epoch are the whole.
        settle_previous(self.target(), &mut state)?;
        let db = self
            .db
            .lock()
            .map_err(|_| unavailable("store lock poisoned"))?;
        let db = db.as_ref().ok_or(unavailable("store is not open"))?;
        let (stored, _) = contain_panics(&self.path, || load_from(db, &self.path))?;
        let current = read_log(&state.log, state.log.epoch())?;
        with_logged(stored, [&current], state.log.path())
    }

    /// Appends `batch` to the commit log, durably. When the log's half is
    /// full, the log moves on to the other half (once the records there
    /// are in redb) and the full half is checkpointed on a thread of its
    /// own.
    fn commit(&self, batch: &[Mutation], index: u64) -> Result<(), StoreError> {
        let mut state = self.log.lock().map_err(|_| POISONED_FOR_WRITE)?;
        match state.log.append(batch, index) {
            Err(AppendError::Full) => {}
            appended => return appended.map_err(|e| append_error(&state.log, e)),
        }
        settle_previous(self.target(), &mut state)?;
        let epoch = state.log.epoch();
        let records = read_log(&state.log, epoch)?;
        state.log.switch();
        let (db, path, counters) = (self.db.clone(), self.path.clone(), self.counters.clone());
        // Without a thread, the next move to the other half does it.
        state.previous = match self.checkpoint_in_background {
            true => std::thread::Builder::new()
                .name("roster-checkpoint".into())
                .spawn(move || {
                    let target = Target {
                        db: &db,
                        path: &path,
                        counters: &counters,
                    };
                    checkpoint(&target, &records, &[], 0, epoch)
                })
                .map_or(Previous::Pending, Previous::Checkpointing),
            false => Previous::Pending,
        };
        match state.log.append(batch, index) {
            Err(AppendError::Full) => {
                // Larger than a half: straight into redb, after the
                // records before it, as the (empty) current epoch.
                settle_previous(self.target(), &mut state)?;
                let epoch = state.log.epoch();
                checkpoint(&self.target(), &Logged::default(), batch, index, epoch)?;
                state.log.switch();
                Ok(())
            }
            appended => appended.map_err(|e| append_error(&state.log, e)),
        }
    }
}

fn append_error(log: &CommitLog, error: AppendError) -> StoreError {
    StoreError::Write {
        path: log.path().to_owned(),
        source: error.into(),
    }
}

fn read_log(log: &CommitLog, epoch: u64) -> Result<Logged, StoreError> {
    log.read(epoch).map_err(|e| StoreError::Read {
        path: log.path().to_owned(),
        source: e.into(),
    })
}

/// Makes sure the epoch before the log's current one is in redb: waits for
/// its checkpoint, and runs it (again) here if it failed or never ran.
/// Once space is back after a full disk, this is where writes resume.
fn settle_previous(target: Target<'_>, state: &mut LogState) -> Result<(), StoreError> {
    let previous = std::mem::replace(&mut state.previous, Previous::Pending);
    let done = match previous {
        Previous::Absorbed => true,
        Previous::Checkpointing(thread) => match thread.join() {
            Ok(Ok(())) => true,
            Ok(Err(failure)) => {
                tracing::warn!(message = %failure, "a commit log checkpoint failed; retrying");
                false
            }
            Err(_) => false,
        },
        Previous::Pending => false,
    };
    if !done {
        let epoch = state.log.epoch() - 1;
        let records = read_log(&state.log, epoch)?;
        checkpoint(&target, &records, &[], 0, epoch)?;
    }
    state.previous = Previous::Absorbed;
    Ok(())
}

/// [`checkpoint_uncounted`] into `target`, counted and timed there.
fn checkpoint(
    target: &Target<'_>,
    records: &Logged,
    batch: &[Mutation],
    index: u64,
    epoch: u64,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let done = checkpoint_uncounted(target.db, target.path, records, batch, index, epoch);
    let counters = target.counters;
    counters.duration.record(started.elapsed());
    counters.results[usize::from(done.is_err())].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    done
}

/// Where a checkpoint writes (the database and its path) and counts.
#[derive(Clone, Copy)]
struct Target<'a> {
    db: &'a SharedDb,
    path: &'a Path,
    counters: &'a CheckpointCounters,
}

/// Moves `records`, then `batch`, into redb at `path` in one transaction
/// that also records their log `epoch` as absorbed and the highest index
/// ceiling. After a failed checkpoint redb refuses every later transaction
/// ("Previous I/O error"), so the database is closed and, on the next
/// checkpoint, opened again (redb repairs it from its last durable commit,
/// which a failed one never changed) and read through once. The log keeps
/// the records until a checkpoint succeeds.
fn checkpoint_uncounted(
    db: &SharedDb,
    path: &Path,
    records: &Logged,
    batch: &[Mutation],
    index: u64,
    epoch: u64,
) -> Result<(), StoreError> {
    let mut db = db.lock().map_err(|_| POISONED_FOR_WRITE)?;
    if db.is_none() {
        *db = Some(reopen(path)?);
        tracing::info!(path = %path.display(), "store reopened after a failed write");
    }
    let Some(open) = db.as_ref() else {
        return Err(NOT_OPEN_FOR_WRITE);
    };
    let ceiling = records.index.map_or(index, |logged| logged.max(index));
    let committed = commit_to(open, path, records, batch, ceiling, epoch);
    if committed.is_err() {
        // Dropped now: redb allows one open handle per file.
        *db = None;
    }
    committed
}

/// Opens the database at `path` again after a failed checkpoint, and reads
/// it through to check that what is on disk is whole before writing to it
/// again.
fn reopen(path: &Path) -> Result<Database, StoreError> {
    let db = contain_panics(path, || {
        builder().open(path).map_err(|e| StoreError::Reopen {
            path: path.to_owned(),
            source: e.into(),
        })
    })?;
    contain_panics(path, || load_from(&db, path))?;
    Ok(db)
}

/// Writes the `logged` records and then `batch` in one transaction, with
/// the index ceiling `index` and the log `epoch` they came from.
fn commit_to(
    db: &Database,
    path: &Path,
    logged: &Logged,
    batch: &[Mutation],
    index: u64,
    epoch: u64,
) -> Result<(), StoreError> {
    let write = |source: BackendError| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let txn = db.begin_write().map_err(|e| write(e.into()))?;
    {
        let mut table = txn.open_table(INSTANCES).map_err(|e| write(e.into()))?;
        for entry in logged.entries() {
            match entry {
                Entry::Put { id, json } => table.insert(id, json).map(drop),
                Entry::Delete { id } => table.remove(id).map(drop),
            }
            .map_err(|e| write(e.into()))?;
        }
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
        let mut meta = txn.open_table(META).map_err(|e| write(e.into()))?;
        meta.insert(INDEX_KEY, index).map_err(|e| write(e.into()))?;
        meta.insert(LOG_EPOCH_KEY, epoch)
            .map_err(|e| write(e.into()))?;
    }
    // Durability::Immediate (the default): commit returns after fsync.
    txn.commit().map_err(|e| write(e.into()))
}

/// Reads every instance and the index, and the log epoch the file has
/// absorbed.
fn load_from(db: &impl ReadableDatabase, path: &Path) -> Result<(Loaded, u64), StoreError> {
    let read = |source: BackendError| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let txn = db.begin_read().map_err(|e| read(e.into()))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        // A file whose first commit never happened holds nothing yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Loaded::default(), 0)),
        Err(e) => return Err(read(e.into())),
    };
    let value = |key| {
        meta.get(key)
            .map(|v| v.map_or(0, |v| v.value()))
            .map_err(|e| read(e.into()))
    };
    let (index, absorbed) = (value(INDEX_KEY)?, value(LOG_EPOCH_KEY)?);
    let table = txn.open_table(INSTANCES).map_err(|e| read(e.into()))?;
    let mut instances = Vec::new();
    for entry in table.iter().map_err(|e| read(e.into()))? {
        let (key, value) = entry.map_err(|e| read(e.into()))?;
        instances.push(decode(key.value(), value.value(), path)?);
    }
    Ok((Loaded { index, instances }, absorbed))
}

fn decode(key: &str, json: &[u8], path: &Path) -> Result<StoredInstance, StoreError> {
    serde_json::from_slice(json).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
        path: path.to_owned(),
    })
}

/// `stored` with the log's records applied on top, in order.
fn with_logged<'a>(
    stored: Loaded,
    logged: impl IntoIterator<Item = &'a Logged>,
    log_path: &Path,
) -> Result<Loaded, StoreError> {
    let logged: Vec<&Logged> = logged.into_iter().filter(|l| !l.is_empty()).collect();
    if logged.is_empty() {
        return Ok(stored);
    }
    let mut instances: std::collections::BTreeMap<String, StoredInstance> = stored
        .instances
        .into_iter()
        .map(|instance| (instance.id.clone(), instance))
        .collect();
    let mut index = stored.index;
    for entry in logged.iter().flat_map(|logged| logged.entries()) {
        match entry {
            Entry::Put { id, json } => {
                instances.insert(id.to_owned(), decode(id, json, log_path)?);
            }
            Entry::Delete { id } => {
                instances.remove(id);
            }
        }
    }
    for ceiling in logged.iter().filter_map(|logged| logged.index) {
        index = index.max(ceiling);
    }
    Ok(Loaded {
        index,
        instances: instances.into_values().collect(),
    })
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
        // A clean stop moved the log into redb: the file alone is whole.
        let db = builder()
            .open_read_only(dir.path().join(STORE_FILE))
            .expect("open read-only");
        let (in_file, absorbed) = load_from(&db, dir.path()).expect("load");
        drop(db);
        assert_eq!((in_file.index, absorbed), (8, 1));
        assert_eq!(in_file.instances, vec![stored("b")]);
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.index, 8);
        assert_eq!(loaded.instances, vec![stored("b")]);
    }

    /// Drops `store` as a crash would leave it: the log not checkpointed.
    fn crash(mut store: EmbeddedStore) {
        store.checkpoint_on_drop = false;
    }

    /// The log epoch redb has absorbed, read from the file.
    fn absorbed(dir: &Path) -> u64 {
        let db = builder()
            .open_read_only(dir.join(STORE_FILE))
            .expect("open read-only");
        load_from(&db, &dir.join(STORE_FILE)).expect("load").1
    }

    #[test]
    fn writes_survive_checkpoints_and_crashes_in_any_order() {
        // A log of 8 KiB (4 KiB of records) holds a few batches: dozens of
        // checkpoints, with the same few IDs rewritten across them, and a
        // stop every few batches, clean (which checkpoints) or a crash
        // (which leaves the log as it is). After each, what loads is
        // exactly what was committed: nothing lost, and no record of an
        // absorbed epoch applied again over newer ones.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = std::collections::BTreeMap::new();
        let mut index = 0;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for life in 0..100 {
            let mut store = EmbeddedStore::open_with_log(dir.path(), 8192).expect("open");
            // Sometimes as if each checkpoint thread died before it ran:
            // a crash then leaves two epochs in the log.
            store.checkpoint_in_background = next(3) != 0;
            let loaded = store.load().expect("load");
            assert_eq!(loaded.index, index, "life {life}");
            assert_eq!(
                loaded.instances,
                model.values().cloned().collect::<Vec<_>>(),
                "life {life}"
            );
            for _ in 0..next(12) {
                let batch: Vec<_> = (0..1 + next(4))
                    .map(|_| {
                        let id = format!("i{}", next(10));
                        if next(4) == 0 {
                            model.remove(&id);
                            Mutation::Delete { id }
                        } else {
                            let mut instance = stored(&id);
                            instance.port = next(60_000) as u16 + 1;
                            model.insert(id, instance.clone());
                            Mutation::Put(instance)
                        }
                    })
                    .collect();
                index += next(3);
                store.commit(&batch, index).expect("commit");
            }
            if next(3) == 0 {
                drop(store);
            } else {
                crash(store);
            }
        }
        let absorbed = absorbed(dir.path());
        assert!(
            absorbed > 20,
            "the log was checkpointed only {absorbed} times"
        );
    }

    #[test]
    fn a_batch_larger_than_the_log_goes_straight_into_redb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch: Vec<_> = (0..100)
            .map(|n| Mutation::Put(stored(&format!("i{n:03}"))))
            .collect();
        let counters = Arc::new(CheckpointCounters::default());
        {
            let store = EmbeddedStore::open_with_log(dir.path(), 8192)
                .expect("open")
                .counting_into(counters.clone());
            store
                .commit(&[Mutation::Put(stored("a"))], 3)
                .expect("commit");
            store.commit(&batch, 4).expect("commit");
            crash(store);
        }
        // Epoch 1 (`a`), checkpointed when the batch did not fit, then the
        // batch as epoch 2, which the log never held.
        assert_eq!(absorbed(dir.path()), 2);
        use std::sync::atomic::Ordering::Relaxed;
        let results =
            |counters: &CheckpointCounters| counters.results.each_ref().map(|r| r.load(Relaxed));
        assert_eq!(results(&counters), [2, 0], "done, failed");
        assert_eq!(counters.duration.snapshot().count, 2);
        let loaded = EmbeddedStore::open_with_log(dir.path(), 8192)
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(loaded.index, 4);
        assert_eq!(loaded.instances.len(), 101);
        assert_eq!(loaded.instances[0], stored("a"));
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
