//! A registered instance of a service, and the native API's registration body.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    BEYOND_GO, CheckBody, CheckDefinition, GO_MAX_DURATION, InstanceId, MAINTENANCE_CHECK_PREFIX,
    MAX_CHECKS, Meta, ServiceName, ValidationError,
};

/// Most tags one instance may carry; more is almost certainly a bug upstream.
pub const MAX_TAGS: usize = 64;
/// Most metadata entries one instance may carry (each becomes a TXT string).
pub const MAX_META: usize = 64;
/// A TXT character-string holds at most 255 octets (RFC 1035 section 3.3).
const MAX_TXT_STRING: usize = 255;

/// One registered instance: where it is, how to weigh it, how to check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub service: ServiceName,
    pub id: InstanceId,
    /// The address DNS serves.
    pub address: IpAddr,
    /// The address as the client gave it, when that was not an IP: a
    /// hostname (resolved into `address` at registration) or, through the
    /// Consul API, empty for "the node's address". Shown back to clients.
    pub address_as_given: Option<String>,
    /// 0 only through the Consul API, which allows a missing port.
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: Meta,
    /// SRV weight (RFC 2782): relative share among equal priorities.
    pub weight: u16,
    /// SRV priority: lower is preferred.
    pub priority: u16,
    pub checks: Vec<CheckDefinition>,
    /// Consul's `EnableTagOverride`: kept and shown back; roster has no
    /// anti-entropy for it to govern.
    pub enable_tag_override: bool,
    /// Consul's service `TaggedAddresses` (`lan`, `wan`, ...): kept and shown
    /// back, not served in DNS. Boxed: most instances have none.
    pub tagged_addresses: Option<Box<TaggedAddresses>>,
}

/// Consul's service tagged addresses, by tag.
pub type TaggedAddresses = BTreeMap<String, TaggedAddress>;

/// One tagged address: where the service answers by that tag's route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedAddress {
    pub address: String,
    pub port: u16,
}

/// Most tagged addresses one instance may carry.
pub const MAX_TAGGED_ADDRESSES: usize = 16;

/// The native API's registration body, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceBody {
    pub address: String,
    pub port: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    pub weight: Option<u16>,
    pub priority: Option<u16>,
    pub check: Option<CheckBody>,
    #[serde(default)]
    pub checks: Vec<CheckBody>,
}

impl InstanceBody {
    /// Validates the body for `service`/`id` into an [`Instance`].
    pub fn validate(self, service: &str, id: &str) -> Result<Instance, ValidationError> {
        let service = ServiceName::parse(service)?;
        let id = InstanceId::parse(id)?;
        let address: IpAddr = self.address.trim().parse().map_err(|_| {
            ValidationError::new(
                "address",
                format!("{:?} is not an IPv4 or IPv6 address", self.address),
            )
        })?;
        // Port 0 is Consul's "no port"; the native API, whose path names
        // one endpoint, wants a real one.
        if self.port == 0 || self.port > u32::from(u16::MAX) {
            return Err(ValidationError::new("port", "must be between 1 and 65535"));
        }
        let tags = validate_tags(self.tags)?;
        let mut bodies: Vec<(String, CheckBody)> = Vec::new();
        if let Some(check) = self.check {
            bodies.push(("check".to_owned(), check));
        }
        for (i, check) in self.checks.into_iter().enumerate() {
            bodies.push((format!("checks[{i}]"), check));
        }
        let checks = validate_checks(bodies, &service, &id)?;
        let instance = Instance {
            service,
            id,
            address,
            address_as_given: None,
            port: self.port as u16,
            tags,
            meta: self.meta.into(),
            weight: self.weight.unwrap_or(1),
            priority: self.priority.unwrap_or(0),
            checks,
            enable_tag_override: false,
            tagged_addresses: None,
        };
        instance.validate_incoming()?;
        Ok(instance)
    }
}

/// Longest address text shown back (a DNS name is at most 253 octets).
const MAX_ADDRESS_TEXT: usize = 255;

