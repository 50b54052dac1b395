//! DNS UPDATE (RFC 2136, TSIG) from real clients on loopback: `nsupdate`
//! and `knsupdate` adding, replacing and deleting instances over UDP and
//! TCP, with and without prerequisites, tags and IPv6; the refusals
//! (unsigned, SIG(0), GSS-TSIG, HMAC-MD5, unknown key, wrong secret, skewed
//! clock, another zone, a static zone, a service the key may not change),
//! each with its code and each changing nothing; an instance whose TCP
//! check fails staying out of DNS until its port opens; re-sending an
//! identical update changing nothing; checks registered through the API
//! surviving an update; the README's config and commands as written; and
//! an acknowledged update surviving `kill -9`.
//!
//! What roster made of an update is read back two independent ways: the
//! HTTP API (the instance's address, port, meta, checks) and DNS (what a
//! resolver is handed). A refused update is proven harmless by comparing
//! [`snapshot`]s, which include every instance's modify index.
//!
//! external-dns's message shapes are in `dns_update_external_dns.rs`, Kea's
//! DHCP-DDNS in `dns_update_kea.rs`.

mod common;

use std::{collections::BTreeSet, net::SocketAddr};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use common::{
    Server, get_instance, instance,
    readme::{sh_blocks, snippet},
    served_addresses,
    targets::TcpTarget,
    update::{
        ADMIN, DEFAULT_PORT, Key, Tool, Transport, UNKNOWN, WEB_ONLY, WRONG_SECRET, dnspython,
        run_program, snapshot, start_update_server, start_update_server_with, update_toml,
    },
    wait_check, wait_served,
};

fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| (*a).to_owned()).collect()
}

/// The SRV records DNS serves at `name`, as `(target, port)`, sorted.
async fn srv_targets(server: &Server, name: &str) -> Vec<(String, u16)> {
    let reply = server.query(name, RecordType::SRV).await;
    let mut targets: Vec<(String, u16)> = reply
        .srvs()
        .iter()
        .map(|srv| (common::lower(&srv.target), srv.port))
        .collect();
    targets.sort();
    targets
}

