//! Video job settings, read with the rest of the configuration (`config::Settings::video`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{parse, ConfigError};

/// How video jobs run.
#[derive(Debug, Clone)]
pub struct VideoSettings {
    /// `VIDEO_WORKERS`: jobs running at once on this node (default: the number of cores).
    pub workers: usize,
    /// `VIDEO_JOB_LEASE_SECS`: how long a node's claim on a job lasts without renewal (default
    /// 30); a node that dies mid-job leaves it to be resumed once this has passed.
    pub lease: Duration,
    /// `VIDEO_SWEEP_SECS`: how often the supervisor looks for runnable jobs in the database
    /// (default 5): pending jobs from other nodes, and jobs whose node went away.
    pub sweep_interval: Duration,
    /// `VIDEO_MAX_ATTEMPTS`: times a job may be started before it is failed instead of resumed
    /// again (default 3), so a file that crashes the process cannot crash it forever.
    pub max_attempts: i32,
    /// `VIDEO_UPLOADS_PER_USER`: uploads one user may stream at once (default 2); over it, 429.
    pub uploads_per_user: usize,
    /// `VIDEO_PENDING_UPLOADS_PER_USER`: signed upload URLs a user may hold without completing
    /// them (default 10); over it, 429.
    pub pending_uploads_per_user: i64,
    /// `VIDEO_MAX_DURATION_SECS`: longest video processed (default 14400, 4 h); a longer one
    /// fails at the probe, so a small, long file cannot turn into gigabytes of artifacts.
    pub max_duration_secs: f64,
    /// `VIDEO_MAX_PIXELS`: largest picture (width × height) processed (default 40 000 000).
    pub max_pixels: u64,
    /// `VIDEO_WORKER_BIN`: the program run as `PROGRAM media-worker` for each FFmpeg stage
    /// (default: this executable). Tests, whose executable is a test harness, point it at the
    /// `echo-server` binary.
    pub worker_bin: PathBuf,
    /// `VIDEO_WORKER_TIMEOUT_SECS`: wall-clock limit of one media worker, i.e. of the FFmpeg
    /// part of one stage (default 1800); past it the worker is killed and the attempt fails.
    pub worker_timeout: Duration,
    /// `VIDEO_WORKER_MEMORY_MB`: a media worker's address-space limit (`RLIMIT_AS`, default
    /// 2048).
    pub worker_memory_mb: u64,
    /// `VIDEO_WORKER_CPU_SECS`: a media worker's CPU-time limit (`RLIMIT_CPU`, default 3600:
    /// decoding may use two threads for the whole wall-clock limit).
    pub worker_cpu_secs: u64,
}

impl VideoSettings {
    /// Reads the `VIDEO_*` variables.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers: usize = parse(env, "VIDEO_WORKERS", cores)?;
        if workers == 0 {
            return Err(ConfigError {
                var: "VIDEO_WORKERS",
                reason: "must be at least 1".into(),
            });
        }
        let lease: u64 = parse(env, "VIDEO_JOB_LEASE_SECS", 30)?;
        if lease < 2 {
            return Err(ConfigError {
                var: "VIDEO_JOB_LEASE_SECS",
                reason: "must be at least 2".into(),
            });
        }
        let sweep_ms = (parse::<f64>(env, "VIDEO_SWEEP_SECS", 5.0)? * 1000.0).max(100.0);
        let worker_bin = match env.get("VIDEO_WORKER_BIN").filter(|v| !v.trim().is_empty()) {
            Some(p) => PathBuf::from(p.trim()),
            None => std::env::current_exe().map_err(|e| ConfigError {
                var: "VIDEO_WORKER_BIN",
                reason: format!("unset, and this executable's path is unknown ({e})"),
            })?,
        };
        let at_least = |var: &'static str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError {
                    var,
                    reason: format!("must be at least {min}"),
                })
            } else {
                Ok(value)
            }
        };
        let worker_timeout = at_least(
            "VIDEO_WORKER_TIMEOUT_SECS",
            parse(env, "VIDEO_WORKER_TIMEOUT_SECS", 1800)?,
            1,
        )?;
        let worker_memory_mb = at_least(
            "VIDEO_WORKER_MEMORY_MB",
            parse(env, "VIDEO_WORKER_MEMORY_MB", 2048)?,
            512,
        )?;
        let worker_cpu_secs = at_least(
            "VIDEO_WORKER_CPU_SECS",
            parse(env, "VIDEO_WORKER_CPU_SECS", 3600)?,
            1,
        )?;
        Ok(VideoSettings {
            workers,
            lease: Duration::from_secs(lease),
            sweep_interval: Duration::from_millis(sweep_ms as u64),
            max_attempts: parse(env, "VIDEO_MAX_ATTEMPTS", 3)?,
            uploads_per_user: parse(env, "VIDEO_UPLOADS_PER_USER", 2)?,
            pending_uploads_per_user: parse(env, "VIDEO_PENDING_UPLOADS_PER_USER", 10)?,
            max_duration_secs: parse(env, "VIDEO_MAX_DURATION_SECS", 14_400.0)?,
            max_pixels: parse(env, "VIDEO_MAX_PIXELS", 40_000_000)?,
            worker_bin,
            worker_timeout: Duration::from_secs(worker_timeout),
            worker_memory_mb,
            worker_cpu_secs,
        })
    }
}
