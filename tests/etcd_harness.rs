//! The real-etcd harness (`common::etcd`) itself, before cluster-mode tests
//! rely on it: a 3-member cluster replicates, elects a new leader when its
//! leader is killed, lets a restarted member catch up and survives a
//! restart of every member; compaction and revisions do what the
//! compaction tests will assume.
//!
//! Needs Debian's etcd 3.4 (`.ci/run` installs it).

mod common;

use std::time::Duration;

use common::etcd::{EtcdCluster, LEADER_LIMIT, eventually_sync};

/// How long a write may take to show on a follower; a hang guard only.
const REPLICATION_LIMIT: Duration = Duration::from_secs(10);

/// `(key, value)` pairs as `get_prefix` returns them.
fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Polls until member `member` alone has exactly `expected` under `prefix`.
fn until_member_has(
    etcd: &EtcdCluster,
    member: usize,
    prefix: &str,
    expected: &[(String, String)],
) {
    eventually_sync(
        &format!("m{member} has {expected:?}"),
        REPLICATION_LIMIT,
        || {
            let got = etcd.get_prefix_on(member, prefix)?;
            if got == expected {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    );
}

#[test]
fn three_members_replicate_fail_over_and_catch_up() {
    let mut etcd = EtcdCluster::start(3);
    let urls = etcd.client_urls();
    assert_eq!(urls.len(), 3);
    assert_eq!(etcd.endpoints_arg(), urls.join(","));
    assert!((0..3).all(|member| etcd.is_running(member)));

    // A write through member 0 reaches the other two. The value starts
    // with '-' and has spaces and non-ASCII, which etcdctl must take as is.
    etcd.put_on(0, "/harness/a", "-1 é")
        .expect("put through m0");
    let first = pairs(&[("/harness/a", "-1 é")]);
    for member in 1..3 {
        until_member_has(&etcd, member, "/harness/", &first);
    }

    // Without its leader, the other two elect a new one and take writes.
    let old = etcd.leader();
    etcd.kill(old);
    assert!(!etcd.is_running(old));
    let survivor = (old + 1) % 3;
    eventually_sync("a write after the leader died", LEADER_LIMIT, || {
        etcd.put_on(survivor, "/harness/b", "2")
    });
    let new = etcd.leader();
    assert_ne!(new, old, "a killed member is still the leader");
    let both = pairs(&[("/harness/a", "-1 é"), ("/harness/b", "2")]);
    assert_eq!(etcd.get_prefix("/harness/"), both);

    // The killed member comes back and applies what it missed.
    etcd.restart(old);
    assert!(etcd.is_running(old));
    until_member_has(&etcd, old, "/harness/", &both);

    // A whole-cluster crash loses nothing acknowledged.
    etcd.kill_all();
    assert!((0..3).all(|member| !etcd.is_running(member)));
    etcd.restart_all();
    assert_eq!(etcd.get_prefix("/harness/"), both);
    etcd.put("/harness/c", "3");
    assert_eq!(etcd.get_prefix("/harness/c").len(), 1);
}

#[test]
fn one_member_counts_revisions_and_compacts() {
    let etcd = EtcdCluster::start(1);
    assert_eq!(etcd.get_prefix("/"), pairs(&[]));
    etcd.put("/k", "1");
    let first = etcd.revision();
    etcd.put("/k", "2");
    let second = etcd.revision();
    assert_eq!(second, first + 1);

    etcd.compact(second);
    // History before the compacted revision is gone; the present is not.
    let error = etcd
        .etcdctl(&["get", &format!("--rev={first}"), "--", "/k"])
        .expect_err("a read of a compacted revision");
    assert!(error.contains("compacted"), "{error}");
    assert_eq!(etcd.get_prefix("/k"), pairs(&[("/k", "2")]));
    assert_eq!(etcd.revision(), second);
}
