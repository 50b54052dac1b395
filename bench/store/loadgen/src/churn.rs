//! `roster-store-loadgen churn`: the churn client of `bench/dns/run.sh
//! --churn RATE`, a port of `cmd_churn` in `bench/dns/gen.py` with the same
//! semantics and the same output, at a fraction of the CPU (it shares the
//! machine with the server it measures).
//!
//! ```text
//! roster-store-loadgen churn --http HOST:PORT --services N --rate R
//!     --duration S [--threads 8] [--depth 8] [--reads | --rewrites] [--out FILE]
//! ```
//!
//! RATE operations per second (PUTs and DELETEs together, half each in
//! steady state) on extra instances `<service>-churn-<t>-<n>` of the
//! existing services `svc-00001`..`svc-N`, so every queried name keeps
//! answering. Each of T tasks owns its own instances on one keep-alive
//! connection, paced to RATE/T ops/s on a fixed schedule starting 0.2 s
//! after the start (a late operation is sent at once, never skipped). Task
//! t's schedule is offset by t/RATE s, so the tasks' operations interleave
//! evenly, one every 1/RATE s, as a fleet's writers do, rather than leave
//! in step (gen.py's schedule, which sends T writes at once). Each task
//! keeps at most DEPTH of them registered: it registers until it has DEPTH,
//! then alternates deregistering its oldest and registering a new one. Ends
//! after DURATION s; leftovers are then deregistered (not counted in the
//! rate, but failures there are). Writes the results as one JSON object to
//! `--out` (keys and number formatting as gen.py's), prints a one-line
//! summary, the first error on stderr, and exits 1 if a task hung.
//!
//! With `--reads`, every operation is a `GET /v1/services/<service>` on
//! the same schedule, connections and services instead (counted as `put`,
//! with `"churn_reads": 1` in the JSON): the same requests and wake-ups
//! without the writes, so a run can tell what churn costs DNS in HTTP from
//! what it costs in the registry's writer and commits.
//!
//! With `--rewrites`, every operation is a PUT of one of the task's first
//! DEPTH instances exactly as it was first registered: after those DEPTH
//! registrations, each write goes through the HTTP API and the registry's
//! writer (and its group-commit hold) but changes nothing, so there is no
//! commit, no sync and no new table for DNS. Together with `--reads` and
//! the plain writes, this tells the writer's round trip from what a change
//! costs. Counted as `put`, with `"churn_rewrites": 1` in the JSON.

use std::{
    collections::VecDeque,
    io,
    net::{SocketAddr, ToSocketAddrs},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// The port every instance is registered with (gen.py's `PORT`).
const PORT: u16 = 8080;
/// Per socket operation, like gen.py's `socket.create_connection(timeout=30)`.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const USAGE: &str = "usage: roster-store-loadgen churn --http HOST:PORT --services N --rate R \
                     --duration S [--threads 8] [--depth 8] [--reads | --rewrites] [--out FILE]";

struct Options {
    addrs: Vec<SocketAddr>,
    services: u64,
    rate: f64,
    duration: f64,
    threads: usize,
    depth: usize,
    /// GETs instead of writes (`--reads`).
    reads: bool,
    /// Writes that change nothing (`--rewrites`).
    rewrites: bool,
    out: String,
}

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let (mut http, mut services, mut rate, mut duration) = (None, None, None, None);
    let (mut threads, mut depth, mut out) = (8usize, 8usize, String::new());
    let (mut reads, mut rewrites) = (false, false);
    let mut args = args;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if arg == "--reads" {
            reads = true;
            continue;
        }
        if arg == "--rewrites" {
            rewrites = true;
            continue;
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), value.to_string()),
            _ => {
                let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                (arg, value)
            }
        };
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--http" => http = Some(value.clone()),
            "--services" => services = Some(value.parse::<u64>().map_err(|e| bad(&e))?),
            "--rate" => rate = Some(value.parse::<f64>().map_err(|e| bad(&e))?),
            "--duration" => duration = Some(value.parse::<f64>().map_err(|e| bad(&e))?),
            "--threads" => threads = value.parse().map_err(|e| bad(&e))?,
            "--depth" => depth = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = value.clone(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let missing = |name: &str| format!("{name} is required");
    let http = http.ok_or_else(|| missing("--http"))?;
    let services = services.ok_or_else(|| missing("--services"))?;
    let rate = rate.ok_or_else(|| missing("--rate"))?;
    let duration = duration.ok_or_else(|| missing("--duration"))?;
    if reads && rewrites {
        return Err("--reads and --rewrites exclude each other".into());
    }
    if services == 0 || threads == 0 || rate.is_nan() || rate <= 0.0 || !duration.is_finite() {
        return Err("--services, --threads and --rate must be positive".into());
    }
    // Resolved once here (gen.py resolves on every connect; for the
    // loopback addresses run.sh uses that is the same).
    let addrs: Vec<SocketAddr> = http
        .to_socket_addrs()
        .map_err(|e| format!("--http {http}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--http {http}: no address"));
    }
    Ok(Options {
        addrs,
        services,
        rate,
        duration,
        threads,
        depth,
        reads,
        rewrites,
        out,
    })
}

