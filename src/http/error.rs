//! API errors: a status code and a JSON body `{"error": "...", "field": "..."}`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{model::ValidationError, registry::RegistryError};

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::bad_request(error.field, error.message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let status = match &error {
            RegistryError::NoInstance { .. }
            | RegistryError::NotInService { .. }
            | RegistryError::NoCheck { .. } => StatusCode::NOT_FOUND,
            // The request is well formed but clashes with what is registered
            // (or changed while it was applied): the client may resolve it.
            RegistryError::ServiceLabelTaken { .. }
            | RegistryError::IdLabelTaken { .. }
            | RegistryError::InOtherService { .. }
            | RegistryError::NoTtlCheck { .. }
            | RegistryError::Stale { .. }
            | RegistryError::Contended { .. }
            | RegistryError::Unmet(_) => StatusCode::CONFLICT,
            RegistryError::DuplicateId { .. } | RegistryError::InvalidStored { .. } => {
                StatusCode::BAD_REQUEST
            }
            // etcd is down or cut off: roster is up and the client may retry.
            RegistryError::Store(store) if store.is_unreachable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Store(_) | RegistryError::Load(_) | RegistryError::WriterThread(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RegistryError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "error": self.message, "field": field }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}
