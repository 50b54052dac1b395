//! `roster-store-loadgen watch`: Consul-style watchers, for the blocking
//! query bench (`bench/blocking/run.sh`).
//!
//! ```text
//! roster-store-loadgen watch --http HOST:PORT --services N --watchers W
//!     --duration S [--wait 10s] [--threads 2]
//! ```
//!
//! W watchers, each on its own keep-alive connection, watcher `i` on
//! `svc-<i mod N + 1>`, each asking `GET /v1/health/service/<svc>?index=I&wait=…`
//! in a loop with the index of its last answer, as every Consul client's
//! watch does. After DURATION s (the first answers, which carry no index
//! yet, are not counted) it prints how many answers came, per second, how
//! many were errors, and how often an index went backwards. Each watcher
//! stops at the end of its current wait, so the run takes at most DURATION
//! + the wait.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::churn::{Connection, service_name};

const USAGE: &str = "usage: roster-store-loadgen watch --http HOST:PORT --services N --watchers W \
                     --duration S [--wait 10s] [--threads 2]";

struct Options {
    addrs: Vec<SocketAddr>,
    services: u64,
    watchers: u64,
    duration: Duration,
    wait: String,
    threads: usize,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let (mut http, mut services, mut watchers, mut duration) = (None, None, None, None);
    let (mut wait, mut threads) = ("10s".to_string(), 2usize);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--http" => http = Some(value),
            "--services" => services = Some(value.parse::<u64>().map_err(|e| bad(&e))?),
            "--watchers" => watchers = Some(value.parse::<u64>().map_err(|e| bad(&e))?),
            "--duration" => duration = Some(value.parse::<f64>().map_err(|e| bad(&e))?),
            "--wait" => wait = value,
            "--threads" => threads = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let missing = |name: &str| format!("{name} is required");
    let http = http.ok_or_else(|| missing("--http"))?;
    let services = services.ok_or_else(|| missing("--services"))?;
    let watchers = watchers.ok_or_else(|| missing("--watchers"))?;
    let duration = duration.ok_or_else(|| missing("--duration"))?;
    if services == 0 || watchers == 0 || threads == 0 || !(duration > 0.0 && duration < 1e6) {
        return Err("--services, --watchers, --threads and --duration must be positive".into());
    }
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
        watchers,
        duration: Duration::from_secs_f64(duration),
        wait: wait.clone(),
        threads,
    })
}

#[derive(Default)]
struct Counts {
    answers: AtomicU64,
    errors: AtomicU64,
    backwards: AtomicU64,
}

async fn watcher(i: u64, options: Arc<Options>, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let service = service_name(i % options.services + 1);
    let mut connection = Connection::new(options.addrs.clone());
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = format!(
            "/v1/health/service/{service}?index={index}&wait={}",
            options.wait
        );
        match connection.get(&path).await {
            Ok((200, Some(next))) => {
                // The first answer of each watcher only sets its index.
                if index != 0 && !stop.load(Ordering::Relaxed) {
                    counts.answers.fetch_add(1, Ordering::Relaxed);
                    if next < index {
                        counts.backwards.fetch_add(1, Ordering::Relaxed);
                    }
                }
                index = next;
            }
            Ok(_) | Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub fn main(args: impl Iterator<Item = String>) -> i32 {
    let options = match parse_options(args) {
        Ok(options) => Arc::new(options),
        Err(message) => {
            eprintln!("loadgen watch: {message}\n{USAGE}");
            return 2;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..options.watchers)
            .map(|i| tokio::spawn(watcher(i, options.clone(), counts.clone(), stop.clone())))
            .collect();
        let started = Instant::now();
        tokio::time::sleep(options.duration).await;
        stop.store(true, Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64();
        let answers = counts.answers.load(Ordering::Relaxed);
        println!(
            "watchers={} services={} duration={:.1}s answers={} rate={:.0}/s errors={} backwards={} cpu={:.2}s",
            options.watchers,
            options.services,
            seconds,
            answers,
            answers as f64 / seconds,
            counts.errors.load(Ordering::Relaxed),
            counts.backwards.load(Ordering::Relaxed),
            crate::own_cpu_seconds(),
        );
        for task in tasks {
            let _ = task.await;
        }
    });
    0
}
