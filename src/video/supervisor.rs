//! `JobSupervisor`: queues this node's video jobs and runs at most `VIDEO_WORKERS` of them at
//! once, each as a `VideoJob` actor.
//!
//! A job is claimed in the database before it starts (a lease, so two nodes never run the same
//! job). At start-up and then every `VIDEO_SWEEP_SECS` the supervisor looks for runnable jobs:
//! PENDING ones, and PROCESSING ones whose node went away (lease expired) or that this node ran
//! before it restarted — those resume from their last finished stage. Nothing is restarted
//! blindly: a job whose actor died is failed with the reason, and a job started
//! `VIDEO_MAX_ATTEMPTS` times without finishing is failed rather than resumed again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;

use super::job::VideoJob;
use super::messages::{
    Cancel, CancelJob, CancelOutcome, Enqueue, JobEnded, Release, Shutdown, Stats, SupervisorStats,
};
use super::responses::VideoJobResponse;
use super::JobEnv;
use crate::broker::{Event, Topic};
use crate::db::videos;

/// Runnable jobs read per sweep, per worker.
const SWEEP_BATCH_PER_WORKER: i64 = 4;

/// This node's video jobs.
pub struct JobSupervisor {
    env: Arc<JobEnv>,
    /// Jobs waiting for a worker, oldest first.
    queue: VecDeque<i32>,
    /// The same ids, for lookups.
    queued: HashSet<i32>,
    /// Jobs being claimed in the database right now.
    claiming: HashSet<i32>,
    /// Running jobs' actors.
    running: HashMap<i32, Addr<VideoJob>>,
    /// No new job starts once the node is shutting down.
    shutting_down: bool,
}

impl JobSupervisor {
    /// A supervisor over `env`.
    pub fn new(env: Arc<JobEnv>) -> JobSupervisor {
        JobSupervisor {
            env,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            claiming: HashSet::new(),
            running: HashMap::new(),
            shutting_down: false,
        }
    }

    fn knows(&self, id: i32) -> bool {
        self.queued.contains(&id) || self.claiming.contains(&id) || self.running.contains_key(&id)
    }

    fn enqueue(&mut self, id: i32) {
        if !self.knows(id) {
            self.queue.push_back(id);
            self.queued.insert(id);
        }
    }

    /// Starts queued jobs while workers are free.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        while !self.shutting_down
            && self.running.len() + self.claiming.len() < self.env.settings.workers
        {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            self.queued.remove(&id);
            self.claiming.insert(id);
            self.claim(id, ctx);
        }
    }

    fn claim(&mut self, id: i32, ctx: &mut Context<Self>) {
        let env = self.env.clone();
        let fut = async move {
            let mut conn = env.db.conn().await?;
            let until = crate::db::now()
                + chrono::Duration::from_std(env.settings.lease)
                    .unwrap_or(chrono::Duration::seconds(30));
            let Some(row) = videos::claim_job(&mut conn, id, &env.node_id, until).await? else {
                return Ok(None);
            };
            if row.attempts > env.settings.max_attempts {
                let n = row.attempts - 1;
                let why = format!(
                    "Processing was interrupted {n} time{}; giving up.",
                    if n == 1 { "" } else { "s" }
                );
                let failed = videos::fail_held_job(&mut conn, id, &env.node_id, &why).await?;
                return Ok(failed.map(|f| (f, None)));
            }
            let video = videos::find_video(&mut conn, row.video_id).await?;
            Ok::<_, crate::db::DbError>(Some((row, video)))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.claiming.remove(&id);
            match res {
                Ok(Some((row, Some(video)))) if !act.shutting_down => {
                    let env = act.env.clone();
                    let me = ctx.address();
                    let addr = VideoJob::new(env, me, row, video).start();
                    act.running.insert(id, addr);
                }
                Ok(Some((row, Some(_)))) => {
                    // Shutting down: let the claim's lease lapse at once for the next start.
                    act.release(vec![row.id], ctx);
                }
                Ok(Some((row, None))) => {
                    // Failed for too many attempts (or its video vanished): tell the owner.
                    if row.status == videos::STATUS_FAILED {
                        act.publish(&row);
                    } else {
                        act.fail(row.id, "The job's video no longer exists.".into(), ctx);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job = id, error = %e, "could not claim a video job; will retry");
                }
            }
            act.fill(ctx);
        }));
    }

    fn publish(&self, row: &videos::VideoJob) {
        let job = VideoJobResponse::from(row).to_event_json();
        self.env
            .broker
            .publish(Topic::User(row.user_id.0), Event::Job { job });
    }

    /// Fails a job this node holds (its actor died) with `why`.
    fn fail(&mut self, id: i32, why: String, ctx: &mut Context<Self>) {
        tracing::error!(job = id, reason = %why, "video job failed by its supervisor");
        let env = self.env.clone();
        let fut = async move {
            let mut conn = env.db.conn().await?;
            Ok::<_, crate::db::DbError>(
                videos::fail_held_job(&mut conn, id, &env.node_id, &why).await?,
            )
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(Some(row)) => act.publish(&row),
            Ok(None) => {}
            Err(e) => tracing::warn!(job = id, error = %e, "could not fail a video job"),
        }));
    }

    fn release(&mut self, ids: Vec<i32>, ctx: &mut Context<Self>) {
        if ids.is_empty() {
            return;
        }
        let env = self.env.clone();
        let fut = async move {
            let mut conn = env.db.conn().await?;
            Ok::<_, crate::db::DbError>(
                videos::release_leases(&mut conn, &ids, &env.node_id).await?,
            )
        };
        ctx.wait(fut.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                tracing::warn!(error = %e, "could not release video job leases");
            }
        }));
    }

    /// Finds runnable jobs in the database and fails jobs whose actor vanished.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let dead: Vec<i32> = self
            .running
            .iter()
            .filter(|(_, addr)| !addr.connected())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.running.remove(&id);
            self.fail(id, "The job's actor stopped unexpectedly.".into(), ctx);
        }
        let env = self.env.clone();
        let limit = (self.env.settings.workers as i64).saturating_mul(SWEEP_BATCH_PER_WORKER);
        let fut = async move {
            let mut conn = env.db.conn().await?;
            Ok::<_, crate::db::DbError>(
                videos::runnable_jobs(&mut conn, &env.node_id, crate::db::now(), limit).await?,
            )
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok(ids) => {
                    for id in ids {
                        act.enqueue(id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look for runnable video jobs"),
            }
            act.fill(ctx);
        }));
    }
}

