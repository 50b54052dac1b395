//! Cluster mode end to end (#13): three `roster` processes on a real
//! three-member etcd cluster, written through any node and read through
//! every node, while etcd members, the etcd leader, all of etcd or a roster
//! node die.
//!
//! Every wait is bounded (`eventually`, client timeouts); the limits are
//! hang guards, not timing assertions. Needs Debian's etcd 3.4 (`.ci/run`
//! installs it). Every instance with a health check is on a loopback
//! address.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::atomic::{AtomicUsize, Ordering::SeqCst},
    time::Duration,
};

use common::{
    cluster::{CONVERGE_LIMIT, Node, RosterCluster, blocking, instance_path, send},
    dns::{dns_answer, served_addresses},
    etcd::{EtcdCluster, EtcdTls},
    poll::eventually,
    targets::{HttpTarget, Respond},
    tls::Pki,
    update::{ADMIN, Tool, Transport, update_toml},
};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

/// How long a write may be retried while etcd elects a leader or comes
/// back: a hang guard.
const RETRY_LIMIT: Duration = Duration::from_secs(30);

/// An instance body at `address:port` with no check.
fn plain(address: &str, port: u16) -> Value {
    json!({ "address": address, "port": port })
}

/// The ports SRV `_<service>._tcp` answers on node `node`, sorted.
async fn srv_ports(cluster: &RosterCluster, node: usize, service: &str) -> Vec<String> {
    let answer = dns_answer(
        cluster.nodes[node].roster.dns,
        &format!("_{service}._tcp.service.local."),
        RecordType::SRV,
    )
    .await;
    answer.answers
}

/// Writes through `node`, retrying 503s and transport errors (etcd away
/// or electing) for up to [`RETRY_LIMIT`]; the final 2xx reply's body.
async fn write_retrying(
    http: &reqwest::Client,
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let deadline = Instant::now() + RETRY_LIMIT;
    loop {
        let mut request = http.request(method.clone(), node.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let last = match send(request).await {
            Ok(reply) if (200..300).contains(&reply.status) => return reply.body,
            Ok(reply) if reply.status == 503 => format!("{reply:?}"),
            Ok(reply) => panic!("{method} {path} on {}: {reply:?}", node.name),
            Err(error) => error,
        };
        assert!(
            Instant::now() < deadline,
            "{method} {path} on {} not accepted within {RETRY_LIMIT:?}: {last}",
            node.name
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// `PUT` through [`write_retrying`].
async fn put_retrying(http: &reqwest::Client, node: &Node, path: &str, body: &Value) -> Value {
    write_retrying(http, node, reqwest::Method::PUT, path, Some(body)).await
}

/// The `(service, port)` of each instance in an export, by ID.
/// `service` has the one instance `address` at `port`: at once in the DNS
/// of node 0, which acknowledged the write (read-your-writes), and, once
/// etcd's feed brings it, on every node, its SRV included.
async fn served_at_once_then_everywhere(
    cluster: &RosterCluster,
    service: &str,
    address: &str,
    port: u16,
) {
    assert_eq!(
        served_addresses(cluster.nodes[0].roster.dns, service).await,
        BTreeSet::from([address.to_owned()])
    );
    for node in cluster.all() {
        cluster.wait_dns(node, service, &[address]).await;
        let srv = srv_ports(cluster, node, service).await;
        assert_eq!(srv.len(), 1, "node {node}: {srv:?}");
        assert!(
            srv[0].contains(&format!(" {port} ")),
            "node {node}: {srv:?}"
        );
    }
}

fn by_id(export: &[Value]) -> BTreeMap<String, (String, u64)> {
    export
        .iter()
        .map(|i| {
            (
                i["id"].as_str().expect("id").to_owned(),
                (
                    i["service"].as_str().expect("service").to_owned(),
                    i["port"].as_u64().expect("port"),
                ),
            )
        })
        .collect()
}

// 1 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_node_answers_in_dns_on_every_node() {
    let cluster = RosterCluster::start(3).await;
    // `start` waited until every node lists all three; check the records.
    for node in cluster.all() {
        let members = cluster.get(node, "/v1/cluster/members").await;
        let list = members.body.as_array().expect("members array").clone();
        assert_eq!(list.len(), 3, "node {node}: {members:?}");
        for member in &list {
            for field in ["name", "http", "dns"] {
                assert!(member[field].is_string(), "node {node}: {member}");
            }
        }
    }

    cluster
        .register_ok(0, "web", "web-1", &plain("127.0.0.2", 8080))
        .await;
    served_at_once_then_everywhere(&cluster, "web", "127.0.0.2", 8080).await;

    cluster.deregister_ok(1, "web", "web-1").await;
    for node in cluster.all() {
        cluster.wait_dns(node, "web", &[]).await;
        eventually(
            &format!("node {node}: no SRV for web"),
            CONVERGE_LIMIT,
            || async { srv_ports(&cluster, node, "web").await.is_empty() },
        )
        .await;
    }
}

// 2 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_rules_hold_for_concurrent_writes_through_two_nodes() {
    let cluster = RosterCluster::start(3).await;

    // One ID, two services, two nodes, at the same time.
    let (to_alpha, to_beta) = (plain("127.0.0.3", 1), plain("127.0.0.4", 2));
    let (alpha, beta) = tokio::join!(
        cluster.register(0, "alpha", "dup-1", &to_alpha),
        cluster.register(1, "beta", "dup-1", &to_beta),
    );
    for reply in [&alpha, &beta] {
        assert!(
            [200, 409].contains(&reply.status),
            "an ID written to two services: {alpha:?} / {beta:?}"
        );
    }
    assert!(
        alpha.status == 200 || beta.status == 200,
        "neither registration won: {alpha:?} / {beta:?}"
    );
    let export = cluster.converged(&cluster.all()).await;
    let dup: Vec<&Value> = export.iter().filter(|i| i["id"] == "dup-1").collect();
    assert_eq!(dup.len(), 1, "{export:?}");
    let winner = dup[0]["service"].as_str().expect("service").to_owned();
    if alpha.status != beta.status {
        let expected = if alpha.status == 200 { "alpha" } else { "beta" };
        assert_eq!(winner, expected, "{alpha:?} / {beta:?}");
    }
    let (won, lost, address) = if winner == "alpha" {
        ("alpha", "beta", "127.0.0.3")
    } else {
        ("beta", "alpha", "127.0.0.4")
    };
    for node in cluster.all() {
        cluster.wait_dns(node, won, &[address]).await;
        cluster.wait_dns(node, lost, &[]).await;
    }

    // Two names for one DNS label, at the same time.
    let (site_a, site_b) = (plain("127.0.0.5", 80), plain("127.0.0.6", 80));
    let (spaced, dashed) = tokio::join!(
        cluster.register(1, "Web Site", "site-a", &site_a),
        cluster.register(2, "web-site", "site-b", &site_b),
    );
    let mut statuses = [spaced.status, dashed.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 409],
        "two names of one label: {spaced:?} / {dashed:?}"
    );
    let (name, id, address) = if spaced.status == 200 {
        ("Web Site", "site-a", "127.0.0.5")
    } else {
        ("web-site", "site-b", "127.0.0.6")
    };
    let export = cluster.converged(&cluster.all()).await;
    let sites: Vec<(String, (String, u64))> = by_id(&export)
        .into_iter()
        .filter(|(id, _)| id.starts_with("site-"))
        .collect();
    assert_eq!(
        sites,
        vec![(id.to_owned(), (name.to_owned(), 80))],
        "{export:?}"
    );
    for node in cluster.all() {
        cluster.wait_dns(node, "web-site", &[address]).await;
    }
}

// 3 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_the_same_ids_end_with_one_acked_value_everywhere() {
    const IDS: u16 = 20;
    const ROUNDS: u16 = 3;
    let cluster = RosterCluster::start(3).await;
    // (id, port) of every acknowledged write.
    let writer = |node: usize| {
        let cluster = &cluster;
        async move {
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                for id in 0..IDS {
                    let port = 10_000 + round * 1000 + node as u16 * 100 + id;
                    let reply = cluster
                        .register(node, "race", &format!("r-{id}"), &plain("127.0.0.7", port))
                        .await;
                    assert_eq!(reply.status, 200, "node {node} r-{id}: {reply:?}");
                    acked.push((format!("r-{id}"), u64::from(port)));
                }
            }
            acked
        }
    };
    let (first, second) = tokio::join!(writer(0), writer(1));
    let acked: BTreeSet<(String, u64)> = first.into_iter().chain(second).collect();

    let export = cluster.converged(&cluster.all()).await;
    let shown = by_id(&export);
    assert_eq!(shown.len(), usize::from(IDS), "{shown:?}");
    for (id, (service, port)) in &shown {
        assert_eq!(service, "race");
        assert!(
            acked.contains(&(id.clone(), *port)),
            "{id} shows port {port}, which no acknowledged write set"
        );
    }
    // Each node's own instance view agrees with its export.
    for node in cluster.all() {
        for (id, (_, port)) in &shown {
            let reply = cluster.get(node, &instance_path("race", id)).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(reply.body["port"].as_u64(), Some(*port), "node {node}");
        }
    }

    // A last sequential write through the third node wins everywhere.
    for id in 0..IDS {
        cluster
            .register_ok(
                2,
                "race",
                &format!("r-{id}"),
                &plain("127.0.0.7", 30_000 + id),
            )
            .await;
    }
    let export = cluster.converged(&cluster.all()).await;
    for (id, (_, port)) in by_id(&export) {
        let n: u64 = id.trim_start_matches("r-").parse().expect("r-N");
        assert_eq!(port, 30_000 + n, "{id}");
    }
}

