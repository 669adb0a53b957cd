//! Receiving a multipart upload: the `file` part is streamed to storage as it arrives (a
//! bounded channel between the request and the store, never the whole file in memory), cut off
//! at the size limit. Other parts are skipped, within small bounds.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_multipart::{Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::{control_character_issue, Text};
use crate::storage::{ObjectStore, StorageError};

/// Request bytes read after a refused upload, so the client sees the answer instead of a reset
/// connection; a larger remainder is cut off.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes of multipart framing (boundaries, part headers, small fields) allowed beyond the file.
const MULTIPART_SLACK: u64 = 1024 * 1024;
/// Parts other than `file` read at most.
pub const MAX_OTHER_PARTS: usize = 16;
/// Bytes of one part other than `file` read at most.
const MAX_OTHER_PART_BYTES: u64 = 64 * 1024;
/// Chunks buffered between the request and the store.
const CHANNEL_CHUNKS: usize = 8;

/// What a file part must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Anything with a file name (else 400 `Missing filename`).
    AnyNamedFile,
    /// A `video/*` content type (else 400 `File must be a video`).
    VideoOnly,
}

/// A file stored from a multipart upload.
#[derive(Debug, Clone)]
pub struct Received {
    /// The client's file name, if it sent one.
    pub filename: Option<String>,
    /// The part's content type.
    pub content_type: String,
    /// Where it was stored.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
}

/// The request body with a running count of the bytes read.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S> Stream for Counted<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            self.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        poll
    }
}

/// A 422 for a missing `file` part, as FastAPI words it.
pub fn missing_file() -> ApiError {
    ApiError::invalid(
        vec![json!("body"), json!("file")],
        "missing",
        "Field required",
    )
}

/// 413 without reading the body when `Content-Length` already says it is too large.
pub fn check_declared_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit.saturating_add(MULTIPART_SLACK) => Err(ApiError::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Reads what is left of the request, up to [`DRAIN_BYTES`] more.
async fn drain(multipart: &mut Multipart, read: &AtomicU64) {
    let stop_at = read.load(Ordering::Relaxed).saturating_add(DRAIN_BYTES);
    while let Some(Ok(mut field)) = multipart.next().await {
        while let Some(Ok(_)) = field.next().await {
            if read.load(Ordering::Relaxed) > stop_at {
                return;
            }
        }
        if read.load(Ordering::Relaxed) > stop_at {
            return;
        }
    }
}

/// Skips a part that is not the file, within bounds.
async fn skip_part(field: &mut actix_multipart::Field) -> Result<(), ApiError> {
    let mut n = 0u64;
    while let Some(chunk) = field.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("bad multipart body: {e}").into()))?;
        n += chunk.len() as u64;
        if n > MAX_OTHER_PART_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
    }
    Ok(())
}

/// Reads the parts after the file: at most [`MAX_OTHER_PARTS`] others in all, each skipped
/// within bounds; a malformed one is an error.
async fn skip_rest(multipart: &mut Multipart, mut others: usize) -> Result<(), ApiError> {
    while let Some(field) = multipart.next().await {
        let mut field =
            field.map_err(|e| ApiError::BadRequest(format!("bad multipart body: {e}").into()))?;
        others += 1;
        if others > MAX_OTHER_PARTS {
            return Err(ApiError::BadRequest("too many form fields".into()));
        }
        skip_part(&mut field).await?;
    }
    Ok(())
}

fn multipart_error(e: MultipartError) -> ApiError {
    match e {
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible
        | MultipartError::BoundaryMissing => missing_file(),
        other => ApiError::BadRequest(format!("bad multipart body: {other}").into()),
    }
}

