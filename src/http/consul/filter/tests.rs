use serde_json::{Value, json};

use super::{
    shape::{
        Shape::{Bool, List, Map, Number, Object, Text},
        resolve,
    },
    *,
};

fn entry() -> Value {
    json!({
        "Node": {"ID": "n", "Node": "roster", "Address": "127.0.0.1", "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "127.0.0.1"}, "Meta": {}, "CreateIndex": 1, "ModifyIndex": 1},
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary", "v2"],
                    "Address": "127.0.0.2", "Port": 8080, "Meta": {"env": "prod", "team": "a b"},
                    "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
                    "CreateIndex": 5, "ModifyIndex": 7},
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing", "Name": "Serf Health Status", "ServiceTags": []},
            {"CheckID": "service:web-1", "Status": "critical", "Name": "ttl", "ServiceTags": ["primary"]}
        ]
    })
}

fn eval(text: &str) -> bool {
    let filter = Filter::parse(text, &SERVICE_ENTRY).unwrap_or_else(|e| panic!("{text}: {e}"));
    filter.expression.eval(&entry())
}

fn refused(text: &str) -> FilterError {
    match Filter::parse(text, &SERVICE_ENTRY) {
        Ok(filter) => panic!("{text} was accepted: {filter:?}"),
        Err(error) => error,
    }
}