// 4 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_write_survives_the_etcd_leader_dying_mid_stream() {
    const PER_NODE: usize = 150;
    /// Acknowledged writes before the leader is killed.
    const KILL_AFTER: usize = 60;
    let mut cluster = RosterCluster::start(3).await;
    let acked = AtomicUsize::new(0);
    let acked_at_kill;
    let mut acked_ids: Vec<String> = Vec::new();
    {
        let RosterCluster { nodes, etcd, http } = &mut cluster;
        let (nodes, http, acked) = (&*nodes, &*http, &acked);
        let writer = |node: usize| async move {
            let mut ids = Vec::new();
            for i in 0..PER_NODE {
                let id = format!("s-{node}-{i}");
                let body = plain("127.0.0.8", 1000 + i as u16);
                put_retrying(http, &nodes[node], &instance_path("stream", &id), &body).await;
                ids.push(id);
                acked.fetch_add(1, SeqCst);
            }
            ids
        };
        let killer = async {
            eventually("writes acked before the kill", RETRY_LIMIT, || async {
                acked.load(SeqCst) >= KILL_AFTER
            })
            .await;
            // Finding the leader and SIGKILL: quick, though it holds this
            // worker thread; the writers go on on the other.
            blocking(|| {
                let leader = etcd.leader();
                etcd.kill(leader);
            });
            acked.load(SeqCst)
        };
        let (first, second, at) = tokio::join!(writer(0), writer(1), killer);
        acked_at_kill = at;
        acked_ids.extend(first);
        acked_ids.extend(second);
    }
    assert!(
        acked_at_kill < 2 * PER_NODE,
        "the leader died after the stream ended ({acked_at_kill} acked)"
    );
    assert_eq!(acked_ids.len(), 2 * PER_NODE);

    // Writes succeed again through every node after the election
    // (retried: with one member down some fail, see the report).
    for node in cluster.all() {
        let path = instance_path("after", &format!("a-{node}"));
        put_retrying(
            &cluster.http,
            &cluster.nodes[node],
            &path,
            &plain("127.0.0.9", 1),
        )
        .await;
    }
    let export = cluster.converged(&cluster.all()).await;
    let shown = by_id(&export);
    for id in &acked_ids {
        assert!(shown.contains_key(id), "acknowledged {id} is missing");
    }
    assert_eq!(shown.len(), 2 * PER_NODE + 3);
}

