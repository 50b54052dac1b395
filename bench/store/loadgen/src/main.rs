//! Load generator for roster's durable write path.
//!
//! Opens C keep-alive HTTP/1.1 connections and, on each, sends one
//! `PUT /v1/services/{service}/instances/{id}` after another for a fixed
//! time. Every body carries a fresh sequence number in its metadata, so every
//! request is a real change that roster must commit to disk before it
//! answers (an identical re-registration would be acknowledged without a
//! write). The HTTP is written by hand, one request in flight per
//! connection, so the client costs little CPU on a machine it shares with
//! the server it measures.
//!
//! ```text
//! roster-store-loadgen --addr 127.0.0.1:8500 [--connections 64]
//!     [--duration 10] [--warmup 2] [--services 100] [--instances 100000]
//!     [--threads 1] [--id-prefix ""]
//! ```
//!
//! Prints one line of `key=value` results: acknowledged (2xx) writes per
//! second in the measured window, failures, and latency percentiles.
//!
//! `--id-prefix P` makes the instance IDs `P` + `i{n}`. Several copies
//! writing through different cluster nodes at once (`bench/cluster/run.sh`)
//! need disjoint IDs: with the same IDs (and the same bodies, the sequence
//! number being the same) a copy that falls behind rewrites what another
//! wrote, which roster answers as a no-op without a write, so it catches up
//! at once and then writes the very keys the other copy is writing,
//! concurrently, through another node: most transactions then lose their
//! compare. Services (`s{k}`) are shared.
//!
//! `roster-store-loadgen watch ...` runs Consul-style blocking watchers (see
//! `watch.rs`); `roster-store-loadgen churn ...` is another client: the churn
//! client of `bench/dns/run.sh --churn` (registrations and deregistrations at
//! a fixed rate), a cheaper port of `gen.py churn`; see `churn.rs`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

mod churn;
mod watch;

struct Options {
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    services: u64,
    instances: u64,
    threads: usize,
    id_prefix: String,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:8500".parse().expect("default address"),
        connections: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        services: 100,
        instances: 100_000,
        threads: 1,
        id_prefix: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => options.addr = value.parse().map_err(|e| bad(&e))?,
            "--connections" => options.connections = value.parse().map_err(|e| bad(&e))?,
            "--duration" => {
                options.duration = Duration::from_secs_f64(value.parse().map_err(|e| bad(&e))?)
            }
            "--warmup" => {
                options.warmup = Duration::from_secs_f64(value.parse().map_err(|e| bad(&e))?)
            }
            "--services" => options.services = value.parse().map_err(|e| bad(&e))?,
            "--instances" => options.instances = value.parse().map_err(|e| bad(&e))?,
            "--threads" => options.threads = value.parse().map_err(|e| bad(&e))?,
            "--id-prefix" => options.id_prefix = value,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.connections == 0 || options.services == 0 || options.instances == 0 {
        return Err("connections, services and instances must be at least 1".into());
    }
    Ok(options)
}

/// What one connection saw in the measured window.
#[derive(Default)]
struct Tally {
    acknowledged: u64,
    refused: u64,
    /// Latencies of acknowledged writes, in microseconds.
    latencies: Vec<u32>,
    /// The first failure, if any (connection errors end the connection).
    error: Option<String>,
}

/// Where a response's header block ends, if it has arrived.
fn header_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Status code and `Content-Length` of a response's header block.
fn parse_head(head: &[u8]) -> Result<(u16, usize), String> {
    let text = std::str::from_utf8(head).map_err(|e| e.to_string())?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {text:?}"))?;
    let mut length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad length {value:?}"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked responses are not supported".into());
            }
        }
    }
    Ok((status, length))
}

