//! The `roster` binary as a child process, for what only a process shows:
//! signals, crashes, a shared data directory, the command line. A [`Roster`]
//! guard kills its child whatever happens to the test.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::{Instant, timeout},
};

/// How long a debug build may take to start on a busy two-core machine.
pub const START_LIMIT: Duration = Duration::from_secs(60);
/// How long SIGTERM may take to end roster (its HTTP grace is 5 s).
pub const STOP_LIMIT: Duration = Duration::from_secs(15);

/// A temporary place to run roster: `data/` (the store) and `zones/`
/// (empty) under a directory that has no `config.toml`, so the built-in
/// defaults apply.
pub struct Site {
    /// The directory roster runs in; removed on drop.
    pub root: tempfile::TempDir,
}

impl Site {
    /// A fresh site in a temporary directory.
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("zones")).expect("zones dir");
        Self { root }
    }

    /// The store's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The store file roster keeps in [`Site::data_dir`].
    pub fn store_file(&self) -> PathBuf {
        self.data_dir().join("roster.redb")
    }

    /// Starts roster and waits until it serves; panics if it does not.
    pub async fn start(&self) -> Roster {
        match self.try_start().await {
            Ok(roster) => roster,
            Err(exited) => panic!(
                "roster did not start ({}):\n{}",
                exited.status, exited.stderr
            ),
        }
    }

    /// Starts roster expecting it to refuse `why` (e.g. "on a corrupt
    /// store"): panics if it serves or exits successfully.
    pub async fn start_must_fail(&self, why: &str) -> Exited {
        match self.try_start().await {
            Ok(roster) => panic!("roster started {why}:\n{}", roster.stderr()),
            Err(exited) => {
                assert!(!exited.status.success(), "{why}: {}", exited.status);
                exited
            }
        }
    }

    /// Starts roster: `Ok` once it logs that it is serving, `Err` if it
    /// exits first.
    pub async fn try_start(&self) -> Result<Roster, Exited> {
        self.try_start_with(&[]).await
    }

    /// [`Site::start`] with `extra` arguments after the usual ones (e.g.
    /// `--etcd URLS --node NAME` for cluster mode).
    pub async fn start_with(&self, extra: &[&str]) -> Roster {
        match self.try_start_with(extra).await {
            Ok(roster) => roster,
            Err(exited) => panic!(
                "roster {extra:?} did not start ({}):\n{}",
                exited.status, exited.stderr
            ),
        }
    }

    /// [`Site::try_start`] with `extra` arguments after the usual ones.
    pub async fn try_start_with(&self, extra: &[&str]) -> Result<Roster, Exited> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--zones")
            .arg(self.root.path().join("zones"))
            .args(extra)
            .current_dir(self.root.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,hickory_server=warn,hickory_net=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn roster");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, mut lines) = mpsc::unbounded_channel();
        let stderr_read = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let line = strip_ansi(&line);
                    log.lock().expect("log").push(line.clone());
                    let _ = lines_tx.send(line);
                }
            })
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let line = match timeout(deadline - Instant::now(), lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    // stderr closed: roster has exited (or is about to).
                    let status = timeout(STOP_LIMIT, child.wait())
                        .await
                        .expect("roster closed stderr but did not exit")
                        .expect("wait for roster");
                    let stderr = log.lock().expect("log").join("\n");
                    return Err(Exited { status, stderr });
                }
                Err(_) => panic!(
                    "roster neither served nor exited within {START_LIMIT:?}:\n{}",
                    log.lock().expect("log").join("\n")
                ),
            };
            if line.contains("roster is serving") {
                let dns = field(&line, "dns=").expect("dns= in the serving line");
                let http = field(&line, "http=").expect("http= in the serving line");
                return Ok(Roster {
                    child,
                    dns,
                    http,
                    log,
                    stderr_read: Some(stderr_read),
                });
            }
        }
    }
}

/// A roster that exited instead of serving.
pub struct Exited {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running roster; dropping it kills the process.
pub struct Roster {
    /// The process; killed on drop.
    child: Child,
    /// Where it answers DNS.
    pub dns: SocketAddr,
    /// Where it serves HTTP.
    pub http: SocketAddr,
    /// Every line it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The task copying stderr into `log`; it ends at EOF, after the
    /// process's last line. Taken when the process has exited.
    stderr_read: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Roster {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Roster {
    /// `http://<its HTTP address><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("roster is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit().await
    }

    /// Waits (bounded) for it to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        match timeout(STOP_LIMIT, self.child.wait()).await {
            Ok(status) => {
                // The process has exited, but its last lines may still be
                // in the pipe: read to EOF before anyone reads `log`.
                if let Some(reader) = self.stderr_read.take() {
                    let _ = timeout(STOP_LIMIT, reader).await;
                }
                status.expect("wait for roster")
            }
            Err(_) => panic!(
                "roster did not exit within {STOP_LIMIT:?} of SIGTERM:\n{}",
                self.stderr()
            ),
        }
    }

    /// `kill -9`, and reap it.
    pub async fn crash(&mut self) {
        self.child.kill().await.expect("kill -9 roster");
    }
}

/// Removes ANSI escape sequences (colours), in case the logger adds them.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address after `key` (e.g. `dns=`) in a log line.
pub fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .and_then(|value| value.trim_matches('"').parse().ok())
}

/// `roster export` / `roster import` through the CLI.
pub fn cli(args: &[&str], file: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    command.args(args).env("NO_COLOR", "1");
    if let Some(file) = file {
        command.arg(file);
    }
    command.output().expect("run roster CLI")
}
