//! `VideoJob`: one actor per running job. It owns the job's state and is its only writer: it
//! runs the stages in order (skipping those a previous run finished), persists `status`,
//! `stage`, `progress` and `processing_stages` (progress at most once a second, every stage and
//! status change at once), and publishes `job` events to the owner's feed (at most 4 progress
//! updates a second, plus every status change).
//!
//! Every write is conditional on the job's lease, which the actor renews; a job cancelled on
//! another node, or taken over after this one stalled, is noticed at the next write and left
//! alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::media::{Cancel, Progress};
use super::messages::{Cancel as CancelMsg, Enqueue, JobEnded, Release};
use super::model::{ProcessingStages, Stage, StageResults, StageStatus};
use super::pipeline::{self, StageError, StageInput, StageOutput, Workspace};
use super::responses::VideoJobResponse;
use super::supervisor::JobSupervisor;
use super::JobEnv;
use crate::broker::{Event, Topic};
use crate::db::videos::{
    self, Video, VideoJob as JobRow, STATUS_CANCELLED, STATUS_COMPLETED, STATUS_FAILED,
    STATUS_PROCESSING,
};

/// How often progress is looked at (and, when it moved, published): 4 times a second.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two progress writes to the database.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// One running job.
pub struct VideoJob {
    env: Arc<JobEnv>,
    supervisor: Addr<JobSupervisor>,
    /// The row as last written (or as claimed).
    row: JobRow,
    video: Video,
    stages: ProcessingStages,
    results: StageResults,
    /// The stage running, if any.
    current: Option<Stage>,
    /// A stage future is in flight.
    stage_running: bool,
    progress: Progress,
    cancel: Cancel,
    workspace: Option<Arc<Workspace>>,
    /// The job reached a terminal state (or was given up); nothing more is written.
    finished: bool,
    /// The supervisor was told this actor ended.
    reported: bool,
    /// This attempt was given up (its media worker crashed or hung) and the job waits for the
    /// next: the supervisor queues it again when this actor stops.
    retry: bool,
    last_persist: Instant,
    /// Progress (overall) in the last published event.
    published: i32,
    /// Status in the last published event.
    published_status: String,
    /// When the last event went out.
    last_event: Option<Instant>,
    /// A change waits for the next tick to be published (the event rate limit).
    unpublished: bool,
}

impl VideoJob {
    /// An actor for a job this node just claimed.
    pub fn new(
        env: Arc<JobEnv>,
        supervisor: Addr<JobSupervisor>,
        row: JobRow,
        video: Video,
    ) -> Self {
        let stages = ProcessingStages::from_json(row.processing_stages.as_ref());
        let results = StageResults::from_json(row.stage_results.as_ref());
        VideoJob {
            env,
            supervisor,
            published: row.progress,
            published_status: String::new(),
            last_event: None,
            unpublished: false,
            row,
            video,
            stages,
            results,
            current: None,
            stage_running: false,
            progress: Progress::new(),
            cancel: Cancel::new(),
            workspace: None,
            finished: false,
            reported: false,
            retry: false,
            last_persist: Instant::now(),
        }
    }

    fn user(&self) -> uuid::Uuid {
        self.row.user_id.0
    }

    /// Publishes the job as it is in memory to the owner's sessions: at once for a status
    /// change, otherwise at most once per [`TICK`] (a change within it goes out at the next
    /// tick).
    fn publish(&mut self) {
        let status_changed = self.row.status != self.published_status;
        if !status_changed && self.last_event.is_some_and(|t| t.elapsed() < TICK) {
            self.unpublished = true;
            return;
        }
        self.unpublished = false;
        self.last_event = Some(Instant::now());
        self.published = self.row.progress;
        self.published_status = self.row.status.clone();
        let job = VideoJobResponse::from(&self.row).to_event_json();
        self.env
            .broker
            .publish(Topic::User(self.user()), Event::Job { job });
    }

