//! Edge coverage from SanitizerCoverage's inline 8-bit counters: the
//! instrumented crates (see `sancov-rustc`) bump one byte per edge, and
//! register their counter arrays here when the program starts.
//!
//! After each input, [`Coverage::take`] folds the counters into hit-count
//! buckets (as AFL and libFuzzer do: 1, 2, 3, 4–7, 8–15, 16–31, 32–127,
//! 128+), reports whether any edge reached a bucket it never had, and
//! clears them for the next input.

use std::sync::Mutex;

/// The counter arrays, as (start address, length). Written only by the
/// module constructors before `main`, read by the fuzz loop afterwards.
static REGIONS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// Called once per instrumented module before `main`, with the bounds of
/// its counters.
///
/// # Safety
///
/// `start..stop` must be one array of counters that lives as long as the
/// program, as SanitizerCoverage guarantees.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sanitizer_cov_8bit_counters_init(start: *mut u8, stop: *mut u8) {
    if start.is_null() || stop <= start {
        return;
    }
    // SAFETY: both pointers bound the same array (the caller's contract).
    let len = unsafe { stop.offset_from(start) } as usize;
    if let Ok(mut regions) = REGIONS.lock() {
        regions.push((start as usize, len));
    }
}

/// The coverage seen so far.
pub struct Coverage {
    regions: Vec<(usize, usize)>,
    /// Per counter, the buckets ever seen (one bit each).
    seen: Vec<u8>,
    /// Counters ever hit: the "edges" reported.
    edges: usize,
}

impl Coverage {
    /// Starts with nothing seen. Returns `None` if nothing is instrumented
    /// (built without `sancov-rustc`).
    pub fn new() -> Option<Self> {
        let regions = REGIONS.lock().ok()?.clone();
        let total = regions.iter().map(|&(_, len)| len).sum::<usize>();
        (total > 0).then(|| Self {
            regions,
            seen: vec![0; total],
            edges: 0,
        })
    }

    /// How many counters there are: the edges that could be hit.
    pub fn total(&self) -> usize {
        self.seen.len()
    }

    /// Edges hit by any input so far.
    pub fn edges(&self) -> usize {
        self.edges
    }

    /// Clears the counters, discarding what ran since the last call.
    pub fn reset(&mut self) {
        for &(start, len) in &self.regions {
            // SAFETY: a registered counter array, live for the whole
            // program; the fuzz loop is the only other thread of control
            // touching it, and it is this one.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
        }
    }

    /// Folds the counters of the input just run into what was seen, clears
    /// them, and says whether any edge reached a new bucket.
    pub fn take(&mut self) -> bool {
        let mut new = false;
        let mut offset = 0;
        for &(start, len) in &self.regions {
            // SAFETY: as in `reset`. Instrumented code on this thread wrote
            // the counters and is not running now; other threads of the
            // targets do not exist (they run on this thread).
            let counters = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
            let seen = &mut self.seen[offset..offset + len];
            offset += len;
            for (chunk, seen) in counters.chunks_mut(8).zip(seen.chunks_mut(8)) {
                if chunk.iter().all(|&c| c == 0) {
                    continue;
                }
                for (counter, seen) in chunk.iter_mut().zip(seen.iter_mut()) {
                    if *counter == 0 {
                        continue;
                    }
                    let bucket = bucket(*counter);
                    *counter = 0;
                    if *seen & bucket == 0 {
                        if *seen == 0 {
                            self.edges += 1;
                        }
                        *seen |= bucket;
                        new = true;
                    }
                }
            }
        }
        new
    }
}

/// The hit-count bucket of `count` (non-zero), as one bit.
fn bucket(count: u8) -> u8 {
    match count {
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}
