//! Health check definitions: what to probe, how often, and how many results
//! it takes to change state. Parsing here is the only validation checks get.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{GoDuration, ValidationError};

/// Checks more frequent than this would make roster a load generator, not a
/// registry; Consul's own floor is 1 s, roster allows shorter for tests and
/// fast failover.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Consul's default HTTP/TCP check timeout.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// TTLs shorter than this cannot be met by a heartbeat over HTTP reliably.
pub(super) const MIN_TTL: Duration = Duration::from_millis(100);
/// At most this many checks per instance.
pub const MAX_CHECKS: usize = 16;

/// A check's health, and an instance's (the worst of its checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "passing" => Some(Self::Passing),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A request to `url`: 2xx passing, 429 warning, anything else critical.
    Http {
        url: String,
        method: String,
        headers: Vec<(String, String)>,
        interval: GoDuration,
        timeout: GoDuration,
        /// For `https://`: accept any certificate (Consul's
        /// `TLSSkipVerify`). Left out of stored JSON when false, so records
        /// written before it existed read the same.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls_skip_verify: bool,
        /// For `https://`: verify the certificate against this name instead
        /// of the URL's host (Consul's `TLSServerName`); empty means the
        /// URL's host.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        tls_server_name: String,
    },
    /// A TCP connect to `address` (`host:port`): completed is passing.
    Tcp {
        address: String,
        interval: GoDuration,
        timeout: GoDuration,
    },
    /// A heartbeat the service sends; critical once `ttl` passes without one.
    Ttl { ttl: GoDuration },
}

impl CheckDefinition {
    /// Each duration the check holds, by field name.
    pub fn durations(&self) -> Vec<(&'static str, std::time::Duration)> {
        let mut all = match &self.kind {
            CheckKind::Http {
                interval, timeout, ..
            }
            | CheckKind::Tcp {
                interval, timeout, ..
            } => vec![("interval", interval.0), ("timeout", timeout.0)],
            CheckKind::Ttl { ttl } => vec![("ttl", ttl.0)],
        };
        all.extend(
            self.deregister_critical_after
                .map(|after| ("deregister_critical_after", after.0)),
        );
        all
    }
}

impl CheckKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Tcp { .. } => "tcp",
            Self::Ttl { .. } => "ttl",
        }
    }
}

/// One health check of an instance, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDefinition {
    /// Unique within the instance; defaults to Consul's `service:<id>` form.
    pub id: String,
    pub name: String,
    pub notes: String,
    pub kind: CheckKind,
    /// Consecutive successes needed to go from non-passing to passing (≥ 1).
    pub success_before_passing: u32,
    /// Consecutive failures needed to go from passing to critical (≥ 1).
    pub failures_before_critical: u32,
    /// Remove the instance once this check has been critical this long.
    pub deregister_critical_after: Option<GoDuration>,
    /// The status a new check starts in (critical unless told otherwise).
    pub initial_status: Status,
}

/// A check as the native API receives it, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    pub id: Option<String>,
    pub name: Option<String>,
    pub notes: Option<String>,
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub ttl: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub success_before_passing: Option<u32>,
    pub failures_before_critical: Option<u32>,
    pub deregister_critical_after: Option<String>,
    pub status: Option<String>,
    /// `https://` checks only: accept any certificate.
    pub tls_skip_verify: Option<bool>,
    /// `https://` checks only: the name the certificate must be valid for.
    pub tls_server_name: Option<String>,
}

fn duration_field(
    value: &Option<String>,
    field: &str,
) -> Result<Option<Duration>, ValidationError> {
    value
        .as_deref()
        .map(|text| {
            super::parse_go_duration(text)
                .map_err(|e| ValidationError::new(field.to_owned(), e.to_string()))
        })
        .transpose()
}

