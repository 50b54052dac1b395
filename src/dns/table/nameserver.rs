//! The dynamic domain's name server: the target of the apex NS record (and
//! the SOA's MNAME), and the addresses roster answers for it.
//!
//! A resolver that primes the domain (unbound's `stub-prime`) or follows a
//! delegation asks for the NS and then for its target's address; without an
//! address there it cannot reach the server it was sent to. So when the
//! target is inside the dynamic domain, roster is authoritative for it and
//! answers its A/AAAA (`dns.ns_address`), also as glue beside the NS answer.
//! That name belongs to the name server: a service registered under the same
//! label does not answer at it (only its SRV and instance names below do).

use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, Record};

use super::records::{address_rdata, child};

/// TTL of the apex NS record and of the name server's addresses, in
/// seconds: the same, as RFC 2181 section 5.2 asks of records that go
/// together.
pub const NS_TTL_SECS: u32 = 3600;

/// The name server of the dynamic domain.
#[derive(Debug, Clone)]
pub struct Nameserver {
    /// The NS target and SOA MNAME, lower-case and fully qualified.
    pub name: Name,
    /// `name` for comparisons with a question.
    pub lower: LowerName,
    /// A and AAAA records at `name`; empty when it lies outside the dynamic
    /// domain (another server answers for it) or no address is configured.
    pub addresses: Vec<Record>,
    /// `name`'s first label, lower-case, when `name` is exactly one label
    /// below the domain: the only depth the UDP fast path answers services
    /// at, so the only one where it must step aside.
    fast_label: Option<Box<[u8]>>,
}

impl Nameserver {
    /// `name` serving `domain` (both fully qualified), reached at
    /// `addresses`, which are only served when `name` is inside `domain`.
    pub fn new(domain: &Name, name: Name, addresses: &[IpAddr]) -> Self {
        let name = name.to_lowercase();
        let inside = Self::answers_for(domain, &name);
        let addresses = match inside {
            true => addresses
                .iter()
                .map(|&address| {
                    Record::from_rdata(name.clone(), NS_TTL_SECS, address_rdata(address))
                })
                .collect(),
            false => Vec::new(),
        };
        let fast_label = (inside && name.num_labels() == domain.num_labels() + 1)
            .then(|| name.iter().next().map(Box::<[u8]>::from))
            .flatten();
        Self {
            lower: LowerName::from(&name),
            name,
            addresses,
            fast_label,
        }
    }

    /// Whether roster answers for the host `name`: it lies below `domain`
    /// (the domain's apex is no host name).
    pub fn answers_for(domain: &Name, name: &Name) -> bool {
        domain.zone_of(name) && name.num_labels() > domain.num_labels()
    }

    /// `ns.<domain>`, with no address: the default before configuration.
    pub fn conventional(domain: &Name) -> Self {
        Self::new(domain, child(domain, "ns"), &[])
    }

    /// Whether the service label `label` (lower-case) names this server,
    /// so that its question is not a service's.
    pub fn owns_label(&self, label: &[u8]) -> bool {
        self.fast_label.as_deref() == Some(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect(text)
    }

    #[test]
    fn addresses_only_inside_the_domain() {
        let domain = name("service.local.");
        let addresses = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let inside = Nameserver::new(&domain, name("NS1.service.local."), &addresses);
        assert_eq!(inside.name, name("ns1.service.local."));
        assert_eq!(inside.addresses.len(), 2);
        assert!(inside.owns_label(b"ns1"));
        assert!(!inside.owns_label(b"ns"));

        let deeper = Nameserver::new(&domain, name("a.ns.service.local."), &addresses);
        assert_eq!(deeper.addresses.len(), 2);
        assert!(!deeper.owns_label(b"a") && !deeper.owns_label(b"ns"));

        let outside = Nameserver::new(&domain, name("dns.example.org."), &addresses);
        assert!(outside.addresses.is_empty());
        assert!(!outside.owns_label(b"dns"));

        let apex = Nameserver::new(&domain, domain.clone(), &addresses);
        assert!(apex.addresses.is_empty(), "the apex itself is no host name");
    }

    #[test]
    fn conventional_is_ns_under_the_domain() {
        let ns = Nameserver::conventional(&name("service.local."));
        assert_eq!(ns.name, name("ns.service.local."));
        assert!(ns.addresses.is_empty());
        assert!(ns.owns_label(b"ns"));
    }
}
