//! Mutations: generic byte edits, stacked, plus edits that know where DNS
//! and JSON put their lengths and keywords.

/// A small, fast, seedable generator (xorshift64*): runs repeat with the
/// same `--seed`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING_8: &[u8] = &[0, 1, 2, 0x0C, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF];
const INTERESTING_16: &[u16] = &[
    0, 1, 2, 12, 28, 33, 41, 255, 256, 511, 512, 513, 1232, 4096, 0x7FFF, 0xC000, 0xC00C, 0xFFFF,
];

/// Mutates `data` in place with 1–8 stacked edits, keeping it at most
/// `max_len` bytes. `other` is another corpus entry to splice from;
/// `dictionary` holds tokens of the input format.
pub fn mutate(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
) {
    let edits = 1 << rng.below(4);
    for _ in 0..edits {
        edit(rng, data, other, dictionary);
    }
    data.truncate(max_len);
}

fn edit(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], dictionary: &[&[u8]]) {
    let len = data.len();
    let at = rng.below(len + 1);
    match rng.below(14) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.next() as u8;
        }
        2 if len > 0 => {
            let at = rng.below(len);
            data[at] = INTERESTING_8[rng.below(INTERESTING_8.len())];
        }
        3 if len > 1 => {
            // A 16-bit field in network order: DNS counts, types, lengths.
            let at = rng.below(len - 1);
            let value = INTERESTING_16[rng.below(INTERESTING_16.len())];
            data[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
        4 if len > 1 => {
            // Off by one (or a few) in a 16-bit field.
            let at = rng.below(len - 1);
            let value = u16::from_be_bytes([data[at], data[at + 1]]);
            let delta = rng.below(5) as u16;
            let value = if rng.chance(2) {
                value.wrapping_add(1 + delta)
            } else {
                value.wrapping_sub(1 + delta)
            };
            data[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
        5 => {
            let count = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..count).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        6 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            data.drain(start..end);
        }
        7 if len > 0 => {
            // Repeat a piece: more labels, more records, deeper JSON.
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            let piece = data[start..end].to_vec();
            data.splice(at..at, piece);
        }
        8 if !other.is_empty() => {
            // Splice: this input's head, the other's tail.
            let from = rng.below(other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        9 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())];
            data.splice(at..at, token.iter().copied());
        }
        10 if !dictionary.is_empty() && len > 0 => {
            let token = dictionary[rng.below(dictionary.len())];
            let at = rng.below(len);
            let end = (at + token.len()).min(len);
            data.splice(at..end, token.iter().copied());
        }
        11 if len > 13 => {
            // A compression pointer somewhere in the body, to anywhere.
            let at = 12 + rng.below(len - 12);
            let target = rng.below(len.max(14)) as u16;
            let pointer = (0xC000 | target).to_be_bytes();
            data.splice(at..at, pointer);
        }
        12 if len > 12 => {
            // A label length byte: a length octet DNS walks, nudged.
            let at = 12 + rng.below(len - 12);
            data[at] = match rng.below(4) {
                0 => 63,
                1 => 64,
                2 => data[at].wrapping_add(1),
                _ => data[at].wrapping_sub(1),
            };
        }
        13 if len >= 12 => {
            // A DNS header count (QD, AN, NS, AR).
            let at = 4 + 2 * rng.below(4);
            let value = rng.below(4) as u16;
            data[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
        _ => {
            if len > 0 {
                let at = rng.below(len);
                data[at] = data[at].wrapping_add(1);
            } else {
                data.push(rng.next() as u8);
            }
        }
    }
}
