//! `GET|PUT /files/{key}?expires=…&sig=…`: the local-disk backend's signed URLs. The HMAC
//! signature (over method, key and expiry) is the only credential, as with GCS signed URLs; an
//! expired, altered or other-method URL gets 403. A PUT stores one upload created by
//! `POST /api/v1/videos/signed-upload-url`, once. With GCS storage these routes answer 404.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::db::videos;
use crate::error::{ApiError, ApiResult};
use crate::extract::query_pairs;
use crate::state::AppState;
use crate::storage::local::LocalStore;
use crate::storage::{content_type_for, StorageError, UrlMethod};
use crate::video::upload::check_declared_length;

/// Bytes read from disk per response chunk.
const READ_CHUNK: usize = 64 * 1024;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/files/{key:.+}")
            .route(web::get().to(get_file))
            .route(web::put().to(put_file)),
    );
}

/// The local store and the key, once the URL's signature for `method` checks out.
fn authorised<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    key: &str,
    method: UrlMethod,
) -> Result<&'a LocalStore, ApiError> {
    let store = state
        .videos
        .storage()
        .as_local()
        .ok_or_else(|| ApiError::not_found("Not Found"))?;
    let pairs = query_pairs(req);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expires = get("expires").and_then(|v| v.parse::<i64>().ok());
    let sig = get("sig");
    match (expires, sig) {
        (Some(expires), Some(sig)) if store.verify(method, key, expires, sig) => Ok(store),
        _ => Err(ApiError::forbidden("Invalid or expired signature")),
    }
}

/// Downloads an object through a signed URL.
#[utoipa::path(get, path = "/files/{key}", tag = "files",
    params(("key" = String, Path), ("expires" = i64, Query), ("sig" = String, Query)),
    responses((status = 200, description = "The file"), (status = 403, description = "Invalid or expired signature"),
        (status = 404, description = "No such file")))]
pub async fn get_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let key = path.into_inner();
    let store = authorised(&state, &req, &key, UrlMethod::Get)?;
    let file_path = store
        .path_of(&key)
        .map_err(|_| ApiError::not_found("Not Found"))?;
    let file = match tokio::fs::File::open(&file_path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("Not Found"))
        }
        Err(e) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(e).context("opening a file"),
            ))
        }
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("reading a file")))?
        .len();
    let body = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type_for(&key))
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .no_chunking(len)
        .streaming(body))
}

/// Uploads the file of a signed upload (once), streamed to disk with the upload size limit.
#[utoipa::path(put, path = "/files/{key}", tag = "files",
    params(("key" = String, Path), ("expires" = i64, Query), ("sig" = String, Query)),
    request_body(content_type = "application/octet-stream", description = "The file"),
    responses((status = 200, description = "Stored"), (status = 403, description = "Invalid or expired signature"),
        (status = 404, description = "No upload awaits this file"), (status = 409, description = "Already uploaded"),
        (status = 413, description = "Over MAX_UPLOAD_BYTES"), (status = 503, description = "The database is unavailable")))]
pub async fn put_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    mut body: web::Payload,
) -> ApiResult<HttpResponse> {
    let key = path.into_inner();
    let store = authorised(&state, &req, &key, UrlMethod::Put)?;
    let limit = state.settings.storage.max_upload_bytes;
    check_declared_length(req.headers(), limit)?;
    let video = {
        let mut conn = state.db.conn().await?;
        videos::find_video_by_path(&mut conn, &key)
            .await?
            .ok_or_else(|| ApiError::not_found("No upload awaits this file"))?
    };
    if video.upload_completed {
        return Err(ApiError::Conflict("Upload already completed".into()));
    }
    let storage = state.videos.storage();
    if storage.size(&key).await.ok().flatten().is_some() {
        return Err(ApiError::Conflict("File already uploaded".into()));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let stored = storage.put_stream(&key, &content_type, rx, limit);
    let pump = async move {
        while let Some(chunk) = body.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let broken = item.is_err();
            if tx.send(item).await.is_err() || broken {
                break;
            }
        }
    };
    let (stored, ()) = futures_util::join!(stored, pump);
    let size = match stored {
        Ok(n) => n,
        Err(StorageError::TooLarge { .. }) => return Err(ApiError::PayloadTooLarge),
        Err(StorageError::Interrupted(why)) => {
            return Err(ApiError::BadRequest(
                format!("the upload was interrupted: {why}").into(),
            ))
        }
        Err(e) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(e).context("storing an upload"),
            ))
        }
    };
    let _ = store;
    let mut conn = state.db.conn().await?;
    videos::set_uploaded_size(&mut conn, video.id, size as i64).await?;
    Ok(HttpResponse::Ok().json(json!({"key": key, "size": size})))
}
