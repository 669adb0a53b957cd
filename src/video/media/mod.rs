//! FFmpeg, in-process (ffmpeg-next over the system's libav* libraries): probing, the thumbnail
//! and the speech track. Every function here blocks; the job actor runs them on a thread of
//! their own and stops them through a [`Cancel`] flag, which the decode loops check per packet
//! and FFmpeg's I/O checks through its interrupt callback.

pub mod audio;
pub mod probe;
pub mod thumbnail;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use ffmpeg_next as ffmpeg;

/// A shared stop flag: set once, seen by every clone.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every holder to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once set, for `?` in decode loops.
    pub fn check(&self) -> Result<(), MediaError> {
        if self.is_cancelled() {
            Err(MediaError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Progress of the running stage, 0..=1000 (per mille), written by the media thread and read
/// by the job actor.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU32>);

impl Progress {
    /// Zero progress.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Records `fraction` (clamped to 0..=1); never moves backwards.
    pub fn set(&self, fraction: f64) {
        let permille = (fraction.clamp(0.0, 1.0) * 1000.0) as u32;
        self.0.fetch_max(permille, Ordering::Relaxed);
    }

    /// Back to zero, for the next stage.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// The fraction done, 0..=1.
    pub fn get(&self) -> f64 {
        f64::from(self.0.load(Ordering::Relaxed)) / 1000.0
    }
}

/// Why media work stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    /// The cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// The input is not media this server can read; the message is for the video's owner.
    #[error("{0}")]
    Unreadable(String),
    /// FFmpeg failed on something that should have worked (an encoder, a file write).
    #[error("media processing failed: {0}")]
    Internal(String),
}

impl MediaError {
    /// An internal failure with context.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> MediaError {
        MediaError::Internal(format!("{what}: {e}"))
    }
}

/// Initialises FFmpeg once per process and silences its own log: failures reach the job's
/// `error_message` and this server's log instead.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| e.to_string())?;
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
        Ok(())
    })
    .clone()
    .map_err(|e| MediaError::internal("initialising FFmpeg", e))
}

/// Opens `path` for demuxing; FFmpeg's blocking I/O gives up as soon as `cancel` is set.
pub fn open_input(
    path: &Path,
    cancel: &Cancel,
) -> Result<ffmpeg::format::context::Input, MediaError> {
    init()?;
    let flag = cancel.clone();
    ffmpeg::format::input_with_interrupt(path, move || flag.is_cancelled()).map_err(|e| {
        if cancel.is_cancelled() {
            MediaError::Cancelled
        } else {
            MediaError::Unreadable(format!(
                "The file could not be read as a video ({e}); is it a valid video file?"
            ))
        }
    })
}

/// Seconds of a stream timestamp, relative to the stream's start.
pub fn seconds(ts: i64, time_base: ffmpeg::Rational, start: i64) -> f64 {
    let start = if start == ffmpeg::ffi::AV_NOPTS_VALUE {
        0
    } else {
        start
    };
    (ts.saturating_sub(start)) as f64 * f64::from(time_base)
}
