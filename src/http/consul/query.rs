//! Query strings as Consul reads them: repeated keys allowed (`tag=a&tag=b`),
//! booleans in Go's `strconv.ParseBool` forms, because the Python clients
//! send `str(True)` (`enable=True`) and `passing=1`.
//!
//! Parameters roster has no use for (`dc`, `stale`, `consistent`, `near`,
//! `node-meta`, `filter`, `ns`, `peer`, `merge-central-config`, `pretty`)
//! are accepted and ignored: roster is a single node in a single
//! datacenter. `token` is read by the ACL (`http::acl`).

use axum::{
    extract::{FromRequestParts, Query},
    http::request::Parts,
};

use super::error::ConsulError;

/// A request's query parameters, in order, percent-decoded.
#[derive(Debug, Default, Clone)]
pub(super) struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order.
    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A boolean flag as Consul's `getBoolQueryParam` reads it: absent is
    /// `false`, present without a value is `true`, otherwise Go's ParseBool.
    pub(super) fn flag(&self, name: &str) -> Result<bool, ConsulError> {
        match self.get(name) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(value) => parse_go_bool(value).ok_or_else(|| {
                ConsulError::bad_request(format!("Invalid value for ?{name}: {value:?}"))
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ConsulError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ConsulError::bad_request(format!("Invalid query string: {e}")))?;
        Ok(Self(pairs))
    }
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false
/// False`, nothing else.
pub(super) fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_booleans() {
        for text in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(text), Some(true), "{text}");
        }
        for text in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(text), Some(false), "{text}");
        }
        for text in ["", "yes", "on", "tRUE", "2"] {
            assert_eq!(parse_go_bool(text), None, "{text}");
        }
    }

    #[test]
    fn flags_and_repeats() {
        let params = Params(vec![
            ("passing".into(), "".into()),
            ("tag".into(), "a".into()),
            ("tag".into(), "b".into()),
            ("stale".into(), "maybe".into()),
        ]);
        assert!(params.flag("passing").expect("bare flag"));
        assert!(!params.flag("absent").expect("absent flag"));
        assert!(params.flag("stale").is_err());
        assert_eq!(params.all("tag").collect::<Vec<_>>(), ["a", "b"]);
    }
}
