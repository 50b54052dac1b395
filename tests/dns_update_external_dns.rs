//! external-dns's `rfc2136` provider, replayed with dnspython
//! (`tests/dns_update/send.py`) in the shapes it sends: over TCP, signed,
//! records added with class IN (miekg/dns `Insert`) and removed with class
//! NONE and the record's value (`Remove`), the TTL it was configured with.
//! external-dns names a service (`web.service.local A`), which roster makes
//! into one instance per address on the default port.
//!
//! Run with `--registry=noop` and without AXFR (roster answers none),
//! external-dns sees no records and re-sends its creates every interval:
//! that must change nothing. With its default TXT registry it adds
//! ownership TXT records at `<name>` and `a-<name>` in the same message:
//! roster keeps no TXT outside instances, so that update is REFUSED whole
//! and nothing changes.

mod common;

use std::collections::BTreeSet;

use serde_json::{Value, json};

use common::{
    Server, served_addresses,
    update::{ADMIN, DEFAULT_PORT, dnspython, snapshot, start_update_server},
    wait_served,
};

/// external-dns's update: TCP, signed with [`ADMIN`].
fn external_dns(updates: Value) -> Value {
    json!({ "key": ADMIN.json(), "tcp": true, "updates": updates })
}

/// Sends `updates` the way external-dns does, asserting a signed `rcode`.
async fn send(server: &Server, updates: Value, rcode: &str) {
    let answer = dnspython(server.dns_addr, external_dns(updates.clone())).await;
    assert_eq!(answer.rcode, rcode, "{updates}: {:?}", answer.raw);
    assert_eq!(
        answer.mac_ok,
        Some(true),
        "the answer is signed: {:?}",
        answer.raw
    );
}

/// The addresses of `service`'s instances, from the HTTP API, each
/// asserted to be on the default port.
async fn registered(server: &Server, service: &str) -> BTreeSet<String> {
    let all = snapshot(server).await;
    all[service]
        .as_array()
        .into_iter()
        .flatten()
        .map(|instance| {
            assert_eq!(instance["port"], DEFAULT_PORT, "{instance}");
            instance["address"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn external_dns_creates_updates_and_deletes_with_the_noop_registry() {
    let server = start_update_server().await;
    let creates = json!([
        ["add", "web", 300, "A", "127.0.0.2"],
        ["add", "web", 300, "A", "127.0.0.3"],
    ]);
    send(&server, creates.clone(), "NOERROR").await;
    assert_eq!(
        registered(&server, "web").await,
        set(&["127.0.0.2", "127.0.0.3"])
    );
    wait_served(&server, "web", &["127.0.0.2", "127.0.0.3"]).await;

    // The next interval: the same creates again, nothing changes.
    let before = snapshot(&server).await;
    send(&server, creates, "NOERROR").await;
    assert_eq!(
        snapshot(&server).await,
        before,
        "a re-sent create changed the registry"
    );

    // An endpoint's targets changed: UpdateOld removed, UpdateNew inserted,
    // in one message.
    send(
        &server,
        json!([
            ["delete", "web", "A", "127.0.0.3"],
            ["add", "web", 300, "A", "127.0.0.4"],
        ]),
        "NOERROR",
    )
    .await;
    assert_eq!(
        registered(&server, "web").await,
        set(&["127.0.0.2", "127.0.0.4"])
    );
    wait_served(&server, "web", &["127.0.0.2", "127.0.0.4"]).await;

    // The endpoint is gone: each target removed with class NONE.
    send(
        &server,
        json!([
            ["delete", "web", "A", "127.0.0.2"],
            ["delete", "web", "A", "127.0.0.4"],
        ]),
        "NOERROR",
    )
    .await;
    assert_eq!(registered(&server, "web").await, set(&[]));
    wait_served(&server, "web", &[]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn external_dns_txt_ownership_records_are_refused_whole() {
    let server = start_update_server().await;
    // Something already there, which the refused updates must not touch.
    send(
        &server,
        json!([["add", "web", 300, "A", "127.0.0.2"]]),
        "NOERROR",
    )
    .await;
    let before = snapshot(&server).await;

    let owner = "\"heritage=external-dns,external-dns/owner=default,external-dns/resource=service/default/api\"";
    for updates in [
        // The TXT registry's create: the record and both ownership TXTs.
        json!([
            ["add", "api", 300, "A", "127.0.0.6"],
            ["add", "api", 300, "TXT", owner],
            ["add", "a-api", 300, "TXT", owner],
        ]),
        // An ownership TXT alone, at a name that is a service's.
        json!([["add", "web", 300, "TXT", owner]]),
        // And at the prefixed name alone.
        json!([["add", "a-web", 300, "TXT", owner]]),
    ] {
        send(&server, updates.clone(), "REFUSED").await;
        assert_eq!(
            snapshot(&server).await,
            before,
            "a refused update changed the registry: {updates}"
        );
    }
    assert_eq!(served_addresses(server.dns_addr, "api").await, set(&[]));
    wait_served(&server, "web", &["127.0.0.2"]).await;
    server.stop().await;
}
