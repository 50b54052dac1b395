//! Tokens to an [`Expression`], by go-bexpr's precedence (`or` below
//! `and` below `not`), each match checked against the endpoint's shape.

use regex::RegexBuilder;

use super::{
    Expression, FilterError, Literal, MAX_DEPTH, MAX_REGEX_BYTES, Match, Test,
    lex::{Kind, Token, lex, position},
    shape::{
        Shape,
        Shape::{Bool, List, Map, Number, Text},
        resolve,
    },
};
use crate::http::consul::query::parse_go_bool;

/// The expression `text` says, checked against `shape`.
pub(super) fn expression(text: &str, shape: &Shape) -> Result<Expression, FilterError> {
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
    Ok(expression)
}

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
