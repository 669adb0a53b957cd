//! The media sandbox: FFmpeg never runs in the server process. Each FFmpeg part of a stage
//! (probe, thumbnail, speech audio) runs in a fresh `echo-server media-worker` child process
//! ([`worker`]) that confines itself before it reads the upload ([`confine`]: its own network
//! namespace, rlimits, no capabilities, Landlock, seccomp) and talks JSON lines over its stdin
//! and stdout ([`protocol`]). The job's actor stays the owner of the job: [`runner`] starts the
//! worker, relays its progress, kills it on cancel or at its deadline, and turns a crash, a
//! hang or garbage into a failed attempt of that one job. See `docs/SECURITY-media.md`.

pub mod confine;
pub mod protocol;
pub mod runner;
pub mod worker;

pub use runner::{run, WorkerError, WORKER_SUBCOMMAND};
