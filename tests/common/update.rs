//! DNS UPDATE (RFC 2136) as real clients send it: a roster with
//! `[dns.update]` configured from TOML as a user writes it
//! ([`start_update_server`]), `nsupdate` (bind9-dnsutils) and `knsupdate`
//! (knot-dnsutils) fed a script on stdin ([`Tool`]), dnspython for the
//! message shapes no command-line tool sends on demand
//! (`tests/dns_update/send.py`, [`dnspython`]), and the registry's state
//! as the HTTP API shows it, to prove that a refused update changed
//! nothing ([`snapshot`]).
//!
//! Every client runs with a time limit and is killed if the test panics
//! (`kill_on_drop`).

use std::{
    net::SocketAddr,
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use roster::Config;
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, process::Command, time::timeout};

use super::{Server, start_server_with};

/// The dynamic domain's zone, as clients name it.
pub const ZONE: &str = "service.local.";

/// How long one client run may take on a busy machine (nsupdate's own UDP
/// retries take up to 9 s before it gives up).
pub const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// Debian's interpreter: python3-dnspython installs for it only, and a
/// `python3` earlier in PATH (pyenv, a venv) would not see dnspython.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A TSIG key as `[[dns.update.keys]]` configures it and clients use it.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// The key's name, fully qualified.
    pub name: &'static str,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: &'static str,
    /// The shared secret, base64.
    pub secret: &'static str,
    /// The services it may change, as TOML (`["*"]`).
    pub services: &'static str,
}

/// May change every service.
pub const ADMIN: Key = Key {
    name: "roster-key.",
    algorithm: "hmac-sha256",
    secret: "CLyCJBRfcPP1M6IvKxKN6aB1a1Nq36OdUPtlq/1PnlY=",
    services: r#"["*"]"#,
};

/// May change the service `web` only; a second algorithm.
pub const WEB_ONLY: Key = Key {
    name: "web-only.",
    algorithm: "hmac-sha512",
    secret: "SLalip3gzxKZLPuzMYIIVjRYAqJVI6yDZUprFaP/qvA=",
    services: r#"["web"]"#,
};

/// Configured nowhere: roster must answer BADKEY.
pub const UNKNOWN: Key = Key {
    name: "nobody.",
    algorithm: "hmac-sha256",
    secret: "234ccmZhD0XEiqT+ccWqRqtm8ZWPV0Kg0TkeHz5shW0=",
    services: r#"["*"]"#,
};

/// [`ADMIN`]'s name with another secret: roster must answer BADSIG.
pub const WRONG_SECRET: Key = Key {
    secret: "234ccmZhD0XEiqT+ccWqRqtm8ZWPV0Kg0TkeHz5shW0=",
    ..ADMIN
};

/// The port instances made from an address record alone get.
pub const DEFAULT_PORT: u16 = 8080;

impl Key {
    /// `-y algorithm:name:secret`, as nsupdate and knsupdate take it.
    pub fn y_arg(&self) -> String {
        format!("{}:{}:{}", self.algorithm, self.name, self.secret)
    }

    /// Its `[[dns.update.keys]]` table.
    pub fn toml(&self) -> String {
        format!(
            "[[dns.update.keys]]\nname = \"{}\"\nalgorithm = \"{}\"\nsecret = \"{}\"\nservices = {}\n",
            self.name, self.algorithm, self.secret, self.services
        )
    }

    /// The key as `send.py` takes it.
    pub fn json(&self) -> Value {
        json!({ "name": self.name, "algorithm": self.algorithm, "secret": self.secret })
    }
}

/// `[dns.update]` enabled with [`DEFAULT_PORT`], no default check, and the
/// keys [`ADMIN`] and [`WEB_ONLY`].
pub fn update_toml() -> String {
    format!(
        "[dns.update]\nenabled = true\ndefault_port = {DEFAULT_PORT}\n\n{}\n{}",
        ADMIN.toml(),
        WEB_ONLY.toml()
    )
}

