//! Reading JSON request bodies with errors that name the offending field.
//!
//! Every JSON body roster accepts goes through [`scan_json`] first: one pass
//! over the bytes that refuses syntax errors and duplicate keys without
//! building a `serde_json::Value`. Duplicate keys matter because every
//! decoder quietly keeps one of them (serde's maps and `Value` the last,
//! other tools the first): a body that means two things to two readers is
//! refused rather than guessed at. The typed parse then reads the same bytes
//! straight into the target type, so no intermediate tree ever exists; that
//! keeps a 512 MiB import at a small multiple of its size in memory instead
//! of the ~18x a `Value` costs.

use std::{borrow::Cow, cell::RefCell, collections::HashSet, fmt};

use axum::{body::Bytes, extract::rejection::BytesRejection, http::StatusCode};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess};

use super::error::ApiError;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Turns a body extraction failure (too large, broken stream) into an error.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body_bytes_within(body, MAX_BODY_BYTES)
}

/// [`body_bytes`] for a route with its own body `limit`, so that the error
/// states the limit that applied.
pub fn body_bytes_within(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status,
                message: format!("request body is larger than {limit} bytes"),
                field: Some("body".into()),
            }
        } else {
            ApiError {
                status,
                message: rejection.body_text(),
                field: Some("body".into()),
            }
        }
    })
}

/// Why a body is not acceptable JSON, before any field is looked at.
#[derive(Debug, thiserror::Error)]
pub enum JsonBodyError {
    #[error("invalid JSON body: {0}")]
    Syntax(#[source] serde_json::Error),
    #[error("the body must be a JSON object")]
    NotObject,
    /// RFC 8259 section 8.1: JSON text must not begin with one.
    #[error(
        "invalid JSON body: it begins with a UTF-8 byte-order mark (EF BB BF), which JSON must not have; save or send it without one"
    )]
    ByteOrderMark,
    #[error(
        "duplicate key {key:?} at {path}: each key may appear once in an object; send the value you mean once"
    )]
    DuplicateKey {
        /// The repeated key as written.
        key: String,
        /// Where it is, in the same form as field errors (`instances[3].meta.k`).
        path: String,
    },
}

impl JsonBodyError {
    /// The field an API error names: the duplicated key's path, or `body`.
    pub fn field(&self) -> &str {
        match self {
            Self::DuplicateKey { path, .. } => path,
            Self::Syntax(_) | Self::NotObject | Self::ByteOrderMark => "body",
        }
    }
}

impl From<JsonBodyError> for ApiError {
    fn from(error: JsonBodyError) -> Self {
        ApiError::bad_request(error.field().to_owned(), error.to_string())
    }
}

/// Checks that `bytes` is one JSON value with no key repeated within any
/// object; returns whether that value is an object. Allocates only the keys
/// of the objects currently open (one set per nesting level), never a tree.
pub fn scan_json(bytes: &[u8]) -> Result<bool, JsonBodyError> {
    // serde would say only "expected value at line 1 column 1".
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(JsonBodyError::ByteOrderMark);
    }
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let node = Node {
        path: &Path::Root,
        duplicate: &duplicate,
    };
    let scanned = node
        .deserialize(&mut deserializer)
        .and_then(|is_object| deserializer.end().map(|()| is_object));
    // A duplicate is reported to serde as a custom error to stop the scan;
    // the slot holds the structured version.
    if let Some(found) = duplicate.into_inner() {
        return Err(found);
    }
    scanned.map_err(JsonBodyError::Syntax)
}

/// Parses `bytes` as a JSON object into `T`; an error names the field at
/// fault, or `body` when the body as a whole is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !scan_json(bytes)? {
        // serde would happily build a struct from an array; an API that
        // takes objects should not.
        return Err(JsonBodyError::NotObject.into());
    }
    // Plainly first: tracking the path costs on every field, and only a
    // failure needs it, so a failure is parsed again to name its field.
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let field = if path != "." && path != "?" {
            path
        } else {
            backticked(&message).unwrap_or_else(|| "body".to_owned())
        };
        ApiError::bad_request(field, format!("invalid JSON body: {message}"))
    })
}

/// The first `name` in a serde message such as "missing field `address`".
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// Where the scan is, as a chain to the root: built on the stack as the scan
/// descends and formatted only when a duplicate is found.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("."),
            Self::Key(Path::Root, key) => f.write_str(key),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Index(Path::Root, index) => write!(f, "[{index}]"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// One JSON value to scan; yields whether it is an object.
struct Node<'a> {
    path: &'a Path<'a>,
    /// Where the first duplicate found is recorded.
    duplicate: &'a RefCell<Option<JsonBodyError>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        // serde_json's recursion limit (128 levels) bounds this recursion.
        deserializer.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Node<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut index = 0;
        loop {
            let path = Path::Index(self.path, index);
            let element = Node {
                path: &path,
                duplicate: self.duplicate,
            };
            if seq.next_element_seed(element)?.is_none() {
                return Ok(false);
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        // Keys without escapes borrow from the body, so most objects cost
        // only the list of their keys.
        let mut seen = SeenKeys::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let path = Path::Key(self.path, &key);
            if seen.contains(&key) {
                let found = JsonBodyError::DuplicateKey {
                    key: key.clone().into_owned(),
                    path: path.to_string(),
                };
                let message = found.to_string();
                *self.duplicate.borrow_mut() = Some(found);
                return Err(de::Error::custom(message));
            }
            let value = Node {
                path: &path,
                duplicate: self.duplicate,
            };
            map.next_value_seed(value)?;
            seen.insert(key);
        }
        Ok(true)
    }
}

