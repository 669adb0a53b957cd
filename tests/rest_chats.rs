//! Chats: create, list, read, rename, delete, members, and who may do what.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    assert_detail, assert_utc_timestamp, assert_validation, keys, spawn_app, Backend, TestApp,
    TestUser,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

const CHAT_KEYS: [&str; 4] = ["created_at", "id", "title", "updated_at"];
const DETAIL_KEYS: [&str; 5] = ["created_at", "id", "messages", "title", "updated_at"];

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("JSON body")
}

fn assert_chat_shape(chat: &Value, expected_keys: &[&str]) {
    assert_eq!(keys(chat), expected_keys, "chat keys of {chat}");
    Uuid::parse_str(chat["id"].as_str().unwrap()).expect("chat id is a UUID");
    assert!(chat["title"].is_string(), "title is a string: {chat}");
    assert_utc_timestamp(&chat["created_at"], "created_at");
    assert_utc_timestamp(&chat["updated_at"], "updated_at");
}

async fn list_chats(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/chats/{query}"), Some(token)).await;
    assert_eq!(res.status(), 200, "GET /chats/{query}");
    body(res).await.as_array().expect("a list").clone()
}

fn ids(chats: &[Value]) -> Vec<String> {
    chats
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn id_of(chat: &Value) -> String {
    chat["id"].as_str().unwrap().to_string()
}

async fn creating_a_chat_returns_its_detail_with_no_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let res = app
        .post("/chats/", &alice.token, &json!({"title": "Plans"}))
        .await;
    assert_eq!(res.status(), 201);
    let chat = body(res).await;
    assert_chat_shape(&chat, &DETAIL_KEYS);
    assert_eq!(chat["title"], "Plans");
    assert_eq!(chat["messages"], json!([]));

    let listed = list_chats(&app, &alice.token, "").await;
    assert_eq!(ids(&listed), vec![id_of(&chat)], "the creator is a member");
    assert_chat_shape(&listed[0], &CHAT_KEYS);
}

async fn an_untitled_chat_is_called_chat_and_its_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    for body_sent in [json!({}), json!({"title": null})] {
        let res = app.post("/chats/", &alice.token, &body_sent).await;
        assert_eq!(res.status(), 201, "POST /chats/ {body_sent}");
        let chat = body(res).await;
        let id = id_of(&chat);
        assert_eq!(
            chat["title"],
            format!("Chat {id}"),
            "created with {body_sent}"
        );
        let fetched = body(app.get(&format!("/chats/{id}"), Some(&alice.token)).await).await;
        assert_eq!(fetched["title"], format!("Chat {id}"), "read back");
    }
}

async fn the_collection_answers_with_and_without_a_trailing_slash(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let res = app
        .post("/chats", &alice.token, &json!({"title": "no slash"}))
        .await;
    assert_eq!(res.status(), 201);
    let res = app.get("/chats", Some(&alice.token)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await.as_array().unwrap().len(), 1);
}

async fn a_title_of_255_characters_is_accepted_and_256_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    // Characters, not bytes: "é" is two bytes in UTF-8.
    let longest = "é".repeat(255);
    let chat = app.create_chat(&alice.token, &longest).await;
    assert_eq!(chat["title"], longest);

    let too_long = "é".repeat(256);
    let res = app
        .post("/chats/", &alice.token, &json!({"title": too_long}))
        .await;
    assert_validation(
        res,
        json!(["body", "title"]),
        "string_too_long",
        "POST 256 chars",
    )
    .await;
    assert_eq!(
        list_chats(&app, &alice.token, "").await.len(),
        1,
        "nothing created"
    );

    let path = format!("/chats/{}", id_of(&chat));
    let res = app
        .send_json(
            Method::PUT,
            &path,
            Some(&alice.token),
            &json!({"title": too_long}),
        )
        .await;
    assert_validation(
        res,
        json!(["body", "title"]),
        "string_too_long",
        "PUT 256 chars",
    )
    .await;
    let res = app
        .send_json(
            Method::PUT,
            &path,
            Some(&alice.token),
            &json!({"title": "a".repeat(255)}),
        )
        .await;
    assert_eq!(res.status(), 200, "PUT 255 chars");
}

