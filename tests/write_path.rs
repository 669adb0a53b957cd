//! The message writer (docs/ARCHITECTURE.md, "The write path"): posts that arrive together are
//! stored together, in one transaction per batch, with consecutive `seq`s in arrival order;
//! non-members, repeated `client_msg_id`s and a post the database refuses are answered one by
//! one, and nothing leaves a gap in `seq`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{spawn_app, Backend, TestApp, TestUser};
use echo::chat::service::PostMessage;
use echo::error::ApiError;
use futures_util::future::join_all;
use serde_json::Value;
use uuid::Uuid;

/// A user the server knows.
async fn known_user(app: &TestApp) -> TestUser {
    let user = TestUser::new();
    app.touch(&user.token).await;
    user
}

async fn new_chat(app: &TestApp, owner: &TestUser) -> Uuid {
    let chat = app.create_chat(&owner.token, "writer").await;
    chat["id"].as_str().unwrap().parse().unwrap()
}

fn post(chat_id: Uuid, content: &str, key: Option<Uuid>) -> PostMessage {
    PostMessage {
        chat_id,
        content: content.to_string(),
        is_from_ai: false,
        client_msg_id: key,
    }
}

/// Every stored message of a chat, in `seq` order, as (seq, content).
async fn stored(app: &TestApp, token: &str, chat_id: Uuid) -> Vec<(i64, String)> {
    let res = app
        .get(
            &format!("/chats/{chat_id}/messages/?limit=100"),
            Some(token),
        )
        .await;
    assert_eq!(res.status(), 200);
    let list: Vec<Value> = res.json().await.unwrap();
    list.iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `(count, sum)` of the writer's batch-size histogram.
fn batches(app: &TestApp) -> (u64, f64) {
    let h = &app.state.metrics.message_batch_posts;
    (h.get_sample_count(), h.get_sample_sum())
}

async fn a_burst_is_stored_in_batches_in_arrival_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, mallory) = (
        known_user(&app).await,
        known_user(&app).await,
        known_user(&app).await,
    );
    let (a, b) = (new_chat(&app, &alice).await, new_chat(&app, &alice).await);
    app.add_member(&alice.token, &a.to_string(), bob.id).await;
    let key = Uuid::new_v4();

    // 130 posts issued at once: interleaved authors and chats, a non-member, and one
    // client_msg_id retried ten times inside the burst.
    let mut burst: Vec<(Uuid, PostMessage)> = Vec::new();
    for i in 0..40 {
        burst.push((alice.id, post(a, &format!("a{i}"), None)));
        burst.push((alice.id, post(b, &format!("b{i}"), None)));
        if i % 2 == 0 {
            burst.push((bob.id, post(a, &format!("bob{i}"), None)));
        }
        if i % 4 == 0 {
            burst.push((mallory.id, post(a, &format!("mallory{i}"), None)));
            burst.push((alice.id, post(a, "retried", Some(key))));
        }
    }
    let chats = app.state.chats.clone();
    let answers = join_all(
        burst
            .iter()
            .map(|(user, msg)| chats.post(*user, msg.clone())),
    )
    .await;

    let mut retried_ids = Vec::new();
    let mut created_retries = 0;
    for ((user, msg), answer) in burst.iter().zip(&answers) {
        if *user == mallory.id {
            assert!(
                matches!(answer, Err(ApiError::NotFound(_))),
                "a non-member's post is refused as not found: {answer:?}"
            );
            continue;
        }
        let appended = answer.as_ref().expect("a member's post is stored");
        assert_eq!(appended.message.content, msg.content);
        assert_eq!(appended.message.chat_id.0, msg.chat_id);
        if msg.client_msg_id.is_some() {
            retried_ids.push(appended.message.id.0);
            created_retries += usize::from(appended.created);
        } else {
            assert!(appended.created);
        }
    }
    assert_eq!(created_retries, 1, "one of the ten retries stored it");
    assert!(
        retried_ids.iter().all(|id| *id == retried_ids[0]),
        "every retry answers with the one stored message"
    );

    // Each chat: seqs 1..n with no gap, in the order the posts were issued.
    for (chat, token) in [(a, &alice.token), (b, &alice.token)] {
        let rows = stored(&app, token, chat).await;
        let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=rows.len() as i64).collect::<Vec<_>>(), "no gap");
        let mut expected: Vec<&str> = Vec::new();
        for (user, msg) in &burst {
            let repeat = msg.client_msg_id.is_some() && expected.contains(&"retried");
            if msg.chat_id == chat && *user != mallory.id && !repeat {
                expected.push(&msg.content);
            }
        }
        let contents: Vec<&str> = rows.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(contents, expected, "stored in arrival order");
        // The seq each caller was given is the stored one.
        let by_content: HashMap<&str, i64> = rows.iter().map(|(s, c)| (c.as_str(), *s)).collect();
        for ((_, msg), answer) in burst.iter().zip(&answers) {
            if let (Ok(appended), true) = (answer, msg.chat_id == chat) {
                assert_eq!(
                    Some(&appended.message.seq),
                    by_content.get(msg.content.as_str())
                );
            }
        }
    }

    let (count, sum) = batches(&app);
    assert_eq!(
        sum as usize,
        burst.len(),
        "every post went through the writer"
    );
    assert!(
        count * 4 <= burst.len() as u64,
        "{} posts issued at once took {count} batches",
        burst.len()
    );
    app.stop().await;
}

