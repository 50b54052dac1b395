//! `?filter=`: Consul's filter expressions (HashiCorp's go-bexpr grammar),
//! parsed once per request and applied to the JSON the client would get.
//!
//! ```text
//! Service.Tags contains "primary" and not (Service.Meta.env == `dev` or Port != 8080)
//! "web" in ServiceName
//! Checks.Status matches "^(warning|critical)$"
//! ```
//!
//! A filter is checked against the *shape* of the endpoint's answer
//! ([`Shape`]) when it is parsed, so an unknown selector, a value that is
//! not of the field's type (`Port == web`), an operator the field cannot
//! take (`Tags == a`) or a bad regular expression is a 400 even when the
//! answer is empty, as in Consul; evaluation then cannot fail. The filter
//! runs on each element serialized by the same views the client reads, so
//! a selector means exactly the key the client sees.
//!
//! Semantics follow go-bexpr as Consul uses it:
//!
//! - `==` / `!=` compare text, booleans (Go's `ParseBool` forms) and
//!   integers; `contains` / `in` is a substring on text, an element on a
//!   list, a key on a map; `is empty` is about text, lists and maps;
//!   `matches` is a regular expression on text (the `regex` crate's syntax,
//!   which agrees with Go's RE2 on everything but rarities).
//! - A selector that goes *through* a list (`Checks.Status` on a health
//!   entry) matches if any element does; the negated operators (`!=`,
//!   `not contains`, `not in`, `is not empty`, `not matches`) are the
//!   negation of that, so `Checks.Status != passing` means "no check is
//!   passing".
//! - A map key that is absent reads as Go's zero value: `Meta.env == ""`
//!   and `Meta.env is empty` hold for an instance without `env`.
//! - Values are quoted (`"..."` with Go escapes, or raw `` `...` ``),
//!   numbers, or bare words (`Status == passing`), as go-bexpr reads them.
//! - Selectors are dotted (`Service.Meta.env`), indexed
//!   (`Service.Meta["a b"]`, `Checks.0`), or quoted JSON pointers
//!   (`"/Service/Meta/env"`).
//!
//! Bounds: at most [`MAX_FILTER_BYTES`] of text and [`MAX_DEPTH`] levels of
//! parentheses and `not`; `and` / `or` chains are parsed in a loop, so a
//! long chain costs no stack. Regular expressions are compiled with a size
//! limit. Everything beyond is a 400.

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::Value;

use super::{error::ConsulError, query::parse_go_bool};

/// The longest filter accepted. Real filters are a few dozen bytes; this
/// keeps parsing and evaluation cheap per element.
pub(super) const MAX_FILTER_BYTES: usize = 4096;

/// The deepest nesting of parentheses and `not` accepted: the parser and
/// the evaluator recurse once per level.
pub(super) const MAX_DEPTH: usize = 32;

/// The compiled size a `matches` regular expression may take.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// Why a filter was refused. Shown after Consul's own prefix (see
/// the `From<FilterError>` impl for `ConsulError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FilterError {
    #[error("the filter is {0} bytes long; at most {MAX_FILTER_BYTES} are accepted")]
    TooLong(usize),
    /// Where the text could not be read, as go-bexpr reports it:
    /// `line:column (byte offset)`.
    #[error("{line}:{column} ({offset}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        offset: usize,
        message: String,
    },
    /// Well formed, but not meaningful for this endpoint's answer.
    #[error("{0}")]
    Invalid(String),
}

impl From<FilterError> for ConsulError {
    fn from(error: FilterError) -> Self {
        Self::bad_request(format!(
            "Failed to create boolean expression evaluator: {error}"
        ))
    }
}

/// The JSON shape of what an endpoint returns, for checking selectors.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    Text,
    Bool,
    /// An integer (ports, weights, indexes).
    Number,
    List(&'static Shape),
    /// String keys, any of which a selector may name.
    Map(&'static Shape),
    /// Fixed keys, as the view serializes them.
    Object(&'static [(&'static str, Shape)]),
}

use Shape::{Bool, List, Map, Number, Object, Text};

const TEXT_LIST: Shape = List(&Text);
const TEXT_MAP: Shape = Map(&Text);
const WEIGHTS: Shape = Object(&[("Passing", Number), ("Warning", Number)]);
const SERVICE_ADDRESSES: Shape = Map(&Object(&[("Address", Text), ("Port", Number)]));