/// Streams the `file` part of a multipart request into `storage` under the key `key_for`
/// returns (given the client's file name and the part's content type), at most `limit` bytes.
pub async fn receive_file<S>(
    headers: &HeaderMap,
    body: S,
    storage: &dyn ObjectStore,
    accept: Accept,
    limit: u64,
    key_for: impl FnOnce(Option<&str>, &str) -> String,
) -> Result<Received, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
{
    check_declared_length(headers, limit)?;
    let read = Arc::new(AtomicU64::new(0));
    let mut multipart = Multipart::new(
        headers,
        Counted {
            inner: body,
            read: read.clone(),
        },
    );
    let mut others = 0usize;
    let mut key_for = Some(key_for);
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(multipart_error)?;
        if field.name() != Some("file") {
            others += 1;
            if others > MAX_OTHER_PARTS {
                return Err(ApiError::BadRequest("too many form fields".into()));
            }
            skip_part(&mut field).await?;
            continue;
        }
        let (filename, content_type) = describe(&field);
        if let Some(refused) = refusal(accept, filename.as_deref(), &content_type) {
            drop(field);
            drain(&mut multipart, &read).await;
            return Err(refused);
        }
        let Some(make_key) = key_for.take() else {
            return Err(ApiError::BadRequest("more than one file part".into()));
        };
        let key = make_key(filename.as_deref(), &content_type);
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
        let store = storage.put_stream(&key, &content_type, rx, limit);
        let pump = pump(field, tx, &mut multipart, others);
        let (stored, pumped) = futures_util::join!(store, pump);
        pumped?;
        let size = match stored {
            Err(StorageError::TooLarge { .. }) => {
                drain(&mut multipart, &read).await;
                return Err(ApiError::PayloadTooLarge);
            }
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
            Ok(size) => size,
        };
        drain(&mut multipart, &read).await;
        return Ok(Received {
            filename,
            content_type,
            key,
            size,
        });
    }
    Err(missing_file())
}

/// A file part's filename (if it has a non-empty one) and media type (lowercased essence;
/// `application/octet-stream` when the part says none).
fn describe(field: &actix_multipart::Field) -> (Option<String>, String) {
    let filename = field
        .content_disposition()
        .and_then(|cd| cd.get_filename())
        .map(str::to_string)
        .filter(|f| !f.is_empty());
    let content_type = field
        .content_type()
        .map(|m| m.essence_str().to_ascii_lowercase())
        .unwrap_or_else(|| "application/octet-stream".into());
    (filename, content_type)
}

/// Why a file part is refused before a byte of it is stored, if it is.
fn refusal(accept: Accept, filename: Option<&str>, content_type: &str) -> Option<ApiError> {
    let issues: Vec<_> = [("filename", filename), ("content_type", Some(content_type))]
        .into_iter()
        .filter_map(|(name, value)| {
            let loc = vec![json!("body"), json!("file"), json!(name)];
            control_character_issue(loc, value?, Text::Line)
        })
        .collect();
    if !issues.is_empty() {
        return Some(ApiError::Validation(issues));
    }
    if accept == Accept::AnyNamedFile && filename.is_none() {
        return Some(ApiError::BadRequest("Missing filename".into()));
    }
    if accept == Accept::VideoOnly && !content_type.starts_with("video/") {
        return Some(ApiError::BadRequest("File must be a video".into()));
    }
    None
}

/// Feeds the file part into the store's channel, then checks the rest of the form.
async fn pump(
    mut field: actix_multipart::Field,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    rest: &mut Multipart,
    others: usize,
) -> Result<(), ApiError> {
    while let Some(chunk) = field.next().await {
        let item = chunk.map_err(|e| io::Error::other(e.to_string()));
        let broken = item.is_err();
        // The store dropped its end: it refused the upload (too large).
        if tx.send(item).await.is_err() || broken {
            return Ok(());
        }
    }
    drop(field);
    // The rest of the form must be well-formed too, as FastAPI parses the whole form before
    // the handler runs: a bad part fails the upload before the store commits it (an error item
    // makes it discard what it received).
    let checked = skip_rest(rest, others).await;
    if let Err(e) = &checked {
        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
    }
    checked
}
