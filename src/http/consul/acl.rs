//! The ACL at the Consul door: the caller as Consul's clients name it, and
//! refusals in Consul's words (403 "ACL not found", 403 "Permission
//! denied").
//!
//! Owns: the door's extractor and error words. Must not: decide what a
//! route needs (each handler asks), or know about secrets (`http::acl`).

use axum::{extract::FromRequestParts, http::request::Parts};

use super::error::ConsulError;
use crate::http::{
    acl::{Caller, Refusal},
    state::AppState,
};

/// The caller of a Consul request.
pub(super) struct ConsulCaller(pub Caller);

impl FromRequestParts<AppState> for ConsulCaller {
    type Rejection = ConsulError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsulError> {
        let index = state.registry.state().index;
        Caller::of(parts, state)
            .map(Self)
            .map_err(|refusal| ConsulError::from(refusal).at(index))
    }
}

impl From<Refusal> for ConsulError {
    fn from(refusal: Refusal) -> Self {
        let status = axum::http::StatusCode::FORBIDDEN;
        match refusal {
            Refusal::UnknownToken => ConsulError::new(status, "ACL not found"),
            Refusal::Denied(what) => ConsulError::new(status, format!("Permission denied: {what}")),
        }
    }
}

impl ConsulCaller {
    /// [`Caller::require_write_registered`], refused in Consul's words.
    pub(super) fn require_write_instance(
        &self,
        state: &AppState,
        id: &str,
    ) -> Result<(), ConsulError> {
        Ok(self
            .0
            .require_write_registered(&state.registry.state(), id)?)
    }

    /// Write access to the service of the instance that has check
    /// `check_id`, if one has.
    pub(super) fn require_write_check(
        &self,
        state: &AppState,
        check_id: &str,
    ) -> Result<(), ConsulError> {
        let registry = state.registry.state();
        use super::check_ids::{Found, find_check};
        if let Some(Found::Check(instance, _) | Found::Maintenance(instance)) =
            find_check(&registry, check_id)?
        {
            self.0.require_write(instance.instance.service.as_str())?;
        }
        Ok(())
    }
}
