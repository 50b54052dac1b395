//! Descriptor limits: every open connection costs a file descriptor, and a
//! process that runs out of them stops accepting API clients, stops health
//! probes (so healthy TCP-checked instances drop out of DNS) and cannot
//! open its store. roster therefore raises its own soft `RLIMIT_NOFILE` to
//! the hard limit at start, and sizes its connection caps to fit whatever
//! limit it got, keeping a reserve for everything that is not a client
//! connection.
//!
//! Owns: the process's `RLIMIT_NOFILE` and the arithmetic of the caps. Must
//! not: open sockets or enforce the caps (the HTTP and DNS servers do).

// getrlimit/setrlimit through libc, on a local struct.
#![allow(unsafe_code)]

use tracing::{info, warn};

/// Descriptors always kept out of the connection caps: standard streams,
/// the runtime's epoll and wakers, the store's files, the listeners, one
/// UDP socket per core, in-flight health probes, and room to accept a new
/// client while an idle one is being closed to make room for it.
const BASE_RESERVE: u64 = 64;

/// On top of [`BASE_RESERVE`], this fraction (1/n) of the limit is kept in
/// reserve too, so the headroom for probes and bursts grows with the
/// limit instead of being a fixed handful.
const RESERVE_FRACTION: u64 = 8;

/// The smallest cap either server gets, even when the limit is too low to
/// honour the reserve: a server that accepts nothing is worse than one
/// that might run short.
const MIN_CAP: usize = 4;

/// Why the descriptor limit could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("cannot read the open-file limit (RLIMIT_NOFILE): {0}")]
    Read(std::io::Error),
}

/// How many client connections each TCP server may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Connections to the HTTP API.
    pub http: usize,
    /// DNS-over-TCP connections.
    pub dns_tcp: usize,
}

/// Raises the soft open-file limit as far as the hard limit allows and
/// returns the soft limit now in effect. Many systems start services with
/// a soft limit of 1,024 and a hard one far higher; only the soft one
/// binds, and any process may raise it up to the hard one. Failing to
/// raise it is not fatal: roster then fits its caps to the lower limit.
pub fn raise_nofile_limit() -> Result<u64, LimitsError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, exclusively borrowed `rlimit` that
    // getrlimit fills in; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(LimitsError::Read(std::io::Error::last_os_error()));
    }
    // rlim_t is u64 on Linux, the only platform roster supports.
    let soft: u64 = limit.rlim_cur;
    // Linux refuses an "infinite" open-file limit; the real ceiling is
    // fs.nr_open.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(soft)
    } else {
        limit.rlim_max
    };
    if target <= soft {
        return Ok(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid `rlimit` that setrlimit only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let error = std::io::Error::last_os_error();
        warn!(soft, target, %error, "cannot raise the open-file limit; keeping it");
        return Ok(soft);
    }
    info!(from = soft, to = target, "raised the open-file limit");
    Ok(target)
}

/// The connection caps that fit in `nofile` descriptors: the wanted caps
/// when they fit beside the reserve, else what remains after the reserve,
/// split fairly between the two servers (with a warning, since
/// the configuration asked for more than the process can hold).
pub fn connection_caps(http_wanted: usize, dns_tcp_wanted: usize, nofile: u64) -> ConnectionCaps {
    let reserve = BASE_RESERVE + nofile / RESERVE_FRACTION;
    let available = usize::try_from(nofile.saturating_sub(reserve)).unwrap_or(usize::MAX);
    let wanted = http_wanted.saturating_add(dns_tcp_wanted);
    if wanted <= available {
        return ConnectionCaps {
            http: http_wanted,
            dns_tcp: dns_tcp_wanted,
        };
    }
    // Max-min fair: a server that wants less than half gets all it wants
    // and the other gets the rest; otherwise they halve what there is. (A
    // split in proportion to the wants would starve DNS whenever HTTP's
    // cap is set absurdly high.)
    let half = available / 2;
    let (http, dns_tcp) = if http_wanted <= half {
        (http_wanted, dns_tcp_wanted.min(available - http_wanted))
    } else if dns_tcp_wanted <= half {
        (http_wanted.min(available - dns_tcp_wanted), dns_tcp_wanted)
    } else {
        (available - half, half)
    };
    let caps = ConnectionCaps {
        http: http.max(MIN_CAP),
        dns_tcp: dns_tcp.max(MIN_CAP),
    };
    warn!(
        nofile,
        reserve,
        http_wanted,
        dns_tcp_wanted,
        http = caps.http,
        dns_tcp = caps.dns_tcp,
        "the open-file limit cannot hold the configured connection caps; lowering them \
         (raise the limit, e.g. LimitNOFILE= in the systemd unit, to keep them)"
    );
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit() {
        // (http wanted, dns wanted, nofile) → (http, dns)
        let table = [
            // The usual default soft limit: 1024 - (64 + 128) = 832 left,
            // split evenly.
            ((1024, 1024, 1024), (416, 416)),
            // A raised limit holds the defaults as configured.
            ((1024, 1024, 65_536), (1024, 1024)),
            // Both configured far above what fits: the room is halved.
            ((100_000, 100_000, 65_536), (28_640, 28_640)),
            // One wants less than half the room (4096 - (64 + 512) = 3520):
            // it keeps its cap, the other gets the rest.
            ((3000, 1000, 4096), (2520, 1000)),
            ((100_000, 1024, 20_000), (16_412, 1024)),
            ((1024, 100_000, 20_000), (1024, 16_412)),
            // Small caps that fit are kept even under a low limit.
            ((50, 50, 1024), (50, 50)),
            // A very low limit: 256 - (64 + 32) = 160 left.
            ((1024, 1024, 256), (80, 80)),
            // Below the reserve: the floor, not zero.
            ((1024, 1024, 16), (MIN_CAP, MIN_CAP)),
        ];
        for ((http, dns, nofile), (want_http, want_dns)) in table {
            let caps = connection_caps(http, dns, nofile);
            assert_eq!(
                caps,
                ConnectionCaps {
                    http: want_http,
                    dns_tcp: want_dns
                },
                "http {http}, dns {dns}, nofile {nofile}"
            );
        }
    }

    #[test]
    fn lowered_caps_never_exceed_the_limit_less_the_reserve() {
        for nofile in [128, 256, 1000, 1024, 4096, 65_536, 1 << 20] {
            let caps = connection_caps(usize::MAX / 4, usize::MAX / 4, nofile);
            let reserve = BASE_RESERVE + nofile / RESERVE_FRACTION;
            let total = (caps.http + caps.dns_tcp) as u64;
            assert!(
                total <= nofile.saturating_sub(reserve).max(2 * MIN_CAP as u64),
                "nofile {nofile}: {caps:?}"
            );
        }
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `before` is a valid, exclusively borrowed `rlimit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) },
            0
        );
        let now = raise_nofile_limit().expect("read the limit");
        assert!(now >= before.rlim_cur);
    }
}
