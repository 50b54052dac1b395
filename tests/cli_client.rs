//! The everyday commands against a running roster (`roster services`,
//! `service`, `register`, `deregister`, `maintenance`, `watch`): the real
//! binary against a real server, their output and their exit codes.

mod common;

use std::{process::Stdio, time::Duration};

use common::{start_server, start_server_with};
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_roster"));
    command
        .args(args)
        .args(["--http", &http.to_string()])
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
    let (code, _, err) = roster(http, &["service", "nothing-here"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    // Usage errors are clap's 2.
    let (code, _, _) = roster(http, &["maintenance", "web", "w"]).await;
    assert_eq!(code, 2);
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
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("-- web")).count(),
        2,
        "{seen:?}"
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