#[test]
fn operators_on_text_lists_maps_numbers_and_booleans() {
    let table: &[(&str, bool)] = &[
        (r#"Service.Service == "web""#, true),
        (r#"Service.Service == "api""#, false),
        (r#"Service.Service != "api""#, true),
        ("Service.Service == web", true),
        ("Service.Service == `web`", true),
        ("Service.Port == 8080", true),
        ("Service.Port != 8080", false),
        ("Service.Port == -1", false),
        ("Service.EnableTagOverride == false", true),
        ("Service.EnableTagOverride == True", false),
        ("Service.Weights.Passing == 1", true),
        (r#"Service.Tags contains "primary""#, true),
        (r#"Service.Tags contains "prim""#, false),
        (r#""v2" in Service.Tags"#, true),
        (r#""v3" not in Service.Tags"#, true),
        (r#"Service.Tags not contains "v2""#, false),
        (r#""eb" in Service.Service"#, true),
        (r#"Service.Service contains "eb""#, true),
        (r#""env" in Service.Meta"#, true),
        (r#"Service.Meta contains "zone""#, false),
        (r#"Service.Meta.env == "prod""#, true),
        (r#"Service.Meta["team"] == "a b""#, true),
        (r#"Service.Meta[ `env` ] == prod"#, true),
        ("Service.Meta.zone == \"\"", true),
        ("Service.Meta.zone is empty", true),
        ("Service.Meta.env is not empty", true),
        ("Service.Tags is empty", false),
        ("Node.Meta is empty", true),
        ("Service.TaggedAddresses is empty", true),
        (r#"Service.TaggedAddresses.lan.Address == """#, true),
        (r#"Service.ID matches "^web-[0-9]+$""#, true),
        (r#"Service.ID not matches "^api""#, true),
        (r#"Service.Meta.zone matches "^$""#, true),
        (r#"Node.TaggedAddresses.lan == "127.0.0.1""#, true),
        // JSON-pointer selectors, quoted.
        (r#""/Service/Meta/env" == prod"#, true),
        (r#""primary" in "/Service/Tags""#, true),
        (r#""/Checks/1/Status" == critical"#, true),
        (r#""/Service/Tags" is empty"#, false),
    ];
    for (text, expected) in table {
        assert_eq!(eval(text), *expected, "{text}");
    }
}

#[test]
fn a_selector_through_a_list_matches_any_element_and_its_negation_none() {
    assert!(eval("Checks.Status == critical"));
    assert!(eval("Checks.Status == passing"));
    assert!(!eval("Checks.Status == warning"));
    assert!(!eval("Checks.Status != passing"), "some check is passing");
    assert!(eval("Checks.Status != warning"));
    assert!(eval("Checks.0.CheckID == serfHealth"));
    assert!(eval(r#"Checks.1.Status == "critical""#));
    assert!(eval(r#"Checks.ServiceTags contains "primary""#));
    assert!(eval("Checks is not empty"));
}

#[test]
fn boolean_logic_precedence_and_grouping() {
    let table: &[(&str, bool)] = &[
        ("Service.Port == 8080 and Service.Service == web", true),
        ("Service.Port == 1 or Service.Service == web", true),
        ("Service.Port == 1 or Service.Service == api", false),
        ("not Service.Port == 1", true),
        ("not not Service.Port == 1", false),
        // and binds tighter than or; not tighter than and.
        (
            "Service.Port == 1 and Service.Port == 1 or Service.Service == web",
            true,
        ),
        (
            "Service.Port == 1 and (Service.Port == 1 or Service.Service == web)",
            false,
        ),
        ("not Service.Port == 8080 or Service.Service == web", true),
        (
            "not (Service.Port == 8080 or Service.Service == api)",
            false,
        ),
        ("( ( Service.Port==8080 ) )", true),
        ("\tService.Port\n==\r8080 ", true),
    ];
    for (text, expected) in table {
        assert_eq!(eval(text), *expected, "{text}");
    }
}

#[test]
fn strings_take_go_escapes() {
    let check = |text: &str, value: &str| {
        let expected = Literal::Text(value.to_owned());
        let filter = Filter::parse(text, &HEALTH_CHECK).unwrap_or_else(|e| panic!("{text}: {e}"));
        match filter.expression {
            Expression::Match(Match {
                test: Test::Equal(literal),
                ..
            }) => assert_eq!(literal, expected, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    };
    check(r#"Name == "a\"b""#, "a\"b");
    check(r#"Name == "tab\there""#, "tab\there");
    check(r#"Name == "\u00e9\x41\\""#, "éA\\");
    check(r#"Name == `raw\n`"#, "raw\\n");
    check(r#"Name == "é""#, "é");
}

#[test]
fn malformed_filters_are_refused_with_a_position() {
    for text in [
        "",
        "Service.Service ==",
        "Service.Service = web",
        "Service.Service == \"web",
        "Service.Service == `web",
        "(Service.Service == web",
        "Service.Service == web)",
        "Service.Service == web and",
        "Service.Service == web or or Service.Port == 1",
        "Service.Port == 8080x",
        "Service.Port == 01",
        // go-bexpr's bare words have no '-': IDs like this are quoted.
        "Service.ID == web-1",
        "Service.Tags contains",
        "Service.Meta[env] == a",
        "Service.Meta[\"env\" == a",
        "Service. == a",
        "Service.Service is full",
        "\"web\" Service.Service",
        "\"web\" in \"x\"",
        "\"Service\" == web",
        "Service.Service == web extra",
        "Service.Service == \"\\q\"",
        "Service.Service ~ a",
        "== web",
    ] {
        let error = refused(text);
        assert!(
            matches!(error, FilterError::Syntax { .. }),
            "{text}: {error:?}"
        );
    }
    assert_eq!(
        refused("Service.Service == \"web").to_string(),
        "1:20 (19): Unterminated string literal"
    );
}

#[test]
fn filters_that_do_not_fit_the_answer_are_refused() {
    for text in [
        "Service.Nope == a",
        "Nope is empty",
        "Service.Port.Deep == 1",
        "Service.Port == web",
        "Service.Port == 1.5",
        "Service.EnableTagOverride == maybe",
        "Service.Tags == a",
        "Service.Meta == a",
        "Service == a",
        "Service.Port contains 1",
        "Service.Port is empty",
        "Service.Tags matches a",
        "Service.ID matches \"(\"",
        "\"a\" in Service.Weights",
        "\"/Service/Nope\" == a",
        "\"/\" == a",
    ] {
        let error = refused(text);
        assert!(
            matches!(error, FilterError::Invalid(_)),
            "{text}: {error:?}"
        );
    }
    assert_eq!(
        refused("Service.Nope == a").to_string(),
        "Selector \"Service.Nope\" is not valid"
    );
}

#[test]
fn size_and_depth_are_bounded() {
    let long = format!("Service.Service == \"{}\"", "a".repeat(MAX_FILTER_BYTES));
    assert!(matches!(refused(&long), FilterError::TooLong(_)));
    let deep = format!(
        "{}Service.Port == 1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(matches!(refused(&deep), FilterError::Syntax { .. }));
    let nots = format!("{}Service.Port == 1", "not ".repeat(MAX_DEPTH + 1));
    assert!(matches!(refused(&nots), FilterError::Syntax { .. }));
    let fine = format!(
        "{}Service.Port == 8080{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert!(eval(&fine));
    // A long flat chain is a loop, not a recursion.
    let chain = vec!["Service.Port == 8080"; 150].join(" and ");
    assert!(chain.len() < MAX_FILTER_BYTES);
    assert!(eval(&chain));
}

/// Whether `value` has exactly the keys and types `shape` describes.
fn conforms(shape: &Shape, value: &Value, at: &str) -> Result<(), String> {
    match (shape, value) {
        (Text, Value::String(_)) | (Bool, Value::Bool(_)) => Ok(()),
        (Number, Value::Number(n)) if n.is_i64() => Ok(()),
        (List(element), Value::Array(items)) => items
            .iter()
            .try_for_each(|item| conforms(element, item, &format!("{at}[]"))),
        (Map(element), Value::Object(map)) => map
            .iter()
            .try_for_each(|(k, v)| conforms(element, v, &format!("{at}.{k}"))),
        (Object(fields), Value::Object(map)) => {
            for key in map.keys() {
                if !fields.iter().any(|(name, _)| name == key) {
                    return Err(format!("{at}.{key} is served but not in the shape"));
                }
            }
            for (name, field) in *fields {
                let child = map
                    .get(*name)
                    .ok_or_else(|| format!("{at}.{name} is in the shape but not served"))?;
                conforms(field, child, &format!("{at}.{name}"))?;
            }
            Ok(())
        }
        _ => Err(format!("{at} is {value} where the shape says {shape:?}")),
    }
}

/// The shapes selectors are checked against are the views clients get:
/// a field added to a view without its shape fails here.
#[test]
fn shapes_are_the_views_as_served() {
    use super::super::views::{
        AgentService, HealthCheck, HealthService, Node, ServiceAddress, ServiceEntry, ServiceNode,
        Weights,
    };
    use crate::model::{Meta, Status};
    use std::collections::BTreeMap;

    let meta = || Meta::from([("env".to_owned(), "prod".to_owned())]);
    let weights = || Weights {
        passing: 1,
        warning: 1,
    };
    let tagged = || {
        Some(BTreeMap::from([(
            "lan".to_owned(),
            ServiceAddress {
                address: "127.0.0.1".to_owned(),
                port: 80,
            },
        )]))
    };
    let node_addresses = || BTreeMap::from([("lan", "127.0.0.1".to_owned())]);
    let text = || "x".to_owned();
    let check = HealthCheck {
        node: text(),
        check_id: text(),
        name: text(),
        status: Status::Passing,
        notes: text(),
        output: text(),
        service_id: text(),
        service_name: text(),
        service_tags: vec![text()],
        kind: "ttl",
        interval: text(),
        timeout: text(),
        create_index: 1,
        modify_index: 2,
    };
    let agent = AgentService {
        id: text(),
        service: text(),
        tags: vec![text()],
        meta: meta(),
        port: 80,
        address: text(),
        weights: weights(),
        enable_tag_override: false,
        tagged_addresses: tagged(),
        datacenter: text(),
    };
    let service_node = ServiceNode {
        id: text(),
        node: text(),
        address: text(),
        datacenter: text(),
        tagged_addresses: node_addresses(),
        node_meta: BTreeMap::from([(text(), text())]),
        service_id: text(),
        service_name: text(),
        service_tags: vec![text()],
        service_address: text(),
        service_port: 80,
        service_meta: meta(),
        service_weights: weights(),
        service_enable_tag_override: true,
        service_tagged_addresses: tagged(),
        create_index: 1,
        modify_index: 2,
    };
    let entry = ServiceEntry {
        node: Node {
            id: text(),
            node: text(),
            address: text(),
            datacenter: text(),
            tagged_addresses: node_addresses(),
            meta: BTreeMap::new(),
            create_index: 1,
            modify_index: 1,
        },
        service: HealthService {
            id: text(),
            service: text(),
            tags: vec![text()],
            address: text(),
            port: 80,
            meta: meta(),
            weights: weights(),
            enable_tag_override: false,
            tagged_addresses: tagged(),
            create_index: 1,
            modify_index: 2,
        },
        checks: vec![check.clone()],
    };
    fn json(view: &impl Serialize) -> Value {
        serde_json::to_value(view).expect("views serialize")
    }
    for (name, shape, value) in [
        ("HealthCheck", &HEALTH_CHECK, json(&check)),
        ("AgentService", &AGENT_SERVICE, json(&agent)),
        ("ServiceNode", &SERVICE_NODE, json(&service_node)),
        ("ServiceEntry", &SERVICE_ENTRY, json(&entry)),
    ] {
        conforms(shape, &value, name).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Every prefix and every one-character deletion of some filters, with
/// non-ASCII text and escapes in them, is parsed or refused, never a
/// panic, and what parses evaluates.
#[test]
fn cut_and_damaged_filters_never_panic() {
    let filters = [
        r#"not (Service.Meta["é t"] == "a\u00e9\"b" or "v2" in Service.Tags) and Checks.0.Status != `x`"#,
        r#"Service.ID matches "^wéb-[0-9]+$" and Service.Port == -12 or Service.Tags is not empty"#,
        "Checks.Status not matches \"\\x41\" and Service.EnableTagOverride == true",
        "((Service.Weights.Passing == 1.5)) or Node.Meta.k is empty",
    ];
    let value = entry();
    let mut tried = 0;
    for filter in filters {
        let boundaries: Vec<usize> = filter
            .char_indices()
            .map(|(i, _)| i)
            .chain([filter.len()])
            .collect();
        let mut variants: Vec<String> = boundaries
            .iter()
            .map(|&end| filter[..end].to_owned())
            .collect();
        for pair in boundaries.windows(2) {
            variants.push(format!("{}{}", &filter[..pair[0]], &filter[pair[1]..]));
        }
        for variant in variants {
            if let Ok(parsed) = Filter::parse(&variant, &SERVICE_ENTRY) {
                parsed.expression.eval(&value);
            }
            tried += 1;
        }
    }
    assert!(tried > 400, "{tried}");
}

#[test]
fn every_endpoint_shape_resolves_its_documented_selectors() {
    for (shape, selector) in [
        (&AGENT_SERVICE, "Meta.env"),
        (&AGENT_SERVICE, "TaggedAddresses.lan.Port"),
        (&SERVICE_NODE, "ServiceMeta.k"),
        (&SERVICE_NODE, "ServiceWeights.Warning"),
        (&HEALTH_CHECK, "ServiceTags"),
        (&SERVICE_ENTRY, "Checks.CheckID"),
    ] {
        let path: Vec<String> = selector.split('.').map(str::to_owned).collect();
        assert!(resolve(shape, &path).is_some(), "{selector}");
    }
}
