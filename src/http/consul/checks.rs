//! Consul check definitions translated into roster's [`CheckBody`], which
//! the model then validates like any other check.
//!
//! roster runs HTTP, TCP and TTL checks. Consul's other kinds (script
//! `args`, `grpc`, `docker`, `h2ping`, `udp`, alias, OS service) are refused
//! with `400 Invalid check: ...` rather than registered and never run: a
//! check that silently does nothing would keep a dead instance in DNS.
//!
//! Where Consul and roster differ, roster's rules hold and the client hears
//! why: intervals below roster's floor (`MIN_INTERVAL`, 100 ms) and
//! timeouts longer than the interval are refused. Consul's own floor is
//! 1 s, which it applies by raising the interval silently.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{error::ConsulError, keys::decode_struct};
use crate::model::{CheckBody, MAX_NOTE_BYTES, parse_go_duration};

/// A check as Consul clients send it, keys normalised (see `keys`). The
/// same struct reads a service's `Check`/`Checks` entries and the body of
/// `/v1/agent/check/register` (which adds `ServiceID`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ConsulCheck {
    /// `ID` in check registrations, `CheckID` in service definitions;
    /// Consul accepts either.
    pub id: Option<String>,
    pub checkid: Option<String>,
    pub name: Option<String>,
    pub notes: Option<String>,
    pub status: Option<String>,
    pub serviceid: Option<String>,
    pub http: Option<String>,
    pub method: Option<String>,
    /// `{"X-Foo": ["a", "b"]}`: a user map, so its keys keep their case.
    pub header: Option<BTreeMap<String, Vec<String>>>,
    pub body: Option<String>,
    pub tcp: Option<String>,
    /// Durations: Go strings (`"10s"`) or numbers of nanoseconds.
    pub ttl: Option<Value>,
    pub interval: Option<Value>,
    pub timeout: Option<Value>,
    pub deregistercriticalserviceafter: Option<Value>,
    pub successbeforepassing: Option<u32>,
    pub failuresbeforecritical: Option<u32>,
    /// `TLSSkipVerify` and `TLSServerName`: for `https://` checks.
    pub tlsskipverify: Option<bool>,
    pub tlsservername: Option<String>,
    // Options roster does not implement; present to be refused, not
    // ignored (each would make the check behave otherwise than asked).
    pub tcpusetls: Option<bool>,
    pub failuresbeforewarning: Option<u32>,
    pub outputmaxsize: Option<u64>,
    // Kinds roster does not run; present only to be refused by name.
    pub args: Option<Value>,
    pub scriptargs: Option<Value>,
    pub script: Option<Value>,
    pub grpc: Option<Value>,
    pub dockercontainerid: Option<Value>,
    pub h2ping: Option<Value>,
    pub udp: Option<Value>,
    pub aliasnode: Option<Value>,
    pub aliasservice: Option<Value>,
    pub osservice: Option<Value>,
}

/// Whether a JSON value says anything: Consul treats `""`, `[]`, `{}` and
/// `null` as unset.
pub(super) fn is_set(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// A Consul duration as a Go duration string for the model's parser: a
/// string stays as it is, except that a bare number means nanoseconds, as
/// does a JSON number (Consul's JSON decoder reads both that way).
fn duration(value: Option<Value>, field: &str) -> Result<Option<String>, ConsulError> {
    let invalid = |what: &str| {
        ConsulError::bad_request(format!("Invalid check: {field}: {what} is not a duration"))
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) if text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(format!("{text}ns")))
        }
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Number(number)) => match (number.as_u64(), number.as_f64()) {
            (Some(nanos), _) => Ok(Some(format!("{nanos}ns"))),
            (None, Some(nanos)) if nanos.is_finite() && nanos >= 0.0 => {
                Ok(Some(format!("{}ns", nanos.round() as u64)))
            }
            _ => Err(invalid(&number.to_string())),
        },
        Some(other) => Err(invalid(&other.to_string())),
    }
}

impl ConsulCheck {
    /// Decodes one check object (keys normalised here).
    pub(super) fn decode(value: Value) -> Result<Self, ConsulError> {
        decode_struct(value, "check")
    }

