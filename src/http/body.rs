//! Reading JSON request bodies with errors that name the offending field.

use axum::{body::Bytes, extract::rejection::BytesRejection, http::StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Turns a body extraction failure (too large, broken stream) into an error.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status,
                message: format!("request body is larger than {MAX_BODY_BYTES} bytes"),
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

/// Parses `bytes` as a JSON object into `T`; an error names the field at
/// fault, or `body` when the body as a whole is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let body_error = |message: String| ApiError::bad_request("body", message);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| body_error(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        // serde would happily build a struct from an array; an API that
        // takes objects should not.
        return Err(body_error("the body must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
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