async fn an_ill_typed_title_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let res = app
        .post("/chats/", &alice.token, &json!({"title": 42}))
        .await;
    assert_validation(res, json!(["body", "title"]), "string_type", "title 42").await;
}

/// A new user's very first request authenticates (and stores their row) while the body is
/// parsed; a bad body must still answer 422, not drop the connection.
async fn a_new_users_first_request_with_an_invalid_body_gets_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..5 {
        let newcomer = TestUser::new();
        let res = app
            .send_json(
                Method::POST,
                "/chats/",
                Some(&newcomer.token),
                &json!({"title": 42}),
            )
            .await;
        assert_validation(
            res,
            json!(["body", "title"]),
            "string_type",
            "first request",
        )
        .await;
        app.touch(&newcomer.token).await;
    }
}

async fn chats_are_listed_most_recently_updated_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let a = id_of(&app.create_chat(&alice.token, "A").await);
    let b = id_of(&app.create_chat(&alice.token, "B").await);
    let c = id_of(&app.create_chat(&alice.token, "C").await);
    assert_eq!(
        ids(&list_chats(&app, &alice.token, "").await),
        [c.clone(), b.clone(), a.clone()]
    );

    app.post_message(&alice.token, &a, "bump").await;
    assert_eq!(
        ids(&list_chats(&app, &alice.token, "").await),
        [a.clone(), c.clone(), b.clone()],
        "a posted-to chat moves first"
    );

    let res = app
        .send_json(
            Method::PUT,
            &format!("/chats/{b}"),
            Some(&alice.token),
            &json!({"title": "B renamed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        ids(&list_chats(&app, &alice.token, "").await),
        [b, a, c],
        "a renamed chat moves first"
    );
}

async fn the_chat_list_pages_with_skip_and_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let mut created = Vec::new();
    for i in 0..22 {
        created.push(id_of(
            &app.create_chat(&alice.token, &format!("chat {i}")).await,
        ));
    }
    created.reverse(); // newest first
    let all = list_chats(&app, &alice.token, "").await;
    assert_eq!(ids(&all), created[..20], "default limit is 20");
    let page = list_chats(&app, &alice.token, "?skip=2&limit=3").await;
    assert_eq!(ids(&page), created[2..5]);
    let tail = list_chats(&app, &alice.token, "?skip=20&limit=100").await;
    assert_eq!(ids(&tail), created[20..]);
    let past = list_chats(&app, &alice.token, "?skip=50").await;
    assert!(past.is_empty());
}

async fn the_chat_list_refuses_out_of_range_pagination(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let cases = [
        ("?limit=0", json!(["query", "limit"]), "greater_than_equal"),
        ("?limit=101", json!(["query", "limit"]), "less_than_equal"),
        ("?skip=-1", json!(["query", "skip"]), "greater_than_equal"),
        ("?limit=ten", json!(["query", "limit"]), "int_parsing"),
    ];
    for (query, loc, kind) in cases {
        let res = app
            .get(&format!("/chats/{query}"), Some(&alice.token))
            .await;
        assert_validation(res, loc, kind, query).await;
    }
    let res = app.get("/chats/?limit=100", Some(&alice.token)).await;
    assert_eq!(res.status(), 200, "limit=100 is allowed");
    let res = app.get("/chats/?limit=1&skip=0", Some(&alice.token)).await;
    assert_eq!(res.status(), 200, "limit=1 and skip=0 are allowed");
}

async fn a_chats_detail_holds_its_latest_hundred_messages_in_seq_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat_id = id_of(&app.create_chat(&alice.token, "long").await);
    for i in 1..=105 {
        app.post_message(&alice.token, &chat_id, &format!("message {i}"))
            .await;
    }
    let res = app
        .get(&format!("/chats/{chat_id}"), Some(&alice.token))
        .await;
    assert_eq!(res.status(), 200);
    let chat = body(res).await;
    assert_chat_shape(&chat, &DETAIL_KEYS);
    let messages = chat["messages"].as_array().unwrap();
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (6..=105).collect::<Vec<i64>>());
    assert_eq!(messages[0]["content"], "message 6");
    assert_eq!(messages[99]["content"], "message 105");
    assert!(messages.iter().all(|m| m["chat_id"] == chat_id));
}