/// What all tasks saw, shared (gen.py's `st` under its lock).
#[derive(Default)]
struct Shared {
    put_ok: u64,
    delete_ok: u64,
    failed: u64,
    cleanup_failed: u64,
    first_error: Option<String>,
    /// Latencies of the scheduled operations (not the clean-up), seconds.
    lats: Vec<f64>,
    late_max: f64,
    /// Longest time from the schedule's start to a task's last operation.
    window: Option<f64>,
}

impl Shared {
    fn error(&mut self, error: String) {
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }
}

/// One keep-alive connection, opened on first use, and its read buffer.
pub(crate) struct Connection {
    addrs: Vec<SocketAddr>,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    request: Vec<u8>,
}

/// A failed attempt: Python's exception class name and message, so the
/// first error reads as gen.py's would.
type Failure = (&'static str, String);

fn io_failure(e: io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => "ConnectionRefusedError",
        io::ErrorKind::ConnectionReset => "ConnectionResetError",
        io::ErrorKind::ConnectionAborted => "ConnectionAbortedError",
        io::ErrorKind::BrokenPipe => "BrokenPipeError",
        io::ErrorKind::TimedOut => "TimeoutError",
        _ => "OSError",
    };
    let text = e.to_string();
    let message = match e.raw_os_error() {
        Some(code) => {
            let desc = text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text);
            format!("[Errno {code}] {desc}")
        }
        None => text,
    };
    (kind, message)
}

/// An I/O operation with the 30 s socket timeout.
async fn timed<T>(operation: impl Future<Output = io::Result<T>>) -> Result<T, Failure> {
    match timeout(IO_TIMEOUT, operation).await {
        Ok(result) => result.map_err(io_failure),
        Err(_) => Err(("TimeoutError", "timed out".into())),
    }
}

/// What a response's header block says.
pub(crate) struct Head {
    pub status: u16,
    pub length: usize,
    /// `Connection: close`.
    pub close: bool,
    /// `X-Consul-Index`, for the watch client.
    pub index: Option<u64>,
}

/// Status, `Content-Length`, `Connection: close` and `X-Consul-Index` of a
/// header block.
fn parse_head(head: &[u8]) -> Result<Head, Failure> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let code = status_line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .nth(1)
        .ok_or(("IndexError", "list index out of range".to_string()))?;
    let invalid = |v: &[u8]| {
        (
            "ValueError",
            format!(
                "invalid literal for int() with base 10: {:?}",
                String::from_utf8_lossy(v)
            ),
        )
    };
    let status = std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(code))?;
    let (mut length, mut close, mut index) = (0usize, false, None);
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, &line[line.len()..]),
        };
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n: i64 = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| invalid(value))?;
            length = usize::try_from(n).unwrap_or(0);
        } else if name.eq_ignore_ascii_case(b"connection")
            && value.trim_ascii().eq_ignore_ascii_case(b"close")
        {
            close = true;
        } else if name.eq_ignore_ascii_case(b"x-consul-index") {
            index = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        }
    }
    Ok(Head {
        status,
        length,
        close,
        index,
    })
}

