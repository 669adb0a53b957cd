//! Video uploads, videos, jobs and the test upload. Handlers parse and authorise; the
//! `VideoService` does the rest (the WebSocket `jobs` request shares it).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::db::videos::{Descriptive, ALL_STATUSES};
use crate::error::{ApiError, ApiResult, ValidationIssue};
use crate::extract::{
    body_text, check_text, lax_int, path_int, query_pairs, ApiJson, Page, Text, Validate,
};
use crate::state::AppState;
use crate::video::responses::{
    SignedUploadResponse, UploadAccepted, VideoDetailResponse, VideoJobWithDetailsResponse,
    VideoMetadataResponse, VideoResponse,
};
use crate::video::service::ACTIVE_STATUSES;
use crate::video::upload::{receive_file, Accept, MAX_OTHER_PARTS};
use crate::video::VideoService;

/// Longest file name or content type accepted.
const MAX_NAME_CHARS: usize = 255;
/// Longest title.
const MAX_TITLE_CHARS: usize = 255;
/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 5000;
/// Most tags on a video.
const MAX_TAGS: usize = 50;
/// Longest tag.
const MAX_TAG_CHARS: usize = 64;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per path, so that another method is 405 (with `Allow`), not 404. The literal
    // `/api/v1/videos/…` paths come before `/api/v1/videos/{video_id}`, which would match them.
    let routes = [
        ("/test/upload", web::post().to(test_upload)),
        ("/api/v1/videos/upload", web::post().to(upload_video)),
        (
            "/api/v1/videos/signed-upload-url",
            web::post().to(signed_upload_url),
        ),
        (
            "/api/v1/videos/upload-complete",
            web::post().to(upload_complete),
        ),
        ("/api/v1/videos/jobs/{job_id}", web::get().to(get_job)),
        ("/api/v1/videos/{video_id}", web::get().to(get_video)),
        (
            "/api/v1/videos/{video_id}/metadata",
            web::put().to(update_metadata),
        ),
        ("/api/v1/jobs/{job_id}/cancel", web::post().to(cancel_job)),
        ("/users/me/videos", web::get().to(my_videos)),
        ("/users/me/jobs", web::get().to(my_jobs)),
        ("/api/v1/jobs/", web::get().to(list_jobs)),
        ("/api/v1/jobs", web::get().to(list_jobs)),
    ];
    for (path, route) in routes {
        cfg.service(web::resource(path).route(route));
    }
    super::files::configure(cfg);
}

/// Body of `POST /api/v1/videos/signed-upload-url`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignedUploadRequest {
    /// The client's file name (metadata only); no control characters.
    #[schema(max_length = 255, pattern = r"^[^\x00-\x1F\x7F]*(?![\s\S])")]
    pub filename: String,
    /// A `video/*` content type; the PUT must send the same.
    #[schema(
        max_length = 255,
        pattern = r"^[Vv][Ii][Dd][Ee][Oo]/[^\x00-\x1F\x7F]*(?![\s\S])"
    )]
    pub content_type: String,
}

impl Validate for SignedUploadRequest {
    fn validate(&self) -> Vec<ValidationIssue> {
        body_text(&[
            ("filename", Some(&self.filename), MAX_NAME_CHARS, Text::Line),
            (
                "content_type",
                Some(&self.content_type),
                MAX_NAME_CHARS,
                Text::Line,
            ),
        ])
    }
}

/// Body of `POST /api/v1/videos/upload-complete`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UploadCompleteRequest {
    /// The video `signed-upload-url` created.
    #[serde(deserialize_with = "lax_int")]
    pub video_id: i32,
    /// The client's file name; no control characters.
    #[schema(max_length = 255, pattern = r"^[^\x00-\x1F\x7F]*(?![\s\S])")]
    pub original_filename: String,
    /// A `video/*` content type.
    #[schema(
        max_length = 255,
        pattern = r"^[Vv][Ii][Dd][Ee][Oo]/[^\x00-\x1F\x7F]*(?![\s\S])"
    )]
    pub content_type: String,
    /// The size the client sent (the stored object's own size is what is recorded).
    #[serde(deserialize_with = "lax_int")]
    #[schema(minimum = 0)]
    pub size_bytes: i64,
    /// The object key `signed-upload-url` returned; must match when given.
    #[serde(default)]
    #[schema(pattern = r"^[^\x00-\x1F\x7F]*(?![\s\S])")]
    pub storage_path: Option<String>,
}