/// Makes the database refuse any message whose content is `boom`, as a failing constraint
/// would: the batch holding it fails as a whole.
async fn refuse_boom(app: &TestApp, backend: Backend) {
    match backend {
        Backend::Postgres => {
            use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
            let mut c = AsyncPgConnection::establish(&app.database_url)
                .await
                .unwrap();
            c.batch_execute(
                "ALTER TABLE messages ADD CONSTRAINT no_boom CHECK (content <> 'boom')",
            )
            .await
            .unwrap();
        }
        Backend::Sqlite => {
            use diesel::connection::SimpleConnection;
            use diesel::Connection;
            let mut c = diesel::SqliteConnection::establish(&app.database_url).unwrap();
            c.batch_execute(
                "CREATE TRIGGER no_boom BEFORE INSERT ON messages WHEN NEW.content = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'boom refused'); END;",
            )
            .unwrap();
        }
    }
}

async fn a_post_the_database_refuses_fails_alone_and_leaves_no_gap(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = known_user(&app).await;
    let chat = new_chat(&app, &alice).await;
    refuse_boom(&app, backend).await;
    let contents: Vec<String> = (0..30)
        .map(|i| {
            if i == 13 {
                "boom".into()
            } else {
                format!("m{i}")
            }
        })
        .collect();
    let chats = app.state.chats.clone();
    let answers = join_all(
        contents
            .iter()
            .map(|c| chats.post(alice.id, post(chat, c, None))),
    )
    .await;
    for (content, answer) in contents.iter().zip(&answers) {
        if content == "boom" {
            assert!(
                matches!(answer, Err(ApiError::Internal(_))),
                "the refused post fails: {answer:?}"
            );
        } else {
            assert!(answer.is_ok(), "{content}: {answer:?}");
        }
    }
    let rows = stored(&app, &alice.token, chat).await;
    let expected: Vec<(i64, String)> = contents
        .iter()
        .filter(|c| *c != "boom")
        .enumerate()
        .map(|(i, c)| (i as i64 + 1, c.clone()))
        .collect();
    assert_eq!(
        rows, expected,
        "the others stored in order, seqs without a gap"
    );
    // The chat goes on: the next post takes the next seq.
    let next = chats
        .post(alice.id, post(chat, "after", None))
        .await
        .unwrap();
    assert_eq!(next.message.seq, expected.len() as i64 + 1);
    app.stop().await;
}

async fn subscribes_read_together_each_get_their_own_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = known_user(&app).await;
    let members: Vec<TestUser> = join_all((0..5).map(|_| known_user(&app))).await;
    let outsider = known_user(&app).await;
    let (a, b) = (new_chat(&app, &alice).await, new_chat(&app, &alice).await);
    for m in &members {
        app.add_member(&alice.token, &a.to_string(), m.id).await;
    }
    let chats = app.state.chats.clone();
    for i in 0..3 {
        chats
            .post(alice.id, post(a, &format!("a{i}"), None))
            .await
            .unwrap();
    }
    chats.post(alice.id, post(b, "b0", None)).await.unwrap();

    // 60 subscribes at once: members of a, alice on both, an outsider, a chat that does not
    // exist. Each answer is its own.
    let mut asks: Vec<(Uuid, Uuid, Option<i64>)> = Vec::new();
    for round in 0..6 {
        for m in &members {
            asks.push((m.id, a, Some(3)));
            asks.push((m.id, b, None));
        }
        asks.push((alice.id, a, None));
        asks.push((alice.id, b, Some(0)));
        asks.push((outsider.id, a, None));
        asks.push((alice.id, Uuid::new_v4(), Some(round)));
    }
    let answers = join_all(
        asks.iter()
            .map(|(user, chat, since)| chats.replay(*user, *chat, *since, 100)),
    )
    .await;
    for ((user, chat, since), answer) in asks.iter().zip(&answers) {
        let member = *user == alice.id || (*chat == a && *user != outsider.id);
        match (member && (*chat == a || *chat == b), answer) {
            (true, Ok(replay)) => {
                let last = if *chat == a { 3 } else { 1 };
                assert_eq!(replay.last_seq, last);
                let missed = last - since.unwrap_or(last).min(last);
                assert_eq!(
                    replay.missed.len() as i64,
                    missed,
                    "{user} {chat} {since:?}"
                );
            }
            (false, Err(ApiError::NotFound(_))) => {}
            (expected, got) => panic!("{user} on {chat}: member {expected}, got {got:?}"),
        }
    }

    // Removed, then refused at once: nothing of the old answer is kept.
    let gone = &members[0];
    let res = app
        .delete(&format!("/chats/{a}/members/{}", gone.id), &alice.token)
        .await;
    assert_eq!(res.status(), 204);
    let again = chats.replay(gone.id, a, None, 100).await;
    assert!(matches!(again, Err(ApiError::NotFound(_))), "{again:?}");
    app.stop().await;
}

on_both_backends!(
    a_burst_is_stored_in_batches_in_arrival_order,
    a_post_the_database_refuses_fails_alone_and_leaves_no_gap,
    subscribes_read_together_each_get_their_own_answer,
);
