//! ACL tokens, Consul-style: who may read and write which services through
//! the HTTP API. DNS stays public, as DNS is.
//!
//! A request names its token in `X-Consul-Token`, `Authorization: Bearer`,
//! or `?token=` (Consul's clients use all three). No token is the anonymous
//! caller, who may do what `acl.default_policy` says; a token that matches
//! none is refused ("ACL not found"), never taken as anonymous, so a typo
//! in a deploy script fails loudly. A token's rules map service-name
//! prefixes to deny/read/write, the longest matching prefix winning;
//! services no rule matches fall to the default policy, as in Consul.
//!
//! Secrets are kept only as SHA-256 digests and compared in constant time
//! against every token (no early exit), so neither the comparison nor the
//! number of tokens tried says how close a guess came. They are never
//! logged: the caller is known by the token's name.
//!
//! Owns: token lookup and the permission rules. Must not: decide what a
//! route needs (each handler asks for what it does).

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Query},
    http::{HeaderMap, request::Parts},
};

use super::{error::ApiError, state::AppState};
use crate::config::{Access, AclConfig, DefaultPolicy};

/// The token list in force: swapped whole on SIGHUP.
#[derive(Debug)]
pub struct Acl {
    enabled: bool,
    default_policy: DefaultPolicy,
    tokens: Vec<Arc<Token>>,
}

/// A token as roster holds it: no secret, only its digest.
#[derive(Debug)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
    management: bool,
    /// (prefix, access), longest prefix first.
    rules: Vec<(String, Access)>,
}

/// Who is asking.
#[derive(Clone, Debug)]
pub enum Caller {
    /// ACLs are off: everything is allowed.
    Unchecked,
    /// No token: what the default policy allows.
    Anonymous(DefaultPolicy),
    Token(Arc<Token>),
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request named a token that does not exist.
    UnknownToken,
    /// The caller may not do this; the text says what was missing.
    Denied(String),
}

impl Acl {
    /// The ACL of a validated config (`AclConfig::validate`): a token with
    /// a malformed digest was refused there.
    pub fn new(config: &AclConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .map(|token| {
                let digest = match (&token.secret, &token.secret_sha256) {
                    (Some(secret), _) => sha256(secret.as_bytes()),
                    (None, Some(hex)) => from_hex(hex).unwrap_or([0; 32]),
                    (None, None) => [0; 32],
                };
                let mut rules: Vec<(String, Access)> = token
                    .service_prefix
                    .iter()
                    .map(|(prefix, access)| (prefix.clone(), *access))
                    .collect();
                rules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
                Arc::new(Token {
                    name: token.name.clone(),
                    digest,
                    management: token.management,
                    rules,
                })
            })
            .collect();
        Self {
            enabled: config.enabled,
            default_policy: config.default_policy,
            tokens,
        }
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The caller a request's token (if any) names.
    pub fn caller(&self, secret: Option<&str>) -> Result<Caller, Refusal> {
        if !self.enabled {
            return Ok(Caller::Unchecked);
        }
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Ok(Caller::Anonymous(self.default_policy));
        };
        let digest = sha256(secret.as_bytes());
        let mut found = None;
        for token in &self.tokens {
            // Every token is compared, whatever matched before.
            if constant_time_eq(&digest, &token.digest) {
                found = Some(token.clone());
            }
        }
        found.map(Caller::Token).ok_or(Refusal::UnknownToken)
    }
}

impl Caller {
    /// What the caller may do with service `name`.
    pub fn access(&self, name: &str) -> Access {
        let default = |policy: DefaultPolicy| match policy {
            DefaultPolicy::Allow => Access::Write,
            DefaultPolicy::Deny => Access::Deny,
        };
        match self {
            Self::Unchecked => Access::Write,
            Self::Anonymous(policy) => default(*policy),
            Self::Token(token) if token.management => Access::Write,
            Self::Token(token) => token
                .rules
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map_or(Access::Deny, |(_, access)| *access),
        }
    }

    pub fn may_read(&self, name: &str) -> bool {
        self.access(name) >= Access::Read
    }

    pub fn require_read(&self, name: &str) -> Result<(), Refusal> {
        self.require(name, Access::Read, "read")
    }

    pub fn require_write(&self, name: &str) -> Result<(), Refusal> {
        self.require(name, Access::Write, "write")
    }

    fn require(&self, name: &str, needed: Access, verb: &str) -> Result<(), Refusal> {
        if self.access(name) >= needed {
            return Ok(());
        }
        Err(Refusal::Denied(format!(
            "{} may not {verb} service {name:?}",
            self.described()
        )))
    }

    /// Write access to the service the instance `id` is registered in,
    /// when it is (an unregistered ID is left to the registry's 404):
    /// names that share a DNS label (`Web`, `web`) reach the same
    /// instances, and a token's rules are about names, so the one it is
    /// really in is what counts.
    pub fn require_write_registered(
        &self,
        registry: &crate::registry::RegistryState,
        id: &str,
    ) -> Result<(), Refusal> {
        match registry.instance(id) {
            Some(existing) => self.require_write(existing.instance.service.as_str()),
            None => Ok(()),
        }
    }

    /// Import, export and anything else registry-wide.
    pub fn require_management(&self) -> Result<(), Refusal> {
        let allowed = match self {
            Self::Unchecked | Self::Anonymous(DefaultPolicy::Allow) => true,
            Self::Anonymous(DefaultPolicy::Deny) => false,
            Self::Token(token) => token.management,
        };
        if allowed {
            return Ok(());
        }
        Err(Refusal::Denied(format!(
            "{} is not a management token; this needs one",
            self.described()
        )))
    }

