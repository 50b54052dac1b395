//! The security settings: ACL tokens (`[acl]`), what health checks may do
//! (`[health]`), and the IP networks both speak of. See the README's
//! Security section for the threat model they answer.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use serde::{Deserialize, Deserializer};

/// `[acl]`: who may do what through the HTTP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Off by default on loopback; roster refuses a non-loopback HTTP
    /// address without it unless `http.allow_unauthenticated` is set.
    pub enabled: bool,
    /// What a request without a token may do.
    pub default_policy: DefaultPolicy,
    /// Re-read from the config file on SIGHUP.
    pub tokens: Vec<TokenConfig>,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            default_policy: DefaultPolicy::Deny,
            tokens: Vec::new(),
        }
    }
}

impl AclConfig {
    /// Checks what serde cannot: each token has one secret, names and
    /// secrets are unique. The message names the token, never a secret.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let mut names = std::collections::BTreeSet::new();
        let mut secrets = std::collections::BTreeSet::new();
        for token in &self.tokens {
            let named = format!("token {:?}", token.name);
            if token.name.is_empty() {
                return Err(("acl.tokens", "every token needs a name".into()));
            }
            if !names.insert(token.name.as_str()) {
                return Err(("acl.tokens", format!("{named} is defined twice")));
            }
            let digest = match (&token.secret, &token.secret_sha256) {
                (Some(secret), None) if !secret.is_empty() => secret.clone(),
                (None, Some(hex))
                    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    hex.to_ascii_lowercase()
                }
                (None, Some(_)) => {
                    return Err((
                        "acl.tokens",
                        format!(
                            "{named}: secret_sha256 must be 64 hex digits (sha256sum of the secret)"
                        ),
                    ));
                }
                _ => {
                    return Err((
                        "acl.tokens",
                        format!("{named} needs exactly one of secret or secret_sha256"),
                    ));
                }
            };
            if !secrets.insert(digest) {
                return Err((
                    "acl.tokens",
                    format!("{named} has the same secret as another token"),
                ));
            }
        }
        Ok(())
    }
}

/// What a request without a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Everything.
    Allow,
    /// Nothing but what is public (DNS, the Consul status endpoints).
    Deny,
}

/// One token (`[[acl.tokens]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// For logs and errors; never the secret.
    pub name: String,
    /// The secret clients send; or `secret_sha256`, its SHA-256 in hex, so
    /// the file holds no secret.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// Everything, import and export included.
    #[serde(default)]
    pub management: bool,
    /// Service-name prefix → access; the longest matching prefix wins, as
    /// in Consul; `""` matches every service.
    #[serde(default)]
    pub service_prefix: BTreeMap<String, Access>,
}

// By hand: the derived Debug would print the secret into any log or panic
// message that shows a config.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "secret_sha256",
                &self.secret_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field("management", &self.management)
            .field("service_prefix", &self.service_prefix)
            .finish()
    }
}

/// What a token may do with the services a prefix rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Deny,
    Read,
    /// Read, register, deregister, report checks, maintenance.
    Write,
}

/// `[health]`: what a health check may ask roster to do on the
/// registrant's behalf.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// HTTP methods an HTTP check may use.
    pub allowed_methods: Vec<String>,
    /// Networks a check may connect to (after resolving its host name).
    pub allowed_networks: Vec<Network>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            allowed_methods: ["GET", "HEAD", "OPTIONS", "POST"]
                .map(str::to_owned)
                .to_vec(),
            allowed_networks: vec![Network::ANY_V4, Network::ANY_V6],
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for method in &self.allowed_methods {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err((
                    "health.allowed_methods",
                    format!("{method:?} is not an HTTP method"),
                ));
            }
        }
        Ok(())
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(method))
    }

    pub fn allows_address(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.allowed_networks.iter().any(|n| n.contains(address))
    }
}

/// An IP network in CIDR form: `10.0.0.0/8`, `::1/128`; a bare address is
/// a /32 (or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Network {
    pub const ANY_V4: Self = Self {
        address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };
    pub const ANY_V6: Self = Self {
        address: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        prefix: 0,
    };

    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask(u128::from(u32::from(net)) << 96, self.prefix)
                    == mask(u128::from(u32::from(a)) << 96, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask(u128::from(net), self.prefix) == mask(u128::from(a), self.prefix)
            }
            _ => false,
        }
    }
}

fn mask(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a network like 10.0.0.0/8 or ::1/128");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { address, prefix })
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_what_their_prefix_covers() {
        let loopback: Network = "127.0.0.0/8".parse().expect("valid");
        assert!(loopback.contains("127.1.2.3".parse().expect("ip")));
        assert!(!loopback.contains("128.0.0.1".parse().expect("ip")));
        assert!(!loopback.contains("::1".parse().expect("ip")));
        let one: Network = "::1".parse().expect("valid");
        assert_eq!(one.prefix, 128);
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(Network::ANY_V4.contains("8.8.8.8".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("ten/8".parse::<Network>().is_err());
    }

    #[test]
    fn mapped_v4_addresses_are_judged_as_v4() {
        let config = HealthConfig {
            allowed_networks: vec!["127.0.0.0/8".parse().expect("valid")],
            ..HealthConfig::default()
        };
        assert!(config.allows_address("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!config.allows_address("::1".parse().expect("ip")));
    }

    #[test]
    fn a_token_never_shows_its_secret_in_debug_output() {
        let token = TokenConfig {
            name: "admin".into(),
            secret: Some("hunter2".into()),
            secret_sha256: None,
            management: true,
            service_prefix: BTreeMap::new(),
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("admin"), "{shown}");
    }
}
