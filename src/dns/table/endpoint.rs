//! What DNS serves of one instance beyond its address, port, weight and
//! priority: its TXT strings and the tag labels it is found under. Derived
//! from the instance whenever its records are built (only the changed
//! instances of a service, see `ServiceRecords::update`), not kept beside
//! it: the records hold their own compact copy.

use crate::model::{DHCID_META_KEY, DnsLabel, Instance};

/// TXT strings (`key=value`) at the instance name, one per metadata entry
/// but the DHCID DNS UPDATE keeps there ([`DHCID_META_KEY`]), in key order.
pub(super) fn txt_strings(instance: &Instance) -> impl Iterator<Item = String> + '_ {
    instance
        .meta
        .iter()
        .filter(|(k, _)| k.as_str() != DHCID_META_KEY)
        .map(|(k, v)| format!("{k}={v}"))
}

/// The DNS labels of the instance's tags, sorted, without duplicates; tags
/// that cannot be a label are left out (they are still listed by the HTTP
/// APIs).
pub(super) fn tag_labels(instance: &Instance) -> Vec<String> {
    let mut labels: Vec<String> = instance
        .tags
        .iter()
        .filter_map(|tag| DnsLabel::from_name(tag, "tag").ok())
        .map(|label| label.as_str().to_owned())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceBody;

    #[test]
    fn txt_is_the_metadata_but_the_dhcid_and_tags_are_labels() {
        let body: InstanceBody = serde_json::from_str(
            r#"{"address":"127.0.0.1","port":80,"meta":{"v":"1","dhcid":"AAEBAg==","a":"b"},
                "tags":["Blue","blue","v2","***"]}"#,
        )
        .expect("a body");
        let instance = body.validate("web", "web-1").expect("valid");
        assert_eq!(txt_strings(&instance).collect::<Vec<_>>(), ["a=b", "v=1"]);
        assert_eq!(tag_labels(&instance), ["blue", "v2"]);
    }
}
