//! roster's configuration: a TOML file with defaults for every key, then
//! command-line overrides. Unknown keys and bad values are refused with the
//! key's name and the file, never ignored: a typo in a config file should
//! not silently run roster with defaults.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::dns::wire::CLASSIC_UDP_PAYLOAD;

mod security;
mod update;

pub use security::{Access, AclConfig, DefaultPolicy, HealthConfig, Network, TokenConfig};
pub use update::{UpdateConfig, UpdateKey};

/// A configuration problem, naming the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: `{key}` {message}")]
    Invalid {
        origin: String,
        key: &'static str,
        message: String,
    },
}

/// The whole configuration. See `config.toml` for each key's documentation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded store keeps its file; empty keeps nothing on disk.
    pub data_dir: PathBuf,
    pub dns: DnsConfig,
    pub http: HttpConfig,
    pub consul: ConsulConfig,
    pub cluster: ClusterConfig,
    pub acl: AclConfig,
    pub health: HealthConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// UDP and TCP address of the DNS server.
    pub listen: SocketAddr,
    /// The dynamic domain: services answer as `<service>.<domain>`.
    pub domain: String,
    /// TTL, in seconds, of every answer about instances.
    pub ttl: u32,
    /// Negative-caching TTL in seconds: the SOA MINIMUM (RFC 2308).
    pub negative_ttl: u32,
    /// Serve instances whose checks are at worst `warning`.
    pub include_warning: bool,
    /// The apex NS record's target (and the SOA's MNAME); empty means
    /// `ns.<domain>`.
    pub ns_name: String,
    /// The addresses roster answers for `ns_name` when it lies inside the
    /// domain, as glue for resolvers that prime or follow a delegation;
    /// empty means the DNS listen address, unless that is unspecified.
    pub ns_address: Vec<IpAddr>,
    /// Directory of RFC 1035 zone files served beside the dynamic domain.
    pub zones: PathBuf,
    /// Largest UDP response roster sends, whatever the client offers.
    pub max_udp_payload: u16,
    /// UDP sockets sharing the DNS port (SO_REUSEPORT); 0 means one per core.
    pub udp_sockets: usize,
    /// Pin each UDP socket's thread to the CPUs whose datagrams it gets
    /// (needs the sockets steered by CPU: Linux, 2 to nproc sockets).
    pub udp_cpu_affinity: bool,
    /// Most DNS TCP connections open at once; at the cap the longest-idle
    /// one is closed for a new client.
    pub tcp_max_connections: usize,
    /// Seconds a DNS TCP connection may wait for its next query.
    pub tcp_idle_timeout: u32,
    /// Seconds a DNS TCP connection may stay open however busy it is.
    pub tcp_max_connection_age: u32,
    /// Response-rate limiting over UDP: answers per second to one source
    /// network (/24 for IPv4, /56 for IPv6); 0 turns it off.
    pub rate_limit: u32,
    /// Of the answers over the limit, every this many is sent truncated
    /// (so a real client retries over TCP) instead of dropped; 0 drops all.
    pub rate_limit_slip: u32,
    /// Answer DNS cookies (RFC 7873): queries with a COOKIE option get a
    /// server cookie, and queries that send a valid one back are exempt
    /// from `rate_limit`.
    pub cookies: bool,
    /// The server cookies' secret, 32 hexadecimal digits, for nodes that
    /// must take each other's cookies (one address, anycast); empty means a
    /// random one per process.
    pub cookie_secret: Secret,
    /// More secrets whose server cookies are taken as valid, never used to
    /// make one (RFC 9018 section 4.4): during a rollover, the secret
    /// being retired, or the next one before the nodes make cookies with
    /// it. Needs `cookie_secret`.
    pub cookie_secrets_accepted: Vec<Secret>,
    /// DNS UPDATE (RFC 2136) with TSIG keys.
    pub update: UpdateConfig,
}

