//! The README's examples, run as a reader would run them: the one-minute
//! tour (curl and dig, then the `roster` client commands) and the backup
//! commands, against a real roster on ephemeral ports. Only the ports are
//! changed (8500 and 8600 in the text), and `roster` is this build's binary.
//! A snippet that stops working, or prints JSON without its newline, fails
//! here.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::{readme, start_server};

/// The most the whole tour may take on a busy machine; it takes seconds.
const TOUR_LIMIT: Duration = Duration::from_secs(120);

/// Runs `script` under bash with `roster` meaning this build's binary
/// (`watch`, which runs until Ctrl-C, for two seconds), in `dir`; returns
/// stdout, asserting success.
async fn run_bash(script: &str, dir: &Path) -> String {
    let prelude = "set -euo pipefail\n\
        roster() {\n\
          if [ \"$1\" = watch ]; then timeout 2 \"$ROSTER_BIN\" \"$@\" || [ $? -eq 124 ]; \
          else timeout 20 \"$ROSTER_BIN\" \"$@\"; fi\n\
        }\n";
    let child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .current_dir(dir)
        .env("ROSTER_BIN", env!("CARGO_BIN_EXE_roster"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TOUR_LIMIT, child)
        .await
        .unwrap_or_else(|_| panic!("the README's commands did not finish in {TOUR_LIMIT:?}"))
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the README's commands failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tour_and_the_backup_commands_run_as_written() {
    let server = start_server().await;
    let http = server.http_addr.to_string();
    let dns_port = server.dns_addr.port().to_string();
    let mut script = readme::sh_blocks("## A one-minute tour").join("\n");
    script.push_str(&readme::sh_blocks("## Storage, restarts and backups").join("\n"));
    let script = script
        .replace("localhost:8500", &http)
        .replace("127.0.0.1:8500", &http)
        .replace("-p 8600", &format!("-p {dns_port}"));
    // The client commands without --http find the server here.
    let script = format!("export ROSTER_HTTP={http}\n{script}");
    let dir = tempfile::tempdir().expect("a working directory");
    let stdout = run_bash(&script, dir.path()).await;

    // dig found the instances, by tag too, and the metadata.
    assert!(stdout.contains("10.0.0.5"), "{stdout}");
    assert!(stdout.contains("10.0.0.6"), "{stdout}");
    assert!(stdout.contains("\"version=1.2\""), "{stdout}");
    // Every JSON answer ends its own line, so each line that starts one
    // holds exactly one document.
    let documents: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with('{') || line.starts_with('['))
        .collect();
    assert!(documents.len() >= 5, "{stdout}");
    for line in documents {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {line}"));
    }
    // The CLI's tables, and the export the backup block wrote.
    assert!(stdout.contains("SERVICE"), "{stdout}");
    let export = std::fs::read_to_string(dir.path().join("registry.json")).expect("registry.json");
    let export: serde_json::Value = serde_json::from_str(&export).expect("the export is JSON");
    assert!(export.to_string().contains("web-1"), "{export}");
    server.stop().await;
}