    /// What the agent says about itself (metrics, members, `agent/self`):
    /// any token, or anonymous where the default allows.
    pub fn require_agent_read(&self) -> Result<(), Refusal> {
        match self {
            Self::Anonymous(DefaultPolicy::Deny) => Err(Refusal::Denied(
                "a request without a token may not read this".into(),
            )),
            _ => Ok(()),
        }
    }

    fn described(&self) -> String {
        match self {
            Self::Unchecked => "anyone".into(),
            Self::Anonymous(_) => "a request without a token".into(),
            Self::Token(token) => format!("token {:?}", token.name),
        }
    }
}

/// The secret a request presents: `X-Consul-Token`, then `Authorization:
/// Bearer`, then `?token=`.
pub fn presented_secret(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(value) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().to_owned());
    }
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(secret) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    {
        return Some(secret.trim().to_owned());
    }
    let Query(query) =
        Query::<std::collections::HashMap<String, String>>::try_from_uri(uri).ok()?;
    query.get("token").cloned()
}

impl Caller {
    /// The caller of a request, or why it is refused outright.
    pub fn of(parts: &Parts, state: &AppState) -> Result<Self, Refusal> {
        let acl = state.acl.load();
        // With ACLs off no request pays for reading its token.
        if !acl.enabled {
            return Ok(Self::Unchecked);
        }
        let secret = presented_secret(&parts.headers, &parts.uri);
        acl.caller(secret.as_deref())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::of(parts, state).map_err(ApiError::from)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let message = match refusal {
            Refusal::UnknownToken => "ACL not found".to_owned(),
            Refusal::Denied(what) => format!("Permission denied: {what}"),
        };
        ApiError::new(axum::http::StatusCode::FORBIDDEN, message)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal or not, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold back into an
    // early-exit comparison.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::TokenConfig;

    fn acl(policy: DefaultPolicy) -> Acl {
        let rules: BTreeMap<String, Access> = [
            ("web".to_owned(), Access::Write),
            ("web-admin".to_owned(), Access::Deny),
            (String::new(), Access::Read),
        ]
        .into();
        let config = AclConfig {
            enabled: true,
            default_policy: policy,
            tokens: vec![
                TokenConfig {
                    name: "deployer".into(),
                    secret: Some("s3cret".into()),
                    secret_sha256: None,
                    management: false,
                    service_prefix: rules,
                },
                TokenConfig {
                    name: "admin".into(),
                    secret: None,
                    // printf %s admin-secret | sha256sum
                    secret_sha256: Some(
                        "5a4d6f1b9cb2b4bff3b5d0a0c4e6a38e8c5a4fc1b93bd3cc5e8e0e8e1f0c8b4a".into(),
                    ),
                    management: true,
                    service_prefix: BTreeMap::new(),
                },
            ],
        };
        Acl::new(&config)
    }

    #[test]
    fn the_longest_prefix_wins() {
        let caller = acl(DefaultPolicy::Deny)
            .caller(Some("s3cret"))
            .expect("known");
        assert_eq!(caller.access("web"), Access::Write);
        assert_eq!(caller.access("web-2"), Access::Write);
        assert_eq!(caller.access("web-admin"), Access::Deny);
        assert_eq!(caller.access("api"), Access::Read);
        assert!(caller.require_write("api").is_err());
        assert!(caller.require_management().is_err());
    }

    #[test]
    fn an_unknown_token_is_refused_not_anonymous() {
        let acl = acl(DefaultPolicy::Allow);
        assert_eq!(acl.caller(Some("nope")).err(), Some(Refusal::UnknownToken));
        let anonymous = acl.caller(None).expect("anonymous");
        assert_eq!(anonymous.access("anything"), Access::Write);
    }

    #[test]
    fn anonymous_under_deny_may_do_nothing() {
        let anonymous = acl(DefaultPolicy::Deny).caller(None).expect("anonymous");
        assert_eq!(anonymous.access("web"), Access::Deny);
        assert!(anonymous.require_management().is_err());
        assert!(anonymous.require_agent_read().is_err());
    }

    #[test]
    fn a_digest_in_the_config_matches_its_secret() {
        let digest = sha256(b"admin-secret");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(from_hex(&hex), Some(digest));
        let mut config = AclConfig {
            enabled: true,
            ..AclConfig::default()
        };
        config.tokens.push(TokenConfig {
            name: "admin".into(),
            secret: None,
            secret_sha256: Some(hex.to_uppercase()),
            management: true,
            service_prefix: BTreeMap::new(),
        });
        let caller = Acl::new(&config)
            .caller(Some("admin-secret"))
            .expect("known");
        assert!(caller.require_management().is_ok());
    }

    #[test]
    fn with_acls_off_everyone_may_do_everything() {
        let caller = Acl::new(&AclConfig::default())
            .caller(Some("whatever"))
            .expect("unchecked");
        assert_eq!(caller.access("web"), Access::Write);
        assert!(caller.require_management().is_ok());
    }

    #[test]
    fn tokens_are_read_from_each_place_clients_put_them() {
        let uri: axum::http::Uri = "/v1/x?token=q".parse().expect("uri");
        let mut headers = HeaderMap::new();
        assert_eq!(presented_secret(&headers, &uri).as_deref(), Some("q"));
        headers.insert("authorization", "Bearer b".parse().expect("value"));
        assert_eq!(presented_secret(&headers, &uri).as_deref(), Some("b"));
        headers.insert("x-consul-token", "h".parse().expect("value"));
        assert_eq!(presented_secret(&headers, &uri).as_deref(), Some("h"));
    }
}