    /// Whether the object says nothing at all: Consul skips an empty
    /// `Check` in a service definition instead of refusing it.
    pub(super) fn is_empty(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Object(object) => object.values().all(|v| !is_set(&Some(v.clone()))),
            _ => false,
        }
    }

    /// The check as roster's native check body. Refuses kinds roster does
    /// not run; everything else is validated by the model.
    pub(super) fn into_check_body(self) -> Result<CheckBody, ConsulError> {
        let unsupported = [
            (
                "script (args)",
                is_set(&self.args) || is_set(&self.scriptargs),
            ),
            ("script", is_set(&self.script)),
            ("grpc", is_set(&self.grpc)),
            ("docker", is_set(&self.dockercontainerid)),
            ("h2ping", is_set(&self.h2ping)),
            ("udp", is_set(&self.udp)),
            (
                "alias",
                is_set(&self.aliasnode) || is_set(&self.aliasservice),
            ),
            ("os service", is_set(&self.osservice)),
        ];
        if let Some((kind, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(ConsulError::bad_request(format!(
                "Invalid check: {kind} checks are not supported; roster runs http, tcp and ttl checks"
            )));
        }
        if self.tcpusetls == Some(true) {
            return Err(ConsulError::bad_request(
                "Invalid check: TCPUseTLS is not supported; roster's tcp checks only connect (use an https:// http check to verify TLS)",
            ));
        }
        // Consul's default makes warning follow critical's threshold, so a
        // value equal to it changes nothing; any other would.
        if let Some(warning) = self.failuresbeforewarning
            && warning != 0
            && warning != self.failuresbeforecritical.unwrap_or(1)
        {
            return Err(ConsulError::bad_request(format!(
                "Invalid check: FailuresBeforeWarning {warning} is not supported; roster goes from passing to critical after FailuresBeforeCritical failures"
            )));
        }
        if let Some(size) = self.outputmaxsize
            && size != 0
            && size < MAX_NOTE_BYTES as u64
        {
            return Err(ConsulError::bad_request(format!(
                "Invalid check: OutputMaxSize {size} is not supported; roster keeps the first {MAX_NOTE_BYTES} bytes of every output"
            )));
        }
        if self.body.as_deref().is_some_and(|b| !b.is_empty()) {
            return Err(ConsulError::bad_request(
                "Invalid check: Body is not supported; roster's http checks send no request body",
            ));
        }
        let ttl = duration(self.ttl, "TTL")?;
        let is_ttl = ttl.is_some();
        let mut interval = duration(self.interval, "Interval")?;
        let mut timeout = duration(self.timeout, "Timeout")?;
        if is_ttl && self.http.is_none() && self.tcp.is_none() {
            // Consul ignores a timeout on a TTL check; roster's model would
            // refuse it. An interval beside a TTL Consul refuses too, so that
            // one is left for the model to refuse.
            timeout = None;
            let zero = interval
                .as_deref()
                .is_some_and(|text| parse_go_duration(text).is_ok_and(|d| d.is_zero()));
            if zero {
                interval = None;
            }
        }
        let headers = self
            .header
            .unwrap_or_default()
            .into_iter()
            // HTTP allows a repeated header to be sent as one, values
            // joined with commas (RFC 9110, section 5.3).
            .map(|(name, values)| (name, values.join(", ")))
            .collect();
        let speaks_http = self.http.as_deref().is_some_and(|url| !url.is_empty());
        Ok(CheckBody {
            id: non_empty(self.checkid).or(non_empty(self.id)),
            name: non_empty(self.name),
            notes: self.notes,
            http: non_empty(self.http),
            tcp: non_empty(self.tcp),
            ttl,
            interval,
            timeout,
            method: non_empty(self.method),
            headers,
            success_before_passing: self.successbeforepassing,
            failures_before_critical: self.failuresbeforecritical,
            deregister_critical_after: duration(
                self.deregistercriticalserviceafter,
                "DeregisterCriticalServiceAfter",
            )?,
            status: non_empty(self.status),
            // Consul ignores them on checks that speak no TLS; so does
            // roster, rather than refusing what Consul accepts.
            tls_skip_verify: self.tlsskipverify.filter(|_| speaks_http),
            tls_server_name: non_empty(self.tlsservername).filter(|_| speaks_http),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{CheckKind, Status};

    fn translate(value: Value) -> Result<crate::model::CheckDefinition, String> {
        let body = ConsulCheck::decode(value)
            .and_then(ConsulCheck::into_check_body)
            .map_err(|e| e.message)?;
        body.validate(
            "check",
            "service:web-1".into(),
            "Service 'web' check".into(),
        )
        .map_err(|e| format!("Invalid check: {}: {}", e.field, e.message))
    }

    #[test]
    fn python_consul_checks_translate() {
        let http = translate(json!({
            "http": "http://127.0.0.1:8080/health", "interval": "1s", "timeout": "500ms",
            "DeregisterCriticalServiceAfter": "1m", "header": {"X-Token": ["a", "b"]}
        }))
        .expect("http");
        assert_eq!(http.id, "service:web-1");
        assert_eq!(http.initial_status, Status::Critical);
        let CheckKind::Http { headers, .. } = &http.kind else {
            panic!("not http: {http:?}");
        };
        assert_eq!(headers, &[("X-Token".to_owned(), "a, b".to_owned())]);
        assert!(http.deregister_critical_after.is_some());

        let tcp = translate(json!({"TCP": "127.0.0.1:9", "Interval": 1_000_000_000u64}))
            .expect("tcp with a nanosecond interval");
        assert_eq!(tcp.kind.type_name(), "tcp");

        let ttl =
            translate(json!({"ttl": "10s", "Status": "passing", "CheckID": "mine"})).expect("ttl");
        assert_eq!(ttl.id, "mine");
        assert_eq!(ttl.initial_status, Status::Passing);
        let ttl = translate(json!({"ttl": "10000000000", "timeout": "1s"})).expect("bare ns");
        assert_eq!(ttl.kind.type_name(), "ttl");
    }

    #[test]
    fn unsupported_and_invalid_checks_are_refused() {
        let cases = [
            (
                json!({"args": ["true"], "interval": "1s"}),
                "script (args) checks",
            ),
            (
                json!({"grpc": "127.0.0.1:1", "interval": "1s"}),
                "grpc checks",
            ),
            (
                json!({"docker_container_id": "x", "shell": "sh", "script": "true", "interval": "1s"}),
                "not supported",
            ),
            (json!({"http": "http://a/"}), "interval"),
            (json!({"http": "http://a/", "interval": "10ms"}), "at least"),
            (
                json!({"tcp": "a:1", "interval": "soon"}),
                "invalid duration",
            ),
            (json!({"ttl": -5}), "not a duration"),
            (json!({}), "Invalid check"),
            (json!({"ttl": "5s", "interval": "1s"}), "Invalid check"),
        ];
        for (value, expected) in cases {
            let message = translate(value.clone()).expect_err(&value.to_string());
            assert!(message.contains(expected), "{value}: {message}");
            assert!(message.starts_with("Invalid check: "), "{value}: {message}");
        }
    }

    #[test]
    fn https_checks_carry_consuls_tls_fields() {
        let https = translate(json!({
            "HTTP": "https://127.0.0.1:8443/health", "Interval": "1s",
            "TLSSkipVerify": true, "TLSServerName": "web.internal"
        }))
        .expect("https");
        let CheckKind::Http {
            tls_skip_verify,
            tls_server_name,
            ..
        } = &https.kind
        else {
            panic!("not http: {https:?}");
        };
        assert!(*tls_skip_verify);
        assert_eq!(tls_server_name, "web.internal");
        // Consul ignores them where no TLS is spoken; so does roster.
        let tcp = translate(json!({"TCP": "127.0.0.1:9", "Interval": "1s", "TLSSkipVerify": true}))
            .expect("tcp with a TLS field Consul ignores");
        assert_eq!(tcp.kind.type_name(), "tcp");
    }

    #[test]
    fn empty_checks_are_skipped() {
        assert!(ConsulCheck::is_empty(&json!(null)));
        assert!(ConsulCheck::is_empty(&json!({})));
        assert!(ConsulCheck::is_empty(&json!({"ttl": "", "Header": {}})));
        assert!(!ConsulCheck::is_empty(&json!({"ttl": "5s"})));
    }
}
