//! Kea's DHCP-DDNS server (`kea-dhcp-ddns`, Debian's kea-dhcp-ddns-server)
//! in front of roster, on loopback, with the configuration the README
//! shows: the test plays the DHCP server, sending D2 name-change requests
//! (NCRs) over its UDP listener, and D2 turns each into the DNS UPDATEs of
//! RFC 4703's conflict resolution (DHCID records), signed with TSIG.
//!
//! An NCR is a JSON object after a two-octet big-endian length (Kea's
//! `NameChangeRequest::toFormat`, format JSON). D2 logs one terminal
//! message per request (`DHCP_DDNS_ADD_SUCCEEDED`, `..._ADD_FAILED`,
//! `..._REMOVE_SUCCEEDED`, `..._REMOVE_FAILED`), which the test waits for
//! before reading roster's state. Kea keeps its pid and lock files in the
//! test's temporary directory (`KEA_PIDFILE_DIR`, `KEA_LOCKFILE_DIR`).

mod common;

use std::{net::UdpSocket, time::Duration};

use serde_json::json;

use common::{
    Server,
    daemon::{Daemon, daemon_dir, free_port},
    get_instance, instance,
    readme::snippet,
    served_addresses,
    update::{ADMIN, DEFAULT_PORT, snapshot, start_update_server},
};

/// D2's terminal log messages, one per request.
const OUTCOMES: [&str; 4] = [
    "DHCP_DDNS_ADD_SUCCEEDED",
    "DHCP_DDNS_ADD_FAILED",
    "DHCP_DDNS_REMOVE_SUCCEEDED",
    "DHCP_DDNS_REMOVE_FAILED",
];

/// How long D2 may take to finish one request (its two or three UPDATEs)
/// on a busy machine.
const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// The DHCID RDATA (RFC 4701) of a client: identifier type 2 (DUID),
/// digest type 1 (SHA-256), a 32-octet digest; hex, as an NCR carries it.
fn dhcid(client: u8) -> String {
    let mut hex = "000201".to_owned();
    for _ in 0..32 {
        hex.push_str(&format!("{client:02x}"));
    }
    hex
}

/// Kea's D2 on a free loopback port, forwarding `service.local.` to
/// `roster` with [`ADMIN`]'s key: the README's configuration with this
/// test's ports and secret.
async fn start_d2(roster: &Server) -> (Daemon, std::net::SocketAddr) {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let ncr_port = free_port(loopback);
    let config = snippet(
        "// kea-dhcp-ddns.conf: roster as the forward DNS server of service.local.",
        &[
            ("\"port\": 53001", &format!("\"port\": {ncr_port}")),
            (
                "\"port\": 8600",
                &format!("\"port\": {}", roster.dns_addr.port()),
            ),
            ("base64 as printed by tsig-keygen", ADMIN.secret),
            // A commit is durable before roster answers: give a busy
            // machine's fsync more than D2's default 500 ms. (D2 logs to
            // stdout at INFO by default, where the test reads outcomes.)
            (
                "\"ncr-format\": \"JSON\",",
                "\"ncr-format\": \"JSON\",\n    \"dns-server-timeout\": 10000,",
            ),
        ],
    );
    let dir = daemon_dir();
    let file = dir.path().join("kea-dhcp-ddns.conf");
    std::fs::write(&file, config).expect("write kea-dhcp-ddns.conf");
    let dir_text = dir.path().display().to_string();
    let env = [
        ("KEA_PIDFILE_DIR", dir_text.clone()),
        ("KEA_LOCKFILE_DIR", dir_text),
    ];
    let daemon = Daemon::start_until_logged(
        // By path: /usr/sbin is not in every user's PATH.
        "/usr/sbin/kea-dhcp-ddns",
        "kea-dhcp-ddns-server",
        &["-c".to_owned(), file.display().to_string()],
        &env,
        dir,
        "DHCP_DDNS_STARTED",
    )
    .await;
    (daemon, std::net::SocketAddr::new(loopback, ncr_port))
}

/// The DHCP server's side: sends NCRs to D2 and waits for each outcome.
struct DhcpServer {
    socket: UdpSocket,
    d2: std::net::SocketAddr,
    /// Requests sent so far.
    sent: usize,
}

