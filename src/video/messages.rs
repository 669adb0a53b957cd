//! Messages between the video service, the `JobSupervisor` and the `VideoJob` actors.

use actix::prelude::*;

use crate::db::videos::VideoJob as JobRow;

/// Service → supervisor: a job was created (an upload completed); run it when a worker is free.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    /// The job.
    pub job_id: i32,
}

/// Service → supervisor: the owner cancels a job. `Cancelled` when this node was running it
/// and its actor stopped it; `NotRunningHere` when the service must cancel it in the database.
#[derive(Message)]
#[rtype(result = "CancelOutcome")]
pub struct CancelJob {
    /// The job.
    pub job_id: i32,
}

/// What [`CancelJob`] did.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The running job stopped; its row as written.
    Cancelled(Box<JobRow>),
    /// The job finished before the cancel reached it.
    AlreadyFinished,
    /// This node does not run the job (queued here, elsewhere, or not started).
    NotRunningHere,
}

/// Supervisor → job: stop and write `CANCELLED`; answers the row written, or `None` when the
/// job had already finished.
#[derive(Message)]
#[rtype(result = "Option<JobRow>")]
pub struct Cancel;

/// Supervisor → job: the node is shutting down; stop work without writing anything, leaving
/// the job to be resumed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

/// Job → supervisor: the job's actor stopped. `failure` says why when it died without ending
/// its job (the supervisor then fails the job with that reason).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobEnded {
    /// The job.
    pub job_id: i32,
    /// Why the actor died, when it did not end its job itself.
    pub failure: Option<String>,
}

/// Shutdown → supervisor: release every running job (their leases expire at once so the next
/// start resumes them) and stop starting new ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Anyone → supervisor: how many jobs run and wait on this node.
#[derive(Message)]
#[rtype(result = "SupervisorStats")]
pub struct Stats;

/// Occupancy of this node's supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Jobs running.
    pub running: usize,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// `VIDEO_WORKERS`.
    pub workers: usize,
}
