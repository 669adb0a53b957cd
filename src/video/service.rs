//! `VideoService`: every video operation REST and WebSocket share — uploads (direct and
//! signed), reading videos and jobs, editing metadata, cancelling — with ownership checks in
//! one place. Jobs themselves run under the `JobSupervisor`.

use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use uuid::Uuid;

use super::messages::{CancelJob, CancelOutcome, Enqueue, Shutdown};
use super::model::StageResults;
use super::responses::{
    metadata_response, SignedUploadResponse, UploadAccepted, VideoDetailResponse, VideoJobResponse,
    VideoJobWithDetailsResponse, VideoMetadataResponse, VideoResponse,
};
use super::supervisor::JobSupervisor;
use crate::broker::Broker;
use crate::broker::{Event, Topic};
use crate::config::Settings;
use crate::db::videos::{self, Descriptive, NewVideo, VideoJob as JobRow};
use crate::db::{Db, DbConn};
use crate::error::ApiError;
use crate::storage::{upload_extension, ObjectStore, StorageError, UrlMethod};

/// The jobs a `jobs` request and the default `GET /api/v1/jobs/` list.
pub const ACTIVE_STATUSES: [&str; 2] = [videos::STATUS_PENDING, videos::STATUS_PROCESSING];

/// Video operations of one node.
#[derive(Clone)]
pub struct VideoService {
    db: Db,
    storage: Arc<dyn ObjectStore>,
    settings: Arc<Settings>,
    broker: Arc<dyn Broker>,
    supervisor: Addr<JobSupervisor>,
    /// Uploads streaming now, per user.
    uploading: Arc<DashMap<Uuid, usize>>,
}

/// A slot among a user's concurrent uploads, given back on drop.
pub struct UploadPermit {
    user: Uuid,
    uploading: Arc<DashMap<Uuid, usize>>,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let empty = match self.uploading.get_mut(&self.user) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if empty {
            self.uploading.remove_if(&self.user, |_, n| *n == 0);
        }
    }
}

/// Checks a declared content type is a video's.
fn require_video(content_type: &str) -> Result<(), ApiError> {
    if content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("video/")
    {
        Ok(())
    } else {
        Err(ApiError::BadRequest("File must be a video".into()))
    }
}

fn storage_error(e: StorageError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e).context("object storage"))
}

impl VideoService {
    /// A service over the node's database and storage, with its supervisor.
    pub fn new(
        db: Db,
        storage: Arc<dyn ObjectStore>,
        settings: Arc<Settings>,
        broker: Arc<dyn Broker>,
        supervisor: Addr<JobSupervisor>,
    ) -> VideoService {
        VideoService {
            db,
            storage,
            settings,
            broker,
            supervisor,
            uploading: Arc::new(DashMap::new()),
        }
    }