impl Instance {
    /// The rules every instance obeys, however it arrived: through either
    /// API, in an import, from the store at start-up. Each door parses its
    /// own format, then calls this, so none can let through what another
    /// refuses. The service and ID are typed and valid by construction.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.address.is_unspecified() || self.address.is_multicast() {
            return Err(ValidationError::new(
                "address",
                format!("{} cannot be an instance's address", self.address),
            ));
        }
        if let Some(given) = &self.address_as_given
            && (given.len() > MAX_ADDRESS_TEXT || given.chars().any(char::is_control))
        {
            return Err(ValidationError::new(
                "address",
                format!("must be at most {MAX_ADDRESS_TEXT} printable characters"),
            ));
        }
        check_tags(&self.tags)?;
        validate_meta(&self.meta)?;
        if let Some(tagged) = &self.tagged_addresses {
            validate_tagged_addresses(tagged)?;
        }
        if self.checks.len() > MAX_CHECKS {
            return Err(ValidationError::new(
                "checks",
                format!("at most {MAX_CHECKS} checks per instance"),
            ));
        }
        for (i, check) in self.checks.iter().enumerate() {
            let prefix = format!("checks[{i}]");
            check.validate(&prefix)?;
            if self.checks[..i].iter().any(|c| c.id == check.id) {
                return Err(ValidationError::new(
                    format!("{prefix}.id"),
                    format!("check ID {:?} is used twice", check.id),
                ));
            }
        }
        Ok(())
    }

    /// [`Self::validate`] and the rules added since stores were written,
    /// which hold for what arrives (either API, an import, DNS UPDATE) but
    /// not for what is read back (the store at start-up, etcd's feed), so
    /// that an upgrade never drops an instance an older version kept:
    /// - a check ID of the form `service:<id>[:<n>]` names this instance:
    ///   Consul's check endpoints find it as instance `<id>`'s check;
    /// - `_service_maintenance:...` is the ID of the check Consul's API
    ///   shows for a drained instance;
    /// - durations fit Go's (a longer one is shown back as text a Go
    ///   client cannot parse).
    pub fn validate_incoming(&self) -> Result<(), ValidationError> {
        self.validate()?;
        for (i, check) in self.checks.iter().enumerate() {
            if let Some((name, _)) = check
                .durations()
                .into_iter()
                .find(|(_, duration)| *duration > GO_MAX_DURATION)
            {
                return Err(ValidationError::new(
                    format!("checks[{i}].{name}"),
                    BEYOND_GO,
                ));
            }
            let field = || format!("checks[{i}].id");
            if let Some(named) = check.id.strip_prefix("service:")
                && !default_check_id_of(named, self.id.as_str())
            {
                return Err(ValidationError::new(
                    field(),
                    format!(
                        "check ID {:?} has the form of another instance's default check ID; this one may use only \"service:{}\" or \"service:{}:<n>\"",
                        check.id,
                        self.id.as_str(),
                        self.id.as_str()
                    ),
                ));
            }
            if check.id.starts_with(MAINTENANCE_CHECK_PREFIX) {
                return Err(ValidationError::new(
                    field(),
                    format!(
                        "{MAINTENANCE_CHECK_PREFIX}... is reserved: it names the maintenance check Consul's API shows for a drained instance"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Tagged addresses: at most [`MAX_TAGGED_ADDRESSES`], each tag a short
/// word, each address printable text (an IP or a name: Consul does not
/// check, and roster does not serve them).
pub fn validate_tagged_addresses(tagged: &TaggedAddresses) -> Result<(), ValidationError> {
    if tagged.len() > MAX_TAGGED_ADDRESSES {
        return Err(ValidationError::new(
            "tagged_addresses",
            format!("at most {MAX_TAGGED_ADDRESSES} tagged addresses"),
        ));
    }
    for (tag, address) in tagged {
        let word = !tag.is_empty()
            && tag.len() <= 64
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !word {
            return Err(ValidationError::new(
                "tagged_addresses",
                format!("{tag:?} is not a tag: 1 to 64 letters, digits, '_' or '-'"),
            ));
        }
        if address.address.is_empty()
            || address.address.len() > MAX_ADDRESS_TEXT
            || address.address.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                format!("tagged_addresses.{tag}.address"),
                format!("must be 1 to {MAX_ADDRESS_TEXT} printable characters"),
            ));
        }
    }
    Ok(())
}

/// Longest maintenance reason kept.
pub const MAX_MAINTENANCE_REASON: usize = 4096;

/// A maintenance reason: at most [`MAX_MAINTENANCE_REASON`] bytes, printable.
pub fn validate_maintenance_reason(reason: &str) -> Result<(), ValidationError> {
    if reason.len() > MAX_MAINTENANCE_REASON || reason.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "reason",
            format!("must be at most {MAX_MAINTENANCE_REASON} printable characters"),
        ));
    }
    Ok(())
}

