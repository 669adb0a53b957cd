//! Video upload and processing: one `VideoJob` actor per running job under the
//! `JobSupervisor`, FFmpeg in sandboxed worker processes (probe, thumbnail, speech track; see
//! [`sandbox`]), speech-to-text and
//! text generation through the AI provider, artifacts in object storage, and live progress
//! published to the owner's WebSocket sessions as `job` events.

pub mod describe;
pub mod job;
pub mod media;
pub mod messages;
pub mod model;
pub mod pipeline;
pub mod responses;
pub mod sandbox;
pub mod service;
pub mod subtitles;
pub mod supervisor;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

pub use crate::config::VideoSettings;
pub use service::VideoService;

use crate::ai::AiProvider;
use crate::broker::Broker;
use crate::config::Settings;
use crate::db::Db;
use crate::storage::ObjectStore;
use supervisor::JobSupervisor;

/// What the supervisor and its jobs share.
pub struct JobEnv {
    /// Database pool.
    pub db: Db,
    /// Uploads and artifacts.
    pub storage: Arc<dyn ObjectStore>,
    /// Where `job` events go.
    pub broker: Arc<dyn Broker>,
    /// Speech-to-text and text generation.
    pub ai: Arc<dyn AiProvider>,
    /// This node's name: the owner recorded in job leases.
    pub node_id: String,
    /// `VIDEO_*` settings.
    pub settings: VideoSettings,
    /// Scratch folders of running jobs (`ECHO_DATA_DIR/tmp/video-jobs`).
    pub work_dir: PathBuf,
}

/// Starts the supervisor on an arbiter of its own (it picks up runnable jobs at once) and
/// returns the service REST and WebSocket handlers use. Call inside an actix system.
pub fn start(
    settings: Arc<Settings>,
    db: Db,
    storage: Arc<dyn ObjectStore>,
    broker: Arc<dyn Broker>,
    ai: Arc<dyn AiProvider>,
) -> anyhow::Result<VideoService> {
    // FFmpeg runs only in media workers; say so now if none can be started.
    if !settings.video.worker_bin.is_file() {
        tracing::warn!(
            bin = %settings.video.worker_bin.display(),
            "VIDEO_WORKER_BIN is not a file: video jobs will fail until it is"
        );
    }
    let work_dir = settings.data_dir.join("tmp").join("video-jobs");
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", work_dir.display()))?;
    let env = Arc::new(JobEnv {
        db: db.clone(),
        storage: storage.clone(),
        broker: broker.clone(),
        ai,
        node_id: settings.node_id.clone(),
        settings: settings.video.clone(),
        work_dir,
    });
    let arbiter = Arbiter::new().handle();
    let supervisor = JobSupervisor::start_in_arbiter(&arbiter, move |_| JobSupervisor::new(env));
    Ok(VideoService::new(db, storage, settings, broker, supervisor))
}
