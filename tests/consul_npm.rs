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
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    install::{describe, npm_install},
    start_server,
};

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

#[tokio::test(flavor = "multi_thread")]
async fn npm_consul_2_0_1_works_unmodified() {
    let node_modules = tokio::task::spawn_blocking(|| {
        npm_install("consul-npm", &suite_dir(), INSTALL_HINT).join("node_modules")
    })
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