async fn a_missing_chat_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let path = format!("/chats/{}", Uuid::new_v4());
    assert_detail(
        app.get(&path, Some(&alice.token)).await,
        404,
        "Chat not found",
        "GET",
    )
    .await;
    let res = app
        .send_json(
            Method::PUT,
            &path,
            Some(&alice.token),
            &json!({"title": "x"}),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "PUT").await;
    let res = app.delete(&path, &alice.token).await;
    assert_detail(res, 404, "Chat not found", "DELETE").await;
}

async fn a_chat_id_that_is_not_a_uuid_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let cases = [
        (Method::GET, "/chats/not-a-uuid"),
        (Method::PUT, "/chats/not-a-uuid"),
        (Method::DELETE, "/chats/not-a-uuid"),
        (Method::GET, "/chats/not-a-uuid/messages/"),
        (Method::POST, "/chats/not-a-uuid/members"),
    ];
    for (method, path) in cases {
        let case = format!("{method} {path}");
        let res = app
            .send_json(
                method,
                path,
                Some(&alice.token),
                &json!({"title": "x", "user_id": alice.id}),
            )
            .await;
        assert_validation(res, json!(["path", "chat_id"]), "uuid_parsing", &case).await;
    }
    let res = app
        .delete(
            &format!("/chats/{}/members/bob", Uuid::new_v4()),
            &alice.token,
        )
        .await;
    assert_validation(res, json!(["path", "user_id"]), "uuid_parsing", "member id").await;
}

async fn renaming_a_chat_returns_it_with_the_new_title(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = app.create_chat(&alice.token, "Draft").await;
    let id = id_of(&chat);
    let res = app
        .send_json(
            Method::PUT,
            &format!("/chats/{id}"),
            Some(&alice.token),
            &json!({"title": "Final"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let renamed = body(res).await;
    assert_chat_shape(&renamed, &CHAT_KEYS);
    assert_eq!(renamed["id"], id);
    assert_eq!(renamed["title"], "Final");
    assert_eq!(renamed["created_at"], chat["created_at"]);
    let fetched = body(app.get(&format!("/chats/{id}"), Some(&alice.token)).await).await;
    assert_eq!(fetched["title"], "Final");
}

async fn deleting_a_chat_removes_it_and_its_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    app.touch(&bob.token).await;
    let keep = id_of(&app.create_chat(&alice.token, "keep").await);
    let doomed = id_of(&app.create_chat(&alice.token, "doomed").await);
    app.add_member(&alice.token, &doomed, bob.id).await;
    app.post_message(&alice.token, &doomed, "one").await;
    app.post_message(&bob.token, &doomed, "two").await;

    let res = app.delete(&format!("/chats/{doomed}"), &alice.token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        body(res).await,
        json!({"success": true, "message": "Chat deleted successfully"})
    );

    let res = app
        .get(&format!("/chats/{doomed}"), Some(&alice.token))
        .await;
    assert_detail(res, 404, "Chat not found", "GET deleted chat").await;
    let res = app
        .get(&format!("/chats/{doomed}/messages/"), Some(&alice.token))
        .await;
    assert_detail(res, 404, "Chat not found", "GET deleted chat's messages").await;
    let res = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "late", "chat_id": doomed}),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "POST into deleted chat").await;
    assert_eq!(ids(&list_chats(&app, &alice.token, "").await), vec![keep]);
    assert!(
        list_chats(&app, &bob.token, "").await.is_empty(),
        "gone for members too"
    );
    let res = app.get(&format!("/chats/{doomed}"), Some(&bob.token)).await;
    assert_detail(res, 404, "Chat not found", "member reads deleted chat").await;
}

async fn the_owner_adds_a_member_who_can_then_read_and_post(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    app.touch(&bob.token).await;
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.post_message(&alice.token, &chat_id, "welcome").await;

    let res = app
        .post(
            &format!("/chats/{chat_id}/members"),
            &alice.token,
            &json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let member = body(res).await;
    assert_eq!(keys(&member), ["chat_id", "joined_at", "role", "user_id"]);
    assert_eq!(member["chat_id"], chat_id);
    assert_eq!(member["user_id"], bob.id.to_string());
    assert_eq!(member["role"], "member");
    assert_utc_timestamp(&member["joined_at"], "joined_at");

    assert_eq!(
        ids(&list_chats(&app, &bob.token, "").await),
        vec![chat_id.clone()]
    );
    let res = app
        .get(&format!("/chats/{chat_id}"), Some(&bob.token))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await["messages"][0]["content"], "welcome");
    let reply = app.post_message(&bob.token, &chat_id, "thanks").await;
    assert_eq!(reply["seq"], 2);
    assert_eq!(reply["user_id"], bob.id.to_string());
    let msgs = body(
        app.get(&format!("/chats/{chat_id}/messages/"), Some(&bob.token))
            .await,
    )
    .await;
    assert_eq!(msgs.as_array().unwrap().len(), 2);
}