impl Validate for UploadCompleteRequest {
    fn validate(&self) -> Vec<ValidationIssue> {
        let mut issues = body_text(&[
            (
                "original_filename",
                Some(&self.original_filename),
                MAX_NAME_CHARS,
                Text::Line,
            ),
            (
                "content_type",
                Some(&self.content_type),
                MAX_NAME_CHARS,
                Text::Line,
            ),
            (
                "storage_path",
                self.storage_path.as_deref(),
                usize::MAX,
                Text::Line,
            ),
        ]);
        if self.size_bytes < 0 {
            issues.push(ValidationIssue::new(
                vec![json!("body"), json!("size_bytes")],
                "greater_than_equal",
                "Input should be greater than or equal to 0",
            ));
        }
        issues
    }
}

/// Body of `PUT /api/v1/videos/{id}/metadata`; other fields are refused (422).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataUpdate {
    /// New title: at most 255 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 255, pattern = r"^[^\x00-\x1F\x7F]*(?![\s\S])")]
    pub title: Option<String>,
    /// New description: at most 5000 characters, no control characters but tab, line feed and
    /// carriage return.
    #[serde(default)]
    #[schema(
        max_length = 5000,
        pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*(?![\s\S])"
    )]
    pub description: Option<String>,
    /// New tags (replacing the old ones): at most 50, each at most 64 characters without
    /// control characters.
    #[serde(default)]
    #[schema(schema_with = tags_schema)]
    pub tags: Option<Vec<String>>,
}

impl Validate for MetadataUpdate {
    fn validate(&self) -> Vec<ValidationIssue> {
        let mut issues = body_text(&[
            ("title", self.title.as_deref(), MAX_TITLE_CHARS, Text::Line),
            (
                "description",
                self.description.as_deref(),
                MAX_DESCRIPTION_CHARS,
                Text::Free,
            ),
        ]);
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                issues.push(ValidationIssue::new(
                    vec![json!("body"), json!("tags")],
                    "too_long",
                    format!("List should have at most {MAX_TAGS} items"),
                ));
            }
            for (i, tag) in tags.iter().enumerate() {
                let loc = [json!("body"), json!("tags"), json!(i)];
                check_text(&mut issues, &loc, Some(tag), MAX_TAG_CHARS, Text::Line);
            }
        }
        issues
    }
}

/// The multipart form of the upload routes (documentation only: the body is streamed): the
/// `file` part, and at most [`MAX_OTHER_PARTS`] others, which are skipped.
pub struct UploadForm;

/// What a part name can be: header text (no control character but tab; line breaks and `"`
/// arrive percent-encoded, as browsers send them) whose backslashes each escape a character
/// (a final lone `\` would escape the closing quote).
pub const PART_NAME_PATTERN: &str =
    r"^(?:[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F\\]|\\[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F])*(?![\s\S])";

impl utoipa::PartialSchema for UploadForm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, KnownFormat, ObjectBuilder, SchemaFormat, Type,
        };
        ObjectBuilder::new()
            .property(
                "file",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                    .description(Some("The file.")),
            )
            .required("file")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(PART_NAME_PATTERN)),
            ))
            .max_properties(Some(MAX_OTHER_PARTS + 1))
            .description(Some(
                "The `file` part; other parts (at most 16, 64 KiB each) are skipped.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for UploadForm {}

/// A job status, as the `status` query parameter takes it (documentation only).
#[derive(ToSchema)]
#[schema(rename_all = "UPPERCASE")]
#[allow(dead_code)]
pub enum JobStatusParam {
    /// Waiting for a worker.
    Pending,
    /// Being processed.
    Processing,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// The JSON Schema `pattern` of the signed-upload bodies' `content_type` (annotations need the
/// literal; a test checks they agree): `video/…` in any case, without control characters.
pub const VIDEO_TYPE_PATTERN: &str = r"^[Vv][Ii][Dd][Ee][Oo]/[^\x00-\x1F\x7F]*(?![\s\S])";

/// The schema of `MetadataUpdate.tags`: item constraints have no field attribute.
fn tags_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .max_items(Some(MAX_TAGS))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_TAG_CHARS))
                .pattern(Some(crate::extract::LINE_PATTERN)),
        )
        .description(Some(
            "New tags (replacing the old ones): at most 50, each at most 64 characters without \
             control characters.",
        ))
        .build()
}

