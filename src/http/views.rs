//! JSON views of registry state for the native API.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::{
    model::{CheckKind, Meta, Status, format_go_duration},
    registry::{InstanceState, ServiceState},
};

/// The DNS names an instance answers under.
#[derive(Serialize)]
pub(super) struct DnsNames {
    /// A/AAAA/SRV for every healthy instance of the service.
    pub service: String,
    /// SRV in RFC 2782 form.
    pub srv: String,
    /// A/AAAA/TXT of this instance.
    pub instance: String,
}

#[derive(Serialize)]
pub(super) struct CheckView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: Status,
    pub output: String,
    /// RFC 3339 time of the last status change.
    pub changed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Serialize)]
pub(super) struct InstanceView {
    pub service: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub weight: u16,
    pub priority: u16,
    /// The worst of the checks; passing without checks.
    pub status: Status,
    /// Whether DNS hands this instance out right now.
    pub in_dns: bool,
    /// The reason, while drained for maintenance.
    pub maintenance: Option<String>,
    pub dns: DnsNames,
    pub checks: Vec<CheckView>,
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
pub(super) struct ServiceView {
    pub name: String,
    pub dns_name: String,
    pub instances: Vec<InstanceView>,
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

/// `label.domain.` with the domain given without its trailing dot.
fn fqdn(labels: &[&str], domain: &str) -> String {
    let mut name = labels.join(".");
    name.push('.');
    name.push_str(domain.trim_end_matches('.'));
    name.push('.');
    name
}

pub(super) fn instance_view(
    state: &InstanceState,
    domain: &str,
    include_warning: bool,
) -> InstanceView {
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
                } => (Some(url.clone()), Some(*interval), Some(*timeout), None),
                CheckKind::Tcp {
                    address,
                    interval,
                    timeout,
                } => (Some(address.clone()), Some(*interval), Some(*timeout), None),
                CheckKind::Ttl { ttl } => (None, None, None, Some(*ttl)),
            };
            CheckView {
                id: def.id.clone(),
                name: def.name.clone(),
                kind: def.kind.type_name(),
                status: check.status,
                output: check.output.clone(),
                changed_at: rfc3339(check.changed_at),
                target,
                interval: interval.map(|d| format_go_duration(d.0)),
                timeout: timeout.map(|d| format_go_duration(d.0)),
                ttl: ttl.map(|d| format_go_duration(d.0)),
            }
        })
        .collect();
    InstanceView {
        service: instance.service.as_str().to_owned(),
        id: instance.id.as_str().to_owned(),
        address: instance.address.to_string(),
        port: instance.port,
        tags: instance.tags.clone(),
        meta: instance.meta.clone(),
        weight: instance.weight,
        priority: instance.priority,
        status: state.status(),
        in_dns: state.is_servable(include_warning),
        maintenance: state.maintenance.clone(),
        dns: DnsNames {
            service: fqdn(&[service_label], domain),
            srv: fqdn(&[&format!("_{service_label}"), "_tcp"], domain),
            instance: fqdn(&[instance.id.label().as_str(), service_label], domain),
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
        dns_name: fqdn(&[service.name.label().as_str()], domain),
        instances: service.len(),
        in_dns: service
            .instances()
            .filter(|i| i.is_servable(include_warning))
            .count(),
    }
}

pub(super) fn service_view(
    service: &ServiceState,
    domain: &str,
    include_warning: bool,
) -> ServiceView {
    ServiceView {
        name: service.name.as_str().to_owned(),
        dns_name: fqdn(&[service.name.label().as_str()], domain),
        instances: service
            .instances()
            .map(|i| instance_view(i, domain, include_warning))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