// 5 -------------------------------------------------------------------------

/// The owner of check `c` of instance `id` among `members`, computed as
/// every node computes it.
fn owner_of(members: &[Value], id: &str) -> String {
    let members: BTreeMap<String, roster::cluster::keys::MemberRecord> = members
        .iter()
        .map(|m| {
            let record: roster::cluster::keys::MemberRecord =
                serde_json::from_value(m.clone()).expect("a member record");
            (record.name.clone(), record)
        })
        .collect();
    roster::cluster::members::owner(&members, id, "c")
        .expect("an owner")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_checks_move_and_healthy_instances_stay_in_dns() {
    const INSTANCES: usize = 9;
    let mut cluster = RosterCluster::start(3).await;
    let mut targets = Vec::new();
    for i in 0..INSTANCES {
        let target = HttpTarget::start(Respond::Ok).await;
        let body = json!({
            "address": format!("127.0.0.{}", 10 + i),
            "port": 8080,
            "checks": [{ "id": "c", "http": target.url(), "interval": "200ms", "timeout": "200ms" }],
        });
        cluster
            .register_ok(0, "web", &format!("w-{i}"), &body)
            .await;
        targets.push(target);
    }
    let all: Vec<String> = (0..INSTANCES)
        .map(|i| format!("127.0.0.{}", 10 + i))
        .collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    for node in cluster.all() {
        cluster.wait_dns(node, "web", &all_refs).await;
    }
    // Every check runs somewhere, once.
    eventually(
        "the members' checks to sum to 9",
        CONVERGE_LIMIT,
        || async {
            let members = cluster.members(0).await;
            let sum: u64 = members.values().sum();
            if sum == INSTANCES as u64 {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        },
    )
    .await;
    let members = cluster.get(0, "/v1/cluster/members").await.body;
    let members = members.as_array().expect("members").clone();
    let owners: Vec<String> = (0..INSTANCES)
        .map(|i| owner_of(&members, &format!("w-{i}")))
        .collect();
    // The node that owns the most checks dies.
    let victim_name = ["n1", "n2", "n3"]
        .into_iter()
        .max_by_key(|n| owners.iter().filter(|o| o == n).count())
        .expect("a node");
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.name == victim_name)
        .expect("victim index");
    let moved: Vec<usize> = (0..INSTANCES)
        .filter(|&i| owners[i] == victim_name)
        .collect();
    assert!(!moved.is_empty(), "owners {owners:?}");
    let survivors: Vec<usize> = cluster.all().into_iter().filter(|&n| n != victim).collect();
    let survivor_names: Vec<String> = survivors
        .iter()
        .map(|&n| cluster.nodes[n].name.clone())
        .collect();

    cluster.nodes[victim].roster.crash().await;

    // During the move, every (healthy) instance stays in DNS on the
    // survivors: poll until both list two members whose checks sum to 9.
    let deadline = Instant::now() + CONVERGE_LIMIT;
    let wanted: BTreeSet<String> = all.iter().cloned().collect();
    let mut polls = 0;
    loop {
        for &node in &survivors {
            let served = served_addresses(cluster.nodes[node].roster.dns, "web").await;
            assert_eq!(
                served, wanted,
                "node {node} dropped an instance during the move"
            );
        }
        polls += 1;
        let mut moved_all = true;
        for &node in &survivors {
            let members = cluster.members(node).await;
            let names: Vec<String> = members.keys().cloned().collect();
            let sum: u64 = members.values().sum();
            moved_all &= names == survivor_names && sum == INSTANCES as u64;
        }
        if moved_all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the checks did not move within {CONVERGE_LIMIT:?}: {:?}",
            cluster.members(survivors[0]).await
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert!(polls > 1, "the move was not observed");

    // A backend whose check the dead node ran fails: the survivors probe
    // it now, and it leaves DNS on both.
    let failing = moved[0];
    targets[failing].set(Respond::Fail);
    let remaining: Vec<&str> = all_refs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != failing)
        .map(|(_, a)| *a)
        .collect();
    for &node in &survivors {
        cluster.wait_dns(node, "web", &remaining).await;
    }
}

// 6 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_dns_answers_writes_fail_fast_and_all_converge_after() {
    let mut cluster = RosterCluster::start(3).await;
    cluster
        .register_ok(0, "db", "db-1", &plain("127.0.0.20", 5432))
        .await;
    cluster
        .register_ok(1, "db", "db-2", &plain("127.0.0.21", 5432))
        .await;
    for node in cluster.all() {
        cluster
            .wait_dns(node, "db", &["127.0.0.20", "127.0.0.21"])
            .await;
    }

    blocking(|| cluster.etcd.kill_all());

    let both = BTreeSet::from(["127.0.0.20".to_owned(), "127.0.0.21".to_owned()]);
    for node in cluster.all() {
        assert_eq!(
            served_addresses(cluster.nodes[node].roster.dns, "db").await,
            both,
            "node {node}"
        );
    }
    // A write answers 503 with a JSON error (the client's 15 s timeout
    // fails a hang).
    for node in cluster.all() {
        let reply = cluster
            .try_put(
                node,
                &instance_path("db", "db-3"),
                &plain("127.0.0.22", 5432),
            )
            .await
            .unwrap_or_else(|e| panic!("a write with etcd down on node {node}: {e}"));
        assert_eq!(reply.status, 503, "node {node}: {reply:?}");
        let error = reply.body["error"].as_str().unwrap_or_default();
        assert!(error.contains("etcd"), "node {node}: {reply:?}");
        eventually(
            &format!("node {node} to report cluster_stale"),
            CONVERGE_LIMIT,
            || async {
                let metrics = cluster.get(node, "/v1/metrics").await.body;
                if metrics["cluster_stale"] == true {
                    Ok(())
                } else {
                    Err(format!("cluster_stale = {}", metrics["cluster_stale"]))
                }
            },
        )
        .await;
        // DNS still answers after the failed write.
        assert_eq!(
            served_addresses(cluster.nodes[node].roster.dns, "db").await,
            both,
            "node {node}"
        );
    }

    blocking(|| cluster.etcd.restart_all());
    put_retrying(
        &cluster.http,
        &cluster.nodes[2],
        &instance_path("db", "db-3"),
        &plain("127.0.0.22", 5432),
    )
    .await;
    let path = instance_path("db", "db-1");
    write_retrying(
        &cluster.http,
        &cluster.nodes[0],
        reqwest::Method::DELETE,
        &path,
        None,
    )
    .await;
    let export = cluster.converged(&cluster.all()).await;
    assert_eq!(
        by_id(&export).keys().cloned().collect::<Vec<_>>(),
        ["db-2", "db-3"]
    );
    for node in cluster.all() {
        cluster
            .wait_dns(node, "db", &["127.0.0.21", "127.0.0.22"])
            .await;
        eventually(
            &format!("node {node} to stop reporting cluster_stale"),
            CONVERGE_LIMIT,
            || async { cluster.get(node, "/v1/metrics").await.body["cluster_stale"] == false },
        )
        .await;
    }
}