impl Connection {
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Self {
        Self {
            addrs,
            stream: None,
            buffer: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
        }
    }

    /// A GET and its whole response on the keep-alive connection (no
    /// retry: a watcher simply asks again). Returns the status and the
    /// `X-Consul-Index`.
    pub(crate) async fn get(&mut self, path: &str) -> Result<(u16, Option<u64>), String> {
        self.request.clear();
        self.request
            .extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: roster\r\n\r\n").as_bytes());
        match self.attempt().await {
            Ok((head, _)) => {
                if head.close {
                    self.stream = None;
                }
                Ok((head.status, head.index))
            }
            Err((kind, message)) => {
                self.stream = None;
                Err(format!("GET {path} -> {kind}: {message}"))
            }
        }
    }

    /// One request and its whole response on the keep-alive connection,
    /// with one reconnect if it was closed (or failed). Returns the error,
    /// if any: a failed exchange or an unexpected status.
    async fn one(&mut self, method: &str, path: &str, body: Option<&str>) -> Option<String> {
        let body = body.unwrap_or("");
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: roster\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let mut error = None;
        for _attempt in 0..2 {
            match self.attempt().await {
                Ok((Head { status, close, .. }, body_start)) => {
                    let ok = if method == "PUT" {
                        status == 200
                    } else {
                        status == 200 || status == 204
                    };
                    error = (!ok).then(|| {
                        let end = self.buffer.len().min(body_start + 200);
                        format!(
                            "{method} {path} -> HTTP {status}: {}",
                            String::from_utf8_lossy(&self.buffer[body_start..end])
                        )
                    });
                    if close {
                        self.stream = None;
                    }
                    return error;
                }
                Err((kind, message)) => {
                    error = Some(format!("{method} {path} -> {kind}: {message}"));
                    self.stream = None;
                }
            }
        }
        error
    }