/// Starts roster (as [`start_server_with`] does: ephemeral loopback ports,
/// its own directories, checks allowed to loopback only) with the
/// configuration `toml` parsed as roster parses its config file, and
/// `zone_files` in its zone directory.
pub async fn start_update_server_with(toml: &str, zone_files: &[(&str, &str)]) -> Server {
    let parsed = Config::parse(toml, Path::new("test config"))
        .unwrap_or_else(|e| panic!("the test's config is refused: {e}\n{toml}"));
    start_server_with(zone_files, move |config| {
        // Keep what start_server_with chose for every test (ports,
        // directories, the health network policy); take the rest from the
        // parsed TOML.
        let mut merged = parsed;
        merged.dns.listen = config.dns.listen;
        merged.http.listen = config.http.listen;
        merged.dns.zones = config.dns.zones.clone();
        merged.data_dir = config.data_dir.clone();
        merged.health.allowed_networks = config.health.allowed_networks.clone();
        *config = merged;
    })
    .await
}

/// [`start_update_server_with`] on [`update_toml`], no static zones.
pub async fn start_update_server() -> Server {
    start_update_server_with(&update_toml(), &[]).await
}

/// A DNS UPDATE command-line client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// BIND's nsupdate (bind9-dnsutils).
    Nsupdate,
    /// Knot's knsupdate (knot-dnsutils).
    Knsupdate,
}

/// Over which transport a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// `-v` for both tools.
    Tcp,
}

/// What one client run did.
#[derive(Debug)]
pub struct ToolRun {
    /// The command, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for ToolRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl ToolRun {
    /// Asserts that the update was sent and accepted.
    pub fn assert_ok(&self) {
        assert!(self.status.success(), "expected success:\n{self}");
    }

    /// Asserts that the client reports the update failed with `rcode`
    /// (`REFUSED`, `YXDOMAIN`, ...).
    pub fn assert_rcode(&self, rcode: &str) {
        assert!(!self.status.success(), "expected {rcode}:\n{self}");
        assert!(
            self.stdout.contains(rcode) || self.stderr.contains(rcode),
            "expected {rcode} in the output:\n{self}"
        );
    }

    /// Asserts that the client reports a failure, whatever it says.
    pub fn assert_failed(&self) {
        assert!(!self.status.success(), "expected a failure:\n{self}");
    }
}

impl Tool {
    fn program(self) -> (&'static str, &'static str) {
        match self {
            Self::Nsupdate => ("nsupdate", "bind9-dnsutils"),
            Self::Knsupdate => ("knsupdate", "knot-dnsutils"),
        }
    }

    /// Runs the tool with `-y <key>` (raw `key_arg`, so a test can send a
    /// malformed one) over `transport`, feeding it `server <addr>`,
    /// `zone service.local.`, then `commands` and `send`.
    pub async fn run_with(
        self,
        key_arg: Option<&str>,
        transport: Transport,
        server: SocketAddr,
        commands: &str,
    ) -> ToolRun {
        let script = format!(
            "server {} {}\nzone {ZONE}\n{}\nsend\n",
            server.ip(),
            server.port(),
            commands.trim()
        );
        self.run_script(key_arg, transport, &script).await
    }

    /// [`Tool::run_with`] signed with `key`.
    pub async fn run(
        self,
        key: &Key,
        transport: Transport,
        server: SocketAddr,
        commands: &str,
    ) -> ToolRun {
        self.run_with(Some(&key.y_arg()), transport, server, commands)
            .await
    }

    /// Runs the tool on `script` as written (its own `server`, `zone` and
    /// `send` lines).
    pub async fn run_script(
        self,
        key_arg: Option<&str>,
        transport: Transport,
        script: &str,
    ) -> ToolRun {
        let (program, package) = self.program();
        let mut args: Vec<String> = Vec::new();
        if let Some(key_arg) = key_arg {
            args.extend(["-y".to_owned(), key_arg.to_owned()]);
        }
        if transport == Transport::Tcp {
            args.push("-v".to_owned());
        }
        // knsupdate keeps a history file in $HOME in interactive mode;
        // stdin is a pipe here, but keep it out of the real home anyway.
        let home = tempfile::tempdir().expect("temporary HOME");
        let home = home.path().display().to_string();
        run_program(program, package, &args, script, &[("HOME", &home)]).await
    }
}

