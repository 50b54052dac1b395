//! The examples in `examples/`, run as a user would: the Flask provider
//! registers itself through python-consul with an HTTP check on loopback,
//! the consumer finds it through DNS SRV with dnspython and calls it with
//! requests, and the provider deregisters when it is stopped (SIGTERM).
//!
//! Both run in one venv under `target/example-venvs/`, built on first use
//! from `examples/requirements.txt` (see `common::install::python_venv`;
//! needs python3's venv module and access to PyPI the first time).

mod common;

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use hickory_proto::rr::RecordType;
use tokio::{process::Command, time::timeout};

use common::{Server, daemon::free_port, eventually, install, start_server};

/// How long the provider may take to start, register and pass its first
/// check (a cold Python import of Flask on a busy machine), or to stop.
const PROVIDER_LIMIT: Duration = Duration::from_secs(60);

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The examples' venv interpreter, built from `examples/requirements.txt`.
async fn examples_python() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        let text = std::fs::read_to_string(examples_dir().join("requirements.txt"))
            .expect("read examples/requirements.txt");
        let requirements: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        install::python_venv("example-venvs", "examples", &requirements)
    })
    .await
    .expect("venv setup")
}

/// `python -u -B script args`, with no proxy for loopback and no
/// Consul variables that would redirect python-consul.
fn python(interpreter: &Path, script: &str, args: &[String]) -> Command {
    let mut command = Command::new(interpreter);
    command
        .arg("-u")
        .arg("-B")
        .arg(examples_dir().join(script))
        .args(args)
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    command
}

/// Waits until DNS serves exactly `count` SRV records for `hello`.
async fn wait_in_dns(server: &Server, count: usize, why: &str, log: &Path) {
    eventually(why, PROVIDER_LIMIT, || async {
        let reply = server
            .query("_hello._tcp.service.local", RecordType::SRV)
            .await;
        let seen = reply.srvs().len();
        if seen == count {
            Ok(())
        } else {
            Err(format!(
                "{seen} SRV records; provider output:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flask_provider_is_found_by_the_dns_consumer_and_deregisters_on_sigterm() {
    let server = start_server().await;
    let interpreter = examples_python().await;
    let logs = tempfile::tempdir().expect("temporary directory for the provider's output");
    let log = logs.path().join("provider.log");
    let output = File::create(&log).expect("create the provider's log");

    let port = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let id = format!("hello-{port}");
    let mut provider = python(
        &interpreter,
        "flask-provider/provider.py",
        &[
            "--roster".to_owned(),
            server.http_addr.to_string(),
            "--port".to_owned(),
            port.to_string(),
        ],
    )
    .stdin(Stdio::null())
    .stdout(output.try_clone().expect("clone the log handle"))
    .stderr(output)
    .spawn()
    .expect("start the provider");

    // Registered, and its HTTP check passed: DNS serves it.
    wait_in_dns(&server, 1, "the provider healthy in roster", &log).await;
    let stored = common::instance(&server, "hello", &id).await;
    assert_eq!(stored["checks"][0]["status"], "passing", "{stored}");

    let consumer = python(
        &interpreter,
        "consumer/consumer.py",
        &["--dns".to_owned(), server.dns_addr.to_string()],
    )
    .output();
    let consumer = timeout(PROVIDER_LIMIT, consumer)
        .await
        .expect("the consumer finishes")
        .expect("run the consumer");
    let stdout = String::from_utf8_lossy(&consumer.stdout);
    assert!(
        consumer.status.success(),
        "consumer failed:\n{}",
        install::describe(&consumer)
    );
    let provider_at = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        stdout.contains(&format!("http://{provider_at}/ -> hello from {id}")),
        "the consumer did not get the provider's answer:\n{}",
        install::describe(&consumer)
    );

    // SIGTERM: the provider deregisters before it exits.
    let pid = provider.id().expect("the provider is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
    let exit = timeout(PROVIDER_LIMIT, provider.wait())
        .await
        .expect("the provider exits after SIGTERM")
        .expect("wait for the provider");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "provider exited with {exit}:\n{said}");
    let gone = common::get_instance(&server, "hello", &id).await;
    assert_eq!(
        gone.status, 404,
        "still registered after exit: {gone:?}\n{said}"
    );
    assert!(said.contains(&format!("deregistered {id}")), "{said}");
    server.stop().await;
}