/// Stores a file (any type) to check that uploads work; each user keeps only their latest.
#[utoipa::path(post, path = "/test/upload", tag = "videos", security(("bearer" = [])),
    request_body(content = inline(UploadForm), content_type = "multipart/form-data", description = "Field `file`"),
    responses((status = 200, description = "Stored"), (status = 400, description = "Missing filename"),
        (status = 413, description = "Over MAX_UPLOAD_BYTES"), (status = 422, description = "No `file` field")))]
pub async fn test_upload(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let _permit = state.videos.reserve_upload(user.id)?;
    let key = format!("test-uploads/{}/upload", user.id);
    let limit = state.settings.storage.max_upload_bytes;
    let got = receive_file(
        req.headers(),
        body,
        state.videos.storage().as_ref(),
        Accept::AnyNamedFile,
        limit,
        |_, _| key.clone(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "message": "File uploaded successfully",
        "filename": got.filename,
        "content_type": got.content_type,
        "size": got.size,
        "saved_path": got.key,
    })))
}

/// Uploads a video (multipart field `file`, streamed to storage) and queues its processing.
#[utoipa::path(post, path = "/api/v1/videos/upload", tag = "videos", security(("bearer" = [])),
    request_body(content = inline(UploadForm), content_type = "multipart/form-data", description = "Field `file`, a `video/*` part"),
    responses((status = 200, body = UploadAccepted), (status = 400, description = "File must be a video"),
        (status = 413, description = "Over MAX_UPLOAD_BYTES or the storage quota"),
        (status = 422, description = "No `file` field"), (status = 429, description = "Too many uploads at once")))]
pub async fn upload_video(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let _permit = state.videos.reserve_upload(user.id)?;
    let limit = state.videos.upload_limit(user.id).await?;
    let got = receive_file(
        req.headers(),
        body,
        state.videos.storage().as_ref(),
        Accept::VideoOnly,
        limit,
        |name, ct| VideoService::new_upload_key(user.id, name, ct),
    )
    .await?;
    let accepted = state
        .videos
        .register_upload(
            user.id,
            got.filename.as_deref(),
            &got.content_type,
            &got.key,
            got.size,
        )
        .await?;
    Ok(HttpResponse::Ok().json(accepted))
}

/// A signed, expiring URL to PUT a video to directly (GCS V4, or this server's `/files/…`).
#[utoipa::path(post, path = "/api/v1/videos/signed-upload-url", tag = "videos", security(("bearer" = [])),
    request_body = SignedUploadRequest,
    responses((status = 200, body = SignedUploadResponse), (status = 400, description = "File must be a video"),
        (status = 429, description = "Too many uploads awaiting completion")))]
pub async fn signed_upload_url(
    state: web::Data<AppState>,
    user: AuthUser,
    body: ApiJson<SignedUploadRequest>,
) -> ApiResult<HttpResponse> {
    let out = state
        .videos
        .signed_upload(user.id, &body.0.filename, &body.0.content_type)
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// Confirms a signed upload after checking the object exists, and queues its processing.
#[utoipa::path(post, path = "/api/v1/videos/upload-complete", tag = "videos", security(("bearer" = [])),
    request_body = UploadCompleteRequest,
    responses((status = 200, body = UploadAccepted), (status = 404, description = "Video or uploaded file not found"),
        (status = 409, description = "Already completed")))]
pub async fn upload_complete(
    state: web::Data<AppState>,
    user: AuthUser,
    body: ApiJson<UploadCompleteRequest>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    let out = state
        .videos
        .complete_upload(
            user.id,
            b.video_id,
            &b.original_filename,
            &b.content_type,
            b.storage_path.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// A video of the caller with its latest job and metadata.
#[utoipa::path(get, path = "/api/v1/videos/{video_id}", tag = "videos", security(("bearer" = [])),
    params(("video_id" = i32, Path)),
    responses((status = 200, body = VideoDetailResponse), (status = 404, description = "Video not found")))]
pub async fn get_video(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_int("video_id", &path)?;
    Ok(HttpResponse::Ok().json(state.videos.video_detail(user.id, id).await?))
}

/// Sets a video's title, description or tags.
#[utoipa::path(put, path = "/api/v1/videos/{video_id}/metadata", tag = "videos", security(("bearer" = [])),
    params(("video_id" = i32, Path)), request_body = MetadataUpdate,
    responses((status = 200, body = VideoMetadataResponse), (status = 404, description = "Video not found"),
        (status = 422, description = "Invalid body or an extra field")))]