impl CheckBody {
    /// Validates one check. `prefix` names it in errors (`check`, `checks[1]`),
    /// `default_id` is used when the body has no `id`.
    pub fn validate(
        self,
        prefix: &str,
        default_id: String,
        default_name: String,
    ) -> Result<CheckDefinition, ValidationError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let kinds = [self.http.is_some(), self.tcp.is_some(), self.ttl.is_some()];
        let kind_count = kinds.iter().filter(|k| **k).count();
        if kind_count == 0 {
            return Err(ValidationError::new(
                prefix.to_owned(),
                "a check needs exactly one of \"http\", \"tcp\" or \"ttl\"",
            ));
        }
        if kind_count > 1 {
            return Err(ValidationError::new(
                prefix.to_owned(),
                "a check can have only one of \"http\", \"tcp\" or \"ttl\"",
            ));
        }
        let interval = duration_field(&self.interval, &field("interval"))?;
        let timeout = duration_field(&self.timeout, &field("timeout"))?;
        // Parsing only: the rules every definition obeys, wherever it comes
        // from, are in `CheckDefinition::validate`, called at the end.
        let probe_timing = || -> Result<(GoDuration, GoDuration), ValidationError> {
            let interval = interval.ok_or_else(|| {
                ValidationError::new(field("interval"), "required for http and tcp checks")
            })?;
            let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT.min(interval));
            Ok((GoDuration(interval), GoDuration(timeout)))
        };
        if self.http.is_none() {
            // A TLS option on a check that speaks no TLS would be ignored
            // silently: the registrant meant something else.
            if self.tls_skip_verify == Some(true) {
                return Err(ValidationError::new(
                    field("tls_skip_verify"),
                    "only http checks (https:// URLs) speak TLS",
                ));
            }
            if self
                .tls_server_name
                .as_deref()
                .is_some_and(|n| !n.is_empty())
            {
                return Err(ValidationError::new(
                    field("tls_server_name"),
                    "only http checks (https:// URLs) speak TLS",
                ));
            }
        }
        let kind = if let Some(url) = self.http {
            let method = self
                .method
                .unwrap_or_else(|| "GET".to_owned())
                .to_uppercase();
            let (interval, timeout) = probe_timing()?;
            CheckKind::Http {
                url,
                method,
                headers: self.headers.into_iter().collect(),
                interval,
                timeout,
                tls_skip_verify: self.tls_skip_verify.unwrap_or(false),
                tls_server_name: self.tls_server_name.unwrap_or_default(),
            }
        } else if let Some(address) = self.tcp {
            let (interval, timeout) = probe_timing()?;
            CheckKind::Tcp {
                address,
                interval,
                timeout,
            }
        } else {
            let ttl = duration_field(&self.ttl, &field("ttl"))?.unwrap_or_default();
            if self.interval.is_some() || self.timeout.is_some() {
                return Err(ValidationError::new(
                    field("interval"),
                    "a ttl check has no interval or timeout: the service reports in",
                ));
            }
            CheckKind::Ttl {
                ttl: GoDuration(ttl),
            }
        };
        let deregister_critical_after = duration_field(
            &self.deregister_critical_after,
            &field("deregister_critical_after"),
        )?
        .map(GoDuration);
        let initial_status = match self.status.as_deref() {
            None => Status::Critical,
            Some(text) => Status::parse(text).ok_or_else(|| {
                ValidationError::new(field("status"), "must be passing, warning or critical")
            })?,
        };
        let definition = CheckDefinition {
            id: self.id.unwrap_or(default_id),
            name: self.name.unwrap_or(default_name),
            notes: self.notes.unwrap_or_default(),
            kind,
            success_before_passing: self.success_before_passing.unwrap_or(1).max(1),
            failures_before_critical: self.failures_before_critical.unwrap_or(1).max(1),
            deregister_critical_after,
            initial_status,
        };
        definition.validate(prefix)?;
        Ok(definition)
    }
}

/// The longest note a service may send with a TTL report, which becomes
/// the check's output; Consul's default `OutputMaxSize` too.
pub const MAX_NOTE_BYTES: usize = 4096;

/// Longest check name or notes kept; they are shown back, never served.
const MAX_CHECK_TEXT: usize = 4096;

/// Check IDs Consul's API gives a drained instance's maintenance check
/// (`_service_maintenance:<id>`): no registered check may take one.
pub const MAINTENANCE_CHECK_PREFIX: &str = "_service_maintenance:";

