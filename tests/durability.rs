//! Durability under crashes and signals, on the real binary: a restart keeps
//! every registration, `kill -9` in the middle of writes loses nothing that
//! was acknowledged and half-applies nothing, SIGTERM finishes cleanly, a
//! second roster cannot share a data directory, and a corrupt or damaged
//! store stops start-up without being touched.
//!
//! Each test runs `roster serve` as a child process on ephemeral ports
//! (`common::process`), since crashes and signals are what is under test.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    get_ok, http_client,
    load::*,
    process::{STOP_LIMIT, Site},
    put, served_addresses, soa_serial,
};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use serde_json::json;
use tokio::time::{Instant, sleep};

#[tokio::test]
async fn a_restart_keeps_registrations_answers_and_the_index() {
    let site = Site::new();
    let client = http_client();
    let mut roster = site.start().await;
    populate(&client, &roster).await;
    // Health changes move the index too, though they are not stored: a
    // flapping check takes it well past the last stored value.
    for status in ["warning", "passing"].repeat(15) {
        put(
            &client,
            &roster.url("/v1/services/web/instances/web-2/heartbeat"),
            json!({ "status": status }),
        )
        .await;
    }

    let services = ["web", "api"];
    let before = list_instances(&client, &roster, &services).await;
    let listing_before = get_ok(&client, &roster.url("/v1/services")).await;
    let answers_before = dns_answers(roster.dns).await;
    let serial_before = soa_serial(roster.dns).await;
    assert!(
        answers_before[0].answers.len() == 2,
        "web A before: {:?}",
        answers_before[0]
    );
    let status = roster.stop().await;
    assert!(status.success(), "SIGTERM: {status}\n{}", roster.stderr());

    let roster = site.start().await;
    let after = list_instances(&client, &roster, &services).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "instance IDs"
    );
    // Index regressions are gathered and reported last, so that one run
    // shows every one of them after the rest has been checked.
    let mut index_problems = Vec::new();
    for (id, view) in &before {
        let restored = &after[id];
        assert_eq!(durable_view(restored), durable_view(view), "{id}");
        // Checks come back critical until checked or heartbeated.
        for check in restored["checks"].as_array().expect("checks") {
            assert_eq!(check["status"], "critical", "{id}: {check}");
        }
        if restored["create_index"] != view["create_index"] {
            index_problems.push(format!(
                "{id}: create_index changed from {} to {}",
                view["create_index"], restored["create_index"]
            ));
        }
        let (old, new) = (
            view["modify_index"].as_u64().expect("index"),
            restored["modify_index"].as_u64().expect("index"),
        );
        if new < old {
            index_problems.push(format!("{id}: modify_index went back from {old} to {new}"));
        }
    }
    // The index as loaded, before any check can move it (a check result
    // soon after start-up would hide a regression from the SOA serial).
    let loaded = roster
        .log
        .lock()
        .expect("log")
        .iter()
        .find(|line| line.contains("registry loaded"))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("index="))
                .and_then(|index| index.parse::<u64>().ok())
        })
        .unwrap_or_else(|| panic!("no index in a 'registry loaded' line:\n{}", roster.stderr()));
    if loaded < serial_before {
        index_problems.push(format!(
            "the registry index went back from {serial_before} to {loaded} (loaded from the store)"
        ));
    }
    let serial_after = soa_serial(roster.dns).await;
    if serial_after < serial_before {
        index_problems.push(format!(
            "the SOA serial (registry index) went back from {serial_before} to {serial_after}"
        ));
    }
    // web-2 is critical until its service reports again.
    let web = served_addresses(roster.dns, "web").await;
    assert_eq!(web, BTreeSet::from(["10.0.0.1".to_owned()]));

    heartbeat_passing(&client, &roster, "web", "web-2").await;
    assert_eq!(
        get_ok(&client, &roster.url("/v1/services")).await,
        listing_before
    );
    assert_eq!(dns_answers(roster.dns).await, answers_before);
    assert!(soa_serial(roster.dns).await > serial_after);
    assert!(
        index_problems.is_empty(),
        "the index went back across a restart:\n{}",
        index_problems.join("\n")
    );
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write_and_half_applies_none() {
    const TASKS: usize = 8;
    const MAX_CYCLES: usize = 12;
    let overall = Instant::now() + Duration::from_secs(60);
    let site = Site::new();
    let seed: u64 = rand::rng().random();
    let mut rng = SmallRng::seed_from_u64(seed);
    let context = |cycle: usize| format!("seed {seed}, cycle {cycle}");
    let mut slots = load_slots(TASKS, 12);
    let mut max_index = 0;
    let mut cycles = 0;
    let mut total_acknowledged = 0;
    let mut in_doubt = 0;
    let mut applied_in_doubt = 0;
    loop {
        let mut roster = site.start().await;
        if cycles > 0 {
            // The store opened cleanly after the crash: check what it holds.
            let flat = slots.into_iter().flatten().collect();
            let settled = check_slots(
                &roster,
                flat,
                max_index,
                InDoubt::EitherWay,
                &context(cycles),
            )
            .await;
            applied_in_doubt += settled.applied_in_doubt;
            slots = by_task(settled.slots, TASKS);
        }
        if cycles >= MAX_CYCLES || Instant::now() >= overall {
            break;
        }
        let delay = Duration::from_millis(rng.random_range(50..=500));
        let tasks = start_load(roster.http, slots, seed.wrapping_add(cycles as u64));
        sleep(delay).await;
        roster.crash().await;
        let report = finish_load(tasks).await;
        assert!(
            report.refusals.is_empty(),
            "{}: {:?}",
            context(cycles),
            report.refusals
        );
        in_doubt += report.slots.iter().filter(|s| s.pending.is_some()).count();
        total_acknowledged += report.acknowledged;
        max_index = max_index.max(report.max_index);
        let flat = report.slots;
        slots = by_task(flat, TASKS);
        cycles += 1;
    }
    eprintln!(
        "kill -9: {cycles} cycles, {total_acknowledged} acknowledged writes, \
         {in_doubt} in flight at a crash of which {applied_in_doubt} had been \
         applied (seed {seed})"
    );
    assert!(cycles >= 3, "only {cycles} cycles ran in the time limit");
    assert!(total_acknowledged > 0, "no write was acknowledged");
}

