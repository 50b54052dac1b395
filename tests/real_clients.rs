//! Real load balancers and resolvers in front of a real roster: Debian's
//! HAProxy, nginx and unbound, each run by the test in the foreground on
//! free loopback ports with the configuration the README shows (read from
//! README.md, see `common::readme::snippet`), in front of backends
//! registered with HTTP checks.
//!
//! Each test checks discovery (traffic or answers reach the registered
//! instances), balance (every healthy instance gets traffic) and failure:
//! a backend's `/health` starts failing while the backend itself still
//! serves, so only roster's check, through DNS, can take it out of the
//! proxy's rotation. The waits are bounded hang guards, never timing
//! assertions: how fast each client re-resolves is its own business.

mod common;

use std::{
    cell::Cell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType},
};

use common::{
    Server,
    daemon::{Daemon, daemon_dir, free_port},
    eventually,
    readme::snippet as readme_snippet,
    start_server,
    web::Backend,
};

/// How long a proxy may take to follow a change in DNS: roster's check
/// must fail, then the proxy must re-resolve (HAProxy every second, nginx
/// every `valid=1s`). Generous for a busy machine.
const FOLLOW_LIMIT: Duration = Duration::from_secs(60);
/// Requests in one round through a proxy.
const ROUND: usize = 30;
/// Rounds in a row that must all avoid a failed backend before it counts as
/// out of rotation (a client mid-way through re-resolving may still send one).
const STABLE_ROUNDS: usize = 2;

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Registers every backend as an instance of `web`, with an HTTP check of
/// its `/health`, and waits until DNS serves them all.
async fn register_all(server: &Server, backends: &[Backend]) {
    for backend in backends {
        let reply = server
            .register("web", &backend.name, backend.registration())
            .await;
        assert_eq!(reply.status, 200, "register {}: {reply:?}", backend.name);
    }
    eventually("every backend passing in DNS", FOLLOW_LIMIT, || async {
        let srvs = server.query("web.service.local", RecordType::SRV).await;
        let count = srvs.srvs().len();
        if count == backends.len() {
            Ok(())
        } else {
            Err(format!("{count} SRV records"))
        }
    })
    .await;
}

/// A client that opens a new connection for every request, so each one is
/// balanced afresh.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Sends [`ROUND`] requests to `url`; counts the answers by backend name
/// (`error: ...` for a failed request).
async fn round(client: &reqwest::Client, url: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..ROUND {
        let answer = match client.get(url).send().await {
            Ok(response) if response.status().is_success() => response
                .text()
                .await
                .unwrap_or_else(|e| format!("error: {e}")),
            Ok(response) => format!("error: status {}", response.status()),
            Err(e) => format!("error: {e}"),
        };
        *seen.entry(answer).or_default() += 1;
    }
    seen
}

