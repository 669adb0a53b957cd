//! The WebSocket protocol (docs/PROTOCOL.md) on one node, against real sockets, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ws::{Connect, WsClient};
use common::{hs_token, spawn_app, spawn_app_with, Backend, TestApp, TestUser};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A chat owned by `owner` with `members` added.
async fn chat_with(app: &TestApp, owner: &TestUser, members: &[&TestUser]) -> String {
    let chat = app.create_chat(&owner.token, "room").await;
    let id = chat["id"].as_str().unwrap().to_string();
    for m in members {
        app.touch(&m.token).await;
        app.add_member(&owner.token, &id, m.id).await;
    }
    id
}

/// The `seq`s of the messages replayed before `subscribed`, and that frame.
async fn replayed(c: &mut WsClient) -> (Vec<i64>, Value) {
    let mut got = Vec::new();
    loop {
        let f = c.next().await;
        match f["type"].as_str() {
            Some("message") => got.push(f["message"]["seq"].as_i64().unwrap()),
            Some("subscribed") => return (got, f),
            _ => {}
        }
    }
}

async fn two_users_in_a_room_see_each_others_messages_in_seq_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    let mut b = WsClient::connect(&app, &bob.token).await;
    assert_eq!(a.welcome["protocol"], 1);
    assert_eq!(a.welcome["user_id"], alice.id.to_string());
    a.subscribe(&chat).await;
    b.subscribe(&chat).await;
    for i in 0..5 {
        let (c, who) = if i % 2 == 0 {
            (&mut a, "a")
        } else {
            (&mut b, "b")
        };
        let ack = c
            .request(
                json!({"type": "send", "chat_id": chat, "content": format!("{who}{i}")}),
                &format!("s{i}"),
            )
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["seq"], i + 1);
    }
    for c in [&mut a, &mut b] {
        let mut seqs = Vec::new();
        while seqs.len() < 5 {
            let m = c.next_of("message").await;
            assert_eq!(m["chat_id"], chat);
            seqs.push(m["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
}

async fn messages_posted_over_rest_reach_subscribed_sockets(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let mut b = WsClient::connect(&app, &bob.token).await;
    b.subscribe(&chat).await;
    let posted = app.post_message(&alice.token, &chat, "over rest").await;
    let m = b.next_of("message").await;
    assert_eq!(m["message"]["id"], posted["id"]);
    assert_eq!(m["message"]["content"], "over rest");
    assert_eq!(m["message"]["user_id"], alice.id.to_string());
}

async fn a_reconnect_with_since_seq_gets_exactly_the_missed_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    for i in 1..=3 {
        app.post_message(&alice.token, &chat, &format!("before {i}"))
            .await;
    }
    let mut c = WsClient::connect(&app, &alice.token).await;
    let sub = c.subscribe(&chat).await;
    assert_eq!(sub["last_seq"], 3);
    c.close().await;
    for i in 1..=10 {
        app.post_message(&alice.token, &chat, &format!("missed {i}"))
            .await;
    }
    let mut c = WsClient::connect(&app, &alice.token).await;
    c.send(json!({"type": "subscribe", "id": "r", "chat_id": chat, "since_seq": 3}))
        .await;
    let (got, subscribed) = replayed(&mut c).await;
    assert_eq!(got, (4..=13).collect::<Vec<_>>());
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["last_seq"], 13);
    assert_eq!(subscribed["id"], "r");
    // Live messages continue after the replay.
    app.post_message(&alice.token, &chat, "live").await;
    assert_eq!(c.next_of("message").await["message"]["seq"], 14);
}

async fn a_gap_larger_than_the_recovery_limit_is_not_recovered(backend: Backend) {
    let app = spawn_app_with(backend, &[("WS_RECOVERY_LIMIT", "5")]).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    for i in 1..=8 {
        app.post_message(&alice.token, &chat, &format!("m{i}"))
            .await;
    }
    let mut c = WsClient::connect(&app, &alice.token).await;
    c.send(json!({"type": "subscribe", "id": "r", "chat_id": chat, "since_seq": 0}))
        .await;
    let first = c.next().await;
    assert_eq!(
        first["type"], "subscribed",
        "no replay when the gap is too large"
    );
    assert_eq!(first["recovered"], false);
    assert_eq!(first["last_seq"], 8);
    // Exactly the limit is recovered; one more is not.
    c.send(json!({"type": "subscribe", "id": "five", "chat_id": chat, "since_seq": 3}))
        .await;
    let (got, subscribed) = replayed(&mut c).await;
    assert_eq!(got, (4..=8).collect::<Vec<_>>());
    assert_eq!(subscribed["recovered"], true);
    c.send(json!({"type": "subscribe", "id": "six", "chat_id": chat, "since_seq": 2}))
        .await;
    let six = c.next_of("subscribed").await;
    assert_eq!(six["id"], "six");
    assert_eq!(six["recovered"], false);
}

async fn a_client_that_stops_reading_is_closed_4008_and_others_receive_everything(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (alice, slow_user) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&slow_user]).await;
    let mut good = WsClient::connect(&app, &alice.token).await;
    let mut slow = WsClient::connect(&app, &slow_user.token).await;
    good.subscribe(&chat).await;
    slow.subscribe(&chat).await;
    // The slow client now reads nothing while ~12 MB flow through the room.
    let big = "x".repeat(30_000);
    let total = 400;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < total {
            let m = good.next_of("message").await;
            seqs.push(m["message"]["seq"].as_i64().unwrap());
        }
        seqs
    });
    for chunk in 0..(total / 20) {
        let mut posts = Vec::new();
        for i in 0..20 {
            let body = json!({"content": format!("{big}{}", chunk * 20 + i), "chat_id": chat});
            let req = app
                .client
                .post(app.url("/messages/"))
                .bearer_auth(&alice.token)
                .json(&body);
            posts.push(async move { req.send().await.unwrap().status() });
        }
        for s in futures_util::future::join_all(posts).await {
            assert_eq!(s, 201);
        }
    }
    let seqs = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("good client kept up")
        .unwrap();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    assert_eq!(slow.close_code().await, Some(4008));
}