#[tokio::test]
async fn sigterm_with_requests_in_flight_exits_cleanly_and_keeps_them() {
    const TASKS: usize = 8;
    let site = Site::new();
    let mut roster = site.start().await;
    let seed: u64 = rand::rng().random();
    let tasks = start_load(roster.http, load_slots(TASKS, 8), seed);
    sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = roster.stop().await;
    let took = started.elapsed();
    let report = finish_load(tasks).await;
    assert!(status.success(), "SIGTERM: {status}\n{}", roster.stderr());
    assert!(took < STOP_LIMIT, "took {took:?}");
    assert!(
        roster.stderr().contains("stopped"),
        "no clean stop logged:\n{}",
        roster.stderr()
    );
    assert!(
        report.refusals.is_empty(),
        "seed {seed}: {:?}",
        report.refusals
    );
    assert!(report.acknowledged > 0, "no write was acknowledged");
    let roster = site.start().await;
    check_slots(
        &roster,
        report.slots,
        report.max_index,
        InDoubt::NotApplied,
        &format!("seed {seed}"),
    )
    .await;
}

#[tokio::test]
async fn a_second_roster_on_the_same_data_dir_is_refused() {
    let site = Site::new();
    let client = http_client();
    let first = site.start().await;
    put(
        &client,
        &first.url("/v1/services/web/instances/web-1"),
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;

    let exited = site
        .start_must_fail("a second time on the same data dir")
        .await;
    assert!(
        exited.stderr.contains("another roster"),
        "the message should say the directory is in use:\n{}",
        exited.stderr
    );

    // The first one still serves reads and writes.
    put(
        &client,
        &first.url("/v1/services/web/instances/web-2"),
        json!({"address": "10.0.0.2", "port": 80}),
    )
    .await;
    assert_eq!(
        served_addresses(first.dns, "web").await,
        BTreeSet::from(["10.0.0.1".to_owned(), "10.0.0.2".to_owned()])
    );
}

#[tokio::test]
async fn a_corrupt_store_stops_start_up_and_is_left_alone() {
    let site = Site::new();
    std::fs::create_dir_all(site.data_dir()).expect("data dir");
    let garbage: Vec<u8> = b"this is not a redb file \x00\xff\x13"
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    std::fs::write(site.store_file(), &garbage).expect("write garbage");

    let exited = site.start_must_fail("on a corrupt store").await;
    assert!(
        exited.stderr.contains("roster.redb"),
        "the message should name the file:\n{}",
        exited.stderr
    );
    assert_eq!(
        std::fs::read(site.store_file()).expect("read store"),
        garbage,
        "the corrupt file was changed"
    );
}

/// Damage inside a real store, the kind a bad disk or a stray write leaves:
/// start-up must stop as it does for garbage, with a message that names the
/// file and says what to do, without a panic, and without writing to the
/// file (it is the evidence, and the only copy).
#[tokio::test]
async fn a_damaged_store_stops_start_up_with_a_clear_message() {
    let site = Site::new();
    let client = http_client();
    let mut roster = site.start().await;
    for n in 0..20 {
        put(
            &client,
            &roster.url(&format!("/v1/services/web/instances/web-{n}")),
            json!({"address": format!("10.0.0.{}", n + 1), "port": 80}),
        )
        .await;
    }
    let status = roster.stop().await;
    assert!(status.success(), "SIGTERM: {status}");
    let intact = std::fs::read(site.store_file()).expect("read store");
    // Records are stored as JSON: find them, and the pages that hold them.
    // redb copies a page to change it, so the file also holds stale copies
    // in freed pages, anywhere: every copy is damaged, so that the live one
    // surely is (damaging only the first hit broke whenever the page layout
    // moved the live one after a stale one).
    let records: Vec<usize> = intact
        .windows(11)
        .enumerate()
        .filter(|(_, w)| *w == b"\"service\":\"")
        .map(|(offset, _)| offset)
        .collect();
    assert!(!records.is_empty(), "no JSON record in the store file");
    let pages: BTreeSet<usize> = records.iter().map(|r| r - r % 4096).collect();
    let damages: [(&str, Vec<usize>, &[u8]); 2] = [
        ("an unreadable record", records, b"\xff\xfe\xfd"),
        (
            "a damaged page header",
            pages.into_iter().collect(),
            &[0xff; 8],
        ),
    ];
    let mut problems = Vec::new();
    for (what, offsets, bytes) in damages {
        let mut damaged = intact.clone();
        for offset in offsets {
            damaged[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        std::fs::write(site.store_file(), &damaged).expect("write damaged store");
        let exited = match site.try_start().await {
            Ok(roster) => {
                problems.push(format!("{what}: roster started:\n{}", roster.stderr()));
                continue;
            }
            Err(exited) => exited,
        };
        let message = exited
            .stderr
            .lines()
            .filter(|line| line.contains("error"))
            .collect::<Vec<_>>()
            .join("\n");
        if exited.status.success() {
            problems.push(format!("{what}: exited with {}", exited.status));
        }
        if !message.contains("roster.redb") {
            problems.push(format!(
                "{what}: the message does not name the file: {message}"
            ));
        }
        if !message.contains("roster import") {
            problems.push(format!(
                "{what}: the message does not say what to do: {message}"
            ));
        }
        if exited.stderr.contains("panicked") {
            problems.push(format!("{what}: roster panicked: {message}"));
        }
        if std::fs::read(site.store_file()).expect("read store") != damaged {
            problems.push(format!("{what}: the damaged file was written to"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
