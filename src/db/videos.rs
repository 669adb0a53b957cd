//! Queries on `videos`, `video_jobs` and `video_metadata`.
//!
//! A job is claimed by one node at a time through a lease (`lease_owner`, `lease_expires_at`):
//! every write of the running job is conditional on still holding it, so a job cancelled
//! elsewhere, or taken over after this node stalled, is never written back by a stale actor.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::sql_types::{DbStrings, DbUuid};
use super::{now, run, DbConn};

/// Job status: waiting for a worker.
pub const STATUS_PENDING: &str = "PENDING";
/// Job status: a node is running it.
pub const STATUS_PROCESSING: &str = "PROCESSING";
/// Job status: finished with every artifact stored.
pub const STATUS_COMPLETED: &str = "COMPLETED";
/// Job status: stopped by an error (`error_message` says which).
pub const STATUS_FAILED: &str = "FAILED";
/// Job status: stopped by its owner.
pub const STATUS_CANCELLED: &str = "CANCELLED";
/// Every job status, in the order the API lists them.
pub const ALL_STATUSES: [&str; 5] = [
    STATUS_PENDING,
    STATUS_PROCESSING,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_CANCELLED,
];

/// A `videos` row.
#[derive(Debug, Clone, Queryable)]
pub struct Video {
    /// Video id.
    pub id: i32,
    /// Who uploaded it.
    pub uploader_user_id: DbUuid,
    /// The client's file name (metadata only; never part of a path).
    pub original_filename: String,
    /// Object key in storage: `uploads/{user_id}/{uuid}{ext}`.
    pub storage_path: String,
    /// The upload's content type.
    pub content_type: String,
    /// Size of the stored object.
    pub size_bytes: i64,
    /// False while a signed upload has not been confirmed by `upload-complete`.
    pub upload_completed: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A `video_jobs` row.
#[derive(Debug, Clone, Queryable)]
pub struct VideoJob {
    /// Job id.
    pub id: i32,
    /// The video it processes.
    pub video_id: i32,
    /// The video's owner.
    pub user_id: DbUuid,
    /// One of [`ALL_STATUSES`].
    pub status: String,
    /// Overall progress, 0..=100.
    pub progress: i32,
    /// The stage running (or where it stopped).
    pub stage: Option<String>,
    /// Per-stage status, progress and times (`processing_stages` of the API).
    pub processing_stages: Option<serde_json::Value>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// How many times a node claimed it.
    pub attempts: i32,
    /// The node holding the lease.
    pub lease_owner: Option<String>,
    /// Until when the lease holds unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Internal results of finished stages, so a resumed job skips them.
    pub stage_results: Option<serde_json::Value>,
}

/// A `video_metadata` row.
#[derive(Debug, Clone, Queryable)]
pub struct VideoMetadata {
    /// Row id.
    pub id: i32,
    /// The video.
    pub video_id: i32,
    /// The job that produced it.
    pub job_id: i32,
    /// Title (generated, or set by the owner).
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Option<DbStrings>,
    /// The whole transcript.
    pub transcript_text: Option<String>,
    /// Object key of the transcript JSON (segments with times).
    pub transcript_path: Option<String>,
    /// Object keys of the subtitle files: `{"vtt": key, "srt": key}`.
    pub subtitle_paths: Option<serde_json::Value>,
    /// Object key of the thumbnail JPEG.
    pub thumbnail_path: Option<String>,
    /// Duration found by the probe.
    pub extracted_video_duration_seconds: Option<f64>,
    /// `1920x1080`.
    pub extracted_video_resolution: Option<String>,
    /// Container format.
    pub extracted_video_format: Option<String>,
    /// Show notes.
    pub show_notes_text: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A video to store.
#[derive(Debug, Clone)]
pub struct NewVideo<'a> {
    /// Uploader.
    pub uploader: Uuid,
    /// Client's file name.
    pub original_filename: &'a str,
    /// Object key.
    pub storage_path: &'a str,
    /// Content type.
    pub content_type: &'a str,
    /// Size in bytes (0 until a signed upload completes).
    pub size_bytes: i64,
    /// True when the object is already stored.
    pub upload_completed: bool,
}

/// Stores a video row.
pub async fn insert_video(conn: &mut DbConn, new: &NewVideo<'_>) -> QueryResult<Video> {
    let ts = now();
    run!(conn, |c| diesel::insert_into(videos::table)
        .values((
            videos::uploader_user_id.eq(DbUuid(new.uploader)),
            videos::original_filename.eq(new.original_filename),
            videos::storage_path.eq(new.storage_path),
            videos::content_type.eq(new.content_type),
            videos::size_bytes.eq(new.size_bytes),
            videos::upload_completed.eq(new.upload_completed),
            videos::created_at.eq(ts),
            videos::updated_at.eq(ts),
        ))
        .returning(videos::all_columns)
        .get_result::<Video>(c)
        .await)
}

/// Stores a completed upload and its PENDING job (with an empty metadata row) in one
/// transaction.
pub async fn insert_video_with_job(
    conn: &mut DbConn,
    new: &NewVideo<'_>,
) -> QueryResult<(Video, VideoJob)> {
    conn.write_txn(async |conn: &mut DbConn| {
        let video = insert_video(conn, new).await?;
        let job = insert_job(conn, video.id, new.uploader).await?;
        Ok((video, job))
    })
    .await
}

/// A video by id, whoever owns it.
pub async fn find_video(conn: &mut DbConn, id: i32) -> QueryResult<Option<Video>> {
    run!(conn, |c| videos::table
        .find(id)
        .select(videos::all_columns)
        .first::<Video>(c)
        .await
        .optional())
}

/// A video by id if `user` uploaded it.
pub async fn find_video_for_user(
    conn: &mut DbConn,
    id: i32,
    user: Uuid,
) -> QueryResult<Option<Video>> {
    run!(conn, |c| videos::table
        .find(id)
        .filter(videos::uploader_user_id.eq(DbUuid(user)))
        .select(videos::all_columns)
        .first::<Video>(c)
        .await
        .optional())
}

/// The video stored under an object key.
pub async fn find_video_by_path(conn: &mut DbConn, key: &str) -> QueryResult<Option<Video>> {
    run!(conn, |c| videos::table
        .filter(videos::storage_path.eq(key))
        .select(videos::all_columns)
        .first::<Video>(c)
        .await
        .optional())
}

/// Records the size of an object uploaded through a signed URL (before `upload-complete`).
pub async fn set_uploaded_size(conn: &mut DbConn, id: i32, size: i64) -> QueryResult<usize> {
    let ts = now();
    run!(conn, |c| diesel::update(
        videos::table
            .find(id)
            .filter(videos::upload_completed.eq(false))
    )
    .set((videos::size_bytes.eq(size), videos::updated_at.eq(ts)))
    .execute(c)
    .await)
}

/// Marks a signed upload complete and creates its PENDING job, in one transaction. `None` when
/// the upload had already been completed (by a concurrent request).
pub async fn complete_upload(
    conn: &mut DbConn,
    id: i32,
    user: Uuid,
    original_filename: &str,
    content_type: &str,
    size: i64,
) -> QueryResult<Option<(Video, VideoJob)>> {
    conn.write_txn(async |conn: &mut DbConn| {
        let ts = now();
        let video = run!(conn, |c| diesel::update(
            videos::table
                .find(id)
                .filter(videos::upload_completed.eq(false))
        )
        .set((
            videos::upload_completed.eq(true),
            videos::original_filename.eq(original_filename),
            videos::content_type.eq(content_type),
            videos::size_bytes.eq(size),
            videos::updated_at.eq(ts),
        ))
        .returning(videos::all_columns)
        .get_result::<Video>(c)
        .await
        .optional())?;
        let Some(video) = video else {
            return Ok(None);
        };
        let job = insert_job(conn, video.id, user).await?;
        Ok(Some((video, job)))
    })
    .await
}

/// The caller's videos, newest first.
pub async fn list_videos_for_user(
    conn: &mut DbConn,
    user: Uuid,
    skip: i64,
    limit: i64,
) -> QueryResult<Vec<Video>> {
    run!(conn, |c| videos::table
        .filter(videos::uploader_user_id.eq(DbUuid(user)))
        .order((videos::created_at.desc(), videos::id.desc()))
        .offset(skip)
        .limit(limit)
        .select(videos::all_columns)
        .load::<Video>(c)
        .await)
}

/// Bytes stored for `user`'s videos.
pub async fn storage_used(conn: &mut DbConn, user: Uuid) -> QueryResult<i64> {
    let sizes = run!(conn, |c| videos::table
        .filter(videos::uploader_user_id.eq(DbUuid(user)))
        .select(videos::size_bytes)
        .load::<i64>(c)
        .await)?;
    Ok(sizes.iter().fold(0i64, |a, b| a.saturating_add(*b)))
}

/// Signed uploads of `user` created after `since` and not completed yet.
pub async fn pending_uploads(
    conn: &mut DbConn,
    user: Uuid,
    since: DateTime<Utc>,
) -> QueryResult<i64> {
    run!(conn, |c| videos::table
        .filter(videos::uploader_user_id.eq(DbUuid(user)))
        .filter(videos::upload_completed.eq(false))
        .filter(videos::created_at.gt(since))
        .count()
        .get_result::<i64>(c)
        .await)
}

/// Creates a PENDING job for a video, with its empty metadata row.
pub async fn insert_job(conn: &mut DbConn, video_id: i32, user: Uuid) -> QueryResult<VideoJob> {
    let ts = now();
    let job = run!(conn, |c| diesel::insert_into(video_jobs::table)
        .values((
            video_jobs::video_id.eq(video_id),
            video_jobs::user_id.eq(DbUuid(user)),
            video_jobs::status.eq(STATUS_PENDING),
            video_jobs::progress.eq(0),
            video_jobs::created_at.eq(ts),
            video_jobs::updated_at.eq(ts),
        ))
        .returning(video_jobs::all_columns)
        .get_result::<VideoJob>(c)
        .await)?;
    run!(conn, |c| diesel::insert_into(video_metadata::table)
        .values((
            video_metadata::video_id.eq(video_id),
            video_metadata::job_id.eq(job.id),
            video_metadata::created_at.eq(ts),
            video_metadata::updated_at.eq(ts),
        ))
        .execute(c)
        .await)?;
    Ok(job)
}

/// A job by id, whoever owns it.
pub async fn find_job(conn: &mut DbConn, id: i32) -> QueryResult<Option<VideoJob>> {
    run!(conn, |c| video_jobs::table
        .find(id)
        .select(video_jobs::all_columns)
        .first::<VideoJob>(c)
        .await
        .optional())
}

/// The newest job of a video.
pub async fn latest_job_for_video(
    conn: &mut DbConn,
    video_id: i32,
) -> QueryResult<Option<VideoJob>> {
    run!(conn, |c| video_jobs::table
        .filter(video_jobs::video_id.eq(video_id))
        .order((video_jobs::created_at.desc(), video_jobs::id.desc()))
        .select(video_jobs::all_columns)
        .first::<VideoJob>(c)
        .await
        .optional())
}

/// `user`'s jobs with one of `statuses` (all when `None`), newest first.
pub async fn list_jobs_for_user(
    conn: &mut DbConn,
    user: Uuid,
    statuses: Option<&[String]>,
    skip: i64,
    limit: i64,
) -> QueryResult<Vec<VideoJob>> {
    run!(conn, |c| {
        let mut q = video_jobs::table
            .filter(video_jobs::user_id.eq(DbUuid(user)))
            .select(video_jobs::all_columns)
            .into_boxed();
        if let Some(statuses) = statuses {
            q = q.filter(video_jobs::status.eq_any(statuses));
        }
        q.order((video_jobs::created_at.desc(), video_jobs::id.desc()))
            .offset(skip)
            .limit(limit)
            .load::<VideoJob>(c)
            .await
    })
}

/// Jobs this node may run now: PENDING ones, and PROCESSING ones whose lease expired or that
/// this node held before it restarted. Oldest first.
pub async fn runnable_jobs(
    conn: &mut DbConn,
    node: &str,
    at: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<i32>> {
    run!(conn, |c| video_jobs::table
        .filter(
            video_jobs::status
                .eq(STATUS_PENDING)
                .or(video_jobs::status.eq(STATUS_PROCESSING).and(
                    video_jobs::lease_expires_at
                        .is_null()
                        .or(video_jobs::lease_expires_at.lt(at))
                        .or(video_jobs::lease_owner.eq(node))
                ))
        )
        .order((video_jobs::created_at.asc(), video_jobs::id.asc()))
        .limit(limit)
        .select(video_jobs::id)
        .load::<i32>(c)
        .await)
}

/// Takes a job for `node` until `lease_until` (counting an attempt), if it is runnable (see
/// [`runnable_jobs`]). `None` when another node has it or it finished.
pub async fn claim_job(
    conn: &mut DbConn,
    id: i32,
    node: &str,
    lease_until: DateTime<Utc>,
) -> QueryResult<Option<VideoJob>> {
    let ts = now();
    run!(conn, |c| diesel::update(
        video_jobs::table.find(id).filter(
            video_jobs::status
                .eq(STATUS_PENDING)
                .or(video_jobs::status.eq(STATUS_PROCESSING).and(
                    video_jobs::lease_expires_at
                        .is_null()
                        .or(video_jobs::lease_expires_at.lt(ts))
                        .or(video_jobs::lease_owner.eq(node))
                ))
        )
    )
    .set((
        video_jobs::status.eq(STATUS_PROCESSING),
        video_jobs::attempts.eq(video_jobs::attempts + 1),
        video_jobs::lease_owner.eq(node),
        video_jobs::lease_expires_at.eq(lease_until),
        video_jobs::updated_at.eq(ts),
    ))
    .returning(video_jobs::all_columns)
    .get_result::<VideoJob>(c)
    .await
    .optional())
}

/// The state a running job writes; every write renews its lease.
#[derive(Debug, Clone)]
pub struct JobWrite<'a> {
    /// New status.
    pub status: &'a str,
    /// Overall progress.
    pub progress: i32,
    /// Current stage.
    pub stage: Option<&'a str>,
    /// Per-stage details.
    pub processing_stages: &'a serde_json::Value,
    /// Internal stage results.
    pub stage_results: &'a serde_json::Value,
    /// Error, for FAILED.
    pub error_message: Option<&'a str>,
    /// New lease expiry (ignored for terminal statuses, which release the lease).
    pub lease_until: DateTime<Utc>,
}

/// Writes a running job's state if `node` still holds it and it is still PROCESSING. Returns
/// the row written, or `None` when the lease was lost (cancelled elsewhere, or taken over).
pub async fn write_job(
    conn: &mut DbConn,
    id: i32,
    node: &str,
    w: &JobWrite<'_>,
) -> QueryResult<Option<VideoJob>> {
    let ts = now();
    let terminal = w.status != STATUS_PROCESSING;
    let owner = (!terminal).then_some(node);
    let until = (!terminal).then_some(w.lease_until);
    run!(conn, |c| diesel::update(
        video_jobs::table
            .find(id)
            .filter(video_jobs::status.eq(STATUS_PROCESSING))
            .filter(video_jobs::lease_owner.eq(node))
    )
    .set((
        video_jobs::status.eq(w.status),
        video_jobs::progress.eq(w.progress),
        video_jobs::stage.eq(w.stage),
        video_jobs::processing_stages.eq(Some(w.processing_stages)),
        video_jobs::stage_results.eq(Some(w.stage_results)),
        video_jobs::error_message.eq(w.error_message),
        video_jobs::lease_owner.eq(owner),
        video_jobs::lease_expires_at.eq(until),
        video_jobs::updated_at.eq(ts),
    ))
    .returning(video_jobs::all_columns)
    .get_result::<VideoJob>(c)
    .await
    .optional())
}

/// Extends a running job's lease; false when `node` no longer holds it.
pub async fn renew_lease(
    conn: &mut DbConn,
    id: i32,
    node: &str,
    until: DateTime<Utc>,
) -> QueryResult<bool> {
    let n = run!(conn, |c| diesel::update(
        video_jobs::table
            .find(id)
            .filter(video_jobs::status.eq(STATUS_PROCESSING))
            .filter(video_jobs::lease_owner.eq(node))
    )
    .set(video_jobs::lease_expires_at.eq(until))
    .execute(c)
    .await)?;
    Ok(n > 0)
}

/// Lets the leases of `ids` held by `node` expire now, so the next node to look (this one,
/// restarted, or another) resumes them at once. A release is not a crash: the attempt it used
/// is given back.
pub async fn release_leases(conn: &mut DbConn, ids: &[i32], node: &str) -> QueryResult<usize> {
    let ts = now();
    run!(conn, |c| diesel::update(
        video_jobs::table
            .filter(video_jobs::id.eq_any(ids))
            .filter(video_jobs::status.eq(STATUS_PROCESSING))
            .filter(video_jobs::lease_owner.eq(node))
            .filter(video_jobs::attempts.gt(0))
    )
    .set((
        video_jobs::lease_expires_at.eq(ts),
        video_jobs::attempts.eq(video_jobs::attempts - 1),
    ))
    .execute(c)
    .await)
}

/// Fails a job that `node` holds (its actor died, or it was interrupted too often).
pub async fn fail_held_job(
    conn: &mut DbConn,
    id: i32,
    node: &str,
    message: &str,
) -> QueryResult<Option<VideoJob>> {
    let ts = now();
    run!(conn, |c| diesel::update(
        video_jobs::table
            .find(id)
            .filter(video_jobs::status.eq(STATUS_PROCESSING))
            .filter(video_jobs::lease_owner.eq(node))
    )
    .set((
        video_jobs::status.eq(STATUS_FAILED),
        video_jobs::error_message.eq(message),
        video_jobs::lease_owner.eq(None::<String>),
        video_jobs::lease_expires_at.eq(None::<DateTime<Utc>>),
        video_jobs::updated_at.eq(ts),
    ))
    .returning(video_jobs::all_columns)
    .get_result::<VideoJob>(c)
    .await
    .optional())
}

/// Cancels a job that has not finished (PENDING, or PROCESSING on any node). `None` when it
/// had already finished.
pub async fn cancel_unfinished(conn: &mut DbConn, id: i32) -> QueryResult<Option<VideoJob>> {
    let ts = now();
    run!(conn, |c| diesel::update(video_jobs::table.find(id).filter(
        video_jobs::status.eq_any([STATUS_PENDING, STATUS_PROCESSING])
    ))
    .set((
        video_jobs::status.eq(STATUS_CANCELLED),
        video_jobs::lease_owner.eq(None::<String>),
        video_jobs::lease_expires_at.eq(None::<DateTime<Utc>>),
        video_jobs::updated_at.eq(ts),
    ))
    .returning(video_jobs::all_columns)
    .get_result::<VideoJob>(c)
    .await
    .optional())
}

/// The metadata row of a job.
pub async fn find_metadata(conn: &mut DbConn, job_id: i32) -> QueryResult<Option<VideoMetadata>> {
    run!(conn, |c| video_metadata::table
        .filter(video_metadata::job_id.eq(job_id))
        .select(video_metadata::all_columns)
        .first::<VideoMetadata>(c)
        .await
        .optional())
}

/// What the probe found that `video_metadata` holds (codecs and bit rate are kept with the
/// job's stage results).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFacts {
    /// Seconds.
    pub duration_seconds: f64,
    /// `WIDTHxHEIGHT`.
    pub resolution: String,
    /// Container format.
    pub format: String,
}