/// Whether `named`, a check ID after its `service:`, is instance `id`'s
/// own: `<id>` or `<id>:<n>`.
pub(crate) fn default_check_id_of(named: &str, id: &str) -> bool {
    match named.strip_prefix(id) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Validates a list of checks, giving each a Consul-style default ID:
/// `service:<id>` for one, `service:<id>:<n>` (1-based) for several.
pub(crate) fn validate_checks(
    bodies: Vec<(String, CheckBody)>,
    service: &ServiceName,
    id: &InstanceId,
) -> Result<Vec<CheckDefinition>, ValidationError> {
    if bodies.len() > MAX_CHECKS {
        return Err(ValidationError::new(
            "checks",
            format!("at most {MAX_CHECKS} checks per instance"),
        ));
    }
    let several = bodies.len() > 1;
    let mut checks: Vec<CheckDefinition> = Vec::with_capacity(bodies.len());
    for (n, (prefix, body)) in bodies.into_iter().enumerate() {
        let default_id = if several {
            format!("service:{}:{}", id.as_str(), n + 1)
        } else {
            format!("service:{}", id.as_str())
        };
        let default_name = format!("Service '{}' check", service.as_str());
        let check = body.validate(&prefix, default_id, default_name)?;
        if checks.iter().any(|c| c.id == check.id) {
            return Err(ValidationError::new(
                format!("{prefix}.id"),
                format!("check ID {:?} is used twice", check.id),
            ));
        }
        checks.push(check);
    }
    Ok(checks)
}

/// Tags: at most [`MAX_TAGS`], each 1–255 printable bytes; duplicates folded.
pub fn validate_tags(tags: Vec<String>) -> Result<Vec<String>, ValidationError> {
    check_tags(&tags)?;
    let mut unique: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !unique.contains(&tag) {
            unique.push(tag);
        }
    }
    Ok(unique)
}

fn check_tags(tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::new(
            "tags",
            format!("at most {MAX_TAGS} tags per instance"),
        ));
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > 255 || tag.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                "tags",
                format!("tag {tag:?} must be 1 to 255 printable characters"),
            ));
        }
    }
    Ok(())
}

