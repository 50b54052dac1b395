//! The web UI at `/ui/`: its headers, checked over plain HTTP, and the page
//! itself, driven in a real headless Chromium.
//!
//! The browser half runs `tests/ui/ui_test.js` with `playwright-core`
//! (pinned in `tests/ui/package.json` and its lock), installed under
//! `target/ui-node/` with `npm ci` on first use and reused afterwards (a
//! marker file written last says the install is complete and for which
//! lock; a lock file keeps two test processes from installing at once).
//! Each test starts roster on ephemeral ports, registers services over the
//! API, and runs the script against it; the script's exit status and its
//! "all passed" are the verdict, and its output is shown when it fails.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, or `ROSTER_CHROMIUM`
//! naming another) and `node`/`npm` (access to the npm registry the first
//! time).

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    Server,
    install::{describe, npm_install},
    start_server, start_server_with,
    targets::{HttpTarget, Respond, http_check},
};
use serde_json::{Value, json};

/// The whole script, with room for a busy machine; it normally takes a few
/// seconds (the script bounds itself at two minutes).
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// A metadata value that is HTML: the page must show it as text.
const XSS: &str = "<img src=x onerror=alert(1)>";

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// What is missing when `npm` cannot be run.
const NPM_HINT: &str = "The UI test needs node and npm (Debian: apt-get install nodejs npm).";

/// Runs `ui_test.js` against `server` with `args` and asserts that it
/// passed.
async fn run_script(server: &Server, args: &[&str]) {
    let modules = tokio::task::spawn_blocking(|| npm_install("ui-node", &script_dir(), NPM_HINT))
        .await
        .expect("npm install");
    let chromium =
        std::env::var_os("ROSTER_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no browser at {chromium:?}: install Debian's chromium \
         (apt-get install chromium) or set ROSTER_CHROMIUM"
    );
    let url = format!("http://{}", server.http_addr);
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script_dir().join("ui_test.js"))
        .args(["--url", &url])
        .args(args)
        .env("ROSTER_UI_NODE_MODULES", &modules)
        .env("ROSTER_CHROMIUM", &chromium)
        // roster is local: a proxy in the environment must not see it.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("ui_test.js did not finish in {SCRIPT_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    assert!(
        output.status.success(),
        "ui_test.js failed\n{}",
        describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("all passed"), "{}", describe(&output));
    println!("{stdout}");
}

/// `service/id` at `address:port` with the fields of `extra`; asserts 200.
async fn register(
    server: &Server,
    service: &str,
    id: &str,
    address: &str,
    port: u16,
    extra: Value,
) {
    let mut body = json!({ "address": address, "port": port });
    for (key, value) in extra.as_object().expect("extra fields are an object") {
        body[key] = value.clone();
    }
    let reply = server.register(service, id, body).await;
    assert_eq!(reply.status, 200, "register {service}/{id}: {reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_is_a_page_with_a_strict_policy() {
    let server = start_server().await;
    // No redirects followed: the test looks at the redirect itself.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client");
    let base = format!("http://{}", server.http_addr);

    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: CSP {csp:?}");
        assert!(!csp.contains("unsafe"), "{path}: CSP {csp:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }

    let page = client
        .get(format!("{base}/ui/"))
        .send()
        .await
        .expect("GET /ui/");
    let html = page.text().await.expect("body");
    assert!(html.contains("<script src=\"app.js\""), "{html}");
    // Self-contained: nothing from another origin, no inline script.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");

    // The API's address opened in a browser, and /ui, lead to the page.
    for path in ["/ui", "/"] {
        let redirect = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert!(
            redirect.status().is_redirection(),
            "{path}: {}",
            redirect.status()
        );
        assert_eq!(
            redirect
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok()),
            Some("/ui/"),
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_shows_services_live_in_a_browser() {
    let server = start_server().await;
    let up = HttpTarget::start(Respond::Ok).await;
    let down = HttpTarget::start(Respond::Fail).await;
    let mut web_1 = http_check(&up, json!({}));
    web_1["tags"] = json!(["http", "primary"]);
    web_1["meta"] = json!({ "version": "1.2" });
    register(&server, "web", "web-1", "127.0.0.1", 8081, web_1).await;
    register(
        &server,
        "web",
        "web-2",
        "127.0.0.2",
        8082,
        http_check(&down, json!({})),
    )
    .await;
    register(
        &server,
        "db",
        "db-1",
        "127.0.0.4",
        5432,
        json!({ "meta": { "note": XSS } }),
    )
    .await;
    common::wait_check(&server, "web", "web-1", "passing", "").await;
    common::wait_check(&server, "web", "web-2", "critical", "").await;

    run_script(&server, &["--mode", "live"]).await;
    // The UI's writes reached the registry, not only the page.
    let reply = server.get(&["v1", "services", "web"]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let web = reply.body;
    let instances = web["instances"].as_array().expect("instances");
    let ids: Vec<&str> = instances.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids, ["web-1"], "{web}");
    assert!(instances[0]["maintenance"].is_null(), "{web}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_uses_a_token_and_shows_refusals() {
    const READER: &str = "web-reader-secret-for-tests";
    const WRITER: &str = "web-writer-secret-for-tests";
    let server = start_server_with(&[], |config| {
        let text = format!(
            r#"
            enabled = true
            default_policy = "deny"
            [[tokens]]
            name = "admin"
            secret = "admin-secret-for-tests"
            management = true
            [[tokens]]
            name = "web-reader"
            secret = "{READER}"
            service_prefix = {{ "web" = "read" }}
            [[tokens]]
            name = "web-writer"
            secret = "{WRITER}"
            service_prefix = {{ "web" = "write" }}
            "#
        );
        config.acl = toml::from_str(&text).expect("a valid [acl] table");
    })
    .await;
    let admin = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client");
    for (service, id, address) in [("web", "web-1", "127.0.0.1"), ("db", "db-1", "127.0.0.4")] {
        let url = server.url(&["v1", "services", service, "instances", id]);
        let response = admin
            .put(url)
            .header("X-Consul-Token", "admin-secret-for-tests")
            .json(&json!({ "address": address, "port": 8080 }))
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 200, "register {service}/{id}");
    }

    run_script(
        &server,
        &["--mode", "acl", "--token", READER, "--write-token", WRITER],
    )
    .await;
    server.stop().await;
}