/// Stores the probe's findings.
pub async fn set_probe(conn: &mut DbConn, job_id: i32, p: &ProbeFacts) -> QueryResult<usize> {
    let ts = now();
    run!(conn, |c| diesel::update(
        video_metadata::table.filter(video_metadata::job_id.eq(job_id))
    )
    .set((
        video_metadata::extracted_video_duration_seconds.eq(Some(p.duration_seconds)),
        video_metadata::extracted_video_resolution.eq(Some(&p.resolution)),
        video_metadata::extracted_video_format.eq(Some(&p.format)),
        video_metadata::updated_at.eq(ts),
    ))
    .execute(c)
    .await)
}

/// Stores the thumbnail's object key.
pub async fn set_thumbnail(conn: &mut DbConn, job_id: i32, key: &str) -> QueryResult<usize> {
    let ts = now();
    run!(conn, |c| diesel::update(
        video_metadata::table.filter(video_metadata::job_id.eq(job_id))
    )
    .set((
        video_metadata::thumbnail_path.eq(Some(key)),
        video_metadata::updated_at.eq(ts),
    ))
    .execute(c)
    .await)
}

/// Stores the transcript's text and the object key of its timed segments.
pub async fn set_transcript(
    conn: &mut DbConn,
    job_id: i32,
    text: &str,
    key: &str,
) -> QueryResult<usize> {
    let ts = now();
    let text = super::storable(text);
    let text = text.as_ref();
    run!(conn, |c| diesel::update(
        video_metadata::table.filter(video_metadata::job_id.eq(job_id))
    )
    .set((
        video_metadata::transcript_text.eq(Some(text)),
        video_metadata::transcript_path.eq(Some(key)),
        video_metadata::updated_at.eq(ts),
    ))
    .execute(c)
    .await)
}