async fn adding_a_user_who_never_signed_in_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    let res = app
        .post(
            &format!("/chats/{chat_id}/members"),
            &alice.token,
            &json!({"user_id": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert!(body(res).await["detail"].is_string());
}

async fn adding_a_member_needs_a_user_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    let path = format!("/chats/{chat_id}/members");
    let res = app.post(&path, &alice.token, &json!({})).await;
    assert_validation(res, json!(["body", "user_id"]), "missing", "no user_id").await;
    let res = app
        .post(&path, &alice.token, &json!({"user_id": "bob"}))
        .await;
    assert_validation(
        res,
        json!(["body", "user_id"]),
        "uuid_parsing",
        "user_id bob",
    )
    .await;
}

async fn only_the_owner_can_add_members(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    let carol = TestUser::new();
    let dave = TestUser::new();
    for u in [&bob, &carol, &dave] {
        app.touch(&u.token).await;
    }
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.add_member(&alice.token, &chat_id, bob.id).await;
    let path = format!("/chats/{chat_id}/members");

    let res = app
        .post(&path, &bob.token, &json!({"user_id": carol.id}))
        .await;
    assert_eq!(res.status(), 403, "a member adding someone");
    assert!(body(res).await["detail"].is_string());

    let res = app
        .post(&path, &dave.token, &json!({"user_id": carol.id}))
        .await;
    assert_detail(res, 404, "Chat not found", "a stranger adding someone").await;

    assert!(
        list_chats(&app, &carol.token, "").await.is_empty(),
        "carol was not added"
    );
}

async fn the_owner_removes_a_member_who_then_loses_access(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    app.touch(&bob.token).await;
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.add_member(&alice.token, &chat_id, bob.id).await;

    let res = app
        .delete(
            &format!("/chats/{chat_id}/members/{}", bob.id),
            &alice.token,
        )
        .await;
    assert_eq!(res.status(), 204);
    assert!(res.bytes().await.unwrap().is_empty(), "204 has no body");

    assert!(list_chats(&app, &bob.token, "").await.is_empty());
    let res = app
        .get(&format!("/chats/{chat_id}"), Some(&bob.token))
        .await;
    assert_detail(res, 404, "Chat not found", "removed member reads").await;
    let res = app
        .post(
            "/messages/",
            &bob.token,
            &json!({"content": "hi", "chat_id": chat_id}),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "removed member posts").await;
}

async fn a_member_can_leave_a_chat(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    app.touch(&bob.token).await;
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.add_member(&alice.token, &chat_id, bob.id).await;
    let res = app
        .delete(&format!("/chats/{chat_id}/members/{}", bob.id), &bob.token)
        .await;
    assert_eq!(res.status(), 204);
    assert!(list_chats(&app, &bob.token, "").await.is_empty());
    assert_eq!(
        list_chats(&app, &alice.token, "").await.len(),
        1,
        "the chat remains"
    );
}

async fn a_member_cannot_remove_another_member(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    let carol = TestUser::new();
    app.touch(&bob.token).await;
    app.touch(&carol.token).await;
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.add_member(&alice.token, &chat_id, bob.id).await;
    app.add_member(&alice.token, &chat_id, carol.id).await;
    let res = app
        .delete(
            &format!("/chats/{chat_id}/members/{}", carol.id),
            &bob.token,
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(body(res).await["detail"].is_string());
    assert_eq!(
        list_chats(&app, &carol.token, "").await.len(),
        1,
        "carol is still in"
    );
}

async fn a_stranger_cannot_remove_members(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    let mallory = TestUser::new();
    app.touch(&bob.token).await;
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.add_member(&alice.token, &chat_id, bob.id).await;
    let res = app
        .delete(
            &format!("/chats/{chat_id}/members/{}", bob.id),
            &mallory.token,
        )
        .await;
    assert_detail(res, 404, "Chat not found", "stranger removes member").await;
    assert_eq!(
        list_chats(&app, &bob.token, "").await.len(),
        1,
        "bob is still in"
    );
}

async fn removing_someone_who_is_not_a_member_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    let res = app
        .delete(
            &format!("/chats/{chat_id}/members/{}", Uuid::new_v4()),
            &alice.token,
        )
        .await;
    assert_eq!(res.status(), 404);
    assert!(body(res).await["detail"].is_string());
}

async fn another_user_cannot_see_or_touch_a_chat_they_are_not_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let mallory = TestUser::new();
    let chat_id = id_of(&app.create_chat(&alice.token, "private").await);
    app.post_message(&alice.token, &chat_id, "secret").await;
    let mallorys = id_of(&app.create_chat(&mallory.token, "mallory's").await);

    let path = format!("/chats/{chat_id}");
    let res = app.get(&path, Some(&mallory.token)).await;
    assert_detail(res, 404, "Chat not found", "read").await;
    assert_eq!(
        ids(&list_chats(&app, &mallory.token, "").await),
        vec![mallorys],
        "list shows only mallory's own chat"
    );
    let res = app
        .send_json(
            Method::PUT,
            &path,
            Some(&mallory.token),
            &json!({"title": "pwned"}),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "rename").await;
    let res = app.delete(&path, &mallory.token).await;
    assert_detail(res, 404, "Chat not found", "delete").await;
    let res = app
        .post(
            "/messages/",
            &mallory.token,
            &json!({"content": "spam", "chat_id": chat_id}),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "post").await;
    let res = app
        .get(&format!("/chats/{chat_id}/messages/"), Some(&mallory.token))
        .await;
    assert_detail(res, 404, "Chat not found", "read messages").await;

    // Nothing changed for the owner.
    let chat = body(app.get(&path, Some(&alice.token)).await).await;
    assert_eq!(chat["title"], "private");
    let contents: Vec<&str> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["secret"]);
}