/// Decoded server cookie secrets ([`Config::cookie_secrets`]).
pub struct CookieSecrets {
    /// Cookies are made with this one.
    pub current: [u8; 16],
    /// Cookies made with these are taken too.
    pub accepted: Vec<[u8; 16]>,
}

/// A secret from the configuration file, which `Debug` (and so no log
/// line) never shows.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("\"\""),
            false => f.write_str("<hidden>"),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API (native and Consul-compatible).
    pub listen: SocketAddr,
    /// Most HTTP connections open at once, before fitting to the descriptor
    /// limit (see `limits`). When full, the longest-idle one is closed.
    pub max_connections: usize,
    /// Seconds a client may take to send a request's line and headers, from
    /// its first byte (slowloris).
    pub header_read_timeout: u64,
    /// Seconds a request body may go without a byte arriving before roster
    /// answers 408.
    pub body_read_timeout: u64,
    /// Seconds a keep-alive connection may wait, with no request in flight,
    /// for its next request. Long-polling requests are in flight, not idle.
    pub idle_timeout: u64,
    /// Seconds a response may go without a byte leaving (the client
    /// stopped reading) before roster closes the connection.
    pub write_timeout: u64,
    /// PEM certificate chain and private key: with both, the API speaks
    /// HTTPS only. Re-read on SIGHUP (a renewed certificate).
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// PEM CA bundle: with it, clients must present a certificate it signed
    /// (mutual TLS). Re-read on SIGHUP.
    pub tls_client_ca_file: PathBuf,
    /// Serve the API on a non-loopback address with ACLs off: the operator
    /// says anyone who reaches the port may change DNS.
    pub allow_unauthenticated: bool,
}

/// How roster presents itself to Consul clients: as a single agent node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// The node name in catalog and health responses.
    pub node_name: String,
    /// The node's address: instances registered with an empty `Address`
    /// answer in DNS with this one, as in Consul.
    pub node_address: IpAddr,
    /// The datacenter name in responses.
    pub datacenter: String,
}

