//! HTTPS end to end, on loopback, with certificates made at test time
//! (`common::tls`): the API over HTTPS and mutual TLS, its handshake
//! deadline and start-up errors, a renewed certificate taken on SIGHUP;
//! HTTPS health checks with and without
//! `tls_skip_verify`; and the `[health]` policy refusing to probe an
//! address outside `allowed_networks`, without connecting.

mod common;

use std::{
    sync::{Arc, atomic::Ordering::SeqCst},
    time::Duration,
};

use common::{
    register, start_server, start_server_with,
    targets::{INTERVAL, TIMEOUT, TcpTarget},
    tls::{Pki, TlsTarget, client_config, https_request, self_signed},
    wait_check,
};
use serde_json::{Value, json};
use tokio::{io::AsyncReadExt, net::TcpStream, time::timeout};

/// Starts roster with HTTPS from `pki`, client certificates required when
/// `mutual`.
async fn start_https(pki: &Pki, mutual: bool) -> common::Server {
    start_server_with(&[], |config| {
        config.http.tls_cert_file = pki.server_cert_file.clone();
        config.http.tls_key_file = pki.server_key_file.clone();
        if mutual {
            config.http.tls_client_ca_file = pki.ca_file.clone();
        }
        config.http.header_read_timeout = 1;
    })
    .await
}

/// Registers `web/web-1` over HTTPS to `server` (verified as `host`)
/// and reads it back.
async fn register_and_read(
    config: &Arc<rustls::ClientConfig>,
    server: &common::Server,
    host: &str,
) -> Result<Value, String> {
    let path = "/v1/services/web/instances/web-1";
    let body = json!({"address": "10.0.0.1", "port": 8080});
    let (status, answer) =
        https_request(config, server.http_addr, host, "PUT", path, Some(&body)).await?;
    if status != 200 {
        return Err(format!("PUT answered {status}: {answer}"));
    }
    let (status, answer) = https_request(config, server.http_addr, host, "GET", path, None).await?;
    if status != 200 {
        return Err(format!("GET answered {status}: {answer}"));
    }
    Ok(answer)
}

