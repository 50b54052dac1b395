//! `[dns.update]`: DNS UPDATE (RFC 2136) through TSIG keys. Off unless
//! enabled with at least one key.

use serde::Deserialize;

use crate::update::DefaultCheck;

/// The TSIG algorithms roster accepts: HMAC-SHA256/384/512 (RFC 8945
/// section 6). HMAC-MD5 and HMAC-SHA1 are refused: `nsupdate -y
/// name:secret` without an algorithm means HMAC-MD5.
pub(crate) const ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// Most keys one server holds; each is checked by name per request.
const MAX_KEYS: usize = 256;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    pub enabled: bool,
    /// The port of an instance created from an A or AAAA record alone (as
    /// external-dns sends for `<service>`).
    pub default_port: u16,
    /// The check an instance gets when its update declares none.
    pub default_check: Option<DefaultCheck>,
    pub keys: Vec<UpdateKey>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            default_port: 80,
            default_check: None,
            keys: Vec::new(),
        }
    }
}

/// One `[[dns.update.keys]]` entry: a TSIG key and what it may change.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// The key's name, as the client's TSIG record carries it
    /// (`roster-key.`; the trailing dot is optional).
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// Base64, as `tsig-keygen` and `keymgr` print it.
    pub secret: String,
    /// The services (by name or DNS label) this key may change; `["*"]`
    /// for all.
    pub services: Vec<String>,
}

/// Never prints the secret.
impl std::fmt::Debug for UpdateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<hidden>")
            .field("services", &self.services)
            .finish()
    }
}

impl UpdateKey {
    /// The secret's bytes, or why it is not base64.
    pub fn secret_bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(self.secret.trim())
            .map_err(|e| format!("key {:?}: secret is not base64: {e}", self.name))
    }
}

impl UpdateConfig {
    /// Checks what serde cannot; the message names the key, never its
    /// secret. Returns the config key at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled && self.keys.is_empty() {
            return Err((
                "dns.update.keys",
                "updates are enabled but no key is configured: every update must be signed \
                 (add a [[dns.update.keys]] entry, e.g. from `tsig-keygen -a hmac-sha256`)"
                    .into(),
            ));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(("dns.update.keys", format!("at most {MAX_KEYS} keys")));
        }
        if self.default_port == 0 {
            return Err(("dns.update.default_port", "must be 1 to 65535".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for key in &self.keys {
            let name = key.name.trim_end_matches('.').to_ascii_lowercase();
            let valid_name =
                !name.is_empty() && hickory_proto::rr::Name::from_ascii(format!("{name}.")).is_ok();
            if !valid_name {
                return Err((
                    "dns.update.keys",
                    format!("key name {:?} is not a domain name", key.name),
                ));
            }
            if !names.insert(name) {
                return Err((
                    "dns.update.keys",
                    format!("key {:?} is configured twice", key.name),
                ));
            }
            if !ALGORITHMS.contains(&key.algorithm.to_ascii_lowercase().as_str()) {
                return Err((
                    "dns.update.keys",
                    format!(
                        "key {:?}: algorithm {:?} is not one of {}",
                        key.name,
                        key.algorithm,
                        ALGORITHMS.join(", ")
                    ),
                ));
            }
            let secret = key
                .secret_bytes()
                .map_err(|message| ("dns.update.keys", message))?;
            // RFC 8945 section 3: at least half the hash's length; 16 bytes
            // is the least any of the accepted algorithms should get.
            if secret.len() < 16 {
                return Err((
                    "dns.update.keys",
                    format!(
                        "key {:?}: the secret is {} bytes; use at least 16 (tsig-keygen makes 32)",
                        key.name,
                        secret.len()
                    ),
                ));
            }
            if key.services.is_empty() {
                return Err((
                    "dns.update.keys",
                    format!(
                        "key {:?}: services is empty; list the services it may change, or [\"*\"]",
                        key.name
                    ),
                ));
            }
        }
        if let Some(check) = &self.default_check {
            validate_default_check(check).map_err(|m| ("dns.update.default_check", m))?;
        }
        Ok(())
    }
}

/// A default check must be one kind, with placeholders filled in it must
/// pass the API's own validation.
fn validate_default_check(check: &DefaultCheck) -> Result<(), String> {
    let fill = |text: &Option<String>| {
        text.as_ref()
            .map(|t| t.replace("{address}", "127.0.0.1").replace("{port}", "80"))
    };
    let body = crate::model::CheckBody {
        http: fill(&check.http),
        tcp: fill(&check.tcp),
        ttl: check.ttl.clone(),
        interval: check.interval.clone(),
        timeout: check.timeout.clone(),
        deregister_critical_after: check.deregister_critical_after.clone(),
        ..Default::default()
    };
    body.validate("check", "default".into(), "default".into())
        .map(|_| ())
        .map_err(|e| format!("{}: {}", e.field, e.message))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const SECRET: &str = "c2l4dGVlbi1ieXRlcy1vZi1zZWNyZXQtbWF0ZXJpYWw=";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        config.validate("test").map(|()| config)
    }

    fn with_key(fields: &str) -> String {
        format!("[dns.update]\nenabled = true\n[[dns.update.keys]]\n{fields}\n")
    }

    #[test]
    fn the_issue_example_parses() {
        let text = format!(
            "[dns.update]\nenabled = true\ndefault_port = 80\n\
             [dns.update.default_check]\ntcp = \"{{address}}:{{port}}\"\ninterval = \"10s\"\n\
             [[dns.update.keys]]\nname = \"roster-key.\"\nalgorithm = \"hmac-sha256\"\n\
             secret = \"{SECRET}\"\nservices = [\"*\"]\n"
        );
        let config = parse(&text).expect("valid");
        assert!(config.dns.update.enabled);
        assert_eq!(config.dns.update.keys.len(), 1);
        let debug = format!("{:?}", config.dns.update.keys[0]);
        assert!(
            !debug.contains(SECRET),
            "the secret is never printed: {debug}"
        );
    }

    #[test]
    fn bad_update_settings_name_the_key_at_fault() {
        let cases = [
            ("[dns.update]\nenabled = true\n".to_owned(), "no key"),
            (
                with_key(&format!(
                    "name = \"k\"\nalgorithm = \"hmac-md5\"\nsecret = \"{SECRET}\"\nservices = [\"*\"]"
                )),
                "hmac-md5",
            ),
            (
                with_key("name = \"k\"\nalgorithm = \"hmac-sha256\"\nsecret = \"c2hvcnQ=\"\nservices = [\"*\"]"),
                "at least 16",
            ),
            (
                with_key("name = \"k\"\nalgorithm = \"hmac-sha256\"\nsecret = \"not base64!\"\nservices = [\"*\"]"),
                "not base64",
            ),
            (
                with_key(&format!(
                    "name = \"k\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{SECRET}\"\nservices = []"
                )),
                "services is empty",
            ),
            (
                format!(
                    "{}[[dns.update.keys]]\nname = \"K.\"\nalgorithm = \"hmac-sha512\"\nsecret = \"{SECRET}\"\nservices = [\"*\"]\n",
                    with_key(&format!(
                        "name = \"k\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{SECRET}\"\nservices = [\"*\"]"
                    ))
                ),
                "twice",
            ),
            (
                "[dns.update]\n[dns.update.default_check]\ntcp = \"{address}:{port}\"\nhttp = \"http://{address}:{port}/\"\ninterval = \"10s\"\n".to_owned(),
                "dns.update.default_check",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).expect_err(&text).to_string();
            assert!(error.contains(expected), "{text}\n-> {error}");
            assert!(!error.contains(SECRET), "{error}");
        }
    }
}
