//! `PUT /v1/agent/service/register` bodies translated into an [`Instance`].
//!
//! Consul's rules, mapped onto roster's model:
//! - `Name` is required; `ID` defaults to it. Names with spaces are
//!   accepted and mapped to a DNS label (`Hello Service` → `hello-service`).
//! - `Address` empty or missing means "the node's address": DNS serves
//!   `consul.node_address` and Consul views show `""`. A hostname is
//!   resolved now (IPv4 preferred) and shown back as written; one that
//!   does not resolve is refused, since DNS could never serve it.
//! - `Port` missing is 0.
//! - `Weights.Passing` becomes the SRV weight.
//! - `Check` then `Checks` (python-consul sends the first, py-consul the
//!   second), with Consul's default IDs `service:<id>` / `service:<id>:<n>`.
//! - `Kind`, `Connect`, `Proxy` and `SocketPath` describe Connect proxies
//!   and unix sockets, which DNS cannot serve: refused. `TaggedAddresses`
//!   and `EnableTagOverride` are kept and shown back (not served in DNS).
//!   `Locality` is accepted and not kept: it only orders answers by
//!   distance, which roster, with one node, does not do.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{
    checks::{ConsulCheck, is_set},
    error::ConsulError,
    keys::{decode_struct, parse_body},
};
use crate::{
    config::ConsulConfig,
    model::{
        CheckBody, Instance, InstanceId, Meta, ServiceName, TaggedAddress, TaggedAddresses,
        ValidationError, validate_checks, validate_meta, validate_tags,
    },
    resolve::{ResolveError, Resolver},
};

/// How long a hostname in `Address` may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A service definition, keys normalised.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ServiceBody {
    name: Option<String>,
    id: Option<String>,
    address: Option<String>,
    port: Option<i64>,
    tags: Option<Vec<String>>,
    meta: Option<BTreeMap<String, String>>,
    weights: Option<Value>,
    check: Option<Value>,
    checks: Option<Vec<Value>>,
    kind: Option<String>,
    connect: Option<Value>,
    proxy: Option<Value>,
    socketpath: Option<String>,
    enabletagoverride: Option<bool>,
    taggedaddresses: Option<Value>,
}

/// One of `TaggedAddresses`: a Consul struct (keys normalised) inside a
/// user map (tags kept as written).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TaggedAddressBody {
    address: Option<String>,
    port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WeightsBody {
    passing: Option<i64>,
    warning: Option<i64>,
}

