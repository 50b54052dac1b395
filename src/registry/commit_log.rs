//! The embedded store's commit log: an append-only file in front of redb.
//!
//! Why: a batch committed as a redb transaction costs a B-tree insert per
//! write, the pages of every B-tree level it touched written again, and an
//! fsync: ~7 disk writes and ~29 KiB a commit on this project's test
//! machine. Appended here it is one record and one `fdatasync`: a page or
//! two written in place in a file whose blocks already exist, so no
//! file-system metadata changes and the journal is not involved (~2 disk
//! writes, ~5 KiB). When one half of the log is full, everything in it
//! moves into redb in one transaction (a checkpoint, see `embedded`) on a
//! thread of its own, while appends go on in the other half.
//!
//! The file:
//!
//! - a header block of [`HEADER_BYTES`], unused today (room for a format
//!   change), then two halves, each holding records back to back: an
//!   epoch's records go in the half of its parity, so one half takes
//!   appends while the other's are checkpointed;
//! - preallocated with zeros to its full size when created, so an append
//!   never allocates a block;
//! - each record is `magic, epoch, payload length, CRC-32 of the epoch,
//!   length and payload`, then the payload: the batch's index ceiling, its
//!   count, and each mutation (`put`: the ID and the instance's stored JSON;
//!   `delete`: the ID).
//!
//! Which records count: those of the epochs after the one redb last
//! absorbed (kept in redb's meta table by each checkpoint's own
//! transaction): at most two, as the log moves on to a half only once the
//! records there are absorbed. Reading a half from its start, an epoch
//! ends at the first record that is torn, damaged or of another epoch. A
//! checkpoint records its epoch as absorbed in the same transaction that
//! absorbs the records, so after it they are dead without touching the
//! log: a crash between the two can neither lose them nor apply them
//! twice. New records overwrite the old from the half's start.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::store::{Mutation, StoredInstance};

/// The log file's name in the data directory.
pub(super) const LOG_FILE: &str = "roster.log";
/// The log's size, header included. A checkpoint moves at most half of it
/// into redb (~1,500 registrations of a typical size), and a start-up
/// reads at most all of it.
pub(super) const LOG_BYTES: u64 = 1024 * 1024;
/// Bytes before the first record.
const HEADER_BYTES: u64 = 4096;
/// Marks the start of every record (`RLG1` in little-endian bytes).
const MAGIC: u32 = u32::from_le_bytes(*b"RLG1");
/// magic (4), epoch (8), payload length (4), CRC (4).
const RECORD_HEADER: usize = 20;
const PUT: u8 = 1;
const DELETE: u8 = 2;

/// One mutation as the log holds it: what a checkpoint writes into redb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    /// The instance with this ID, as stored JSON.
    Put {
        id: &'a str,
        json: &'a [u8],
    },
    Delete {
        id: &'a str,
    },
}

/// What the current epoch's records hold, in order.
#[derive(Debug, Default)]
pub(super) struct Logged {
    /// The records' payloads, back to back (see [`Logged::entries`]).
    bytes: Vec<u8>,
    /// The highest index ceiling a record carries, if there is a record.
    pub(super) index: Option<u64>,
}

impl Logged {
    /// Whether no record is in the log.
    pub(super) fn is_empty(&self) -> bool {
        self.index.is_none()
    }

    /// Every mutation of every record, oldest first.
    pub(super) fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        let mut payloads = &self.bytes[..];
        let mut entries: Option<Entries<'_>> = None;
        std::iter::from_fn(move || {
            loop {
                if let Some(entry) = entries.as_mut().and_then(Iterator::next) {
                    return Some(entry);
                }
                // The next payload: its length, then itself (see `read`).
                let len = take_u32(&mut payloads)? as usize;
                let payload = payloads.get(..len)?;
                payloads = &payloads[len..];
                entries = Some(Entries::of(payload)?.1);
            }
        })
    }
}