    /// A future writing the in-memory state as `status` (`stage`, `error`, `lease_until` as
    /// given); `Ok(None)` when this node no longer holds the job.
    fn write_row(
        &self,
        status: &'static str,
        stage: Option<String>,
        error: Option<String>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> impl std::future::Future<Output = Result<Option<JobRow>, crate::db::DbError>> + 'static
    {
        let env = self.env.clone();
        let id = self.row.id;
        let stages = self.stages.to_json();
        let results = self.results.to_json();
        let progress = self.row.progress;
        async move {
            let mut conn = env.db.conn().await?;
            let write = videos::JobWrite {
                status,
                progress,
                stage: stage.as_deref(),
                processing_stages: &stages,
                stage_results: &results,
                error_message: error.as_deref(),
                lease_until,
            };
            Ok(videos::write_job(&mut conn, id, &env.node_id, &write).await?)
        }
    }

    /// Writes the in-memory state (as `status`) and then publishes it. A lost lease stops the
    /// actor without touching the job again.
    fn persist(&mut self, status: &'static str, ctx: &mut Context<Self>) {
        self.last_persist = Instant::now();
        let terminal = status != STATUS_PROCESSING;
        let stage = if status == STATUS_COMPLETED {
            None
        } else {
            self.current.map(|s| s.name().to_string())
        };
        let lease_until = crate::db::now()
            + chrono::Duration::from_std(self.env.settings.lease)
                .unwrap_or(chrono::Duration::seconds(30));
        let fut = self.write_row(status, stage, self.row.error_message.clone(), lease_until);
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Some(row)) => {
                act.row = row;
                act.publish();
                if terminal {
                    act.finished = true;
                    act.cancel.cancel();
                    if !act.stage_running {
                        ctx.stop();
                    }
                }
            }
            Ok(None) => act.lost(ctx),
            Err(e) => {
                // A failed terminal write leaves the job PROCESSING under a lease that will
                // expire: another start resumes it. Progress writes are simply retried later.
                tracing::warn!(job = act.row.id, error = %e, "could not write a video job");
                if terminal {
                    act.finished = true;
                    act.cancel.cancel();
                    if !act.stage_running {
                        ctx.stop();
                    }
                }
            }
        }));
    }

    /// The job was cancelled elsewhere or taken over: stop without writing.
    fn lost(&mut self, ctx: &mut Context<Self>) {
        if !self.finished {
            tracing::info!(
                job = self.row.id,
                "video job no longer held by this node; stopping"
            );
        }
        self.finished = true;
        self.cancel.cancel();
        if !self.stage_running {
            ctx.stop();
        }
    }

    /// Starts the next stage not done yet, or completes the job.
    fn advance(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            ctx.stop();
            return;
        }
        let Some(stage) = Stage::ALL.into_iter().find(|s| !self.stages.is_done(*s)) else {
            self.current = None;
            self.row.progress = 100;
            self.persist(STATUS_COMPLETED, ctx);
            return;
        };
        let Some(workspace) = self.workspace.clone() else {
            self.fail(ctx, "Could not create the job's scratch folder.".into());
            return;
        };
        self.current = Some(stage);
        self.progress.reset();
        self.stages.start(stage, crate::db::now());
        self.row.stage = Some(stage.name().into());
        self.row.progress = self.row.progress.max(stage.overall(0.0));
        self.persist(STATUS_PROCESSING, ctx);
        let input = StageInput {
            env: self.env.clone(),
            job_id: self.row.id,
            video: self.video.clone(),
            results: self.results.clone(),
            workspace,
            cancel: self.cancel.clone(),
            progress: self.progress.clone(),
        };
        self.stage_running = true;
        ctx.spawn(
            pipeline::run(stage, input)
                .into_actor(self)
                .map(move |res, act, ctx| act.stage_done(stage, res, ctx)),
        );
    }

    fn stage_done(
        &mut self,
        stage: Stage,
        res: Result<StageOutput, StageError>,
        ctx: &mut Context<Self>,
    ) {
        self.stage_running = false;
        if self.finished {
            ctx.stop();
            return;
        }
        match res {
            Ok(out) => {
                let now = crate::db::now();
                self.results = out.results;
                let status = if out.skipped {
                    StageStatus::Skipped
                } else {
                    StageStatus::Completed
                };
                self.stages.finish(stage, status, now, None);
                for s in out.skip {
                    self.stages.finish(s, StageStatus::Skipped, now, None);
                }
                if stage != Stage::Finalize {
                    self.row.progress = self.row.progress.max(stage.overall(1.0));
                }
                self.advance(ctx);
            }
            Err(StageError::Cancelled) => {
                // Cancelled by the owner (already written), released at shutdown, or lost.
                ctx.stop();
            }
            Err(StageError::Failed(why)) => self.fail(ctx, why),
            Err(StageError::Attempt(why)) => self.attempt_failed(ctx, why),
        }
    }

    /// The media worker of this attempt crashed, hung or hit a limit: the job is tried again
    /// (resuming at this stage) while it has attempts left, else failed with `why`.
    fn attempt_failed(&mut self, ctx: &mut Context<Self>, why: String) {
        let attempt = self.row.attempts;
        let max = self.env.settings.max_attempts;
        if attempt >= max {
            let s = if attempt == 1 { "" } else { "s" };
            self.fail(ctx, format!("{why} Gave up after {attempt} attempt{s}."));
            return;
        }
        tracing::warn!(
            job = self.row.id,
            stage = ?self.current,
            attempt,
            max,
            error = %why,
            "video job attempt failed; it will be tried again"
        );
        if let Some(stage) = self.current {
            self.stages
                .finish(stage, StageStatus::Failed, crate::db::now(), Some(why));
        }
        // Still PROCESSING and held by this node, with a lease that has already run out: the
        // next claim (the supervisor's, when this actor stops) counts the next attempt.
        self.finished = true;
        let stage = self.current.map(|s| s.name().to_string());
        let fut = self.write_row(STATUS_PROCESSING, stage, None, crate::db::now());
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok(Some(row)) => {
                    act.row = row;
                    act.publish();
                    act.retry = true;
                }
                // Cancelled meanwhile, or taken over: nothing to retry here.
                Ok(None) => {}
                Err(e) => {
                    // The lease runs out by itself; a later sweep resumes the job.
                    tracing::warn!(job = act.row.id, error = %e, "could not write a video job");
                }
            }
            ctx.stop();
        }));
    }

    fn fail(&mut self, ctx: &mut Context<Self>, why: String) {
        tracing::info!(job = self.row.id, stage = ?self.current, error = %why, "video job failed");
        if let Some(stage) = self.current {
            self.stages.finish(
                stage,
                StageStatus::Failed,
                crate::db::now(),
                Some(why.clone()),
            );
        }
        self.row.error_message = Some(why);
        self.persist(STATUS_FAILED, ctx);
    }

    /// Looks at the running stage's progress: publishes it when it moved, persists it at most
    /// once a second.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.unpublished && !self.finished {
            self.publish();
        }
        let Some(stage) = self
            .current
            .filter(|_| self.stage_running && !self.finished)
        else {
            return;
        };
        let fraction = self.progress.get();
        let overall = self.row.progress.max(stage.overall(fraction));
        let within = (fraction * 100.0).floor() as i32;
        let moved = overall != self.published
            || self.stages.get(stage).is_some_and(|s| s.progress != within);
        if !moved {
            return;
        }
        self.row.progress = overall;
        self.stages.progress(stage, within);
        self.row.processing_stages = Some(self.stages.to_json());
        self.row.updated_at = crate::db::now();
        if self.last_persist.elapsed() >= PERSIST_INTERVAL {
            self.persist(STATUS_PROCESSING, ctx);
        } else {
            self.publish();
        }
    }

    fn renew(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        let env = self.env.clone();
        let id = self.row.id;
        let until = crate::db::now()
            + chrono::Duration::from_std(env.settings.lease)
                .unwrap_or(chrono::Duration::seconds(30));
        let fut = async move {
            let mut conn = env.db.conn().await?;
            Ok::<_, crate::db::DbError>(
                videos::renew_lease(&mut conn, id, &env.node_id, until).await?,
            )
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(true) => {}
            Ok(false) => act.lost(ctx),
            Err(e) => {
                tracing::warn!(job = act.row.id, error = %e, "could not renew a video job's lease")
            }
        }));
    }
}

