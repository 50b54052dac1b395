//! JSON views of registry state for the native API.
//!
//! A view borrows what it shows from the registry's state and is
//! serialized at once: every write answers with one, and copying an
//! instance's strings, tags and metadata into owned fields first was a
//! tenth of the write's HTTP work.

use std::{
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, Serializer, ser::SerializeStruct};

use super::error::ApiError;

use crate::{
    model::{CheckKind, Meta, Status, format_go_duration},
    registry::{InstanceState, ServiceState},
};

/// The DNS names an instance answers under, written out as they are
/// serialized: `service` (A/AAAA/SRV for every healthy instance of the
/// service), `srv` (SRV in RFC 2782 form) and `instance` (A/AAAA/TXT of
/// this instance).
pub(super) struct DnsNames<'a> {
    service_label: &'a str,
    instance_label: &'a str,
    /// Without its trailing dot.
    domain: &'a str,
}

impl Serialize for DnsNames<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (service, domain) = (self.service_label, self.domain);
        let mut names = serializer.serialize_struct("DnsNames", 3)?;
        names.serialize_field("service", &format_args!("{service}.{domain}."))?;
        names.serialize_field("srv", &format_args!("_{service}._tcp.{domain}."))?;
        let instance = self.instance_label;
        names.serialize_field("instance", &format_args!("{instance}.{service}.{domain}."))?;
        names.end()
    }
}

#[derive(Serialize)]
pub(super) struct CheckView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: Status,
    pub output: &'a str,
    /// RFC 3339 time of the last status change.
    pub changed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Serialize)]
pub(super) struct InstanceView<'a> {
    pub service: &'a str,
    pub id: &'a str,
    /// Serialized as its text, as serde writes addresses for JSON.
    pub address: IpAddr,
    pub port: u16,
    pub tags: &'a [String],
    pub meta: &'a Meta,
    pub weight: u16,
    pub priority: u16,
    /// The worst of the checks; passing without checks.
    pub status: Status,
    /// Whether DNS hands this instance out right now.
    pub in_dns: bool,
    /// The reason, while drained for maintenance.
    pub maintenance: Option<&'a str>,
    pub dns: DnsNames<'a>,
    pub checks: Vec<CheckView<'a>>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Serialize)]
pub(super) struct ServiceSummary {
    pub name: String,
    pub dns_name: String,
    pub instances: usize,
    /// Instances DNS hands out now.
    pub in_dns: usize,
}

#[derive(Serialize)]
pub(super) struct ServiceView<'a> {
    pub name: String,
    pub dns_name: String,
    pub instances: Vec<InstanceView<'a>>,
}

/// `view` as a JSON response, serialized into a buffer an instance's view
/// fits (axum's `Json` starts at 128 octets and grows several times).
pub(super) fn json_response(view: &impl Serialize) -> Response {
    let mut body = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut body, view) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Formats a time as RFC 3339 UTC, to the millisecond.
pub(super) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), for UTC dates.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// `label.domain.`, whether or not `domain` ends in a dot.
fn fqdn(label: &str, domain: &str) -> String {
    format!("{label}.{}.", domain.trim_end_matches('.'))
}

pub(super) fn instance_view<'a>(
    state: &'a InstanceState,
    domain: &'a str,
    include_warning: bool,
) -> InstanceView<'a> {
    let instance = &state.instance;
    let service_label = instance.service.label().as_str();
    let checks = instance
        .checks
        .iter()
        .zip(&state.checks)
        .map(|(def, check)| {
            let (target, interval, timeout, ttl) = match &def.kind {
                CheckKind::Http {
                    url,
                    interval,
                    timeout,
                    ..
                } => (Some(url.as_str()), Some(*interval), Some(*timeout), None),
                CheckKind::Tcp {
                    address,
                    interval,
                    timeout,
                } => (
                    Some(address.as_str()),
                    Some(*interval),
                    Some(*timeout),
                    None,
                ),
                CheckKind::Ttl { ttl } => (None, None, None, Some(*ttl)),
            };
            CheckView {
                id: &def.id,
                name: &def.name,
                kind: def.kind.type_name(),
                status: check.status,
                output: &check.output,
                changed_at: rfc3339(check.changed_at),
                target,
                interval: interval.map(|d| format_go_duration(d.0)),
                timeout: timeout.map(|d| format_go_duration(d.0)),
                ttl: ttl.map(|d| format_go_duration(d.0)),
            }
        })
        .collect();
    InstanceView {
        service: instance.service.as_str(),
        id: instance.id.as_str(),
        address: instance.address,
        port: instance.port,
        tags: &instance.tags,
        meta: &instance.meta,
        weight: instance.weight,
        priority: instance.priority,
        status: state.status(),
        in_dns: state.is_servable(include_warning),
        maintenance: state.maintenance.as_deref(),
        dns: DnsNames {
            service_label,
            instance_label: instance.id.label().as_str(),
            domain: domain.trim_end_matches('.'),
        },
        checks,
        create_index: state.create_index,
        modify_index: state.modify_index,
    }
}

