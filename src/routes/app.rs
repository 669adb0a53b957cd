//! The web client at `/app`: static files embedded in the binary (no Node toolchain to build or
//! run the server), and `POST /dev/token`, which exists only while the server runs on its
//! generated development secret.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ValidationIssue};
use crate::extract::{body_text, ApiJson, Text, Validate};
use crate::state::AppState;

/// Lifetime of a development token: a working day, so a page left open keeps working.
const DEV_TOKEN_TTL_SECS: i64 = 12 * 3600;
/// Longest display name a development sign-in accepts.
const MAX_DEV_NAME_CHARS: usize = 64;

/// What the page may load and talk to: its own files and API, images (thumbnails are signed
/// URLs, possibly on another host) and nothing inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// One embedded file of the web client.
struct Asset {
    /// File name under `/app/`.
    name: &'static str,
    /// `Content-Type` it is served with.
    content_type: &'static str,
    /// The file itself.
    body: &'static [u8],
}

/// Every file of the web client, from the crate's `web/` folder, and the client library it runs
/// on (`clients/js`, served as `/app/echo-client.js` so that pages can import it as is).
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/api.js"),
    },
    Asset {
        name: "realtime.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/realtime.js"),
    },
    Asset {
        name: "echo-client.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../clients/js/src/echo-client.js"),
    },
    Asset {
        name: "chats.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/chats.js"),
    },
    Asset {
        name: "room.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/room.js"),
    },
    Asset {
        name: "videos.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/videos.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dom.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/icon.svg"),
    },
];

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(["/app", "/app/"]).route(web::get().to(index)))
        .service(web::resource("/app/config.json").route(web::get().to(client_config)))
        .service(web::resource("/app/{file}").route(web::get().to(asset)))
        // Outside development mode the route does not exist at all: the guard fails, and the
        // request falls through to the 404 of unknown paths.
        .service(
            web::resource("/dev/token")
                .guard(guard::fn_guard(|ctx| {
                    ctx.app_data::<web::Data<AppState>>()
                        .is_some_and(|state| state.dev_secret.is_some())
                }))
                .route(web::post().to(dev_token)),
        );
}

/// Strong validators of the embedded files, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.body.hash(&mut h);
                format!("\"{:016x}\"", h.finish())
            })
            .collect()
    })
}

/// Serves one embedded file; revalidated on every load (`no-cache`) so a new build is picked
/// up at once, answered with 304 when unchanged.
fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return HttpResponse::NotFound().json(json!({"detail": "Not Found"}));
    };
    let etag = etags().get(i).cloned().unwrap_or_default();
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag));
    if asset.content_type.starts_with("text/html") {
        res.insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY));
    }
    if unchanged {
        return res.finish();
    }
    res.content_type(asset.content_type).body(asset.body)
}

/// The page itself, at `/app` and `/app/`.
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

/// A script, stylesheet or icon of the page.
pub async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    serve(&req, &path)
}

/// What the page needs to know before sign-in: whether development sign-in is offered.
pub async fn client_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "dev_sign_in": state.dev_secret.is_some(),
            "version": env!("CARGO_PKG_VERSION"),
        }))
}

/// Body of `POST /dev/token`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// Sign in as this user (a new one when absent).
    #[serde(default)]
    pub user_id: Option<Uuid>,
    /// Display name stored with a new user.
    #[serde(default)]
    pub name: Option<String>,
}

impl Validate for DevTokenRequest {
    fn validate(&self) -> Vec<ValidationIssue> {
        body_text(&[("name", self.name.as_deref(), MAX_DEV_NAME_CHARS, Text::Line)])
    }
}

/// Development sign-in: a token signed with the generated development secret, like the
/// `echo-server token` command prints. Only routed in development mode.
pub async fn dev_token(
    state: web::Data<AppState>,
    body: ApiJson<DevTokenRequest>,
) -> ApiResult<HttpResponse> {
    let Some(secret) = state.dev_secret.as_deref() else {
        return Err(ApiError::not_found("Not Found"));
    };
    let body = body.0;
    let user_id = body.user_id.unwrap_or_else(Uuid::new_v4);
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let exp = chrono::Utc::now().timestamp() + DEV_TOKEN_TTL_SECS;
    let claims = crate::auth::Claims {
        sub: user_id.to_string(),
        exp,
        aud: Some(json!(state.settings.jwt_audience)),
        iss: state.settings.jwt_issuer.clone(),
        email: None,
        user_metadata: name.as_ref().map(|n| {
            json!({
                "full_name": n,
                "username": username_from(n),
            })
        }),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("signing a development token: {e}")))?;
    // The user's row exists before the page asks for it (and before anyone adds them).
    state.authenticate(&token).await?;
    tracing::info!(%user_id, "development sign-in");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "token": token,
            "user_id": user_id,
            "expires_at": exp,
        })))
}

/// A username-shaped version of a display name: lowercase letters, digits and dashes.
fn username_from(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "user".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_slugs_of_the_display_name() {
        assert_eq!(username_from("Ada Lovelace"), "ada-lovelace");
        assert_eq!(username_from("  --  "), "user");
        assert_eq!(username_from("Zoë!"), "zoë");
    }

    #[test]
    fn every_asset_is_embedded_once() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }
}
