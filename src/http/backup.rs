//! Export and import of the whole registry, to move it between servers and
//! versions. The format is the store's own plain JSON record per instance.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::acl::Caller;
use super::{
    body::{body_bytes_within, parse_json},
    error::ApiError,
    state::AppState,
};
use crate::registry::{Command, Outcome, StoredInstance};

/// The export format's version; bumped only for incompatible changes.
pub(super) const EXPORT_VERSION: u32 = 1;
/// Imports may be large: a whole registry in one body.
pub(super) const MAX_IMPORT_BYTES: usize = 512 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Export {
    pub version: u32,
    /// The exporting server's index, for reference; an import does not
    /// move the importing server's index backwards.
    pub index: u64,
    pub instances: Vec<StoredInstance>,
}

/// `GET /v1/export`: every instance with its checks and maintenance flag.
pub(super) async fn export(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_management()?;
    let registry = state.registry.state();
    let instances = registry
        .services
        .values()
        .flat_map(|service| service.instances())
        .map(|i| StoredInstance::new(&i.instance, i.maintenance.clone(), i.create_index))
        .collect();
    Ok(Json(Export {
        version: EXPORT_VERSION,
        index: registry.index,
        instances,
    })
    .into_response())
}

/// `PUT /v1/import`: registers every instance of an export, all or nothing.
pub(super) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    // Before the body is read: an import may be 512 MiB. For the same
    // reason one runs at a time; another is told to try again.
    caller.require_management()?;
    let Ok(_slot) = state.import_slot.try_acquire() else {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "another import is in progress; try again when it has finished",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(response);
    };
    // The body is parsed straight into `Export` (see `parse_json`) and its
    // bytes are dropped before the import runs, so at most the body and the
    // typed instances are in memory together.
    let export: Export = {
        // Read only now, past the token and the slot (the route's
        // DefaultBodyLimit still applies).
        let body = Bytes::from_request(request, &state).await;
        let bytes = body_bytes_within(body, MAX_IMPORT_BYTES)?;
        parse_json(&bytes)?
    };
    if export.version != EXPORT_VERSION {
        return Err(ApiError::bad_request(
            "version",
            format!(
                "export version {} is not supported (expected {EXPORT_VERSION})",
                export.version
            ),
        ));
    }
    for (i, instance) in export.instances.iter().enumerate() {
        state
            .admit_checks(&instance.checks)
            .map_err(|e| ApiError::bad_request(format!("instances[{i}].{}", e.field), e.message))?;
    }
    let outcome = state
        .registry
        .execute(Command::Import {
            instances: export.instances,
        })
        .await?;
    let imported = match outcome {
        Outcome::Imported(count) => count,
        _ => 0,
    };
    Ok(Json(serde_json::json!({ "imported": imported })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::tests::{REPRESENTATIVE_JSON, representative};

    /// The export document, byte for byte: what `roster import` on another
    /// version reads. The instance inside is pinned field by field beside
    /// `StoredInstance`; this pins the envelope around it.
    #[test]
    fn the_export_document_keeps_its_json() {
        let export = Export {
            version: EXPORT_VERSION,
            index: 7,
            instances: vec![representative()],
        };
        let json = serde_json::to_string(&export).expect("serialises");
        let expected = format!(r#"{{"version":1,"index":7,"instances":[{REPRESENTATIVE_JSON}]}}"#);
        assert_eq!(json, expected);
        let back: Export = serde_json::from_str(&expected).expect("parses");
        assert_eq!(back.instances, [representative()]);
    }
}