/// The keys of one object seen so far: a short list searched in place
/// while the object is small (nearly every object a client sends: a hash
/// set grew and rehashed twice for an instance's ten keys), a hash set
/// once it is not, so a large object is still scanned in linear time.
enum SeenKeys<'de> {
    Few(Vec<Cow<'de, str>>),
    Many(HashSet<Cow<'de, str>>),
}

impl Default for SeenKeys<'_> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<'de> SeenKeys<'de> {
    /// Up to this many keys are kept in the list.
    const FEW: usize = 16;

    fn contains(&self, key: &str) -> bool {
        match self {
            Self::Few(keys) => keys.iter().any(|seen| seen == key),
            Self::Many(keys) => keys.contains(key),
        }
    }

    fn insert(&mut self, key: Cow<'de, str>) {
        match self {
            Self::Few(keys) if keys.len() < Self::FEW => {
                if keys.is_empty() {
                    keys.reserve_exact(Self::FEW);
                }
                keys.push(key);
            }
            Self::Few(keys) => {
                let mut many: HashSet<Cow<'de, str>> = keys.drain(..).collect();
                many.insert(key);
                *self = Self::Many(many);
            }
            Self::Many(keys) => {
                keys.insert(key);
            }
        }
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[test]
    fn scan_accepts_json_and_tells_objects_apart() {
        for (text, is_object) in [
            (
                r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 1}, {"a": 1}]}"#,
                true,
            ),
            (r#"{"\u0061": 1, "b": 2}"#, true),
            ("[1, 2]", false),
            ("\"x\"", false),
            ("null", false),
        ] {
            assert_eq!(scan_json(text.as_bytes()).expect(text), is_object, "{text}");
        }
    }

    /// A byte-order mark is named as such (serde would say only "expected
    /// value at line 1 column 1"), on the native and the Consul door alike.
    #[test]
    fn a_byte_order_mark_is_named() {
        let error = scan_json(b"\xEF\xBB\xBF{\"port\": 1}").expect_err("a BOM");
        assert!(error.to_string().contains("byte-order mark"), "{error}");
        assert_eq!(error.field(), "body");
    }

    #[test]
    fn duplicates_are_found_at_any_depth_with_their_path() {
        for (text, key, path) in [
            (r#"{"a": 1, "a": 2}"#, "a", "a"),
            (r#"{"m": {"k": "1", "k": "2"}}"#, "k", "m.k"),
            (r#"{"l": [{}, {"x": 1, "y": 2, "x": 3}]}"#, "x", "l[1].x"),
            // An escape spells the same key differently on the wire.
            (r#"{"ab": 1, "a\u0062": 2}"#, "ab", "ab"),
            (r#"[{"a": 1, "a": 1}]"#, "a", "[0].a"),
        ]
        .into_iter()
        .map(|(text, key, path)| (text.to_owned(), key.to_owned(), path.to_owned()))
        .chain(
            // Objects past the list's size, where the keys move to a set:
            // the duplicate among the first keys, across the move, after it.
            [(3, 2), (17, 16), (40, 5), (40, 30)].map(|(keys, again)| {
                let pairs: Vec<String> = (0..keys).map(|k| format!(r#""k{k}": {k}"#)).collect();
                let text = format!(r#"{{"m": {{{}, "k{again}": 0}}}}"#, pairs.join(", "));
                (text, format!("k{again}"), format!("m.k{again}"))
            }),
        ) {
            let (text, key, path) = (text.as_str(), key.as_str(), path.as_str());
            match scan_json(text.as_bytes()) {
                Err(JsonBodyError::DuplicateKey { key: k, path: p }) => {
                    assert_eq!((k.as_str(), p.as_str()), (key, path), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn objects_of_many_distinct_keys_pass() {
        for keys in [1, 16, 17, 200] {
            let pairs: Vec<String> = (0..keys).map(|k| format!(r#""k{k}": {k}"#)).collect();
            let text = format!("{{{}}}", pairs.join(", "));
            assert!(
                scan_json(text.as_bytes()).expect("no duplicate"),
                "{keys} keys"
            );
        }
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        for text in ["", "{", r#"{"a": 1} x"#, r#"{"a" 1}"#, "[1, 2"] {
            assert!(
                matches!(scan_json(text.as_bytes()), Err(JsonBodyError::Syntax(_))),
                "{text}"
            );
        }
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        port: u16,
        #[serde(default)]
        meta: BTreeMap<String, String>,
    }

    #[test]
    fn parse_json_names_the_field_at_fault() {
        let cases = [
            (r#"{"port": 70000}"#, "port"),
            (r#"{}"#, "port"),
            (r#"{"port": 1, "meta": {"k": 1}}"#, "meta.k"),
            (r#"{"port": 1, "meta": {"k": "1", "k": "2"}}"#, "meta.k"),
            (r#"{"port": 1, "port": 2}"#, "port"),
            ("[1]", "body"),
            ("{", "body"),
        ];
        for (text, field) in cases {
            let error = parse_json::<Body>(text.as_bytes()).expect_err(text);
            assert_eq!(error.field.as_deref(), Some(field), "{text}: {error:?}");
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{text}");
        }
        let error = parse_json::<Body>(b"[1]").expect_err("array");
        assert!(error.message.contains("must be a JSON object"), "{error:?}");
    }
}