async fn connection(
    options: Arc<Options>,
    sequence: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    window: (Instant, Instant),
) -> Tally {
    let mut tally = Tally::default();
    let mut stream = match TcpStream::connect(options.addr).await {
        Ok(stream) => stream,
        Err(e) => {
            tally.error = Some(format!("connect: {e}"));
            return tally;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut request = Vec::with_capacity(512);
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let seq = sequence.fetch_add(1, Ordering::Relaxed);
        let n = seq % options.instances;
        let service = n % options.services;
        let body = format!(
            r#"{{"address":"10.{}.{}.{}","port":{},"tags":["bench"],"meta":{{"seq":"{seq}"}}}}"#,
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff,
            1024 + n % 60_000,
        );
        request.clear();
        request.extend_from_slice(
            format!(
                "PUT /v1/services/s{service}/instances/{}i{n} HTTP/1.1\r\nhost: roster\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                options.id_prefix,
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body.as_bytes());
        let sent = Instant::now();
        if let Err(e) = stream.write_all(&request).await {
            tally.error = Some(format!("write: {e}"));
            break;
        }
        // Read one whole response: the header block, then the body.
        buffer.clear();
        let status = loop {
            if let Some(end) = header_end(&buffer) {
                match parse_head(&buffer[..end]) {
                    Ok((status, length)) => {
                        while buffer.len() < end + length {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                            }
                        }
                        if buffer.len() < end + length {
                            tally.error = Some("connection closed mid-body".into());
                            break None;
                        }
                        break Some(status);
                    }
                    Err(e) => {
                        tally.error = Some(e);
                        break None;
                    }
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) => {
                    tally.error = Some("connection closed".into());
                    break None;
                }
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                Err(e) => {
                    tally.error = Some(format!("read: {e}"));
                    break None;
                }
            }
        };
        let Some(status) = status else { break };
        let done = Instant::now();
        if done < window.0 || done > window.1 {
            continue;
        }
        if (200..300).contains(&status) {
            tally.acknowledged += 1;
            let micros = done.duration_since(sent).as_micros();
            tally
                .latencies
                .push(micros.min(u128::from(u32::MAX)) as u32);
        } else {
            tally.refused += 1;
            if tally.error.is_none() {
                tally.error = Some(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&buffer[header_end(&buffer).unwrap_or(0)..])
                ));
            }
        }
    }
    tally
}

/// CPU seconds (user + system) this process has used.
fn own_cpu_seconds() -> f64 {
    let (user, system) = cpu_times();
    user + system
}

/// User and system CPU seconds of this process, from /proc/self/stat (clock
/// ticks of 1/100 s, the value Linux uses everywhere).
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[rank]) / 1000.0
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("churn") => std::process::exit(churn::main(std::env::args().skip(2))),
        Some("watch") => std::process::exit(watch::main(std::env::args().skip(2))),
        _ => {}
    }
    let options = match parse_options() {
        Ok(options) => Arc::new(options),
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    };
    let runtime = if options.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(options.threads);
        builder
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    runtime.block_on(async {
        let sequence = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now() + options.warmup;
        let window = (start, start + options.duration);
        let tasks: Vec<_> = (0..options.connections)
            .map(|_| {
                tokio::spawn(connection(
                    options.clone(),
                    sequence.clone(),
                    stop.clone(),
                    window,
                ))
            })
            .collect();
        tokio::time::sleep(options.warmup + options.duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        let mut errors = Vec::new();
        for task in tasks {
            let tally = task.await.expect("connection task");
            total.acknowledged += tally.acknowledged;
            total.refused += tally.refused;
            total.latencies.extend(tally.latencies);
            errors.extend(tally.error);
        }
        total.latencies.sort_unstable();
        let seconds = options.duration.as_secs_f64();
        println!(
            "connections={} duration={}s acknowledged={} rate={:.0}/s refused={} \
             connection_errors={} p50={:.2}ms p99={:.2}ms max={:.2}ms sent={} cpu={:.2}s",
            options.connections,
            seconds,
            total.acknowledged,
            total.acknowledged as f64 / seconds,
            total.refused,
            errors.len(),
            percentile(&total.latencies, 0.50),
            percentile(&total.latencies, 0.99),
            percentile(&total.latencies, 1.0),
            sequence.load(Ordering::Relaxed),
            own_cpu_seconds(),
        );
        if let Some(first) = errors.first() {
            eprintln!("loadgen: first error: {first}");
        }
    });
}
