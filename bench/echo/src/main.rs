//! `roster-bench-echo 127.0.0.1:PORT [THREADS] [SECONDS]`: answers every UDP
//! datagram by sending it back with the QR bit set, nothing else, on
//! THREADS sockets sharing the port (SO_REUSEPORT, one thread each; default
//! one per core), 32 datagrams per recvmmsg/sendmmsg, for at most SECONDS
//! (default 3600), then exits. roster's UDP path uses the same batching and
//! the same choice of socket (each datagram to the socket of the CPU that
//! received it, `src/dns/steering.rs`), so the difference between the two
//! is the DNS work.
//!
//! The answers are not DNS answers (no records, the question's own flags),
//! so the bench does not check them; dnsperf counts them as NOERROR
//! responses. Loopback only: it refuses any other address.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd},
    time::{Duration, Instant},
};

/// Datagrams per system call, as roster's UDP loop.
const BATCH: usize = 32;
/// The largest datagram kept; a longer query is cut (dnsperf never sends one).
const MAX_DATAGRAM: usize = 4096;
/// The QR bit in the third octet of a DNS header.
const FLAG_QR: u8 = 0x80;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: roster-bench-echo 127.0.0.1:PORT [THREADS] [SECONDS]";
    let address: SocketAddr = match args.next().map(|a| a.parse()) {
        Some(Ok(address)) => address,
        _ => fail(usage),
    };
    if !address.ip().is_loopback() {
        fail("the echo listens on loopback addresses only");
    }
    let threads = match args.next() {
        Some(text) => text.parse().unwrap_or_else(|_| fail(usage)),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let seconds: u64 = match args.next() {
        Some(text) => text.parse().unwrap_or_else(|_| fail(usage)),
        None => 3600,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let sockets: Vec<UdpSocket> = (0..threads)
        .map(|_| bind_shared(address).unwrap_or_else(|e| fail(&format!("bind {address}: {e}"))))
        .collect();
    if let Err(error) = steer_by_cpu(&sockets) {
        eprintln!("datagrams spread by hash, not by CPU: {error}");
    }
    let workers: Vec<_> = sockets
        .into_iter()
        .map(|socket| std::thread::spawn(move || serve(&socket, deadline)))
        .collect();
    eprintln!("echo on {address}, {threads} thread(s), for {seconds} s");
    for worker in workers {
        if let Ok(Err(error)) = worker.join() {
            fail(&format!("echo failed: {error}"));
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}

/// A UDP socket on `address` with SO_REUSEPORT, so every thread has its
/// own and the kernel spreads datagrams over them, and a 1 s read timeout
/// so a thread notices its deadline.
fn bind_shared(address: SocketAddr) -> io::Result<UdpSocket> {
    let family = match address {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) with constant arguments; the result is checked
    // before it is used and owned by the UdpSocket from then on.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid socket that nothing else owns.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    bind_to(&socket, address)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(socket)
}

/// Steers each datagram to `sockets[cpu % sockets.len()]`, exactly as
/// roster's `src/dns/steering.rs` does (see there for why): a classic BPF
/// program on the reuseport group, not attached for one socket or for more
/// sockets than CPUs. A copy, since this crate stays apart from roster's
/// build.
fn steer_by_cpu(sockets: &[UdpSocket]) -> io::Result<()> {
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let (Some(first), Ok(count)) = (sockets.first(), u32::try_from(sockets.len())) else {
        return Ok(());
    };
    // SAFETY: sysconf has no preconditions; -1 (unknown) counts as too few.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if count < 2 || u32::try_from(cpus).map_or(true, |cpus| count > cpus) {
        return Ok(());
    }
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let program = [
        // ld #cpu; mod #sockets; ret a
        op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ),
        op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, count),
        op(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` and the program it points at outlive the call (the
    // kernel copies them), and its size is given.
    let set = unsafe {
        libc::setsockopt(
            first.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// bind(2) on an already created socket (std only binds while creating).
fn bind_to(socket: &UdpSocket, address: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(address);
    // SAFETY: `storage` holds a valid sockaddr of `len` octets for the call.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Receives up to BATCH datagrams at once and sends each back with QR set,
/// to its sender, until `deadline`.
fn serve(socket: &UdpSocket, deadline: Instant) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; MAX_DATAGRAM]; BATCH];
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut peers: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|buffer| libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    let mut messages: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    while Instant::now() < deadline {
        for i in 0..BATCH {
            iovecs[i].iov_len = MAX_DATAGRAM;
            let header = &mut messages[i].msg_hdr;
            header.msg_name = (&mut peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut iovecs[i];
            header.msg_iovlen = 1;
        }
        // SAFETY: `messages` holds BATCH headers whose name and iovec
        // pointers point into `peers`, `iovecs` and `buffers`, which live
        // and are not moved for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => continue,
                _ => return Err(error),
            }
        }
        let received = received as usize;
        for i in 0..received {
            let len = messages[i].msg_len as usize;
            if len > 2 {
                buffers[i][2] |= FLAG_QR;
            }
            iovecs[i].iov_len = len;
        }
        let mut sent = 0;
        while sent < received {
            // SAFETY: as above; the first `received` headers carry each
            // datagram's sender and length as recvmmsg left them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    messages[sent..].as_mut_ptr(),
                    (received - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                break; // a full socket buffer: drop the rest, as a server would
            }
            sent += n as usize;
        }
    }
    Ok(())
}