impl CheckDefinition {
    /// The rules every check obeys, however it arrived: through either API,
    /// in an import, from the store at start-up. The one place they are
    /// written, so no door can let through what another refuses (an
    /// imported `"interval": "0s"` once made the scheduler spin). `prefix`
    /// names the check in errors (`check`, `checks[1]`).
    pub fn validate(&self, prefix: &str) -> Result<(), ValidationError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let probe_timing = |interval: GoDuration, timeout: GoDuration| {
            if interval.0 < MIN_INTERVAL {
                return Err(ValidationError::new(
                    field("interval"),
                    format!(
                        "must be at least {}",
                        super::format_go_duration(MIN_INTERVAL)
                    ),
                ));
            }
            if timeout.0.is_zero() {
                return Err(ValidationError::new(field("timeout"), "must be above zero"));
            }
            if timeout > interval {
                return Err(ValidationError::new(
                    field("timeout"),
                    "must not be longer than the interval",
                ));
            }
            Ok(())
        };
        match &self.kind {
            CheckKind::Http {
                url,
                method,
                headers,
                interval,
                timeout,
                tls_server_name,
                ..
            } => {
                validate_http_url(url)
                    .map_err(|reason| ValidationError::new(field("http"), reason))?;
                if !tls_server_name.is_empty()
                    && rustls_pki_types::ServerName::try_from(tls_server_name.as_str()).is_err()
                {
                    return Err(ValidationError::new(
                        field("tls_server_name"),
                        format!("{tls_server_name:?} is not a DNS name or IP address"),
                    ));
                }
                let uppercase_letters =
                    !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
                if !uppercase_letters {
                    return Err(ValidationError::new(
                        field("method"),
                        "must be an HTTP method such as GET or HEAD",
                    ));
                }
                for (name, value) in headers {
                    // RFC 9110 section 5.6.2: a field name is a token.
                    let valid_name = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    let valid_value = reqwest::header::HeaderValue::from_str(value).is_ok();
                    if !valid_name || !valid_value {
                        return Err(ValidationError::new(
                            field("headers"),
                            format!("header {name:?} is not a valid HTTP header"),
                        ));
                    }
                }
                probe_timing(*interval, *timeout)?;
            }
            CheckKind::Tcp {
                address,
                interval,
                timeout,
            } => {
                validate_host_port(address)
                    .map_err(|reason| ValidationError::new(field("tcp"), reason))?;
                probe_timing(*interval, *timeout)?;
            }
            CheckKind::Ttl { ttl } => {
                if ttl.0 < MIN_TTL {
                    return Err(ValidationError::new(
                        field("ttl"),
                        format!("must be at least {}", super::format_go_duration(MIN_TTL)),
                    ));
                }
            }
        }
        if self
            .deregister_critical_after
            .is_some_and(|d| d.0.is_zero())
        {
            return Err(ValidationError::new(
                field("deregister_critical_after"),
                "must be above zero",
            ));
        }
        if self.success_before_passing == 0 || self.failures_before_critical == 0 {
            return Err(ValidationError::new(
                field("success_before_passing"),
                "thresholds must be at least 1",
            ));
        }
        let id = &self.id;
        if id.is_empty() || id.len() > 255 || id.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                field("id"),
                "must be 1 to 255 printable characters",
            ));
        }
        for (name, text) in [("name", &self.name), ("notes", &self.notes)] {
            if text.len() > MAX_CHECK_TEXT {
                return Err(ValidationError::new(
                    field(name),
                    format!("must be at most {MAX_CHECK_TEXT} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// Accepts `http://host[:port]/path` and `https://…`. Parsed with the same
/// URL parser the checker uses, so a URL accepted here can always be
/// requested.
pub fn validate_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    // The URL standard reads `http:///health` as host `health`; a user who
    // wrote that forgot the host, so the written authority must be there.
    let written_authority = url
        .get(parsed.scheme().len() + "://".len()..)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .unwrap_or_default();
    if written_authority.is_empty() || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{url:?} carries credentials; use headers instead"));
    }
    Ok(())
}

/// Accepts `host:port` and `[v6]:port`, where host is an IP address or a
/// DNS name.
pub fn validate_host_port(address: &str) -> Result<(), String> {
    let invalid = || format!("{address:?} must be host:port or [IPv6]:port");
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return if socket.port() == 0 {
            Err(invalid())
        } else {
            Ok(())
        };
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if port == 0 || !valid_host {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> CheckBody {
        serde_json::from_str(json).expect(json)
    }

    fn validate(json: &str) -> Result<CheckDefinition, ValidationError> {
        body(json).validate("check", "service:x".into(), "check".into())
    }

    #[test]
    fn accepts_each_kind() {
        let http =
            validate(r#"{"http":"http://127.0.0.1:8080/health","interval":"5s","timeout":"1s"}"#)
                .expect("http");
        assert_eq!(http.kind.type_name(), "http");
        assert_eq!(http.initial_status, Status::Critical);
        assert_eq!(http.id, "service:x");
        let https = validate(
            r#"{"http":"https://127.0.0.1:8443/health","interval":"5s","tls_skip_verify":true,"tls_server_name":"web.internal"}"#,
        )
        .expect("https");
        assert!(matches!(
            &https.kind,
            CheckKind::Http { tls_skip_verify: true, tls_server_name, .. } if tls_server_name == "web.internal"
        ));
        let tcp = validate(r#"{"tcp":"127.0.0.1:8080","interval":"5s"}"#).expect("tcp");
        assert!(
            matches!(tcp.kind, CheckKind::Tcp { timeout, .. } if timeout.0 == Duration::from_secs(5))
        );
        let ttl = validate(r#"{"ttl":"15s"}"#).expect("ttl");
        assert_eq!(
            ttl.kind,
            CheckKind::Ttl {
                ttl: GoDuration(Duration::from_secs(15))
            }
        );
    }

    /// Records stored before the TLS fields existed read back the same,
    /// and a plain check is still written without them.
    #[test]
    fn http_kinds_without_tls_options_keep_their_stored_form() {
        let old = r#"{"http":{"url":"http://a/","method":"GET","headers":[],"interval":"1s","timeout":"1s"}}"#;
        let kind: CheckKind = serde_json::from_str(old).expect("old form");
        assert!(matches!(
            &kind,
            CheckKind::Http { tls_skip_verify: false, tls_server_name, .. } if tls_server_name.is_empty()
        ));
        assert_eq!(serde_json::to_string(&kind).expect("json"), old);
    }

    #[test]
    fn refuses_nonsense_naming_the_field() {
        let cases = [
            (r#"{}"#, "check"),
            (
                r#"{"http":"http://a/","tcp":"a:1","interval":"1s"}"#,
                "check",
            ),
            (r#"{"http":"http://a/"}"#, "check.interval"),
            (
                r#"{"http":"http://a/","interval":"10ms"}"#,
                "check.interval",
            ),
            (
                r#"{"http":"http://a/","interval":"1s","timeout":"2s"}"#,
                "check.timeout",
            ),
            (
                r#"{"http":"http://a/","interval":"soon"}"#,
                "check.interval",
            ),
            (r#"{"http":"ftp://a/","interval":"1s"}"#, "check.http"),
            (r#"{"tcp":"nohost","interval":"1s"}"#, "check.tcp"),
            (r#"{"tcp":"::1:8080","interval":"1s"}"#, "check.tcp"),
            (r#"{"tcp":"[::1:8080","interval":"1s"}"#, "check.tcp"),
            (
                r#"{"http":"http://exa^mple/","interval":"1s"}"#,
                "check.http",
            ),
            (r#"{"http":"http://[::1/","interval":"1s"}"#, "check.http"),
            (
                r#"{"http":"http://a/","interval":"1s","headers":{"X(Probe)":"a"}}"#,
                "check.headers",
            ),
            (r#"{"ttl":"1x"}"#, "check.ttl"),
            (r#"{"ttl":"10s","interval":"1s"}"#, "check.interval"),
            (r#"{"ttl":"10s","status":"fine"}"#, "check.status"),
        ];
        for (json, field) in cases {
            let err = validate(json).expect_err(json);
            assert_eq!(err.field, field, "{json}");
        }
    }

    /// The model half of the end-to-end table in
    /// tests/health_definitions.rs (`nonsense_check_definitions_are_refused_and_nothing_is_stored`):
    /// every case there that this validation decides, each named by the
    /// field it must blame. That test keeps one case per rule, and the cases
    /// only the HTTP layer decides (JSON types, unknown fields, `checks[i]`).
    #[test]
    fn refuses_every_nonsense_definition_naming_the_field() {
        let cases = [
            ("no kind", r#"{"interval":"1s"}"#, "check"),
            ("empty check", r#"{}"#, "check"),
            (
                "two kinds",
                r#"{"http":"http://127.0.0.1:9/health","tcp":"127.0.0.1:9","interval":"1s"}"#,
                "check",
            ),
            (
                "all three kinds",
                r#"{"http":"http://127.0.0.1:9/health","tcp":"127.0.0.1:9","ttl":"10s"}"#,
                "check",
            ),
            (
                "no interval",
                r#"{"http":"http://127.0.0.1:9/health"}"#,
                "check.interval",
            ),
            (
                "interval below the floor",
                r#"{"http":"http://127.0.0.1:9/health","interval":"99ms"}"#,
                "check.interval",
            ),
            (
                "tcp interval below the floor",
                r#"{"tcp":"127.0.0.1:9","interval":"10ms"}"#,
                "check.interval",
            ),
            (
                "timeout above interval",
                r#"{"http":"http://127.0.0.1:9/health","interval":"1s","timeout":"2s"}"#,
                "check.timeout",
            ),
            (
                "zero timeout",
                r#"{"http":"http://127.0.0.1:9/health","interval":"1s","timeout":"0"}"#,
                "check.timeout",
            ),
            (
                "unparsable interval",
                r#"{"http":"http://127.0.0.1:9/health","interval":"soon"}"#,
                "check.interval",
            ),
            (
                "bare number interval",
                r#"{"http":"http://127.0.0.1:9/health","interval":"10"}"#,
                "check.interval",
            ),
            (
                "negative interval",
                r#"{"http":"http://127.0.0.1:9/health","interval":"-1s"}"#,
                "check.interval",
            ),
            (
                "unparsable timeout",
                r#"{"http":"http://127.0.0.1:9/health","interval":"1s","timeout":"soon"}"#,
                "check.timeout",
            ),
            (
                "ftp URL",
                r#"{"http":"ftp://127.0.0.1/health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "https URL without a host",
                r#"{"http":"https:///health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "tls_server_name that is no name",
                r#"{"http":"https://127.0.0.1/health","interval":"1s","tls_server_name":"a b"}"#,
                "check.tls_server_name",
            ),
            (
                "tls_skip_verify on a tcp check",
                r#"{"tcp":"127.0.0.1:9","interval":"1s","tls_skip_verify":true}"#,
                "check.tls_skip_verify",
            ),
            (
                "tls_server_name on a ttl check",
                r#"{"ttl":"10s","tls_server_name":"a.example"}"#,
                "check.tls_server_name",
            ),
            (
                "URL without a host",
                r#"{"http":"http:///health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "URL that is just a scheme",
                r#"{"http":"http://","interval":"1s"}"#,
                "check.http",
            ),
            (
                "URL with a bad port",
                r#"{"http":"http://127.0.0.1:99999/","interval":"1s"}"#,
                "check.http",
            ),
            (
                "not a URL",
                r#"{"http":"health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "URL with a forbidden character in the host",
                r#"{"http":"http://exa^mple/health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "URL with an unclosed IPv6 bracket",
                r#"{"http":"http://[::1/health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "URL with bad percent-encoding in the host",
                r#"{"http":"http://%zz/health","interval":"1s"}"#,
                "check.http",
            ),
            (
                "header name that is not an HTTP token",
                r#"{"http":"http://127.0.0.1:9/health","interval":"1s","headers":{"X(Probe)":"a"}}"#,
                "check.headers",
            ),
            (
                "bad header name",
                r#"{"http":"http://127.0.0.1:9/health","interval":"1s","headers":{"Bad Header":"x"}}"#,
                "check.headers",
            ),
            (
                "bad method",
                r#"{"http":"http://127.0.0.1:9/health","interval":"1s","method":"GET /x"}"#,
                "check.method",
            ),
            (
                "tcp with an unbracketed IPv6 address",
                r#"{"tcp":"::1:8080","interval":"1s"}"#,
                "check.tcp",
            ),
            (
                "tcp with an unclosed IPv6 bracket",
                r#"{"tcp":"[::1:8080","interval":"1s"}"#,
                "check.tcp",
            ),
            (
                "tcp without a port",
                r#"{"tcp":"127.0.0.1","interval":"1s"}"#,
                "check.tcp",
            ),
            (
                "tcp with port 0",
                r#"{"tcp":"127.0.0.1:0","interval":"1s"}"#,
                "check.tcp",
            ),
            (
                "tcp with a bad port",
                r#"{"tcp":"127.0.0.1:http","interval":"1s"}"#,
                "check.tcp",
            ),
            (
                "tcp without a host",
                r#"{"tcp":":8080","interval":"1s"}"#,
                "check.tcp",
            ),
            (
                "ttl with interval",
                r#"{"ttl":"10s","interval":"1s"}"#,
                "check.interval",
            ),
            (
                "ttl with timeout",
                r#"{"ttl":"10s","timeout":"1s"}"#,
                "check.interval",
            ),
            ("unparsable ttl", r#"{"ttl":"soon"}"#, "check.ttl"),
            ("ttl below the floor", r#"{"ttl":"50ms"}"#, "check.ttl"),
            (
                "bad status",
                r#"{"ttl":"10s","status":"fine"}"#,
                "check.status",
            ),
            (
                "unparsable deregister_critical_after",
                r#"{"ttl":"10s","deregister_critical_after":"later"}"#,
                "check.deregister_critical_after",
            ),
            (
                "zero deregister_critical_after",
                r#"{"ttl":"10s","deregister_critical_after":"0"}"#,
                "check.deregister_critical_after",
            ),
            ("empty check ID", r#"{"ttl":"10s","id":""}"#, "check.id"),
        ];
        let mut wrong = Vec::new();
        for (label, json, field) in cases {
            match validate(json) {
                Ok(_) => wrong.push(format!("{label}: accepted")),
                Err(e) if e.field != field || e.message.is_empty() => wrong.push(format!(
                    "{label}: blamed {:?} ({}), not {field:?}",
                    e.field, e.message
                )),
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