async fn bad_input_gets_errors_with_the_request_id_and_keeps_the_socket_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, mallory) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[]).await;
    app.touch(&mallory.token).await;
    let mut c = WsClient::connect(&app, &mallory.token).await;

    c.send_raw("{not json").await;
    let e = c.next().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );

    let e = c.request(json!({"type": "dance"}), "u1").await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("unknown type"));

    let e = c
        .request(json!({"type": "send", "content": "x"}), "u2")
        .await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("chat_id"), "{e}");

    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let e = c.next().await;
    assert_eq!(e["code"], "bad_request");

    // Someone else's chat answers exactly like a chat that does not exist.
    let e = c
        .request(json!({"type": "subscribe", "chat_id": chat}), "u3")
        .await;
    assert_eq!(e["code"], "not_found");
    let e = c
        .request(
            json!({"type": "subscribe", "chat_id": uuid::Uuid::new_v4()}),
            "u4",
        )
        .await;
    assert_eq!(e["code"], "not_found");

    let e = c
        .request(
            json!({"type": "send", "chat_id": chat, "content": "hi"}),
            "u5",
        )
        .await;
    assert_eq!(e["type"], "error");
    let msgs: Value = app
        .get(&format!("/chats/{chat}/messages/"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msgs.as_array().unwrap().len(), 0, "nothing was stored");

    let pong = c.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
}

async fn a_frame_over_the_size_limit_closes_with_1009(backend: Backend) {
    let app = spawn_app_with(backend, &[("WS_MAX_FRAME_BYTES", "1024")]).await;
    let alice = TestUser::new();
    let mut c = WsClient::connect(&app, &alice.token).await;
    assert_eq!(c.welcome["limits"]["max_frame_bytes"], 1024);
    let big = json!({"type": "ping", "pad": "y".repeat(4000)});
    c.send(big).await;
    assert_eq!(c.close_code().await, Some(1009));
}

async fn sustained_flooding_is_rate_limited_then_closed_4029(backend: Backend) {
    let app = spawn_app_with(backend, &[("WS_RATE_PER_SEC", "5"), ("WS_RATE_BURST", "5")]).await;
    let alice = TestUser::new();
    let mut c = WsClient::connect(&app, &alice.token).await;
    for i in 0..60 {
        let _ =
            c.ws.send(Message::text(
                json!({"type": "ping", "id": format!("f{i}")}).to_string(),
            ))
            .await;
    }
    let mut limited = 0;
    let code = loop {
        match c.next_or_close().await {
            Ok(f) if f["code"] == "rate_limited" => limited += 1,
            Ok(_) => {}
            Err(code) => break code,
        }
    };
    assert!(limited > 0, "flooding is answered with rate_limited first");
    assert_eq!(code, Some(4029));
}

