//! Filter text to tokens: selectors and words, quoted strings, numbers
//! and parentheses, each with its byte offset for error messages.

use super::FilterError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    /// A selector or bare word: `Service.Meta["env"]` is `[Service, Meta,
    /// env]`; `and`, `contains` ... are words too.
    Word(Vec<String>),
    Text(String),
    Number(String),
    Equal,
    NotEqual,
    Open,
    Close,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) kind: Kind,
    /// Byte offset in the filter, for error positions.
    pub(super) offset: usize,
}

impl Token {
    /// The token as a keyword (`and`, `is`, ...), if it is a bare word.
    pub(super) fn keyword(&self) -> Option<&str> {
        match &self.kind {
            Kind::Word(parts) if parts.len() == 1 => Some(parts[0].as_str()),
            _ => None,
        }
    }
}

pub(super) fn position(text: &str, offset: usize, message: impl Into<String>) -> FilterError {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    FilterError::Syntax {
        line,
        column,
        offset,
        message: message.into(),
    }
}

pub(super) fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let kind = match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                continue;
            }
            b'(' => {
                at += 1;
                Kind::Open
            }
            b')' => {
                at += 1;
                Kind::Close
            }
            b'=' if bytes.get(at + 1) == Some(&b'=') => {
                at += 2;
                Kind::Equal
            }
            b'!' if bytes.get(at + 1) == Some(&b'=') => {
                at += 2;
                Kind::NotEqual
            }
            b'"' | b'`' => {
                let (value, end) = string(text, at)?;
                at = end;
                Kind::Text(value)
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(bytes, at)
                    .ok_or_else(|| position(text, start, "Invalid number literal"))?;
                at = end;
                Kind::Number(text[start..end].to_owned())
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let (parts, end) = selector(text, at)?;
                at = end;
                Kind::Word(parts)
            }
            _ => {
                let found = text[at..].chars().next().unwrap_or_default();
                return Err(position(text, at, format!("unexpected {found:?}")));
            }
        };
        tokens.push(Token {
            kind,
            offset: start,
        });
    }
    Ok(tokens)
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)?`, which must be followed by space,
/// `)` or the end (go-bexpr's rule). Returns the end offset.
fn number_end(bytes: &[u8], start: usize) -> Option<usize> {
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut at = start;
    if bytes[at] == b'-' {
        at += 1;
    }
    let whole = digits(at);
    if whole == 0 || (whole > 1 && bytes[at] == b'0') {
        return None;
    }
    at += whole;
    if bytes.get(at) == Some(&b'.') {
        let fraction = digits(at + 1);
        if fraction == 0 {
            return None;
        }
        at += 1 + fraction;
    }
    match bytes.get(at) {
        None | Some(b' ' | b'\t' | b'\n' | b'\r' | b')') => Some(at),
        Some(_) => None,
    }
}

/// An identifier: `[a-zA-Z][a-zA-Z0-9_/]*`.
fn identifier_end(bytes: &[u8], start: usize) -> usize {
    start
        + bytes[start..]
            .iter()
            .enumerate()
            .take_while(|(i, b)| {
                b.is_ascii_alphabetic()
                    || (*i > 0 && (b.is_ascii_digit() || **b == b'_' || **b == b'/'))
            })
            .count()
}

/// `Identifier ( "." Identifier | "." [0-9]+ | "[" StringLiteral "]" )*`.
fn selector(text: &str, start: usize) -> Result<(Vec<String>, usize), FilterError> {
    let bytes = text.as_bytes();
    let mut at = identifier_end(bytes, start);
    let mut parts = vec![text[start..at].to_owned()];
    loop {
        match bytes.get(at) {
            Some(b'.') => {
                let from = at + 1;
                let end = match bytes.get(from) {
                    Some(b) if b.is_ascii_alphabetic() => identifier_end(bytes, from),
                    Some(b) if b.is_ascii_digit() => {
                        from + bytes[from..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count()
                    }
                    _ => return Err(position(text, from, "Invalid selector")),
                };
                parts.push(text[from..end].to_owned());
                at = end;
            }
            Some(b'[') => {
                let mut from = at + 1;
                while matches!(bytes.get(from), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                    from += 1;
                }
                if !matches!(bytes.get(from), Some(b'"' | b'`')) {
                    return Err(position(text, from, "Invalid index"));
                }
                let (key, mut end) = string(text, from)?;
                while matches!(bytes.get(end), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                    end += 1;
                }
                if bytes.get(end) != Some(&b']') {
                    return Err(position(text, end, "Unclosed index expression"));
                }
                parts.push(key);
                at = end + 1;
            }
            _ => return Ok((parts, at)),
        }
    }
}

/// A quoted string at `start`: `` `raw` `` or `"..."` with Go's escapes.
/// Returns the value and the offset after the closing quote.
fn string(text: &str, start: usize) -> Result<(String, usize), FilterError> {
    let quote = text.as_bytes()[start];
    let body = &text[start + 1..];
    let unterminated = || position(text, start, "Unterminated string literal");
    if quote == b'`' {
        let end = body.find('`').ok_or_else(unterminated)?;
        return Ok((body[..end].to_owned(), start + 1 + end + 1));
    }
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, start + 1 + i + 1)),
            '\\' => {
                let escape_at = start + 1 + i;
                let bad = || position(text, escape_at, "invalid escape in string literal");
                let (_, e) = chars.next().ok_or_else(unterminated)?;
                let hex = |chars: &mut std::str::CharIndices, n: usize| {
                    let digits: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                    u32::from_str_radix(&digits, 16)
                        .ok()
                        .filter(|_| digits.len() == n)
                        .and_then(char::from_u32)
                };
                let decoded = match e {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    '\\' => '\\',
                    '"' => '"',
                    'x' => hex(&mut chars, 2).ok_or_else(bad)?,
                    'u' => hex(&mut chars, 4).ok_or_else(bad)?,
                    'U' => hex(&mut chars, 8).ok_or_else(bad)?,
                    _ => return Err(bad()),
                };
                value.push(decoded);
            }
            c => value.push(c),
        }
    }
    Err(unterminated())
}
