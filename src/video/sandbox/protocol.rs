//! What the server and an `echo-server media-worker` process say to each other.
//!
//! The server writes one [`Request`] as a JSON line on the worker's stdin and closes it. The
//! worker answers with JSON lines ([`Event`]) on its stdout: `ready` once it is confined (with
//! what was enforced), any number of `progress`, then exactly one `done` or `failed`, and exits.
//! Its stderr is free text for the server's log. The server treats everything the worker says
//! as untrusted: lines are length-capped, results are checked before use.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::video::media::probe::Probe;

/// Version of this protocol (the `ready` line names it; a mismatch fails the attempt).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line the server reads from a worker (a thumbnail is the largest: a base64 JPEG of at
/// most 1280 px wide).
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// Longest request a worker reads from its stdin.
pub const MAX_REQUEST_BYTES: u64 = 1024 * 1024;

/// One piece of media work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The upload (opened by the worker before it confines itself; FFmpeg never sees the
    /// path).
    pub input: std::path::PathBuf,
    /// The upload's extension, without the dot (a hint for FFmpeg's format probe and for the
    /// container's name).
    #[serde(default)]
    pub extension: String,
    /// The server's pid: a worker whose parent is not it (the server died before the worker
    /// armed its parent-death signal) exits at once.
    #[serde(default)]
    pub parent_pid: Option<u32>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// What to do.
    pub task: Task,
}

/// The worker's resource limits (rlimits it sets on itself before touching the input).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// `RLIMIT_AS`, in MiB (`VIDEO_WORKER_MEMORY_MB`).
    pub memory_mb: u64,
    /// `RLIMIT_CPU`, in seconds (`VIDEO_WORKER_CPU_SECS`).
    pub cpu_secs: u64,
    /// `RLIMIT_FSIZE`: the largest file it may write, in bytes.
    pub file_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 2048,
            cpu_secs: 3600,
            file_bytes: 0,
            open_files: 64,
        }
    }
}

/// The work itself: the FFmpeg part of a pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Task {
    /// Duration, picture size, container and codecs.
    Probe,
    /// The thumbnail JPEG of a video `duration` seconds long.
    Thumbnail {
        /// From the probe.
        duration: f64,
    },
    /// The speech track, as FLAC chunks written into `out_dir` (the only place the worker may
    /// write).
    Audio {
        /// From the probe.
        duration: f64,
        /// An empty folder for the chunks.
        out_dir: std::path::PathBuf,
        /// Seconds per chunk.
        chunk_seconds: u32,
        /// Seconds encoded at most.
        max_seconds: f64,
    },
    /// No media work: confines itself as for real work, then tries what the sandbox must
    /// refuse (reading `outside_file`, opening a TCP socket and connecting to
    /// `127.0.0.1:tcp_port`, allocating past its memory limit) and reports what happened, with
    /// the rlimits in force. For deployment checks and tests.
    Check {
        /// A file the worker was not given.
        outside_file: std::path::PathBuf,
        /// A port to connect to on the loopback address.
        tcp_port: u16,
        /// A pathname UNIX socket to connect to (a local daemon's).
        #[serde(default)]
        unix_socket: Option<std::path::PathBuf>,
    },
}

impl Task {
    /// The task's name (`probe`, `thumbnail`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Task::Probe => "probe",
            Task::Thumbnail { .. } => "thumbnail",
            Task::Audio { .. } => "audio",
            Task::Check { .. } => "check",
        }
    }
}

/// What a worker confined itself with (in its `ready` line; the server logs it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// Landlock restricts file system access to the worker's paths.
    pub landlock_enforced: bool,
    /// The kernel's Landlock ABI version (`None`: no Landlock).
    pub landlock_abi: Option<i32>,
    /// In words: `fully enforced (ABI 7)`, `partially enforced …`, `not available …`.
    pub landlock: String,
    /// The seccomp filter is installed (no socket but AF_UNIX, no exec, no new process, …).
    pub seccomp: bool,
    /// The worker runs in a network namespace of its own (no interface but a down loopback).
    pub network_namespace: bool,
    /// Every Linux capability was dropped.
    pub capabilities_dropped: bool,
    /// The rlimits of the request are set.
    pub rlimits: bool,
    /// What could not be enforced, and why.
    pub notes: Vec<String>,
}

/// One line of a worker's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Confined and about to work.
    Ready {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// What is enforced.
        sandbox: SandboxReport,
    },
    /// The fraction of the task done, 0..=1.
    Progress {
        /// Fraction done.
        fraction: f64,
    },
    /// The task's result: a [`Probe`], [`ThumbnailResult`], [`AudioResult`] or
    /// [`CheckResult`] (the server parses the one of the task it asked for).
    Done {
        /// Per task.
        result: serde_json::Value,
    },
    /// The task failed.
    Failed {
        /// `unreadable` (the upload is not media this server reads; `message` is for its
        /// owner) or `internal`.
        kind: FailureKind,
        /// What went wrong.
        message: String,
    },
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The input is not a video this server reads.
    Unreadable,
    /// Something that should have worked did not.
    Internal,
}

/// The thumbnail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThumbnailResult {
    /// The JPEG file, base64.
    pub jpeg_base64: String,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Where in the video it was taken, in seconds.
    pub at_seconds: f64,
}

/// The speech track's chunks, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioResult {
    /// Chunks (files in the request's `out_dir`).
    pub chunks: Vec<ChunkFile>,
}

/// One FLAC chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkFile {
    /// Its file name in `out_dir` (`audio-000.flac`, …).
    pub file: String,
    /// Where it starts in the video, in seconds.
    pub start: f64,
    /// Its length, in seconds.
    pub duration: f64,
}

/// What [`Task::Check`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The input could be read.
    pub input_readable: bool,
    /// Reading `outside_file` failed.
    pub outside_file_denied: bool,
    /// What reading `outside_file` gave.
    pub outside_file: String,
    /// `socket(AF_INET, SOCK_STREAM)` failed.
    pub tcp_socket_denied: bool,
    /// What it gave.
    pub tcp_socket: String,
    /// Connecting to `127.0.0.1:tcp_port` failed (also true when no socket could be made).
    pub tcp_connect_denied: bool,
    /// What connecting gave.
    pub tcp_connect: String,
    /// `socket(AF_UNIX, SOCK_STREAM)` worked.
    pub unix_socket_allowed: bool,
    /// Connecting to the request's `unix_socket` failed (true when none was given).
    pub unix_connect_denied: bool,
    /// What connecting to it gave.
    pub unix_connect: String,
    /// Reserving 64 MiB more than `limits.memory_mb` failed.
    pub allocation_over_memory_limit_denied: bool,
    /// The rlimits in force (soft values), as `getrlimit` reads them.
    pub limits_in_force: Limits,
    /// `RLIMIT_CORE` in force.
    pub core_limit: u64,
    /// The worker's network namespace (`/proc/self/ns/net`, e.g. `net:[4026532281]`).
    pub network_namespace: Option<String>,
}
