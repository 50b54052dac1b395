//! Where roster's log goes, and the promise that logging can never stop it.
//!
//! roster logs to stderr. When stderr cannot be written (the log disk is
//! full, a closed pipe, `2>/dev/full`), `tracing-subscriber` reports the
//! failure with `eprintln!`, which panics when stderr fails, in whichever
//! task was logging: once that was the registry's single writer, and every
//! later write answered "roster is shutting down" while DNS served frozen
//! data. So the writer here swallows write errors and counts the lines it
//! lost: a log is worth less than the service it describes.
//!
//! Owns: the log writer and its lost-line counter. Must not: block, or
//! return an error to the logging library.

use std::{
    io::{self, Write},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use tracing_subscriber::fmt::MakeWriter;

/// Log writes that failed since start, for `/v1/metrics`.
static LINES_LOST: AtomicU64 = AtomicU64::new(0);

/// How many log writes have failed since roster started.
pub fn lines_lost() -> u64 {
    LINES_LOST.load(Relaxed)
}

/// Makes [`Stderr`] writers for `tracing-subscriber`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverFailingStderr;

impl<'a> MakeWriter<'a> for NeverFailingStderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

/// stderr, with every failure turned into a counted, silent success.
#[derive(Debug)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One `write_all` per event keeps lines whole when several threads
        // log at once (stderr is unbuffered; its lock is held for the call).
        if io::stderr().lock().write_all(buf).is_err() {
            LINES_LOST.fetch_add(1, Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Writes one line to stderr for a person at a terminal (the CLI's final
/// error), ignoring failure: `eprintln!` would panic.
pub fn print_error(message: &str) {
    let _ = writeln!(io::stderr().lock(), "{message}");
}