impl DhcpServer {
    fn new(d2: std::net::SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").expect("bind the NCR sender"),
            d2,
            sent: 0,
        }
    }

    /// Sends one NCR (`add` or remove) for `fqdn` at `ip` by the client
    /// `client`, and returns D2's terminal message for it.
    async fn request(
        &mut self,
        daemon: &Daemon,
        add: bool,
        fqdn: &str,
        ip: &str,
        client: u8,
    ) -> String {
        let ncr = json!({
            "change-type": if add { 0 } else { 1 },
            "forward-change": true,
            "reverse-change": false,
            "fqdn": fqdn,
            "ip-address": ip,
            "dhcid": dhcid(client),
            "lease-expires-on": "20991231000000",
            "lease-length": 3600,
            "use-conflict-resolution": true,
        })
        .to_string();
        let length = u16::try_from(ncr.len()).expect("an NCR fits its length field");
        let mut datagram = length.to_be_bytes().to_vec();
        datagram.extend_from_slice(ncr.as_bytes());
        self.socket
            .send_to(&datagram, self.d2)
            .expect("send the NCR to D2");
        self.sent += 1;
        let wanted = self.sent;
        common::eventually(
            &format!("D2's outcome for request {wanted} ({ncr})"),
            REQUEST_LIMIT,
            || async {
                let output = daemon.output();
                let outcomes: Vec<&str> = output
                    .lines()
                    .filter_map(|line| OUTCOMES.iter().copied().find(|o| line.contains(o)))
                    .collect();
                match outcomes.get(wanted - 1) {
                    Some(outcome) => Ok((*outcome).to_owned()),
                    None => Err(format!("{} outcomes in:\n{output}", outcomes.len())),
                }
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kea_d2_adds_and_removes_a_lease_name_with_rfc_4703_conflict_resolution() {
    let server = start_update_server().await;
    let (d2, d2_addr) = start_d2(&server).await;
    let mut dhcp = DhcpServer::new(d2_addr);
    let fqdn = "web-1.web.service.local.";
    let outcome = |seen: String, wanted: &str| {
        assert_eq!(seen, wanted, "D2's log:\n{}", d2.output());
    };

    // Client 1's lease: a new name, added with its DHCID.
    outcome(
        dhcp.request(&d2, true, fqdn, "127.0.0.2", 1).await,
        "DHCP_DDNS_ADD_SUCCEEDED",
    );
    let body = instance(&server, "web", "web-1").await;
    assert_eq!(body["address"], "127.0.0.2", "{body}");
    assert_eq!(body["port"], DEFAULT_PORT, "{body}");
    assert_eq!(
        served_addresses(server.dns_addr, "web").await,
        ["127.0.0.2".to_owned()].into()
    );

    // The lease renewed: the name is in use, the DHCID matches (D2's
    // second try replaces the address with itself): nothing changes.
    let before = snapshot(&server).await;
    outcome(
        dhcp.request(&d2, true, fqdn, "127.0.0.2", 1).await,
        "DHCP_DDNS_ADD_SUCCEEDED",
    );
    assert_eq!(
        snapshot(&server).await,
        before,
        "a renewal changed the registry"
    );

    // Client 2 wants the same name: its DHCID does not match, D2 gives up
    // and client 1 keeps the name.
    outcome(
        dhcp.request(&d2, true, fqdn, "127.0.0.3", 2).await,
        "DHCP_DDNS_ADD_FAILED",
    );
    assert_eq!(
        snapshot(&server).await,
        before,
        "a conflicting client changed the registry"
    );

    // Client 1 moves to another address: replaced.
    outcome(
        dhcp.request(&d2, true, fqdn, "127.0.0.4", 1).await,
        "DHCP_DDNS_ADD_SUCCEEDED",
    );
    let body = instance(&server, "web", "web-1").await;
    assert_eq!(body["address"], "127.0.0.4", "{body}");
    assert_eq!(body["port"], DEFAULT_PORT, "{body}");

    // Client 2 cannot remove client 1's name.
    let before = snapshot(&server).await;
    outcome(
        dhcp.request(&d2, false, fqdn, "127.0.0.4", 2).await,
        "DHCP_DDNS_REMOVE_FAILED",
    );
    assert_eq!(
        snapshot(&server).await,
        before,
        "another client's removal changed the registry"
    );

    // Client 1's lease ends: the name and its DHCID go, the instance with it.
    outcome(
        dhcp.request(&d2, false, fqdn, "127.0.0.4", 1).await,
        "DHCP_DDNS_REMOVE_SUCCEEDED",
    );
    let reply = get_instance(&server, "web", "web-1").await;
    assert_eq!(reply.status, 404, "web-1 deregistered: {reply:?}");
    assert!(served_addresses(server.dns_addr, "web").await.is_empty());
    drop(d2);
    server.stop().await;
}