/// The mutations of one payload.
#[derive(Clone)]
struct Entries<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Entries<'a> {
    /// The payload's index ceiling and its mutations; `None` if it is
    /// malformed (which a record whose CRC matched never is).
    fn of(payload: &'a [u8]) -> Option<(u64, Self)> {
        let mut rest = payload;
        let index = take_u64(&mut rest)?;
        let left = take_u32(&mut rest)?;
        Some((index, Self { rest, left }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let kind = *self.rest.first()?;
        self.rest = &self.rest[1..];
        let id = take_bytes(&mut self.rest)?;
        let id = std::str::from_utf8(id).ok()?;
        match kind {
            PUT => Some(Entry::Put {
                id,
                json: take_bytes(&mut self.rest)?,
            }),
            DELETE => Some(Entry::Delete { id }),
            _ => None,
        }
    }
}

fn take_u32(bytes: &mut &[u8]) -> Option<u32> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    *bytes = rest;
    Some(u32::from_le_bytes(*head))
}

fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(u64::from_le_bytes(*head))
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(bytes)? as usize;
    let (head, rest) = (bytes.get(..len)?, bytes.get(len..)?);
    *bytes = rest;
    Some(head)
}

/// Why a batch was not appended.
#[derive(Debug, thiserror::Error)]
pub(super) enum AppendError {
    /// The record does not fit in what is left: checkpoint first. Nothing
    /// was written.
    #[error("the commit log is full")]
    Full,
    /// Writing or syncing failed; the batch may or may not be on disk, and
    /// the next append overwrites it.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A mutation could not be encoded.
    #[error("cannot encode an instance: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The open log: where the next record goes, and under which epoch.
pub(super) struct CommitLog {
    file: File,
    path: PathBuf,
    /// The size of each half.
    half: u64,
    /// Where the next record is written.
    end: u64,
    /// The epoch of the records being written.
    epoch: u64,
    /// The record being encoded; kept to reuse its allocation.
    buffer: Vec<u8>,
}

/// What the log holds that redb has not absorbed, as found at open.
#[derive(Debug, Default)]
pub(super) struct Unabsorbed {
    /// The previous epoch's records, when the log had already moved on to
    /// the next epoch (its checkpoint had not finished).
    pub(super) previous: Option<Logged>,
    /// The current epoch's records.
    pub(super) current: Logged,
}

impl CommitLog {
    /// Opens the log in `dir`, creating it (or growing it) to `bytes` and
    /// preallocating it if needed, and reads the records redb has not
    /// absorbed: epoch `absorbed + 1`, and `absorbed + 2` if the log had
    /// moved on to it. New records continue after the newest.
    pub(super) fn open(dir: &Path, absorbed: u64, bytes: u64) -> io::Result<(Self, Unabsorbed)> {
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut size = file.metadata()?.len();
        let bytes = bytes.max(HEADER_BYTES + 2 * RECORD_HEADER as u64);
        if size < bytes {
            preallocate(&file, size, bytes)?;
            // The new file's name must survive a crash as well as its blocks.
            File::open(dir)?.sync_all()?;
            size = bytes;
        }
        let mut log = Self {
            file,
            path,
            half: (size - HEADER_BYTES) / 2,
            end: 0,
            epoch: absorbed + 1,
            buffer: Vec::new(),
        };
        let (older, older_end) = log.read_epoch(absorbed + 1)?;
        let (newer, newer_end) = log.read_epoch(absorbed + 2)?;
        Ok(if newer.is_empty() {
            log.end = older_end;
            (
                log,
                Unabsorbed {
                    previous: None,
                    current: older,
                },
            )
        } else {
            (log.epoch, log.end) = (absorbed + 2, newer_end);
            (
                log,
                Unabsorbed {
                    previous: Some(older),
                    current: newer,
                },
            )
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the current epoch has no record.
    pub(super) fn is_empty(&self) -> bool {
        self.end == self.start(self.epoch)
    }

    /// The epoch of the records being written; a checkpoint records it in
    /// redb as absorbed.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where `epoch`'s records start: epochs alternate between the halves,
    /// so one half can be checkpointed while the other takes appends.
    fn start(&self, epoch: u64) -> u64 {
        HEADER_BYTES + (epoch % 2) * self.half
    }

    /// Appends `batch` with the index ceiling `index` as one record and
    /// makes it durable. On any error nothing is known to be appended, and
    /// the next record is written where this one was.
    pub(super) fn append(&mut self, batch: &[Mutation], index: u64) -> Result<(), AppendError> {
        let mut record = std::mem::take(&mut self.buffer);
        let encoded = encode(&mut record, self.epoch, batch, index);
        let limit = self.start(self.epoch) + self.half;
        let result = encoded.map_err(AppendError::from).and_then(|()| {
            if self.end + record.len() as u64 > limit {
                return Err(AppendError::Full);
            }
            self.file.write_all_at(&record, self.end)?;
            self.file.sync_data()?;
            self.end += record.len() as u64;
            Ok(())
        });
        record.clear();
        self.buffer = record;
        result
    }

    /// Moves on to the next epoch, in the other half: the current epoch's
    /// records are complete (and are to be checkpointed), and the other
    /// half's are absorbed (the caller made sure of that).
    pub(super) fn switch(&mut self) {
        self.epoch += 1;
        self.end = self.start(self.epoch);
    }

    /// Everything appended under `epoch` (the current one or the one
    /// before), read back from the file.
    pub(super) fn read(&self, epoch: u64) -> io::Result<Logged> {
        self.read_epoch(epoch).map(|(logged, _)| logged)
    }

    /// `epoch`'s records, and where they end.
    fn read_epoch(&self, epoch: u64) -> io::Result<(Logged, u64)> {
        let mut logged = Logged::default();
        let mut at = self.start(epoch);
        let limit = at + self.half;
        let mut header = [0u8; RECORD_HEADER];
        while at + RECORD_HEADER as u64 <= limit {
            self.file.read_exact_at(&mut header, at)?;
            let mut fields = &header[..];
            let (magic, found, len, crc) = (
                take_u32(&mut fields),
                take_u64(&mut fields),
                take_u32(&mut fields),
                take_u32(&mut fields),
            );
            let (Some(MAGIC), Some(found), Some(len), Some(crc)) = (magic, found, len, crc) else {
                break;
            };
            let payload_at = at + RECORD_HEADER as u64;
            if found != epoch || payload_at + u64::from(len) > limit {
                break;
            }
            let start = logged.bytes.len();
            logged.bytes.extend_from_slice(&len.to_le_bytes());
            logged.bytes.resize(start + 4 + len as usize, 0);
            self.file
                .read_exact_at(&mut logged.bytes[start + 4..], payload_at)?;
            let payload = &logged.bytes[start + 4..];
            let whole = crc32(crc32_update(!0, &header[4..16]), payload) == crc;
            // Every entry must decode, or none of the record counts.
            let decoded = whole
                .then(|| Entries::of(payload))
                .flatten()
                .filter(|(_, entries)| entries.clone().count() == entries.left as usize);
            let Some((index, _)) = decoded else {
                // Torn or damaged: the log ends here.
                logged.bytes.truncate(start);
                break;
            };
            logged.index = Some(logged.index.map_or(index, |i| i.max(index)));
            at = payload_at + u64::from(len);
        }
        Ok((logged, at))
    }
}

/// Writes zeros from `from` to `to` and syncs them: afterwards every block
/// of the file exists, so an append only overwrites.
fn preallocate(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

/// Encodes one record into `out` (emptied first).
fn encode(
    out: &mut Vec<u8>,
    epoch: u64,
    batch: &[Mutation],
    index: u64,
) -> Result<(), serde_json::Error> {
    out.clear();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and CRC, filled in below
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for mutation in batch {
        match mutation {
            Mutation::Put(instance) => {
                out.push(PUT);
                put_bytes(out, instance.id.as_bytes());
                put_json(out, instance)?;
            }
            Mutation::Delete { id } => {
                out.push(DELETE);
                put_bytes(out, id.as_bytes());
            }
        }
    }
    let len = (out.len() - RECORD_HEADER) as u32;
    out[12..16].copy_from_slice(&len.to_le_bytes());
    let crc = crc32(crc32_update(!0, &out[4..16]), &out[RECORD_HEADER..]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The instance's JSON, length first, written straight into `out`.
fn put_json(out: &mut Vec<u8>, instance: &StoredInstance) -> Result<(), serde_json::Error> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, instance)?;
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// CRC-32 (IEEE 802.3, as zlib computes it), a byte at a time from a table:
/// records are small and one append's fsync dwarfs this.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// Finishes a CRC started with `!0` and fed through [`crc32_update`].
fn crc32(crc: u32, rest: &[u8]) -> u32 {
    !crc32_update(crc, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::tests::representative;

    fn put(id: &str, port: u16) -> Mutation {
        let mut instance = representative();
        instance.id = id.to_owned();
        instance.port = port;
        Mutation::Put(instance)
    }

    /// The log's entries as owned values, to compare.
    fn owned(logged: &Logged) -> Vec<(String, Option<StoredInstance>)> {
        logged
            .entries()
            .map(|entry| match entry {
                Entry::Put { id, json } => (
                    id.to_owned(),
                    Some(serde_json::from_slice(json).expect("json")),
                ),
                Entry::Delete { id } => (id.to_owned(), None),
            })
            .collect()
    }

    fn expected(batch: &[Mutation]) -> Vec<(String, Option<StoredInstance>)> {
        batch
            .iter()
            .map(|m| match m {
                Mutation::Put(instance) => (instance.id.clone(), Some(instance.clone())),
                Mutation::Delete { id } => (id.clone(), None),
            })
            .collect()
    }

    #[test]
    fn the_crc_is_zlibs() {
        assert_eq!(crc32(!0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32_update(!0, b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn records_read_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = [put("a", 1), put("b", 2)];
        let second = [Mutation::Delete { id: "a".into() }, put("b", 3)];
        {
            let (mut log, logged) = CommitLog::open(dir.path(), 0, 64 * 1024).expect("open");
            assert!(logged.current.is_empty() && logged.previous.is_none());
            log.append(&first, 7).expect("append");
            log.append(&second, 9).expect("append");
            log.append(&[], 8).expect("append");
        }
        let (_, logged) = CommitLog::open(dir.path(), 0, 64 * 1024).expect("reopen");
        let logged = logged.current;
        assert_eq!(logged.index, Some(9));
        let mut all = expected(&first);
        all.extend(expected(&second));
        assert_eq!(owned(&logged), all);
    }

    #[test]
    fn the_log_ends_at_a_torn_or_damaged_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = CommitLog::open(dir.path(), 0, 64 * 1024).expect("open");
        log.append(&[put("a", 1)], 1).expect("append");
        let second_at = log.end;
        log.append(&[put("b", 2)], 2).expect("append");
        let third_at = log.end;
        log.append(&[put("c", 3)], 3).expect("append");
        let end = log.end;
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let pristine = std::fs::read(&path).expect("read");
        // A byte flipped anywhere in the second record (its header or its
        // payload), or the third record cut short: the log ends before the
        // damage, and what follows it does not count either.
        for (at, keeps) in [
            (second_at + 5, 1),
            (second_at + 13, 1),
            (second_at + 17, 1),
            (third_at - 3, 1),
            (end - 1, 2),
        ] {
            let mut damaged = pristine.clone();
            damaged[at as usize] ^= 0x40;
            std::fs::write(&path, &damaged).expect("write");
            let (log, logged) = CommitLog::open(dir.path(), 0, 64 * 1024).expect("reopen");
            let ids: Vec<_> = owned(&logged.current)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(ids, ["a", "b", "c"][..keeps], "damage at {at}");
            // The next record goes where the damaged one was.
            assert_eq!(log.end, if keeps == 1 { second_at } else { third_at });
        }
    }

    #[test]
    fn records_of_an_absorbed_epoch_do_not_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _) = CommitLog::open(dir.path(), 0, 64 * 1024).expect("open");
            log.append(&[put("a", 1)], 1).expect("append");
            log.append(&[put("b", 1)], 1).expect("append");
        }
        // redb absorbed epoch 1: those records are dead, and new ones,
        // written from the start, end where they end.
        let (mut log, logged) = CommitLog::open(dir.path(), 1, 64 * 1024).expect("reopen");
        assert!(logged.current.is_empty() && logged.previous.is_none());
        log.append(&[put("c", 1)], 2).expect("append");
        drop(log);
        let (_, logged) = CommitLog::open(dir.path(), 1, 64 * 1024).expect("reopen");
        assert_eq!(owned(&logged.current), expected(&[put("c", 1)]));
    }

    #[test]
    fn a_record_that_does_not_fit_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = CommitLog::open(dir.path(), 0, 8 * 1024).expect("open");
        let batch: Vec<_> = (0..40).map(|n| put(&format!("i{n}"), 1)).collect();
        assert!(matches!(log.append(&batch, 1), Err(AppendError::Full)));
        log.append(&[put("a", 1)], 1).expect("a small one fits");
        let logged = log.read(log.epoch()).expect("read");
        assert_eq!(owned(&logged), expected(&[put("a", 1)]));
    }

    #[test]
    fn epochs_alternate_halves_and_both_unabsorbed_ones_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = 64 * 1024;
        {
            let (mut log, _) = CommitLog::open(dir.path(), 0, bytes).expect("open");
            log.append(&[put("a", 1)], 1).expect("append");
            log.switch();
            assert!(log.is_empty());
            log.append(&[put("a", 2)], 2).expect("append");
            assert_eq!(owned(&log.read(1).expect("read")), expected(&[put("a", 1)]));
        }
        // Epoch 1 not absorbed yet: both epochs, oldest first, and the
        // log writes on in epoch 2.
        let (mut log, logged) = CommitLog::open(dir.path(), 0, bytes).expect("reopen");
        let previous = logged.previous.as_ref().expect("epoch 1");
        assert_eq!(owned(previous), expected(&[put("a", 1)]));
        assert_eq!(owned(&logged.current), expected(&[put("a", 2)]));
        assert_eq!(log.epoch(), 2);
        log.append(&[put("b", 1)], 3).expect("append");
        drop(log);
        // Epoch 1 absorbed: epoch 2 only, and moving on overwrites epoch
        // 1's half.
        let (mut log, logged) = CommitLog::open(dir.path(), 1, bytes).expect("reopen");
        assert!(logged.previous.is_none());
        assert_eq!(
            owned(&logged.current),
            expected(&[put("a", 2), put("b", 1)])
        );
        log.switch();
        log.append(&[put("c", 1)], 4).expect("append");
        drop(log);
        let (log, logged) = CommitLog::open(dir.path(), 2, bytes).expect("reopen");
        assert!(logged.previous.is_none());
        assert_eq!(owned(&logged.current), expected(&[put("c", 1)]));
        assert_eq!(log.epoch(), 3);
    }

    #[test]
    fn a_new_log_is_preallocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = CommitLog::open(dir.path(), 0, 64 * 1024).expect("open");
        let metadata = std::fs::metadata(log.path()).expect("metadata");
        assert_eq!(metadata.len(), 64 * 1024);
        // Every block written, not a sparse file whose appends allocate.
        use std::os::unix::fs::MetadataExt;
        assert!(metadata.blocks() * 512 >= 64 * 1024, "{metadata:?}");
    }
}
