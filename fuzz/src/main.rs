//! roster's coverage-guided fuzzer: no libFuzzer, no nightly. See
//! README.md for how to run it.
//!
//! `roster-fuzz run --target <dns|query|json> [--seconds N] [--runs N]
//! [--seed N]` loads `seeds/<target>/` and `corpus/<target>/`, keeps every
//! input that reaches a new edge (or a new hit-count bucket of one) in
//! `corpus/<target>/`, and saves every input that panics or breaks an
//! invariant in `crashes/<target>/`. Exits 1 if it found any.
//! `roster-fuzz seeds <dir>` writes the seed corpus; `roster-fuzz replay
//! --target <t> <file>...` runs inputs once, with the panic shown.

mod coverage;
mod mutate;
mod seeds;
mod targets;

use std::{
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use coverage::Coverage;
use mutate::{Rng, mutate};
use targets::Target;

/// How often progress is printed.
const REPORT_EVERY: Duration = Duration::from_secs(10);

struct Options {
    target: String,
    seconds: u64,
    runs: u64,
    seed: u64,
    files: Vec<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        target: String::new(),
        seconds: 60,
        runs: u64::MAX,
        seed: 0x5EED,
        files: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, text: String| {
            text.parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number, not {text:?}"))
        };
        match arg.as_str() {
            "--target" => options.target = value("--target")?,
            "--seconds" => options.seconds = number("--seconds", value("--seconds")?)?,
            "--runs" => options.runs = number("--runs", value("--runs")?)?,
            "--seed" => options.seed = number("--seed", value("--seed")?)?,
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            file => options.files.push(PathBuf::from(file)),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("usage: roster-fuzz run|replay|seeds ... (see fuzz/README.md)");
        return ExitCode::from(2);
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if command == "seeds" {
        let dir = args
            .get(1)
            .map_or_else(|| root.join("seeds"), PathBuf::from);
        return match seeds::write(&dir) {
            Ok(count) => {
                println!("wrote {count} seeds to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cannot write seeds to {}: {error}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_options(&args[1..]) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let Some(mut target) = Target::by_name(&options.target) else {
        eprintln!(
            "--target must be one of {:?}, not {:?}",
            targets::TARGETS,
            options.target
        );
        return ExitCode::from(2);
    };
    // Invariants include "the UDP path does not log at WARN per datagram".
    let _ = tracing::subscriber::set_global_default(targets::WarnCounter);
    match command.as_str() {
        "run" => run(&root, &mut target, &options),
        "replay" => replay(&mut target, &options.files),
        other => {
            eprintln!("unknown command {other:?}: run, replay or seeds");
            ExitCode::from(2)
        }
    }
}

/// The location and message of the last panic, kept by the panic hook
/// instead of printed: a crash is reported once, with its file.
static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some((location, payload));
        }
    }));
}

/// Runs `input`; `Err((location, message))` if it panicked.
fn execute(target: &mut Target, input: &[u8]) -> Result<(), (String, String)> {
    catch_unwind(AssertUnwindSafe(|| target.run(input))).map_err(|_| {
        LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_else(|| (String::new(), "panic".to_owned()))
    })
}

fn file_name(input: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    input.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn read_dir(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

fn run(root: &Path, target: &mut Target, options: &Options) -> ExitCode {
    let Some(mut coverage) = Coverage::new() else {
        eprintln!("nothing is instrumented: build from fuzz/ (see README.md)");
        return ExitCode::from(2);
    };
    quiet_panics();
    let corpus_dir = root.join("corpus").join(target.name);
    let crash_dir = root.join("crashes").join(target.name);
    if let Err(error) = std::fs::create_dir_all(&corpus_dir) {
        eprintln!("cannot create {}: {error}", corpus_dir.display());
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let mut rng = Rng::new(options.seed);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut crashes: HashSet<String> = HashSet::new();
    let mut executions: u64 = 0;

    let save_crash = |input: &[u8], panic: &(String, String), crashes: &mut HashSet<String>| {
        // One file per place that panicked: the same bug found a thousand
        // times is one finding.
        let (location, message) = panic;
        if !crashes.insert(location.clone()) {
            return;
        }
        let _ = std::fs::create_dir_all(&crash_dir);
        let path = crash_dir.join(file_name(input));
        let _ = std::fs::write(&path, input);
        println!("CRASH {}: {message} (at {location})", path.display());
    };

    // The seeds and the saved corpus first: keep what adds coverage.
    coverage.reset();
    let mut initial = read_dir(&root.join("seeds").join(target.name));
    initial.extend(read_dir(&corpus_dir));
    initial.push(Vec::new());
    for input in initial {
        let result = execute(target, &input);
        executions += 1;
        if let Err(panic) = result {
            save_crash(&input, &panic, &mut crashes);
            coverage.take();
        } else if coverage.take() {
            corpus.push(input);
        }
    }
    println!(
        "{}: loaded {} inputs, {} edges of {}",
        target.name,
        corpus.len(),
        coverage.edges(),
        coverage.total()
    );

    let mut last_report = Instant::now();
    let mut input = Vec::with_capacity(target.max_len);
    while executions < options.runs {
        // Check the clock every 256 runs: reading it is not free.
        if executions.is_multiple_of(256) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now - last_report >= REPORT_EVERY {
                last_report = now;
                report(
                    target.name,
                    started,
                    executions,
                    &coverage,
                    corpus.len(),
                    &crashes,
                );
            }
        }
        let base = rng.below(corpus.len());
        let other = rng.below(corpus.len());
        input.clear();
        input.extend_from_slice(&corpus[base]);
        let other = corpus[other].clone();
        mutate(
            &mut rng,
            &mut input,
            &other,
            target.dictionary,
            target.max_len,
        );
        let result = execute(target, &input);
        executions += 1;
        if let Err(panic) = result {
            save_crash(&input, &panic, &mut crashes);
            coverage.take();
        } else if coverage.take() {
            let _ = std::fs::write(corpus_dir.join(file_name(&input)), &input);
            corpus.push(input.clone());
        }
    }
    report(
        target.name,
        started,
        executions,
        &coverage,
        corpus.len(),
        &crashes,
    );
    if crashes.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!(
            "{}: {} distinct crashes, saved in {}",
            target.name,
            crashes.len(),
            crash_dir.display()
        );
        ExitCode::FAILURE
    }
}

fn report(
    name: &str,
    started: Instant,
    executions: u64,
    coverage: &Coverage,
    corpus: usize,
    crashes: &HashSet<String>,
) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name}: {seconds:.0} s, {executions} executions ({:.0}/s), {} edges, corpus {corpus}, crashes {}",
        executions as f64 / seconds.max(1e-9),
        coverage.edges(),
        crashes.len()
    );
}

fn replay(target: &mut Target, files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        let input = match std::fs::read(file) {
            Ok(input) => input,
            Err(error) => {
                eprintln!("{}: {error}", file.display());
                failed = true;
                continue;
            }
        };
        // The default panic hook prints the message and (with
        // RUST_BACKTRACE=1) the backtrace.
        match catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            Ok(()) => println!("{}: ok", file.display()),
            Err(_) => {
                println!("{}: panicked", file.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
