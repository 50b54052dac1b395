//! A DNS label stored inline: the key of a service's records, kept in the
//! records themselves so that a lookup compares it in the cache line the
//! answer reads next (see `service_map`).

use std::fmt;

/// A DNS label of at most 63 octets, stored inline.
#[derive(Clone, Copy)]
pub struct InlineLabel {
    len: u8,
    bytes: [u8; 63],
}

impl InlineLabel {
    /// `None` if `label` is longer than a DNS label can be.
    pub fn new(label: &[u8]) -> Option<Self> {
        let mut bytes = [0; 63];
        bytes.get_mut(..label.len())?.copy_from_slice(label);
        Some(Self {
            len: label.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Default for InlineLabel {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; 63],
        }
    }
}

impl fmt::Debug for InlineLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_labels_hold_up_to_63_octets() {
        let long = [b'a'; 63];
        assert_eq!(InlineLabel::new(&long).unwrap().as_bytes(), &long[..]);
        assert!(InlineLabel::new(&[b'a'; 64]).is_none());
        assert_eq!(InlineLabel::default().as_bytes(), b"");
    }
}