pub async fn update_metadata(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: ApiJson<MetadataUpdate>,
) -> ApiResult<HttpResponse> {
    let id = path_int("video_id", &path)?;
    let b = body.0;
    let changes = Descriptive {
        title: b.title,
        description: b.description,
        tags: b.tags,
        show_notes: None,
    };
    Ok(HttpResponse::Ok().json(state.videos.update_metadata(user.id, id, changes).await?))
}

/// A job with its video and metadata (403 for another user's job, as the legacy API did).
#[utoipa::path(get, path = "/api/v1/videos/jobs/{job_id}", tag = "videos", security(("bearer" = [])),
    params(("job_id" = i32, Path)),
    responses((status = 200, body = VideoJobWithDetailsResponse), (status = 403, description = "User not authorized to view this job"),
        (status = 404, description = "Job not found")))]
pub async fn get_job(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_int("job_id", &path)?;
    Ok(HttpResponse::Ok().json(state.videos.job_detail(user.id, id).await?))
}

/// The repeated `status` query parameter, validated; `None` when absent.
fn statuses(pairs: &[(String, String)]) -> Result<Option<Vec<String>>, ApiError> {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (i, (_, v)) in pairs.iter().filter(|(k, _)| k == "status").enumerate() {
        let v = v.trim();
        if ALL_STATUSES.contains(&v) {
            if !out.iter().any(|s| s == v) {
                out.push(v.to_string());
            }
        } else {
            issues.push(ValidationIssue::new(
                vec![json!("query"), json!("status"), json!(i)],
                "enum",
                "Input should be 'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED' or 'CANCELLED'",
            ));
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The caller's jobs with the given statuses (default PENDING and PROCESSING), newest first.
#[utoipa::path(get, path = "/api/v1/jobs/", tag = "videos", security(("bearer" = [])),
    params(("status" = inline(Option<Vec<JobStatusParam>>), Query, explode = true, description = "Repeatable: PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED"),
        ("skip" = Option<i64>, Query, minimum = 0), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, body = [VideoJobWithDetailsResponse]), (status = 422, description = "Unknown status")))]
pub async fn list_jobs(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let pairs = query_pairs(&req);
    let page = Page::from_query(&pairs, 100)?;
    let wanted = statuses(&pairs)?
        .unwrap_or_else(|| ACTIVE_STATUSES.iter().map(|s| s.to_string()).collect());
    let jobs = state
        .videos
        .list_jobs(user.id, Some(&wanted), page.skip, page.limit)
        .await?;
    Ok(HttpResponse::Ok().json(jobs))
}

/// Cancels one of the caller's jobs; its actor stops and cleans up.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "videos", security(("bearer" = [])),
    params(("job_id" = i32, Path)),
    responses((status = 200, body = VideoJobWithDetailsResponse), (status = 404, description = "Job not found"),
        (status = 409, description = "Job already finished")))]
pub async fn cancel_job(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_int("job_id", &path)?;
    Ok(HttpResponse::Ok().json(state.videos.cancel(user.id, id).await?))
}

/// The caller's videos, newest first.
#[utoipa::path(get, path = "/users/me/videos", tag = "videos", security(("bearer" = [])),
    params(("skip" = Option<i64>, Query, minimum = 0), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, body = [VideoResponse])))]
pub async fn my_videos(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_query(&query_pairs(&req), 100)?;
    Ok(HttpResponse::Ok().json(
        state
            .videos
            .list_videos(user.id, page.skip, page.limit)
            .await?,
    ))
}

/// The caller's jobs (every status, or those given), newest first.
#[utoipa::path(get, path = "/users/me/jobs", tag = "videos", security(("bearer" = [])),
    params(("status" = inline(Option<Vec<JobStatusParam>>), Query, explode = true, description = "Repeatable: PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED"),
        ("skip" = Option<i64>, Query, minimum = 0), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, body = [VideoJobWithDetailsResponse])))]
pub async fn my_jobs(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let pairs = query_pairs(&req);
    let page = Page::from_query(&pairs, 100)?;
    let wanted = statuses(&pairs)?;
    Ok(HttpResponse::Ok().json(
        state
            .videos
            .list_jobs(user.id, wanted.as_deref(), page.skip, page.limit)
            .await?,
    ))
}
