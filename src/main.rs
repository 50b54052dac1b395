//! The `roster` command line: parse, load config, start tracing, call the
//! library (the server, or `roster::client` for the commands that talk to a
//! running one). Nothing else lives here.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use roster::{
    Config, Listeners,
    client::{self, Client, ClientError, ClientTls, Endpoint},
};
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
    /// List the services of a running roster, with how many instances DNS serves.
    Services(RemoteArgs),
    /// Show a service's instances, their health and checks, as a table.
    Service {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Register (or replace) an instance, from flags or a JSON file.
    Register(RegisterArgs),
    /// Remove an instance.
    Deregister {
        service: String,
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Drain an instance out of DNS (--enable), or put it back (--disable).
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["enable", "disable"])))]
    Maintenance {
        service: String,
        id: String,
        /// Drain it
        #[arg(long)]
        enable: bool,
        /// Put it back
        #[arg(long)]
        disable: bool,
        /// Why, shown to operators
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Report to an instance's TTL checks (a heartbeat): passing unless
    /// --status says otherwise.
    Heartbeat {
        service: String,
        id: String,
        #[arg(long, value_parser = ["passing", "warning", "critical"], default_value = "passing")]
        status: String,
        /// A note, shown as the checks' output
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print a service's table, and again each time it changes.
    Watch {
        name: String,
        /// Stop after printing this many tables [default: never]
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
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
    /// The running roster's HTTP API: HOST:PORT, or http:// or https://
    /// before it
    #[arg(
        long,
        value_name = "ADDR",
        env = "ROSTER_HTTP",
        default_value = "127.0.0.1:8500"
    )]
    http: Endpoint,
    /// ACL token, sent as X-Consul-Token
    #[arg(
        long,
        value_name = "SECRET",
        env = "ROSTER_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// HTTPS: the PEM CA that signed roster's certificate, then the only
    /// one trusted (https:// without it trusts the system's CAs)
    #[arg(long, value_name = "FILE", env = "ROSTER_CACERT")]
    ca_file: Option<PathBuf>,
    /// The name roster's certificate is checked against (default: the
    /// host of --http)
    #[arg(long, value_name = "NAME", env = "ROSTER_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// A PEM client certificate, for a roster that asks for one (with
    /// --key-file)
    #[arg(
        long,
        value_name = "FILE",
        env = "ROSTER_CLIENT_CERT",
        requires = "key_file"
    )]
    cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key
    #[arg(
        long,
        value_name = "FILE",
        env = "ROSTER_CLIENT_KEY",
        requires = "cert_file"
    )]
    key_file: Option<PathBuf>,
}

impl RemoteArgs {
    fn client(&self) -> Result<Client, ClientError> {
        let tls = ClientTls {
            ca_file: self.ca_file.clone(),
            server_name: self.tls_server_name.clone(),
            client_cert: self.cert_file.clone().zip(self.key_file.clone()),
        };
        Client::new(&self.http, self.token.clone(), &tls)
    }
}

#[derive(clap::Args)]
// The flags that make a probed check; `--interval` needs one of them, and
// both together make two checks.
#[command(group(clap::ArgGroup::new("probe").multiple(true)))]
struct RegisterArgs {
    service: String,
    id: String,
    /// A JSON registration body (as PUT /v1/services/... takes); flags
    /// given beside it override its fields
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The instance's IP address
    #[arg(long)]
    address: Option<String>,
    /// The instance's port (needed unless --file gives it)
    #[arg(long, required_unless_present = "file")]
    port: Option<u16>,
    /// A tag; repeat for several
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Metadata as KEY=VALUE; repeat for several
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    meta: Vec<(String, String)>,
    #[arg(long)]
    weight: Option<u16>,
    #[arg(long)]
    priority: Option<u16>,
    /// An HTTP health check of this URL
    #[arg(long, value_name = "URL", group = "probe")]
    http_check: Option<String>,
    /// A TCP health check of HOST:PORT
    #[arg(long, value_name = "HOST:PORT", group = "probe")]
    tcp_check: Option<String>,
    /// A TTL check: the service must heartbeat within this (e.g. 30s)
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// How often an HTTP or TCP check runs
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "probe"
    )]
    interval: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

impl RegisterArgs {
    /// The registration body: the file's, with the flags laid over it.
    fn body(&self) -> anyhow::Result<serde_json::Value> {
        use serde_json::{Value, json};
        let mut body = match &self.file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", file.display()))?
            }
            None => json!({}),
        };
        let Value::Object(fields) = &mut body else {
            anyhow::bail!("the registration file must hold a JSON object");
        };
        if let Some(address) = &self.address {
            fields.insert("address".into(), json!(address));
        }
        if let Some(port) = self.port {
            fields.insert("port".into(), json!(port));
        }
        if !self.tags.is_empty() {
            fields.insert("tags".into(), json!(self.tags));
        }
        if !self.meta.is_empty() {
            let meta = self
                .meta
                .iter()
                .map(|(key, value)| (key.clone(), json!(value)))
                .collect();
            fields.insert("meta".into(), Value::Object(meta));
        }
        if let Some(weight) = self.weight {
            fields.insert("weight".into(), json!(weight));
        }
        if let Some(priority) = self.priority {
            fields.insert("priority".into(), json!(priority));
        }
        let mut checks = Vec::new();
        if let Some(url) = &self.http_check {
            checks.push(json!({ "http": url, "interval": self.interval }));
        }
        if let Some(target) = &self.tcp_check {
            checks.push(json!({ "tcp": target, "interval": self.interval }));
        }
        if let Some(ttl) = &self.ttl {
            checks.push(json!({ "ttl": ttl }));
        }
        if !checks.is_empty() {
            fields.insert("checks".into(), Value::Array(checks));
        }
        Ok(body)
    }
}