/// Parses and validates a registration body into an instance.
pub(super) async fn instance_from_body(
    bytes: &[u8],
    config: &ConsulConfig,
) -> Result<Instance, ConsulError> {
    let body: ServiceBody = decode_struct(parse_body(bytes)?, "service")?;
    let unsupported = |what: &str| {
        ConsulError::bad_request(format!(
            "{what} is not supported: roster serves services over DNS, not Connect proxies or unix sockets"
        ))
    };
    if let Some(kind) = body.kind.as_deref().filter(|k| !k.is_empty()) {
        return Err(unsupported(&format!("Kind {kind:?}")));
    }
    if is_set(&body.connect) {
        return Err(unsupported("Connect"));
    }
    if is_set(&body.proxy) {
        return Err(unsupported("Proxy"));
    }
    if body.socketpath.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(unsupported("SocketPath"));
    }

    let name = body
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ConsulError::bad_request("Missing service name"))?;
    let service = ServiceName::parse(&name).map_err(|e| field_error("service name", e))?;
    let id_text = body.id.filter(|id| !id.is_empty()).unwrap_or(name);
    let id = InstanceId::parse(&id_text).map_err(|e| field_error("service ID", e))?;

    let port = match body.port {
        None => 0,
        Some(port) => u16::try_from(port).map_err(|_| {
            ConsulError::bad_request(format!("Invalid port {port}: must be 0 to 65535"))
        })?,
    };
    let weight = match body.weights {
        None | Some(Value::Null) => 1,
        Some(value) => {
            let weights: WeightsBody = decode_struct(value, "Weights")?;
            let passing = weights.passing.unwrap_or(1);
            if passing < 1 {
                return Err(ConsulError::bad_request("Passing must be greater than 0"));
            }
            if weights.warning.is_some_and(|w| w < 0) {
                return Err(ConsulError::bad_request(
                    "Warning must be greater or equal than 0",
                ));
            }
            u16::try_from(passing).map_err(|_| {
                ConsulError::bad_request(
                    "Weights.Passing must be at most 65535: it is served as the SRV weight",
                )
            })?
        }
    };
    let tags = validate_tags(body.tags.unwrap_or_default())?;
    let meta = Meta::from(body.meta.unwrap_or_default());
    validate_meta(&meta)?;

    let mut bodies: Vec<(String, CheckBody)> = Vec::new();
    if let Some(check) = body.check.filter(|c| !ConsulCheck::is_empty(c)) {
        bodies.push((
            "Check".to_owned(),
            ConsulCheck::decode(check)?.into_check_body()?,
        ));
    }
    for (n, check) in body.checks.unwrap_or_default().into_iter().enumerate() {
        if ConsulCheck::is_empty(&check) {
            continue;
        }
        bodies.push((
            format!("Checks[{n}]"),
            ConsulCheck::decode(check)?.into_check_body()?,
        ));
    }
    let checks = validate_checks(bodies, &service, &id).map_err(ConsulError::invalid_check)?;

    let (address, address_as_given) = resolve_address(body.address, config.node_address).await?;
    let instance = Instance {
        service,
        id,
        address,
        address_as_given,
        port,
        tags,
        meta,
        weight,
        priority: 0,
        checks,
        enable_tag_override: body.enabletagoverride.unwrap_or(false),
        tagged_addresses: tagged_addresses(body.taggedaddresses)?.map(Box::new),
    };
    // The rules every door shares; the checks above gave Consul's messages.
    instance.validate_incoming()?;
    Ok(instance)
}

/// `TaggedAddresses`: `{"lan": {"Address": "10.0.0.1", "Port": 80}, ...}`;
/// `None` when absent or empty.
fn tagged_addresses(value: Option<Value>) -> Result<Option<TaggedAddresses>, ConsulError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ConsulError::bad_request(
                "Request decode failed: TaggedAddresses must be a JSON object",
            ));
        }
    };
    let mut tagged = TaggedAddresses::new();
    for (tag, value) in object {
        let body: TaggedAddressBody = decode_struct(value, "TaggedAddresses")?;
        let port = u16::try_from(body.port.unwrap_or(0)).map_err(|_| {
            ConsulError::bad_request(format!(
                "Invalid TaggedAddresses.{tag}.Port: must be 0 to 65535"
            ))
        })?;
        let address = body.address.unwrap_or_default();
        tagged.insert(tag, TaggedAddress { address, port });
    }
    Ok((!tagged.is_empty()).then_some(tagged))
}

fn field_error(what: &str, error: ValidationError) -> ConsulError {
    ConsulError::bad_request(format!("Invalid {what}: {}", error.message))
}