/// `views::AgentService`: `/v1/agent/services`.
pub(super) const AGENT_SERVICE: Shape = Object(&[
    ("ID", Text),
    ("Service", Text),
    ("Tags", TEXT_LIST),
    ("Meta", TEXT_MAP),
    ("Port", Number),
    ("Address", Text),
    ("Weights", WEIGHTS),
    ("EnableTagOverride", Bool),
    ("TaggedAddresses", SERVICE_ADDRESSES),
    ("Datacenter", Text),
]);

/// `views::ServiceNode`: `/v1/catalog/service/:name`, and each instance
/// of `/v1/catalog/services`.
pub(super) const SERVICE_NODE: Shape = Object(&[
    ("ID", Text),
    ("Node", Text),
    ("Address", Text),
    ("Datacenter", Text),
    ("TaggedAddresses", TEXT_MAP),
    ("NodeMeta", TEXT_MAP),
    ("ServiceID", Text),
    ("ServiceName", Text),
    ("ServiceTags", TEXT_LIST),
    ("ServiceAddress", Text),
    ("ServicePort", Number),
    ("ServiceMeta", TEXT_MAP),
    ("ServiceWeights", WEIGHTS),
    ("ServiceEnableTagOverride", Bool),
    ("ServiceTaggedAddresses", SERVICE_ADDRESSES),
    ("CreateIndex", Number),
    ("ModifyIndex", Number),
]);

/// `views::HealthCheck`: `/v1/agent/checks`, `/v1/health/checks/:name`,
/// `/v1/health/state/:state`.
pub(super) const HEALTH_CHECK: Shape = Object(&[
    ("Node", Text),
    ("CheckID", Text),
    ("Name", Text),
    ("Status", Text),
    ("Notes", Text),
    ("Output", Text),
    ("ServiceID", Text),
    ("ServiceName", Text),
    ("ServiceTags", TEXT_LIST),
    ("Type", Text),
    ("Interval", Text),
    ("Timeout", Text),
    ("CreateIndex", Number),
    ("ModifyIndex", Number),
]);

/// `views::ServiceEntry`: `/v1/health/service/:name`.
pub(super) const SERVICE_ENTRY: Shape = Object(&[
    (
        "Node",
        Object(&[
            ("ID", Text),
            ("Node", Text),
            ("Address", Text),
            ("Datacenter", Text),
            ("TaggedAddresses", TEXT_MAP),
            ("Meta", TEXT_MAP),
            ("CreateIndex", Number),
            ("ModifyIndex", Number),
        ]),
    ),
    (
        "Service",
        Object(&[
            ("ID", Text),
            ("Service", Text),
            ("Tags", TEXT_LIST),
            ("Address", Text),
            ("Port", Number),
            ("Meta", TEXT_MAP),
            ("Weights", WEIGHTS),
            ("EnableTagOverride", Bool),
            ("TaggedAddresses", SERVICE_ADDRESSES),
            ("CreateIndex", Number),
            ("ModifyIndex", Number),
        ]),
    ),
    ("Checks", List(&HEALTH_CHECK)),
]);

/// A parsed filter, checked against one endpoint's [`Shape`].
#[derive(Debug)]
pub(super) struct Filter {
    expression: Expression,
}

impl Filter {
    /// Parses `text` for an answer of shape `shape`.
    pub(super) fn parse(text: &str, shape: &Shape) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLong(text.len()));
        }
        let tokens = lex(text)?;
        let mut parser = Parser {
            text,
            tokens,
            next: 0,
            shape,
        };
        let expression = parser.or(0)?;
        if let Some(token) = parser.tokens.get(parser.next) {
            return Err(parser.error_at(token.offset, "unexpected text after the expression"));
        }
        Ok(Self { expression })
    }

    /// The request's `?filter=`, if it has a non-empty one (Consul treats
    /// `?filter=` as no filter).
    pub(super) fn from_query(
        text: Option<&str>,
        shape: &Shape,
    ) -> Result<Option<Self>, ConsulError> {
        match text {
            None | Some("") => Ok(None),
            Some(text) => Ok(Some(Self::parse(text, shape)?)),
        }
    }

    /// Whether the element, as the client will see it, passes.
    pub(super) fn matches(&self, element: &impl Serialize) -> bool {
        // The views serialize to JSON without fail (string keys only); an
        // element that somehow did not is left out rather than shown
        // unfiltered.
        serde_json::to_value(element).is_ok_and(|value| self.expression.eval(&value))
    }

    /// Whether `filter` is absent or passes `element`.
    pub(super) fn keeps(filter: Option<&Self>, element: &impl Serialize) -> bool {
        filter.is_none_or(|filter| filter.matches(element))
    }
}

