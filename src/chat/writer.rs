//! The message writer: every post of this node (REST `POST /messages/`, WebSocket `send` and
//! `prompt`, stored AI replies) goes through here, in batches.
//!
//! Posts queue on a lane (a chat always on the same lane, so one chat's posts are never in two
//! transactions at once on this node). A lane takes everything waiting, up to
//! `DATABASE_WRITE_BATCH` posts, and stores it in one transaction — on Postgres one statement
//! for every chat in the batch. While a batch commits the next one gathers, so the busier the
//! node, the larger the batches and the fewer the round trips. Each caller is answered when its
//! batch has committed, never before. A batch that fails is retried post by post, each in its
//! own transaction, so one bad post (or a concurrent retry of the same `client_msg_id` on
//! another node) fails only itself, and nothing leaves a gap in `seq`.

use std::hash::{Hash, Hasher};

use std::sync::Arc;

use crate::db::messages::{self, Post, Posted};
use crate::db::{Db, DbError};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use tokio::sync::{mpsc, oneshot};

/// Posts a lane may hold waiting before callers wait to queue.
const LANE_QUEUE: usize = 4096;

/// How the writer is laid out.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Lanes (each at most one transaction at a time).
    pub lanes: usize,
    /// Most posts in one batch.
    pub max_batch: usize,
}

/// One post waiting, with the way back to its caller.
struct Job {
    post: Post,
    done: oneshot::Sender<ApiResult<Posted>>,
}

/// Handle to the writer's lanes. Cheap to clone; the lanes stop when every handle is gone.
#[derive(Clone)]
pub struct Writer {
    lanes: Vec<mpsc::Sender<Job>>,
}

impl Writer {
    /// Starts the lanes on the current runtime.
    pub fn start(db: Db, settings: WriterSettings, metrics: Arc<Metrics>) -> Writer {
        let lanes = (0..settings.lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(lane(
                    db.clone(),
                    rx,
                    settings.max_batch.max(1),
                    metrics.clone(),
                ));
                tx
            })
            .collect();
        Writer { lanes }
    }

    /// Stores `post` with its batch; answers once that batch committed.
    pub async fn write(&self, post: Post) -> ApiResult<Posted> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        post.chat_id.hash(&mut hasher);
        let lane = (hasher.finish() % self.lanes.len() as u64) as usize;
        let (done, answer) = oneshot::channel();
        let stopped = || ApiError::Unavailable("the message writer has stopped".into());
        self.lanes
            .get(lane)
            .ok_or_else(stopped)?
            .send(Job { post, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One lane: takes what is waiting, stores it, answers, again.
async fn lane(db: Db, mut rx: mpsc::Receiver<Job>, max_batch: usize, metrics: Arc<Metrics>) {
    let mut jobs = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        metrics.message_batch_posts.observe(jobs.len() as f64);
        store(&db, std::mem::take(&mut jobs)).await;
    }
}

/// Stores one batch and answers each of its callers.
async fn store(db: &Db, jobs: Vec<Job>) {
    let (posts, callers): (Vec<Post>, Vec<oneshot::Sender<ApiResult<Posted>>>) =
        jobs.into_iter().map(|j| (j.post, j.done)).unzip();
    let mut conn = match db.conn().await {
        Ok(conn) => conn,
        Err(e) => {
            let why = match e {
                DbError::Unavailable(why) => why,
                other => other.to_string(),
            };
            for caller in callers {
                let _ = caller.send(Err(ApiError::Unavailable(why.clone())));
            }
            return;
        }
    };
    match messages::append_batch(&mut conn, &posts).await {
        Ok(outcomes) => {
            for (caller, outcome) in callers.into_iter().zip(outcomes) {
                let _ = caller.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, posts = posts.len(), "batch failed; storing its posts one by one");
            for (post, caller) in posts.iter().zip(callers) {
                let outcome = messages::append_one(&mut conn, post).await;
                let _ = caller.send(outcome.map_err(ApiError::from));
            }
        }
    }
}