    /// Returns the response's head and where the body starts in
    /// `self.buffer`.
    async fn attempt(&mut self) -> Result<(Head, usize), Failure> {
        if self.stream.is_none() {
            let mut last = None;
            for addr in &self.addrs {
                match timed(TcpStream::connect(addr)).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        self.stream = Some(stream);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if self.stream.is_none() {
                return Err(last.unwrap_or(("OSError", "no address".into())));
            }
        }
        let stream = self.stream.as_mut().expect("connected");
        timed(stream.write_all(&self.request)).await?;
        self.buffer.clear();
        let mut scanned = 0;
        let end = loop {
            if let Some(p) = self.buffer[scanned..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break scanned + p + 4;
            }
            scanned = self.buffer.len().saturating_sub(3);
            self.buffer.reserve(4096);
            if timed(stream.read_buf(&mut self.buffer)).await? == 0 {
                return Err(("ConnectionError", "connection closed".into()));
            }
        };
        let head = parse_head(&self.buffer[..end - 4])?;
        while self.buffer.len() < end + head.length {
            self.buffer.reserve(end + head.length - self.buffer.len());
            if timed(stream.read_buf(&mut self.buffer)).await? == 0 {
                return Err(("ConnectionError", "connection closed mid-body".into()));
            }
        }
        Ok((head, end))
    }
}

pub(crate) fn service_name(i: u64) -> String {
    format!("svc-{i:05}")
}

/// Task `t`'s extra instance `n` (of `threads` tasks, over `services`):
/// its path, and the body that registers it.
fn churn_instance(t: usize, n: u64, threads: u64, services: u64) -> (String, String) {
    let k = n * threads + t as u64;
    let service = service_name(k % services + 1);
    let path = format!("/v1/services/{service}/instances/{service}-churn-{t}-{n}");
    let body = format!(
        r#"{{"address": "10.254.{}.{}", "port": {PORT}}}"#,
        (k / 250) % 250,
        k % 250 + 1
    );
    (path, body)
}

/// Task `t` of `options.threads`: its share of the schedule, then the
/// clean-up of its leftovers.
async fn worker(t: usize, options: Arc<Options>, shared: Arc<Mutex<Shared>>, t0: Instant) {
    let per_thread = options.rate / options.threads as f64;
    let threads = options.threads as u64;
    let mut conn = Connection::new(options.addrs.clone());
    let mut fifo: VecDeque<String> = VecDeque::with_capacity(options.depth + 1);
    let (mut n, mut op) = (0u64, 0u64);
    let mut lats = Vec::with_capacity((options.duration * per_thread).clamp(0.0, 1e7) as usize + 1);
    loop {
        let offset = (op as f64 + t as f64 / threads as f64) / per_thread;
        if offset >= options.duration {
            break;
        }
        let due = t0 + Duration::from_secs_f64(offset);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            let late = now.duration_since(due).as_secs_f64();
            let mut st = shared.lock().unwrap();
            st.late_max = st.late_max.max(late);
        }
        let (put, path, body) = if options.reads {
            let k = op * threads + t as u64;
            let service = service_name(k % options.services + 1);
            (true, format!("/v1/services/{service}"), None)
        } else if options.rewrites {
            // The task's instance `slot`, as it was registered the first time.
            let slot = op % options.depth.max(1) as u64;
            let (path, body) = churn_instance(t, slot, threads, options.services);
            (true, path, Some(body))
        } else if fifo.len() < options.depth {
            // fill up to DEPTH, then alternate
            let (path, body) = churn_instance(t, n, threads, options.services);
            n += 1;
            (true, path, Some(body))
        } else {
            (false, fifo.pop_front().expect("non-empty"), None)
        };
        let method = match (options.reads, put) {
            (true, _) => "GET",
            (false, true) => "PUT",
            (false, false) => "DELETE",
        };
        let s0 = Instant::now();
        let error = conn.one(method, &path, body.as_deref()).await;
        lats.push(s0.elapsed().as_secs_f64());
        let ok = error.is_none();
        {
            let mut st = shared.lock().unwrap();
            match error {
                Some(e) => {
                    st.failed += 1;
                    st.error(e);
                }
                None if put => st.put_ok += 1,
                None => st.delete_ok += 1,
            }
        }
        // Rewrites leave their instances once each, at the end.
        let first = !options.rewrites || op < options.depth as u64;
        if put && ok && !options.reads && first {
            fifo.push_back(path);
        }
        op += 1;
    }
    {
        let mut st = shared.lock().unwrap();
        st.lats.extend(lats);
        let window = t0.elapsed().as_secs_f64();
        st.window = Some(st.window.unwrap_or(0.0).max(window));
    }
    // leave the table as it was
    for path in fifo {
        if let Some(e) = conn.one("DELETE", &path, None).await {
            let mut st = shared.lock().unwrap();
            st.cleanup_failed += 1;
            st.error(e);
        }
    }
}