// 7 -------------------------------------------------------------------------

/// A node started while etcd has no quorum (members still starting, an
/// election) waits for it instead of exiting, and then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_etcd_has_no_quorum_waits_for_it() {
    let mut etcd = blocking(|| EtcdCluster::start(3));
    let endpoints = etcd.endpoints_arg();
    blocking(|| {
        etcd.kill(1);
        etcd.kill(2);
    });
    let site = common::process::Site::new();
    let starting = tokio::spawn(async move {
        let started = site
            .try_start_with(&["--etcd", &endpoints, "--node", "patient"])
            .await;
        (site, started)
    });
    // Long enough for a node that does not wait to have given up.
    sleep(Duration::from_secs(2)).await;
    assert!(!starting.is_finished(), "the node did not wait for etcd");
    blocking(|| {
        etcd.restart(1);
        etcd.restart(2);
    });
    let (_site, started) = starting.await.expect("the start-up task");
    let mut roster = started.unwrap_or_else(|exited| panic!("did not start: {}", exited.stderr));
    let log = roster.log.lock().expect("log").join("\n");
    assert!(log.contains("etcd does not answer yet"), "{log}");
    let reply = send(
        common::cluster::client()
            .put(format!(
                "http://{}{}",
                roster.http,
                instance_path("web", "web-1")
            ))
            .json(&plain("127.0.0.2", 8080)),
    )
    .await
    .expect("PUT");
    assert_eq!(reply.status, 200, "{reply:?}");
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_revision_was_compacted_relists_and_converges() {
    let etcd = blocking(|| EtcdCluster::start(3));
    let endpoints = [
        etcd.client_url(0),
        format!("{},{}", etcd.client_url(1), etcd.client_url(2)),
    ];
    let mut cluster = RosterCluster::on(etcd, &endpoints).await;
    let (a, b) = (0, 1);
    for i in 0..5 {
        cluster
            .register_ok(b, "keep", &format!("k-{i}"), &plain("127.0.0.30", 1000 + i))
            .await;
    }
    cluster.converged(&[a, b]).await;

    // Writes while member 0 is away are retried: its death may cost an
    // election (and see the report on writes with one member down).
    blocking(|| cluster.etcd.kill(0));
    let (http, node_b) = (&cluster.http, &cluster.nodes[b]);
    for i in 0..5 {
        let body = plain("127.0.0.31", 2000 + i);
        put_retrying(
            http,
            node_b,
            &instance_path("new", &format!("n-{i}")),
            &body,
        )
        .await;
    }
    for i in 0..3 {
        let path = instance_path("keep", &format!("k-{i}"));
        write_retrying(http, node_b, reqwest::Method::DELETE, &path, None).await;
    }
    let body = plain("127.0.0.30", 3003);
    put_retrying(http, node_b, &instance_path("keep", "k-3"), &body).await;
    blocking(|| {
        let revision = cluster.etcd.revision();
        cluster.etcd.compact(revision);
        cluster.etcd.restart(0);
    });

    let view_b = cluster.export(b).await;
    assert_eq!(view_b.len(), 7, "{view_b:?}");
    let view = cluster.converged(&[a, b]).await;
    assert_eq!(view, view_b);
    cluster.wait_dns(a, "keep", &["127.0.0.30"]).await;
    let served = srv_ports(&cluster, a, "keep").await;
    assert_eq!(served.len(), 2, "{served:?}");
    cluster.wait_dns(a, "new", &["127.0.0.31"]).await;
}

// 8 -------------------------------------------------------------------------

