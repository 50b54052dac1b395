//! Body keys as Consul matches them: case-insensitive, underscores ignored.
//!
//! Consul decodes bodies with mapstructure plus snake_case aliases, so
//! `ID`, `id`, `Id` and `DeregisterCriticalServiceAfter`,
//! `deregister_critical_service_after` all mean the same field, and clients
//! rely on it: python-consul sends `name` and `enabletagoverride`, py-consul
//! `tagged_addresses`. roster normalises one object at a time with
//! `key.lower().replace('_', '')`, and only the objects that are Consul
//! structs (the service, a check, `Weights`): user maps inside them (`Meta`,
//! `Header`, `TaggedAddresses`) keep their keys as the user wrote them.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ConsulError;
use crate::http::body::scan_json;

/// `DeregisterCriticalServiceAfter` → `deregistercriticalserviceafter`.
pub(super) fn normalise_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Normalises the keys of `object` itself, not of the values inside it.
/// Two keys that normalise alike (`ID` and `id`, `TTL` and `t_t_l`) are
/// refused, naming both, as a key written twice is: which one was meant
/// cannot be told (Consul keeps one by its decoder's rules, and the map
/// here does not even keep their order). `what` names the object.
pub(super) fn normalise_object(
    object: Map<String, Value>,
    what: &str,
) -> Result<Map<String, Value>, ConsulError> {
    let mut normalised = Map::new();
    // Normalised key → as written, for the message (a body may hold
    // thousands of keys: looked up, not searched).
    let mut spelled: std::collections::HashMap<String, String> =
        std::collections::HashMap::with_capacity(object.len());
    for (key, value) in object {
        let normal = normalise_key(&key);
        if let Some(first) = spelled.get(&normal) {
            return Err(ConsulError::bad_request(format!(
                "Request decode failed: {what}: keys {first:?} and {key:?} name the same field"
            )));
        }
        spelled.insert(normal.clone(), key);
        normalised.insert(normal, value);
    }
    Ok(normalised)
}

/// Decodes a Consul struct from `value`: an object whose keys are normalised
/// first. `what` names it in errors (`service`, `check`, `Weights`).
pub(super) fn decode_struct<T: DeserializeOwned>(
    value: Value,
    what: &str,
) -> Result<T, ConsulError> {
    let Value::Object(object) = value else {
        return Err(ConsulError::bad_request(format!(
            "Request decode failed: {what} must be a JSON object"
        )));
    };
    let normalised = Value::Object(normalise_object(object, what)?);
    serde_path_to_error::deserialize(normalised).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        if path == "." {
            ConsulError::bad_request(format!("Request decode failed: {what}: {message}"))
        } else {
            ConsulError::bad_request(format!("Request decode failed: {what}.{path}: {message}"))
        }
    })
}

/// Parses a request body as one JSON value. Consul clients send no
/// `Content-Type`, so none is required. The body goes through the API's
/// shared scan first, so a key written twice is refused here as it is on the
/// native API (Consul itself keeps the last; roster will not guess).
pub(super) fn parse_body(bytes: &[u8]) -> Result<Value, ConsulError> {
    let decode_failed = |error: &dyn std::fmt::Display| {
        ConsulError::bad_request(format!("Request decode failed: {error}"))
    };
    // Whether the body is an object is left to `decode_struct`, which says
    // which Consul struct it expected.
    scan_json(bytes).map_err(|error| decode_failed(&error))?;
    serde_json::from_slice(bytes).map_err(|error| decode_failed(&error))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_lose_case_and_underscores() {
        for (key, normal) in [
            ("ID", "id"),
            (
                "DeregisterCriticalServiceAfter",
                "deregistercriticalserviceafter",
            ),
            (
                "deregister_critical_service_after",
                "deregistercriticalserviceafter",
            ),
            ("Tagged_Addresses", "taggedaddresses"),
            ("enabletagoverride", "enabletagoverride"),
            ("__", ""),
        ] {
            assert_eq!(normalise_key(key), normal, "{key}");
        }
    }

    #[derive(Deserialize, Debug)]
    struct Sample {
        id: String,
        meta: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn user_maps_keep_their_keys() {
        let value = json!({"I_D": "x", "Meta": {"Build_ID": "7", "ID": "y"}});
        let sample: Sample = decode_struct(value, "service").expect("decodes");
        assert_eq!(sample.id, "x");
        assert_eq!(sample.meta["Build_ID"], "7");
        assert_eq!(sample.meta["ID"], "y");
    }

    #[test]
    fn errors_name_the_field() {
        let error =
            decode_struct::<Sample>(json!({"ID": 5, "Meta": {}}), "service").expect_err("bad");
        assert!(error.message.contains("service.id"), "{}", error.message);
        let error = decode_struct::<Sample>(json!([1]), "service").expect_err("not an object");
        assert!(error.message.contains("JSON object"), "{}", error.message);
    }

    #[test]
    fn repeated_keys_are_refused_naming_the_key() {
        let error =
            parse_body(br#"{"Name": "a", "Meta": {"k": "1", "k": "2"}}"#).expect_err("duplicate");
        assert!(
            error.message.contains("\"k\" at Meta.k"),
            "{}",
            error.message
        );
        assert!(parse_body(br#"{"Name": "a", "name": "b"}"#).is_ok());
    }

    /// Keys that differ only in case or underscores name one field: given
    /// both, which was meant cannot be told, so the body is refused.
    #[test]
    fn keys_that_name_the_same_field_are_refused_naming_both() {
        for body in [
            json!({"id": "f2", "Name": "f1", "ID": "f1", "Meta": {}}),
            json!({"I_D": "x", "id": "y", "Meta": {}}),
        ] {
            let error = decode_struct::<Sample>(body.clone(), "service").expect_err("ambiguous");
            assert!(
                error.message.contains("name the same field"),
                "{}",
                error.message
            );
            assert!(error.message.contains("service"), "{}", error.message);
        }
        // A user map keeps such keys apart.
        let sample: Sample =
            decode_struct(json!({"ID": "x", "Meta": {"k": "1", "K": "2"}}), "service")
                .expect("decodes");
        assert_eq!(sample.meta.len(), 2);
    }
}
