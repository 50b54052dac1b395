//! Parses a query name under the dynamic domain into what it asks for, once,
//! so that answer building matches on a typed value instead of strings.

use hickory_proto::rr::LowerName;

/// The form of an SRV owner name `_<service>._<x>` (RFC 2782).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SrvForm<'a> {
    /// `_tcp` or `_udp`: every instance of the service.
    Protocol,
    /// Any other `_<tag>`: only instances carrying that tag.
    Tag(&'a str),
}

/// What a name under the dynamic domain refers to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DynamicName<'a> {
    /// The domain itself: SOA and NS.
    Apex,
    /// `<service>.<domain>`.
    Service(&'a str),
    /// `_<service>._tcp.<domain>`, `_<service>._<tag>.<domain>`.
    Srv { service: &'a str, form: SrvForm<'a> },
    /// `<id>.<service>.<domain>`.
    Instance { service: &'a str, instance: &'a str },
    /// `_<x>.<domain>`: the parent of SRV names, an empty non-terminal.
    Underscore(&'a str),
    /// Anything else: only static records can live there.
    Other,
}

/// Classifies `name`, which must be at or below `domain` (both lower-case).
pub(super) fn parse<'a>(name: &'a LowerName, domain: &LowerName) -> DynamicName<'a> {
    // Counted label by label: hickory's `num_labels` leaves out a leading
    // `*`, which made `*.<domain>` the apex.
    let depth = name.iter().count().saturating_sub(domain.iter().count());
    let mut labels = name.iter().take(depth).map(std::str::from_utf8);
    let first = labels.next();
    let second = labels.next();
    match (depth, first, second) {
        (0, _, _) => DynamicName::Apex,
        (1, Some(Ok(label)), _) => match label.strip_prefix('_') {
            Some(rest) if !rest.is_empty() => DynamicName::Underscore(rest),
            Some(_) => DynamicName::Other,
            None => DynamicName::Service(label),
        },
        (2, Some(Ok(first)), Some(Ok(second))) => {
            match (first.strip_prefix('_'), second.strip_prefix('_')) {
                (Some(service), Some(x)) if !service.is_empty() && !x.is_empty() => {
                    let form = if x == "tcp" || x == "udp" {
                        SrvForm::Protocol
                    } else {
                        SrvForm::Tag(x)
                    };
                    DynamicName::Srv { service, form }
                }
                (None, None) => DynamicName::Instance {
                    service: second,
                    instance: first,
                },
                _ => DynamicName::Other,
            }
        }
        _ => DynamicName::Other,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;

    use super::*;

    fn lower(text: &str) -> LowerName {
        LowerName::from(Name::from_ascii(text).expect(text))
    }

    #[test]
    fn classifies_every_form() {
        let domain = lower("service.local.");
        let cases = [
            ("service.local.", DynamicName::Apex),
            // Not the apex: a name no service has.
            ("*.service.local.", DynamicName::Service("*")),
            ("Web.service.local.", DynamicName::Service("web")),
            (
                "_web._tcp.service.local.",
                DynamicName::Srv {
                    service: "web",
                    form: SrvForm::Protocol,
                },
            ),
            (
                "_web._UDP.service.local.",
                DynamicName::Srv {
                    service: "web",
                    form: SrvForm::Protocol,
                },
            ),
            (
                "_web._v2.service.local.",
                DynamicName::Srv {
                    service: "web",
                    form: SrvForm::Tag("v2"),
                },
            ),
            (
                "web-1.web.service.local.",
                DynamicName::Instance {
                    service: "web",
                    instance: "web-1",
                },
            ),
            ("_tcp.service.local.", DynamicName::Underscore("tcp")),
            ("a.b.c.service.local.", DynamicName::Other),
            ("_web.x.service.local.", DynamicName::Other),
        ];
        for (text, expected) in cases {
            let name = lower(text);
            assert_eq!(parse(&name, &domain), expected, "{text}");
        }
    }
}