#[tokio::test]
async fn the_api_speaks_https_only_when_given_a_certificate() {
    let pki = Pki::new();
    let server = start_https(&pki, false).await;

    for host in ["127.0.0.1", "localhost"] {
        let body = register_and_read(&pki.client(None), &server, host)
            .await
            .expect("register and read over HTTPS");
        assert_eq!(body["address"], "10.0.0.1", "{body}");
    }

    let plain = common::http_client()
        .get(format!("http://{}/v1/services", server.http_addr))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    // A client that does not trust the CA refuses the server.
    let mut strangers_roots = rustls::RootCertStore::empty();
    strangers_roots
        .add(self_signed(&["elsewhere"]).chain[0].clone())
        .expect("root");
    let refused =
        register_and_read(&client_config(strangers_roots, None), &server, "localhost").await;
    assert!(refused.is_err(), "an untrusted server was accepted");
    server.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_it_signed_get_in() {
    let pki = Pki::new();
    let server = start_https(&pki, true).await;

    let without = register_and_read(&pki.client(None), &server, "localhost").await;
    assert!(without.is_err(), "a client without a certificate got in");

    // A certificate from another CA is refused too.
    let stranger = self_signed(&["client.test"]);
    let foreign = register_and_read(&pki.client(Some(&stranger)), &server, "localhost").await;
    assert!(foreign.is_err(), "a certificate from another CA got in");

    let body = register_and_read(&pki.client(Some(&pki.client)), &server, "localhost")
        .await
        .expect("a client with a certificate gets in");
    assert_eq!(body["address"], "10.0.0.1", "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_at_the_head_deadline() {
    let pki = Pki::new();
    let server = start_https(&pki, false).await;
    // Connect and send nothing: header_read_timeout is 1 s, the idle
    // timeout much longer, so a close here is the handshake deadline.
    let mut stream = TcpStream::connect(server.http_addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("roster closes a silent TLS connection within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The server still serves real clients.
    register_and_read(&pki.client(None), &server, "localhost")
        .await
        .expect("served after the silent client");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_malformed_tls_file_stops_start_up_naming_key_and_file() {
    let pki = Pki::new();
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").expect("write");
    let missing = pki.dir.path().join("missing.pem");
    let other_key = pki.dir.path().join("other-key.pem");
    std::fs::write(&other_key, &pki.client.key_pem).expect("write");
    let cases = [
        (
            missing.clone(),
            pki.server_key_file.clone(),
            None,
            "http.tls_cert_file",
        ),
        (
            garbage.clone(),
            pki.server_key_file.clone(),
            None,
            "http.tls_cert_file",
        ),
        (
            pki.server_cert_file.clone(),
            missing.clone(),
            None,
            "http.tls_key_file",
        ),
        (
            pki.server_cert_file.clone(),
            garbage.clone(),
            None,
            "http.tls_key_file",
        ),
        (
            pki.server_cert_file.clone(),
            other_key.clone(),
            None,
            "http.tls_key_file",
        ),
        (
            pki.server_cert_file.clone(),
            pki.server_key_file.clone(),
            Some(garbage.clone()),
            "http.tls_client_ca_file",
        ),
    ];
    for (cert, key, ca, named) in cases {
        let data = tempfile::tempdir().expect("data dir");
        let zones = tempfile::tempdir().expect("zones dir");
        let mut config = roster::Config::default();
        config.dns.listen = "127.0.0.1:0".parse().expect("address");
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        config.dns.zones = zones.path().to_owned();
        config.data_dir = data.path().to_owned();
        config.http.tls_cert_file = cert.clone();
        config.http.tls_key_file = key.clone();
        if let Some(ca) = &ca {
            config.http.tls_client_ca_file = ca.clone();
        }
        let listeners = roster::Listeners::bind(&config).await.expect("bind");
        let result = timeout(
            Duration::from_secs(20),
            roster::run(config, listeners, std::future::pending()),
        )
        .await
        .expect("start-up fails at once");
        let error = result.expect_err("start-up refuses the file").to_string();
        let file = [ca.as_ref(), Some(&key), Some(&cert)]
            .into_iter()
            .flatten()
            .find(|path| error.contains(&path.display().to_string()));
        assert!(error.contains(named), "{named}: {error}");
        assert!(file.is_some(), "{named}: no file named in {error}");
    }
}

/// An HTTPS connection to `addr` (verified as `host`) kept open: each
/// request on it goes over its one handshake.
async fn kept_connection(
    config: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    host: &str,
) -> hyper::client::conn::http1::SendRequest<String> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
    tokio::spawn(connection);
    sender
}

/// The status of `GET /v1/services` on `sender`'s connection.
async fn status_on(sender: &mut hyper::client::conn::http1::SendRequest<String>) -> u16 {
    let request = hyper::Request::get("/v1/services")
        .header("host", "localhost")
        .body(String::new())
        .expect("request");
    let response = timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("an answer within the deadline")
        .expect("an answer on the kept connection");
    response.status().as_u16()
}

/// Certificates are renewed in place: SIGHUP makes roster read its TLS
/// files again, new connections get the new certificate, one already open
/// keeps working, and files that no longer load keep the certificate in
/// force (with an error naming the key and the file).
#[tokio::test]
async fn sighup_serves_a_renewed_certificate_to_new_connections() {
    let (old, renewed) = (
        Pki::with_server_not_after(Some((2031, 5, 17))),
        Pki::with_server_not_after(Some((2032, 6, 1))),
    );
    let site = common::process::Site::new();
    let (cert, key) = (
        site.root.path().join("cert.pem"),
        site.root.path().join("key.pem"),
    );
    std::fs::write(&cert, &old.server.cert_pem).expect("write cert.pem");
    std::fs::write(&key, &old.server.key_pem).expect("write key.pem");
    std::fs::write(
        site.root.path().join("config.toml"),
        "[http]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\n",
    )
    .expect("write config.toml");
    let mut roster = site.start().await;
    let get = |pki: &Pki| {
        let (config, addr) = (pki.client(None), roster.http);
        async move {
            https_request(&config, addr, "localhost", "GET", "/v1/services", None)
                .await
                .map(|(status, _)| status)
        }
    };
    assert_eq!(get(&old).await, Ok(200));
    assert!(
        get(&renewed).await.is_err(),
        "the renewed CA's client got in before the reload"
    );
    // What an operator alerts on: when the served certificate expires, and
    // reloads that were refused.
    let metric = |pki: &Pki, sample: &'static str| {
        let (config, addr) = (pki.client(None), roster.http);
        async move {
            let (status, text) = https_request(&config, addr, "localhost", "GET", "/metrics", None)
                .await
                .expect("scrape /metrics");
            assert_eq!(status, 200, "{text}");
            let text = text.as_str().expect("the exposition is text").to_owned();
            text.lines()
                .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
                .map(|value| value.parse::<f64>().expect("a number"))
        }
    };
    let expiry = "roster_http_tls_cert_not_after_timestamp_seconds";
    let refused = "roster_config_reloads_total{part=\"http_tls\",result=\"refused\"}";
    // 2031-05-17T00:00:00Z
    assert_eq!(metric(&old, expiry).await, Some(1_936_742_400.0));
    assert_eq!(metric(&old, refused).await, Some(0.0));
    let mut kept = kept_connection(&old.client(None), roster.http, "localhost").await;
    assert_eq!(status_on(&mut kept).await, 200);

    std::fs::write(&cert, &renewed.server.cert_pem).expect("rewrite cert.pem");
    std::fs::write(&key, &renewed.server.key_pem).expect("rewrite key.pem");
    roster.signal("HUP");
    common::eventually(
        "new connections to get the renewed certificate",
        Duration::from_secs(20),
        || async { get(&renewed).await == Ok(200) },
    )
    .await;
    assert!(
        get(&old).await.is_err(),
        "a new connection still got the old certificate"
    );
    assert_eq!(
        status_on(&mut kept).await,
        200,
        "the connection open across the reload"
    );
    assert!(
        roster.stderr().contains("TLS certificate reloaded"),
        "{}",
        roster.stderr()
    );
    // 2032-06-01T00:00:00Z
    assert_eq!(metric(&renewed, expiry).await, Some(1_969_660_800.0));

    // A key that no longer loads: the renewed certificate stays in force.
    std::fs::write(&key, "not PEM at all").expect("break key.pem");
    roster.signal("HUP");
    common::eventually(
        "the refused reload to be logged",
        Duration::from_secs(20),
        || async { roster.stderr().contains("the certificate in force stays") },
    )
    .await;
    let log = roster.stderr();
    assert!(
        log.contains("http.tls_key_file") && log.contains("key.pem"),
        "{log}"
    );
    assert_eq!(get(&renewed).await, Ok(200));
    assert_eq!(metric(&renewed, refused).await, Some(1.0));
    assert_eq!(metric(&renewed, expiry).await, Some(1_969_660_800.0));
    assert!(roster.stop().await.success());
}

#[tokio::test]
async fn https_checks_pass_with_tls_skip_verify_and_fail_naming_an_untrusted_certificate() {
    let server = start_server().await;
    let target = TlsTarget::start(&self_signed(&["localhost", "127.0.0.1"])).await;
    let check = |extra: Value| {
        let mut check = json!({"http": target.url(), "interval": INTERVAL, "timeout": TIMEOUT});
        for (key, value) in extra.as_object().expect("object") {
            check[key] = value.clone();
        }
        json!({ "check": check })
    };
    register(
        &server,
        "web",
        "skip",
        "127.0.0.1",
        check(json!({"tls_skip_verify": true})),
    )
    .await;
    register(&server, "web", "verify", "127.0.0.2", check(json!({}))).await;
    register(
        &server,
        "web",
        "named",
        "127.0.0.3",
        check(json!({"tls_server_name": "web.internal"})),
    )
    .await;

    let passing = wait_check(&server, "web", "skip", "passing", "200").await;
    assert_eq!(passing["checks"][0]["type"], "http", "{passing}");
    // rustls names what is wrong: here, an issuer nobody trusts.
    wait_check(
        &server,
        "web",
        "verify",
        "critical",
        "invalid peer certificate",
    )
    .await;
    wait_check(
        &server,
        "web",
        "named",
        "critical",
        "invalid peer certificate",
    )
    .await;

    // The same through the Consul API's TLSSkipVerify.
    let consul = common::http_client()
        .put(format!(
            "http://{}/v1/agent/service/register",
            server.http_addr
        ))
        .json(&json!({
            "Name": "web", "ID": "consul-skip", "Address": "127.0.0.4", "Port": 8080,
            "Check": {"HTTP": target.url(), "Interval": INTERVAL, "Timeout": TIMEOUT,
                      "TLSSkipVerify": true}
        }))
        .send()
        .await
        .expect("Consul register");
    assert!(consul.status().is_success(), "{consul:?}");
    wait_check(&server, "web", "consul-skip", "passing", "200").await;
    server.stop().await;
}

#[tokio::test]
async fn a_check_outside_allowed_networks_is_critical_and_never_connects() {
    let server = start_server_with(&[], |config| {
        config.health.allowed_networks = vec!["127.0.0.2/32".parse().expect("network")];
    })
    .await;
    let tcp = TcpTarget::open().await;
    let tls = TlsTarget::start(&self_signed(&["localhost"])).await;
    let port = tcp.addr.port();
    let checks = [
        ("tcp", json!({"tcp": tcp.addr.to_string()})),
        (
            "http",
            json!({"http": format!("http://127.0.0.1:{port}/health")}),
        ),
        (
            "named",
            json!({"http": format!("http://localhost:{port}/health")}),
        ),
        ("tcp-named", json!({"tcp": format!("localhost:{port}")})),
        ("https", json!({"http": tls.url(), "tls_skip_verify": true})),
    ];
    for (id, mut check) in checks {
        check["interval"] = json!(INTERVAL);
        check["timeout"] = json!(TIMEOUT);
        register(&server, "web", id, "127.0.0.1", json!({ "check": check })).await;
    }
    for id in ["tcp", "http", "https"] {
        wait_check(
            &server,
            "web",
            id,
            "critical",
            "health.allowed_networks does not include 127.0.0.1",
        )
        .await;
    }
    // localhost may resolve to ::1 first; whichever, it is refused.
    for id in ["named", "tcp-named"] {
        wait_check(
            &server,
            "web",
            id,
            "critical",
            "health.allowed_networks does not include",
        )
        .await;
    }
    // Every check has run and been refused; no connection reached either
    // target.
    assert_eq!(tcp.accepted.load(SeqCst), 0, "the TCP target was reached");
    assert_eq!(tls.accepted.load(SeqCst), 0, "the HTTPS target was reached");
    server.stop().await;
}
