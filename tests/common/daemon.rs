//! Third-party daemons (HAProxy, nginx, unbound, Kea's DHCP-DDNS) run by a test in the
//! foreground, each in its own temporary directory holding its config, pid
//! file and log: [`Daemon::start`] spawns one and waits until it listens;
//! dropping the [`Daemon`] kills its process group (SIGKILL) and reaps it,
//! also when the test panics. Also: free loopback ports for them to listen
//! on. The configurations they run are the README's (`super::readme`).
//!
//! The daemons are Debian's packages, which `.ci/run` installs; a machine
//! without them fails the test with what to install rather than skipping it.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;
use tokio::{
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

/// How long a daemon may take to start listening on a busy machine.
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// Attempts to find a port free for both TCP and UDP.
const PORT_ATTEMPTS: usize = 50;

/// A running daemon; dropping it kills and reaps it, then removes its
/// directory.
pub struct Daemon {
    /// What it is, for messages.
    name: String,
    /// The process; killed on drop.
    child: Child,
    /// Where its stdout and stderr go.
    log: PathBuf,
    /// Its config, pid file and logs; removed after the process is dead
    /// (field order: dropped after `Drop::drop` has run).
    dir: TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole process group: nginx's workers outlive a killed master
        // (they are reparented, not told), so killing the master alone
        // would leak them.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory for a daemon's files.
pub fn daemon_dir() -> TempDir {
    tempfile::tempdir().expect("temporary directory for a daemon")
}

impl Daemon {
    /// Runs `program` with `args` in `dir` (which holds whatever config the
    /// caller wrote there), its output to `dir/output.log`, and waits until
    /// it accepts TCP connections on `listens`. Panics with its output if
    /// it exits first or does not listen within [`START_LIMIT`]; `package`
    /// says what to install when `program` is missing.
    pub async fn start(
        program: &str,
        package: &str,
        args: &[String],
        dir: TempDir,
        listens: SocketAddr,
    ) -> Daemon {
        let mut daemon = Self::spawn(program, package, args, &[], dir);
        daemon.wait_listening(listens).await;
        daemon
    }

    /// Like [`Daemon::start`], with `env` added to its environment, for a
    /// daemon that listens on UDP only (Kea's DHCP-DDNS): waits until its
    /// output contains `ready` instead of for a TCP port.
    pub async fn start_until_logged(
        program: &str,
        package: &str,
        args: &[String],
        env: &[(&str, String)],
        dir: TempDir,
        ready: &str,
    ) -> Daemon {
        let mut daemon = Self::spawn(program, package, args, env, dir);
        daemon.wait_logged(ready).await;
        daemon
    }

    fn spawn(
        program: &str,
        package: &str,
        args: &[String],
        env: &[(&str, String)],
        dir: TempDir,
    ) -> Daemon {
        let log = dir.path().join("output.log");
        let output = File::create(&log).expect("create the daemon's log");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            // Its own process group, which drop kills whole.
            .process_group(0)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the log handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program}: {e}\n(Debian: apt-get install {package}; .ci/run installs it)"
                )
            });
        Daemon {
            name: program.to_owned(),
            child,
            log,
            dir,
        }
    }

    /// Waits until its output contains `text`, panicking if the process
    /// exits first or the wait exceeds [`START_LIMIT`].
    pub async fn wait_logged(&mut self, text: &str) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if self.output().contains(text) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll the daemon") {
                panic!(
                    "{} exited ({status}) before logging {text:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {text:?} within {START_LIMIT:?}:\n{}",
                self.name,
                self.output()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a TCP connect to `addr` succeeds, panicking if the
    /// process exits first or the wait exceeds [`START_LIMIT`].
    async fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the daemon") {
                panic!(
                    "{} exited ({status}) before listening on {addr}:\n{}",
                    self.name,
                    self.output()
                );
            }
            if let Ok(Ok(_)) = timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within {START_LIMIT:?}:\n{}",
                self.name,
                self.output()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// A file in its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A port on `ip` that is free for both TCP and UDP right now (bound, then
/// released: a daemon started at once gets it unless someone else is
/// faster, which the caller's start then reports).
pub fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..PORT_ATTEMPTS {
        let udp = UdpSocket::bind((ip, 0)).expect("bind a UDP port");
        let port = udp.local_addr().expect("UDP address").port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on {ip} in {PORT_ATTEMPTS} attempts")
}
