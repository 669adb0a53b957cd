//! The video shapes of docs/API.md, shared by REST responses, the WebSocket `jobs` reply and `job`
//! events. URLs in them are signed when the response is built, never stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::StageResults;
use crate::api_types::rfc3339;
use crate::db::videos::{Video, VideoJob, VideoMetadata};
use crate::storage::{ObjectStore, UrlMethod};

/// `VideoResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoResponse {
    /// Video id.
    pub id: i32,
    /// Who uploaded it.
    pub uploader_user_id: Uuid,
    /// The client's file name.
    pub original_filename: String,
    /// The object key in storage (not a file path).
    pub storage_path: String,
    /// The upload's content type.
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<Video> for VideoResponse {
    fn from(v: Video) -> Self {
        VideoResponse {
            id: v.id,
            uploader_user_id: v.uploader_user_id.0,
            original_filename: v.original_filename,
            storage_path: v.storage_path,
            content_type: v.content_type,
            size_bytes: v.size_bytes,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// A job without its video and metadata: the payload of `job` events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoJobResponse {
    /// Job id.
    pub id: i32,
    /// The video.
    pub video_id: i32,
    /// `PENDING`, `PROCESSING`, `COMPLETED`, `FAILED` or `CANCELLED`.
    pub status: String,
    /// 0..=100.
    pub progress: i32,
    /// The stage running (or where it stopped); null when none.
    pub stage: Option<String>,
    /// `{<stage>: {status, progress, started_at?, finished_at?, error?}}`.
    #[schema(value_type = Option<Object>)]
    pub processing_stages: Option<serde_json::Value>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&VideoJob> for VideoJobResponse {
    fn from(j: &VideoJob) -> Self {
        VideoJobResponse {
            id: j.id,
            video_id: j.video_id,
            status: j.status.clone(),
            progress: j.progress.clamp(0, 100),
            stage: j.stage.clone(),
            processing_stages: j.processing_stages.clone(),
            error_message: j.error_message.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

impl VideoJobResponse {
    /// The JSON of a `job` event.
    pub fn to_event_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `VideoMetadataResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoMetadataResponse {
    /// Row id.
    pub id: i32,
    /// The job that produced it.
    pub job_id: i32,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// The whole transcript.
    pub transcript_text: Option<String>,
    /// Signed URL of the transcript JSON (segments with start/end times).
    pub transcript_file_url: Option<String>,
    /// Signed URLs of the subtitles: `{"vtt": url, "srt": url}`.
    pub subtitle_files_urls: Option<BTreeMap<String, String>>,
    /// Signed URL of the thumbnail JPEG.
    pub thumbnail_file_url: Option<String>,
    /// Duration in seconds.
    pub extracted_video_duration_seconds: Option<f64>,
    /// `1920x1080`.
    pub extracted_video_resolution: Option<String>,
    /// Container format.
    pub extracted_video_format: Option<String>,
    /// **new**: video codec.
    pub extracted_video_codec: Option<String>,
    /// **new**: audio codec, when there is an audio track.
    pub extracted_audio_codec: Option<String>,
    /// **new**: overall bit rate, bits per second.
    pub extracted_bit_rate: Option<i64>,
    /// Show notes.
    pub show_notes_text: Option<String>,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// `VideoJobWithDetailsResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoJobWithDetailsResponse {
    /// The job.
    #[serde(flatten)]
    pub job: VideoJobResponse,
    /// Its video.
    pub video: VideoResponse,
    /// What it extracted and generated so far.
    pub video_metadata: Option<VideoMetadataResponse>,
}

/// `GET /api/v1/videos/{id}`: the video with its latest job and that job's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoDetailResponse {
    /// The video.
    #[serde(flatten)]
    pub video: VideoResponse,
    /// Its newest job.
    pub latest_job: Option<VideoJobResponse>,
    /// The newest job's metadata.
    pub video_metadata: Option<VideoMetadataResponse>,
}

/// `{"video_id", "job_id", "status": "PENDING"}`: an upload accepted for processing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadAccepted {
    /// The new video.
    pub video_id: i32,
    /// Its job.
    pub job_id: i32,
    /// `PENDING`.
    pub status: String,
}

/// `{"upload_url", "video_id"}`: where to PUT the file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignedUploadResponse {
    /// A signed, expiring URL accepting one PUT of the file.
    pub upload_url: String,
    /// The video it will be.
    pub video_id: i32,
    /// **new**: the object key (pass it back to `upload-complete`).
    pub storage_path: String,
    /// **new**: when the URL stops working.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

/// Signs `key` for download, or `None` (logged) when signing fails.
async fn signed(
    storage: &dyn ObjectStore,
    key: Option<&str>,
    ttl: std::time::Duration,
) -> Option<String> {
    let key = key?;
    match storage.signed_url(key, UrlMethod::Get, ttl, None).await {
        Ok(url) => Some(url),
        Err(e) => {
            tracing::warn!(error = %e, key, "could not sign an artifact URL");
            None
        }
    }
}

/// Builds the metadata response, signing its URLs for `ttl`; `probe` (the job's stage results)
/// adds the codecs and bit rate.
pub async fn metadata_response(
    storage: &dyn ObjectStore,
    ttl: std::time::Duration,
    m: VideoMetadata,
    probe: Option<&StageResults>,
) -> VideoMetadataResponse {
    let subtitles = match m.subtitle_paths.as_ref().and_then(|v| v.as_object()) {
        Some(paths) => {
            let mut urls = BTreeMap::new();
            for (kind, key) in paths {
                if let Some(url) = signed(storage, key.as_str(), ttl).await {
                    urls.insert(kind.clone(), url);
                }
            }
            Some(urls)
        }
        None => None,
    };
    VideoMetadataResponse {
        id: m.id,
        job_id: m.job_id,
        title: m.title,
        description: m.description,
        tags: m.tags.map(|t| t.0),
        transcript_text: m.transcript_text,
        transcript_file_url: signed(storage, m.transcript_path.as_deref(), ttl).await,
        subtitle_files_urls: subtitles,
        thumbnail_file_url: signed(storage, m.thumbnail_path.as_deref(), ttl).await,
        extracted_video_duration_seconds: m.extracted_video_duration_seconds,
        extracted_video_resolution: m.extracted_video_resolution,
        extracted_video_format: m.extracted_video_format,
        extracted_video_codec: probe.and_then(|p| p.video_codec.clone()),
        extracted_audio_codec: probe.and_then(|p| p.audio_codec.clone()),
        extracted_bit_rate: probe.and_then(|p| p.bit_rate),
        show_notes_text: m.show_notes_text,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}