/// Waits until [`STABLE_ROUNDS`] rounds in a row are answered by exactly
/// the backends named `wanted`, each at least once, and nothing else.
async fn wait_rotation(client: &reqwest::Client, url: &str, wanted: &[&str], why: &str) {
    let in_a_row = Cell::new(0);
    eventually(why, FOLLOW_LIMIT, || {
        let in_a_row = &in_a_row;
        async move {
            let seen = round(client, url).await;
            let names: Vec<&str> = seen.keys().map(String::as_str).collect();
            in_a_row.set(if names == wanted {
                in_a_row.get() + 1
            } else {
                0
            });
            if in_a_row.get() >= STABLE_ROUNDS {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        }
    })
    .await;
}

/// Waits until roster reports `id`'s check as `status`.
async fn wait_status(server: &Server, id: &str, status: &str) {
    eventually(
        &format!("{id} {status} in roster"),
        FOLLOW_LIMIT,
        || async {
            let body = common::instance(server, "web", id).await;
            let seen = &body["checks"][0]["status"];
            if seen == status {
                Ok(())
            } else {
                Err(format!("{seen}"))
            }
        },
    )
    .await;
}

/// HAProxy with the README's `resolvers` and `server-template` on
/// `_web._tcp.service.local` SRV, in front of a frontend on a free port.
async fn start_haproxy(dns: SocketAddr) -> (Daemon, String) {
    let dir = daemon_dir();
    let listen = SocketAddr::new(loopback(1), free_port(loopback(1)));
    let snippet = readme_snippet("resolvers roster", &[("127.0.0.1:8600", &dns.to_string())]);
    let config = format!(
        "global\n    log stdout format raw local0 info\n\n\
         defaults\n    mode http\n    log global\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\n\
         frontend web_in\n    bind {listen}\n    default_backend web\n\n{snippet}"
    );
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, config).expect("write haproxy.cfg");
    let args = vec![
        // -db: foreground, no daemon; -f: only this config.
        "-db".to_owned(),
        "-f".to_owned(),
        file.display().to_string(),
    ];
    let daemon = Daemon::start("haproxy", "haproxy", &args, dir, listen).await;
    (daemon, format!("http://{listen}/"))
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_server_template_on_srv_balances_and_drops_a_failed_backend() {
    let server = start_server().await;
    // Three backends on three addresses and three ports: SRV carries both.
    let backends = Backend::each_own_port(
        &["web-1", "web-2", "web-3"],
        &[loopback(2), loopback(3), loopback(4)],
    )
    .await;
    register_all(&server, &backends).await;
    let (haproxy, url) = start_haproxy(server.dns_addr).await;
    let client = fresh_connections();

    // Discovery and balance: every instance gets requests, nothing fails.
    wait_rotation(
        &client,
        &url,
        &["web-1", "web-2", "web-3"],
        "HAProxy sending to all three backends",
    )
    .await;

    // web-2 fails roster's check but still serves (HAProxy's own TCP check
    // keeps passing): only roster's DNS answer can take it out.
    backends[1].set_healthy(false);
    wait_status(&server, "web-2", "critical").await;
    wait_rotation(
        &client,
        &url,
        &["web-1", "web-3"],
        "HAProxy dropping web-2 after its roster check failed",
    )
    .await;

    // And back when it passes again.
    backends[1].set_healthy(true);
    wait_status(&server, "web-2", "passing").await;
    wait_rotation(
        &client,
        &url,
        &["web-1", "web-2", "web-3"],
        "HAProxy taking web-2 back",
    )
    .await;
    drop(haproxy);
    server.stop().await;
}

/// nginx in the foreground with its own prefix, pid file and logs, running
/// the README's `resolver` and `proxy_pass $web` on `web.service.local:port`.
async fn start_nginx(dns: SocketAddr, backend_port: u16) -> (Daemon, String) {
    let dir = daemon_dir();
    let listen = SocketAddr::new(loopback(1), free_port(loopback(1)));
    let snippet = readme_snippet(
        "resolver 127.0.0.1:8600 valid=1s;",
        &[
            ("127.0.0.1:8600", &dns.to_string()),
            ("listen 80;", &format!("listen {listen};")),
            (
                "web.service.local:8080",
                &format!("web.service.local:{backend_port}"),
            ),
        ],
    );
    let root = dir.path().display().to_string();
    // Every path nginx writes is in the temporary directory, so it needs
    // nothing of the system service's (/var/log/nginx, /run/nginx.pid).
    let config = format!(
        "pid {root}/nginx.pid;\nerror_log {root}/error.log info;\nworker_processes 1;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {root}/client_body;\nproxy_temp_path {root}/proxy;\n\
         fastcgi_temp_path {root}/fastcgi;\nuwsgi_temp_path {root}/uwsgi;\nscgi_temp_path {root}/scgi;\n\
         {snippet}}}\n"
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, config).expect("write nginx.conf");
    let args = vec![
        "-p".to_owned(),
        root.clone(),
        "-c".to_owned(),
        file.display().to_string(),
        // -e: the error log before the config is read, else the system's.
        "-e".to_owned(),
        format!("{root}/error.log"),
        "-g".to_owned(),
        "daemon off;".to_owned(),
    ];
    let daemon = Daemon::start("/usr/sbin/nginx", "nginx", &args, dir, listen).await;
    (daemon, format!("http://{listen}/"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_resolver_balances_over_a_records_and_follows_a_failed_check() {
    let server = start_server().await;
    // One port, two addresses: nginx learns only the addresses (A records).
    let mut backends = Backend::on_one_port(&["web-1", "web-2"], &[loopback(5), loopback(6)]).await;
    register_all(&server, &backends).await;
    let port = backends[0].addr.port();
    let (nginx, url) = start_nginx(server.dns_addr, port).await;
    let client = fresh_connections();

    wait_rotation(
        &client,
        &url,
        &["web-1", "web-2"],
        "nginx sending to both backends",
    )
    .await;

    // web-1 fails its check while still serving: nginx must re-resolve to
    // stop using it.
    backends[0].set_healthy(false);
    wait_status(&server, "web-1", "critical").await;
    wait_rotation(
        &client,
        &url,
        &["web-2"],
        "nginx dropping web-1 after its roster check failed",
    )
    .await;

    // It dies outright: nginx keeps serving from web-2 without a failed
    // request.
    backends[0].stop().await;
    wait_rotation(&client, &url, &["web-2"], "nginx serving with web-1 dead").await;
    let output = std::fs::read_to_string(nginx.path("error.log")).unwrap_or_default();
    assert!(!output.contains("[emerg]"), "nginx error log:\n{output}");
    server.stop().await;
}

/// A loopback-only DNSSEC setup for unbound: the root's
/// KSK-2017 DS as trust anchor, so the validator runs as on a stock
/// install and `domain-insecure` is really exercised, with nothing fetched.
const ROOT_TRUST_ANCHOR: &str =
    ". DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/// unbound in the foreground on a free port of 127.0.0.1, with the
/// README's `server:` additions and `stub-zone`, after `replace`.
async fn start_unbound(replace: &[(&str, &str)]) -> (Daemon, SocketAddr) {
    let dir = daemon_dir();
    let listen = SocketAddr::new(loopback(1), free_port(loopback(1)));
    let snippet = readme_snippet("server:", replace);
    let root = dir.path().display().to_string();
    // The test's own settings: no chroot, no privilege drop, no
    // remote-control, everything in the temporary directory; verbosity 2
    // logs stub priming.
    let config = format!(
        "server:\n    interface: {ip}\n    port: {port}\n    do-daemonize: no\n    chroot: \"\"\n    \
         username: \"\"\n    directory: \"{root}\"\n    pidfile: \"{root}/unbound.pid\"\n    \
         use-syslog: no\n    logfile: \"\"\n    verbosity: 2\n    do-ip6: no\n    \
         module-config: \"validator iterator\"\n    trust-anchor: \"{ROOT_TRUST_ANCHOR}\"\n\
         remote-control:\n    control-enable: no\n\n{snippet}",
        ip = listen.ip(),
        port = listen.port(),
    );
    let file = dir.path().join("unbound.conf");
    std::fs::write(&file, config).expect("write unbound.conf");
    let args = vec!["-d".to_owned(), "-c".to_owned(), file.display().to_string()];
    let daemon = Daemon::start("unbound", "unbound", &args, dir, listen).await;
    (daemon, listen)
}

/// A recursive query (RD set) to a resolver.
async fn resolve(resolver: SocketAddr, qname: &str, qtype: RecordType) -> common::Reply {
    let mut query = common::query_message(qname, qtype, Some(1232));
    query.metadata.recursion_desired = true;
    common::exchange_udp(resolver, &query).await
}

/// What the resolver answers for `web` now: the SRV (port, target) pairs
/// and the A addresses, both sorted, or the rcode if not NOERROR.
async fn through(resolver: SocketAddr) -> Result<(Vec<(u16, String)>, Vec<IpAddr>), String> {
    let srv = resolve(resolver, "_web._tcp.service.local", RecordType::SRV).await;
    let a = resolve(resolver, "web.service.local", RecordType::A).await;
    for reply in [&srv, &a] {
        if reply.rcode() != ResponseCode::NoError {
            return Err(format!("{}", reply.rcode()));
        }
    }
    let mut targets: Vec<(u16, String)> = srv
        .srvs()
        .iter()
        .map(|s| (s.port, common::lower(&s.target)))
        .collect();
    targets.sort();
    let mut ips = a.ips();
    ips.sort();
    Ok((targets, ips))
}

/// The (port, target) pair and address roster would answer for `backend`.
fn expected(backends: &[&Backend]) -> (Vec<(u16, String)>, Vec<IpAddr>) {
    let mut targets: Vec<(u16, String)> = backends
        .iter()
        .map(|b| (b.addr.port(), format!("{}.web.service.local.", b.name)))
        .collect();
    targets.sort();
    let mut ips: Vec<IpAddr> = backends.iter().map(|b| b.addr.ip()).collect();
    ips.sort();
    (targets, ips)
}

/// Waits until unbound answers exactly `backends` for `web` (SRV and A).
async fn wait_resolved(resolver: SocketAddr, backends: &[&Backend], why: &str) {
    let wanted = expected(backends);
    eventually(why, FOLLOW_LIMIT, || async {
        match through(resolver).await {
            Ok(seen) if seen == wanted => Ok(()),
            Ok(seen) => Err(format!("{seen:?}")),
            Err(rcode) => Err(rcode),
        }
    })
    .await;
}

/// Two backends with checks; unbound serves both, then only the one whose
/// check still passes.
async fn unbound_follows_roster(server: &Server, resolver: SocketAddr, backends: &[Backend]) {
    register_all(server, backends).await;
    wait_resolved(
        resolver,
        &[&backends[0], &backends[1]],
        "unbound answering both instances",
    )
    .await;
    backends[0].set_healthy(false);
    wait_status(server, &backends[0].name, "critical").await;
    wait_resolved(
        resolver,
        &[&backends[1]],
        "unbound dropping the instance whose check failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unbound_stub_zone_without_priming_follows_health() {
    let server = start_server().await;
    let backends = Backend::each_own_port(&["web-1", "web-2"], &[loopback(7), loopback(8)]).await;
    let at = format!("127.0.0.1@{}", server.dns_addr.port());
    let (_unbound, resolver) = start_unbound(&[("127.0.0.1@8600", &at)]).await;
    unbound_follows_roster(&server, resolver, &backends).await;
    server.stop().await;
}

/// A loopback address where port 53 is free for both UDP and TCP, for
/// roster: unbound asks a primed stub's name server on port 53, whatever
/// port `stub-addr` names.
fn free_port_53() -> IpAddr {
    // Spread over 127.0.53.0/24 by process, so parallel runs rarely meet.
    let start = std::process::id() % 200;
    for offset in 0..50 {
        let ip = IpAddr::from([
            127,
            0,
            53,
            u8::try_from(2 + (start + offset) % 250).expect("< 256"),
        ]);
        let udp = std::net::UdpSocket::bind((ip, 53));
        let tcp = std::net::TcpListener::bind((ip, 53));
        if udp.is_ok() && tcp.is_ok() {
            return ip;
        }
    }
    panic!("port 53 is taken on 50 addresses of 127.0.53.0/24 (binding it needs root)")
}

#[tokio::test(flavor = "multi_thread")]
async fn unbound_stub_prime_reaches_roster_on_port_53_through_its_glue() {
    let ip = free_port_53();
    let server = common::start_server_with(&[], |config| {
        config.dns.listen = SocketAddr::new(ip, 53);
    })
    .await;
    // roster's priming answer: the apex NS, with its target's address as
    // glue, the address roster listens on (dns.ns_address's default).
    let ns = server.query("service.local", RecordType::NS).await;
    assert_eq!(ns.rcode(), ResponseCode::NoError, "{ns}");
    let target = ns
        .answers()
        .iter()
        .find_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no NS in {ns}"));
    assert_eq!(common::lower(&target), "ns.service.local.", "{ns}");
    assert_eq!(ns.additional_ips_of(&target), vec![ip], "glue: {ns}");

    let backends = Backend::each_own_port(&["web-1", "web-2"], &[loopback(9), loopback(10)]).await;
    let at = ip.to_string();
    let (unbound, resolver) = start_unbound(&[
        ("127.0.0.1@8600", &at),
        ("stub-prime: no", "stub-prime: yes"),
    ])
    .await;
    unbound_follows_roster(&server, resolver, &backends).await;
    assert!(
        unbound
            .output()
            .contains("priming successful for service.local."),
        "unbound did not prime the stub:\n{}",
        unbound.output()
    );
    server.stop().await;
}
