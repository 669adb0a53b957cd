//! What each stage of a job does. The `VideoJob` actor runs them one at a time; each reads what
//! earlier stages left in [`StageResults`] (or in storage and `video_metadata`), does its work —
//! FFmpeg in a sandboxed worker process ([`super::sandbox`]), the AI provider, storage — and
//! reports what later stages need. Artifacts are stored under
//! `artifacts/{user_id}/{video_id}/{job_id}/`.
//!
//! What a worker returns is untrusted (FFmpeg parsed a hostile file in it): results are checked
//! before use, and its audio files are taken only by their expected names, as regular files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use tokio::sync::Mutex;

use super::media::{audio, probe::Probe, Cancel, MediaError, Progress};
use super::model::{Stage, StageResults, StoredChunk};
use super::sandbox::protocol::{AudioResult, Limits, Request, Task, ThumbnailResult};
use super::sandbox::{self, WorkerError};
use super::subtitles::{self, Cue, TranscriptFile};
use super::{describe, JobEnv};
use crate::db::videos::{self, ProbeFacts, Video};

/// Why a stage stopped early.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageError {
    /// The job was cancelled (or its node is shutting down).
    #[error("cancelled")]
    Cancelled,
    /// The stage failed; the message is stored as the job's `error_message`.
    #[error("{0}")]
    Failed(String),
    /// The media worker crashed, hung past its time limit, hit a resource limit or
    /// misbehaved: this attempt of the job is lost, and the job is tried again while it has
    /// attempts left (`VIDEO_MAX_ATTEMPTS`).
    #[error("{0}")]
    Attempt(String),
}

impl From<WorkerError> for StageError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Cancelled => StageError::Cancelled,
            WorkerError::Unreadable(m) | WorkerError::Internal(m) => StageError::Failed(m),
            WorkerError::Attempt(m) => StageError::Attempt(m),
        }
    }
}

/// The attempt-failure of a worker whose result does not hold up.
fn misbehaved(what: &str) -> StageError {
    tracing::warn!(what, "a media worker returned an invalid result");
    StageError::Attempt("Media processing failed: its worker process misbehaved.".into())
}

impl From<MediaError> for StageError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Cancelled => StageError::Cancelled,
            MediaError::Unreadable(m) => StageError::Failed(m),
            MediaError::Internal(m) => StageError::Failed(m),
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> StageError {
    StageError::Failed(format!("{what}: {e}"))
}

/// A job's scratch folder, removed when the last holder (the actor, or a media thread still
/// winding down) lets go of it.
#[derive(Debug)]
pub struct Workspace {
    dir: PathBuf,
    source: Mutex<Option<PathBuf>>,
}

impl Workspace {
    /// Creates `root/job-{id}-{random}`.
    pub fn create(root: &Path, job_id: i32) -> std::io::Result<Arc<Workspace>> {
        let dir = root.join(format!("job-{job_id}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Workspace {
            dir,
            source: Mutex::new(None),
        }))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a job's scratch folder");
            }
        }
    }
}

/// Everything a stage needs.
#[derive(Clone)]
pub struct StageInput {
    /// Shared services.
    pub env: Arc<JobEnv>,
    /// The job.
    pub job_id: i32,
    /// Its video.
    pub video: Video,
    /// Results of the stages before.
    pub results: StageResults,
    /// Scratch space.
    pub workspace: Arc<Workspace>,
    /// Set when the job must stop.
    pub cancel: Cancel,
    /// The stage's progress, read by the actor.
    pub progress: Progress,
}

/// What a stage reports.
#[derive(Debug, Clone, Default)]
pub struct StageOutput {
    /// Results, updated.
    pub results: StageResults,
    /// Stages that have nothing to do for this video (no audio: transcription and subtitles).
    pub skip: Vec<Stage>,
    /// True when this stage itself had nothing to do.
    pub skipped: bool,
}

impl StageInput {
    fn artifact(&self, name: &str) -> String {
        format!(
            "artifacts/{}/{}/{}/{name}",
            self.video.uploader_user_id.0, self.video.id, self.job_id
        )
    }

