//! What DNS serves of one instance beyond its address, port, weight and
//! priority: its TXT strings and the tag labels it is found under. Derived
//! from the instance whenever its records are built (only the changed
//! instances of a service, see `ServiceRecords::update`), not kept beside
//! it: the records hold their own compact copy.

use crate::model::{DnsLabel, Instance};

/// Appends the instance's TXT strings to `txt`, each a DNS
/// <character-string> (a length octet, then `key=value`): one per metadata
/// entry but the DHCID DNS UPDATE keeps there (`Meta::served_as_txt`), in key
/// order. Written in place, not formatted into a String each: a rebuilt
/// instance's strings are part of every write's cost.
pub(super) fn push_txt(instance: &Instance, txt: &mut Vec<u8>) {
    for (key, value) in instance.meta.served_as_txt() {
        // Instance validation bounds a TXT string to 255 octets; the bound
        // only keeps the length octet true.
        let string = [key.as_bytes(), b"=", value.as_bytes()];
        let len = string.iter().map(|part| part.len()).sum::<usize>().min(255);
        txt.push(len as u8);
        let mut left = len;
        for part in string {
            let take = part.len().min(left);
            txt.extend_from_slice(&part[..take]);
            left -= take;
        }
    }
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
        let mut txt = Vec::new();
        push_txt(&instance, &mut txt);
        assert_eq!(txt, b"\x03a=b\x03v=1");

        // Past 255 octets a string is cut, so that its length octet is true.
        let mut long = instance.clone();
        long.meta = [("k".to_owned(), "x".repeat(300))].into_iter().collect();
        txt.clear();
        push_txt(&long, &mut txt);
        assert_eq!(txt.len(), 256);
        assert_eq!(txt[0], 255);
        assert!(txt[1..].starts_with(b"k=xxx") && txt[1..].iter().skip(2).all(|&b| b == b'x'));
        assert_eq!(tag_labels(&instance), ["blue", "v2"]);
    }
}
