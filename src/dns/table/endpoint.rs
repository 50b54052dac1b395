//! What DNS needs of one instance, derived once when it is registered.

use std::{collections::BTreeSet, net::IpAddr};

use crate::model::{DHCID_META_KEY, DnsLabel, Instance};

/// One instance as DNS sees it: everything its A/AAAA, SRV and TXT records
/// are made of, and the tag labels it is found under.
///
/// Built when an instance is registered and shared (behind an `Arc`) by the
/// registry state and every record table that serves it, so that
/// republishing a service after a change copies pointers instead of
/// re-deriving labels and TXT strings for each of its instances.
#[derive(Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address: an A record if IPv4, AAAA if IPv6.
    pub address: IpAddr,
    /// SRV port, weight and priority.
    pub port: u16,
    pub weight: u16,
    pub priority: u16,
    /// The instance's DNS label, lower-case: the SRV target is
    /// `<label>.<service>.<domain>.`.
    pub label: DnsLabel,
    /// TXT strings (`key=value`) at the instance name, one per metadata
    /// entry but the DHCID DNS UPDATE keeps there ([`DHCID_META_KEY`]);
    /// empty (and then without a heap allocation) for an instance without
    /// metadata.
    pub txt: Box<[Box<str>]>,
    /// The DNS labels of the instance's tags, sorted, without duplicates;
    /// tags that cannot be a label are left out (they are still listed by
    /// the HTTP APIs).
    pub tags: Box<[Box<str>]>,
}

impl Endpoint {
    pub fn new(instance: &Instance) -> Self {
        let tags: BTreeSet<String> = instance
            .tags
            .iter()
            .filter_map(|tag| DnsLabel::from_name(tag, "tag").ok())
            .map(|label| label.as_str().to_owned())
            .collect();
        Self {
            address: instance.address,
            port: instance.port,
            weight: instance.weight,
            priority: instance.priority,
            label: instance.id.label().clone(),
            txt: instance
                .meta
                .iter()
                .filter(|(k, _)| k.as_str() != DHCID_META_KEY)
                .map(|(k, v)| format!("{k}={v}").into_boxed_str())
                .collect(),
            tags: tags.into_iter().map(String::into_boxed_str).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceBody;

    #[test]
    fn txt_is_the_metadata_but_the_dhcid() {
        let body: InstanceBody = serde_json::from_str(
            r#"{"address":"127.0.0.1","port":80,"meta":{"v":"1","dhcid":"AAEBAg==","a":"b"}}"#,
        )
        .expect("a body");
        let instance = body.validate("web", "web-1").expect("valid");
        let endpoint = Endpoint::new(&instance);
        let txt: Vec<&str> = endpoint.txt.iter().map(|s| &**s).collect();
        assert_eq!(txt, ["a=b", "v=1"]);
    }
}
