//! Which of roster's UDP sockets a datagram goes to: the one of the CPU
//! that received it.
//!
//! roster serves DNS over UDP from several sockets sharing one port
//! (SO_REUSEPORT), one thread each. By default Linux picks a socket by a
//! hash of the datagram's addresses and ports, so each client socket always
//! lands on the same server socket, and a handful of clients can load one
//! thread far more than the others (measured: 1,040 ms against 260 ms of
//! CPU in 2 s with ten dnsperf sockets over two threads). Every datagram is
//! also handed from the CPU that received it to wherever that thread runs.
//!
//! A classic BPF program attached to the group (SO_ATTACH_REUSEPORT_CBPF)
//! picks the socket instead: `CPU number mod sockets`. Datagrams are spread
//! as evenly as the CPUs that receive them (on a real network, the NIC's
//! receive queues), and each thread's datagrams arrive on one CPU, where the
//! scheduler then tends to keep it. bench/RESULTS.md (DNS, 2026-12-07
//! 11:42–12:13) has what it bought. DNS over UDP promises no order between
//! datagrams, so a client whose queries go to two sockets loses nothing.
//!
//! With `dns.udp_cpu_affinity`, each socket's thread is also pinned to the
//! CPUs whose datagrams its socket gets ([`pin_to_steered_cpus`]), as NSD's
//! `cpu-affinity` does: a datagram is then received, answered and sent on
//! one CPU, and no other thread's wake-up moves the UDP threads around.
//! Off by default: a pinned thread cannot leave a CPU that something else
//! keeps busy.
//!
//! Owns: attaching that program, and pinning the threads to match. Must
//! not: fail the server where the kernel lacks either (before Linux 4.5, or
//! another system): datagrams are then spread by the hash, as before, and
//! threads run where the scheduler puts them.

#![allow(unsafe_code)] // setsockopt(2) with a BPF program: no safe wrapper.

use std::{io, net::UdpSocket};

