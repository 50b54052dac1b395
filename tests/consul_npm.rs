//! The Consul compatibility suite with the npm `consul` client (2.0.1),
//! unmodified, driving a real roster.
//!
//! The client's `node_modules` lives under `target/consul-npm/`, installed
//! there on first use by `npm ci` from `tests/consul_npm/package-lock.json`
//! and reused afterwards (a marker file written last says the install is
//! complete and for which lock file; a lock file keeps two test processes
//! from installing at once). The test starts roster on ephemeral ports and
//! runs `tests/consul_npm/suite.js` against it with `NODE_PATH` pointing at
//! that install; the script's exit status is the verdict, and its output is
//! shown when it fails.
//!
//! Needs `node` and `npm` (`.ci/run` installs them) and access to the npm
//! registry the first time.

mod common;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use common::start_server;

/// The whole script, with generous room for a busy machine; it normally
/// takes about fifteen seconds.
const SUITE_LIMIT: Duration = Duration::from_secs(300);

/// What is missing when `node` or `npm` cannot be run.
const INSTALL_HINT: &str = "The npm Consul compatibility suite needs node (>= 18) and npm; \
     .ci/run installs them (Debian/Ubuntu: apt-get install nodejs npm).";

/// `tests/consul_npm/`: the suite, its package.json and package-lock.json.
fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consul_npm")
}

/// `target/`: the parent of the per-target temporary directory Cargo gives
/// integration tests, so a custom `CARGO_TARGET_DIR` is respected.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .to_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}\n{INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "{what} failed: {command:?}\n{}\n(The first run needs access to the npm registry.)",
        describe(&output)
    );
}

/// The `node_modules` directory holding the pinned client, running
/// `npm ci` first if it is missing, incomplete or for another lock file.
/// Blocking: run it off the async runtime.
fn ensure_node_modules() -> PathBuf {
    let root = target_dir().join("consul-npm");
    std::fs::create_dir_all(&root).expect("create target/consul-npm");
    let manifest = std::fs::read_to_string(suite_dir().join("package.json"))
        .expect("read tests/consul_npm/package.json");
    let lock = std::fs::read_to_string(suite_dir().join("package-lock.json"))
        .expect("read tests/consul_npm/package-lock.json");
    let node_modules = root.join("node_modules");
    let marker = root.join(".roster-npm-complete");
    let wanted = format!("{manifest}\n{lock}");
    // Held until return: another `cargo test` installing the same modules
    // waits.
    let guard = File::create(target_dir().join("consul-npm.lock")).expect("lock file");
    guard.lock().expect("lock the npm install");
    let complete = std::fs::read_to_string(&marker).is_ok_and(|text| text == wanted);
    if complete && node_modules.join("consul/package.json").exists() {
        return node_modules;
    }
    // The marker goes first: an interrupted install must not look complete.
    if marker.exists() {
        std::fs::remove_file(&marker).expect("remove a stale marker");
    }
    std::fs::write(root.join("package.json"), &manifest).expect("copy package.json");
    std::fs::write(root.join("package-lock.json"), &lock).expect("copy package-lock.json");
    // `npm ci` installs exactly the lock file, removing any node_modules
    // first; no install scripts run.
    run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&root),
        "npm ci",
    );
    std::fs::write(&marker, wanted).expect("write the npm marker");
    node_modules
}

#[tokio::test(flavor = "multi_thread")]
async fn npm_consul_2_0_1_works_unmodified() {
    let node_modules = tokio::task::spawn_blocking(ensure_node_modules)
        .await
        .expect("npm setup");
    let server = start_server().await;
    let script = suite_dir().join("suite.js");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(&script)
        .arg("--http-port")
        .arg(server.http_addr.port().to_string())
        .arg("--dns-port")
        .arg(server.dns_addr.port().to_string())
        // The script's `require("consul")` finds the install under target/.
        .env("NODE_PATH", &node_modules)
        .env_remove("NODE_OPTIONS")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in {SUITE_LIMIT:?}", script.display()))
        .unwrap_or_else(|e| panic!("cannot run node {}: {e}\n{INSTALL_HINT}", script.display()));
    assert!(
        output.status.success(),
        "{} failed\n{}",
        script.display(),
        describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("all passed"), "{}", describe(&output));
    println!("{stdout}");
    server.stop().await;
}