/// Adds `web-1` (address, SRV port, one meta entry), replaces its address,
/// then deletes it, checking each step through the HTTP API and DNS.
async fn add_replace_delete(tool: Tool, transport: Transport) {
    let server = start_update_server().await;
    let dns = server.dns_addr;

    tool.run(
        &ADMIN,
        transport,
        dns,
        r#"
update add web-1.web.service.local. 60 A 127.0.0.2
update add _web._tcp.service.local. 60 SRV 0 0 8081 web-1.web.service.local.
update add web-1.web.service.local. 60 TXT "version=1.2"
"#,
    )
    .await
    .assert_ok();
    let body = instance(&server, "web", "web-1").await;
    assert_eq!(body["address"], "127.0.0.2", "{body}");
    assert_eq!(body["port"], 8081, "{body}");
    assert_eq!(body["meta"]["version"], "1.2", "{body}");
    wait_served(&server, "web", &["127.0.0.2"]).await;
    assert_eq!(
        srv_targets(&server, "_web._tcp.service.local").await,
        vec![("web-1.web.service.local.".to_owned(), 8081)]
    );
    assert_eq!(
        server
            .query("web-1.web.service.local", RecordType::TXT)
            .await
            .txt_strings(),
        vec!["version=1.2".to_owned()],
        "the TXT RRset reads back as written"
    );

    // Replace the address RRset: the port and meta stay.
    tool.run(
        &ADMIN,
        transport,
        dns,
        r"
update delete web-1.web.service.local. A
update add web-1.web.service.local. 60 A 127.0.0.3
",
    )
    .await
    .assert_ok();
    let body = instance(&server, "web", "web-1").await;
    assert_eq!(body["address"], "127.0.0.3", "{body}");
    assert_eq!(body["port"], 8081, "{body}");
    assert_eq!(body["meta"]["version"], "1.2", "{body}");
    wait_served(&server, "web", &["127.0.0.3"]).await;

    // Delete every RRset of the instance: it is deregistered.
    tool.run(
        &ADMIN,
        transport,
        dns,
        r"
update delete web-1.web.service.local.
update delete _web._tcp.service.local. SRV 0 0 8081 web-1.web.service.local.
",
    )
    .await
    .assert_ok();
    let reply = get_instance(&server, "web", "web-1").await;
    assert_eq!(reply.status, 404, "web-1 deregistered: {reply:?}");
    wait_served(&server, "web", &[]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nsupdate_over_udp_adds_replaces_and_deletes_an_instance() {
    add_replace_delete(Tool::Nsupdate, Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nsupdate_over_tcp_adds_replaces_and_deletes_an_instance() {
    add_replace_delete(Tool::Nsupdate, Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn knsupdate_over_udp_adds_replaces_and_deletes_an_instance() {
    add_replace_delete(Tool::Knsupdate, Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn knsupdate_over_tcp_adds_replaces_and_deletes_an_instance() {
    add_replace_delete(Tool::Knsupdate, Transport::Tcp).await;
}

/// Sends `commands` with `tool`, expecting the update to fail with `rcode`
/// and to change nothing.
async fn refused(server: &Server, tool: Tool, rcode: &str, commands: &str) {
    let before = snapshot(server).await;
    tool.run(&ADMIN, Transport::Udp, server.dns_addr, commands)
        .await
        .assert_rcode(rcode);
    assert_eq!(
        snapshot(server).await,
        before,
        "a {rcode} update changed the registry:\n{commands}"
    );
}

/// Every prerequisite form a client can write, once holding and once not:
/// a failed one answers its RCODE and changes nothing, a held one lets the
/// update through.
async fn prerequisites(tool: Tool) {
    let server = start_update_server().await;
    let dns = server.dns_addr;
    let ok = |commands: &'static str| async move {
        tool.run(&ADMIN, Transport::Udp, dns, commands)
            .await
            .assert_ok();
    };

    // Name not in use: holds for a new instance...
    ok(r"
prereq nxdomain web-1.web.service.local.
update add web-1.web.service.local. 60 A 127.0.0.2
update add _web._tcp.service.local. 60 SRV 0 0 8081 web-1.web.service.local.
")
    .await;
    assert_eq!(
        instance(&server, "web", "web-1").await["address"],
        "127.0.0.2"
    );
    // ...and fails once it exists.
    refused(
        &server,
        tool,
        "YXDOMAIN",
        r#"
prereq nxdomain web-1.web.service.local.
update add web-1.web.service.local. 60 TXT "env=prod"
"#,
    )
    .await;

    // Name in use.
    refused(
        &server,
        tool,
        "NXDOMAIN",
        r#"
prereq yxdomain web-9.web.service.local.
update add web-1.web.service.local. 60 TXT "env=prod"
"#,
    )
    .await;
    ok(r#"
prereq yxdomain web-1.web.service.local.
update add web-1.web.service.local. 60 TXT "env=prod"
"#)
    .await;
    assert_eq!(
        instance(&server, "web", "web-1").await["meta"]["env"],
        "prod"
    );

    // RRset does not exist.
    refused(
        &server,
        tool,
        "YXRRSET",
        r#"
prereq nxrrset web-1.web.service.local. A
update add web-1.web.service.local. 60 TXT "tier=1"
"#,
    )
    .await;
    ok(r#"
prereq nxrrset web-1.web.service.local. AAAA
update add web-1.web.service.local. 60 TXT "tier=1"
"#)
    .await;
    assert_eq!(instance(&server, "web", "web-1").await["meta"]["tier"], "1");

    // RRset exists (value-independent).
    refused(
        &server,
        tool,
        "NXRRSET",
        r#"
prereq yxrrset web-1.web.service.local. AAAA
update add web-1.web.service.local. 60 TXT "tier=2"
"#,
    )
    .await;
    ok(r#"
prereq yxrrset web-1.web.service.local. A
update add web-1.web.service.local. 60 TXT "rack=a"
"#)
    .await;
    assert_eq!(instance(&server, "web", "web-1").await["meta"]["rack"], "a");

    // RRset exists with exactly these values.
    refused(
        &server,
        tool,
        "NXRRSET",
        r"
prereq yxrrset web-1.web.service.local. A 127.0.0.9
update delete web-1.web.service.local. A
update add web-1.web.service.local. 60 A 127.0.0.3
",
    )
    .await;
    ok(r"
prereq yxrrset web-1.web.service.local. A 127.0.0.2
update delete web-1.web.service.local. A
update add web-1.web.service.local. 60 A 127.0.0.3
")
    .await;
    assert_eq!(
        instance(&server, "web", "web-1").await["address"],
        "127.0.0.3"
    );
    // Exact set equality: the SRV RRset has one record, naming port 8081.
    refused(
        &server,
        tool,
        "NXRRSET",
        r"
prereq yxrrset _web._tcp.service.local. SRV 0 0 8082 web-1.web.service.local.
update delete web-1.web.service.local.
",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nsupdate_prerequisites_hold_or_fail_with_their_rcode_and_change_nothing() {
    prerequisites(Tool::Nsupdate).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn knsupdate_prerequisites_hold_or_fail_with_their_rcode_and_change_nothing() {
    prerequisites(Tool::Knsupdate).await;
}

/// An update that adds `db-1` to the service `db`, as send.py takes it.
fn add_db() -> Value {
    json!([
        ["add", "db-1.db", 60, "A", "127.0.0.5"],
        [
            "add",
            "_db._tcp",
            60,
            "SRV",
            "0 0 5432 db-1.db.service.local."
        ],
    ])
}

/// A GSS-TSIG (RFC 3645) key, as Windows clients and `nsupdate -g` sign
/// with; send.py signs with a stand-in for the Kerberos context.
const GSS: Key = Key {
    name: "1234.sig-client.",
    algorithm: "gss-tsig",
    secret: "",
    services: r#"["*"]"#,
};

/// The static zone `example.test.` (a file in `zones/`).
const STATIC_ZONE: (&str, &str) = (
    "example.test.zone",
    "$TTL 300
@   IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60
@   IN NS  ns1.example.test.
ns1 IN A   127.0.0.1
",
);

#[tokio::test(flavor = "multi_thread")]
async fn refused_updates_get_their_code_a_signed_answer_and_change_nothing() {
    let server = start_update_server_with(&update_toml(), &[STATIC_ZONE]).await;
    let dns = server.dns_addr;
    // Something to leave alone.
    let spec = |key: Option<&Key>, tcp: bool, updates: Value| json!({ "key": key.map(Key::json), "tcp": tcp, "updates": updates });
    let answer = dnspython(
        dns,
        spec(
            Some(&WEB_ONLY),
            false,
            json!([
                ["add", "web-1.web", 60, "A", "127.0.0.2"],
                [
                    "add",
                    "_web._tcp",
                    60,
                    "SRV",
                    "0 0 8081 web-1.web.service.local."
                ],
            ]),
        ),
    )
    .await;
    assert_eq!(answer.rcode, "NOERROR", "{:?}", answer.raw);
    assert_eq!(answer.mac_ok, Some(true), "signed answer: {:?}", answer.raw);
    let before = snapshot(&server).await;
    assert_eq!(before["web"][0]["id"], "web-1", "{before}");

    struct Case {
        what: &'static str,
        spec: Value,
        rcode: &'static str,
        tsig_error: Option<&'static str>,
        /// Whether the answer's MAC must verify with the request's key
        /// (RFC 8945 5.3.2: BADKEY and BADSIG answers carry no MAC).
        signed: bool,
    }
    let cases = [
        Case {
            what: "unsigned",
            spec: spec(None, false, add_db()),
            rcode: "REFUSED",
            tsig_error: None,
            signed: false,
        },
        Case {
            what: "unsigned over TCP",
            spec: spec(None, true, add_db()),
            rcode: "REFUSED",
            tsig_error: None,
            signed: false,
        },
        Case {
            what: "signed with SIG(0), which roster does not take",
            spec: {
                let mut s = spec(None, false, add_db());
                s["sig0"] = json!(true);
                s
            },
            rcode: "REFUSED",
            tsig_error: None,
            signed: false,
        },
        Case {
            what: "signed with GSS-TSIG, which roster does not take",
            spec: spec(Some(&GSS), true, add_db()),
            rcode: "REFUSED",
            tsig_error: None,
            signed: false,
        },
        Case {
            what: "unknown key",
            spec: spec(Some(&UNKNOWN), false, add_db()),
            rcode: "NOTAUTH",
            tsig_error: Some("BADKEY"),
            signed: false,
        },
        Case {
            what: "wrong secret",
            spec: spec(Some(&WRONG_SECRET), true, add_db()),
            rcode: "NOTAUTH",
            tsig_error: Some("BADSIG"),
            signed: false,
        },
        Case {
            what: "signed an hour in the past",
            spec: {
                let mut s = spec(Some(&ADMIN), false, add_db());
                s["skew"] = json!(-3600);
                s
            },
            rcode: "NOTAUTH",
            tsig_error: Some("BADTIME"),
            signed: true,
        },
        Case {
            what: "signed an hour in the future, over TCP",
            spec: {
                let mut s = spec(Some(&ADMIN), true, add_db());
                s["skew"] = json!(3600);
                s
            },
            rcode: "NOTAUTH",
            tsig_error: Some("BADTIME"),
            signed: true,
        },
        Case {
            what: "a zone roster does not serve",
            spec: {
                let mut s = spec(
                    Some(&ADMIN),
                    false,
                    json!([["add", "db-1.db", 60, "A", "127.0.0.5"]]),
                );
                s["zone"] = json!("example.org.");
                s
            },
            rcode: "NOTAUTH",
            tsig_error: None,
            signed: true,
        },
        Case {
            what: "a static zone",
            spec: {
                let mut s = spec(
                    Some(&ADMIN),
                    true,
                    json!([["add", "www", 60, "A", "127.0.0.5"]]),
                );
                s["zone"] = json!("example.test.");
                s
            },
            rcode: "REFUSED",
            tsig_error: None,
            signed: true,
        },
        Case {
            what: "a service the key may not change",
            spec: spec(Some(&WEB_ONLY), false, add_db()),
            rcode: "REFUSED",
            tsig_error: None,
            signed: true,
        },
        Case {
            what: "a key allowed one service, changing it and another",
            spec: spec(
                Some(&WEB_ONLY),
                true,
                json!([
                    ["add", "web-1.web", 60, "TXT", "env=prod"],
                    ["add", "db-1.db", 60, "A", "127.0.0.5"],
                    [
                        "add",
                        "_db._tcp",
                        60,
                        "SRV",
                        "0 0 5432 db-1.db.service.local."
                    ],
                ]),
            ),
            rcode: "REFUSED",
            tsig_error: None,
            signed: true,
        },
    ];
    for case in cases {
        let answer = dnspython(dns, case.spec.clone()).await;
        assert_eq!(answer.rcode, case.rcode, "{}: {:?}", case.what, answer.raw);
        assert_eq!(
            answer.tsig_error.as_deref(),
            case.tsig_error,
            "{}: TSIG error: {:?}",
            case.what,
            answer.raw
        );
        if case.signed {
            assert_eq!(
                answer.mac_ok,
                Some(true),
                "{}: the answer is signed with the request's key: {:?}",
                case.what,
                answer.raw
            );
        }
        if case.tsig_error.is_some() {
            assert!(
                answer.signed,
                "{}: a TSIG in the answer: {:?}",
                case.what, answer.raw
            );
        }
        assert_eq!(
            snapshot(&server).await,
            before,
            "{}: the refused update changed the registry",
            case.what
        );
    }
    // And DNS agrees: no db, web unchanged, the static zone untouched.
    assert_eq!(served_addresses(dns, "db").await, set(&[]));
    wait_served(&server, "web", &["127.0.0.2"]).await;
    assert_eq!(
        server.query("www.example.test", RecordType::A).await.ips(),
        Vec::<std::net::IpAddr>::new()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nsupdate_unsigned_or_hmac_md5_or_wrong_secret_is_refused_and_changes_nothing() {
    let server = start_update_server().await;
    let dns = server.dns_addr;
    let add = r"
update add web-1.web.service.local. 60 A 127.0.0.2
update add _web._tcp.service.local. 60 SRV 0 0 8081 web-1.web.service.local.
";
    let before = snapshot(&server).await;

    // No key at all.
    Tool::Nsupdate
        .run_with(None, Transport::Udp, dns, add)
        .await
        .assert_rcode("REFUSED");
    // `-y name:secret` without an algorithm is HMAC-MD5, which roster
    // does not accept (the README says to write hmac-sha256:).
    let md5 = format!("{}:{}", ADMIN.name, ADMIN.secret);
    Tool::Nsupdate
        .run_with(Some(&md5), Transport::Udp, dns, add)
        .await
        .assert_failed();
    Tool::Knsupdate
        .run(&WRONG_SECRET, Transport::Tcp, dns, add)
        .await
        .assert_failed();
    Tool::Nsupdate
        .run(&UNKNOWN, Transport::Tcp, dns, add)
        .await
        .assert_failed();
    assert_eq!(snapshot(&server).await, before);
    assert_eq!(served_addresses(dns, "web").await, set(&[]));

    // The same update, correctly signed, goes through: the failures above
    // were the key's.
    Tool::Nsupdate
        .run(&ADMIN, Transport::Udp, dns, add)
        .await
        .assert_ok();
    wait_served(&server, "web", &["127.0.0.2"]).await;
    server.stop().await;
}

/// `web-1` at 127.0.0.1 with a TCP check of `target`, all declared in
/// the update.
fn checked_add(target: SocketAddr) -> String {
    format!(
        r#"
update add web-1.web.service.local. 60 A 127.0.0.1
update add _web._tcp.service.local. 60 SRV 0 0 {port} web-1.web.service.local.
update add web-1.web.service.local. 60 TXT "check-tcp=127.0.0.1:{port}"
update add web-1.web.service.local. 60 TXT "check-interval=1s"
"#,
        port = target.port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_with_a_failing_tcp_check_stays_out_of_dns_until_its_port_opens() {
    let server = start_update_server().await;
    let dns = server.dns_addr;
    let mut target = TcpTarget::open().await;
    target.close().await;
    let add = checked_add(target.addr);

    Tool::Nsupdate
        .run(&ADMIN, Transport::Udp, dns, &add)
        .await
        .assert_ok();
    // The check runs, fails, and DNS does not hand the instance out.
    let body = wait_check(&server, "web", "web-1", "critical", "refused").await;
    assert_eq!(body["checks"][0]["type"], "tcp", "{body}");
    assert_eq!(body["checks"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(served_addresses(dns, "web").await, set(&[]));
    assert!(
        srv_targets(&server, "_web._tcp.service.local")
            .await
            .is_empty()
    );
    // Prerequisites see it all the same: out of DNS is not out of the zone.
    refused(
        &server,
        Tool::Nsupdate,
        "YXDOMAIN",
        r#"
prereq nxdomain web-1.web.service.local.
update add web-1.web.service.local. 60 TXT "env=prod"
"#,
    )
    .await;
    refused(
        &server,
        Tool::Nsupdate,
        "NXRRSET",
        r#"
prereq yxrrset web-1.web.service.local. A 127.0.0.9
update add web-1.web.service.local. 60 TXT "env=prod"
"#,
    )
    .await;

    target.reopen().await;
    wait_check(&server, "web", "web-1", "passing", "success").await;
    wait_served(&server, "web", &["127.0.0.1"]).await;

    // Re-sending the identical update (as external-dns and Kea do) changes
    // nothing: same modify index, and the check keeps its passing status
    // instead of starting over as critical.
    let before = snapshot(&server).await;
    Tool::Knsupdate
        .run(&ADMIN, Transport::Tcp, dns, &add)
        .await
        .assert_ok();
    assert_eq!(snapshot(&server).await, before);
    assert_eq!(served_addresses(dns, "web").await, set(&["127.0.0.1"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_check_applies_to_an_update_that_names_none() {
    let mut target = TcpTarget::open().await;
    target.close().await;
    let toml = format!(
        "{}\n[dns.update.default_check]\ntcp = \"{{address}}:{{port}}\"\ninterval = \"1s\"\n",
        update_toml()
    );
    let server = start_update_server_with(&toml, &[]).await;
    let add = format!(
        r"
update add web-1.web.service.local. 60 A 127.0.0.1
update add _web._tcp.service.local. 60 SRV 0 0 {} web-1.web.service.local.
",
        target.addr.port()
    );
    Tool::Nsupdate
        .run(&ADMIN, Transport::Udp, server.dns_addr, &add)
        .await
        .assert_ok();
    let body = wait_check(&server, "web", "web-1", "critical", "refused").await;
    assert_eq!(
        body["checks"][0]["target"],
        target.addr.to_string(),
        "{{address}}:{{port}} filled in: {body}"
    );
    assert_eq!(served_addresses(server.dns_addr, "web").await, set(&[]));
    target.reopen().await;
    wait_served(&server, "web", &["127.0.0.1"]).await;

    // An IPv6 address goes in brackets before the port.
    let add = format!(
        r"
update add web-2.web.service.local. 60 AAAA ::1
update add _web._tcp.service.local. 60 SRV 0 0 {} web-2.web.service.local.
",
        target.addr.port()
    );
    Tool::Nsupdate
        .run(&ADMIN, Transport::Udp, server.dns_addr, &add)
        .await
        .assert_ok();
    let body = instance(&server, "web", "web-2").await;
    assert_eq!(
        body["checks"][0]["target"],
        format!("[::1]:{}", target.addr.port()),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_record_at_the_service_name_makes_an_instance_on_the_default_port() {
    let server = start_update_server().await;
    Tool::Nsupdate
        .run(
            &ADMIN,
            Transport::Udp,
            server.dns_addr,
            "update add api.service.local. 60 A 127.0.0.7",
        )
        .await
        .assert_ok();
    wait_served(&server, "api", &["127.0.0.7"]).await;
    let all = snapshot(&server).await;
    let instances = all["api"].as_array().cloned().unwrap_or_default();
    assert_eq!(instances.len(), 1, "{all}");
    assert_eq!(instances[0]["port"], DEFAULT_PORT, "{all}");
    assert_eq!(instances[0]["address"], "127.0.0.7", "{all}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_config_and_update_commands_work_as_written() {
    // The README's [dns.update] block with this test's secret, and its
    // nsupdate and knsupdate blocks with this server's port, run by bash
    // as a reader would, `$SECRET` set.
    let toml = snippet(
        "[dns.update]",
        &[("base64 as printed by tsig-keygen", ADMIN.secret)],
    );
    let server = start_update_server_with(&toml, &[]).await;
    let port = server.dns_addr.port().to_string();
    let blocks = sh_blocks("## DNS UPDATE");
    assert_eq!(blocks.len(), 2, "an add and a delete: {blocks:?}");
    let run = |block: &str| {
        let script = format!("set -euo pipefail\n{}", block.replace("8600", &port));
        async move {
            run_program(
                "bash",
                "bash",
                &["-c".to_owned(), script],
                "",
                &[("SECRET", ADMIN.secret)],
            )
            .await
        }
    };

    run(&blocks[0]).await.assert_ok();
    let body = instance(&server, "web", "web-1").await;
    assert_eq!(body["address"], "127.0.0.2", "{body}");
    assert_eq!(body["port"], 8080, "{body}");
    assert_eq!(body["meta"]["version"], "1.2", "{body}");
    let checks = body["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 1, "the declared check only: {body}");
    assert_eq!(checks[0]["type"], "http", "{body}");
    assert_eq!(
        checks[0]["target"], "http://127.0.0.2:8080/health",
        "{body}"
    );
    assert_eq!(checks[0]["interval"], "10s", "{body}");

    run(&blocks[1]).await.assert_ok();
    let reply = get_instance(&server, "web", "web-1").await;
    assert_eq!(reply.status, 404, "web-1 deregistered: {reply:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nsupdate_without_a_zone_line_finds_the_zone_by_a_signed_soa_query() {
    // Without `zone`, nsupdate first asks the server for the SOA of the
    // update's name, signed, and aborts unless the answer is signed too.
    let server = start_update_server().await;
    let script = format!(
        "server {} {}\n\
         update add web-1.web.service.local. 60 A 127.0.0.2\n\
         update add _web._tcp.service.local. 60 SRV 0 0 8081 web-1.web.service.local.\n\
         send\n",
        server.dns_addr.ip(),
        server.dns_addr.port()
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        Tool::Nsupdate
            .run_script(Some(&ADMIN.y_arg()), transport, &script)
            .await
            .assert_ok();
    }
    assert_eq!(instance(&server, "web", "web-1").await["port"], 8081);
    wait_served(&server, "web", &["127.0.0.2"]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_tsig_original_id_is_not_its_header_id_gets_a_verifiable_answer() {
    // Kea's D2 sends such requests (RFC 8945 allows it: the MAC covers the
    // message with the Original ID in place of the header's ID). The
    // answer's MAC must be computed the same way over its own Original ID,
    // or D2 rejects every answer as BADSIG.
    let server = start_update_server().await;
    for tcp in [false, true] {
        let answer = dnspython(
            server.dns_addr,
            json!({
                "key": ADMIN.json(),
                "tcp": tcp,
                "original_id": 4097,
                "updates": [
                    ["add", "web-1.web", 60, "A", "127.0.0.2"],
                    ["add", "_web._tcp", 60, "SRV", "0 0 8081 web-1.web.service.local."],
                ],
            }),
        )
        .await;
        assert_eq!(answer.rcode, "NOERROR", "tcp {tcp}: {:?}", answer.raw);
        assert_eq!(
            answer.mac_ok,
            Some(true),
            "tcp {tcp}: the answer's MAC verifies: {:?}",
            answer.raw
        );
    }
    wait_served(&server, "web", &["127.0.0.2"]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_registered_through_the_api_keeps_its_checks_and_their_status() {
    let server = start_update_server().await;
    let target = TcpTarget::open().await;
    common::register(
        &server,
        "web",
        "web-1",
        "127.0.0.2",
        common::targets::tcp_check(target.addr, json!({})),
    )
    .await;
    let before = wait_check(&server, "web", "web-1", "passing", "success").await;
    let check_id = before["checks"][0]["id"].clone();

    // Move it and give it metadata by DNS UPDATE, declaring no check.
    Tool::Nsupdate
        .run(
            &ADMIN,
            Transport::Tcp,
            server.dns_addr,
            r#"
update delete web-1.web.service.local. A
update add web-1.web.service.local. 60 A 127.0.0.3
update add web-1.web.service.local. 60 TXT "owner=dns"
"#,
        )
        .await
        .assert_ok();
    let body = instance(&server, "web", "web-1").await;
    assert_eq!(body["address"], "127.0.0.3", "{body}");
    assert_eq!(body["port"], 8080, "the API's port stays: {body}");
    assert_eq!(body["meta"]["owner"], "dns", "{body}");
    let checks = body["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 1, "{body}");
    assert_eq!(checks[0]["id"], check_id, "the same check: {body}");
    assert_eq!(checks[0]["type"], "tcp", "{body}");
    assert_eq!(
        checks[0]["status"], "passing",
        "the check keeps its status instead of starting over: {body}"
    );
    wait_served(&server, "web", &["127.0.0.3"]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_srv_record_tags_an_instance_and_its_deletion_untags_it() {
    let server = start_update_server().await;
    let dns = server.dns_addr;
    Tool::Knsupdate
        .run(
            &ADMIN,
            Transport::Udp,
            dns,
            r"
update add web-1.web.service.local. 60 A 127.0.0.2
update add _web._tcp.service.local. 60 SRV 1 5 8081 web-1.web.service.local.
update add _web._primary.service.local. 60 SRV 1 5 8081 web-1.web.service.local.
update add web-2.web.service.local. 60 AAAA ::1
update add _web._tcp.service.local. 60 SRV 1 5 8082 web-2.web.service.local.
",
        )
        .await
        .assert_ok();
    let one = instance(&server, "web", "web-1").await;
    assert_eq!(one["tags"], json!(["primary"]), "{one}");
    assert_eq!(one["priority"], 1, "{one}");
    assert_eq!(one["weight"], 5, "{one}");
    let two = instance(&server, "web", "web-2").await;
    assert_eq!(two["address"], "::1", "{two}");
    assert_eq!(two["tags"], json!([]), "{two}");
    wait_served(&server, "web", &["127.0.0.2", "::1"]).await;
    assert_eq!(
        srv_targets(&server, "_web._primary.service.local").await,
        vec![("web-1.web.service.local.".to_owned(), 8081)]
    );
    assert_eq!(
        srv_targets(&server, "_web._tcp.service.local").await,
        vec![
            ("web-1.web.service.local.".to_owned(), 8081),
            ("web-2.web.service.local.".to_owned(), 8082),
        ]
    );

    Tool::Nsupdate
        .run(
            &ADMIN,
            Transport::Udp,
            dns,
            "update delete _web._primary.service.local. SRV",
        )
        .await
        .assert_ok();
    let one = instance(&server, "web", "web-1").await;
    assert_eq!(one["tags"], json!([]), "{one}");
    assert_eq!(one["port"], 8081, "{one}");
    assert!(
        srv_targets(&server, "_web._primary.service.local")
            .await
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_update_survives_kill_9() {
    // roster as a process, configured by ./config.toml as a user runs it:
    // an update answered NOERROR is durable, so a crash right after the
    // answer loses nothing.
    let site = common::process::Site::new();
    std::fs::write(site.root.path().join("config.toml"), update_toml()).expect("write config.toml");
    let mut roster = site.start().await;
    Tool::Nsupdate
        .run(
            &ADMIN,
            Transport::Udp,
            roster.dns,
            r"
update add web-1.web.service.local. 60 A 127.0.0.2
update add _web._tcp.service.local. 60 SRV 0 0 8081 web-1.web.service.local.
",
        )
        .await
        .assert_ok();
    roster.crash().await;

    let roster = site.start().await;
    let client = common::http_client();
    let body = common::get_ok(&client, &roster.url("/v1/services/web/instances/web-1")).await;
    assert_eq!(body["address"], "127.0.0.2", "{body}");
    assert_eq!(body["port"], 8081, "{body}");
    drop(roster);
}
