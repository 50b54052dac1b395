//! Query strings as Consul reads them: repeated keys allowed (`tag=a&tag=b`),
//! booleans in Go's `strconv.ParseBool` forms, because the Python clients
//! send `str(True)` (`enable=True`) and `passing=1`.
//!
//! Never accept and ignore: a parameter that would change Consul's answer
//! and that roster does not implement (`near`, `node-meta`,
//! `merge-central-config`, `cached`, a namespace or partition other than
//! `default`) is refused with 400 saying so, rather than answered with
//! something the client did not ask for. `filter` is implemented
//! (`filter.rs`) on the routes in [`FILTERED_ROUTES`] and refused on the
//! others, where Consul either takes it and roster would ignore it or
//! does not take it. `dc` must name roster's
//! datacenter (else Consul's 500 "No path to datacenter") and `peer`
//! answers with nothing (roster has no peers); both are checked with the
//! catalog and health endpoints that take them (`blocking.rs`). Parameters
//! that do not change the answer are accepted: `stale` and `consistent`
//! (one registry either way), `pretty`, and `token` (read by the ACL,
//! `http::acl`).

use axum::{
    extract::{FromRequestParts, MatchedPath, Query},
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
        let params = Self(pairs);
        params.refuse_unimplemented()?;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        params.refuse_filter_unless_served(route)?;
        Ok(params)
    }
}

/// The routes (as registered in `mod.rs`) whose handlers apply
/// `?filter=`: Consul's filtering endpoints that roster serves.
pub(super) const FILTERED_ROUTES: [&str; 7] = [
    "/v1/agent/services",
    "/v1/agent/checks",
    "/v1/catalog/services",
    "/v1/catalog/service/{*name}",
    "/v1/health/service/{*name}",
    "/v1/health/checks/{*name}",
    "/v1/health/state/{*state}",
];

/// Parameters that change Consul's answer and that roster does not
/// implement, with what to do instead.
const UNIMPLEMENTED: [(&str, &str); 4] = [
    ("near", "sorting by network distance; roster has one node"),
    ("node-meta", "node metadata; roster's one node has none"),
    ("merge-central-config", "central service configuration"),
    ("cached", "agent caching; ask without ?cached"),
];

impl Params {
    /// Refuses what roster would otherwise answer wrongly (module doc).
    fn refuse_unimplemented(&self) -> Result<(), ConsulError> {
        for (name, what) in UNIMPLEMENTED {
            if self.get(name).is_some() {
                return Err(ConsulError::bad_request(format!(
                    "roster does not implement ?{name}= ({what})"
                )));
            }
        }
        for name in ["ns", "partition"] {
            if let Some(value) = self.get(name).filter(|v| !v.is_empty() && *v != "default") {
                return Err(ConsulError::bad_request(format!(
                    "roster has no {name} {value:?}: it has only \"default\" (Consul Enterprise's namespaces and partitions are not implemented)"
                )));
            }
        }
        Ok(())
    }

    /// `?filter=` is read by the handlers of [`FILTERED_ROUTES`]; anywhere
    /// else it would be ignored, so it is refused.
    fn refuse_filter_unless_served(&self, route: Option<&str>) -> Result<(), ConsulError> {
        if self.get("filter").is_some() && !route.is_some_and(|r| FILTERED_ROUTES.contains(&r)) {
            return Err(ConsulError::bad_request(
                "roster does not implement ?filter= on this endpoint; it filters /v1/agent/services, /v1/agent/checks, /v1/catalog/services, /v1/catalog/service/:name and /v1/health/{service,checks,state}/:name",
            ));
        }
        Ok(())
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
    fn parameters_roster_does_not_implement_are_refused_not_ignored() {
        let with = |name: &str, value: &str| Params(vec![(name.into(), value.into())]);
        for name in ["near", "node-meta", "merge-central-config", "cached"] {
            let refused = with(name, "x").refuse_unimplemented();
            assert!(refused.is_err(), "{name}");
        }
        assert!(with("ns", "team-a").refuse_unimplemented().is_err());
        assert!(with("ns", "default").refuse_unimplemented().is_ok());
        assert!(with("stale", "").refuse_unimplemented().is_ok());
        assert!(with("token", "t").refuse_unimplemented().is_ok());
    }

    #[test]
    fn filter_is_refused_where_no_handler_reads_it() {
        let filter = Params(vec![("filter".into(), "Service == web".into())]);
        for route in FILTERED_ROUTES {
            assert!(
                filter.refuse_filter_unless_served(Some(route)).is_ok(),
                "{route}"
            );
        }
        for route in [
            Some("/v1/catalog/datacenters"),
            Some("/v1/agent/service/{*id}"),
            None,
        ] {
            assert!(
                filter.refuse_filter_unless_served(route).is_err(),
                "{route:?}"
            );
        }
        assert!(Params::default().refuse_filter_unless_served(None).is_ok());
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
