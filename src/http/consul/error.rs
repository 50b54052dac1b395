//! Errors as Consul answers them: a status code and a plain-text body, which
//! both Python clients put into the exception they raise (`BadRequest("400
//! Missing service name")`). Catalog and health errors also carry the index
//! headers, because python-consul reads `X-Consul-Index` even on a 404.

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::response::add_index_headers;
use crate::{
    model::ValidationError,
    registry::{EditError, Outcome, RegistryError},
};

/// An error answered to a Consul client.
#[derive(Debug)]
pub(super) struct ConsulError {
    pub status: StatusCode,
    /// Consul's own wording where it has one (`Invalid wait time`), so that
    /// code matching on messages keeps working.
    pub message: String,
    /// Set for catalog and health endpoints: the registry index to send as
    /// `X-Consul-Index`.
    pub index: Option<u64>,
}

impl ConsulError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            index: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// Marks the error as a catalog/health answer read at `index`.
    pub(super) fn at(mut self, index: u64) -> Self {
        self.index = Some(index);
        self
    }

    /// Consul's answer for an unknown service ID. The hint matters: the
    /// origin example passes the wrong value here.
    pub(super) fn unknown_service(id: &str) -> Self {
        Self::not_found(format!(
            "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
        ))
    }

    pub(super) fn unknown_check(check_id: &str) -> Self {
        Self::not_found(format!(
            "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
        ))
    }

    /// A refused check, worded as Consul words it (`Invalid check: ...`).
    pub(super) fn invalid_check(error: ValidationError) -> Self {
        Self::bad_request(format!("Invalid check: {}: {}", error.field, error.message))
    }
}

/// The request body, or why it could not be read (too large: 413).
pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ConsulError> {
    body.map_err(|rejection| ConsulError::new(rejection.status(), rejection.body_text()))
}

/// The answer to a `Registry::edit`: 200, the handler's own refusal, or the
/// registry's. `what` names the thing edited (a service or check ID) when
/// the edit kept losing its race.
pub(super) fn edited(
    result: Result<Outcome, EditError<ConsulError>>,
    what: &str,
) -> Result<StatusCode, ConsulError> {
    match result {
        Ok(_) => Ok(StatusCode::OK),
        Err(EditError::Refused(error)) => Err(error),
        Err(EditError::Registry(RegistryError::Contended { .. })) => Err(ConsulError::new(
            StatusCode::CONFLICT,
            format!("{what:?}: the service kept changing while this request edited it; try again"),
        )),
        Err(EditError::Registry(error)) => Err(error.into()),
    }
}

impl From<ValidationError> for ConsulError {
    fn from(error: ValidationError) -> Self {
        Self::bad_request(format!("Invalid {}: {}", error.field, error.message))
    }
}

impl From<RegistryError> for ConsulError {
    fn from(error: RegistryError) -> Self {
        let status = match &error {
            RegistryError::NoInstance { .. }
            | RegistryError::NotInService { .. }
            | RegistryError::NoCheck { .. } => StatusCode::NOT_FOUND,
            // Consul has no conflicts; a refused name is bad input to it.
            RegistryError::ServiceLabelTaken { .. }
            | RegistryError::IdLabelTaken { .. }
            | RegistryError::InOtherService { .. }
            | RegistryError::NoTtlCheck { .. }
            | RegistryError::DuplicateId { .. }
            | RegistryError::InvalidStored { .. }
            | RegistryError::Unmet(_) => StatusCode::BAD_REQUEST,
            // etcd is down or cut off: roster is up and the client may retry.
            RegistryError::Store(store) if store.is_unreachable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Store(_) | RegistryError::Load(_) | RegistryError::WriterThread(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RegistryError::Stale { .. } | RegistryError::Contended { .. } => StatusCode::CONFLICT,
            RegistryError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for ConsulError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(index) = self.index {
            add_index_headers(&mut response, index);
        }
        response
    }
}