    /// The object store.
    pub fn storage(&self) -> &Arc<dyn ObjectStore> {
        &self.storage
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Addr<JobSupervisor> {
        &self.supervisor
    }

    fn ttl(&self) -> std::time::Duration {
        self.settings.storage.signed_url_ttl
    }

    /// Takes one of the user's concurrent upload slots, or 429.
    pub fn reserve_upload(&self, user: Uuid) -> Result<UploadPermit, ApiError> {
        let mut n = self.uploading.entry(user).or_insert(0);
        if *n >= self.settings.video.uploads_per_user {
            return Err(ApiError::TooManyRequests(
                "Too many uploads in progress; wait for one to finish".into(),
            ));
        }
        *n += 1;
        Ok(UploadPermit {
            user,
            uploading: self.uploading.clone(),
        })
    }

    /// The most bytes the user may upload now: `MAX_UPLOAD_BYTES`, within their quota left.
    pub async fn upload_limit(&self, user: Uuid) -> Result<u64, ApiError> {
        let max = self.settings.storage.max_upload_bytes;
        let quota = self.settings.storage.user_quota_bytes;
        if quota == 0 {
            return Ok(max);
        }
        let mut conn = self.db.conn().await?;
        let used = videos::storage_used(&mut conn, user).await?.max(0) as u64;
        let left = quota.saturating_sub(used);
        if left == 0 {
            return Err(ApiError::PayloadTooLarge);
        }
        Ok(max.min(left))
    }

    /// The key a new upload of `user` is stored under: `uploads/{user_id}/{uuid}{ext}`.
    pub fn new_upload_key(user: Uuid, filename: Option<&str>, content_type: &str) -> String {
        format!(
            "uploads/{user}/{}{}",
            Uuid::new_v4(),
            upload_extension(filename, content_type)
        )
    }

    fn publish(&self, job: &JobRow) {
        let event = VideoJobResponse::from(job).to_event_json();
        self.broker
            .publish(Topic::User(job.user_id.0), Event::Job { job: event });
    }

    /// Records a stored upload as a video with a PENDING job, and queues the job.
    pub async fn register_upload(
        &self,
        user: Uuid,
        filename: Option<&str>,
        content_type: &str,
        key: &str,
        size: u64,
    ) -> Result<UploadAccepted, ApiError> {
        let original = filename
            .unwrap_or("video")
            .chars()
            .take(255)
            .collect::<String>();
        let mut conn = self.db.conn().await?;
        let (video, job) = videos::insert_video_with_job(
            &mut conn,
            &NewVideo {
                uploader: user,
                original_filename: &original,
                storage_path: key,
                content_type,
                size_bytes: size as i64,
                upload_completed: true,
            },
        )
        .await?;
        drop(conn);
        self.publish(&job);
        self.supervisor.do_send(Enqueue { job_id: job.id });
        Ok(UploadAccepted {
            video_id: video.id,
            job_id: job.id,
            status: job.status,
        })
    }

    /// Creates a video awaiting its file and a signed URL to PUT it to.
    pub async fn signed_upload(
        &self,
        user: Uuid,
        filename: &str,
        content_type: &str,
    ) -> Result<SignedUploadResponse, ApiError> {
        require_video(content_type)?;
        let mut conn = self.db.conn().await?;
        let since = crate::db::now()
            - chrono::Duration::from_std(self.ttl()).unwrap_or(chrono::Duration::hours(1));
        if videos::pending_uploads(&mut conn, user, since).await?
            >= self.settings.video.pending_uploads_per_user
        {
            return Err(ApiError::TooManyRequests(
                "Too many uploads awaiting completion".into(),
            ));
        }
        let key = Self::new_upload_key(user, Some(filename), content_type);
        let original = filename.chars().take(255).collect::<String>();
        let video = videos::insert_video(
            &mut conn,
            &NewVideo {
                uploader: user,
                original_filename: &original,
                storage_path: &key,
                content_type,
                size_bytes: 0,
                upload_completed: false,
            },
        )
        .await?;
        drop(conn);
        let upload_url = self
            .storage
            .signed_url(&key, UrlMethod::Put, self.ttl(), Some(content_type))
            .await
            .map_err(storage_error)?;
        Ok(SignedUploadResponse {
            upload_url,
            video_id: video.id,
            storage_path: key,
            expires_at: crate::db::now()
                + chrono::Duration::from_std(self.ttl()).unwrap_or(chrono::Duration::hours(1)),
        })
    }

    /// Confirms a signed upload: checks the object exists (and its size), then queues its job.
    pub async fn complete_upload(
        &self,
        user: Uuid,
        video_id: i32,
        original_filename: &str,
        content_type: &str,
        storage_path: Option<&str>,
    ) -> Result<UploadAccepted, ApiError> {
        let mut conn = self.db.conn().await?;
        let video = videos::find_video_for_user(&mut conn, video_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Video not found"))?;
        if video.upload_completed {
            return Err(ApiError::Conflict("Upload already completed".into()));
        }
        if storage_path.is_some_and(|p| p != video.storage_path) {
            return Err(ApiError::BadRequest(
                "storage_path does not match this upload".into(),
            ));
        }
        require_video(content_type)?;
        drop(conn);
        let size = self
            .storage
            .size(&video.storage_path)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found("Uploaded file not found"))?;
        if size > self.settings.storage.max_upload_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        let mut conn = self.db.conn().await?;
        let quota = self.settings.storage.user_quota_bytes;
        if quota > 0 {
            let used = videos::storage_used(&mut conn, user).await?.max(0) as u64;
            // The object's size may already be counted (local uploads record it on PUT).
            let used = used.saturating_sub(video.size_bytes.max(0) as u64);
            if used.saturating_add(size) > quota {
                return Err(ApiError::PayloadTooLarge);
            }
        }
        let original = original_filename.chars().take(255).collect::<String>();
        let (video, job) = videos::complete_upload(
            &mut conn,
            video.id,
            user,
            &original,
            content_type.trim(),
            size as i64,
        )
        .await?
        .ok_or_else(|| ApiError::Conflict("Upload already completed".into()))?;
        drop(conn);
        self.publish(&job);
        self.supervisor.do_send(Enqueue { job_id: job.id });
        Ok(UploadAccepted {
            video_id: video.id,
            job_id: job.id,
            status: job.status,
        })
    }

    async fn metadata(
        &self,
        conn: &mut DbConn,
        job: &JobRow,
    ) -> Result<Option<VideoMetadataResponse>, ApiError> {
        let probe = StageResults::from_json(job.stage_results.as_ref());
        Ok(match videos::find_metadata(conn, job.id).await? {
            Some(m) => {
                Some(metadata_response(self.storage.as_ref(), self.ttl(), m, Some(&probe)).await)
            }
            None => None,
        })
    }

    async fn details(
        &self,
        conn: &mut DbConn,
        job: &JobRow,
    ) -> Result<VideoJobWithDetailsResponse, ApiError> {
        let video = videos::find_video(conn, job.video_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Job not found"))?;
        Ok(VideoJobWithDetailsResponse {
            job: VideoJobResponse::from(job),
            video: VideoResponse::from(video),
            video_metadata: self.metadata(conn, job).await?,
        })
    }

    /// A video of the caller with its latest job and metadata.
    pub async fn video_detail(
        &self,
        user: Uuid,
        video_id: i32,
    ) -> Result<VideoDetailResponse, ApiError> {
        let mut conn = self.db.conn().await?;
        let video = videos::find_video_for_user(&mut conn, video_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Video not found"))?;
        let job = videos::latest_job_for_video(&mut conn, video.id).await?;
        let video_metadata = match &job {
            Some(j) => self.metadata(&mut conn, j).await?,
            None => None,
        };
        Ok(VideoDetailResponse {
            video: VideoResponse::from(video),
            latest_job: job.as_ref().map(VideoJobResponse::from),
            video_metadata,
        })
    }

    /// Sets title, description and tags of a video's latest metadata (the owner's edits win
    /// over what the job generates).
    pub async fn update_metadata(
        &self,
        user: Uuid,
        video_id: i32,
        changes: Descriptive,
    ) -> Result<VideoMetadataResponse, ApiError> {
        let mut conn = self.db.conn().await?;
        let video = videos::find_video_for_user(&mut conn, video_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Video not found"))?;
        let job = videos::latest_job_for_video(&mut conn, video.id)
            .await?
            .ok_or_else(|| ApiError::not_found("Video metadata not found"))?;
        let row = videos::update_descriptive(&mut conn, job.id, &changes)
            .await?
            .ok_or_else(|| ApiError::not_found("Video metadata not found"))?;
        let probe = StageResults::from_json(job.stage_results.as_ref());
        Ok(metadata_response(self.storage.as_ref(), self.ttl(), row, Some(&probe)).await)
    }

    /// A job with its video and metadata: 404 when there is none, 403 when it is another
    /// user's (as the legacy API answered).
    pub async fn job_detail(
        &self,
        user: Uuid,
        job_id: i32,
    ) -> Result<VideoJobWithDetailsResponse, ApiError> {
        let mut conn = self.db.conn().await?;
        let job = videos::find_job(&mut conn, job_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Job not found"))?;
        if job.user_id.0 != user {
            return Err(ApiError::forbidden("User not authorized to view this job"));
        }
        self.details(&mut conn, &job).await
    }

    /// The caller's jobs with one of `statuses` (all when `None`), newest first.
    pub async fn list_jobs(
        &self,
        user: Uuid,
        statuses: Option<&[String]>,
        skip: i64,
        limit: i64,
    ) -> Result<Vec<VideoJobWithDetailsResponse>, ApiError> {
        let mut conn = self.db.conn().await?;
        let jobs = videos::list_jobs_for_user(&mut conn, user, statuses, skip, limit).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in &jobs {
            out.push(self.details(&mut conn, job).await?);
        }
        Ok(out)
    }

    /// The caller's videos, newest first.
    pub async fn list_videos(
        &self,
        user: Uuid,
        skip: i64,
        limit: i64,
    ) -> Result<Vec<VideoResponse>, ApiError> {
        let mut conn = self.db.conn().await?;
        Ok(videos::list_videos_for_user(&mut conn, user, skip, limit)
            .await?
            .into_iter()
            .map(VideoResponse::from)
            .collect())
    }

    /// Cancels one of the caller's jobs: its actor stops (within a second) and cleans up; a
    /// job not running here is cancelled in the database (a node running it notices at its
    /// next write). 404 for another user's job, 409 when it already finished.
    pub async fn cancel(
        &self,
        user: Uuid,
        job_id: i32,
    ) -> Result<VideoJobWithDetailsResponse, ApiError> {
        let mut conn = self.db.conn().await?;
        let job = videos::find_job(&mut conn, job_id)
            .await?
            .filter(|j| j.user_id.0 == user)
            .ok_or_else(|| ApiError::not_found("Job not found"))?;
        if super::job::is_terminal(&job.status) {
            return Err(ApiError::Conflict("Job already finished".into()));
        }
        drop(conn);
        let outcome = self
            .supervisor
            .send(CancelJob { job_id })
            .await
            .unwrap_or(CancelOutcome::NotRunningHere);
        let mut conn = self.db.conn().await?;
        let row = match outcome {
            CancelOutcome::Cancelled(row) => *row,
            CancelOutcome::AlreadyFinished | CancelOutcome::NotRunningHere => {
                let row = videos::cancel_unfinished(&mut conn, job_id)
                    .await?
                    .ok_or_else(|| ApiError::Conflict("Job already finished".into()))?;
                self.publish(&row);
                row
            }
        };
        self.details(&mut conn, &row).await
    }

    /// The caller's pending and processing jobs, newest first, at most 100 (the WebSocket
    /// `jobs` request).
    pub async fn active_jobs(
        &self,
        user: Uuid,
    ) -> Result<Vec<VideoJobWithDetailsResponse>, ApiError> {
        let active: Vec<String> = ACTIVE_STATUSES.iter().map(|s| s.to_string()).collect();
        self.list_jobs(user, Some(&active), 0, 100).await
    }

    /// Stops starting jobs and releases the running ones for the next start (graceful
    /// shutdown).
    pub async fn shutdown(&self) {
        let _ = self.supervisor.send(Shutdown).await;
    }
}