async fn an_expired_token_closes_4001_unless_refreshed(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = uuid::Uuid::new_v4();
    let short = hs_token(&user.to_string(), 2, "authenticated");
    let mut expiring = WsClient::connect(&app, &short).await;
    let mut refreshed = WsClient::connect(&app, &short).await;
    let long = hs_token(&user.to_string(), 3600, "authenticated");
    let ack = refreshed
        .request(json!({"type": "refresh_token", "token": long}), "rt")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let other = TestUser::new();
    let e = refreshed
        .request(
            json!({"type": "refresh_token", "token": other.token}),
            "rt2",
        )
        .await;
    assert_eq!(
        e["code"], "unauthorized",
        "a token for another sub is refused"
    );
    assert_eq!(expiring.close_code().await, Some(4001));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pong = refreshed.request(json!({"type": "ping"}), "still").await;
    assert_eq!(pong["type"], "pong");
}

async fn presence_joins_on_a_users_first_tab_and_leaves_on_the_last(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let mut observer = WsClient::connect(&app, &alice.token).await;
    observer.subscribe(&chat).await;
    let mut tab1 = WsClient::connect(&app, &bob.token).await;
    let sub = tab1.subscribe(&chat).await;
    let online: Vec<String> = serde_json::from_value(sub["online"].clone()).unwrap();
    assert!(online.contains(&alice.id.to_string()) && online.contains(&bob.id.to_string()));
    let bob_id = bob.id.to_string();
    let p = loop {
        let p = observer.next_of("presence").await;
        if p["user_id"] == bob_id {
            break p;
        }
    };
    assert_eq!(p["state"], "join");
    let mut tab2 = WsClient::connect(&app, &bob.token).await;
    tab2.subscribe(&chat).await;
    tab1.close().await;
    // A message acts as a marker: no presence event may come before it.
    app.post_message(&alice.token, &chat, "marker").await;
    let f = observer.next().await;
    assert_eq!(
        f["type"], "message",
        "no presence change while a tab remains: {f}"
    );
    tab2.close().await;
    let p = observer.next_of("presence").await;
    assert_eq!(
        (p["user_id"].as_str(), p["state"].as_str()),
        (Some(bob_id.as_str()), Some("leave"))
    );
}

async fn typing_reaches_the_others_in_the_room(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    let mut b = WsClient::connect(&app, &bob.token).await;
    a.subscribe(&chat).await;
    b.subscribe(&chat).await;
    a.send(json!({"type": "typing", "chat_id": chat})).await;
    let t = b.next_of("typing").await;
    assert_eq!(t["user_id"], alice.id.to_string());
    assert_eq!(t["chat_id"], chat);
}

