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

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

mod lex;
mod parse;
mod shape;
#[cfg(test)]
mod tests;

use super::error::ConsulError;
pub(super) use shape::{AGENT_SERVICE, HEALTH_CHECK, SERVICE_ENTRY, SERVICE_NODE, Shape};

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
        let expression = parse::expression(text, shape)?;
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