/// The address DNS serves and the address to show back, from `Address`.
async fn resolve_address(
    given: Option<String>,
    node_address: IpAddr,
) -> Result<(IpAddr, Option<String>), ConsulError> {
    let given = given.unwrap_or_default();
    let text = given.trim();
    if text.is_empty() {
        return Ok((node_address, Some(String::new())));
    }
    let invalid = |reason: String| {
        ConsulError::bad_request(format!("Invalid service address {given:?}: {reason}"))
    };
    let literal = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(invalid(format!("{ip} cannot be an instance's address")));
        }
        return Ok((ip, None));
    }
    let hostname = text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !hostname {
        return Err(invalid("not an IP address or a hostname".to_owned()));
    }
    // Through the shared bounded resolver: a burst of lookups must not take
    // hundreds of blocking threads (see `crate::resolve`).
    let lookup = Resolver::shared().lookup(text, 0, RESOLVE_TIMEOUT).await;
    let addresses: Vec<IpAddr> = match lookup {
        Err(busy @ ResolveError::Busy) => {
            return Err(ConsulError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Cannot resolve service address {given:?} now: {busy}"),
            ));
        }
        Err(error) => return Err(invalid(error.to_string())),
        Ok(found) => found.into_iter().map(|a| a.ip()).collect(),
    };
    let chosen = addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addresses.first())
        .copied()
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
        .ok_or_else(|| invalid("it resolves to no usable address".to_owned()))?;
    Ok((chosen, Some(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Status;

    async fn register(value: Value) -> Result<Instance, String> {
        let bytes = serde_json::to_vec(&value).expect("json");
        instance_from_body(&bytes, &ConsulConfig::default())
            .await
            .map_err(|e| e.message)
    }

    #[tokio::test]
    async fn the_origin_example_body() {
        let instance = register(json!({"name": "Hello Service", "id": "hello-service",
            "address": "localhost", "port": 8080, "tags": ["http"]}))
        .await
        .expect("valid");
        assert_eq!(instance.service.label().as_str(), "hello-service");
        assert_eq!(instance.address_as_given.as_deref(), Some("localhost"));
        assert!(instance.address.is_loopback());
        assert_eq!(instance.port, 8080);
    }

    #[tokio::test]
    async fn defaults_follow_consul() {
        let instance = register(json!({"Name": "web"})).await.expect("valid");
        assert_eq!(instance.id.as_str(), "web");
        assert_eq!(instance.port, 0);
        assert_eq!(instance.address, ConsulConfig::default().node_address);
        assert_eq!(instance.address_as_given.as_deref(), Some(""));
        assert_eq!(instance.weight, 1);

        let instance = register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.5",
            "Weights": {"Passing": 5, "Warning": 1},
            "check": {"ttl": "10s"}, "Checks": [{"http": "http://10.0.0.5/", "interval": "1s"}]}))
        .await
        .expect("valid");
        assert_eq!(instance.address_as_given, None);
        assert_eq!(instance.weight, 5);
        let ids: Vec<&str> = instance.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["service:web-1:1", "service:web-1:2"]);
        assert_eq!(instance.checks[0].name, "Service 'web' check");
        assert_eq!(instance.checks[0].initial_status, Status::Critical);

        let one = register(json!({"name": "web", "checks": [{"ttl": "10s"}], "check": {}}))
            .await
            .expect("valid");
        assert_eq!(one.checks[0].id, "service:web");
    }

    #[tokio::test]
    async fn refusals_use_consuls_words() {
        let cases = [
            (json!({"port": 1}), "Missing service name"),
            (json!({"name": ""}), "Missing service name"),
            (json!({"name": "web", "port": 70000}), "Invalid port"),
            (json!({"name": "---"}), "Invalid service name"),
            (
                json!({"name": "web", "check": {"grpc": "x:1", "interval": "1s"}}),
                "Invalid check: grpc",
            ),
            (
                json!({"name": "web", "checks": [{"http": "http://a/"}]}),
                "Invalid check: Checks[0].interval",
            ),
            (
                json!({"name": "web", "address": "no such host!"}),
                "Invalid service address",
            ),
            (
                json!({"name": "web", "address": "0.0.0.0"}),
                "Invalid service address",
            ),
            (
                json!({"name": "web", "address": "name.invalid"}),
                "Invalid service address",
            ),
            (
                json!({"name": "web", "Kind": "connect-proxy"}),
                "not supported",
            ),
            (
                json!({"name": "web", "Weights": {"Passing": 0}}),
                "Passing must be greater than 0",
            ),
            (
                json!({"name": "web", "tags": "http"}),
                "Request decode failed",
            ),
            (
                json!({"name": "web", "meta": {"a b": "c"}}),
                "Invalid meta.a b",
            ),
        ];
        for (value, expected) in cases {
            let message = register(value.clone()).await.expect_err(&value.to_string());
            assert!(message.contains(expected), "{value}: {message}");
        }
    }
}
