//! Membership: each node keeps a key under `members/` alive on its own
//! etcd lease. When a node dies its lease expires, etcd deletes its key,
//! and every node's feed sees it leave; the checks it ran move to the
//! survivors by rendezvous hashing ([`owner`]), which every node computes
//! alike from the same member list.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::PutOptions;
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::Metrics;
use tracing::{info, warn};

use super::{etcd::Etcd, keys::MemberRecord};

/// The lease's time to live: how long a dead node's checks go unchecked
/// before they move.
pub const LEASE_TTL_SECS: i64 = 5;
/// How often the lease is renewed: three tries before it would expire.
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(1500);

/// The live members, by node name, as the feed last showed them.
pub type Members = Arc<BTreeMap<String, MemberRecord>>;

/// The live member that runs the check `check_id` of instance `id`: the one
/// with the highest hash of (member, instance, check). A member leaving
/// moves only its own checks; one joining takes an even share.
pub fn owner<'a>(
    members: &'a BTreeMap<String, MemberRecord>,
    id: &str,
    check_id: &str,
) -> Option<&'a str> {
    members
        .keys()
        .max_by_key(|node| score(node, id, check_id))
        .map(String::as_str)
}

/// FNV-1a over the three names, separated, then a final mix: stable across
/// builds and platforms, unlike std's hasher, so every node agrees.
fn score(node: &str, id: &str, check_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [node, id, check_id] {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // splitmix64's finaliser: FNV's low bits alone spread poorly.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Keeps this node's member key alive until the task is aborted; re-creates
/// lease and key whenever they lapse (etcd was away longer than the TTL).
/// The record's check count is republished when the node's count moves.
pub async fn keep_alive(etcd: Etcd, key: String, mut record: MemberRecord, metrics: Arc<Metrics>) {
    let mut announced = false;
    loop {
        record.checks = metrics.checks_owned.load(Relaxed);
        let Err(error) = hold(&etcd, &key, &mut record, &metrics, &mut announced).await;
        if announced {
            warn!(%error, "this node's cluster membership lapsed; joining again");
            announced = false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn hold(
    etcd: &Etcd,
    key: &str,
    record: &mut MemberRecord,
    metrics: &Metrics,
    announced: &mut bool,
) -> Result<std::convert::Infallible, String> {
    let (which, client) = etcd.client().await;
    // Whatever fails here, the next attempt starts on another endpoint.
    let failed = |error: String| {
        etcd.failed(which);
        error
    };
    let mut client = client.map_err(|e| failed(etcd.describe(&e)))?;
    let bounded = super::etcd::REQUEST_TIMEOUT;
    let lease = tokio::time::timeout(bounded, client.lease_grant(LEASE_TTL_SECS, None))
        .await
        .map_err(|_| failed("no answer to the lease grant".to_owned()))?
        .map_err(|e| failed(etcd.describe(&e)))?
        .id();
    let putter = client.clone();
    let put = |record: &MemberRecord| {
        let mut client = putter.clone();
        let value = serde_json::to_vec(record).unwrap_or_default();
        let key = key.to_owned();
        async move {
            tokio::time::timeout(
                bounded,
                client.put(key, value, Some(PutOptions::new().with_lease(lease))),
            )
            .await
            .map_err(|_| "no answer to the member put".to_owned())?
            .map_err(|e| e.to_string())
            .map(|_| ())
        }
    };
    put(record).await.map_err(failed)?;
    if !*announced {
        info!(node = %record.name, lease_ttl_s = LEASE_TTL_SECS, "joined the cluster");
        *announced = true;
    }
    let (mut keeper, mut responses) = tokio::time::timeout(bounded, client.lease_keep_alive(lease))
        .await
        .map_err(|_| "no answer to the lease keep-alive".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
    loop {
        tick.tick().await;
        keeper
            .keep_alive()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let answer = tokio::time::timeout(bounded, responses.message())
            .await
            .map_err(|_| failed("no answer to a lease keep-alive".to_owned()))?
            .map_err(|e| failed(e.to_string()))?;
        match answer {
            Some(answer) if answer.ttl() > 0 => {}
            _ => return Err("the lease expired".into()),
        }
        let checks = metrics.checks_owned.load(Relaxed);
        if checks != record.checks {
            record.checks = checks;
            put(record).await.map_err(failed)?;
        }
    }
}

/// Gives this node's lease up at shutdown, so its checks move at once
/// instead of after the TTL. Best effort, bounded.
pub async fn leave(etcd: &Etcd, key: &str) {
    let signed_in = tokio::time::timeout(Duration::from_secs(1), etcd.client()).await;
    let Ok((_, Ok(mut client))) = signed_in else {
        return;
    };
    let found = tokio::time::timeout(Duration::from_secs(1), client.get(key, None)).await;
    let Ok(Ok(found)) = found else { return };
    if let Some(lease) = found.kvs().first().map(|kv| kv.lease()).filter(|l| *l != 0) {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeMap<String, MemberRecord> {
        names
            .iter()
            .map(|n| {
                let record = MemberRecord {
                    name: (*n).into(),
                    http: String::new(),
                    dns: String::new(),
                    checks: 0,
                };
                ((*n).to_owned(), record)
            })
            .collect()
    }

    #[test]
    fn every_check_has_one_owner_and_a_leaving_member_moves_only_its_own() {
        let three = members(&["n1", "n2", "n3"]);
        let two = members(&["n1", "n3"]);
        let mut owned = BTreeMap::<&str, usize>::new();
        for i in 0..3000 {
            let id = format!("web-{i}");
            let before = owner(&three, &id, "c").expect("an owner");
            *owned.entry(before).or_default() += 1;
            let after = owner(&two, &id, "c").expect("an owner");
            if before != "n2" {
                assert_eq!(before, after, "{id} moved though its owner stayed");
            }
        }
        // An even share each, give or take.
        for (node, count) in owned {
            assert!((800..1200).contains(&count), "{node} owns {count} of 3000");
        }
        assert_eq!(owner(&BTreeMap::new(), "a", "b"), None);
    }
}