/// A Consul agent registration of `service/id` at 127.0.0.40:`port`.
fn consul_service(service: &str, id: &str, port: u16) -> Value {
    json!({ "Name": service, "ID": id, "Address": "127.0.0.40", "Port": port })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consul_index_never_goes_back_across_nodes_and_blocking_queries_wake() {
    let cluster = RosterCluster::start(3).await;
    let reply = cluster
        .put(
            0,
            "/v1/agent/service/register",
            &consul_service("api", "api-1", 1),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let health = "/v1/health/service/api";
    let on_a = cluster.get(0, health).await;
    let index_a = on_a.index.expect("X-Consul-Index on node A");
    assert_eq!(on_a.body.as_array().map(Vec::len), Some(1), "{on_a:?}");

    // B and C show the write with an index no lower than A's, and no read
    // from either shows a lower index than an earlier read from it.
    for node in [1, 2] {
        let last = std::cell::Cell::new(0);
        let index = eventually(
            &format!("node {node} to show api-1"),
            CONVERGE_LIMIT,
            || async {
                let reply = cluster.get(node, health).await;
                let index = reply.index.expect("X-Consul-Index");
                assert!(
                    index >= last.get(),
                    "node {node}: index {index} after {}",
                    last.get()
                );
                last.set(index);
                if reply.body.as_array().map(Vec::len) == Some(1) {
                    Ok(index)
                } else {
                    Err(format!("{reply:?}"))
                }
            },
        )
        .await;
        assert!(
            index >= index_a,
            "node {node} shows index {index} for a write node A indexed {index_a}"
        );
    }

    // A blocking query on B wakes for a write through A.
    let index_b = cluster.get(1, health).await.index.expect("index on B");
    let url = cluster.nodes[1].url(&format!("{health}?index={index_b}&wait=10s"));
    let started = Instant::now();
    let (blocked, written) = tokio::join!(cluster.send(cluster.http.get(&url)), async {
        cluster
            .put(
                0,
                "/v1/agent/service/register",
                &consul_service("api", "api-2", 2),
            )
            .await
    });
    assert_eq!(written.status, 200, "{written:?}");
    let blocked = blocked.expect("the blocking query answers");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the blocking query waited out its 10 s: {blocked:?}"
    );
    assert_eq!(blocked.status, 200, "{blocked:?}");
    assert!(
        blocked.index.expect("index") > index_b,
        "{blocked:?} after {index_b}"
    );
    assert_eq!(
        blocked.body.as_array().map(Vec::len),
        Some(2),
        "{blocked:?}"
    );
}

// 9 -------------------------------------------------------------------------

/// An export of `count` instances over four services: more than one etcd
/// transaction holds.
fn bulk_export(count: u16) -> Value {
    let instances: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "service": format!("bulk-{}", i % 4),
                "id": format!("b-{i:03}"),
                "address": "127.0.0.50",
                "port": 1000 + i,
                "weight": 1,
                "priority": 0,
            })
        })
        .collect();
    json!({ "version": 1, "index": 1, "instances": instances })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_bigger_than_one_transaction_shows_on_every_node_and_repeats_idempotently() {
    let cluster = RosterCluster::start(3).await;
    let file = bulk_export(100);
    let reply = cluster.put(0, "/v1/import", &file).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Every node, B included, comes to list all 100. (That node A lists
    // all 100 as soon as it acks is the next test's.)
    let export = eventually(
        "every node to export 100 instances",
        CONVERGE_LIMIT,
        || async {
            let export = cluster.converged(&cluster.all()).await;
            if export.len() == 100 {
                Ok(export)
            } else {
                Err(format!("{} instances", export.len()))
            }
        },
    )
    .await;
    assert_eq!(cluster.export(1).await, export);
    let ids: BTreeSet<String> = by_id(&export).into_keys().collect();
    assert_eq!(ids.len(), 100);
    let revision = blocking(|| cluster.etcd.revision());

    // Re-importing the same file changes nothing, on any node.
    let reply = cluster.put(0, "/v1/import", &file).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        blocking(|| cluster.etcd.revision()),
        revision,
        "the same import again wrote to etcd"
    );
    for node in cluster.all() {
        assert_eq!(cluster.export(node).await, export, "node {node}");
    }
    assert_eq!(cluster.converged(&cluster.all()).await, export);
}

// 10 ------------------------------------------------------------------------

