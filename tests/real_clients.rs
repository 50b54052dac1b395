//! Real load balancers and resolvers in front of a real roster: Debian's
//! HAProxy, nginx and unbound, each run by the test in the foreground on
//! free loopback ports with the configuration the README shows (read from
//! README.md, see `common::daemon::readme_snippet`), in front of backends
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

use common::{
    Server,
    daemon::{Daemon, daemon_dir, free_port, readme_snippet},
    eventually, start_server,
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
        let srvs = server
            .query("web.service.local", hickory_proto::rr::RecordType::SRV)
            .await;
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