#[derive(Debug)]
enum Expression {
    Or(Vec<Expression>),
    And(Vec<Expression>),
    Not(Box<Expression>),
    Match(Match),
}

/// One `selector operator value`.
#[derive(Debug)]
struct Match {
    /// Keys from the element down; a list on the way is crossed with "any".
    path: Vec<String>,
    test: Test,
    /// `!=`, `not in`, `not contains`, `is not empty`, `not matches`.
    negated: bool,
}

#[derive(Debug)]
enum Test {
    Equal(Literal),
    /// `contains` and `in`: substring, list element or map key.
    Contains(Literal),
    IsEmpty,
    Matches(Regex),
}

/// A value converted to the type of the field it is compared with.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Bool(bool),
    Number(i64),
}

impl Literal {
    /// Whether a JSON value equals the literal; `null` (an absent map key)
    /// is the zero value.
    fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Text(text), Value::String(s)) => s == text,
            (Self::Text(text), Value::Null) => text.is_empty(),
            (Self::Bool(b), Value::Bool(v)) => b == v,
            (Self::Bool(b), Value::Null) => !b,
            (Self::Number(n), Value::Number(v)) => v.as_i64() == Some(*n),
            (Self::Number(n), Value::Null) => *n == 0,
            _ => false,
        }
    }
}

impl Expression {
    fn eval(&self, element: &Value) -> bool {
        match self {
            Self::Or(terms) => terms.iter().any(|t| t.eval(element)),
            Self::And(terms) => terms.iter().all(|t| t.eval(element)),
            Self::Not(inner) => !inner.eval(element),
            Self::Match(m) => select_any(element, &m.path, &|leaf| m.test.holds(leaf)) != m.negated,
        }
    }
}

/// Follows `path` down `value` and applies `leaf` to what it reaches; a
/// list crossed on the way (not indexed) passes if any element does.
fn select_any(value: &Value, path: &[String], leaf: &dyn Fn(&Value) -> bool) -> bool {
    let Some((key, rest)) = path.split_first() else {
        return leaf(value);
    };
    match value {
        Value::Object(map) => match map.get(key) {
            Some(child) => select_any(child, rest, leaf),
            None => leaf(&Value::Null),
        },
        Value::Array(items) => match key.parse::<usize>() {
            Ok(index) => items
                .get(index)
                .map_or_else(|| leaf(&Value::Null), |item| select_any(item, rest, leaf)),
            Err(_) => items.iter().any(|item| select_any(item, path, leaf)),
        },
        Value::Null => leaf(&Value::Null),
        _ => false,
    }
}

impl Test {
    fn holds(&self, value: &Value) -> bool {
        match self {
            Self::Equal(literal) => literal.equals(value),
            Self::Contains(literal) => match (value, literal) {
                (Value::String(s), Literal::Text(text)) => s.contains(text.as_str()),
                (Value::Array(items), _) => items.iter().any(|item| literal.equals(item)),
                (Value::Object(map), Literal::Text(key)) => map.contains_key(key),
                _ => false,
            },
            Self::IsEmpty => match value {
                Value::String(s) => s.is_empty(),
                Value::Array(items) => items.is_empty(),
                Value::Object(map) => map.is_empty(),
                Value::Null => true,
                _ => false,
            },
            Self::Matches(regex) => match value {
                Value::String(s) => regex.is_match(s),
                Value::Null => regex.is_match(""),
                _ => false,
            },
        }
    }
}

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Kind {
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
struct Token {
    kind: Kind,
    /// Byte offset in the filter, for error positions.
    offset: usize,
}

impl Token {
    /// The token as a keyword (`and`, `is`, ...), if it is a bare word.
    fn keyword(&self) -> Option<&str> {
        match &self.kind {
            Kind::Word(parts) if parts.len() == 1 => Some(parts[0].as_str()),
            _ => None,
        }
    }
}

fn position(text: &str, offset: usize, message: impl Into<String>) -> FilterError {
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

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
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

// ---- parsing ----

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    next: usize,
    shape: &'a Shape,
}

/// The operators that can follow a selector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operator {
    Equal,
    Contains,
    IsEmpty,
    Matches,
}

