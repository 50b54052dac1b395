//! Catalog and health answers: JSON plus the headers Consul clients expect.
//!
//! Both Python clients need `X-Consul-Index` on every catalog and health
//! response, 404s included: python-consul raises `KeyError` and py-consul
//! `ConsulException("Missing index header")` without it. The other two
//! headers are for fidelity only; no client tested reads them.

use axum::{
    Json,
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// A catalog or health answer read from the registry at `index`.
pub(super) struct Indexed<T>(pub u64, pub T);

impl<T: Serialize> IntoResponse for Indexed<T> {
    fn into_response(self) -> Response {
        let Indexed(index, body) = self;
        let mut response = Json(body).into_response();
        add_index_headers(&mut response, index);
        response
    }
}

/// Adds `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
/// The index is never 0 (Consul sends 1 instead; the registry starts at 1).
pub(super) fn add_index_headers(response: &mut Response, index: u64) {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-consul-index"),
        HeaderValue::from(index.max(1)),
    );
    // roster is its own leader: a single node that never loses contact.
    headers.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static("true"),
    );
    headers.insert(
        HeaderName::from_static("x-consul-lastcontact"),
        HeaderValue::from_static("0"),
    );
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
}
