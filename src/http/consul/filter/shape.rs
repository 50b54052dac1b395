//! The JSON shape of each filtering endpoint's answer, which a filter is
//! checked against when it is parsed, and how a selector walks it.

/// The JSON shape of what an endpoint returns, for checking selectors.
#[derive(Debug, Clone, Copy)]
pub(in crate::http::consul) enum Shape {
    Text,
    Bool,
    /// An integer (ports, weights, indexes).
    Number,
    List(&'static Shape),
    /// String keys, any of which a selector may name.
    Map(&'static Shape),
    /// Fixed keys, as the view serializes them.
    Object(&'static [(&'static str, Shape)]),
}

use Shape::{Bool, List, Map, Number, Object, Text};

const TEXT_LIST: Shape = List(&Text);
const TEXT_MAP: Shape = Map(&Text);
const WEIGHTS: Shape = Object(&[("Passing", Number), ("Warning", Number)]);
const SERVICE_ADDRESSES: Shape = Map(&Object(&[("Address", Text), ("Port", Number)]));

/// `views::AgentService`: `/v1/agent/services`.
pub(in crate::http::consul) const AGENT_SERVICE: Shape = Object(&[
    ("ID", Text),
    ("Service", Text),
    ("Tags", TEXT_LIST),
    ("Meta", TEXT_MAP),
    ("Port", Number),
    ("Address", Text),
    ("Weights", WEIGHTS),
    ("EnableTagOverride", Bool),
    ("TaggedAddresses", SERVICE_ADDRESSES),
    ("Datacenter", Text),
]);

/// `views::ServiceNode`: `/v1/catalog/service/:name`, and each instance
/// of `/v1/catalog/services`.
pub(in crate::http::consul) const SERVICE_NODE: Shape = Object(&[
    ("ID", Text),
    ("Node", Text),
    ("Address", Text),
    ("Datacenter", Text),
    ("TaggedAddresses", TEXT_MAP),
    ("NodeMeta", TEXT_MAP),
    ("ServiceID", Text),
    ("ServiceName", Text),
    ("ServiceTags", TEXT_LIST),
    ("ServiceAddress", Text),
    ("ServicePort", Number),
    ("ServiceMeta", TEXT_MAP),
    ("ServiceWeights", WEIGHTS),
    ("ServiceEnableTagOverride", Bool),
    ("ServiceTaggedAddresses", SERVICE_ADDRESSES),
    ("CreateIndex", Number),
    ("ModifyIndex", Number),
]);

/// `views::HealthCheck`: `/v1/agent/checks`, `/v1/health/checks/:name`,
/// `/v1/health/state/:state`.
pub(in crate::http::consul) const HEALTH_CHECK: Shape = Object(&[
    ("Node", Text),
    ("CheckID", Text),
    ("Name", Text),
    ("Status", Text),
    ("Notes", Text),
    ("Output", Text),
    ("ServiceID", Text),
    ("ServiceName", Text),
    ("ServiceTags", TEXT_LIST),
    ("Type", Text),
    ("Interval", Text),
    ("Timeout", Text),
    ("CreateIndex", Number),
    ("ModifyIndex", Number),
]);

/// `views::ServiceEntry`: `/v1/health/service/:name`.
pub(in crate::http::consul) const SERVICE_ENTRY: Shape = Object(&[
    (
        "Node",
        Object(&[
            ("ID", Text),
            ("Node", Text),
            ("Address", Text),
            ("Datacenter", Text),
            ("TaggedAddresses", TEXT_MAP),
            ("Meta", TEXT_MAP),
            ("CreateIndex", Number),
            ("ModifyIndex", Number),
        ]),
    ),
    (
        "Service",
        Object(&[
            ("ID", Text),
            ("Service", Text),
            ("Tags", TEXT_LIST),
            ("Address", Text),
            ("Port", Number),
            ("Meta", TEXT_MAP),
            ("Weights", WEIGHTS),
            ("EnableTagOverride", Bool),
            ("TaggedAddresses", SERVICE_ADDRESSES),
            ("CreateIndex", Number),
            ("ModifyIndex", Number),
        ]),
    ),
    ("Checks", List(&HEALTH_CHECK)),
]);

/// The shape a selector reaches, or `None` if it names nothing. A list is
/// crossed by an index (`Checks.0`) or, for any other key, by applying the
/// key to its elements.
pub(super) fn resolve(shape: &Shape, path: &[String]) -> Option<Shape> {
    let mut shape = *shape;
    let mut parts = path.iter().peekable();
    while let Some(part) = parts.peek() {
        shape = match shape {
            Object(fields) => fields.iter().find(|(key, _)| *key == part.as_str())?.1,
            Map(value) => *value,
            List(element) => {
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    *element
                } else {
                    // The same key applies to each element: do not consume it.
                    shape = *element;
                    continue;
                }
            }
            Text | Bool | Number => return None,
        };
        parts.next();
    }
    Some(shape)
}