impl Parser<'_> {
    fn error_at(&self, offset: usize, message: impl Into<String>) -> FilterError {
        position(self.text, offset, message)
    }

    /// The offset of the next token, or of the end.
    fn here(&self) -> usize {
        self.tokens
            .get(self.next)
            .map_or(self.text.len(), |t| t.offset)
    }

    fn peek_keyword(&self) -> Option<&str> {
        self.tokens.get(self.next).and_then(Token::keyword)
    }

    fn take_keyword(&mut self, word: &str) -> bool {
        let found = self.peek_keyword() == Some(word);
        if found {
            self.next += 1;
        }
        found
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), FilterError> {
        if self.take_keyword(word) {
            Ok(())
        } else {
            Err(self.error_at(self.here(), format!("expected {word:?}")))
        }
    }

    fn take(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn or(&mut self, depth: usize) -> Result<Expression, FilterError> {
        let mut terms = vec![self.and(depth)?];
        while self.take_keyword("or") {
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expression::Or(terms)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expression, FilterError> {
        let mut terms = vec![self.not(depth)?];
        while self.take_keyword("and") {
            terms.push(self.not(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expression::And(terms)
        })
    }

    fn deeper(&self, depth: usize) -> Result<usize, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(self.error_at(
                self.here(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(depth + 1)
    }

    fn not(&mut self, depth: usize) -> Result<Expression, FilterError> {
        if self.take_keyword("not") {
            let depth = self.deeper(depth)?;
            return Ok(Expression::Not(Box::new(self.not(depth)?)));
        }
        if self.tokens.get(self.next).map(|t| &t.kind) == Some(&Kind::Open) {
            let open = self.here();
            let depth = self.deeper(depth)?;
            self.next += 1;
            let inner = self.or(depth)?;
            return match self.take() {
                Some(Token {
                    kind: Kind::Close, ..
                }) => Ok(inner),
                _ => Err(self.error_at(open, "Unmatched parentheses")),
            };
        }
        self.matching().map(Expression::Match)
    }

    /// `Selector op Value`, `Selector is [not] empty`, `Value [not] in Selector`.
    fn matching(&mut self) -> Result<Match, FilterError> {
        let start = self.here();
        let Some(first) = self.take() else {
            return Err(self.error_at(start, "expected an expression"));
        };
        let in_follows = self.peek_keyword() == Some("in")
            || (self.peek_keyword() == Some("not")
                && self.tokens.get(self.next + 1).and_then(Token::keyword) == Some("in"));
        if in_follows {
            let value = match first.kind {
                Kind::Text(text) | Kind::Number(text) => text,
                Kind::Word(parts) => parts.join("."),
                _ => return Err(self.error_at(start, "expected a value")),
            };
            let negated = self.take_keyword("not");
            self.expect_keyword("in")?;
            let at = self.here();
            let path = match self.take().map(|t| t.kind) {
                Some(Kind::Word(parts)) => parts,
                Some(Kind::Text(pointer)) if pointer.starts_with('/') => json_pointer(&pointer),
                _ => return Err(self.error_at(at, "Invalid selector")),
            };
            return self.compile(path, Operator::Contains, negated, Some(value));
        }
        let path = match first.kind {
            Kind::Word(path) => path,
            Kind::Text(pointer) if pointer.starts_with('/') => json_pointer(&pointer),
            _ => return Err(self.error_at(start, "expected a selector")),
        };
        let operator_at = self.here();
        let (operator, negated) = match self.take().map(|t| t.kind) {
            Some(Kind::Equal) => (Operator::Equal, false),
            Some(Kind::NotEqual) => (Operator::Equal, true),
            Some(Kind::Word(word)) if word.len() == 1 => match word[0].as_str() {
                "contains" => (Operator::Contains, false),
                "matches" => (Operator::Matches, false),
                "is" => {
                    let negated = self.take_keyword("not");
                    self.expect_keyword("empty")?;
                    (Operator::IsEmpty, negated)
                }
                "not" if self.take_keyword("contains") => (Operator::Contains, true),
                "not" if self.take_keyword("matches") => (Operator::Matches, true),
                _ => return Err(self.error_at(operator_at, "expected an operator")),
            },
            _ => return Err(self.error_at(operator_at, "expected an operator")),
        };
        let value = match operator {
            Operator::IsEmpty => None,
            _ => {
                let at = self.here();
                match self.take().map(|t| t.kind) {
                    Some(Kind::Text(text) | Kind::Number(text)) => Some(text),
                    Some(Kind::Word(parts)) => Some(parts.join(".")),
                    _ => return Err(self.error_at(at, "expected a value")),
                }
            }
        };
        self.compile(path, operator, negated, value)
    }

    /// Checks the selector and operator against the endpoint's shape and
    /// converts the value to the field's type.
    fn compile(
        &self,
        path: Vec<String>,
        operator: Operator,
        negated: bool,
        value: Option<String>,
    ) -> Result<Match, FilterError> {
        let name = path.join(".");
        let field = resolve(self.shape, &path)
            .ok_or_else(|| FilterError::Invalid(format!("Selector {name:?} is not valid")))?;
        let value = value.unwrap_or_default();
        let refused = |what: &str| {
            Err(FilterError::Invalid(format!(
                "Selector {name:?} cannot be used with {what}"
            )))
        };
        let test = match (operator, field) {
            (Operator::Equal, Text | Bool | Number) => Test::Equal(literal(&name, field, &value)?),
            (Operator::Equal, _) => {
                return refused("== or != (it is a list or a map: use contains)");
            }
            (Operator::Contains, Text) => Test::Contains(Literal::Text(value)),
            (Operator::Contains, List(element)) if matches!(element, Text | Bool | Number) => {
                Test::Contains(literal(&name, *element, &value)?)
            }
            (Operator::Contains, Map(_)) => Test::Contains(Literal::Text(value)),
            (Operator::Contains, _) => return refused("in or contains"),
            (Operator::IsEmpty, Text | List(_) | Map(_)) => Test::IsEmpty,
            (Operator::IsEmpty, _) => return refused("is empty"),
            (Operator::Matches, Text) => Test::Matches(
                RegexBuilder::new(&value)
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES)
                    .build()
                    .map_err(|e| {
                        FilterError::Invalid(format!(
                            "Failed to compile regular expression {value:?}: {e}"
                        ))
                    })?,
            ),
            (Operator::Matches, _) => return refused("matches (it is not text)"),
        };
        Ok(Match {
            path,
            test,
            negated,
        })
    }
}

/// A quoted JSON-pointer selector (`"/Service/Meta/env"`, newer
/// go-bexpr's other selector form) as keys: `~1` is `/`, `~0` is `~`.
fn json_pointer(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|part| part.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The shape a selector reaches, or `None` if it names nothing. A list is
/// crossed by an index (`Checks.0`) or, for any other key, by applying the
/// key to its elements.
fn resolve(shape: &Shape, path: &[String]) -> Option<Shape> {
    let mut shape = *shape;
    let mut parts = path.iter().peekable();
    while let Some(part) = parts.peek() {
        shape = match shape {
            Object(fields) => fields.iter().find(|(key, _)| *key == part.as_str())?.1,
            Map(value) => *value,
            List(element) => {
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    *element
                } else {
                    // The same key applies to each element: do not consume it.
                    shape = *element;
                    continue;
                }
            }
            Text | Bool | Number => return None,
        };
        parts.next();
    }
    Some(shape)
}

/// `value` as the type of a field compared with `==` or found in a list.
fn literal(selector: &str, field: Shape, value: &str) -> Result<Literal, FilterError> {
    match field {
        Bool => parse_go_bool(value).map(Literal::Bool).ok_or_else(|| {
            FilterError::Invalid(format!(
                "Value {value:?} for selector {selector:?} is not a boolean"
            ))
        }),
        Number => value.parse().map(Literal::Number).map_err(|_| {
            FilterError::Invalid(format!(
                "Value {value:?} for selector {selector:?} is not an integer"
            ))
        }),
        _ => Ok(Literal::Text(value.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({
            "Node": {"ID": "n", "Node": "roster", "Address": "127.0.0.1", "Datacenter": "dc1",
                     "TaggedAddresses": {"lan": "127.0.0.1"}, "Meta": {}, "CreateIndex": 1, "ModifyIndex": 1},
            "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary", "v2"],
                        "Address": "127.0.0.2", "Port": 8080, "Meta": {"env": "prod", "team": "a b"},
                        "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
                        "CreateIndex": 5, "ModifyIndex": 7},
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing", "Name": "Serf Health Status", "ServiceTags": []},
                {"CheckID": "service:web-1", "Status": "critical", "Name": "ttl", "ServiceTags": ["primary"]}
            ]
        })
    }

    fn eval(text: &str) -> bool {
        let filter = Filter::parse(text, &SERVICE_ENTRY).unwrap_or_else(|e| panic!("{text}: {e}"));
        filter.expression.eval(&entry())
    }

    fn refused(text: &str) -> FilterError {
        match Filter::parse(text, &SERVICE_ENTRY) {
            Ok(filter) => panic!("{text} was accepted: {filter:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn operators_on_text_lists_maps_numbers_and_booleans() {
        let table: &[(&str, bool)] = &[
            (r#"Service.Service == "web""#, true),
            (r#"Service.Service == "api""#, false),
            (r#"Service.Service != "api""#, true),
            ("Service.Service == web", true),
            ("Service.Service == `web`", true),
            ("Service.Port == 8080", true),
            ("Service.Port != 8080", false),
            ("Service.Port == -1", false),
            ("Service.EnableTagOverride == false", true),
            ("Service.EnableTagOverride == True", false),
            ("Service.Weights.Passing == 1", true),
            (r#"Service.Tags contains "primary""#, true),
            (r#"Service.Tags contains "prim""#, false),
            (r#""v2" in Service.Tags"#, true),
            (r#""v3" not in Service.Tags"#, true),
            (r#"Service.Tags not contains "v2""#, false),
            (r#""eb" in Service.Service"#, true),
            (r#"Service.Service contains "eb""#, true),
            (r#""env" in Service.Meta"#, true),
            (r#"Service.Meta contains "zone""#, false),
            (r#"Service.Meta.env == "prod""#, true),
            (r#"Service.Meta["team"] == "a b""#, true),
            (r#"Service.Meta[ `env` ] == prod"#, true),
            ("Service.Meta.zone == \"\"", true),
            ("Service.Meta.zone is empty", true),
            ("Service.Meta.env is not empty", true),
            ("Service.Tags is empty", false),
            ("Node.Meta is empty", true),
            ("Service.TaggedAddresses is empty", true),
            (r#"Service.TaggedAddresses.lan.Address == """#, true),
            (r#"Service.ID matches "^web-[0-9]+$""#, true),
            (r#"Service.ID not matches "^api""#, true),
            (r#"Service.Meta.zone matches "^$""#, true),
            (r#"Node.TaggedAddresses.lan == "127.0.0.1""#, true),
            // JSON-pointer selectors, quoted.
            (r#""/Service/Meta/env" == prod"#, true),
            (r#""primary" in "/Service/Tags""#, true),
            (r#""/Checks/1/Status" == critical"#, true),
            (r#""/Service/Tags" is empty"#, false),
        ];
        for (text, expected) in table {
            assert_eq!(eval(text), *expected, "{text}");
        }
    }

    #[test]
    fn a_selector_through_a_list_matches_any_element_and_its_negation_none() {
        assert!(eval("Checks.Status == critical"));
        assert!(eval("Checks.Status == passing"));
        assert!(!eval("Checks.Status == warning"));
        assert!(!eval("Checks.Status != passing"), "some check is passing");
        assert!(eval("Checks.Status != warning"));
        assert!(eval("Checks.0.CheckID == serfHealth"));
        assert!(eval(r#"Checks.1.Status == "critical""#));
        assert!(eval(r#"Checks.ServiceTags contains "primary""#));
        assert!(eval("Checks is not empty"));
    }

    #[test]
    fn boolean_logic_precedence_and_grouping() {
        let table: &[(&str, bool)] = &[
            ("Service.Port == 8080 and Service.Service == web", true),
            ("Service.Port == 1 or Service.Service == web", true),
            ("Service.Port == 1 or Service.Service == api", false),
            ("not Service.Port == 1", true),
            ("not not Service.Port == 1", false),
            // and binds tighter than or; not tighter than and.
            (
                "Service.Port == 1 and Service.Port == 1 or Service.Service == web",
                true,
            ),
            (
                "Service.Port == 1 and (Service.Port == 1 or Service.Service == web)",
                false,
            ),
            ("not Service.Port == 8080 or Service.Service == web", true),
            (
                "not (Service.Port == 8080 or Service.Service == api)",
                false,
            ),
            ("( ( Service.Port==8080 ) )", true),
            ("\tService.Port\n==\r8080 ", true),
        ];
        for (text, expected) in table {
            assert_eq!(eval(text), *expected, "{text}");
        }
    }

    #[test]
    fn strings_take_go_escapes() {
        let check = |text: &str, value: &str| {
            let expected = Literal::Text(value.to_owned());
            let filter =
                Filter::parse(text, &HEALTH_CHECK).unwrap_or_else(|e| panic!("{text}: {e}"));
            match filter.expression {
                Expression::Match(Match {
                    test: Test::Equal(literal),
                    ..
                }) => assert_eq!(literal, expected, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        };
        check(r#"Name == "a\"b""#, "a\"b");
        check(r#"Name == "tab\there""#, "tab\there");
        check(r#"Name == "\u00e9\x41\\""#, "éA\\");
        check(r#"Name == `raw\n`"#, "raw\\n");
        check(r#"Name == "é""#, "é");
    }

    #[test]
    fn malformed_filters_are_refused_with_a_position() {
        for text in [
            "",
            "Service.Service ==",
            "Service.Service = web",
            "Service.Service == \"web",
            "Service.Service == `web",
            "(Service.Service == web",
            "Service.Service == web)",
            "Service.Service == web and",
            "Service.Service == web or or Service.Port == 1",
            "Service.Port == 8080x",
            "Service.Port == 01",
            // go-bexpr's bare words have no '-': IDs like this are quoted.
            "Service.ID == web-1",
            "Service.Tags contains",
            "Service.Meta[env] == a",
            "Service.Meta[\"env\" == a",
            "Service. == a",
            "Service.Service is full",
            "\"web\" Service.Service",
            "\"web\" in \"x\"",
            "\"Service\" == web",
            "Service.Service == web extra",
            "Service.Service == \"\\q\"",
            "Service.Service ~ a",
            "== web",
        ] {
            let error = refused(text);
            assert!(
                matches!(error, FilterError::Syntax { .. }),
                "{text}: {error:?}"
            );
        }
        assert_eq!(
            refused("Service.Service == \"web").to_string(),
            "1:20 (19): Unterminated string literal"
        );
    }

    #[test]
    fn filters_that_do_not_fit_the_answer_are_refused() {
        for text in [
            "Service.Nope == a",
            "Nope is empty",
            "Service.Port.Deep == 1",
            "Service.Port == web",
            "Service.Port == 1.5",
            "Service.EnableTagOverride == maybe",
            "Service.Tags == a",
            "Service.Meta == a",
            "Service == a",
            "Service.Port contains 1",
            "Service.Port is empty",
            "Service.Tags matches a",
            "Service.ID matches \"(\"",
            "\"a\" in Service.Weights",
            "\"/Service/Nope\" == a",
            "\"/\" == a",
        ] {
            let error = refused(text);
            assert!(
                matches!(error, FilterError::Invalid(_)),
                "{text}: {error:?}"
            );
        }
        assert_eq!(
            refused("Service.Nope == a").to_string(),
            "Selector \"Service.Nope\" is not valid"
        );
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let long = format!("Service.Service == \"{}\"", "a".repeat(MAX_FILTER_BYTES));
        assert!(matches!(refused(&long), FilterError::TooLong(_)));
        let deep = format!(
            "{}Service.Port == 1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(refused(&deep), FilterError::Syntax { .. }));
        let nots = format!("{}Service.Port == 1", "not ".repeat(MAX_DEPTH + 1));
        assert!(matches!(refused(&nots), FilterError::Syntax { .. }));
        let fine = format!(
            "{}Service.Port == 8080{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(eval(&fine));
        // A long flat chain is a loop, not a recursion.
        let chain = vec!["Service.Port == 8080"; 150].join(" and ");
        assert!(chain.len() < MAX_FILTER_BYTES);
        assert!(eval(&chain));
    }

    /// Whether `value` has exactly the keys and types `shape` describes.
    fn conforms(shape: &Shape, value: &Value, at: &str) -> Result<(), String> {
        match (shape, value) {
            (Text, Value::String(_)) | (Bool, Value::Bool(_)) => Ok(()),
            (Number, Value::Number(n)) if n.is_i64() => Ok(()),
            (List(element), Value::Array(items)) => items
                .iter()
                .try_for_each(|item| conforms(element, item, &format!("{at}[]"))),
            (Map(element), Value::Object(map)) => map
                .iter()
                .try_for_each(|(k, v)| conforms(element, v, &format!("{at}.{k}"))),
            (Object(fields), Value::Object(map)) => {
                for key in map.keys() {
                    if !fields.iter().any(|(name, _)| name == key) {
                        return Err(format!("{at}.{key} is served but not in the shape"));
                    }
                }
                for (name, field) in *fields {
                    let child = map
                        .get(*name)
                        .ok_or_else(|| format!("{at}.{name} is in the shape but not served"))?;
                    conforms(field, child, &format!("{at}.{name}"))?;
                }
                Ok(())
            }
            _ => Err(format!("{at} is {value} where the shape says {shape:?}")),
        }
    }

    /// The shapes selectors are checked against are the views clients get:
    /// a field added to a view without its shape fails here.
    #[test]
    fn shapes_are_the_views_as_served() {
        use super::super::views::{
            AgentService, HealthCheck, HealthService, Node, ServiceAddress, ServiceEntry,
            ServiceNode, Weights,
        };
        use crate::model::{Meta, Status};
        use std::collections::BTreeMap;

        let meta = || Meta::from([("env".to_owned(), "prod".to_owned())]);
        let weights = || Weights {
            passing: 1,
            warning: 1,
        };
        let tagged = || {
            Some(BTreeMap::from([(
                "lan".to_owned(),
                ServiceAddress {
                    address: "127.0.0.1".to_owned(),
                    port: 80,
                },
            )]))
        };
        let node_addresses = || BTreeMap::from([("lan", "127.0.0.1".to_owned())]);
        let text = || "x".to_owned();
        let check = HealthCheck {
            node: text(),
            check_id: text(),
            name: text(),
            status: Status::Passing,
            notes: text(),
            output: text(),
            service_id: text(),
            service_name: text(),
            service_tags: vec![text()],
            kind: "ttl",
            interval: text(),
            timeout: text(),
            create_index: 1,
            modify_index: 2,
        };
        let agent = AgentService {
            id: text(),
            service: text(),
            tags: vec![text()],
            meta: meta(),
            port: 80,
            address: text(),
            weights: weights(),
            enable_tag_override: false,
            tagged_addresses: tagged(),
            datacenter: text(),
        };
        let service_node = ServiceNode {
            id: text(),
            node: text(),
            address: text(),
            datacenter: text(),
            tagged_addresses: node_addresses(),
            node_meta: BTreeMap::from([(text(), text())]),
            service_id: text(),
            service_name: text(),
            service_tags: vec![text()],
            service_address: text(),
            service_port: 80,
            service_meta: meta(),
            service_weights: weights(),
            service_enable_tag_override: true,
            service_tagged_addresses: tagged(),
            create_index: 1,
            modify_index: 2,
        };
        let entry = ServiceEntry {
            node: Node {
                id: text(),
                node: text(),
                address: text(),
                datacenter: text(),
                tagged_addresses: node_addresses(),
                meta: BTreeMap::new(),
                create_index: 1,
                modify_index: 1,
            },
            service: HealthService {
                id: text(),
                service: text(),
                tags: vec![text()],
                address: text(),
                port: 80,
                meta: meta(),
                weights: weights(),
                enable_tag_override: false,
                tagged_addresses: tagged(),
                create_index: 1,
                modify_index: 2,
            },
            checks: vec![check.clone()],
        };
        fn json(view: &impl Serialize) -> Value {
            serde_json::to_value(view).expect("views serialize")
        }
        for (name, shape, value) in [
            ("HealthCheck", &HEALTH_CHECK, json(&check)),
            ("AgentService", &AGENT_SERVICE, json(&agent)),
            ("ServiceNode", &SERVICE_NODE, json(&service_node)),
            ("ServiceEntry", &SERVICE_ENTRY, json(&entry)),
        ] {
            conforms(shape, &value, name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every prefix and every one-character deletion of some filters, with
    /// non-ASCII text and escapes in them, is parsed or refused, never a
    /// panic, and what parses evaluates.
    #[test]
    fn cut_and_damaged_filters_never_panic() {
        let filters = [
            r#"not (Service.Meta["é t"] == "a\u00e9\"b" or "v2" in Service.Tags) and Checks.0.Status != `x`"#,
            r#"Service.ID matches "^wéb-[0-9]+$" and Service.Port == -12 or Service.Tags is not empty"#,
            "Checks.Status not matches \"\\x41\" and Service.EnableTagOverride == true",
            "((Service.Weights.Passing == 1.5)) or Node.Meta.k is empty",
        ];
        let value = entry();
        let mut tried = 0;
        for filter in filters {
            let boundaries: Vec<usize> = filter
                .char_indices()
                .map(|(i, _)| i)
                .chain([filter.len()])
                .collect();
            let mut variants: Vec<String> = boundaries
                .iter()
                .map(|&end| filter[..end].to_owned())
                .collect();
            for pair in boundaries.windows(2) {
                variants.push(format!("{}{}", &filter[..pair[0]], &filter[pair[1]..]));
            }
            for variant in variants {
                if let Ok(parsed) = Filter::parse(&variant, &SERVICE_ENTRY) {
                    parsed.expression.eval(&value);
                }
                tried += 1;
            }
        }
        assert!(tried > 400, "{tried}");
    }

    #[test]
    fn every_endpoint_shape_resolves_its_documented_selectors() {
        for (shape, selector) in [
            (&AGENT_SERVICE, "Meta.env"),
            (&AGENT_SERVICE, "TaggedAddresses.lan.Port"),
            (&SERVICE_NODE, "ServiceMeta.k"),
            (&SERVICE_NODE, "ServiceWeights.Warning"),
            (&HEALTH_CHECK, "ServiceTags"),
            (&SERVICE_ENTRY, "Checks.CheckID"),
        ] {
            let path: Vec<String> = selector.split('.').map(str::to_owned).collect();
            assert!(resolve(shape, &path).is_some(), "{selector}");
        }
    }
}