/// A `--meta` value: `KEY=VALUE`, the key not empty.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

async fn export(remote: RemoteArgs) -> anyhow::Result<()> {
    let export = remote.client()?.export().await?;
    print(&format!("{export}\n"))
}

async fn import(file: PathBuf, remote: RemoteArgs) -> anyhow::Result<()> {
    let body = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let answer = remote.client()?.import(body).await?;
    print(&format!("{answer}\n"))
}

async fn watch(name: String, count: Option<u64>, remote: RemoteArgs) -> anyhow::Result<()> {
    let client = remote.client()?;
    // A blocking query from index 0 answers at once with the current one.
    let mut index = client.wait_for_change(&name, 0).await?;
    let mut shown = None;
    let mut printed = 0;
    loop {
        let table = match client.service(&name).await {
            Ok(service) => client::service_table(&service),
            Err(ClientError::Refused { status: 404, .. }) => format!("no service {name:?}\n"),
            Err(error) => return Err(error.into()),
        };
        if shown.as_ref() != Some(&table) {
            print(&format!("-- {name} at index {index}\n{table}"))?;
            shown = Some(table);
            printed += 1;
            if count.is_some_and(|count| printed >= count) {
                return Ok(());
            }
        }
        index = loop {
            match client.wait_for_change(&name, index).await {
                // Too many watchers at once: roster keeps room for writes.
                // Ask again in a moment, as Consul's clients do.
                Err(ClientError::Refused { status: 429, .. }) => {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                changed => break changed?,
            }
        };
    }
}

#[derive(clap::Args, Clone)]
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
    /// The config file with the flags laid over it, checked: at start-up
    /// and again on each SIGHUP, so that a reload compares like with like
    /// (the file alone would differ from what runs wherever a flag is
    /// given).
    fn config(&self) -> Result<Config, roster::ConfigError> {
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
    // hickory-proto warns per message it parses with a SIG(0) record: one
    // line per datagram anyone may send, so errors only.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,hickory_server=warn,hickory_net=warn,hickory_proto=error")
    });
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
    let reloads = reload_on_sighup(args)?;
    let listeners = Listeners::bind(&config).await?;
    roster::run_reloading(config, listeners, shutdown, reloads).await?;
    Ok(())
}

/// On SIGHUP, reads the config file again (the same one `serve` read),
/// lays `serve`'s flags over it again, and hands the result, or why it
/// does not load, to the running server, which applies its `[acl]` tokens
/// and DNS cookie secrets and re-reads its TLS files; a file that does not
/// load changes nothing.
fn reload_on_sighup(
    args: ServeArgs,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<roster::Reload>> {
    let (updates, received) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if updates.send(args.config()).await.is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (args, updates);
    Ok(received)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Commands::Serve(args) => serve(args).await,
        Commands::Services(remote) => {
            async {
                let services = remote.client()?.services().await?;
                print(&client::services_table(&services))
            }
            .await
        }
        Commands::Service { name, remote } => {
            async {
                let service = remote.client()?.service(&name).await?;
                print(&client::service_table(&service))
            }
            .await
        }
        Commands::Register(args) => {
            async {
                let body = args.body()?;
                let client = args.remote.client()?;
                let registered = client.register(&args.service, &args.id, &body).await?;
                let in_dns = registered["in_dns"].as_bool() == Some(true);
                print(&format!(
                    "registered {}/{} ({}:{}, {}{})\n",
                    args.service,
                    args.id,
                    registered["address"].as_str().unwrap_or_default(),
                    registered["port"],
                    registered["status"].as_str().unwrap_or_default(),
                    if in_dns {
                        ", in DNS"
                    } else {
                        ", not in DNS yet"
                    },
                ))
            }
            .await
        }
        Commands::Deregister {
            service,
            id,
            remote,
        } => {
            async {
                remote.client()?.deregister(&service, &id).await?;
                print(&format!("deregistered {service}/{id}\n"))
            }
            .await
        }
        Commands::Maintenance {
            service,
            id,
            enable,
            disable: _,
            reason,
            remote,
        } => {
            async {
                let client = remote.client()?;
                client
                    .maintenance(&service, &id, enable, reason.as_deref())
                    .await?;
                let what = if enable {
                    "drained from DNS"
                } else {
                    "back in service"
                };
                print(&format!("{service}/{id}: {what}\n"))
            }
            .await
        }
        Commands::Heartbeat {
            service,
            id,
            status,
            note,
            remote,
        } => {
            async {
                let client = remote.client()?;
                client
                    .heartbeat(&service, &id, &status, note.as_deref())
                    .await?;
                print(&format!("{service}/{id}: {status}\n"))
            }
            .await
        }
        Commands::Watch {
            name,
            count,
            remote,
        } => watch(name, count, remote).await,
        Commands::Export(remote) => export(remote).await,
        Commands::Import { file, remote } => import(file, remote).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes on one line, without the backtrace
            // anyhow would add: users need the message.
            roster::logging::print_error(&format!("roster: error: {}", one_line(&error)));
            // 3 when no roster answered, so scripts can tell "down" from
            // "refused"; 1 for every other failure (clap's usage errors are 2).
            match error.downcast_ref::<ClientError>() {
                Some(client_error) => ExitCode::from(client_error.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// `error` and its causes on one line. roster's own errors end with their
/// cause's text already and anyhow's context does not, so a cause is added
/// only where the line does not end with it yet (`{:#}` would repeat
/// each one).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the store failed: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::other("disk full");
        let error = anyhow::Error::new(Outer(inner)).context("cannot start");
        assert_eq!(
            one_line(&error),
            "cannot start: the store failed: disk full"
        );
    }
}
