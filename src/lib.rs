//! roster: a DNS-based service discovery server.
//!
//! This is the composition root: it wires the store, registry, health
//! checker, DNS server and HTTP API together from a [`Config`]. [`run`] takes
//! already-bound sockets and a shutdown future, so tests bind port 0 and
//! `main` passes the signal handler; [`start`] does both for tests.

pub mod client;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod health;
pub mod http;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
mod pem_files;
pub mod registry;
pub mod resolve;
pub mod update;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use hickory_proto::rr::LowerName;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{info, warn};

pub use config::{Config, ConfigError};

use crate::{
    cluster::Cluster,
    dns::{
        table::Nameserver,
        zones::{StaticZones, ZoneError},
    },
    health::HealthChecker,
    metrics::Metrics,
    registry::{
        EmbeddedStore, MemoryStore, Registry, RegistryError, Store, StoreError, TableSettings,
    },
};

/// How long in-flight HTTP requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why roster could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen for {what} on {address}: {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Zones(#[from] ZoneError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task roster cannot serve correctly without (the registry writer,
    /// the health checker) ended before shutdown.
    #[error("the {task} stopped unexpectedly; see the log above")]
    TaskFailed { task: &'static str },
    #[error("{what} failed: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The sockets roster serves on, bound before it starts.
pub struct Listeners {
    /// Several sockets on one port (SO_REUSEPORT): the kernel spreads
    /// datagrams across them, so every core can serve DNS. Plain std
    /// sockets: each is served by a blocking thread, not the runtime.
    pub dns_udp: Vec<std::net::UdpSocket>,
    /// Whether each datagram goes to the socket of the CPU that received
    /// it (see `dns::steer_by_cpu`), which `dns.udp_cpu_affinity` needs.
    pub dns_udp_steered: bool,
    pub dns_tcp: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`. DNS gets UDP and TCP on the same
    /// port; with port 0 the kernel picks the UDP port and TCP follows it.
    pub async fn bind(config: &Config) -> Result<Self, RunError> {
        let dns = config.dns.listen;
        let sockets = match config.dns.udp_sockets {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (dns_udp, dns_udp_steered, dns_tcp) = bind_dns(dns, sockets)?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| RunError::Bind {
                what: "HTTP",
                address: config.http.listen,
                source,
            })?;
        Ok(Self {
            dns_udp,
            dns_udp_steered,
            dns_tcp,
            http,
        })
    }

    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_udp
            .first()
            .and_then(|socket| socket.local_addr().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// Binds `count` UDP sockets and one TCP listener on one port, and says
/// whether the UDP sockets are steered by CPU. With port 0, the kernel
/// picks a port no socket holds, and all of them take it; a few tries,
/// since another process may take that port meanwhile.
fn bind_dns(
    address: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::UdpSocket>, bool, TcpListener), RunError> {
    let bind_error = |what, source| RunError::Bind {
        what,
        address,
        source,
    };
    let ephemeral = address.port() == 0;
    let tries = if ephemeral { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..tries {
        // Not port 0 with SO_REUSEPORT: Linux does not count another
        // SO_REUSEPORT socket of the same user as holding a port, so it
        // may give a port another server of this user (or one still
        // stopping) serves on, and the two would share its datagrams. A
        // plain socket is given a port that no socket holds.
        let bound = if ephemeral {
            let probe =
                std::net::UdpSocket::bind(address).map_err(|e| bind_error("DNS over UDP", e))?;
            probe
                .local_addr()
                .map_err(|e| bind_error("DNS over UDP", e))?
        } else {
            address
        };
        let first = match reuseport_udp(bound) {
            Ok(first) => first,
            Err(e) if ephemeral => {
                last_error = Some(("DNS over UDP", e));
                continue;
            }
            Err(e) => return Err(bind_error("DNS over UDP", e)),
        };
        let tcp = match std::net::TcpListener::bind(bound) {
            Ok(tcp) => tcp,
            Err(e) => {
                last_error = Some(("DNS over TCP", e));
                continue;
            }
        };
        let mut udp = vec![first];
        for _ in 1..count.max(1) {
            udp.push(reuseport_udp(bound).map_err(|e| bind_error("DNS over UDP", e))?);
        }
        let steered = dns::steer_by_cpu(&udp).unwrap_or_else(|error| {
            tracing::debug!(%error, "DNS over UDP: datagrams spread over the sockets by hash, not by CPU");
            false
        });
        tcp.set_nonblocking(true)
            .map_err(|e| bind_error("DNS over TCP", e))?;
        // Without TCP_NODELAY pipelined answers sit in Nagle's buffer until
        // the client's (delayed) ACK: ~40 ms at p99. Accepted sockets
        // inherit it from the listener on Linux; the TCP loop sets it on
        // each connection too, for other systems.
        socket2::SockRef::from(&tcp)
            .set_tcp_nodelay(true)
            .map_err(|e| bind_error("DNS over TCP", e))?;
        let tcp = TcpListener::from_std(tcp).map_err(|e| bind_error("DNS over TCP", e))?;
        return Ok((udp, steered, tcp));
    }
    let (what, error) =
        last_error.unwrap_or_else(|| ("DNS", std::io::Error::other("no free port")));
    Err(bind_error(what, error))
}

/// A UDP socket with SO_REUSEPORT, so several can share a port.
fn reuseport_udp(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// Opens the embedded store in `data_dir`, counting its checkpoints into
/// `metrics`, or a memory store when `data_dir` is empty.
async fn open_store(
    data_dir: &std::path::Path,
    metrics: &Metrics,
) -> Result<Arc<dyn Store>, RunError> {
    if data_dir.as_os_str().is_empty() {
        return Ok(Arc::new(MemoryStore::default()));
    }
    let dir = data_dir.to_owned();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
        .await
        .map_err(|e| RunError::Store(StoreError::Crashed(e.to_string())))??;
    info!(path = %store.path().display(), "store opened");
    Ok(Arc::new(store.counting_into(metrics.checkpoints.clone())))
}

/// Runs roster on `listeners` until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (_keep, reloads) = mpsc::channel(1);
    run_reloading(config, listeners, shutdown, reloads).await
}

/// A configuration read again for [`run_reloading`], or why it did not
/// load.
pub type Reload = Result<Config, ConfigError>;

/// [`run`], taking the configuration again from `reloads` while it runs
/// (the binary sends the config file on SIGHUP). Of each, four parts are
/// applied: the `[acl]` tokens, the API's TLS certificate, key and client
/// CA, in cluster mode over TLS the etcd CA and client certificate, each
/// read from their files again, and the DNS cookie secrets. Each is
/// checked as at start-up; one that does not pass is refused with an error
/// in the log, and what is in force stays. The rest takes a restart, and a
/// change to it is logged as such.
pub async fn run_reloading(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut reloads: mpsc::Receiver<Reload>,
) -> Result<(), RunError> {
    config.validate("configuration")?;
    // Read before anything starts: a bad TLS file fails start-up cleanly.
    let http_tls = http::tls::ServerTls::from_config(&config.http)?.map(Arc::new);
    let domain = config
        .domain_name()
        .map_err(|message| ConfigError::Invalid {
            origin: "configuration".into(),
            key: "dns.domain",
            message,
        })?;
    // A zones directory that is not there serves no static zones; when it
    // is not the default, a typo is likelier than a choice.
    if !config.dns.zones.exists() && config.dns.zones != config::DnsConfig::default().zones {
        warn!(zones = %config.dns.zones.display(), "dns.zones names no directory: no static zones are served");
    }
    let zones = Arc::new(StaticZones::load_dir(&config.dns.zones, &domain)?);
    for zone in zones.iter() {
        info!(zone = %zone.origin, "serving static zone");
    }
    let (events, event_queue) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    if let Some(not_after) = http_tls
        .as_deref()
        .and_then(http::tls::ServerTls::not_after)
    {
        metrics.reloads.http_tls_not_after.store(not_after, Relaxed);
    }
    let ns_name = config
        .ns_name(&domain)
        .map_err(|message| ConfigError::Invalid {
            origin: "configuration".into(),
            key: "dns.ns_name",
            message,
        })?;
    let nameserver = Nameserver::new(&domain, ns_name, &config.ns_addresses());
    if nameserver.addresses.is_empty() && Nameserver::answers_for(&domain, &nameserver.name) {
        info!(ns = %nameserver.name, "no address for the apex NS target (dns.listen is unspecified and dns.ns_address is empty): resolvers that prime the domain cannot follow it");
    }
    let settings = TableSettings {
        domain: domain.clone(),
        ttl: config.dns.ttl,
        negative_ttl: config.dns.negative_ttl,
        include_warning: config.dns.include_warning,
        nameserver: Arc::new(nameserver),
    };
    // The etcd TLS files' contents are kept for reloads, which connect
    // anew only when they change.
    let (cluster, etcd_files) = match config.cluster.enabled() {
        true => {
            let (tls, probe, files) = match cluster::tls::load(&config.cluster)? {
                Some(cluster::tls::Loaded {
                    options,
                    files,
                    probe,
                }) => (Some(options), Some(probe), Some(files)),
                None => (None, None, None),
            };
            let credentials = cluster::credentials::from_config(&config.cluster)?;
            let cluster = Cluster::connect(&config.cluster, tls, probe, credentials).await?;
            (Some(cluster), files)
        }
        false => (None, None),
    };
    let (registry, writer) = match &cluster {
        Some(cluster) => {
            info!(etcd = cluster.etcd.endpoints(), prefix = cluster.keys.prefix(), node = %cluster.node, "cluster mode: the registry lives in etcd");
            Registry::start_cluster(cluster.clone(), settings, events, metrics.clone()).await?
        }
        None => {
            let store = open_store(&config.data_dir, &metrics).await?;
            Registry::start(store, settings, events, metrics.clone()).await?
        }
    };
    let ownership = cluster.as_ref().map(|cluster| health::Ownership {
        node: cluster.node.clone(),
        members: registry.members(),
    });
    let mut checker = HealthChecker::start(
        registry.clone(),
        event_queue,
        metrics.clone(),
        ownership,
        &config.health,
    );
    info!(
        instances = registry.state().instance_count(),
        index = registry.state().index,
        "registry loaded"
    );

    // Raise the open-file limit first, then size the connection caps to
    // whatever it is: running out of descriptors stops health probes and
    // the store, not just new clients.
    let nofile = limits::raise_nofile_limit().unwrap_or_else(|error| {
        warn!(%error, "assuming the common default open-file limit of 1024");
        1024
    });
    let caps = limits::connection_caps(
        config.http.max_connections,
        config.dns.tcp_max_connections,
        nofile,
    );
    info!(
        nofile,
        http = caps.http,
        dns_tcp = caps.dns_tcp,
        "connection caps"
    );

    let dns_addr = listeners.dns_addr();
    let http_addr = listeners.http_addr();
    let handler = dns::DnsHandler::new(
        registry.table(),
        zones,
        LowerName::new(&domain),
        config.dns.max_udp_payload,
    );
    let handler = if config.dns.update.enabled {
        let keys = dns::KeyRing::from_config(&config.dns.update.keys).map_err(|message| {
            ConfigError::Invalid {
                origin: "the configuration".to_owned(),
                key: "dns.update.keys",
                message,
            }
        })?;
        let settings = update::UpdateSettings {
            domain: domain.clone(),
            default_port: config.dns.update.default_port,
            default_check: config.dns.update.default_check.clone(),
        };
        info!(keys = config.dns.update.keys.len(), "DNS UPDATE on");
        let updates = update::RegistryUpdates::new(registry.clone(), settings);
        handler
            .with_updates(keys, Arc::new(updates))
            .with_update_counters(metrics.dns_updates.clone())
    } else {
        handler
    };
    // Kept for reloads: every copy the DNS threads hold shares its secrets.
    let cookies = match config.dns.cookies {
        true => Some(match config.cookie_secrets()? {
            Some(secrets) => dns::Cookies::rolling(&secrets.current, &secrets.accepted),
            None => dns::Cookies::random(),
        }),
        false => None,
    };
    let handler = match &cookies {
        Some(cookies) => handler
            .with_cookies(cookies.clone())
            .with_cookie_counts(metrics.dns.general_cookies.clone()),
        None => handler,
    };
    let tcp_timeouts = dns::TcpTimeouts {
        idle: std::time::Duration::from_secs(config.dns.tcp_idle_timeout.into()),
        max_age: std::time::Duration::from_secs(config.dns.tcp_max_connection_age.into()),
    };
    let udp_affinity = match (config.dns.udp_cpu_affinity, listeners.dns_udp_steered) {
        (true, false) => {
            warn!(
                "dns.udp_cpu_affinity is on, but the UDP sockets are not steered by CPU \
                 (that needs Linux and 2 to nproc of dns.udp_sockets); the UDP threads are not pinned"
            );
            false
        }
        (on, _) => on,
    };
    let dns_server = dns::serve(
        handler,
        &metrics.dns,
        listeners.dns_udp,
        udp_affinity,
        listeners.dns_tcp,
        caps.dns_tcp,
        tcp_timeouts,
        dns::RateLimit {
            per_second: config.dns.rate_limit,
            slip: config.dns.rate_limit_slip,
        },
    );
    if let Some(counter) = dns_server.rate_limit_counter() {
        let _ = metrics.dns_rate_limit.set(counter);
    }

    let acl = Arc::new(arc_swap::ArcSwap::from_pointee(http::acl::Acl::new(
        &config.acl,
    )));
    if config.acl.enabled {
        info!(tokens = config.acl.tokens.len(), default_policy = ?config.acl.default_policy, "ACLs are on");
    }
    let reloads = {
        let (acl, tls, metrics) = (acl.clone(), http_tls.clone(), metrics.clone());
        let etcd = cluster.as_ref().map(|cluster| cluster.etcd.clone());
        let mut running = config.clone();
        let mut etcd_files = etcd_files;
        tokio::spawn(async move {
            while let Some(update) = reloads.recv().await {
                metrics
                    .reloads
                    .count(crate::metrics::RELOAD_FILE, update.is_ok());
                let update = match update {
                    Ok(update) => update,
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: the configuration does not load; the ACL tokens in force stay, and so do the TLS files and the DNS cookie secrets");
                        continue;
                    }
                };
                let restart = running.changed_beyond_reload(&update);
                if !restart.is_empty() {
                    warn!(sections = ?restart, "SIGHUP: settings that take a restart changed in the config file; the ones in force stay until then");
                }
                if let Some(etcd) = &etcd {
                    reload_etcd_tls(&mut running, &update, etcd, &mut etcd_files, &metrics).await;
                }
                reload_cookie_secrets(&mut running, &update, cookies.as_ref(), &metrics);
                apply_reload(&mut running, update, &acl, tls.as_deref(), &metrics);
            }
        })
    };
    let shutting_down = tokio_util::sync::CancellationToken::new();
    let app = http::router(http::AppState::new(http::AppStateFields {
        shutting_down: shutting_down.clone(),
        registry: registry.clone(),
        domain: Arc::from(domain.to_ascii().trim_end_matches('.')),
        include_warning: config.dns.include_warning,
        metrics: metrics.clone(),
        consul: config.consul.clone(),
        cluster: cluster.is_some(),
        acl: acl.clone(),
        health: config.health.clone(),
        import_slot: tokio::sync::Semaphore::new(1),
        blocking_slots: tokio::sync::Semaphore::new(http::blocking_budget(caps.http)),
    }));
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http_limits = http::server::HttpLimits {
        max_connections: caps.http,
        header_read_timeout: Duration::from_secs(config.http.header_read_timeout),
        body_read_timeout: Duration::from_secs(config.http.body_read_timeout),
        idle_timeout: Duration::from_secs(config.http.idle_timeout),
        write_timeout: Duration::from_secs(config.http.write_timeout),
    };
    let http_server = tokio::spawn(http::server::serve(
        listeners.http,
        app,
        http_limits,
        http_tls,
        async move {
            let _ = http_stopped.await;
        },
    ));
    info!(dns = %dns_addr, http = %http_addr, domain = %domain, "roster is serving");
    // In a cluster, joining comes last: the other nodes hand this one
    // checks as soon as its member key appears.
    let membership = cluster.as_ref().map(|cluster| {
        let record = cluster::keys::MemberRecord {
            name: cluster.node.clone(),
            http: http_addr.to_string(),
            dns: dns_addr.to_string(),
            checks: 0,
        };
        let key = cluster.keys.member(&cluster.node);
        let task = tokio::spawn(cluster::members::keep_alive(
            cluster.etcd.clone(),
            key.clone(),
            record,
            metrics.clone(),
        ));
        (task, key)
    });

    // A writer or health checker that ends before shutdown has panicked:
    // roster would live on refusing every write, or never checking health
    // again, while DNS served frozen data. Shut down and exit non-zero
    // instead, so a supervisor restarts a whole roster.
    let mut writer = std::pin::pin!(writer);
    let failed = tokio::select! {
        () = shutdown => None,
        ended = &mut writer => Some(("registry writer", ended)),
        ended = checker.ended() => Some(("health checker", ended)),
    };
    if let Some((task, ended)) = &failed {
        let reason = match ended {
            Err(join) if join.is_panic() => "it panicked",
            _ => "it stopped",
        };
        tracing::error!(
            "the {task} failed ({reason}); roster is stopping so that it can be restarted"
        );
    }
    info!("shutting down");
    // Blocked queries answer now with what roster holds, as if their wait
    // had passed; other in-flight requests finish.
    shutting_down.cancel();
    let _ = stop_http.send(());
    // Anything still running after a bounded grace period is cut off.
    let http_abort = http_server.abort_handle();
    let http_result = match tokio::time::timeout(SHUTDOWN_GRACE, http_server).await {
        Ok(result) => result,
        Err(_) => {
            warn!("in-flight HTTP requests did not finish in time; closing them");
            http_abort.abort();
            Ok(Ok(()))
        }
    };
    reloads.abort();
    dns_server.shutdown().await;
    // Leave the cluster before the checks stop, so they move at once.
    if let (Some((task, key)), Some(cluster)) = (membership, &cluster) {
        task.abort();
        cluster::members::leave(&cluster.etcd, &key).await;
    }
    checker.stop().await;
    // The last handle: the writer finishes queued commands, then closes the
    // store, so a restart in the same process finds the directory unlocked.
    drop(registry);
    if let Some((task, _)) = failed {
        return Err(RunError::TaskFailed { task });
    }
    let _ = writer.await;
    info!("stopped");
    match http_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(RunError::Serve {
            what: "HTTP server",
            source,
        }),
        Err(join) => Err(RunError::Serve {
            what: "HTTP server",
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// Applies what a reload may change to the running server: `update`'s
/// `[acl]` (checked with the rest of `running` as at start-up) and, when
/// the API speaks HTTPS, the TLS files its `[http]` names, read again. Each
/// part that does not pass is logged as an error and changes nothing;
/// `running` keeps what is in force.
fn apply_reload(
    running: &mut Config,
    update: Config,
    acl: &arc_swap::ArcSwap<http::acl::Acl>,
    tls: Option<&http::tls::ServerTls>,
    metrics: &Metrics,
) {
    let in_force = std::mem::replace(&mut running.acl, update.acl);
    let validated = running.validate("reloaded configuration");
    metrics
        .reloads
        .count(crate::metrics::RELOAD_ACL, validated.is_ok());
    match validated {
        Ok(()) => {
            acl.store(Arc::new(http::acl::Acl::new(&running.acl)));
            info!(
                enabled = running.acl.enabled,
                tokens = running.acl.tokens.len(),
                "ACL tokens reloaded"
            );
        }
        Err(error) => {
            running.acl = in_force;
            tracing::error!(%error, "the reloaded ACL settings are refused; the ones in force stay");
        }
    }
    let Some(tls) = tls else {
        if !update.http.tls_cert_file.as_os_str().is_empty() {
            warn!(
                "http.tls_cert_file is set, but HTTPS is turned on only by a restart; the API stays plain HTTP"
            );
        }
        return;
    };
    let reloaded = tls.reload(&update.http);
    metrics
        .reloads
        .count(crate::metrics::RELOAD_HTTP_TLS, reloaded.is_ok());
    match reloaded {
        Ok(()) => {
            let not_after = tls.not_after().unwrap_or(0);
            metrics.reloads.http_tls_not_after.store(not_after, Relaxed);
            running.http.tls_cert_file = update.http.tls_cert_file;
            running.http.tls_key_file = update.http.tls_key_file;
            running.http.tls_client_ca_file = update.http.tls_client_ca_file;
            info!(
                cert = %running.http.tls_cert_file.display(),
                client_certificates_required = !running.http.tls_client_ca_file.as_os_str().is_empty(),
                "TLS certificate reloaded; new connections get it"
            );
        }
        Err(error) => {
            tracing::error!(%error, "the reloaded TLS files are refused; the certificate in force stays");
        }
    }
}

/// With DNS cookies on, makes `update`'s `dns.cookie_secret` and
/// `dns.cookie_secrets_accepted` the ones in force when they differ from
/// `running`'s: RFC 9018 section 4.4's rollover, one SIGHUP a step. An
/// emptied secret means a new random one, as at start-up. Secrets that do
/// not pass are logged as an error and change nothing. Turning cookies on
/// or off takes a restart ([`Config::changed_beyond_reload`] says so).
fn reload_cookie_secrets(
    running: &mut Config,
    update: &Config,
    cookies: Option<&dns::Cookies>,
    metrics: &Metrics,
) {
    let Some(cookies) = cookies else {
        return;
    };
    if update.dns.cookie_secret == running.dns.cookie_secret
        && update.dns.cookie_secrets_accepted == running.dns.cookie_secrets_accepted
    {
        return;
    }
    let in_force = (
        std::mem::replace(
            &mut running.dns.cookie_secret,
            update.dns.cookie_secret.clone(),
        ),
        std::mem::replace(
            &mut running.dns.cookie_secrets_accepted,
            update.dns.cookie_secrets_accepted.clone(),
        ),
    );
    let secrets = running
        .validate("reloaded configuration")
        .and_then(|()| running.cookie_secrets());
    // Counted once applied: a client that sees the count may rely on it.
    let applied = secrets.is_ok();
    match secrets {
        Ok(Some(secrets)) => {
            cookies.replace(&secrets.current, &secrets.accepted);
            info!(
                accepted = secrets.accepted.len(),
                "DNS cookie secrets reloaded; answers from now on carry cookies made with the new secret"
            );
        }
        Ok(None) => {
            cookies.replace_with_random();
            info!(
                "dns.cookie_secret is now empty: DNS cookies are made with a new random secret of this process's own"
            );
        }
        Err(error) => {
            (
                running.dns.cookie_secret,
                running.dns.cookie_secrets_accepted,
            ) = in_force;
            tracing::error!(%error, "the reloaded DNS cookie secrets are refused; the ones in force stay");
        }
    }
    metrics
        .reloads
        .count(crate::metrics::RELOAD_DNS_COOKIES, applied);
}

/// In cluster mode over TLS, reads the etcd TLS files `update`'s
/// `[cluster]` names (renewed certificates, a new CA) and, when they hold
/// anything other than `in_force`, connects to etcd again with them: calls
/// from then on use the new connections. Files that do not load are logged
/// as an error and change nothing. The etcd URLs themselves take a restart
/// ([`Config::changed_beyond_reload`] says so).
async fn reload_etcd_tls(
    running: &mut Config,
    update: &Config,
    etcd: &cluster::etcd::Etcd,
    in_force: &mut Option<cluster::tls::Files>,
    metrics: &Metrics,
) {
    if !running.cluster.tls() {
        return;
    }
    let mut candidate = running.cluster.clone();
    candidate.tls_ca_file = update.cluster.tls_ca_file.clone();
    candidate.tls_cert_file = update.cluster.tls_cert_file.clone();
    candidate.tls_key_file = update.cluster.tls_key_file.clone();
    let settings_in_force = std::mem::replace(&mut running.cluster, candidate);
    let loaded = match running.validate("reloaded configuration") {
        Ok(()) => cluster::tls::load(&running.cluster).map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    // A SIGHUP for another part (the ACL tokens) must not cut etcd's
    // connections, nor fail on an etcd that is briefly out of reach.
    if let Ok(Some(loaded)) = &loaded
        && in_force.as_ref() == Some(&loaded.files)
    {
        info!("the etcd TLS files are unchanged; the connections in force stay");
        return;
    }
    let reloaded = match loaded {
        Ok(Some(loaded)) => match etcd.reconnect(Some(loaded.options)).await {
            Ok(()) => {
                *in_force = Some(loaded.files);
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        },
        // running.cluster.tls() held, and validation keeps TLS files
        // with https:// URLs.
        Ok(None) => Err("the etcd URLs call for TLS, but no TLS files are set".to_owned()),
        Err(error) => Err(error),
    };
    metrics
        .reloads
        .count(crate::metrics::RELOAD_ETCD_TLS, reloaded.is_ok());
    match reloaded {
        Ok(()) => info!(
            ca = %running.cluster.tls_ca_file.display(),
            "etcd TLS files reloaded; new calls to etcd use them"
        ),
        Err(error) => {
            running.cluster = settings_in_force;
            tracing::error!(%error, "the reloaded etcd TLS files are refused; the ones in force stay");
        }
    }
}

/// A roster started in the background, for tests and embedding.
pub struct Running {
    pub dns_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Stops roster and waits until it has.
    pub async fn stop(self) -> Result<(), RunError> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| RunError::Serve {
            what: "roster",
            source: std::io::Error::other(e.to_string()),
        })?
    }
}

/// Binds per `config` (port 0 allowed) and runs roster in a task.
pub async fn start(config: Config) -> Result<Running, RunError> {
    let listeners = Listeners::bind(&config).await?;
    let dns_addr = listeners.dns_addr();
    let http_addr = listeners.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(config, listeners, async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        dns_addr,
        http_addr,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie_secret(secret: &str, accepted: &[&str]) -> Config {
        let mut config = Config::default();
        config.dns.cookie_secret = config::Secret(secret.to_owned());
        config.dns.cookie_secrets_accepted = accepted
            .iter()
            .map(|s| config::Secret((*s).to_owned()))
            .collect();
        config
    }

    fn cookie_reloads(metrics: &Metrics) -> [u64; 2] {
        let counts = &metrics.reloads.reloads[crate::metrics::RELOAD_DNS_COOKIES];
        [counts[0].load(Relaxed), counts[1].load(Relaxed)]
    }

    /// A reload takes new cookie secrets that pass, counts nothing when
    /// they did not change, and refuses ones that do not pass, keeping
    /// the secrets in force (the binary's own file check catches the
    /// latter first; an embedding program may not).
    #[test]
    fn a_reload_takes_cookie_secrets_that_pass_and_refuses_others() {
        const OLD: &str = "dd3bdf9344b678b185a6f5cb60fca715";
        const NEW: &str = "445536bcd2513298075a5d379663c962";
        let metrics = Metrics::default();
        let cookies = dns::Cookies::random();
        let mut running = with_cookie_secret(OLD, &[]);
        let same = running.clone();
        reload_cookie_secrets(&mut running, &same, Some(&cookies), &metrics);
        assert_eq!(cookie_reloads(&metrics), [0, 0], "nothing changed");

        let update = with_cookie_secret(NEW, &[OLD]);
        reload_cookie_secrets(&mut running, &update, Some(&cookies), &metrics);
        assert_eq!(cookie_reloads(&metrics), [1, 0]);
        assert_eq!(running.dns.cookie_secret.0, NEW);
        assert_eq!(running.dns.cookie_secrets_accepted.len(), 1);

        for bad in [
            with_cookie_secret("not-a-secret", &[]),
            with_cookie_secret(NEW, &[NEW]),
            with_cookie_secret("", &[OLD]),
        ] {
            reload_cookie_secrets(&mut running, &bad, Some(&cookies), &metrics);
            assert_eq!(running.dns.cookie_secret.0, NEW);
            assert_eq!(running.dns.cookie_secrets_accepted.len(), 1);
        }
        assert_eq!(cookie_reloads(&metrics), [1, 3]);

        // Cookies off: nothing to reload.
        let off = Metrics::default();
        reload_cookie_secrets(&mut running, &with_cookie_secret(OLD, &[]), None, &off);
        assert_eq!(cookie_reloads(&off), [0, 0]);
    }

    /// Port 0 never yields a port that another SO_REUSEPORT group of this
    /// user already serves on (Linux would hand it out, and the two servers
    /// would share its datagrams: seen as one test's query answered by
    /// another test's server). Made certain in a network namespace of its
    /// own whose only ephemeral port is held by such a group. Needs root;
    /// skipped without.
    #[test]
    #[allow(unsafe_code)] // unshare(2), for a network namespace of its own
    fn an_ephemeral_dns_port_is_never_one_another_reuseport_group_holds() {
        let checked = std::thread::spawn(|| {
            // SAFETY: unshare takes no pointers; it moves only this thread,
            // which exists for this test alone, to a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return false;
            }
            // Per namespace: only this thread's namespace has one port.
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40000")
                .expect("narrow the ephemeral range");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("run ip");
            assert!(up.success(), "ip link set lo up: {up}");
            let held = reuseport_udp("127.0.0.1:40000".parse().expect("address"))
                .expect("another server's socket");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _entered = runtime.enter();
            let address = "127.0.0.1:0".parse().expect("address");
            // With its only ephemeral port held, refusing is right.
            if let Ok((udp, _, _)) = bind_dns(address, 2) {
                let port = udp[0].local_addr().expect("address").port();
                assert_ne!(port, 40000, "took the port another group serves on");
            }
            drop(held);
            // Free again: it is taken, by every socket.
            let (udp, _, tcp) = bind_dns(address, 2).expect("bind");
            for socket in &udp {
                assert_eq!(socket.local_addr().expect("address").port(), 40000);
            }
            assert_eq!(tcp.local_addr().expect("address").port(), 40000);
            true
        })
        .join()
        .expect("the test thread");
        if !checked {
            eprintln!("skipped: a network namespace of its own needs root");
        }
    }
}