/// Metadata: at most [`MAX_META`] entries, keys `[A-Za-z0-9_-]` (as Consul
/// requires), and every `key=value` fitting one TXT string without control
/// characters, because each entry is served as one.
pub fn validate_meta(meta: &Meta) -> Result<(), ValidationError> {
    if meta.len() > MAX_META {
        return Err(ValidationError::new(
            "meta",
            format!("at most {MAX_META} metadata entries per instance"),
        ));
    }
    for (key, value) in meta {
        let valid_key = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_key {
            return Err(ValidationError::new(
                format!("meta.{key}"),
                "metadata keys are 1 to 128 characters of letters, digits, '-' and '_'",
            ));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                format!("meta.{key}"),
                "value contains control characters and cannot be served as TXT",
            ));
        }
        if key.len() + 1 + value.len() > MAX_TXT_STRING {
            return Err(ValidationError::new(
                format!("meta.{key}"),
                format!("\"key=value\" must fit in {MAX_TXT_STRING} bytes to be served as TXT"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Instance, ValidationError> {
        let body: InstanceBody = serde_json::from_str(json).expect(json);
        body.validate("web", "web-1")
    }

    /// `service:<id>[:<n>]` is instance <id>'s own default check ID, and
    /// `_service_maintenance:` names Consul's maintenance check: neither
    /// is free for another instance's check.
    #[test]
    fn check_ids_of_another_instance_or_maintenance_are_refused() {
        for own in ["service:web-1", "service:web-1:2", "health"] {
            let body = format!(
                r#"{{"address":"127.0.0.1","port":80,"check":{{"id":"{own}","ttl":"10s"}}}}"#
            );
            assert!(parse(&body).is_ok(), "{own}");
        }
        for taken in [
            "service:web-10",
            "service:web",
            "service:web-1:",
            "service:web-1:x",
            "service:api-1",
            "_service_maintenance:web-1",
        ] {
            let body = format!(
                r#"{{"address":"127.0.0.1","port":80,"check":{{"id":"{taken}","ttl":"10s"}}}}"#
            );
            let error = parse(&body).expect_err(taken);
            assert!(error.field.ends_with("id"), "{taken}: {error:?}");
        }
        // Read back from a store an older version wrote, the same instance
        // still passes: an upgrade drops nothing.
        let mut stored =
            parse(r#"{"address":"127.0.0.1","port":80,"check":{"ttl":"10s"}}"#).expect("valid");
        for taken in ["service:api-1", "_service_maintenance:web-1"] {
            stored.checks[0].id = taken.to_owned();
            assert!(stored.validate().is_ok(), "{taken}");
            assert!(stored.validate_incoming().is_err(), "{taken}");
        }
    }

    #[test]
    fn accepts_a_full_body() {
        let instance = parse(
            r#"{"address":"10.0.0.5","port":8080,"tags":["http","http"],"meta":{"version":"1.2"},
               "weight":3,"priority":1,"checks":[{"ttl":"10s"},{"tcp":"10.0.0.5:8080","interval":"1s"}]}"#,
        )
        .expect("valid");
        assert_eq!(instance.tags, vec!["http"]);
        assert_eq!(instance.weight, 3);
        assert_eq!(instance.checks[0].id, "service:web-1:1");
        assert_eq!(instance.checks[1].id, "service:web-1:2");
    }

    #[test]
    fn refuses_bad_fields() {
        let cases = [
            (r#"{"address":"10.0.0.256","port":1}"#, "address"),
            (r#"{"address":"0.0.0.0","port":1}"#, "address"),
            (r#"{"address":"10.0.0.1","port":0}"#, "port"),
            (r#"{"address":"10.0.0.1","port":65536}"#, "port"),
            (r#"{"address":"10.0.0.1","port":1,"tags":[""]}"#, "tags"),
            (
                r#"{"address":"10.0.0.1","port":1,"meta":{"a b":"c"}}"#,
                "meta.a b",
            ),
            (
                r#"{"address":"10.0.0.1","port":1,"meta":{"k":"line\nbreak"}}"#,
                "meta.k",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(parse(json).expect_err(json).field, field, "{json}");
        }
        let long = format!(
            r#"{{"address":"10.0.0.1","port":1,"meta":{{"k":"{}"}}}}"#,
            "v".repeat(254)
        );
        assert_eq!(parse(&long).expect_err("long").field, "meta.k");
    }

    /// The model half of tests/http_api.rs's
    /// `bad_fields_are_4xx_naming_the_field_and_change_nothing`: every case
    /// there that this validation decides (not JSON types or unknown fields,
    /// which the HTTP layer names), each with the field it must blame, or a
    /// sub-field of it (`meta.k` for `meta`). That test keeps one case per
    /// rule.
    #[test]
    fn refuses_every_bad_field_of_the_end_to_end_table() {
        let ok = |extra: &str| format!(r#"{{"address":"10.0.0.9","port":81{extra}}}"#);
        let many_tags: Vec<String> = (0..65).map(|n| format!("\"t{n}\"")).collect();
        let many_meta: Vec<String> = (0..65).map(|n| format!("\"k{n}\":\"v\"")).collect();
        let long_value = "v".repeat(254); // "k=" + 254 octets > 255
        let long_name = "a".repeat(64); // a DNS label holds 63
        let cases: Vec<(&str, &str, String, &str)> = vec![
            (
                "web",
                "web-1",
                r#"{"address":"10.0.0.256","port":81}"#.into(),
                "address",
            ),
            (
                "web",
                "web-1",
                r#"{"address":"not-an-ip","port":81}"#.into(),
                "address",
            ),
            (
                "web",
                "web-1",
                r#"{"address":"","port":81}"#.into(),
                "address",
            ),
            (
                "web",
                "web-1",
                r#"{"address":"10.0.0.9","port":0}"#.into(),
                "port",
            ),
            (
                "web",
                "web-1",
                r#"{"address":"10.0.0.9","port":65536}"#.into(),
                "port",
            ),
            (
                "web",
                "web-1",
                ok(&format!(r#","tags":[{}]"#, many_tags.join(","))),
                "tags",
            ),
            (
                "web",
                "web-1",
                ok(&format!(r#","meta":{{{}}}"#, many_meta.join(","))),
                "meta",
            ),
            ("web", "web-1", ok(r#","meta":{"k":"a\u0001b"}"#), "meta"),
            ("web", "web-1", ok(r#","meta":{"k":"line\nbreak"}"#), "meta"),
            (
                "web",
                "web-1",
                ok(&format!(r#","meta":{{"k":"{long_value}"}}"#)),
                "meta",
            ),
            ("---", "x-1", ok(""), "service"),
            ("café", "x-1", ok(""), "service"),
            (&long_name, "x-1", ok(""), "service"),
            ("web", "---", ok(""), "id"),
            ("web", "caf\u{e9}-1", ok(""), "id"),
        ];
        let mut wrong = Vec::new();
        for (service, id, json, field) in &cases {
            let body: InstanceBody = serde_json::from_str(json).expect(json);
            match body.validate(service, id) {
                Ok(_) => wrong.push(format!("{service}/{id} {json}: accepted")),
                Err(e) if e.field == *field || e.field.starts_with(&format!("{field}.")) => {}
                Err(e) => wrong.push(format!(
                    "{service}/{id} {json}: blamed {:?} ({}), not {field:?}",
                    e.field, e.message
                )),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