/// The status of the first check of `service/id` on node `node`.
async fn check_status(cluster: &RosterCluster, node: usize, service: &str, id: &str) -> String {
    let reply = cluster.get(node, &instance_path(service, id)).await;
    assert_eq!(reply.status, 200, "node {node}: {reply:?}");
    reply.body["checks"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_heartbeats_through_any_node_keep_a_check_passing_everywhere() {
    let cluster = RosterCluster::start(3).await;
    let body = json!({
        "address": "127.0.0.60",
        "port": 9000,
        "check": { "id": "c", "ttl": "3s" },
    });
    cluster.register_ok(0, "worker", "wk-1", &body).await;
    let heartbeat = format!("{}/heartbeat", instance_path("worker", "wk-1"));

    // Round-robin heartbeats through every node for more than two TTLs.
    let rounds = 16;
    let mut passing_everywhere = false;
    for round in 0..rounds {
        let node = round % 3;
        let reply = cluster.put(node, &heartbeat, &json!({})).await;
        assert_eq!(
            reply.status, 200,
            "heartbeat {round} via node {node}: {reply:?}"
        );
        if !passing_everywhere {
            eventually(
                "the check passing on every node",
                CONVERGE_LIMIT,
                || async {
                    for node in cluster.all() {
                        let status = check_status(&cluster, node, "worker", "wk-1").await;
                        if status != "passing" {
                            return Err(format!("node {node}: {status}"));
                        }
                    }
                    Ok(())
                },
            )
            .await;
            passing_everywhere = true;
        } else {
            for node in cluster.all() {
                assert_eq!(
                    check_status(&cluster, node, "worker", "wk-1").await,
                    "passing",
                    "node {node} after heartbeat {round}"
                );
            }
        }
        // The service's own cadence: a heartbeat every half second.
        sleep(Duration::from_millis(500)).await;
    }
    for node in cluster.all() {
        cluster.wait_dns(node, "worker", &["127.0.0.60"]).await;
    }

    // No more heartbeats: critical everywhere, and out of DNS.
    for node in cluster.all() {
        eventually(
            &format!("the check critical on node {node}"),
            CONVERGE_LIMIT,
            || async { check_status(&cluster, node, "worker", "wk-1").await == "critical" },
        )
        .await;
        cluster.wait_dns(node, "worker", &[]).await;
    }
}
// 4b ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_etcd_follower_down_every_write_succeeds_first_time() {
    const WRITES: u16 = 30;
    let mut cluster = RosterCluster::start(3).await;
    blocking(|| {
        let leader = cluster.etcd.leader();
        cluster.etcd.kill((leader + 1) % 3);
        // The two left keep (or elect) a leader.
        cluster.etcd.leader();
    });
    let mut failed = Vec::new();
    for node in cluster.all() {
        for i in 0..WRITES {
            let id = format!("f-{node}-{i}");
            let reply = cluster
                .register(node, "quorum", &id, &plain("127.0.0.9", 1000 + i))
                .await;
            if reply.status != 200 {
                failed.push(format!("{id}: {} {}", reply.status, reply.body));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} writes failed with a quorum of etcd up:\n{}",
        failed.len(),
        3 * WRITES,
        failed.join("\n")
    );
}

// 9b ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_import_is_whole_on_the_node_that_acked_it() {
    let cluster = RosterCluster::start(3).await;
    let file = bulk_export(100);
    let reply = cluster.put(0, "/v1/import", &file).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Read-your-writes: the acking node shows the whole import at once.
    let export_a = cluster.export(0).await;
    assert_eq!(export_a.len(), 100, "node A right after acking the import");
}

/// `deregister_critical_after` is acted on once, by the node that runs the
/// check: the instance leaves every node, and the reaping counters of all
/// nodes add up to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_instance_is_reaped_once_cluster_wide() {
    let cluster = RosterCluster::start(3).await;
    // Nothing listens on 127.0.0.1:9 (discard): the check is critical at once.
    let body = json!({
        "address": "127.0.0.1",
        "port": 9,
        "checks": [{
            "tcp": "127.0.0.1:9",
            "interval": "200ms",
            "timeout": "100ms",
            "deregister_critical_after": "1s",
        }],
    });
    cluster.register_ok(1, "doomed", "d-1", &body).await;
    eventually(
        "the reaped instance to leave every node",
        CONVERGE_LIMIT,
        || async {
            let mut left = Vec::new();
            for node in cluster.all() {
                if !cluster.export(node).await.is_empty() {
                    left.push(node);
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still on nodes {left:?}"))
            }
        },
    )
    .await;
    let mut reaped = 0;
    for node in cluster.all() {
        let metrics = cluster.get(node, "/v1/metrics").await.body;
        reaped += metrics["instances_reaped"]
            .as_u64()
            .expect("instances_reaped");
    }
    assert_eq!(reaped, 1, "reaped by more than one node");
}

// DNS UPDATE ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_update_through_one_node_shows_on_every_node_and_its_prerequisites_see_it() {
    // Checks, if any, only on loopback.
    let config = format!(
        "{}\n[health]\nallowed_networks = [\"127.0.0.0/8\", \"::1/128\"]\n",
        update_toml()
    );
    let cluster = RosterCluster::start_with_config(3, &config).await;
    let add = "update add web-1.web.service.local. 30 A 127.0.0.2\n\
               update add _web._tcp.service.local. 30 SRV 0 5 8080 web-1.web.service.local.";
    Tool::Nsupdate
        .run(&ADMIN, Transport::Udp, cluster.nodes[0].roster.dns, add)
        .await
        .assert_ok();
    served_at_once_then_everywhere(&cluster, "web", "127.0.0.2", 8080).await;

    // Another node's prerequisites see the instance: "must not exist"
    // fails there and changes nothing...
    Tool::Knsupdate
        .run(
            &ADMIN,
            Transport::Tcp,
            cluster.nodes[1].roster.dns,
            "prereq nxdomain web-1.web.service.local.\n\
             update add web-1.web.service.local. 30 A 127.0.0.3",
        )
        .await
        .assert_rcode("YXDOMAIN");
    // ...and "must exist" holds, so a third node deletes it.
    Tool::Nsupdate
        .run(
            &ADMIN,
            Transport::Tcp,
            cluster.nodes[2].roster.dns,
            "prereq yxdomain web-1.web.service.local.\n\
             update delete web-1.web.service.local.",
        )
        .await
        .assert_ok();
    for node in cluster.all() {
        cluster.wait_dns(node, "web", &[]).await;
    }
    let export = cluster.converged(&cluster.all()).await;
    assert!(export.is_empty(), "nothing left: {export:?}");
}

// TLS to etcd ---------------------------------------------------------------

