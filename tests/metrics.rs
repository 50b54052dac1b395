//! `GET /metrics` end to end: a real roster on ephemeral ports, real DNS
//! queries over UDP and TCP, real registrations over HTTP and a real health
//! check taken to a transition; then the exposition is parsed as the
//! Prometheus text format (every line a sample or a `# HELP`/`# TYPE`,
//! histograms cumulative and ending in `+Inf == _count`) and the counters
//! are compared with what the test did.
//!
//! Counters the test alone moves (DNS, the routes it calls) are compared
//! exactly; those a background task also moves (probes, the checker's
//! writes) are compared as "at least".

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    start_server,
    targets::{HttpTarget, Respond, http_check},
    wait_check,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::json;

/// One sample: its metric name and sorted labels.
type Key = (String, BTreeMap<String, String>);

/// A parsed exposition: every sample, and every family's declared type.
#[derive(Debug, Default)]
struct Exposition {
    samples: BTreeMap<Key, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The sample `name{labels}`, 0 when absent (a series not yet moved).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sample that must be there.
    fn present(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels_map: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        *self
            .samples
            .get(&(name.to_owned(), labels_map))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

/// Parses the text format strictly enough to catch a malformed line: a
/// name of `[a-zA-Z_:][a-zA-Z0-9_:]*`, optional `{k="v",…}` with escaped
/// values, one space and a float. Checks every histogram's buckets.
fn parse(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for (number, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", number + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (keyword, name, tail) = (words.next(), words.next(), words.next());
            let name = name.unwrap_or_else(|| panic!("{}: no name", at()));
            assert!(valid_name(name), "{}", at());
            match keyword {
                Some("HELP") => assert!(tail.is_some_and(|t| !t.is_empty()), "{}", at()),
                Some("TYPE") => {
                    let kind = tail.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{}",
                        at()
                    );
                    let previous = exposition.types.insert(name.to_owned(), kind.to_owned());
                    assert!(previous.is_none(), "{}: TYPE given twice", at());
                }
                _ => panic!("{}: unknown comment", at()),
            }
            continue;
        }
        assert!(!line.is_empty(), "{}: empty line", at());
        let (key, value) = parse_sample(line).unwrap_or_else(|| panic!("{}: not a sample", at()));
        let family = family_of(&key.0, &exposition.types);
        assert!(family.is_some(), "{}: sample before its # TYPE", at());
        let previous = exposition.samples.insert(key, value);
        assert!(previous.is_none(), "{}: sample given twice", at());
    }
    check_histograms(&exposition);
    exposition
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{labels} value`, or `None` if the line is not one.
fn parse_sample(line: &str) -> Option<(Key, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // label name
            let start = chars.peek()?.0;
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' {
                    end = i;
                    break;
                }
                chars.next();
            }
            let label = &inner[start..end];
            if !valid_name(label) || label.contains(':') {
                return None;
            }
            chars.next(); // '='
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return None;
            }
            match chars.next()?.1 {
                ',' => continue,
                '}' => {
                    let (i, _) = chars.next()?;
                    rest = &inner[i..];
                    break;
                }
                _ => return None,
            }
        }
    }
    let value = rest.strip_prefix(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => value.parse().ok()?,
    };
    Some(((name.to_owned(), labels), value))
}

/// The family a sample name belongs to: itself, or a histogram's name
/// without `_bucket`/`_sum`/`_count`.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base).map(String::as_str) == Some("histogram")).then(|| base.to_owned())
    })
}

/// Every histogram series: buckets ascending in `le`, counts never
/// decreasing, a `+Inf` bucket equal to `_count`, and a `_sum`.
fn check_histograms(exposition: &Exposition) {
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, labels), value) in &exposition.samples {
            if *name != bucket {
                continue;
            }
            let mut labels = labels.clone();
            let le = labels
                .remove("le")
                .unwrap_or_else(|| panic!("{bucket} without le"));
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or_else(|_| panic!("{bucket}: le {le:?}"))
            };
            series.entry(labels).or_default().push((le, *value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{labels:?}: buckets not cumulative: {buckets:?}"
            );
            let last = buckets.last().expect("at least one bucket");
            assert_eq!(last.0, f64::INFINITY, "{family}{labels:?} ends in +Inf");
            let key = |suffix: &str| (format!("{family}{suffix}"), labels.clone());
            let count = exposition.samples.get(&key("_count"));
            assert_eq!(count, Some(&last.1), "{family}{labels:?}: +Inf == _count");
            assert!(
                exposition.samples.contains_key(&key("_sum")),
                "{family} _sum"
            );
        }
    }
}

/// Scrapes `/metrics`, checking the content type, and parses it.
async fn scrape(server: &common::Server) -> Exposition {
    parse(&scrape_text(server).await)
}

/// `promtool check metrics` (Prometheus's own parser and linter) on
/// `text`: it must parse, and the linter must find nothing to say.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The body of `GET /metrics`, checking status and content type.
async fn scrape_text(server: &common::Server) -> String {
    let response = common::http_client()
        .get(server.url(&["metrics"]))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.expect("body")
}

/// One UDP query sent exactly once (no retry, unlike `common`'s client,
/// which resends after 2 s: a resend would count twice), waiting up to 20 s
/// for its answer. Loopback does not lose datagrams.
async fn udp_once(
    server: &common::Server,
    qname: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> common::Reply {
    let query = common::query_message(qname, qtype, edns);
    let bytes = query.to_vec().expect("encode query");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind UDP");
    socket.connect(server.dns_addr).await.expect("connect UDP");
    socket.send(&bytes).await.expect("send UDP query");
    let mut buffer = vec![0u8; 65_535];
    let len = tokio::time::timeout(std::time::Duration::from_secs(20), socket.recv(&mut buffer))
        .await
        .expect("a UDP answer within 20 s")
        .expect("receive UDP");
    let message = hickory_proto::op::Message::from_vec(&buffer[..len]).expect("the answer decodes");
    assert_eq!(message.metadata.id, query.metadata.id);
    common::Reply {
        message,
        wire_len: len,
    }
}

/// How much each sample moved between two scrapes.
fn delta(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.present(name, labels) - before.value(name, labels)
}

#[tokio::test]
async fn metrics_count_what_the_test_did() {
    let server = start_server().await;
    let before = scrape(&server).await;
    assert_eq!(
        before.present(
            "roster_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(before.present("roster_process_start_time_seconds", &[]) > 1.0e9);

    // Registry: two plain instances, one in maintenance, 40 more for a big
    // answer, and one with an HTTP check (all on loopback addresses).
    server.add("web", "web-1", "127.0.0.1", 80).await;
    server.add("web", "web-2", "127.0.0.2", 80).await;
    for n in 1..=40 {
        server
            .add("big", &format!("big-{n}"), &format!("127.0.1.{n}"), 80)
            .await;
    }
    let reply = server.maintenance("web", "web-2", true, "drain").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let target = HttpTarget::start(Respond::Ok).await;
    let reply = server
        .register(
            "api",
            "api-1",
            json!({"address": "127.0.0.3", "port": 80, "check": http_check(&target, json!({}))["check"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    wait_check(&server, "api", "api-1", "passing", "200").await;
    target.set(Respond::Fail);
    wait_check(&server, "api", "api-1", "critical", "500").await;
    // A deregistration of an instance that is not there: refused by the
    // registry.
    assert_eq!(server.deregister("web", "nope").await.status, 404);
    // A path no route matches.
    assert_eq!(server.get(&["no", "such", "path"]).await.status, 404);

    // DNS over UDP: three fast-path answers, a TXT, a NXDOMAIN, a REFUSED,
    // and one answer too big for 512 octets (40 A records), truncated.
    for _ in 0..3 {
        let reply = udp_once(&server, "web.service.local.", RecordType::A, Some(1232)).await;
        assert_eq!(reply.ips().len(), 1, "{reply}");
    }
    let txt = udp_once(&server, "web-1.web.service.local.", RecordType::TXT, None).await;
    assert_eq!(txt.rcode(), ResponseCode::NoError);
    let nx = udp_once(&server, "nope.service.local.", RecordType::A, None).await;
    assert_eq!(nx.rcode(), ResponseCode::NXDomain);
    let refused = udp_once(&server, "example.com.", RecordType::A, None).await;
    assert_eq!(refused.rcode(), ResponseCode::Refused);
    let big = udp_once(&server, "big.service.local.", RecordType::A, None).await;
    assert!(big.truncated(), "{big}");
    // DNS over TCP: two SRV answers.
    for _ in 0..2 {
        let reply = server
            .query_tcp("web.service.local.", RecordType::SRV, None)
            .await;
        assert_eq!(reply.rcode(), ResponseCode::NoError);
    }

    // A UDP thread counts a batch's answers once it has sent them, so the
    // client may see an answer a moment before its count: scrape until
    // every answer sent is counted (bounded), then check every count
    // exactly.
    let answers_counted = |after: &Exposition| {
        let counted = |proto, rcodes: &[&str]| {
            let duration = [("proto", proto)];
            let sent: f64 = rcodes
                .iter()
                .map(|rcode| {
                    delta(
                        &before,
                        after,
                        "roster_dns_responses_total",
                        &[("proto", proto), ("rcode", rcode)],
                    )
                })
                .sum();
            (
                sent,
                delta(
                    &before,
                    after,
                    "roster_dns_request_duration_seconds_count",
                    &duration,
                ),
            )
        };
        counted("udp", &["NOERROR", "NXDOMAIN", "REFUSED"]) == (7.0, 7.0)
            && counted("tcp", &["NOERROR"]) == (2.0, 2.0)
    };
    let mut text = scrape_text(&server).await;
    // Scrapes before the last one, which count themselves (below).
    let mut earlier_scrapes = 0.0;
    let counted_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !answers_counted(&parse(&text)) && std::time::Instant::now() < counted_by {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = scrape_text(&server).await;
        earlier_scrapes += 1.0;
    }
    promtool_check(&text);
    let after = parse(&text);
    let udp = |t: &'static str| [("proto", "udp"), ("type", t)];
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(d("roster_dns_requests_total", &udp("A")), 6.0);
    assert_eq!(d("roster_dns_requests_total", &udp("TXT")), 1.0);
    assert_eq!(d("roster_dns_requests_total", &udp("SRV")), 0.0);
    let tcp_srv = [("proto", "tcp"), ("type", "SRV")];
    assert_eq!(d("roster_dns_requests_total", &tcp_srv), 2.0);
    let rcode = |proto, rcode| [("proto", proto), ("rcode", rcode)];
    assert_eq!(
        d("roster_dns_responses_total", &rcode("udp", "NOERROR")),
        5.0
    );
    assert_eq!(
        d("roster_dns_responses_total", &rcode("udp", "NXDOMAIN")),
        1.0
    );
    assert_eq!(
        d("roster_dns_responses_total", &rcode("udp", "REFUSED")),
        1.0
    );
    assert_eq!(
        d("roster_dns_responses_total", &rcode("tcp", "NOERROR")),
        2.0
    );
    assert_eq!(d("roster_dns_truncated_total", &[("proto", "udp")]), 1.0);
    assert_eq!(d("roster_dns_truncated_total", &[("proto", "tcp")]), 0.0);
    let udp_count = d(
        "roster_dns_request_duration_seconds_count",
        &[("proto", "udp")],
    );
    assert_eq!(udp_count, 7.0);
    let tcp_count = d(
        "roster_dns_request_duration_seconds_count",
        &[("proto", "tcp")],
    );
    assert_eq!(tcp_count, 2.0);

    // The catalog as it stands: web-1 and the 40 big ones passing, api-1
    // critical, web-2 in maintenance.
    assert_eq!(after.present("roster_catalog_services", &[]), 3.0);
    let status = |s| [("status", s)];
    assert_eq!(
        after.present("roster_catalog_instances", &status("passing")),
        41.0
    );
    assert_eq!(
        after.present("roster_catalog_instances", &status("warning")),
        0.0
    );
    assert_eq!(
        after.present("roster_catalog_instances", &status("critical")),
        1.0
    );
    assert_eq!(
        after.present("roster_catalog_instances", &status("maintenance")),
        1.0
    );
    // 44 registrations and a maintenance switch at least (the checker's
    // results are writes too), one refused, none failed.
    let writes = |r| d("roster_registry_writes_total", &[("result", r)]);
    assert!(writes("applied") >= 44.0, "{}", writes("applied"));
    assert_eq!(writes("refused"), 1.0);
    assert_eq!(writes("failed"), 0.0);
    assert!(d("roster_registry_commit_duration_seconds_count", &[]) >= 1.0);

    // Health: at least one passing and one failing probe, and the check's
    // transition to critical.
    let probes = |s| {
        d(
            "roster_health_probes_total",
            &[("kind", "http"), ("status", s)],
        )
    };
    assert!(probes("passing") >= 1.0);
    assert!(probes("critical") >= 1.0);
    assert_eq!(probes("warning"), 0.0);
    let to = |s| d("roster_health_check_transitions_total", &[("to", s)]);
    assert_eq!(to("critical"), 1.0);
    assert!(d("roster_health_probe_lag_seconds_count", &[]) >= 2.0);

    // HTTP, by route template: 43 registrations on the native route (the
    // raw paths never appear), one 404 from it, the unmatched path, and
    // the first scrape (a scrape counts itself once it has answered).
    let route = "/v1/services/{service}/instances/{id}";
    let http = |route, method, code| {
        d(
            "roster_http_requests_total",
            &[("route", route), ("method", method), ("code", code)],
        )
    };
    assert_eq!(http(route, "PUT", "200"), 43.0);
    assert_eq!(http(route, "DELETE", "404"), 1.0);
    assert_eq!(http("unmatched", "GET", "404"), 1.0);
    assert_eq!(http("/metrics", "GET", "200"), 1.0 + earlier_scrapes);
    let routes: BTreeSet<&str> = after
        .samples
        .keys()
        .filter(|(name, _)| name == "roster_http_requests_total")
        .filter_map(|(_, labels)| labels.get("route").map(String::as_str))
        .collect();
    assert!(
        routes
            .iter()
            .all(|r| *r == "unmatched" || r.starts_with('/')),
        "{routes:?}"
    );
    assert!(!routes.iter().any(|r| r.contains("web-1")), "{routes:?}");
    let duration = [("route", route), ("method", "PUT")];
    assert_eq!(
        d("roster_http_request_duration_seconds_count", &duration),
        43.0
    );

    drop(target);
    server.stop().await;
}

/// `/metrics` is read as `/v1/metrics` is: with ACLs on and a deny
/// default, each caller gets the same answer from both.
#[tokio::test]
async fn metrics_follow_the_acl_of_v1_metrics() {
    const ADMIN: &str = "admin-secret-0123456789";
    const READER: &str = "reader-secret-0123456789";
    let acl: roster::config::AclConfig = toml::from_str(&format!(
        r#"
        enabled = true
        default_policy = "deny"
        [[tokens]]
        name = "admin"
        secret = "{ADMIN}"
        management = true
        [[tokens]]
        name = "reader"
        secret = "{READER}"
        service_prefix = {{ "web" = "read" }}
        "#
    ))
    .expect("a valid [acl] table");
    let server = common::start_server_with(&[], |config| config.acl = acl).await;
    let client = common::http_client();
    let mut statuses = Vec::new();
    for token in [None, Some(READER), Some(ADMIN)] {
        let mut seen = Vec::new();
        for path in [["metrics"].as_slice(), ["v1", "metrics"].as_slice()] {
            let mut request = client.get(server.url(path));
            if let Some(token) = token {
                request = request.header("X-Consul-Token", token);
            }
            seen.push(request.send().await.expect("GET").status().as_u16());
        }
        assert_eq!(seen[0], seen[1], "token {token:?}: /metrics vs /v1/metrics");
        statuses.push(seen[0]);
    }
    assert_eq!(statuses[0], 403, "anonymous under deny");
    assert_eq!(statuses[2], 200, "a management token");
    server.stop().await;
}

/// The commit log's checkpoints into redb are counted: an import larger
/// than half the log goes straight into redb as one.
#[tokio::test]
async fn store_checkpoints_are_counted() {
    let server = start_server().await;
    let before = scrape(&server).await;
    assert_eq!(
        before.present("roster_store_checkpoints_total", &[("result", "done")]),
        0.0
    );
    assert_eq!(
        before.present("roster_store_checkpoint_duration_seconds_count", &[]),
        0.0
    );
    // 3,000 instances of ~300 bytes: over half of the 1 MiB log.
    let instances: Vec<_> = (0..3000)
        .map(|n| {
            json!({
                "service": format!("svc-{}", n % 50),
                "id": format!("i-{n}"),
                "address": "10.1.0.1",
                "port": 8080,
                "tags": ["x".repeat(100)],
                "weight": 1,
                "priority": 0,
            })
        })
        .collect();
    let body = json!({"version": 1, "index": 1, "instances": instances});
    let reply = server.put_raw(&["v1", "import"], body.to_string()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let after = scrape(&server).await;
    assert!(
        after.present("roster_store_checkpoints_total", &[("result", "done")]) >= 1.0,
        "no checkpoint counted"
    );
    assert_eq!(
        after.present("roster_store_checkpoints_total", &[("result", "failed")]),
        0.0
    );
    assert!(after.present("roster_store_checkpoint_duration_seconds_count", &[]) >= 1.0);
}

/// In cluster mode a write is an etcd transaction: counted as applied or
/// refused, each transaction timed in the commit histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_writes_and_their_commits_are_counted() {
    let etcd = common::cluster::blocking(|| common::etcd::EtcdCluster::start(1));
    let endpoints = vec![etcd.endpoints_arg()];
    let cluster = common::cluster::RosterCluster::on(etcd, &endpoints).await;
    let scrape_node = || async {
        let reply = cluster.get(0, "/metrics").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let text = reply.body.as_str().expect("a text body").to_owned();
        promtool_check(&text);
        parse(&text)
    };
    let before = scrape_node().await;
    for id in ["web-1", "web-2"] {
        let body = json!({"address": "127.0.0.1", "port": 80});
        cluster.register_ok(0, "web", id, &body).await;
    }
    // The same ID in another service: refused by the registry.
    let body = json!({"address": "127.0.0.2", "port": 80});
    let reply = cluster.register(0, "api", "web-1", &body).await;
    assert!((400..500).contains(&reply.status), "{reply:?}");
    let after = scrape_node().await;
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(
        d("roster_registry_writes_total", &[("result", "applied")]),
        2.0
    );
    assert_eq!(
        d("roster_registry_writes_total", &[("result", "refused")]),
        1.0
    );
    assert_eq!(
        d("roster_registry_writes_total", &[("result", "failed")]),
        0.0
    );
    assert!(d("roster_registry_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        after.present("roster_catalog_instances", &[("status", "passing")]),
        2.0
    );
    assert_eq!(after.present("roster_cluster_stale", &[]), 0.0);
}