/// Cluster mode: several roster nodes sharing one registry in etcd v3
/// (`src/cluster/`). Off while `etcd` is empty.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://host:2379`); empty runs on the embedded
    /// store instead.
    pub etcd: Vec<String>,
    /// This node's name among the cluster's members; empty means the host
    /// name.
    pub node: String,
    /// The etcd key prefix every key of this roster cluster lives under, so
    /// several clusters can share one etcd.
    pub prefix: String,
    /// PEM CA bundle that signed etcd's certificate: required with
    /// `https://` URLs, which it is then the only trust for.
    pub tls_ca_file: PathBuf,
    /// PEM client certificate chain and key that roster presents to etcd
    /// (for etcd's `--client-cert-auth`); both or neither.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// The etcd user roster signs in as, where etcd has authentication on
    /// (`etcdctl auth enable`); empty signs in as nobody. Not needed with
    /// a client certificate: etcd then takes the user from its common name.
    pub username: String,
    /// File whose first line is that user's password, so that the password
    /// is in neither the config file nor the command line; both or neither.
    pub password_file: PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            node: String::new(),
            prefix: "/roster/".to_owned(),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            username: String::new(),
            password_file: PathBuf::new(),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        for url in &self.etcd {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|rest| rest.is_empty() || rest.contains('/')) {
                return Err(invalid(
                    "cluster.etcd",
                    format!("{url:?} is not an etcd client URL like http://127.0.0.1:2379"),
                ));
            }
        }
        self.validate_tls(origin)?;
        let password_set = !self.password_file.as_os_str().is_empty();
        match (self.username.is_empty(), password_set) {
            (false, false) => {
                return Err(invalid(
                    "cluster.password_file",
                    "is needed too: the file with cluster.username's password".into(),
                ));
            }
            (true, true) => {
                return Err(invalid(
                    "cluster.username",
                    "is needed too: cluster.password_file is the password of which etcd user?"
                        .into(),
                ));
            }
            _ => {}
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            return Err(invalid(
                "cluster.prefix",
                format!("{:?} must start and end with '/'", self.prefix),
            ));
        }
        let valid_node = self.node.len() <= 128
            && self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_node {
            return Err(invalid(
                "cluster.node",
                format!(
                    "{:?} must be at most 128 letters, digits, '-', '_' or '.'",
                    self.node
                ),
            ));
        }
        Ok(())
    }

    /// Whether roster speaks TLS to etcd: its URLs are `https://`.
    pub fn tls(&self) -> bool {
        self.etcd.iter().any(|url| url.starts_with("https://"))
    }

    /// TLS to etcd is all or nothing: every URL `https://` with the CA
    /// that signed etcd's certificate, or every URL `http://` and no TLS
    /// file, so that no TLS setting is silently ignored and no member is
    /// reached in plain text by mistake.
    fn validate_tls(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let set = |path: &PathBuf| !path.as_os_str().is_empty();
        let plain = self
            .etcd
            .iter()
            .filter(|url| url.starts_with("http://"))
            .count();
        if self.tls() && plain > 0 {
            return Err(invalid(
                "cluster.etcd",
                "mixes http:// and https:// URLs: use https:// for every member, or none".into(),
            ));
        }
        if set(&self.tls_cert_file) != set(&self.tls_key_file) {
            let key = match set(&self.tls_cert_file) {
                true => "cluster.tls_key_file",
                false => "cluster.tls_cert_file",
            };
            return Err(invalid(
                key,
                "is needed too: the client certificate and its key go together".into(),
            ));
        }
        if self.tls() && !set(&self.tls_ca_file) {
            return Err(invalid(
                "cluster.tls_ca_file",
                "is needed for https:// etcd URLs: the PEM CA that signed etcd's certificate"
                    .into(),
            ));
        }
        // Without URLs (cluster mode off, or `--etcd` still to come) the
        // files wait for them, as `node` and `prefix` do.
        if plain > 0 && (set(&self.tls_ca_file) || set(&self.tls_cert_file)) {
            let key = match set(&self.tls_ca_file) {
                true => "cluster.tls_ca_file",
                false => "cluster.tls_cert_file",
            };
            return Err(invalid(
                key,
                "is set, but no cluster.etcd URL is https://: roster would speak to etcd in \
                 plain text"
                    .into(),
            ));
        }
        Ok(())
    }

    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "roster".to_owned())
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            node_name: "roster".to_owned(),
            node_address: IpAddr::from([127, 0, 0, 1]),
            datacenter: "dc1".to_owned(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            dns: DnsConfig::default(),
            http: HttpConfig::default(),
            consul: ConsulConfig::default(),
            cluster: ClusterConfig::default(),
            acl: AclConfig::default(),
            health: HealthConfig::default(),
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8600)),
            domain: "service.local".to_owned(),
            ttl: 5,
            negative_ttl: 5,
            include_warning: false,
            ns_name: String::new(),
            ns_address: Vec::new(),
            zones: PathBuf::from("zones"),
            max_udp_payload: 4096,
            udp_sockets: 0,
            udp_cpu_affinity: false,
            tcp_max_connections: 512,
            tcp_idle_timeout: 10,
            tcp_max_connection_age: 120,
            rate_limit: 0,
            rate_limit_slip: 2,
            cookies: true,
            cookie_secret: Secret::default(),
            cookie_secrets_accepted: Vec::new(),
            update: UpdateConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8500)),
            max_connections: 1024,
            header_read_timeout: 10,
            body_read_timeout: 30,
            idle_timeout: 60,
            write_timeout: 60,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            tls_client_ca_file: PathBuf::new(),
            allow_unauthenticated: false,
        }
    }
}

/// The longest any HTTP timeout may be set to: an hour. Longer would hold
/// a descriptor for a client that is gone in all but name.
const MAX_HTTP_TIMEOUT_SECS: u64 = 3600;

/// The most HTTP connections that may be configured: far above any
/// descriptor limit a process gets, so only a typo lands here.
const MAX_HTTP_CONNECTIONS: usize = 1_000_000;