/// Stores the subtitle files' object keys (`{"vtt": key, "srt": key}`).
pub async fn set_subtitles(
    conn: &mut DbConn,
    job_id: i32,
    keys: &serde_json::Value,
) -> QueryResult<usize> {
    let ts = now();
    run!(conn, |c| diesel::update(
        video_metadata::table.filter(video_metadata::job_id.eq(job_id))
    )
    .set((
        video_metadata::subtitle_paths.eq(Some(keys)),
        video_metadata::updated_at.eq(ts),
    ))
    .execute(c)
    .await)
}

/// Title, description, tags and show notes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Descriptive {
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Show notes.
    pub show_notes: Option<String>,
}

/// Stores generated text in the fields the owner has not set (their edits win).
pub async fn fill_generated(
    conn: &mut DbConn,
    job_id: i32,
    generated: &Descriptive,
) -> QueryResult<()> {
    conn.write_txn(async |conn: &mut DbConn| {
        let Some(current) = find_metadata(conn, job_id).await? else {
            return Ok(());
        };
        let clean = |s: &String| super::storable(s).into_owned();
        let wanted = Descriptive {
            title: current
                .title
                .is_none()
                .then(|| generated.title.as_ref().map(clean))
                .flatten(),
            description: current
                .description
                .is_none()
                .then(|| generated.description.as_ref().map(clean))
                .flatten(),
            tags: current
                .tags
                .is_none()
                .then(|| {
                    generated
                        .tags
                        .as_ref()
                        .map(|t| t.iter().map(clean).collect())
                })
                .flatten(),
            show_notes: current
                .show_notes_text
                .is_none()
                .then(|| generated.show_notes.as_ref().map(clean))
                .flatten(),
        };
        update_descriptive(conn, job_id, &wanted).await?;
        Ok(())
    })
    .await
}

/// Sets the given descriptive fields (those `Some`), leaving the others.
pub async fn update_descriptive(
    conn: &mut DbConn,
    job_id: i32,
    d: &Descriptive,
) -> QueryResult<Option<VideoMetadata>> {
    let ts = now();
    let tags = d.tags.clone().map(DbStrings);
    run!(conn, |c| diesel::update(
        video_metadata::table.filter(video_metadata::job_id.eq(job_id))
    )
    .set((
        d.title
            .as_deref()
            .map(|t| video_metadata::title.eq(Some(t))),
        d.description
            .as_deref()
            .map(|t| video_metadata::description.eq(Some(t))),
        tags.map(|t| video_metadata::tags.eq(Some(t))),
        d.show_notes
            .as_deref()
            .map(|t| video_metadata::show_notes_text.eq(Some(t))),
        video_metadata::updated_at.eq(ts),
    ))
    .returning(video_metadata::all_columns)
    .get_result::<VideoMetadata>(c)
    .await
    .optional())
}
