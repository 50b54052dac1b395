//! The Consul compatibility suite: the real `python-consul` 1.1.0 and
//! `py-consul` 1.8.0 libraries, unmodified, drive a real roster.
//!
//! Both libraries install the same module (`consul`), so each gets its own
//! venv under `target/consul-venvs/`, created here on first use with
//! `python3 -m venv` and `pip install` from PyPI, and reused afterwards (a
//! marker file written last says the venv is complete and for which
//! requirements; a lock file keeps two test processes from building one
//! venv at once). Each test starts roster on ephemeral ports and runs
//! `tests/consul_python/compat_suite.py` against it; the script's exit
//! status is the verdict, and its output is shown when it fails.
//!
//! Needs `python3` with the `venv` module (Debian: `python3-venv`) and
//! access to PyPI the first time. `ROSTER_PYTHON` names another
//! interpreter.

mod common;

use std::{path::Path, time::Duration};

use common::{
    install::{self, describe},
    start_server,
};

/// One client library and what its venv holds.
struct Library {
    /// The distribution name, as the script's `--library` takes it.
    name: &'static str,
    /// What pip installs; also the venv marker's contents.
    requirements: &'static [&'static str],
}

const PYTHON_CONSUL: Library = Library {
    name: "python-consul",
    requirements: &["python-consul==1.1.0", "dnspython>=2,<3"],
};

const PY_CONSUL: Library = Library {
    name: "py-consul",
    requirements: &["py-consul==1.8.0", "dnspython>=2,<3"],
};

/// The whole script, with generous room for a busy machine; it normally
/// takes about ten seconds.
const SUITE_LIMIT: Duration = Duration::from_secs(300);

/// Runs the suite with `library` against a fresh roster.
async fn run_suite(library: &'static Library) {
    let server = start_server().await;
    let port = |addr: std::net::SocketAddr| addr.port().to_string();
    let args = [
        "--http-port".to_owned(),
        port(server.http_addr),
        "--dns-port".to_owned(),
        port(server.dns_addr),
    ];
    run_script(library, "compat_suite.py", &args).await;
    server.stop().await;
}

/// Runs `script` (in `tests/consul_python/`) with `library`'s interpreter
/// and `args`, and asserts that it passed.
async fn run_script(library: &'static Library, script: &str, args: &[String]) {
    let python = tokio::task::spawn_blocking(|| {
        install::python_venv("consul-venvs", library.name, library.requirements)
    })
    .await
    .expect("venv setup");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/consul_python")
        .join(script);
    let mut command = tokio::process::Command::new(&python);
    command
        // -u: output unbuffered, so a failure shows how far it got;
        // -B: no __pycache__ in the source tree.
        .arg("-u")
        .arg("-B")
        .arg(&script)
        .args(["--library", library.name])
        .args(args)
        // These would redirect or change the clients' requests
        // (python-consul lets CONSUL_HTTP_ADDR override an explicit port).
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_SSL")
        .env_remove("CONSUL_HTTP_SSL_VERIFY")
        // requests honours proxy variables; roster is local.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}: {} did not finish in {SUITE_LIMIT:?}",
                library.name,
                script.display()
            )
        })
        .unwrap_or_else(|e| panic!("{}: cannot run {python:?}: {e}", library.name));
    assert!(
        output.status.success(),
        "{} failed with {}\n{}",
        script.display(),
        library.name,
        describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("all passed"), "{}", describe(&output));
    println!("{stdout}");
}

/// Runs `acl_clients.py` with `library` against a roster with ACLs on:
/// the library's own `token` setting, refusals, filtered reads.
async fn run_acl_script(library: &'static Library) {
    const ADMIN: &str = "admin-secret-for-tests";
    const WEB: &str = "web-secret-for-tests";
    let server = common::start_server_with(&[], |config| {
        config.acl = acl_config(ADMIN, WEB);
    })
    .await;
    let args = [
        "--http-port".to_owned(),
        server.http_addr.port().to_string(),
        "--admin-token".to_owned(),
        ADMIN.to_owned(),
        "--web-token".to_owned(),
        WEB.to_owned(),
    ];
    run_script(library, "acl_clients.py", &args).await;
    server.stop().await;
}

/// ACLs on, default deny, a management token and one that writes `web*`
/// and reads everything.
fn acl_config(admin: &str, web: &str) -> roster::config::AclConfig {
    let text = format!(
        r#"
        enabled = true
        default_policy = "deny"
        [[tokens]]
        name = "admin"
        secret = "{admin}"
        management = true
        [[tokens]]
        name = "web-deployer"
        secret = "{web}"
        service_prefix = {{ "web" = "write", "" = "read" }}
        "#
    );
    toml::from_str(&text).expect("a valid [acl] table")
}

#[tokio::test(flavor = "multi_thread")]
async fn python_consul_1_1_0_uses_acl_tokens() {
    run_acl_script(&PYTHON_CONSUL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_1_8_0_uses_acl_tokens() {
    run_acl_script(&PY_CONSUL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_consul_1_1_0_works_unmodified() {
    run_suite(&PYTHON_CONSUL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_1_8_0_works_unmodified() {
    run_suite(&PY_CONSUL).await;
}
