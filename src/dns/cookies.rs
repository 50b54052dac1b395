//! DNS cookies (RFC 7873), the server's side, with server cookies made as
//! RFC 9018 says so that any node holding the same secret (`dns.cookie_secret`,
//! as with BIND's `cookie-secret` behind one anycast address) takes the
//! others' cookies.
//!
//! A client puts a random 8-octet client cookie in its queries; roster
//! answers with that and a server cookie: a timestamp and a SipHash-2-4 of
//! the client cookie, the timestamp and the client's address, keyed with a
//! secret. A client that sends the server cookie back has shown that it
//! receives roster's answers at its address, so its queries cannot come
//! from a forged source: the UDP loop exempts them from response-rate
//! limiting (as BIND does), which spares a real client behind a flooded
//! network. roster never requires a cookie, and a wrong or stale one only
//! earns a fresh one (RFC 7873 section 5.2.4): no BADCOOKIE.
//!
//! Owns: the secret, making and checking server cookies, and the COOKIE
//! option's data in an answer. Must not: read messages (the handler hands
//! it the option, `precheck` finds it in a raw query) or refuse a query.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use arc_swap::{ArcSwap, Guard};
use siphasher::sip::SipHasher24;

/// The COOKIE option's code (RFC 7873 section 4).
pub(super) const OPTION_CODE: u16 = 10;
/// A client cookie's length.
const CLIENT_LEN: usize = 8;
/// The shortest and longest server cookie a client may send back
/// (RFC 7873 section 4.2).
const SERVER_MIN_LEN: usize = 8;
const SERVER_MAX_LEN: usize = 32;
/// roster's server cookies (RFC 9018 section 4): version, three reserved
/// octets, a timestamp and the hash.
const SERVER_LEN: usize = 16;
const VERSION: u8 = 1;
/// RFC 9018 section 4.3: a server cookie is good for an hour, one dated up
/// to five minutes ahead is accepted (clocks of nodes sharing a secret
/// differ), and one older than half an hour is replaced in the answer.
const LIFETIME_SECONDS: i64 = 3600;
const SKEW_SECONDS: i64 = 300;
const RENEW_AFTER_SECONDS: i64 = 1800;

/// The COOKIE option's data in an answer: the client cookie and roster's
/// server cookie.
pub(super) const ANSWER_LEN: usize = CLIENT_LEN + SERVER_LEN;

/// The secret's length: a SipHash key.
pub(super) const SECRET_LEN: usize = 16;

/// The COOKIE option of a query, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cookie<'q> {
    pub client: &'q [u8; CLIENT_LEN],
    /// Empty when the client has no server cookie yet.
    pub server: &'q [u8],
}

impl<'q> Cookie<'q> {
    /// Splits a COOKIE option's data; `None` for a malformed one, which
    /// gets FORMERR (RFC 7873 section 5.2.2): shorter than a client cookie,
    /// a server cookie under 8 octets, or more than 40 in all.
    pub(super) fn parse(data: &'q [u8]) -> Option<Self> {
        let (client, server) = data.split_first_chunk::<CLIENT_LEN>()?;
        let fits = server.is_empty() || (SERVER_MIN_LEN..=SERVER_MAX_LEN).contains(&server.len());
        fits.then_some(Self { client, server })
    }
}

/// What a query's server cookie was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// No server cookie: a client that has not heard from roster yet.
    ClientOnly,
    /// One roster made for this client and address, less than an hour ago.
    Valid,
    /// Anything else: another server's, another address's, too old, or
    /// made with another secret. Treated as [`Standing::ClientOnly`].
    Invalid,
}

/// What a query's COOKIE option was, as `/metrics` counts it: an index
/// into [`SEEN`] and a [`Tally`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A client cookie alone.
    ClientOnly = 0,
    /// A server cookie roster made with its current secret.
    Valid = 1,
    /// A server cookie made with one of `dns.cookie_secrets_accepted`.
    ValidAccepted = 2,
    /// Another server cookie: stale, foreign, another address's.
    Invalid = 3,
    /// An option of a wrong length (FORMERR).
    Malformed = 4,
}

/// [`Seen`]'s labels, by index.
pub const SEEN: [&str; 5] = [
    "client_only",
    "valid",
    "valid_accepted_secret",
    "invalid",
    "malformed",
];

/// Counts of COOKIE options by what they were ([`Seen`] as index).
pub type Tally = [u64; SEEN.len()];

/// The most secrets a server takes cookies of besides the one it makes
/// them with: a rollover needs one (the previous or the next secret).
pub const MAX_ACCEPTED: usize = 4;

