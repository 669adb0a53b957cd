//! `GET /users/me`, `GET /users/{user_id}`.

use actix_web::{web, HttpResponse};

use crate::api_types::UserResponse;
use crate::auth::AuthUser;
use crate::db::users;
use crate::error::{ApiError, ApiResult};
use crate::extract::path_uuid;
use crate::state::AppState;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users/me").route(web::get().to(me)))
        .service(web::resource("/users/{user_id}").route(web::get().to(get_user)));
}

/// The caller's profile.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 401, description = "Not authenticated"),
        (status = 404, description = "User not found (deleted while the request ran)")))]
pub async fn me(state: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    let mut conn = state.db.conn().await?;
    let row = users::find(&mut conn, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    Ok(HttpResponse::Ok().json(UserResponse::from(row)))
}

/// A user the caller may see: themself, or someone who shares a chat with them. Another
/// user's profile has `email: null`: an address is shown to its owner only.
#[utoipa::path(get, path = "/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, body = UserResponse), (status = 404, description = "User not found")))]
pub async fn get_user(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_uuid("user_id", &path)?;
    let mut conn = state.db.conn().await?;
    if id != user.id && !users::share_a_chat(&mut conn, user.id, id).await? {
        return Err(ApiError::not_found("User not found"));
    }
    let row = users::find(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    let body = if id == user.id {
        UserResponse::from(row)
    } else {
        UserResponse::public(row)
    };
    Ok(HttpResponse::Ok().json(body))
}