async fn a_member_cannot_delete_the_chat(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    app.touch(&bob.token).await;
    let chat_id = id_of(&app.create_chat(&alice.token, "team").await);
    app.add_member(&alice.token, &chat_id, bob.id).await;
    let res = app.delete(&format!("/chats/{chat_id}"), &bob.token).await;
    assert_detail(
        res,
        403,
        "Only the owner can delete this chat",
        "member deletes",
    )
    .await;
    let res = app
        .get(&format!("/chats/{chat_id}"), Some(&alice.token))
        .await;
    assert_eq!(res.status(), 200, "the chat is still there");
}

on_both_backends!(
    creating_a_chat_returns_its_detail_with_no_messages,
    an_untitled_chat_is_called_chat_and_its_id,
    the_collection_answers_with_and_without_a_trailing_slash,
    a_title_of_255_characters_is_accepted_and_256_is_refused,
    an_ill_typed_title_is_a_validation_error,
    chats_are_listed_most_recently_updated_first,
    the_chat_list_pages_with_skip_and_limit,
    the_chat_list_refuses_out_of_range_pagination,
    a_chats_detail_holds_its_latest_hundred_messages_in_seq_order,
    a_missing_chat_is_not_found,
    a_chat_id_that_is_not_a_uuid_is_a_validation_error,
    renaming_a_chat_returns_it_with_the_new_title,
    deleting_a_chat_removes_it_and_its_messages,
    the_owner_adds_a_member_who_can_then_read_and_post,
    adding_a_user_who_never_signed_in_is_not_found,
    adding_a_member_needs_a_user_id,
    only_the_owner_can_add_members,
    the_owner_removes_a_member_who_then_loses_access,
    a_member_can_leave_a_chat,
    a_member_cannot_remove_another_member,
    a_stranger_cannot_remove_members,
    removing_someone_who_is_not_a_member_is_not_found,
    another_user_cannot_see_or_touch_a_chat_they_are_not_in,
    a_member_cannot_delete_the_chat,
);

/// Regression tests for server bugs found while writing this suite.
mod regressions {
    use super::*;
    on_both_backends!(a_new_users_first_request_with_an_invalid_body_gets_a_validation_error,);
}