impl Actor for VideoJob {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match Workspace::create(&self.env.work_dir, self.row.id) {
            Ok(ws) => self.workspace = Some(ws),
            Err(e) => {
                tracing::error!(job = self.row.id, error = %e, "could not create a job's scratch folder")
            }
        }
        tracing::info!(
            job = self.row.id,
            video = self.video.id,
            attempt = self.row.attempts,
            "video job started"
        );
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        let renew_every = (self.env.settings.lease / 3).max(Duration::from_millis(500));
        ctx.run_interval(renew_every, |act, ctx| act.renew(ctx));
        self.advance(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.cancel.cancel();
        self.workspace = None;
        self.reported = true;
        self.supervisor.do_send(JobEnded {
            job_id: self.row.id,
            failure: None,
        });
        if self.retry {
            // After `JobEnded` (same mailbox, in order): the slot is free when it is claimed.
            self.supervisor.do_send(Enqueue {
                job_id: self.row.id,
            });
        }
    }
}

impl Drop for VideoJob {
    fn drop(&mut self) {
        // Stops the media worker whatever happened to the actor.
        self.cancel.cancel();
        if !self.reported {
            let why = if std::thread::panicking() {
                "the job's actor panicked"
            } else {
                "the job's actor stopped unexpectedly"
            };
            self.supervisor.do_send(JobEnded {
                job_id: self.row.id,
                failure: Some(why.into()),
            });
        }
    }
}

impl Handler<CancelMsg> for VideoJob {
    type Result = AtomicResponse<Self, Option<JobRow>>;

    fn handle(&mut self, _: CancelMsg, _: &mut Context<Self>) -> Self::Result {
        if self.finished {
            return AtomicResponse::new(Box::pin(actix::fut::ready(None)));
        }
        self.cancel.cancel();
        if let Some(stage) = self.current {
            self.stages
                .finish(stage, StageStatus::Cancelled, crate::db::now(), None);
        }
        let stage = self.current.map(|s| s.name().to_string());
        let fut = self.write_row(STATUS_CANCELLED, stage, None, crate::db::now());
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|res, act, ctx| {
            act.finished = true;
            let row = match res {
                Ok(Some(row)) => {
                    act.row = row.clone();
                    act.publish();
                    Some(row)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(job = act.row.id, error = %e, "could not write a cancelled video job");
                    None
                }
            };
            if !act.stage_running {
                ctx.stop();
            }
            row
        })))
    }
}

impl Handler<Release> for VideoJob {
    type Result = ();

    fn handle(&mut self, _: Release, ctx: &mut Context<Self>) {
        self.finished = true;
        self.cancel.cancel();
        if !self.stage_running {
            ctx.stop();
        }
    }
}

/// The terminal statuses a job can end in.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, STATUS_COMPLETED | STATUS_FAILED | STATUS_CANCELLED)
}