    fn extension(&self) -> String {
        Path::new(&self.video.storage_path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_string()
    }

    /// The uploaded file on this machine: in place on local storage, else downloaded into the
    /// workspace once (its progress reported as the running stage's).
    async fn source(&self) -> Result<PathBuf, StageError> {
        let mut cached = self.workspace.source.lock().await;
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let key = &self.video.storage_path;
        if let Some(local) = self.env.storage.local_path(key) {
            if tokio::fs::metadata(&local).await.is_ok() {
                *cached = Some(local.clone());
                return Ok(local);
            }
            return Err(StageError::Failed(
                "The uploaded file is missing from storage.".into(),
            ));
        }
        let ext = self.extension();
        let dest = self.workspace.dir().join(if ext.is_empty() {
            "source".to_string()
        } else {
            format!("source.{ext}")
        });
        let total = self.video.size_bytes.max(1) as f64;
        let progress = self.progress.clone();
        let report = move |n: u64| progress.set(n as f64 / total * 0.5);
        let copy = self.env.storage.download_to(key, &dest, &report);
        tokio::select! {
            r = copy => match r {
                Ok(_) => {}
                Err(crate::storage::StorageError::NotFound) => {
                    return Err(StageError::Failed("The uploaded file is missing from storage.".into()))
                }
                Err(e) => return Err(failed("downloading the upload", e)),
            },
            _ = cancelled(&self.cancel) => return Err(StageError::Cancelled),
        }
        *cached = Some(dest.clone());
        Ok(dest)
    }
}

/// Resolves once `cancel` is set (polled; cancellation is rare and a 100 ms delay is fine).
async fn cancelled(cancel: &Cancel) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the FFmpeg part of a stage, `task` on the upload at `path`, in a media worker;
/// `on_progress` gets the fractions it reports.
async fn in_worker(
    input: &StageInput,
    path: PathBuf,
    task: Task,
    on_progress: impl Fn(f64),
) -> Result<serde_json::Value, StageError> {
    let settings = &input.env.settings;
    let file_bytes = match task {
        Task::Audio { .. } => 2 * audio::MAX_CHUNK_BYTES,
        _ => 0,
    };
    let request = Request {
        input: path,
        extension: input.extension(),
        parent_pid: Some(std::process::id()),
        limits: Limits {
            memory_mb: settings.worker_memory_mb,
            cpu_secs: settings.worker_cpu_secs,
            file_bytes,
            open_files: 64,
        },
        task,
    };
    Ok(sandbox::run(settings, &request, &input.cancel, on_progress).await?)
}

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, StageError> {
    serde_json::from_value(value).map_err(|_| misbehaved(std::any::type_name::<T>()))
}

/// A short, printable name (container, codec) from a worker.
fn sane_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// `audio-NNN.flac`: the only names of speech chunks taken from a worker's folder.
fn is_chunk_name(name: &str) -> bool {
    name.strip_prefix("audio-")
        .and_then(|rest| rest.strip_suffix(".flac"))
        .is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Runs `stage`.
pub async fn run(stage: Stage, input: StageInput) -> Result<StageOutput, StageError> {
    input.cancel.check().map_err(StageError::from)?;
    match stage {
        Stage::Probe => probe_stage(input).await,
        Stage::Thumbnail => thumbnail_stage(input).await,
        Stage::Audio => audio_stage(input).await,
        Stage::Transcription => transcription_stage(input).await,
        Stage::Subtitles => subtitles_stage(input).await,
        Stage::Metadata => metadata_stage(input).await,
        Stage::Finalize => Ok(StageOutput {
            results: input.results,
            ..StageOutput::default()
        }),
    }
}

async fn db_conn(input: &StageInput) -> Result<crate::db::DbConn, StageError> {
    input.env.db.conn().await.map_err(|e| failed("database", e))
}

async fn probe_stage(input: StageInput) -> Result<StageOutput, StageError> {
    let path = input.source().await?;
    let found: Probe = parse(in_worker(&input, path, Task::Probe, |_| {}).await?)?;
    input.progress.set(1.0);
    if !(found.duration.is_finite() && found.duration > 0.0) {
        return Err(StageError::Failed(
            "The video's duration could not be determined.".into(),
        ));
    }
    if found.width == 0 || found.height == 0 {
        return Err(misbehaved("probe size"));
    }
    let found = Probe {
        format: sane_name(&found.format),
        video_codec: sane_name(&found.video_codec),
        audio_codec: found.audio_codec.as_deref().map(sane_name),
        bit_rate: found.bit_rate.filter(|b| *b > 0),
        ..found
    };
    let limits = &input.env.settings;
    if found.duration > limits.max_duration_secs {
        return Err(StageError::Failed(format!(
            "The video is {:.0} s long; videos up to {} s are processed.",
            found.duration, limits.max_duration_secs
        )));
    }
    if u64::from(found.width) * u64::from(found.height) > limits.max_pixels {
        return Err(StageError::Failed(format!(
            "The video's picture ({}x{}) is larger than this server processes.",
            found.width, found.height
        )));
    }
    let facts = ProbeFacts {
        duration_seconds: found.duration,
        resolution: format!("{}x{}", found.width, found.height),
        format: found.format.clone(),
    };
    let mut conn = db_conn(&input).await?;
    videos::set_probe(&mut conn, input.job_id, &facts)
        .await
        .map_err(|e| failed("storing the probe", e))?;
    let mut results = input.results;
    results.duration = Some(found.duration);
    results.format = Some(found.format);
    results.video_codec = Some(found.video_codec);
    results.audio_codec = found.audio_codec;
    results.bit_rate = found.bit_rate;
    Ok(StageOutput {
        results,
        ..StageOutput::default()
    })
}

fn duration_of(input: &StageInput) -> Result<f64, StageError> {
    input
        .results
        .duration
        .ok_or_else(|| StageError::Failed("the probe's results are missing".into()))
}

async fn thumbnail_stage(input: StageInput) -> Result<StageOutput, StageError> {
    let duration = duration_of(&input)?;
    let path = input.source().await?;
    let thumb: ThumbnailResult =
        parse(in_worker(&input, path, Task::Thumbnail { duration }, |_| {}).await?)?;
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(thumb.jpeg_base64.as_bytes())
        .map_err(|_| misbehaved("thumbnail encoding"))?;
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(misbehaved("thumbnail content"));
    }
    let key = input.artifact("thumbnail.jpg");
    input
        .env
        .storage
        .put_bytes(&key, "image/jpeg", Bytes::from(jpeg))
        .await
        .map_err(|e| failed("storing the thumbnail", e))?;
    let mut conn = db_conn(&input).await?;
    videos::set_thumbnail(&mut conn, input.job_id, &key)
        .await
        .map_err(|e| failed("storing the thumbnail", e))?;
    Ok(StageOutput {
        results: input.results,
        ..StageOutput::default()
    })
}

async fn audio_stage(input: StageInput) -> Result<StageOutput, StageError> {
    let duration = duration_of(&input)?;
    let path = input.source().await?;
    // A fresh, empty folder: the only one the worker may write in.
    let out_dir = input
        .workspace
        .dir()
        .join(format!("audio-{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::create_dir(&out_dir)
        .await
        .map_err(|e| failed("preparing the speech audio", e))?;
    let max_seconds = input.env.settings.max_duration_secs;
    let task = Task::Audio {
        duration,
        out_dir: out_dir.clone(),
        chunk_seconds: audio::CHUNK_SECONDS,
        max_seconds: max_seconds.max(duration + 1.0),
    };
    let progress = input.progress.clone();
    let result = in_worker(&input, path, task, move |f| progress.set(f)).await;
    let stored = match result {
        Ok(value) => store_chunks(&input, &out_dir, parse(value)?).await,
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&out_dir).await;
    let stored = stored?;
    let no_audio = stored.is_empty();
    let mut results = input.results;
    results.audio_chunks = Some(stored);
    Ok(StageOutput {
        results,
        skip: if no_audio {
            vec![Stage::Transcription, Stage::Subtitles]
        } else {
            Vec::new()
        },
        skipped: no_audio,
    })
}

/// Checks the chunks a worker wrote into `out_dir` and stores them, in order.
async fn store_chunks(
    input: &StageInput,
    out_dir: &Path,
    found: AudioResult,
) -> Result<Vec<StoredChunk>, StageError> {
    use std::os::unix::fs::MetadataExt;
    let chunks = found.chunks;
    let mut stored = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        input.cancel.check()?;
        let valid = is_chunk_name(&chunk.file)
            && chunk.start.is_finite()
            && chunk.start >= 0.0
            && chunk.duration.is_finite()
            && chunk.duration >= 0.0;
        if !valid {
            return Err(misbehaved("audio chunk"));
        }
        let path = out_dir.join(&chunk.file);
        // A regular file of its own: not a link to something else on this disk.
        let meta = tokio::fs::symlink_metadata(&path)
            .await
            .map_err(|_| misbehaved("audio chunk file"))?;
        if !meta.file_type().is_file() || meta.nlink() != 1 || meta.len() >= audio::MAX_CHUNK_BYTES
        {
            return Err(misbehaved("audio chunk file"));
        }
        let key = input.artifact(&format!("audio/{i:03}.flac"));
        input
            .env
            .storage
            .put_file(&key, "audio/flac", &path)
            .await
            .map_err(|e| failed("storing the speech audio", e))?;
        let _ = tokio::fs::remove_file(&path).await;
        stored.push(StoredChunk {
            key,
            start: chunk.start,
            duration: chunk.duration,
        });
    }
    Ok(stored)
}

async fn transcription_stage(input: StageInput) -> Result<StageOutput, StageError> {
    let chunks = input.results.audio_chunks.clone().unwrap_or_default();
    let mut segments: Vec<Cue> = Vec::new();
    let mut language = None;
    for (i, chunk) in chunks.iter().enumerate() {
        input.cancel.check()?;
        let audio = input
            .env
            .storage
            .read_bytes(&chunk.key, audio::MAX_CHUNK_BYTES)
            .await
            .map_err(|e| failed("reading the speech audio", e))?;
        let filename = format!("audio-{i:03}.flac");
        let transcript = tokio::select! {
            r = input.env.ai.transcribe(audio, filename) => r.map_err(|e| {
                tracing::warn!(job = input.job_id, error = %e, "transcription failed");
                StageError::Failed(format!("Transcription failed: {}", e.public_message()))
            })?,
            _ = cancelled(&input.cancel) => return Err(StageError::Cancelled),
        };
        language = language.or(transcript.language);
        let end_of_chunk = chunk.start + chunk.duration;
        for s in transcript.segments {
            let start = chunk.start + s.start.max(0.0);
            let end = (chunk.start + s.end).min(end_of_chunk);
            if start < end_of_chunk && end > start && !s.text.trim().is_empty() {
                segments.push(Cue {
                    start,
                    end,
                    text: s.text.trim().to_string(),
                });
            }
        }
        input.progress.set((i + 1) as f64 / chunks.len() as f64);
    }
    let file = TranscriptFile {
        text: segments
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        language,
        segments,
    };
    let key = input.artifact("transcript.json");
    let body = serde_json::to_vec(&file).map_err(|e| failed("transcript", e))?;
    input
        .env
        .storage
        .put_bytes(&key, "application/json", Bytes::from(body))
        .await
        .map_err(|e| failed("storing the transcript", e))?;
    let mut conn = db_conn(&input).await?;
    videos::set_transcript(&mut conn, input.job_id, &file.text, &key)
        .await
        .map_err(|e| failed("storing the transcript", e))?;
    let mut results = input.results;
    results.transcript_key = Some(key);
    Ok(StageOutput {
        results,
        ..StageOutput::default()
    })
}

/// The stored transcript, if the job produced one.
async fn load_transcript(input: &StageInput) -> Result<Option<TranscriptFile>, StageError> {
    let Some(key) = &input.results.transcript_key else {
        return Ok(None);
    };
    let raw = input
        .env
        .storage
        .read_bytes(key, 64 * 1024 * 1024)
        .await
        .map_err(|e| failed("reading the transcript", e))?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| failed("reading the transcript", e))
}

async fn subtitles_stage(input: StageInput) -> Result<StageOutput, StageError> {
    let Some(transcript) = load_transcript(&input).await? else {
        return Ok(StageOutput {
            results: input.results,
            skipped: true,
            ..StageOutput::default()
        });
    };
    let vtt_key = input.artifact("subtitles.vtt");
    let srt_key = input.artifact("subtitles.srt");
    let storage = &input.env.storage;
    storage
        .put_bytes(
            &vtt_key,
            "text/vtt",
            Bytes::from(subtitles::to_vtt(&transcript.segments)),
        )
        .await
        .map_err(|e| failed("storing the subtitles", e))?;
    input.progress.set(0.5);
    storage
        .put_bytes(
            &srt_key,
            "application/x-subrip",
            Bytes::from(subtitles::to_srt(&transcript.segments)),
        )
        .await
        .map_err(|e| failed("storing the subtitles", e))?;
    let keys = serde_json::json!({"vtt": vtt_key, "srt": srt_key});
    let mut conn = db_conn(&input).await?;
    videos::set_subtitles(&mut conn, input.job_id, &keys)
        .await
        .map_err(|e| failed("storing the subtitles", e))?;
    Ok(StageOutput {
        results: input.results,
        ..StageOutput::default()
    })
}

async fn metadata_stage(input: StageInput) -> Result<StageOutput, StageError> {
    let transcript = load_transcript(&input).await?;
    let generated = tokio::select! {
        d = describe::describe(
            input.env.ai.as_ref(),
            &input.video.original_filename,
            transcript.as_ref(),
        ) => d,
        _ = cancelled(&input.cancel) => return Err(StageError::Cancelled),
    };
    let mut conn = db_conn(&input).await?;
    videos::fill_generated(&mut conn, input.job_id, &generated)
        .await
        .map_err(|e| failed("storing the generated metadata", e))?;
    Ok(StageOutput {
        results: input.results,
        ..StageOutput::default()
    })
}