/// The longest dynamic domain: leaves room for `<id>.<service>.` (two
/// 63-octet labels) within DNS's 255-octet name limit.
const MAX_DOMAIN_LEN: usize = 120;

impl Config {
    /// The sections of `update` whose settings differ from this one's in
    /// what a reload does not apply (everything but the `[acl]` tokens, the
    /// DNS cookie secrets and the TLS files), by name: those take a restart.
    pub fn changed_beyond_reload(&self, update: &Config) -> Vec<&'static str> {
        let mut dns = update.dns.clone();
        dns.cookie_secret = self.dns.cookie_secret.clone();
        dns.cookie_secrets_accepted = self.dns.cookie_secrets_accepted.clone();
        let mut http = update.http.clone();
        http.tls_cert_file = self.http.tls_cert_file.clone();
        http.tls_key_file = self.http.tls_key_file.clone();
        http.tls_client_ca_file = self.http.tls_client_ca_file.clone();
        let mut cluster = update.cluster.clone();
        cluster.tls_ca_file = self.cluster.tls_ca_file.clone();
        cluster.tls_cert_file = self.cluster.tls_cert_file.clone();
        cluster.tls_key_file = self.cluster.tls_key_file.clone();
        // Compared as Debug shows them: every field, maps in order (the
        // only map is the ACLs', which are reloaded), secrets hidden; the
        // TSIG keys' secrets, which Debug hides, are compared apart.
        let differ =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let tsig_secrets = |config: &Config| -> Vec<String> {
            config
                .dns
                .update
                .keys
                .iter()
                .map(|key| key.secret.clone())
                .collect()
        };
        let sections: [(&'static str, bool); 6] = [
            ("data_dir", self.data_dir != update.data_dir),
            (
                "dns",
                differ(&self.dns, &dns) || tsig_secrets(self) != tsig_secrets(update),
            ),
            ("http", differ(&self.http, &http)),
            ("consul", differ(&self.consul, &update.consul)),
            ("cluster", differ(&self.cluster, &cluster)),
            ("health", differ(&self.health, &update.health)),
        ];
        sections
            .into_iter()
            .filter_map(|(name, changed)| changed.then_some(name))
            .collect()
    }

    /// Reads `path`, or, when `path` is `None`, `config.toml` in the working
    /// directory if there is one, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let default_path = Path::new("config.toml");
        let path = match path {
            Some(path) => path,
            None if default_path.exists() => default_path,
            None => {
                let config = Self::default();
                config.validate("built-in defaults")?;
                return Ok(config);
            }
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(&format!("config file {}", path.display()))?;
        Ok(config)
    }

