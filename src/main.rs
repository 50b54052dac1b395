//! The `roster` command line: parse, load config, start tracing, call the
//! library. Nothing else lives here.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use roster::{Config, Listeners};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: after a mass deregistration glibc
/// kept every page roster had used, mimalloc gives most of them back
/// (`bench/import/release_memory.sh`, in bench/import/README.md). Only the
/// binary uses it; the library and its tests keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "roster", version, about = "DNS-based service discovery server")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server: HTTP registration API and authoritative DNS.
    Serve(ServeArgs),
    /// Print the whole registry of a running roster as JSON (a backup).
    Export(RemoteArgs),
    /// Load an export into a running roster (all or nothing).
    Import {
        /// The file `roster export` wrote; `-` reads standard input.
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(clap::Args)]
struct RemoteArgs {
    /// HTTP address of the running roster
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8500")]
    http: SocketAddr,
}

async fn export(remote: RemoteArgs) -> anyhow::Result<()> {
    let url = format!("http://{}/v1/export", remote.http);
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach roster at {}", remote.http))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        anyhow::bail!("export failed: {status}: {body}");
    }
    std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        format!("{body}\n").as_bytes(),
    )
    .context("cannot write the export to standard output")?;
    Ok(())
}

async fn import(file: PathBuf, remote: RemoteArgs) -> anyhow::Result<()> {
    let body = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let url = format!("http://{}/v1/import", remote.http);
    let response = reqwest::Client::new()
        .put(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach roster at {}", remote.http))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        anyhow::bail!("import failed: {status}: {text}");
    }
    roster::logging::print_error(&text);
    Ok(())
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file [default: ./config.toml if present, else built-in defaults]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// DNS address, UDP and TCP [default: 127.0.0.1:8600]
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// HTTP API address [default: 127.0.0.1:8500]
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The dynamic DNS domain [default: service.local]
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Directory of static zone files [default: zones]
    #[arg(long, value_name = "DIR")]
    zones: Option<PathBuf>,
    /// Directory of the embedded store; "" keeps nothing on disk [default: data]
    #[arg(long, value_name = "DIR", value_parser = any_path)]
    data_dir: Option<PathBuf>,
    /// Cluster mode: etcd client URLs, comma-separated
    /// (http://h1:2379,http://h2:2379); the registry lives in etcd instead
    /// of the data directory
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// This node's name in the cluster [default: the host name]
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
}

/// A path flag that may be empty: clap's own path parser refuses `""`,
/// which `--data-dir` documents as "keep nothing on disk".
fn any_path(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dns) = self.dns {
            config.dns.listen = dns;
        }
        if let Some(http) = self.http {
            config.http.listen = http;
        }
        if let Some(domain) = &self.domain {
            config.dns.domain = domain.clone();
        }
        if let Some(zones) = &self.zones {
            config.dns.zones = zones.clone();
        }
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        if let Some(etcd) = &self.etcd {
            config.cluster.etcd = etcd.clone();
        }
        if let Some(node) = &self.node {
            config.cluster.node = node.clone();
        }
        config.validate("command line")?;
        Ok(config)
    }
}

fn init_tracing() {
    // hickory logs every query at info; that is a debugging aid, not a log.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn,hickory_net=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Never fails, and never lets the library report a failure with
        // a panicking `eprintln!` (see roster::logging).
        .with_writer(roster::logging::NeverFailingStderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while
/// roster is still starting must stop it cleanly too.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let config = args.config()?;
    let acl_updates = reload_on_sighup(args.config.clone())?;
    let listeners = Listeners::bind(&config).await?;
    roster::run_reloading(config, listeners, shutdown, acl_updates).await?;
    Ok(())
}

/// On SIGHUP, reads the config file again (the same one `serve` read) and
/// hands its `[acl]` to the running server; a file that does not load is
/// logged, and the tokens in force stay.
fn reload_on_sighup(
    path: Option<PathBuf>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<roster::config::AclConfig>> {
    let (updates, received) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match Config::load(path.as_deref()) {
                    Ok(config) => {
                        if updates.send(config.acl).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: the configuration does not load; the ACL tokens in force stay");
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (path, updates);
    Ok(received)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Commands::Serve(args) => serve(args).await,
        Commands::Export(remote) => export(remote).await,
        Commands::Import { file, remote } => import(file, remote).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the chain of causes on one line, without the
            // backtrace anyhow would add: users need the message.
            roster::logging::print_error(&format!("roster: error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}