async fn rest_changes_reach_sockets_and_deletion_unsubscribes_everyone(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob, &carol]).await;
    let mut b = WsClient::connect(&app, &bob.token).await;
    let mut c = WsClient::connect(&app, &carol.token).await;
    b.subscribe(&chat).await;
    c.subscribe(&chat).await;
    let res = app
        .send_json(
            reqwest::Method::PUT,
            &format!("/chats/{chat}"),
            Some(&alice.token),
            &json!({"title": "renamed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let u = b.next_of("chat_updated").await;
    assert_eq!(u["chat"]["title"], "renamed");
    // Removing carol unsubscribes her sessions.
    let res = app
        .delete(&format!("/chats/{chat}/members/{}", carol.id), &alice.token)
        .await;
    assert_eq!(res.status(), 204);
    let un = c.next_of("unsubscribed").await;
    assert_eq!(un["chat_id"], chat);
    let res = app.delete(&format!("/chats/{chat}"), &alice.token).await;
    assert_eq!(res.status(), 200);
    let d = b.next_of("chat_deleted").await;
    assert_eq!(d["chat_id"], chat);
    let e = b
        .request(
            json!({"type": "send", "chat_id": chat, "content": "gone?"}),
            "after",
        )
        .await;
    assert_eq!(e["type"], "error");
}

async fn a_repeated_client_msg_id_over_websocket_is_stored_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    a.subscribe(&chat).await;
    let key = uuid::Uuid::new_v4();
    let first = a
        .request(
            json!({"type": "send", "chat_id": chat, "content": "once", "client_msg_id": key}),
            "k1",
        )
        .await;
    let again = a
        .request(
            json!({"type": "send", "chat_id": chat, "content": "once", "client_msg_id": key}),
            "k2",
        )
        .await;
    assert_eq!(first["message_id"], again["message_id"]);
    assert_eq!(first["seq"], again["seq"]);
    let msgs: Value = app
        .get(&format!("/chats/{chat}/messages/"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msgs.as_array().unwrap().len(), 1);
}

async fn the_upgrade_refuses_bad_tokens_and_foreign_origins(backend: Backend) {
    let app = spawn_app_with(backend, &[("CORS_ALLOWED_ORIGINS", "http://front.test")]).await;
    let alice = TestUser::new();
    let res = app.get("/ws", None).await;
    assert_eq!(res.status(), 401);
    assert!(matches!(
        WsClient::try_connect(&app, "not-a-jwt", None).await,
        Connect::Refused(401)
    ));
    assert!(matches!(
        WsClient::try_connect(&app, &alice.token, Some("http://evil.test")).await,
        Connect::Refused(403)
    ));
    assert!(matches!(
        WsClient::try_connect(&app, &alice.token, Some("http://front.test")).await,
        Connect::Open(_)
    ));
}

async fn shutdown_closes_every_session_with_1001_and_keeps_acked_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    let mut b = WsClient::connect(&app, &alice.token).await;
    a.subscribe(&chat).await;
    let ack = a
        .request(
            json!({"type": "send", "chat_id": chat, "content": "kept"}),
            "k",
        )
        .await;
    assert_eq!(ack["type"], "ack");
    let url = app.database_url.clone();
    app.stop().await;
    assert_eq!(a.close_code().await, Some(1001));
    assert_eq!(b.close_code().await, Some(1001));
    let again = common::spawn_on_database(&url, &[]).await;
    let msgs: Value = again
        .get(&format!("/chats/{chat}/messages/"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msgs[0]["content"], "kept");
}

async fn a_thousand_sessions_in_one_room_all_receive_a_burst_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = TestUser::new();
    // 50 users with 20 sockets each: the default per-user cap.
    let users: Vec<TestUser> = (0..50).map(|_| TestUser::new()).collect();
    let refs: Vec<&TestUser> = users.iter().collect();
    let chat = chat_with(&app, &owner, &refs).await;
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1000);
    for i in 0..1000 {
        let token = users[i % users.len()].token.clone();
        let port = app.port;
        let chat = chat.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = WsClient::connect_port(port, &token).await;
            c.subscribe(&chat).await;
            ready.send(()).await.unwrap();
            let mut seqs = Vec::with_capacity(100);
            while seqs.len() < 100 {
                let m = c.next_of("message").await;
                seqs.push(m["message"]["seq"].as_i64().unwrap());
            }
            seqs
        }));
    }
    for _ in 0..1000 {
        ready_rx.recv().await.unwrap();
    }
    for i in 0..100 {
        app.post_message(&owner.token, &chat, &format!("burst {i}"))
            .await;
    }
    let expected: Vec<i64> = (1..=100).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected);
    }
}

on_both_backends!(
    two_users_in_a_room_see_each_others_messages_in_seq_order,
    messages_posted_over_rest_reach_subscribed_sockets,
    a_reconnect_with_since_seq_gets_exactly_the_missed_messages,
    a_gap_larger_than_the_recovery_limit_is_not_recovered,
    a_client_that_stops_reading_is_closed_4008_and_others_receive_everything,
    bad_input_gets_errors_with_the_request_id_and_keeps_the_socket_open,
    a_frame_over_the_size_limit_closes_with_1009,
    sustained_flooding_is_rate_limited_then_closed_4029,
    an_expired_token_closes_4001_unless_refreshed,
    presence_joins_on_a_users_first_tab_and_leaves_on_the_last,
    typing_reaches_the_others_in_the_room,
    rest_changes_reach_sockets_and_deletion_unsubscribes_everyone,
    a_repeated_client_msg_id_over_websocket_is_stored_once,
    the_upgrade_refuses_bad_tokens_and_foreign_origins,
    shutdown_closes_every_session_with_1001_and_keeps_acked_messages,
    a_thousand_sessions_in_one_room_all_receive_a_burst_in_order,
);