/// A float as Python's `repr` (and so `json.dump`) writes it: the shortest
/// digits that round-trip (the nearest such), `.0` on whole numbers, an
/// exponent below 1e-4 and from 1e16.
fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // The shortest digits that round-trip, then the nearest number with
    // that many digits (Rust may pick another one on a tie, Python not).
    let shortest = format!("{:e}", x.abs());
    let digits = shortest
        .split_once('e')
        .expect("exponent")
        .0
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    let sci = format!("{:.*e}", digits - 1, x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent");
    if !(-4..16).contains(&exp) {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs());
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if exp < 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

async fn run(options: Options) -> i32 {
    let options = Arc::new(options);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let t0 = Instant::now() + Duration::from_millis(200); // all tasks on one schedule
    let c0 = super::cpu_times();
    let mut tasks: Vec<_> = (0..options.threads)
        .map(|t| tokio::spawn(worker(t, options.clone(), shared.clone(), t0)))
        .collect();
    let limit = Duration::from_secs_f64((options.duration + 120.0).max(0.0));
    for task in &mut tasks {
        let _ = timeout(limit, task).await;
    }
    let c1 = super::cpu_times();
    let hung = tasks.iter().any(|task| !task.is_finished());

    let mut st = shared.lock().unwrap();
    st.lats.sort_by(f64::total_cmp);
    let lats = &st.lats;
    let ok = st.put_ok + st.delete_ok;
    let window = st.window.filter(|w| *w != 0.0).unwrap_or(options.duration);
    let pick = |p: f64| {
        if lats.is_empty() {
            0.0
        } else {
            lats[(lats.len() - 1).min((p / 100.0 * lats.len() as f64) as usize)] * 1e3
        }
    };
    let rate = ok as f64 / window;
    let failed = st.failed + st.cleanup_failed;
    let (p50, p99) = (pick(50.0), pick(99.0));
    let max = lats.last().map_or(0.0, |l| l * 1e3);
    let cpu = (c1.0 - c0.0) + (c1.1 - c0.1);
    let mut rc = i32::from(hung);
    if !options.out.is_empty() {
        let json = format!(
            "{{\"churn_target\": {}, \"churn_rate\": {}, \"churn_ok\": {ok}, \"churn_put\": {}, \
             \"churn_delete\": {}, \"churn_failed\": {failed}, \"churn_p50_ms\": {}, \
             \"churn_p99_ms\": {}, \"churn_max_ms\": {}, \"churn_late_max_s\": {}, \
             \"churn_cpu\": {}, \"churn_reads\": {}, \"churn_rewrites\": {}}}",
            py_float(options.rate),
            py_float(rate),
            st.put_ok,
            st.delete_ok,
            py_float(p50),
            py_float(p99),
            py_float(max),
            py_float(st.late_max),
            py_float(cpu),
            u8::from(options.reads),
            u8::from(options.rewrites),
        );
        if let Err(e) = std::fs::write(&options.out, json) {
            eprintln!("churn: writing {}: {e}", options.out);
            rc = 1;
        }
    }
    // With --reads every operation is a GET, counted where PUTs are (the
    // JSON keeps its keys for report.py, which says so).
    let done = match options.reads {
        true => format!("{} GET", st.put_ok),
        false => format!("{} PUT + {} DELETE", st.put_ok, st.delete_ok),
    };
    println!(
        "churn: {rate:.0} ops/s achieved of {}/s target ({done} ok in {window:.1} s), \
         {failed} failed, HTTP p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms, most late {:.2} s, \
         churn client CPU {cpu:.2} s",
        options.rate.trunc(),
        st.late_max,
    );
    if let Some(error) = &st.first_error {
        eprintln!("churn: first error: {error}");
    }
    rc
}

/// Runs the churn client with the arguments after `churn`; returns the exit
/// status.
pub fn main(args: impl Iterator<Item = String>) -> i32 {
    let options = match parse_options(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("churn: {message}\n{USAGE}");
            return 2;
        }
    };
    // One thread: the client only waits, and a single thread costs least.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_python_writes_them() {
        for (x, text) in [
            (1000.0, "1000.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (999.875, "999.875"),
            (774865590265134.2, "774865590265134.2"),
            (-2.5e-9, "-2.5e-09"),
            (0.0, "0.0"),
        ] {
            assert_eq!(py_float(x), text);
        }
    }

    #[test]
    fn reads_and_rewrites_exclude_each_other() {
        let args = |extra: &[&str]| {
            let base = [
                "--http",
                "127.0.0.1:1",
                "--services",
                "1",
                "--rate",
                "1",
                "--duration",
                "1",
            ];
            parse_options(base.iter().chain(extra).map(|a| a.to_string()))
        };
        let rewrites = args(&["--rewrites"]).expect("valid");
        assert!(rewrites.rewrites && !rewrites.reads);
        assert!(args(&["--reads", "--rewrites"]).is_err());
    }

    #[test]
    fn heads() {
        let head = b"HTTP/1.1 204 No Content\r\ncontent-length: 12\r\nConnection:  Close\r\n\
                     X-Consul-Index: 42";
        let Head {
            status,
            length,
            close,
            index,
        } = parse_head(head).expect("a head");
        assert_eq!((status, length, close, index), (204, 12, true, Some(42)));
        assert!(parse_head(b"HTTP/1.1").is_err());
        assert!(parse_head(b"HTTP/1.1 abc").is_err());
    }
}