/// Makes server cookies with one secret, and takes cookies made with it or
/// with a few others (RFC 9018 section 4.4's rollover). Copies share their
/// secrets: [`Cookies::replace`] changes them for every copy at once, so a
/// rollover's steps need no restart (SIGHUP).
#[derive(Clone)]
pub struct Cookies {
    keys: Arc<ArcSwap<Keys>>,
}

/// The secrets in force, swapped whole: a query is answered with one set,
/// never half of an old one and half of a new.
pub(super) struct Keys {
    hasher: SipHasher24,
    /// The other secrets' hashers: their cookies count as valid, but each
    /// answer replaces them with one of `hasher`'s.
    accepted: Vec<SipHasher24>,
}

/// Which secret made a server cookie.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Maker {
    /// The one cookies are made with.
    Current,
    /// One of the others accepted.
    Accepted,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookies { secret: <hidden> }")
    }
}

impl Cookies {
    /// Cookies made with `secret` (shared by every node that must take the
    /// others' cookies).
    pub fn new(secret: &[u8; SECRET_LEN]) -> Self {
        Self::rolling(secret, &[])
    }

    /// Cookies made with `secret` that also take those made with any of
    /// `accepted` (at most [`MAX_ACCEPTED`]; more are ignored): during a
    /// rollover, the secret being retired or the one about to be used.
    pub fn rolling(secret: &[u8; SECRET_LEN], accepted: &[[u8; SECRET_LEN]]) -> Self {
        Self {
            keys: Arc::new(ArcSwap::from_pointee(Keys::new(secret, accepted))),
        }
    }

    /// Cookies with a secret of this process's own: a restart hands out
    /// new ones, which clients take without a failed query.
    pub fn random() -> Self {
        Self::new(&rand::random())
    }

    /// From now on, makes cookies with `secret` and takes those of
    /// `secret` and `accepted`, as [`Cookies::rolling`] does; queries being
    /// answered finish with the secrets they started with.
    pub fn replace(&self, secret: &[u8; SECRET_LEN], accepted: &[[u8; SECRET_LEN]]) {
        self.keys.store(Arc::new(Keys::new(secret, accepted)));
    }

    /// From now on, makes cookies with a new secret of this process's own
    /// and takes no others', as [`Cookies::random`] does.
    pub fn replace_with_random(&self) {
        self.replace(&rand::random(), &[]);
    }

    /// The secrets in force, for a batch of queries.
    pub(super) fn keys(&self) -> Guard<Arc<Keys>> {
        self.keys.load()
    }

    /// [`Keys::standing`] with the secrets in force.
    pub(super) fn standing(&self, cookie: &Cookie<'_>, client: IpAddr, now: u32) -> Standing {
        self.keys().standing(cookie, client, now)
    }

    /// [`Keys::answer`] with the secrets in force.
    pub(super) fn answer(
        &self,
        cookie: &Cookie<'_>,
        client: IpAddr,
        now: u32,
    ) -> ([u8; ANSWER_LEN], Seen) {
        self.keys().answer(cookie, client, now)
    }
}

impl Keys {
    fn new(secret: &[u8; SECRET_LEN], accepted: &[[u8; SECRET_LEN]]) -> Self {
        Self {
            hasher: SipHasher24::new_with_key(secret),
            accepted: accepted
                .iter()
                .take(MAX_ACCEPTED)
                .map(SipHasher24::new_with_key)
                .collect(),
        }
    }

    /// Whether `cookie` came with a server cookie roster made for this
    /// client cookie and address, at most an hour ago, at `now` (seconds
    /// since the epoch, as [`now`] gives).
    pub(super) fn standing(&self, cookie: &Cookie<'_>, client: IpAddr, now: u32) -> Standing {
        if cookie.server.is_empty() {
            return Standing::ClientOnly;
        }
        match self.maker(cookie, client, now) {
            Some(_) => Standing::Valid,
            None => Standing::Invalid,
        }
    }

    /// Which secret made `cookie`'s server cookie for this client cookie
    /// and address, if it is usable at `now`.
    fn maker(&self, cookie: &Cookie<'_>, client: IpAddr, now: u32) -> Option<Maker> {
        let server = <&[u8; SERVER_LEN]>::try_from(cookie.server).ok()?;
        let (head, hash) = server.split_at(8);
        let head: &[u8; 8] = head.try_into().expect("8 octets");
        let usable = head[0] == VERSION
            && (-SKEW_SECONDS..=LIFETIME_SECONDS).contains(&age(timestamp(head), now));
        if !usable {
            return None;
        }
        // Every octet compared, whatever the first difference: how long the
        // check takes says nothing about the right hash.
        let made_by = |hasher: &SipHasher24| {
            hash_with(hasher, cookie.client, head, client)
                .iter()
                .zip(hash)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
        };
        if made_by(&self.hasher) {
            Some(Maker::Current)
        } else if self.accepted.iter().any(made_by) {
            Some(Maker::Accepted)
        } else {
            None
        }
    }

