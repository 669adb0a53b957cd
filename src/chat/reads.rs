//! The membership reader: a subscribing session's check (is the user a member, and what is
//! the chat's `last_seq`) read together with every other one waiting, in one query.
//!
//! When thousands of sessions subscribe at once (a node restarts and its clients come back),
//! each would otherwise take a pooled connection for one tiny query, and the pool's wait queue
//! — not the database — sets the pace. Here one lane takes what is waiting (up to
//! [`MAX_BATCH`]) and answers it with one query on one connection. Nothing is cached: each
//! answer is read after its request arrived, so a member removed a moment ago is refused on
//! every node at once.

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::{chats, Db};
use crate::error::{ApiError, ApiResult};

/// Most checks answered by one query.
pub const MAX_BATCH: usize = 256;
/// Checks that may wait before callers wait to queue.
const QUEUE: usize = 4096;

type Answer = oneshot::Sender<ApiResult<Option<i64>>>;

/// Handle to the reader. Cheap to clone; its lane stops when every handle is gone.
#[derive(Clone)]
pub struct MembershipReader {
    tx: mpsc::Sender<((Uuid, Uuid), Answer)>,
}

impl MembershipReader {
    /// Starts the reader's lane on the current runtime.
    pub fn start(db: Db) -> MembershipReader {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(lane(db, rx));
        MembershipReader { tx }
    }

    /// The chat's `last_seq` if `user` is a member of it, `None` otherwise.
    pub async fn last_seq_for_member(&self, chat_id: Uuid, user: Uuid) -> ApiResult<Option<i64>> {
        let (done, answer) = oneshot::channel();
        let stopped = || ApiError::Unavailable("the membership reader has stopped".into());
        self.tx
            .send(((chat_id, user), done))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn lane(db: Db, mut rx: mpsc::Receiver<((Uuid, Uuid), Answer)>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let (pairs, answers): (Vec<(Uuid, Uuid)>, Vec<Answer>) =
            std::mem::take(&mut waiting).into_iter().unzip();
        let result = async {
            let mut conn = db.conn().await?;
            Ok::<_, ApiError>(chats::last_seqs_for_members(&mut conn, &pairs).await?)
        }
        .await;
        match result {
            Ok(seqs) => {
                for (answer, seq) in answers.into_iter().zip(seqs) {
                    let _ = answer.send(Ok(seq));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for answer in answers {
                    let _ = answer.send(Err(ApiError::Unavailable(message.clone())));
                }
            }
        }
    }
}
