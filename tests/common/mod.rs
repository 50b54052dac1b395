//! Helpers shared by the integration tests, one file per kind of thing a
//! test talks to:
//!
//! - [`server`]: a real roster in the test's runtime on ephemeral ports
//!   ([`start_server`]);
//! - [`dns`]: a small DNS client over UDP and TCP built on hickory-proto's
//!   wire format ([`Reply`]), and `dig` as an independent one;
//! - [`http`]: the native API over HTTP ([`HttpReply`]);
//! - [`install`]: third-party test tools (venvs, npm packages) installed
//!   under `target/` on first use;
//! - [`poll`]: waiting, with an overall limit, for a state to show;
//! - [`targets`]: the HTTP and TCP endpoints health checks probe;
//! - [`tls`]: a test CA and certificates made at test time, HTTPS clients
//!   and an HTTPS endpoint for health checks;
//! - [`process`]: the `roster` binary as a child process, for signals,
//!   crashes and the command line;
//! - [`load`]: a concurrent write load with a model of what each
//!   acknowledgement promises, for crash and shutdown tests;
//! - [`daemon`]: third-party daemons (HAProxy, nginx, unbound) started
//!   in the foreground with their own config;
//! - [`readme`]: the README's shell blocks and configuration snippets, for
//!   the tests that run them as written;
//! - [`web`]: named HTTP backends for load balancers to reach;
//! - [`etcd`]: a real etcd cluster of 1 or 3 members whose members a test
//!   kills and restarts ([`etcd::EtcdCluster`]), for cluster mode;
//! - [`cluster`]: N roster processes in cluster mode on one etcd cluster
//!   ([`cluster::RosterCluster`]), with the HTTP and DNS reads every node
//!   is compared by;
//! - [`update`]: DNS UPDATE clients (nsupdate, knsupdate, dnspython) and
//!   a roster configured to accept them.
//!
//! Every wait here has an overall deadline, so a broken server fails a test
//! instead of hanging it; none of them is a timing assertion.

// Each test binary uses its own subset of these helpers, and they are
// `pub` so that every test file can reach them: there is no API here for
// `unreachable_pub` to guard.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod daemon;
pub mod dns;
pub mod etcd;
pub mod http;
pub mod install;
pub mod load;
pub mod poll;
pub mod process;
pub mod readme;
pub mod server;
pub mod targets;
pub mod tls;
pub mod update;
pub mod web;

// Re-exported so a test names `common::start_server`, not its file; each
// binary uses a subset.
#[allow(unused_imports)]
pub use dns::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use poll::*;
#[allow(unused_imports)]
pub use server::*;

use std::time::Duration;

/// The longest any single request (DNS over TCP, HTTP) may take.
const DEADLINE: Duration = Duration::from_secs(20);
