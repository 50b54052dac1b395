//! Which of roster's names an owner name in an UPDATE is: the same forms
//! the DNS module answers for (`<id>.<service>`, `_<service>._tcp`,
//! `_<service>._<tag>`, `<service>`), parsed once into a typed value.

use hickory_proto::rr::Name;

use crate::model::DnsLabel;

/// What an owner name under the dynamic domain refers to. Labels are lower
/// case and valid DNS labels (`[a-z0-9-]`), so they compare with the
/// registry's own labels directly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Owner {
    /// The domain itself: SOA and NS, which updates may not change.
    Apex,
    /// `<service>`: the service's addresses and SRV records.
    Service(DnsLabel),
    /// `_<service>._tcp` or `_<service>._udp`: one SRV per instance.
    Protocol(DnsLabel),
    /// `_<service>._<tag>`: one SRV per instance carrying the tag.
    Tag { service: DnsLabel, tag: DnsLabel },
    /// `<id>.<service>`: one instance's address, metadata and DHCID.
    Instance { service: DnsLabel, label: DnsLabel },
    /// Any other name in the zone (deeper, `_x` alone, labels roster never
    /// makes): nothing lives there and nothing may be put there.
    Other,
}

impl Owner {
    /// The service whose records live at this name, if any.
    pub(super) fn service(&self) -> Option<&DnsLabel> {
        match self {
            Self::Service(service) | Self::Protocol(service) => Some(service),
            Self::Tag { service, .. } | Self::Instance { service, .. } => Some(service),
            Self::Apex | Self::Other => None,
        }
    }
}

/// Classifies `name` against the zone `domain`; `None` when the name is
/// outside the zone (NOTZONE).
pub(super) fn classify(name: &Name, domain: &Name) -> Option<Owner> {
    if !domain.zone_of(name) {
        return None;
    }
    // Counted label by label: hickory's `num_labels` leaves out a leading
    // `*`, which made `*.<domain>` the apex.
    let depth = name.iter().count().saturating_sub(domain.iter().count());
    let labels: Vec<String> = name
        .iter()
        .take(depth)
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    let label = |text: &str| DnsLabel::parse_query_label(text);
    let owner = match labels.as_slice() {
        [] => Owner::Apex,
        [single] => match single.strip_prefix('_') {
            Some(_) => None,
            None => label(single).map(Owner::Service),
        }
        .unwrap_or(Owner::Other),
        [first, second] => match (first.strip_prefix('_'), second.strip_prefix('_')) {
            (Some(service), Some(x)) => match (label(service), label(x)) {
                (Some(service), Some(_)) if x == "tcp" || x == "udp" => Owner::Protocol(service),
                (Some(service), Some(tag)) => Owner::Tag { service, tag },
                _ => Owner::Other,
            },
            (None, None) => match (label(first), label(second)) {
                (Some(instance), Some(service)) => Owner::Instance {
                    service,
                    label: instance,
                },
                _ => Owner::Other,
            },
            _ => Owner::Other,
        },
        _ => Owner::Other,
    };
    Some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect(text)
    }

    fn label(text: &str) -> DnsLabel {
        DnsLabel::parse_query_label(text).expect(text)
    }

    #[test]
    fn classifies_every_form_case_insensitively() {
        let domain = name("service.local.");
        let cases = [
            ("Service.Local.", Some(Owner::Apex)),
            ("WEB.service.local.", Some(Owner::Service(label("web")))),
            ("a-web.service.local.", Some(Owner::Service(label("a-web")))),
            (
                "_web._TCP.service.local.",
                Some(Owner::Protocol(label("web"))),
            ),
            (
                "_web._udp.service.local.",
                Some(Owner::Protocol(label("web"))),
            ),
            (
                "_web._v2.service.local.",
                Some(Owner::Tag {
                    service: label("web"),
                    tag: label("v2"),
                }),
            ),
            (
                "Web-1.web.service.local.",
                Some(Owner::Instance {
                    service: label("web"),
                    label: label("web-1"),
                }),
            ),
            ("_web.service.local.", Some(Owner::Other)),
            // Not the apex (hickory's label count leaves the `*` out).
            ("*.service.local.", Some(Owner::Other)),
            ("a.b.web.service.local.", Some(Owner::Other)),
            ("a_b.web.service.local.", Some(Owner::Other)),
            ("_web.x.service.local.", Some(Owner::Other)),
            ("web.example.com.", None),
            ("local.", None),
        ];
        for (text, owner) in cases {
            assert_eq!(classify(&name(text), &domain), owner, "{text}");
        }
    }
}