/// Makes the reuseport group of `sockets` (bound in this order, all on one
/// port) steer each datagram to `sockets[cpu % sockets.len()]`, and says
/// whether it did. Does nothing for a single socket, or for more sockets
/// than the machine has CPUs: `cpu % sockets` would never reach the last
/// ones, and whoever asked for that many wants them all served (the hash
/// reaches them all).
#[cfg(target_os = "linux")]
pub fn steer_by_cpu(sockets: &[UdpSocket]) -> io::Result<bool> {
    use std::os::fd::AsRawFd;

    // The instructions' opcodes (linux/bpf_common.h); they fit in 16 bits.
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const ALU_MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
    const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
    // asm-generic/socket.h (libc does not export it on every target): 51
    // everywhere but alpha, mips, parisc and sparc, which number their
    // socket options differently and which roster is not built for.
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

    let (Some(first), Ok(count)) = (sockets.first(), u32::try_from(sockets.len())) else {
        return Ok(false);
    };
    // SAFETY: sysconf has no preconditions; -1 (unknown) counts as too few.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if count < 2 || u32::try_from(cpus).map_or(true, |cpus| count > cpus) {
        return Ok(false);
    }
    let program = [
        // A = the number of the CPU running the program (the receiving one)
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        },
        // A = A mod the number of sockets
        libc::sock_filter {
            code: ALU_MOD_K,
            jt: 0,
            jf: 0,
            k: count,
        },
        // the index of the socket in the group, in the order bound
        libc::sock_filter {
            code: RET_A,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, both alive until setsockopt
    // returns (the kernel copies the program), and the length passed is
    // that of a `sock_fprog`. The descriptor is a socket `first` owns.
    let result = unsafe {
        libc::setsockopt(
            first.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(true)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the hash spreads datagrams; nothing to attach.
#[cfg(not(target_os = "linux"))]
pub fn steer_by_cpu(_sockets: &[UdpSocket]) -> io::Result<bool> {
    Ok(false)
}

/// Pins the calling thread to the CPUs whose datagrams [`steer_by_cpu`]
/// sends to socket `index` of `count` (`cpu % count == index`), of those
/// it may run on now (a cpuset, `taskset`). `Ok(false)`, leaving it
/// unpinned, when none of them is allowed.
#[cfg(target_os = "linux")]
pub(super) fn pin_to_steered_cpus(index: usize, count: usize) -> io::Result<bool> {
    const SET_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the
    // empty set.
    let (mut allowed, mut steered): (libc::cpu_set_t, libc::cpu_set_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most
    // SET_SIZE octets, the size of `allowed`.
    if unsafe { libc::sched_getaffinity(0, SET_SIZE, &mut allowed) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut any = false;
    for cpu in (index..8 * SET_SIZE).step_by(count.max(1)) {
        // SAFETY: `cpu` is below the sets' size in bits, so both touch a
        // bit inside their set.
        unsafe {
            if libc::CPU_ISSET(cpu, &allowed) {
                libc::CPU_SET(cpu, &mut steered);
                any = true;
            }
        }
    }
    if !any {
        return Ok(false);
    }
    // SAFETY: pid 0 is the calling thread; `steered` is SET_SIZE octets.
    if unsafe { libc::sched_setaffinity(0, SET_SIZE, &steered) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Elsewhere nothing is steered, so nothing is pinned.
#[cfg(not(target_os = "linux"))]
pub(super) fn pin_to_steered_cpus(_index: usize, _count: usize) -> io::Result<bool> {
    Ok(false)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::{
        net::{SocketAddr, UdpSocket},
        time::{Duration, Instant},
    };

    use super::{pin_to_steered_cpus, steer_by_cpu};

    fn reuseport_socket(address: SocketAddr) -> UdpSocket {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        socket.bind(&address.into()).expect("bind");
        let socket: UdpSocket = socket.into();
        socket.set_nonblocking(true).expect("non-blocking");
        socket
    }

    /// Runs `f` on a thread allowed only on `cpu`.
    fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET
                    // and sched_setaffinity get valid pointers to it and its
                    // size, for the calling thread (pid 0).
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(cpu, &mut set);
                        let size = std::mem::size_of::<libc::cpu_set_t>();
                        assert_eq!(libc::sched_setaffinity(0, size, &set), 0, "pin to {cpu}");
                    }
                    f()
                })
                .join()
                .expect("pinned thread")
        })
    }

    /// Which of `sockets` got the datagram just sent, if one did within a
    /// few seconds (loopback delivers it before `send_to` returns; the wait
    /// is for a machine under load).
    fn receiver(sockets: &[UdpSocket]) -> Option<usize> {
        let mut buffer = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(found) = sockets
                .iter()
                .position(|socket| socket.recv_from(&mut buffer).is_ok())
            {
                return Some(found);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// The CPUs the calling thread may run on.
    fn allowed_cpus() -> Option<Vec<usize>> {
        // SAFETY: sched_getaffinity fills the zeroed set of the size given,
        // for the calling thread (pid 0); CPU_ISSET reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut set) != 0 {
                return None;
            }
            Some(
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                    .collect(),
            )
        }
    }

    /// An even and an odd CPU this process may run on, if it may run on
    /// both kinds.
    fn even_and_odd_cpu() -> Option<[usize; 2]> {
        let allowed = allowed_cpus()?;
        let even = allowed.iter().find(|&&cpu| cpu % 2 == 0)?;
        let odd = allowed.iter().find(|&&cpu| cpu % 2 == 1)?;
        Some([*even, *odd])
    }

    #[test]
    fn a_datagram_goes_to_the_socket_of_the_cpu_that_received_it() {
        let Some([even, odd]) = even_and_odd_cpu() else {
            eprintln!("no even and odd CPU to run on: nothing to steer between; skipped");
            return;
        };
        let first = reuseport_socket("127.0.0.1:0".parse().expect("address"));
        let address = first.local_addr().expect("bound");
        let sockets = vec![first, reuseport_socket(address)];
        assert!(steer_by_cpu(&sockets).expect("attach the program"));

        // One client socket: the hash would send all of its datagrams to
        // one server socket. On loopback the sender's CPU receives them.
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        for cpu in [even, odd, even, odd] {
            on_cpu(cpu, || client.send_to(b"query", address).expect("send"));
            assert_eq!(
                receiver(&sockets),
                Some(cpu % sockets.len()),
                "sent from CPU {cpu}"
            );
        }
    }

    #[test]
    fn one_socket_or_none_is_left_alone() {
        assert_eq!(steer_by_cpu(&[]).ok(), Some(false));
        let one = reuseport_socket("127.0.0.1:0".parse().expect("address"));
        assert_eq!(steer_by_cpu(std::slice::from_ref(&one)).ok(), Some(false));
    }

    #[test]
    fn a_pinned_thread_runs_only_where_its_socket_gets_datagrams() {
        let Some(before) = allowed_cpus() else {
            eprintln!("affinity unreadable here; skipped");
            return;
        };
        for index in 0..2 {
            let after = std::thread::spawn(move || {
                let pinned = pin_to_steered_cpus(index, 2).expect("pin");
                (pinned, allowed_cpus().expect("readable"))
            })
            .join()
            .expect("the pinned thread");
            let theirs: Vec<usize> = before
                .iter()
                .copied()
                .filter(|cpu| cpu % 2 == index)
                .collect();
            if theirs.is_empty() {
                assert_eq!(after, (false, before.clone()), "socket {index}: left alone");
            } else {
                assert_eq!(after, (true, theirs), "socket {index}");
            }
        }
        // The calling thread was never touched.
        assert_eq!(allowed_cpus(), Some(before));
    }

    #[test]
    fn more_sockets_than_cpus_are_all_reached() {
        // SAFETY: as in `steer_by_cpu`.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        let count = usize::try_from(cpus).expect("a CPU count") + 1;
        let first = reuseport_socket("127.0.0.1:0".parse().expect("address"));
        let address = first.local_addr().expect("bound");
        let mut sockets = vec![first];
        sockets.extend((1..count).map(|_| reuseport_socket(address)));
        assert!(!steer_by_cpu(&sockets).expect("nothing to attach"));
        // From many client sockets (many hashes), the last server socket,
        // which `cpu % count` never picks, still gets datagrams.
        let mut reached = vec![false; count];
        for _ in 0..64 {
            let client = UdpSocket::bind("127.0.0.1:0").expect("client");
            client.send_to(b"query", address).expect("send");
            if let Some(socket) = receiver(&sockets) {
                reached[socket] = true;
            }
        }
        assert!(
            reached[count - 1],
            "the last socket got nothing: {reached:?}"
        );
    }
}
