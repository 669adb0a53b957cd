//! `AuthUser`, the authenticated caller (every authenticated handler takes it; its actix
//! extractor is in `routes::middleware`), and the bearer token of a request.

use actix_web::http::header;
use actix_web::HttpRequest;
use uuid::Uuid;

/// The caller, authenticated by a valid bearer token, with their `users` row in place.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The user's id.
    pub id: Uuid,
    /// When their token expires (seconds since the epoch).
    pub exp: i64,
}

/// The token from `Authorization: Bearer …`, if present.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
