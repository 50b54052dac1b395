//! The everyday commands against a running roster (`roster services`,
//! `service`, `register`, `deregister`, `maintenance`, `watch`): the real
//! binary against a real server, their output and their exit codes, over
//! HTTP and HTTPS.

mod common;

use std::{process::Stdio, time::Duration};

use common::{
    start_server, start_server_with,
    tls::{Pki, self_signed},
};
use tokio::{io::AsyncBufReadExt, process::Command};

/// Runs `roster ARGS --http <server>` and returns (exit code, stdout,
/// stderr).
async fn roster(http: std::net::SocketAddr, args: &[&str]) -> (i32, String, String) {
    roster_with_env(http, args, &[]).await
}

async fn roster_with_env(
    http: std::net::SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    roster_at(&http.to_string(), args, env).await
}

/// Runs `roster ARGS --http <http>` (as the user would write it) with
/// `env`.
async fn roster_at(http: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roster"));
    command
        .args(args)
        .args(["--http", http])
        .env("NO_COLOR", "1")
        .env_remove("ROSTER_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finishes")
        .expect("run roster");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn register_list_show_drain_and_deregister_from_the_command_line() {
    let server = start_server().await;
    let http = server.http_addr;
    let (code, out, err) = roster(
        http,
        &[
            "register",
            "web",
            "web-1",
            "--address",
            "127.0.0.1",
            "--port",
            "8080",
            "--tag",
            "v1",
            "--meta",
            "team=edge",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "registered web/web-1 (127.0.0.1:8080, passing, in DNS)\n"
    );
    assert_eq!(
        common::served_addresses(server.dns_addr, "web")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        ["127.0.0.1"]
    );

    let (code, out, _) = roster(http, &["services"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "SERVICE  INSTANCES  IN DNS  DNS NAME\nweb      1          1       web.service.local.\n"
    );

    let (code, out, _) = roster(
        http,
        &[
            "maintenance",
            "web",
            "web-1",
            "--enable",
            "--reason",
            "deploy",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "web/web-1: drained from DNS\n");
    let (_, out, _) = roster(http, &["service", "web"]).await;
    let line = out.lines().nth(1).expect("a line for web-1");
    assert!(
        line.starts_with("web-1") && line.contains("maintenance") && line.contains(" no "),
        "{out}"
    );
    assert!(
        common::served_addresses(server.dns_addr, "web")
            .await
            .is_empty()
    );

    let (code, _, _) = roster(http, &["maintenance", "web", "web-1", "--disable"]).await;
    assert_eq!(code, 0);
    let (code, out, _) = roster(http, &["deregister", "web", "web-1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "deregistered web/web-1\n");
    server.stop().await;
}

/// A TTL check registered from the command line is kept passing from it:
/// `heartbeat` reports passing, or the status and note it is given, and an
/// instance with no TTL check refuses it (exit 1).
#[tokio::test]
async fn heartbeats_from_the_command_line_keep_a_ttl_check_passing() {
    let server = start_server().await;
    let http = server.http_addr;
    let register = [
        "register",
        "cron",
        "cron-1",
        "--address",
        "127.0.0.1",
        "--port",
        "9",
        "--ttl",
        "60s",
    ];
    let (code, out, err) = roster(http, &register).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("critical") && out.contains("not in DNS"),
        "{out}"
    );
    let check = |reply: &common::HttpReply| {
        let check = &reply.body["checks"][0];
        (
            check["status"].as_str().unwrap_or_default().to_owned(),
            check["output"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let path = ["v1", "services", "cron", "instances", "cron-1"];

    let (code, out, err) = roster(http, &["heartbeat", "cron", "cron-1"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "cron/cron-1: passing\n");
    assert_eq!(check(&server.get(&path).await).0, "passing");
    let warn = [
        "heartbeat",
        "cron",
        "cron-1",
        "--status",
        "warning",
        "--note",
        "disk 91%",
    ];
    let (code, _, err) = roster(http, &warn).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        check(&server.get(&path).await),
        ("warning".to_owned(), "disk 91%".to_owned())
    );

    // An HTTP and a TCP check together make two.
    let both = [
        "register",
        "api",
        "api-1",
        "--address",
        "127.0.0.1",
        "--port",
        "9",
        "--http-check",
        "http://127.0.0.1:9/health",
        "--tcp-check",
        "127.0.0.1:9",
        "--interval",
        "30s",
    ];
    let (code, _, err) = roster(http, &both).await;
    assert_eq!(code, 0, "{err}");
    let api = server
        .get(&["v1", "services", "api", "instances", "api-1"])
        .await;
    assert_eq!(
        api.body["checks"].as_array().map(Vec::len),
        Some(2),
        "{api:?}"
    );

    let (code, _, _) = roster(http, &["heartbeat", "cron", "cron-1", "--status", "fine"]).await;
    assert_eq!(code, 2, "a status that is not one");
    let plain = [
        "register",
        "web",
        "web-1",
        "--address",
        "127.0.0.1",
        "--port",
        "80",
    ];
    assert_eq!(roster(http, &plain).await.0, 0);
    let (code, _, err) = roster(http, &["heartbeat", "web", "web-1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no ttl check"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn refusals_and_an_absent_server_have_their_own_exit_codes() {
    let server = start_server().await;
    let http = server.http_addr;
    // Bad input: roster's own message, exit 1.
    let (code, _, err) = roster(
        http,
        &[
            "register",
            "web",
            "w",
            "--address",
            "nowhere",
            "--port",
            "80",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("400") && err.contains("not an IPv4 or IPv6 address"),
        "{err}"
    );
    // The field at fault is named, so that the flag behind it is found.
    assert!(err.contains("address: "), "{err}");
    let (code, _, err) = roster(http, &["service", "nothing-here"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    // Usage errors are clap's 2, caught before anything is sent: neither
    // --enable nor --disable, no --port, --meta without '=', an --interval
    // with no check to run at it, an address with a path.
    let usage: [(&[&str], &str); 4] = [
        (&["maintenance", "web", "w"], "--enable|--disable"),
        (
            &["register", "web", "w", "--address", "127.0.0.1"],
            "--port",
        ),
        (
            &["register", "web", "w", "--port", "80", "--meta", "novalue"],
            "is not KEY=VALUE",
        ),
        (
            &["register", "web", "w", "--port", "80", "--interval", "5s"],
            "--http-check",
        ),
    ];
    for (args, said) in usage {
        let (code, _, err) = roster(http, args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
    }
    let with_path = format!("http://{http}/v1");
    let (code, _, err) = roster_at(&with_path, &["services"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("path"), "{err}");
    let listed = server.get(&["v1", "services"]).await;
    assert_eq!(
        listed.body,
        serde_json::json!([]),
        "a usage error sent nothing"
    );
    server.stop().await;
    // Nothing listening: 3, saying so.
    let (code, _, err) = roster(http, &["services"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach roster"), "{err}");
}

#[tokio::test]
async fn the_token_comes_from_a_flag_or_roster_token() {
    let server = start_server_with(&[], |config| {
        config.acl = toml::from_str(
            "enabled = true\n[[tokens]]\nname = \"admin\"\nsecret = \"cli-secret-123\"\nmanagement = true\n",
        )
        .expect("valid [acl]");
    })
    .await;
    let http = server.http_addr;
    let register = [
        "register",
        "web",
        "web-1",
        "--address",
        "127.0.0.1",
        "--port",
        "80",
    ];
    let (code, _, err) = roster(http, &register).await;
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    let mut with_flag = register.to_vec();
    with_flag.extend(["--token", "cli-secret-123"]);
    assert_eq!(roster(http, &with_flag).await.0, 0);
    let (code, out, _) =
        roster_with_env(http, &["services"], &[("ROSTER_TOKEN", "cli-secret-123")]).await;
    assert_eq!(code, 0);
    assert!(out.contains("web"), "{out}");
    server.stop().await;
}

#[tokio::test]
async fn watch_prints_the_table_again_when_the_service_changes() {
    let server = start_server().await;
    let http = server.http_addr;
    roster(
        http,
        &[
            "register",
            "web",
            "web-1",
            "--address",
            "127.0.0.1",
            "--port",
            "80",
        ],
    )
    .await;
    let mut watch = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["watch", "web", "--count", "2", "--http", &http.to_string()])
        .env_remove("ROSTER_TOKEN")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run roster watch");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    // The first table: web-1 only.
    while seen.iter().all(|l: &String| !l.starts_with("web-1")) {
        seen.push(next_line(&mut lines).await);
    }
    roster(
        http,
        &[
            "register",
            "web",
            "web-2",
            "--address",
            "127.0.0.2",
            "--port",
            "80",
        ],
    )
    .await;
    while seen.iter().all(|l: &String| !l.starts_with("web-2")) {
        seen.push(next_line(&mut lines).await);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), watch.wait())
        .await
        .expect("watch stops after --count tables")
        .expect("wait");
    assert!(status.success());
    let headers: Vec<&String> = seen.iter().filter(|l| l.starts_with("-- web")).collect();
    assert_eq!(headers.len(), 2, "{seen:?}");
    // Each table is headed with the index it was read at, never 0.
    assert!(
        headers.iter().all(|h| !h.ends_with("at index 0")),
        "{headers:?}"
    );
    server.stop().await;
}

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("not EOF")
}

/// The commands speak HTTPS to a roster whose API does, trusting only the
/// CA they are given and presenting a client certificate when it asks for
/// one; what goes wrong says where.
#[tokio::test]
async fn commands_speak_https_with_a_client_certificate() {
    let pki = Pki::new();
    let (cert, key) = (
        pki.dir.path().join("client.pem"),
        pki.dir.path().join("client-key.pem"),
    );
    std::fs::write(&cert, &pki.client.cert_pem).expect("write client.pem");
    std::fs::write(&key, &pki.client.key_pem).expect("write client-key.pem");
    let server = start_server_with(&[], |config| {
        config.http.tls_cert_file = pki.server_cert_file.clone();
        config.http.tls_key_file = pki.server_key_file.clone();
        config.http.tls_client_ca_file = pki.ca_file.clone();
    })
    .await;
    let http = server.http_addr;
    let (ca, cert, key) = (
        pki.ca_file.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let tls = ["--ca-file", &ca, "--cert-file", &cert, "--key-file", &key];

    let mut register = vec!["register", "web", "web-1", "--address", "127.0.0.1"];
    register.extend(["--port", "8080", "--tls-server-name", "localhost"]);
    register.extend(tls);
    let (code, _, err) = roster(http, &register).await;
    assert_eq!(code, 0, "register over HTTPS: {err}");
    // Checked against the IP of --http when no name is given.
    let (code, out, err) = roster(http, &[&["services"][..], &tls].concat()).await;
    assert_eq!(code, 0, "services over HTTPS: {err}");
    assert!(out.contains("web"), "{out}");

    // `--http` as a URL, with a host name: the certificate is checked
    // against the name.
    let url = format!("https://localhost:{}", http.port());
    let (code, out, err) = roster_at(&url, &[&["services"][..], &tls].concat(), &[]).await;
    assert_eq!(code, 0, "services at {url}: {err}");
    assert!(out.contains("web"), "{out}");
    // https:// without --ca-file trusts the system's CAs, which did not
    // sign this test CA's certificate.
    let (code, _, err) = roster_at(
        &url,
        &["services", "--cert-file", &cert, "--key-file", &key],
        &[],
    )
    .await;
    assert_eq!(
        code,
        if err.contains("no CA certificates") {
            1
        } else {
            3
        },
        "{err}"
    );
    // http:// and --ca-file disagree.
    let plain = format!("http://127.0.0.1:{}", http.port());
    let (code, _, err) = roster_at(&plain, &["services", "--ca-file", &ca], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--ca-file"), "{err}");

    // Nothing answers a client without a certificate, or one that speaks
    // plain HTTP: exit code 3, as for a roster that is down.
    let (code, _, err) = roster(http, &["services", "--ca-file", &ca]).await;
    assert_eq!(code, 3, "without a client certificate: {err}");
    assert!(err.contains("CertificateRequired"), "{err}");
    let (code, _, err) = roster(http, &["services"]).await;
    assert_eq!(code, 3, "plain HTTP: {err}");
    assert!(err.contains("give --ca-file"), "{err}");

    // A CA that did not sign roster's certificate: refused, and said why.
    let stranger = pki.dir.path().join("stranger.pem");
    std::fs::write(&stranger, self_signed(&["localhost"]).cert_pem).expect("write");
    let stranger = stranger.display().to_string();
    let mut args = vec!["services", "--ca-file", &stranger];
    args.extend(["--cert-file", &cert, "--key-file", &key]);
    let (code, _, err) = roster(http, &args).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Files that are not there or not PEM: exit 1, naming flag and file.
    let missing = pki.dir.path().join("missing.pem").display().to_string();
    let (code, _, err) = roster(http, &["services", "--ca-file", &missing]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--ca-file") && err.contains(&missing), "{err}");
    let mut args = vec!["services", "--ca-file", &ca, "--cert-file", &cert];
    args.extend(["--key-file", &cert]);
    let (code, _, err) = roster(http, &args).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--key-file"), "{err}");
    server.stop().await;
}

/// `--http` (and `ROSTER_HTTP`) take a host name and a scheme as well as
/// an address; what is neither is refused before anything is sent.
#[tokio::test]
async fn the_address_may_be_a_host_name_or_a_url() {
    let server = start_server().await;
    let port = server.http_addr.port();
    for http in [
        format!("localhost:{port}"),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        let (code, out, err) = roster_at(&http, &["services"], &[]).await;
        assert_eq!(code, 0, "{http}: {err}");
        assert!(out.contains("SERVICE"), "{http}: {out}");
    }
    let (code, out, err) = roster_at("nowhere", &["services"], &[]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("HOST:PORT"), "{err}");
    // The same from the environment, without the flag.
    let output = Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("services")
        .env("ROSTER_HTTP", format!("localhost:{port}"))
        .env_remove("ROSTER_TOKEN")
        .output()
        .await
        .expect("run roster");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("SERVICE"), "{out}");
    server.stop().await;
}