pub(super) fn service_summary(
    service: &ServiceState,
    domain: &str,
    include_warning: bool,
) -> ServiceSummary {
    ServiceSummary {
        name: service.name.as_str().to_owned(),
        dns_name: fqdn(service.name.label().as_str(), domain),
        instances: service.len(),
        in_dns: service
            .instances()
            .filter(|i| i.is_servable(include_warning))
            .count(),
    }
}

pub(super) fn service_view<'a>(
    service: &'a ServiceState,
    domain: &'a str,
    include_warning: bool,
) -> ServiceView<'a> {
    ServiceView {
        name: service.name.as_str().to_owned(),
        dns_name: fqdn(service.name.label().as_str(), domain),
        instances: service
            .instances()
            .map(|i| instance_view(i, domain, include_warning))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of an instance's view, as clients read it: a drained
    /// instance with tags, metadata, an HTTP and a TTL check.
    #[test]
    fn an_instance_view_shows_the_whole_instance() {
        use std::{sync::Arc, time::Duration};

        use crate::{model::InstanceBody, registry::CheckState};

        let body: InstanceBody = serde_json::from_str(
            r#"{"address":"2001:db8::5","port":8080,"tags":["v1","canary"],
                "meta":{"zone":"a","version":"1.2"},"weight":3,"priority":1,
                "checks":[{"http":"http://127.0.0.1:9/health","interval":"10s","timeout":"1500ms"},
                          {"id":"beat","name":"Heartbeat","ttl":"30s"}]}"#,
        )
        .expect("a body");
        let instance = body.validate("Web API", "Web 1").expect("valid");
        let changed_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let check = |status, output: &str| CheckState {
            status,
            output: output.to_owned(),
            changed_at,
            modify_index: 7,
        };
        let state = InstanceState {
            instance: Arc::new(instance),
            checks: vec![
                check(Status::Passing, "HTTP 200"),
                check(Status::Warning, "slow"),
            ],
            maintenance: Some("upgrade".to_owned()),
            create_index: 5,
            modify_index: 9,
        };
        let view = serde_json::to_value(instance_view(&state, "service.local.", true)).unwrap();
        let changed_at = "2023-11-14T22:13:20.123Z";
        let expected = serde_json::json!({
            "service": "Web API",
            "id": "Web 1",
            "address": "2001:db8::5",
            "port": 8080,
            "tags": ["v1", "canary"],
            "meta": {"version": "1.2", "zone": "a"},
            "weight": 3,
            "priority": 1,
            "status": "warning",
            "in_dns": false,
            "maintenance": "upgrade",
            "dns": {
                "service": "web-api.service.local.",
                "srv": "_web-api._tcp.service.local.",
                "instance": "web-1.web-api.service.local.",
            },
            "checks": [
                {
                    "id": "service:Web 1:1",
                    "name": "Service 'Web API' check",
                    "type": "http",
                    "status": "passing",
                    "output": "HTTP 200",
                    "changed_at": changed_at,
                    "target": "http://127.0.0.1:9/health",
                    "interval": "10s",
                    "timeout": "1.5s",
                },
                {
                    "id": "beat",
                    "name": "Heartbeat",
                    "type": "ttl",
                    "status": "warning",
                    "output": "slow",
                    "changed_at": changed_at,
                    "ttl": "30s",
                },
            ],
            "create_index": 5,
            "modify_index": 9,
        });
        assert_eq!(view, expected);
    }

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
