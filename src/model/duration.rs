//! Go-style duration strings (`500ms`, `10s`, `1m30s`), the format Consul and
//! its clients use, so one parser serves both front doors.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written and read as a Go duration string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (use e.g. \"500ms\", \"10s\", \"1m30s\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a Go duration: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). A bare `0` is
/// zero. A bare number without a unit is refused here; the Consul adapter
/// treats bare numbers as nanoseconds itself, because only Consul does.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    // Go's durations are signed 64-bit nanoseconds: a longer one would be
    // shown back (`Interval`) as text a Go client cannot parse.
    parse_up_to(input, GO_MAX_DURATION, BEYOND_GO)
}

/// Go's longest duration: `time.Duration` is signed 64-bit nanoseconds.
pub const GO_MAX_DURATION: Duration = Duration::from_nanos(i64::MAX.unsigned_abs());

/// Why a duration past [`GO_MAX_DURATION`] is refused.
pub const BEYOND_GO: &str = "too large: Go's longest duration is 2562047h47m16.854775807s";

/// [`parse_go_duration`] up to `limit`; one longer is refused with
/// `too_long` as the reason.
fn parse_up_to(
    input: &str,
    limit: Duration,
    too_long: &'static str,
) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if number_len == 0 {
            return Err(err("expected a number"));
        }
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err("unknown unit")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(err("expected a number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("number too large"))?
        };
        let mut value = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| err("too large"))?;
        let mut scale = unit_nanos;
        for digit in frac.bytes() {
            if !digit.is_ascii_digit() {
                return Err(err("malformed fraction"));
            }
            scale /= 10;
            value += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(value)
            .ok_or_else(|| err("too large"))?;
    }
    let nanos = u64::try_from(total_nanos)
        .ok()
        .filter(|nanos| u128::from(*nanos) <= limit.as_nanos())
        .ok_or_else(|| err(too_long))?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration the way Go's `time.Duration.String` does (`1.5s`,
/// `1m30s`, `2h0m0s`, `250ms`, `1.5µs`), so what roster shows back reads
/// as a Go client's own durations do, and parses again.
pub fn format_go_duration(d: Duration) -> String {
    const MICRO: u128 = 1_000;
    const MILLI: u128 = 1_000_000;
    const SECOND: u128 = 1_000_000_000;
    let nanos = d.as_nanos();
    match nanos {
        0 => "0s".to_owned(),
        1..MICRO => format!("{nanos}ns"),
        MICRO..MILLI => with_fraction(nanos / MICRO, nanos % MICRO, 3) + "µs",
        MILLI..SECOND => with_fraction(nanos / MILLI, nanos % MILLI, 6) + "ms",
        _ => {
            let secs = nanos / SECOND;
            let (hours, minutes) = (secs / 3600, (secs / 60) % 60);
            let mut out = String::new();
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            if hours > 0 || minutes > 0 {
                out.push_str(&format!("{minutes}m"));
            }
            out + &with_fraction(secs % 60, nanos % SECOND, 9) + "s"
        }
    }
}

/// `whole`, then `fraction` (of `digits` decimal digits) without its
/// trailing zeros, if it is not zero.
fn with_fraction(whole: u128, fraction: u128, digits: usize) -> String {
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // What older versions stored, up to u64 nanoseconds, still reads:
        // a stored check must never become unreadable. What the API
        // takes is held to Go's range by `parse_go_duration`.
        parse_up_to(&text, Duration::from_nanos(u64::MAX), "too large")
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        let cases = [
            ("500ms", ms(500)),
            ("10s", ms(10_000)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1_500)),
            ("2h", ms(7_200_000)),
            ("0", Duration::ZERO),
            ("100us", Duration::from_micros(100)),
            ("1h2m3s4ms", ms(3_723_004)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_nonsense() {
        for text in [
            "",
            "10",
            "s",
            "-5s",
            "5x",
            "1..5s",
            "5s3",
            "99999999999999h",
            // Past Go's int64 nanoseconds, which u64 would have held.
            "5124094h",
            "18446744073709551615ns",
            "9223372036854775808ns",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text}");
        }
        // ...though what an older version stored still reads.
        let stored: GoDuration = serde_json::from_str("\"5124094h\"").expect("a stored duration");
        assert_eq!(stored.0, Duration::from_secs(5_124_094 * 3600));
        // Go's longest is taken, and shown back as Go shows it.
        let longest = parse_go_duration("9223372036854775807ns").expect("Go's longest");
        assert_eq!(format_go_duration(longest), "2562047h47m16.854775807s");
        assert_eq!(parse_go_duration("2562047h47m16.854775807s"), Ok(longest));
    }

    /// What Go's `time.Duration.String` prints for each, and each parses
    /// back to itself.
    #[test]
    fn formats_as_go_does_and_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(100), "100µs"),
            (Duration::from_nanos(1_000_001), "1.000001ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_millis(1_050), "1.05s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_004), "1h2m3.004s"),
            (Duration::from_secs(7200), "2h0m0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_go_duration(d), text, "{d:?}");
            assert_eq!(parse_go_duration(text), Ok(d), "{text}");
        }
    }
}