    /// The COOKIE option's data for the answer to a query with `cookie`
    /// from `client` at `now`: the client cookie and a server cookie, the
    /// query's own while it is valid and under half an hour old, else a new
    /// one.
    /// With it, what the query's cookie was.
    pub(super) fn answer(
        &self,
        cookie: &Cookie<'_>,
        client: IpAddr,
        now: u32,
    ) -> ([u8; ANSWER_LEN], Seen) {
        let mut data = [0u8; ANSWER_LEN];
        data[..CLIENT_LEN].copy_from_slice(cookie.client);
        let seen = match cookie.server.is_empty() {
            true => Seen::ClientOnly,
            false => match self.maker(cookie, client, now) {
                Some(Maker::Current) => Seen::Valid,
                Some(Maker::Accepted) => Seen::ValidAccepted,
                None => Seen::Invalid,
            },
        };
        let keep =
            seen == Seen::Valid && age(timestamp(&cookie.server[..8]), now) <= RENEW_AFTER_SECONDS;
        if keep {
            data[CLIENT_LEN..].copy_from_slice(cookie.server);
        } else {
            data[CLIENT_LEN..].copy_from_slice(&self.server_cookie(cookie.client, client, now));
        }
        (data, seen)
    }

    /// A new server cookie (RFC 9018 section 4): version 1, three zero
    /// octets, `now`, and the hash over all of that.
    fn server_cookie(
        &self,
        client_cookie: &[u8; CLIENT_LEN],
        client: IpAddr,
        now: u32,
    ) -> [u8; 16] {
        let mut head = [VERSION, 0, 0, 0, 0, 0, 0, 0];
        head[4..].copy_from_slice(&now.to_be_bytes());
        let mut cookie = [0u8; SERVER_LEN];
        cookie[..8].copy_from_slice(&head);
        cookie[8..].copy_from_slice(&hash_with(&self.hasher, client_cookie, &head, client));
        cookie
    }
}

/// SipHash-2-4 with `hasher`'s key over the client cookie, the server
/// cookie's first eight octets as the client sent them (reserved ones
/// included) and the client's address: 4 octets for IPv4, 16 for IPv6.
fn hash_with(
    hasher: &SipHasher24,
    client_cookie: &[u8; CLIENT_LEN],
    head: &[u8; 8],
    client: IpAddr,
) -> [u8; 8] {
    let mut input = [0u8; CLIENT_LEN + 8 + 16];
    input[..8].copy_from_slice(client_cookie);
    input[8..16].copy_from_slice(head);
    let len = match client.to_canonical() {
        IpAddr::V4(v4) => {
            input[16..20].copy_from_slice(&v4.octets());
            20
        }
        IpAddr::V6(v6) => {
            input[16..32].copy_from_slice(&v6.octets());
            32
        }
    };
    hasher.hash(&input[..len]).to_le_bytes()
}

/// The time server cookies are stamped with: seconds since the epoch,
/// modulo 2^32 (RFC 9018 section 4.3 compares them as serial numbers).
pub(super) fn now() -> u32 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    seconds as u32
}

fn timestamp(head: &[u8]) -> u32 {
    u32::from_be_bytes([head[4], head[5], head[6], head[7]])
}

/// How many seconds before `now` a cookie was stamped, negative for one
/// stamped ahead; across the 2^32 wrap as serial-number arithmetic does.
fn age(stamped: u32, now: u32) -> i64 {
    i64::from(now.wrapping_sub(stamped) as i32)
}