impl Actor for JobSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Scratch folders of a previous run of this node are garbage: their jobs resume with a
        // fresh one.
        if let Ok(entries) = std::fs::read_dir(&self.env.work_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        tracing::info!(
            workers = self.env.settings.workers,
            node = %self.env.node_id,
            "video job supervisor started"
        );
        self.sweep(ctx);
        ctx.run_interval(self.env.settings.sweep_interval, |act, ctx| act.sweep(ctx));
    }
}

impl Handler<Enqueue> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.enqueue(msg.job_id);
        self.fill(ctx);
    }
}

impl Handler<CancelJob> for JobSupervisor {
    type Result = ResponseActFuture<Self, CancelOutcome>;

    fn handle(&mut self, msg: CancelJob, _: &mut Context<Self>) -> Self::Result {
        if self.queued.remove(&msg.job_id) {
            self.queue.retain(|id| *id != msg.job_id);
        }
        let Some(addr) = self.running.get(&msg.job_id).cloned() else {
            return Box::pin(actix::fut::ready(CancelOutcome::NotRunningHere));
        };
        Box::pin(
            async move {
                match addr.send(Cancel).await {
                    Ok(Some(row)) => CancelOutcome::Cancelled(Box::new(row)),
                    Ok(None) => CancelOutcome::AlreadyFinished,
                    Err(_) => CancelOutcome::NotRunningHere,
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<JobEnded> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, msg: JobEnded, ctx: &mut Context<Self>) {
        self.running.remove(&msg.job_id);
        if let Some(why) = msg.failure {
            if !self.shutting_down {
                self.fail(msg.job_id, why, ctx);
            }
        }
        self.fill(ctx);
    }
}

impl Handler<Shutdown> for JobSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        self.queue.clear();
        self.queued.clear();
        let jobs: Vec<(i32, Addr<VideoJob>)> = self
            .running
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        if !jobs.is_empty() {
            let ids: Vec<i32> = jobs.iter().map(|(id, _)| *id).collect();
            tracing::info!(jobs = ?ids, "releasing running video jobs for the next start");
        }
        let env = self.env.clone();
        Box::pin(
            async move {
                // Each actor handles `Release` after any write it has in flight, so the leases
                // released below stay released.
                let mut ids = Vec::with_capacity(jobs.len());
                for (id, addr) in jobs {
                    let _ = addr.send(Release).await;
                    ids.push(id);
                }
                if ids.is_empty() {
                    return;
                }
                let released = async {
                    let mut conn = env.db.conn().await?;
                    Ok::<_, crate::db::DbError>(
                        videos::release_leases(&mut conn, &ids, &env.node_id).await?,
                    )
                };
                if let Err(e) = released.await {
                    tracing::warn!(error = %e, "could not release video job leases");
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<Stats> for JobSupervisor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(SupervisorStats {
            running: self.running.len(),
            queued: self.queue.len(),
            workers: self.env.settings.workers,
        })
    }
}