/// `[cluster]` TLS settings for a node: trust `pki`'s CA for etcd, and
/// present `client` (certificate, key) if given.
fn etcd_tls_toml(pki: &Pki, client: Option<(&Path, &Path)>) -> String {
    let mut toml = format!(
        "[cluster]\ntls_ca_file = {:?}\n",
        pki.ca_file.display().to_string()
    );
    if let Some((cert, key)) = client {
        toml += &format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_etcd_over_tls_with_client_certificates_and_a_node_without_one_is_refused() {
    let pki = Pki::new();
    let (client_cert, client_key) = (
        pki.dir.path().join("client.pem"),
        pki.dir.path().join("client-key.pem"),
    );
    std::fs::write(&client_cert, &pki.client.cert_pem).expect("write client.pem");
    std::fs::write(&client_key, &pki.client.key_pem).expect("write client-key.pem");
    let tls = EtcdTls {
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        ca_file: pki.ca_file.clone(),
    };
    let etcd = blocking(move || EtcdCluster::start_tls(1, tls));
    let endpoints = etcd.tls_endpoints_arg();
    let config = etcd_tls_toml(&pki, Some((&client_cert, &client_key)));
    let cluster =
        RosterCluster::on_with_config(etcd, &[endpoints.clone(), endpoints.clone()], Some(&config))
            .await;

    cluster
        .register_ok(0, "web", "web-1", &plain("127.0.0.2", 8080))
        .await;
    cluster.wait_dns(1, "web", &["127.0.0.2"]).await;
    // It went through etcd: read back over etcd's plain listener.
    let keys = blocking(|| cluster.etcd.get_prefix("/roster/"));
    assert!(
        keys.iter().any(|(key, _)| key.contains("web-1")),
        "no key for web-1 in {keys:?}"
    );

    // etcd asks for a client certificate: a node that has none is refused
    // during the handshake, and says so, with the settings to fix, rather
    // than serving or waiting for etcd as for a member still starting.
    // (TLS 1.3 tells the etcd client only that the connection closed; the
    // node's own handshake hears etcd's alert.)
    let refused = refused_start(&etcd_tls_toml(&pki, None), &endpoints).await;
    assert!(refused.contains(&endpoints), "{refused}");
    assert!(refused.contains("cluster.tls_cert_file"), "{refused}");
    assert!(
        refused.contains("Certificate") || refused.contains("certificate"),
        "{refused}"
    );
    assert!(!refused.contains("trying again"), "{refused}");
    // A node that does not trust etcd's certificate (another CA) has a
    // setting to fix: it says which and stops.
    let stranger = Pki::new();
    let refused = refused_start(
        &etcd_tls_toml(&stranger, Some((&client_cert, &client_key))),
        &endpoints,
    )
    .await;
    assert!(refused.contains("cluster.tls_ca_file"), "{refused}");
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    assert!(!refused.contains("trying again"), "{refused}");
}

/// The value of `sample` (a metric name with its labels) on node `node`.
async fn metric(cluster: &RosterCluster, node: usize, sample: &str) -> Option<f64> {
    let reply = cluster.get(node, "/metrics").await;
    let text = reply.body.as_str().expect("the exposition is text");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

/// Certificates are renewed in place and CAs change over: SIGHUP makes a
/// node read its etcd TLS files again and connect anew with them, files
/// that do not load are refused while the connections in force stay, and
/// files that read as those in force change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_takes_renewed_etcd_tls_files_and_a_new_etcd_ca() {
    let (old, new) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let write = |name: &str, text: &str| {
        std::fs::write(path(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"))
    };
    let ca_pem = |pki: &Pki| std::fs::read_to_string(&pki.ca_file).expect("read a CA");
    // etcd accepts either CA's client certificates and serves the old CA's
    // certificate, from files the test rewrites later.
    write("etcd-clients-ca.pem", &(ca_pem(&old) + &ca_pem(&new)));
    write("etcd.pem", &old.server.cert_pem);
    write("etcd-key.pem", &old.server.key_pem);
    let tls = EtcdTls {
        cert_file: path("etcd.pem"),
        key_file: path("etcd-key.pem"),
        ca_file: path("etcd-clients-ca.pem"),
    };
    let etcd = blocking(move || EtcdCluster::start_tls(1, tls));
    let endpoints = etcd.tls_endpoints_arg();
    // The node trusts the old CA only and presents its client certificate.
    write("ca.pem", &ca_pem(&old));
    write("client.pem", &old.client.cert_pem);
    write("client-key.pem", &old.client.key_pem);
    let config = format!(
        "[cluster]\ntls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        path("ca.pem").display().to_string(),
        path("client.pem").display().to_string(),
        path("client-key.pem").display().to_string()
    );
    let mut cluster = RosterCluster::on_with_config(etcd, &[endpoints], Some(&config)).await;
    let mut served = Vec::new();
    write_served(&cluster, 0, ("web-1", "127.0.0.2"), &mut served).await;

    let reloads = |result: &'static str| {
        let sample =
            format!("roster_config_reloads_total{{part=\"etcd_tls\",result=\"{result}\"}}");
        let cluster = &cluster;
        async move { metric(cluster, 0, &sample).await }
    };
    assert_eq!(reloads("applied").await, Some(0.0));
    // Refused, the connections in force staying: a file that does not
    // load, and a CA that etcd's certificate does not pass (the new CA
    // alone, before etcd serves its certificate).
    let refusals = [String::from("not a certificate\n"), ca_pem(&new)];
    for (count, ca) in (1..).zip(refusals) {
        write("ca.pem", &ca);
        cluster.nodes[0].roster.signal("HUP");
        eventually("the CA file to be refused", CONVERGE_LIMIT, || async {
            reloads("refused").await == Some(f64::from(count))
        })
        .await;
    }
    assert_eq!(reloads("applied").await, Some(0.0));
    write_served(&cluster, 0, ("web-2", "127.0.0.3"), &mut served).await;
    // The files in force again: nothing to change, and no new connections
    // (a SIGHUP for the ACL tokens must not cut etcd's).
    write("ca.pem", &ca_pem(&old));
    cluster.nodes[0].roster.signal("HUP");
    eventually(
        "the unchanged files to be noticed",
        CONVERGE_LIMIT,
        || async {
            cluster.nodes[0]
                .roster
                .stderr()
                .contains("the etcd TLS files are unchanged")
        },
    )
    .await;
    assert_eq!(reloads("applied").await, Some(0.0));
    assert_eq!(reloads("refused").await, Some(2.0));

    // The change-over: the node trusts both CAs and presents the new CA's
    // client certificate; then etcd serves the new CA's certificate, which
    // the node's first CA file would refuse.
    write("ca.pem", &(ca_pem(&old) + &ca_pem(&new)));
    write("client.pem", &new.client.cert_pem);
    write("client-key.pem", &new.client.key_pem);
    cluster.nodes[0].roster.signal("HUP");
    eventually("the new files to be applied", CONVERGE_LIMIT, || async {
        reloads("applied").await == Some(1.0)
    })
    .await;
    write("etcd.pem", &new.server.cert_pem);
    write("etcd-key.pem", &new.server.key_pem);
    blocking(|| {
        cluster.etcd.kill(0);
        cluster.etcd.restart(0);
    });
    write_served(&cluster, 0, ("web-3", "127.0.0.4"), &mut served).await;
}

// etcd users ------------------------------------------------------------------

/// etcd's root user, for `etcdctl` once authentication is on.
const ETCD_ROOT: &str = "root:root-password";

/// `etcdctl args` as [`ETCD_ROOT`]; panics if it fails.
fn etcdctl_as_root(etcd: &EtcdCluster, args: &[&str]) -> String {
    let mut all = vec!["--user", ETCD_ROOT];
    all.extend_from_slice(args);
    etcd.etcdctl(&all)
        .unwrap_or_else(|error| panic!("etcdctl {args:?}: {error}"))
}

/// A `[cluster]` section that signs in as `username`, whose password
/// `password` is written to a file in `dir`.
fn etcd_user_toml(dir: &Path, username: &str, password: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    // Named by a count, not the password: the password must not show in
    // what roster prints, and a file name may.
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let file = dir.join(format!(
        "{username}-{}.password",
        FILES.fetch_add(1, SeqCst)
    ));
    std::fs::write(&file, format!("{password}\n")).expect("write the password file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 the password file");
    format!(
        "[cluster]\nusername = {username:?}\npassword_file = {:?}\n",
        file.display().to_string()
    )
}

/// Registers `web` instance `(id, address)` through node `writer`,
/// retrying while etcd is away, and waits until every node serves it with
/// the `served` before it.
async fn write_served(
    cluster: &RosterCluster,
    writer: usize,
    (id, address): (&str, &'static str),
    served: &mut Vec<&'static str>,
) {
    let path = instance_path("web", id);
    let node = &cluster.nodes[writer];
    put_retrying(&cluster.http, node, &path, &plain(address, 8080)).await;
    served.push(address);
    for node in cluster.all() {
        cluster.wait_dns(node, "web", served).await;
    }
}

/// A node started with `config` on `endpoints`, which must refuse to
/// start; its standard error.
async fn refused_start(config: &str, endpoints: &str) -> String {
    let site = common::process::Site::new();
    std::fs::write(site.root.path().join("config.toml"), config).expect("config.toml");
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        site.try_start_with(&["--etcd", endpoints, "--node", "refused"]),
    )
    .await
    .expect("start-up ends within a minute");
    let exited = match refused {
        Ok(mut roster) => panic!("served with {config}: {}", roster.stop().await),
        Err(exited) => exited,
    };
    assert!(!exited.status.success(), "{}", exited.stderr);
    exited.stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sign_in_to_etcd_as_a_user_and_bad_or_missing_credentials_are_refused() {
    let mut etcd = blocking(|| EtcdCluster::start(3));
    blocking(|| {
        let grants: [&[&str]; 8] = [
            &["user", "add", ETCD_ROOT],
            &["role", "add", "roster"],
            &[
                "role",
                "grant-permission",
                "roster",
                "--prefix=true",
                "readwrite",
                "/roster/",
            ],
            &["user", "add", "roster:roster-password"],
            &["user", "grant-role", "roster", "roster"],
            // A user with no role: signs in, may read and write nothing.
            &["user", "add", "nobody:nobody-password"],
            &["auth", "enable"],
            &["get", "--prefix", "/roster/"],
        ];
        for args in grants {
            etcdctl_as_root(&etcd, args);
        }
    });
    // Each node is given two members, and the first is down when they
    // start: they sign in to the other one, and to this one when they come
    // to it. Not the leader, whose death would fail the start-up's first
    // read.
    let down = (etcd.leader() + 1) % 3;
    let next = (down + 1) % 3;
    blocking(|| etcd.kill(down));
    let urls = etcd.client_urls();
    let endpoints = format!("{},{}", urls[down], urls[next]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = etcd_user_toml(dir.path(), "roster", "roster-password");
    let mut cluster =
        RosterCluster::on_with_config(etcd, &[endpoints.clone(), endpoints.clone()], Some(&config))
            .await;
    let mut served = Vec::new();
    write_served(&cluster, 0, ("web-1", "127.0.0.2"), &mut served).await;
    let keys = blocking(|| {
        etcdctl_as_root(
            &cluster.etcd,
            &["get", "--prefix", "--keys-only", "/roster/"],
        )
    });
    assert!(keys.contains("web-1"), "no key for web-1 in {keys}");

    // Turning authentication off and on again voids every token etcd gave:
    // the nodes sign in again by themselves, and writes still go through.
    blocking(|| {
        etcdctl_as_root(&cluster.etcd, &["auth", "disable"]);
        etcdctl_as_root(&cluster.etcd, &["auth", "enable"]);
    });
    write_served(&cluster, 1, ("web-2", "127.0.0.3"), &mut served).await;
    // The member that was down at start-up, signed in to once it is used.
    blocking(|| {
        cluster.etcd.restart(down);
        cluster.etcd.kill(next);
    });
    write_served(&cluster, 0, ("web-3", "127.0.0.4"), &mut served).await;
    blocking(|| cluster.etcd.restart(next));

    // Wrong, missing and powerless credentials each stop a node at start-up
    // with what to do about them.
    let cases = [
        (
            "roster",
            "wrong-password",
            ["authentication failed", "cluster.password_file"],
        ),
        ("", "", ["user name is empty", "cluster.username"]),
        (
            "nobody",
            "nobody-password",
            ["permission denied", "\"nobody\""],
        ),
    ];
    for (username, password, expected) in cases {
        let config = match username {
            "" => String::new(),
            _ => etcd_user_toml(dir.path(), username, password),
        };
        let stderr = refused_start(&config, &endpoints).await;
        for words in expected {
            assert!(stderr.contains(words), "{words:?} not in: {stderr}");
        }
        if !password.is_empty() {
            assert!(!stderr.contains(password), "the password shown: {stderr}");
        }
    }
}