    /// The server cookie secrets roster makes cookies with and also takes,
    /// decoded: `None` with cookies off or no `dns.cookie_secret` (a random
    /// secret then).
    pub fn cookie_secrets(&self) -> Result<Option<CookieSecrets>, ConfigError> {
        if !self.dns.cookies || self.dns.cookie_secret.0.is_empty() {
            return Ok(None);
        }
        let invalid = |key, message: String| ConfigError::Invalid {
            origin: "the configuration".to_owned(),
            key,
            message,
        };
        let current = crate::dns::parse_cookie_secret(&self.dns.cookie_secret.0)
            .map_err(|message| invalid("dns.cookie_secret", message))?;
        let accepted = self
            .dns
            .cookie_secrets_accepted
            .iter()
            .map(|secret| crate::dns::parse_cookie_secret(&secret.0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| invalid("dns.cookie_secrets_accepted", message))?;
        Ok(Some(CookieSecrets { current, accepted }))
    }

    fn validate_accepted_cookie_secrets(&self) -> Result<(), String> {
        let accepted = &self.dns.cookie_secrets_accepted;
        if accepted.is_empty() {
            return Ok(());
        }
        if self.dns.cookie_secret.0.is_empty() {
            return Err("needs dns.cookie_secret: the secret cookies are made with".into());
        }
        let most = crate::dns::MAX_ACCEPTED_COOKIE_SECRETS;
        if accepted.len() > most {
            return Err(format!("holds {} secrets; at most {most}", accepted.len()));
        }
        // Compared decoded: the same secret written in another case, or
        // with spaces around it, is still the same.
        let mut seen = Vec::new();
        if let Ok(current) = crate::dns::parse_cookie_secret(&self.dns.cookie_secret.0) {
            seen.push(current);
        }
        for (i, secret) in accepted.iter().enumerate() {
            let secret = crate::dns::parse_cookie_secret(&secret.0)
                .map_err(|message| format!("secret {}: {message}", i + 1))?;
            if seen.contains(&secret) {
                return Err(format!(
                    "secret {} is dns.cookie_secret or one before it",
                    i + 1
                ));
            }
            seen.push(secret);
        }
        Ok(())
    }

    /// Checks values that TOML types alone cannot; `origin` says where they
    /// came from (a file, the command line).
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let domain = self
            .domain_name()
            .map_err(|message| invalid("dns.domain", message))?;
        self.ns_name(&domain)
            .map_err(|message| invalid("dns.ns_name", message))?;
        if self.dns.ttl > 86_400 {
            return Err(invalid("dns.ttl", "must be at most 86400 seconds".into()));
        }
        if self.dns.negative_ttl > 86_400 {
            return Err(invalid(
                "dns.negative_ttl",
                "must be at most 86400 seconds".into(),
            ));
        }
        if self.dns.udp_sockets > 256 {
            return Err(invalid("dns.udp_sockets", "must be at most 256".into()));
        }
        let must_be_positive = [
            ("dns.tcp_max_connections", self.dns.tcp_max_connections == 0),
            ("dns.tcp_idle_timeout", self.dns.tcp_idle_timeout == 0),
            (
                "dns.tcp_max_connection_age",
                self.dns.tcp_max_connection_age == 0,
            ),
        ];
        for (key, zero) in must_be_positive {
            if zero {
                // 0 would refuse every TCP client: DNS over TCP is required
                // (RFC 7766), so it cannot be switched off.
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.consul.node_name.is_empty() || self.consul.node_name.len() > 255 {
            return Err(invalid(
                "consul.node_name",
                "must be 1 to 255 characters".into(),
            ));
        }
        if self.consul.datacenter.is_empty() || self.consul.datacenter.len() > 64 {
            return Err(invalid(
                "consul.datacenter",
                "must be 1 to 64 characters".into(),
            ));
        }
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&self.http.max_connections) {
            return Err(invalid(
                "http.max_connections",
                format!("must be 1 to {MAX_HTTP_CONNECTIONS}"),
            ));
        }
        let timeouts = [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.body_read_timeout", self.http.body_read_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            ("http.write_timeout", self.http.write_timeout),
        ];
        for (key, seconds) in timeouts {
            if !(1..=MAX_HTTP_TIMEOUT_SECS).contains(&seconds) {
                return Err(invalid(
                    key,
                    format!("must be 1 to {MAX_HTTP_TIMEOUT_SECS} seconds"),
                ));
            }
        }
        if self.dns.max_udp_payload < CLASSIC_UDP_PAYLOAD {
            return Err(invalid(
                "dns.max_udp_payload",
                format!("must be at least {CLASSIC_UDP_PAYLOAD} (RFC 1035)"),
            ));
        }
        if self.dns.rate_limit_slip > 10 {
            return Err(invalid("dns.rate_limit_slip", "must be 0 to 10".into()));
        }
        if !self.dns.cookie_secret.0.is_empty() {
            if !self.dns.cookies {
                return Err(invalid(
                    "dns.cookie_secret",
                    "is set but dns.cookies is false: turn cookies on, or remove the secret".into(),
                ));
            }
            crate::dns::parse_cookie_secret(&self.dns.cookie_secret.0)
                .map_err(|message| invalid("dns.cookie_secret", message))?;
        }
        self.validate_accepted_cookie_secrets()
            .map_err(|message| invalid("dns.cookie_secrets_accepted", message))?;
        self.dns
            .update
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        let tls = (
            self.http.tls_cert_file.as_os_str().is_empty(),
            self.http.tls_key_file.as_os_str().is_empty(),
        );
        if tls.0 != tls.1 {
            return Err(invalid(
                "http.tls_cert_file",
                "and http.tls_key_file go together: set both for HTTPS, or neither".into(),
            ));
        }
        if tls.0 && !self.http.tls_client_ca_file.as_os_str().is_empty() {
            return Err(invalid(
                "http.tls_client_ca_file",
                "needs http.tls_cert_file and http.tls_key_file (client certificates are a TLS feature)".into(),
            ));
        }
        self.acl
            .validate()
            .and_then(|()| self.health.validate())
            .map_err(|(key, message)| invalid(key, message))?;
        if !self.http.listen.ip().is_loopback()
            && !self.acl.enabled
            && !self.http.allow_unauthenticated
        {
            return Err(invalid(
                "http.listen",
                format!(
                    "{} is not a loopback address, and ACLs are off: anyone who reaches it could rewrite DNS. \
                     Enable ACLs ([acl] enabled = true with a management token; see the README's Security section), \
                     or set http.allow_unauthenticated = true if that is what you mean",
                    self.http.listen
                ),
            ));
        }
        self.cluster.validate(origin)
    }

    /// The dynamic domain as a lower-case, fully qualified DNS name.
    pub fn domain_name(&self) -> Result<Name, String> {
        let domain = self.dns.domain.trim_end_matches('.');
        if domain.is_empty() {
            return Err("must not be empty (roster does not serve the root)".into());
        }
        if domain.len() > MAX_DOMAIN_LEN {
            return Err(format!("must be at most {MAX_DOMAIN_LEN} characters"));
        }
        let valid_labels = domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !valid_labels {
            return Err(format!(
                "{:?} is not a domain name (letters, digits and '-' in dot-separated labels)",
                self.dns.domain
            ));
        }
        Name::from_ascii(format!("{domain}."))
            .map(|name| name.to_lowercase())
            .map_err(|e| format!("{:?} is not a domain name: {e}", self.dns.domain))
    }

    /// The apex NS target, lower-case and fully qualified: `dns.ns_name`, or
    /// `ns.<domain>`. A name outside `domain` takes no `ns_address`: roster
    /// would be answering for a name it is not authoritative for.
    pub fn ns_name(&self, domain: &Name) -> Result<Name, String> {
        let text = self.dns.ns_name.trim_end_matches('.');
        let name = match text {
            "" => Name::from_ascii("ns")
                .and_then(|ns| ns.append_domain(domain))
                .map_err(|e| e.to_string())?,
            text => Name::from_ascii(format!("{text}."))
                .map_err(|e| format!("{:?} is not a host name: {e}", self.dns.ns_name))?,
        };
        let is_host_name = name.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        });
        if !is_host_name || name.num_labels() == 0 {
            return Err(format!(
                "{:?} is not a host name (letters, digits and '-' in dot-separated labels)",
                self.dns.ns_name
            ));
        }
        let inside = crate::dns::table::Nameserver::answers_for(domain, &name);
        if !inside && !self.dns.ns_address.is_empty() {
            return Err(format!(
                "{name} is outside dns.domain ({domain}), so roster cannot answer its \
                 address: drop dns.ns_address, or choose a name under {domain}"
            ));
        }
        Ok(name.to_lowercase())
    }

    /// The addresses answered for the apex NS target: `dns.ns_address`, else
    /// the DNS listen address when it is a specific one.
    pub fn ns_addresses(&self) -> Vec<IpAddr> {
        match self.dns.ns_address.is_empty() {
            false => self.dns.ns_address.clone(),
            true if self.dns.listen.ip().is_unspecified() => Vec::new(),
            true => vec![self.dns.listen.ip()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    /// What a reload applies is not reported as needing a restart; any
    /// other change is, by section.
    #[test]
    fn changes_beyond_a_reload_are_named_by_section() {
        let running = Config::default();
        let reloadable = parse(
            "[dns]\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n\
             [acl]\nenabled = true\n[[acl.tokens]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nmanagement = true\n",
        )
        .expect("valid");
        assert_eq!(
            running.changed_beyond_reload(&reloadable),
            Vec::<&str>::new()
        );
        assert_eq!(
            running.changed_beyond_reload(&running.clone()),
            Vec::<&str>::new()
        );
        let restart = parse(
            "data_dir = \"elsewhere\"\n[dns]\nttl = 60\n[health]\nallowed_methods = [\"GET\"]\n",
        )
        .expect("valid");
        assert_eq!(
            running.changed_beyond_reload(&restart),
            ["data_dir", "dns", "health"]
        );
        // Turning cookies off, and other etcd URLs: both take a restart.
        let cookies_off = parse("[dns]\ncookies = false\n").expect("valid");
        assert_eq!(running.changed_beyond_reload(&cookies_off), ["dns"]);
        let other_etcd = parse("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n").expect("valid");
        assert_eq!(running.changed_beyond_reload(&other_etcd), ["cluster"]);
        // A TSIG key whose secret alone changed, though Debug hides it.
        let key = |secret: &str| {
            parse(&format!(
                "[dns.update]\nenabled = true\n[[dns.update.keys]]\nname = \"k\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{secret}\"\nservices = [\"*\"]\n"
            ))
            .expect("valid")
        };
        let before = key("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=");
        let after = key("b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItMTI=");
        assert_eq!(before.changed_beyond_reload(&after), ["dns"]);
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let shipped = include_str!("../../config.toml");
        let config = parse(shipped).expect("shipped config.toml parses");
        let defaults = Config::default();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn the_cookie_secret_is_never_printed() {
        let config =
            parse("[dns]\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n").expect("valid");
        let printed = format!("{config:?}");
        assert!(!printed.contains("e5e973"), "{printed}");
        assert!(printed.contains("<hidden>"), "{printed}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[dns]\nttll = 5\n").expect_err("unknown key");
        let message = err.to_string();
        assert!(message.contains("ttll"), "{message}");
        assert!(message.contains("test.toml"), "{message}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[dns]\nttl = \"five\"\n", "ttl"),
            ("[dns]\nlisten = \"nowhere\"\n", "listen"),
            ("[dns]\ndomain = \"bad_domain!\"\n", "dns.domain"),
            ("[dns]\nttl = 100000\n", "dns.ttl"),
            ("[dns]\nns_name = \"bad name\"\n", "dns.ns_name"),
            (
                "[dns]\nns_name = \"ns.example.org\"\nns_address = [\"127.0.0.1\"]\n",
                "dns.ns_name",
            ),
            ("[dns]\nns_address = [\"not-an-ip\"]\n", "ns_address"),
            ("[dns]\nmax_udp_payload = 100\n", "dns.max_udp_payload"),
            ("[dns]\ncookie_secret = \"e5e973\"\n", "dns.cookie_secret"),
            (
                "[dns]\ncookie_secrets_accepted = [\"e5e973e5a6b2a43f48e7dc849e37bfcf\"]\n",
                "dns.cookie_secrets_accepted",
            ),
            (
                "[dns]\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n\
                 cookie_secrets_accepted = [\"E5E973E5A6B2A43F48E7DC849E37BFCF\"]\n",
                "dns.cookie_secrets_accepted",
            ),
            (
                "[dns]\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n\
                 cookie_secrets_accepted = [\"445536bcd2513298075a5d379663c962\", \
                 \" 445536BCD2513298075A5D379663C962\"]\n",
                "dns.cookie_secrets_accepted",
            ),
            (
                "[dns]\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n\
                 cookie_secrets_accepted = [\"e5e9\"]\n",
                "dns.cookie_secrets_accepted",
            ),
            (
                "[dns]\ncookies = false\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n",
                "dns.cookie_secret",
            ),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            (
                "[http]\nmax_connections = 99999999\n",
                "http.max_connections",
            ),
            (
                "[http]\nheader_read_timeout = 0\n",
                "http.header_read_timeout",
            ),
            ("[http]\nbody_read_timeout = 0\n", "http.body_read_timeout"),
            ("[http]\nidle_timeout = 0\n", "http.idle_timeout"),
            ("[http]\nwrite_timeout = 0\n", "http.write_timeout"),
            ("[http]\nidle_timeout = 86400\n", "http.idle_timeout"),
            ("[http]\nidle_timeout = \"60s\"\n", "idle_timeout"),
            (
                "[dns]\ntcp_max_connections = 0\n",
                "dns.tcp_max_connections",
            ),
            ("[dns]\ntcp_idle_timeout = 0\n", "dns.tcp_idle_timeout"),
            (
                "[dns]\ntcp_max_connection_age = 0\n",
                "dns.tcp_max_connection_age",
            ),
            (
                "[cluster]\netcd = [\"https://127.0.0.1:2379\", \"http://127.0.0.1:2380\"]\ntls_ca_file = \"ca.pem\"\n",
                "cluster.etcd",
            ),
            (
                "[cluster]\netcd = [\"https://127.0.0.1:2379\"]\n",
                "cluster.tls_ca_file",
            ),
            (
                "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nusername = \"roster\"\n",
                "cluster.password_file",
            ),
            (
                "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\npassword_file = \"pw\"\n",
                "cluster.username",
            ),
            (
                "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\ntls_ca_file = \"ca.pem\"\n",
                "cluster.tls_ca_file",
            ),
            (
                "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n",
                "cluster.tls_cert_file",
            ),
            (
                "[cluster]\netcd = [\"https://127.0.0.1:2379\"]\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\n",
                "cluster.tls_key_file",
            ),
            (
                "[cluster]\netcd = [\"https://127.0.0.1:2379\"]\ntls_ca_file = \"ca.pem\"\ntls_key_file = \"k.pem\"\n",
                "cluster.tls_cert_file",
            ),
        ];
        for (text, key) in cases {
            let message = parse(text).expect_err(text).to_string();
            assert!(message.contains(key), "{text}: {message}");
        }
    }

    #[test]
    fn tls_to_etcd_parses_whole_and_is_off_by_default() {
        let config = parse(
            "[cluster]\netcd = [\"https://127.0.0.1:2379\", \"https://[::1]:2379\"]\n\
             tls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n",
        )
        .expect("valid");
        assert!(config.cluster.tls());
        let config =
            parse("[cluster]\netcd = [\"https://127.0.0.1:2379\"]\ntls_ca_file = \"ca.pem\"\n")
                .expect("a CA alone: etcd without --client-cert-auth");
        assert!(config.cluster.tls());
        assert!(!Config::default().cluster.tls());
    }

    #[test]
    fn the_ns_name_defaults_under_the_domain_with_the_listen_address() {
        let config = parse("[dns]\ndomain = \"Consul.Example\"\n").expect("valid");
        let domain = config.domain_name().expect("a domain");
        assert_eq!(
            config.ns_name(&domain).expect("a name").to_string(),
            "ns.consul.example."
        );
        assert_eq!(config.ns_addresses(), [config.dns.listen.ip()]);

        let config = parse("[dns]\nlisten = \"0.0.0.0:53\"\n").expect("valid");
        assert!(config.ns_addresses().is_empty(), "no address to give");

        let config = parse(
            "[dns]\nns_name = \"DNS1.service.local.\"\nns_address = [\"192.0.2.1\", \"2001:db8::1\"]\n",
        )
        .expect("valid");
        let domain = config.domain_name().expect("a domain");
        assert_eq!(
            config.ns_name(&domain).expect("a name").to_string(),
            "dns1.service.local."
        );
        assert_eq!(config.ns_addresses().len(), 2);

        let outside = parse("[dns]\nns_name = \"ns1.example.org\"\n").expect("valid");
        let domain = outside.domain_name().expect("a domain");
        assert_eq!(
            outside.ns_name(&domain).expect("a name").to_string(),
            "ns1.example.org."
        );
    }
}