/// Runs `program` with `args`, `stdin` written to it, bounded by
/// [`TOOL_LIMIT`]; `package` says what to install when it is missing.
pub async fn run_program(
    program: &str,
    package: &str,
    args: &[String],
    stdin: &str,
    env: &[(&str, &str)],
) -> ToolRun {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}\n(Debian: apt-get install {package}; .ci/run installs it)")
        });
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{command}: write stdin: {e}"));
    drop(input);
    let output = timeout(TOOL_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command} did not finish within {TOOL_LIMIT:?}:\n{stdin}"))
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    ToolRun {
        command,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// What `send.py` saw: the answer's RCODE and TSIG.
#[derive(Debug)]
pub struct PyAnswer {
    /// `NOERROR`, `REFUSED`, `NOTAUTH`, ...
    pub rcode: String,
    /// The answer's TSIG error (`BADKEY`, `BADSIG`, `BADTIME`), `None`
    /// when it has no TSIG or no error.
    pub tsig_error: Option<String>,
    /// Whether the answer has a TSIG at all.
    pub signed: bool,
    /// Whether its MAC verifies with the request's key (`None`: no MAC).
    pub mac_ok: Option<bool>,
    /// The whole answer as printed.
    pub raw: Value,
}

/// Sends one UPDATE built by `tests/dns_update/send.py` from `spec` (its
/// module doc gives the fields; `server`, `port` and `zone` are filled in
/// here) and returns what came back.
pub async fn dnspython(server: SocketAddr, mut spec: Value) -> PyAnswer {
    spec["server"] = json!(server.ip().to_string());
    spec["port"] = json!(server.port());
    if spec.get("zone").is_none() {
        spec["zone"] = json!(ZONE);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dns_update/send.py");
    let run = run_program(
        SYSTEM_PYTHON,
        "python3-dnspython",
        &[script.display().to_string()],
        &spec.to_string(),
        &[],
    )
    .await;
    assert!(run.status.success(), "send.py failed on {spec}:\n{run}");
    let raw: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("send.py printed no JSON ({e}):\n{run}"));
    let tsig = &raw["tsig"];
    PyAnswer {
        rcode: raw["rcode"].as_str().unwrap_or_default().to_owned(),
        tsig_error: tsig["error"].as_str().map(str::to_owned),
        signed: !tsig.is_null(),
        mac_ok: tsig["mac_ok"].as_bool(),
        raw,
    }
}

/// The registry as the HTTP API lists it: every service with its
/// instances' content and modify index, check statuses included but not
/// their outputs or times. Two snapshots are equal when nothing was
/// written in between.
pub async fn snapshot(server: &Server) -> Value {
    let services = server.services().await;
    let mut all = serde_json::Map::new();
    for service in services.as_array().into_iter().flatten() {
        let name = service["name"].as_str().unwrap_or_default();
        let reply = server.get(&["v1", "services", name]).await;
        assert_eq!(reply.status, 200, "GET service {name}: {reply:?}");
        let mut instances: Vec<Value> = reply.body["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|instance| {
                let checks: Vec<Value> = instance["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| json!({ "id": c["id"], "type": c["type"], "status": c["status"] }))
                    .collect();
                json!({
                    "id": instance["id"],
                    "address": instance["address"],
                    "port": instance["port"],
                    "tags": instance["tags"],
                    "meta": instance["meta"],
                    "weight": instance["weight"],
                    "priority": instance["priority"],
                    "checks": checks,
                    "modify_index": instance["modify_index"],
                })
            })
            .collect();
        instances.sort_by_key(|i| i["id"].as_str().unwrap_or_default().to_owned());
        all.insert(name.to_owned(), Value::Array(instances));
    }
    Value::Object(all)
}