/// Reads `dns.cookie_secret`: 32 hexadecimal digits.
pub fn parse_cookie_secret(text: &str) -> Result<[u8; SECRET_LEN], String> {
    let text = text.trim();
    if text.len() != 2 * SECRET_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must be {} hexadecimal digits (a 128-bit secret, e.g. from `openssl rand -hex 16`)",
            2 * SECRET_LEN
        ));
    }
    let mut secret = [0u8; SECRET_LEN];
    for (octet, pair) in secret.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        *octet = u8::from_str_radix(digits, 16).map_err(|e| e.to_string())?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn cookies(secret: &str) -> Cookies {
        Cookies::new(&parse_cookie_secret(secret).expect("secret"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    /// RFC 9018 appendix A: the answers' COOKIE data, byte for byte.
    #[test]
    fn answers_match_rfc_9018_appendix_a() {
        let first = cookies("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let client = hex("2464c4abcf10c957");
        // A.1: a client with no server cookie learns one.
        let query = Cookie::parse(&client).expect("client cookie");
        let answer = first.answer(&query, ip("198.51.100.100"), 1_559_731_985).0;
        assert_eq!(
            answer.to_vec(),
            hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
        );
        // A.2: 40 minutes later it sends that back and gets a fresh one.
        let query = Cookie::parse(&answer).expect("full cookie");
        assert_eq!(
            first.standing(&query, ip("198.51.100.100"), 1_559_734_385),
            Standing::Valid
        );
        assert_eq!(
            first
                .answer(&query, ip("198.51.100.100"), 1_559_734_385)
                .0
                .to_vec(),
            hex("2464c4abcf10c957010000005cf7a871d4a564a1442aca77")
        );
        // A.3: reserved octets the client sent are part of the hash (good
        // when it was stamped), and at 1h52m old it is replaced.
        let sent = hex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5");
        let query = Cookie::parse(&sent).expect("full cookie");
        assert_eq!(
            first.standing(&query, ip("203.0.113.203"), 1_559_727_985),
            Standing::Valid
        );
        assert_eq!(
            first.standing(&query, ip("203.0.113.203"), 1_559_734_700),
            Standing::Invalid
        );
        assert_eq!(
            first
                .answer(&query, ip("203.0.113.203"), 1_559_734_700)
                .0
                .to_vec(),
            hex("fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e")
        );
        // ... and from another address it is not roster's.
        assert_eq!(
            first.standing(&query, ip("203.0.113.204"), 1_559_727_985),
            Standing::Invalid
        );
        // A.4: an IPv6 client's cookie, good under the secret that made it
        // and not under the next one.
        let sent = hex("22681ab97d52c298010000005cf7c57926556bd0934c72f8");
        let query = Cookie::parse(&sent).expect("full cookie");
        let v6 = ip("2001:db8:220:1:59de:d0f4:8769:82b8");
        let old = cookies("dd3bdf9344b678b185a6f5cb60fca715");
        let new = cookies("445536bcd2513298075a5d379663c962");
        assert_eq!(old.standing(&query, v6, 1_559_741_817), Standing::Valid);
        assert_eq!(new.standing(&query, v6, 1_559_741_817), Standing::Invalid);
    }

    /// A replacement reaches every copy (each DNS thread holds one), and
    /// what a copy made before stays checkable only as the new secrets say.
    #[test]
    fn a_replacement_reaches_every_copy() {
        let secret = |text| parse_cookie_secret(text).expect("secret");
        let (old, new) = (
            secret("dd3bdf9344b678b185a6f5cb60fca715"),
            secret("445536bcd2513298075a5d379663c962"),
        );
        let cookies = Cookies::new(&old);
        let copy = cookies.clone();
        let client = ip("192.0.2.53");
        let now = 1_559_731_985;
        let sent = hex("2464c4abcf10c957");
        let query = Cookie::parse(&sent).expect("client cookie");
        let (made_old, _) = copy.answer(&query, client, now);
        let made_old = Cookie::parse(&made_old).expect("full cookie");
        assert_eq!(copy.standing(&made_old, client, now), Standing::Valid);

        cookies.replace(&new, &[old]);
        let (answer, seen) = copy.answer(&made_old, client, now);
        assert_eq!(seen, Seen::ValidAccepted);
        let made_new = Cookie::parse(&answer).expect("full cookie");
        assert_ne!(
            made_new.server, made_old.server,
            "a cookie of the new secret"
        );
        assert_eq!(
            Cookies::new(&new).standing(&made_new, client, now),
            Standing::Valid
        );

        cookies.replace(&new, &[]);
        assert_eq!(copy.standing(&made_old, client, now), Standing::Invalid);
        assert_eq!(copy.standing(&made_new, client, now), Standing::Valid);

        cookies.replace_with_random();
        assert_eq!(copy.standing(&made_new, client, now), Standing::Invalid);
    }

    /// RFC 9018 section 4.4 with A.4's secrets: while the old secret is
    /// accepted its cookies are valid, and every answer moves the client
    /// to a cookie of the new one, which a server that only knows the old
    /// secret would not take.
    #[test]
    fn a_rollover_takes_the_accepted_secrets_cookies_and_replaces_them() {
        let sent = hex("22681ab97d52c298010000005cf7c57926556bd0934c72f8");
        let query = Cookie::parse(&sent).expect("full cookie");
        let v6 = ip("2001:db8:220:1:59de:d0f4:8769:82b8");
        let now = 1_559_741_817;
        let secret = |text| parse_cookie_secret(text).expect("secret");
        let (old, new) = (
            secret("dd3bdf9344b678b185a6f5cb60fca715"),
            secret("445536bcd2513298075a5d379663c962"),
        );
        let other = secret("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let rolling = Cookies::rolling(&new, &[other, old]);
        assert_eq!(rolling.standing(&query, v6, now), Standing::Valid);
        // A fresh cookie even though it is young: it is the new secret's.
        let (answer, seen) = rolling.answer(&query, v6, now);
        assert_eq!(seen, Seen::ValidAccepted);
        assert_ne!(answer[8..], sent[8..]);
        let renewed = Cookie::parse(&answer).expect("full cookie");
        assert_eq!(
            Cookies::new(&new).standing(&renewed, v6, now),
            Standing::Valid
        );
        assert_eq!(
            Cookies::new(&old).standing(&renewed, v6, now),
            Standing::Invalid
        );
        // ... and kept from then on.
        assert_eq!(rolling.answer(&renewed, v6, now), (answer, Seen::Valid));
        // Without the old secret, its cookies are not valid.
        let rolled = Cookies::rolling(&new, &[other]);
        assert_eq!(rolled.standing(&query, v6, now), Standing::Invalid);
    }

    #[test]
    fn a_cookie_holds_an_hour_and_five_minutes_ahead() {
        let cookies = cookies("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let client = ip("192.0.2.1");
        let issued_at = |at: u32| {
            cookies
                .answer(&Cookie::parse(&[7; 8]).expect("client cookie"), client, at)
                .0
        };
        let standing_at = |data: &[u8; 24], now: u32| {
            cookies.standing(&Cookie::parse(data).expect("cookie"), client, now)
        };
        let now = 1_559_731_985;
        for (stamped, valid) in [
            (now, true),
            (now - 1800, true),
            (now - 3600, true),
            (now - 3601, false),
            (now + 300, true),
            (now + 301, false),
        ] {
            assert_eq!(
                standing_at(&issued_at(stamped), now) == Standing::Valid,
                valid,
                "stamped {} s before",
                i64::from(now) - i64::from(stamped)
            );
        }
        // Serial arithmetic: an hour old across the 2^32 wrap.
        assert_eq!(
            standing_at(&issued_at(u32::MAX - 2599), 1000),
            Standing::Valid
        );
        // Kept while under half an hour old, renewed after.
        let young = issued_at(now - 1800);
        assert_eq!(
            cookies
                .answer(&Cookie::parse(&young).expect("c"), client, now)
                .0,
            young
        );
        let old = issued_at(now - 1801);
        assert_ne!(
            cookies
                .answer(&Cookie::parse(&old).expect("c"), client, now)
                .0,
            old
        );
    }

    #[test]
    fn malformed_cookies_are_told_apart() {
        for len in [0, 7, 9, 15, 41] {
            assert_eq!(Cookie::parse(&vec![1; len]), None, "{len} octets");
        }
        for (len, server) in [(8, 0), (16, 8), (24, 16), (40, 32)] {
            let data = vec![1; len];
            let cookie = Cookie::parse(&data).expect("well formed");
            assert_eq!(cookie.server.len(), server, "{len} octets");
        }
        // Another length, a wrong version or a flipped bit: not roster's.
        let cookies = cookies("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let client = ip("192.0.2.1");
        let good = cookies
            .answer(&Cookie::parse(&[7; 8]).expect("c"), client, 5_000)
            .0;
        let damages: [fn(&mut Vec<u8>); 4] =
            [|c| c.push(0), |c| c[8] = 2, |c| c[23] ^= 1, |c| c[9] ^= 1];
        for damage in damages {
            let mut data = good.to_vec();
            damage(&mut data);
            let cookie = Cookie::parse(&data).expect("well formed");
            assert_eq!(cookies.standing(&cookie, client, 5_000), Standing::Invalid);
        }
        let cookie = Cookie::parse(&good).expect("c");
        assert_eq!(cookies.standing(&cookie, client, 5_000), Standing::Valid);
    }

    #[test]
    fn secrets_are_32_hex_digits() {
        assert_eq!(
            parse_cookie_secret("e5e973e5a6b2a43f48e7dc849e37bfcf").expect("secret")[..2],
            [0xe5, 0xe9]
        );
        for bad in [
            "",
            "e5e9",
            "e5e973e5a6b2a43f48e7dc849e37bfcg",
            "é5e973e5a6b2a43f48e7dc849e37bfc",
        ] {
            assert!(parse_cookie_secret(bad).is_err(), "{bad:?}");
        }
    }
}
