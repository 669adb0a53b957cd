//! Authentication (Supabase-compatible JWTs: HS256 with the shared secret, RS256/ES256/EdDSA
//! from a JWKS document), the `users` row the first request creates from the claims, and
//! `GET /users/me` / `GET /users/{user_id}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{
    fixture, hs_token, sign, spawn_app, spawn_app_with, spawn_on_database, Backend, TestApp,
    TestUser, SECRET,
};
use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use uuid::Uuid;

const UNAUTHORIZED: &str = "Could not validate Supabase credentials";
const ISSUER: &str = "https://project.supabase.test/auth/v1";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a valid Supabase access token for `sub`, valid for an hour.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": "authenticated", "exp": now() + 3600, "role": "authenticated"})
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&std::fs::read(fixture("ed_private.pem")).unwrap()).unwrap()
}

async fn spawn_with_jwks(backend: Backend) -> TestApp {
    let jwks = fixture("jwks.json");
    spawn_app_with(backend, &[("JWT_JWKS_FILE", jwks.as_str())]).await
}

/// Asserts the legacy 401: status, `WWW-Authenticate: Bearer` and the exact detail.
async fn assert_unauthorized(res: reqwest::Response, case: &str) {
    assert_eq!(res.status(), 401, "{case}: status");
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("Bearer".to_string()),
        "{case}: WWW-Authenticate"
    );
    let body: Value = res.json().await.expect("401 body is JSON");
    assert_eq!(body, json!({"detail": UNAUTHORIZED}), "{case}: body");
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get("/users/me", Some(token)).await
}

async fn me_json(app: &TestApp, token: &str) -> Value {
    let res = me(app, token).await;
    assert_eq!(res.status(), 200, "GET /users/me");
    res.json().await.unwrap()
}

async fn a_request_without_a_token_is_refused_on_every_protected_endpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = Uuid::new_v4();
    let cases: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (reqwest::Method::GET, "/users/me".into(), None),
        (reqwest::Method::GET, format!("/users/{chat}"), None),
        (reqwest::Method::GET, "/chats/".into(), None),
        (
            reqwest::Method::POST,
            "/chats/".into(),
            Some(json!({"title": "x"})),
        ),
        (reqwest::Method::GET, format!("/chats/{chat}"), None),
        (
            reqwest::Method::PUT,
            format!("/chats/{chat}"),
            Some(json!({"title": "x"})),
        ),
        (reqwest::Method::DELETE, format!("/chats/{chat}"), None),
        (
            reqwest::Method::POST,
            format!("/chats/{chat}/members"),
            Some(json!({"user_id": Uuid::new_v4()})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/chats/{chat}/members/{}", Uuid::new_v4()),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/chats/{chat}/messages/"),
            None,
        ),
        (
            reqwest::Method::POST,
            "/messages/".into(),
            Some(json!({"content": "hi", "chat_id": chat})),
        ),
    ];
    for (method, path, body) in cases {
        let case = format!("{method} {path}");
        let mut rb = app.client.request(method, app.url(&path));
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        assert_unauthorized(rb.send().await.unwrap(), &case).await;
    }
}

async fn a_malformed_authorization_header_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    let cases = [
        ("garbage token", "Bearer not-a-jwt".to_string()),
        ("empty bearer", "Bearer ".to_string()),
        ("basic scheme", format!("Basic {}", user.token)),
        ("token without scheme", user.token.clone()),
    ];
    for (case, header) in cases {
        let res = app
            .client
            .get(app.url("/users/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_unauthorized(res, case).await;
    }
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let res = app
            .client
            .get(app.url("/users/me"))
            .header("authorization", format!("{scheme} {}", user.token))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "scheme {scheme}");
    }
}

async fn a_token_signed_with_another_secret_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = sign(
        Algorithm::HS256,
        None,
        &claims(&Uuid::new_v4().to_string()),
        &EncodingKey::from_secret(b"some-other-secret-with-at-least-32-chars"),
    );
    assert_unauthorized(me(&app, &token).await, "wrong secret").await;
}

async fn a_token_with_a_tampered_payload_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let victim = Uuid::new_v4();
    let token = hs(&claims(&Uuid::new_v4().to_string()));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&victim.to_string())).unwrap());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_unauthorized(me(&app, &forged).await, "tampered payload").await;
}

async fn an_unsigned_alg_none_token_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let payload = serde_json::to_vec(&claims(&Uuid::new_v4().to_string())).unwrap();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        let token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.as_bytes()),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        assert_unauthorized(me(&app, &token).await, header).await;
    }
}

async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused(backend: Backend) {
    let app = spawn_with_jwks(backend).await;
    let public_pem = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let token = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims(&Uuid::new_v4().to_string()),
        &EncodingKey::from_secret(&public_pem),
    );
    assert_unauthorized(
        me(&app, &token).await,
        "HS256 keyed with the RSA public key",
    )
    .await;
}

async fn a_token_whose_algorithm_does_not_match_its_key_is_refused(backend: Backend) {
    let app = spawn_with_jwks(backend).await;
    // Signed correctly with the RSA key, but naming the EC key's kid.
    let token = sign(
        Algorithm::RS256,
        Some("ec-1"),
        &claims(&Uuid::new_v4().to_string()),
        &rsa_key(),
    );
    assert_unauthorized(me(&app, &token).await, "RS256 with kid ec-1").await;
}

async fn an_asymmetric_token_without_a_jwks_configured_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&Uuid::new_v4().to_string()),
        &rsa_key(),
    );
    assert_unauthorized(me(&app, &token).await, "RS256 without JWKS").await;
}

async fn an_expired_token_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = hs_token(&Uuid::new_v4().to_string(), -120, "authenticated");
    assert_unauthorized(me(&app, &token).await, "expired two minutes ago").await;
}

async fn a_token_expired_within_the_leeway_is_still_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = hs_token(&Uuid::new_v4().to_string(), -5, "authenticated");
    assert_eq!(me(&app, &token).await.status(), 200);
}

/// RFC 7519 §4.1.5: a token is not accepted before `nbf` (give or take the leeway).
async fn a_token_not_yet_valid_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = Uuid::new_v4().to_string();
    let mut later = claims(&sub);
    later["nbf"] = json!(now() + 3600);
    later["exp"] = json!(now() + 7200);
    assert_unauthorized(me(&app, &hs(&later)).await, "nbf in an hour").await;
    let mut skewed = claims(&sub);
    skewed["nbf"] = json!(now() + 5);
    assert_eq!(
        me(&app, &hs(&skewed)).await.status(),
        200,
        "nbf within the leeway"
    );
}

/// A deployment that configures only a JWKS is in production mode: no generated secret, no
/// `POST /dev/token`, and a token signed with a leftover development secret is refused.
async fn a_jwks_only_deployment_has_no_development_mode(backend: Backend) {
    let jwks = fixture("jwks.json");
    let app = spawn_app_with(
        backend,
        &[
            ("SUPABASE_JWT_SECRET", ""),
            ("JWT_JWKS_FILE", jwks.as_str()),
        ],
    )
    .await;
    assert!(app.state.dev_secret.is_none(), "no development secret");
    let victim = TestUser::new();
    let token = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&victim.id.to_string()),
        &rsa_key(),
    );
    assert_eq!(me(&app, &token).await.status(), 200, "JWKS tokens work");
    let res = app
        .send_json(
            reqwest::Method::POST,
            "/dev/token",
            None,
            &json!({"user_id": victim.id}),
        )
        .await;
    assert_eq!(res.status(), 404, "POST /dev/token does not exist");
    let config: Value = app
        .get("/app/config.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["dev_sign_in"], false);
    // A secret left in the data dir by an earlier development run signs nothing.
    let secret = echo::auth::dev_secret::load_or_create(&app.state.settings.data_dir).unwrap();
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims(&victim.id.to_string()),
        &EncodingKey::from_secret(secret.as_bytes()),
    );
    assert_unauthorized(me(&app, &forged).await, "HS256 with a development secret").await;
}

async fn a_token_without_an_expiry_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = hs(&json!({"sub": Uuid::new_v4().to_string(), "aud": "authenticated"}));
    assert_unauthorized(me(&app, &token).await, "no exp").await;
}

async fn a_token_for_another_audience_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = Uuid::new_v4().to_string();
    assert_unauthorized(me(&app, &hs_token(&sub, 3600, "anon")).await, "aud anon").await;
    let mut several = claims(&sub);
    several["aud"] = json!(["anon", "service_role"]);
    assert_unauthorized(
        me(&app, &hs(&several)).await,
        "aud list without authenticated",
    )
    .await;
}

/// Legacy PyJWT, given `audience=`, refused a token with no `aud` (MissingRequiredClaimError).
async fn a_token_without_an_audience_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut no_aud = claims(&Uuid::new_v4().to_string());
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_unauthorized(me(&app, &hs(&no_aud)).await, "no aud").await;
}

async fn a_token_without_a_subject_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = hs(&json!({"aud": "authenticated", "exp": now() + 3600, "email": "x@y.test"}));
    assert_unauthorized(me(&app, &token).await, "no sub").await;
}

async fn a_token_whose_subject_is_not_a_uuid_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = hs_token("user-42", 3600, "authenticated");
    assert_unauthorized(me(&app, &token).await, "sub user-42").await;
}

async fn a_token_naming_an_unknown_key_id_is_refused(backend: Backend) {
    let app = spawn_with_jwks(backend).await;
    let token = sign(
        Algorithm::RS256,
        Some("nope"),
        &claims(&Uuid::new_v4().to_string()),
        &rsa_key(),
    );
    assert_unauthorized(me(&app, &token).await, "kid nope").await;
}

async fn tokens_signed_with_the_jwks_keys_are_accepted(backend: Backend) {
    let app = spawn_with_jwks(backend).await;
    let cases = [
        (Algorithm::RS256, "rsa-1", rsa_key()),
        (Algorithm::ES256, "ec-1", ec_key()),
        (Algorithm::EdDSA, "ed-1", ed_key()),
    ];
    for (alg, kid, key) in cases {
        let id = Uuid::new_v4();
        let token = sign(alg, Some(kid), &claims(&id.to_string()), &key);
        let res = me(&app, &token).await;
        assert_eq!(res.status(), 200, "{alg:?} token with kid {kid}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["id"],
            id.to_string(),
            "{alg:?} token identifies its subject"
        );
    }
    // The shared secret keeps working next to the JWKS.
    let user = TestUser::new();
    assert_eq!(
        me(&app, &user.token).await.status(),
        200,
        "HS256 next to JWKS"
    );
}

async fn an_asymmetric_token_can_create_chats_and_post_messages(backend: Backend) {
    let app = spawn_with_jwks(backend).await;
    let id = Uuid::new_v4();
    let token = sign(
        Algorithm::EdDSA,
        Some("ed-1"),
        &claims(&id.to_string()),
        &ed_key(),
    );
    let chat = app.create_chat(&token, "signed by Ed25519").await;
    let msg = app
        .post_message(&token, chat["id"].as_str().unwrap(), "hello")
        .await;
    assert_eq!(msg["user_id"], id.to_string());
}

async fn with_an_issuer_configured_only_tokens_from_that_issuer_are_accepted(backend: Backend) {
    let app = spawn_app_with(backend, &[("JWT_ISSUER", ISSUER)]).await;
    let sub = Uuid::new_v4().to_string();

    let mut right = claims(&sub);
    right["iss"] = json!(ISSUER);
    assert_eq!(me(&app, &hs(&right)).await.status(), 200, "right iss");

    let mut wrong = claims(&sub);
    wrong["iss"] = json!("https://evil.test/auth/v1");
    assert_unauthorized(me(&app, &hs(&wrong)).await, "wrong iss").await;
}

/// An issuer check that a token passes by leaving `iss` out is no check (PyJWT, given
/// `issuer=`, raised MissingRequiredClaimError).
async fn with_an_issuer_configured_a_token_without_an_issuer_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, &[("JWT_ISSUER", ISSUER)]).await;
    let token = hs(&claims(&Uuid::new_v4().to_string()));
    assert_unauthorized(me(&app, &token).await, "missing iss").await;
}

async fn the_issuer_check_applies_to_jwks_tokens_too(backend: Backend) {
    let jwks = fixture("jwks.json");
    let app = spawn_app_with(
        backend,
        &[("JWT_JWKS_FILE", jwks.as_str()), ("JWT_ISSUER", ISSUER)],
    )
    .await;
    let sub = Uuid::new_v4().to_string();
    let mut right = claims(&sub);
    right["iss"] = json!(ISSUER);
    let token = sign(Algorithm::ES256, Some("ec-1"), &right, &ec_key());
    assert_eq!(me(&app, &token).await.status(), 200, "right iss");
    let mut wrong = claims(&sub);
    wrong["iss"] = json!("https://evil.test/auth/v1");
    let token = sign(Algorithm::ES256, Some("ec-1"), &wrong, &ec_key());
    assert_unauthorized(me(&app, &token).await, "wrong iss").await;
}

async fn the_first_request_creates_the_user_from_the_token_claims(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = Uuid::new_v4();
    let mut c = claims(&id.to_string());
    c["email"] = json!("alice@wonderland.test");
    c["user_metadata"] = json!({"full_name": "Alice Liddell", "username": "alice_l"});
    let body = me_json(&app, &hs(&c)).await;
    assert_eq!(
        body,
        json!({
            "id": id.to_string(),
            "username": "alice_l",
            "email": "alice@wonderland.test",
            "full_name": "Alice Liddell",
            "is_active": true,
        })
    );
}

async fn the_display_name_falls_back_to_the_metadata_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut c = claims(&Uuid::new_v4().to_string());
    c["email"] = json!("carol@example.test");
    c["user_metadata"] = json!({"name": "Carol Danvers"});
    let body = me_json(&app, &hs(&c)).await;
    assert_eq!(body["full_name"], "Carol Danvers");
    assert_eq!(
        body["username"], "carol",
        "username from the email's local part"
    );
}

async fn a_user_without_email_or_name_still_gets_a_profile(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = Uuid::new_v4();
    let body = me_json(&app, &hs(&claims(&id.to_string()))).await;
    assert_eq!(body["id"], id.to_string());
    assert!(
        body["username"].as_str().is_some_and(|u| !u.is_empty()),
        "{body}"
    );
    assert_eq!(body["email"], Value::Null);
    assert_eq!(body["full_name"], Value::Null);
    assert_eq!(body["is_active"], true);
}

async fn users_sharing_an_email_local_part_get_distinct_usernames(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut usernames = Vec::new();
    for email in ["bob@a.test", "bob@b.test"] {
        let mut c = claims(&Uuid::new_v4().to_string());
        c["email"] = json!(email);
        let body = me_json(&app, &hs(&c)).await;
        assert_eq!(body["email"], email);
        let username = body["username"].as_str().unwrap().to_string();
        assert!(
            username.starts_with("bob"),
            "{email} got username {username}"
        );
        usernames.push(username);
    }
    assert_ne!(usernames[0], usernames[1], "usernames must be unique");
    assert_eq!(
        usernames[0], "bob",
        "the first one gets the plain local part"
    );
}

async fn a_new_users_concurrent_first_requests_all_succeed(backend: Backend) {
    let app = spawn_app(backend).await;
    let newcomer = TestUser::new();
    let requests = (0..10).map(|_| {
        let client = app.client.clone();
        let url = app.url("/users/me");
        let token = newcomer.token.clone();
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    for status in join_all(requests).await {
        assert_eq!(status.expect("task"), 200);
    }
    assert_eq!(
        me_json(&app, &newcomer.token).await["id"],
        newcomer.id.to_string()
    );
}

async fn users_signing_in_at_once_with_the_same_local_part_get_distinct_usernames(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let tokens: Vec<String> = (0..6)
        .map(|i| {
            let mut c = claims(&Uuid::new_v4().to_string());
            c["email"] = json!(format!("sam@domain{i}.test"));
            hs(&c)
        })
        .collect();
    let requests = tokens.iter().map(|token| {
        let client = app.client.clone();
        let url = app.url("/users/me");
        let token = token.clone();
        tokio::spawn(async move {
            let res = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        })
    });
    let mut usernames: Vec<String> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("task")["username"].as_str().unwrap().to_string())
        .collect();
    assert!(
        usernames.iter().all(|u| u.starts_with("sam")),
        "{usernames:?}"
    );
    usernames.sort();
    usernames.dedup();
    assert_eq!(usernames.len(), 6, "all distinct: {usernames:?}");
}

async fn usernames_survive_a_server_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut tokens = Vec::new();
    let mut before = Vec::new();
    for email in ["eve@a.test", "eve@b.test"] {
        let mut c = claims(&Uuid::new_v4().to_string());
        c["email"] = json!(email);
        let token = hs(&c);
        before.push(me_json(&app, &token).await);
        tokens.push(token);
    }
    let database_url = app.database_url.clone();
    app.stop().await;

    // A fresh process has no memory of these users and upserts them again.
    let app = spawn_on_database(&database_url, &[]).await;
    for i in [1, 0] {
        assert_eq!(
            me_json(&app, &tokens[i]).await,
            before[i],
            "user {i} after restart"
        );
    }
}

async fn a_later_token_with_new_claims_refreshes_the_profile(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = Uuid::new_v4().to_string();
    let mut c = claims(&id);
    c["email"] = json!("dana@old.test");
    c["user_metadata"] = json!({"full_name": "Dana Old"});
    let first = me_json(&app, &hs(&c)).await;
    c["email"] = json!("dana@new.test");
    c["user_metadata"] = json!({"full_name": "Dana New"});
    let second = me_json(&app, &hs(&c)).await;
    assert_eq!(second["email"], "dana@new.test");
    assert_eq!(second["full_name"], "Dana New");
    assert_eq!(
        second["username"], first["username"],
        "the username is kept"
    );
}

async fn a_user_can_look_up_themself(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let mine = me_json(&app, &alice.token).await;
    let res = app
        .get(&format!("/users/{}", alice.id), Some(&alice.token))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, mine);
}

async fn a_user_can_look_up_someone_who_shares_a_chat(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    let bob_profile = me_json(&app, &bob.token).await;
    let chat = app.create_chat(&alice.token, "together").await;
    app.add_member(&alice.token, chat["id"].as_str().unwrap(), bob.id)
        .await;

    let res = app
        .get(&format!("/users/{}", bob.id), Some(&alice.token))
        .await;
    assert_eq!(res.status(), 200, "owner looks up member");
    let seen: Value = res.json().await.unwrap();
    assert!(bob_profile["email"].is_string(), "Bob sees his own email");
    assert_eq!(seen["email"], Value::Null, "Alice does not see Bob's email");
    let mut expected = bob_profile.clone();
    expected["email"] = Value::Null;
    assert_eq!(seen, expected, "everything else is the same profile");

    let res = app
        .get(&format!("/users/{}", alice.id), Some(&bob.token))
        .await;
    assert_eq!(res.status(), 200, "member looks up owner");
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["id"], alice.id.to_string());
    assert_eq!(seen["email"], Value::Null, "Bob does not see Alice's email");
    assert!(seen["username"].is_string());
}

async fn a_stranger_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let stranger = TestUser::new();
    app.touch(&alice.token).await;
    app.touch(&stranger.token).await;
    // Alice's own chat, which the stranger is not in.
    app.create_chat(&alice.token, "mine").await;
    for id in [stranger.id, Uuid::new_v4()] {
        let res = app.get(&format!("/users/{id}"), Some(&alice.token)).await;
        assert_eq!(res.status(), 404, "user {id}");
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"detail": "User not found"})
        );
    }
}

async fn a_user_id_that_is_not_a_uuid_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let res = app.get("/users/not-a-uuid", Some(&alice.token)).await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["path", "user_id"]));
    assert_eq!(body["detail"][0]["type"], "uuid_parsing");
    assert!(body["detail"][0]["msg"].is_string());
}

on_both_backends!(
    a_request_without_a_token_is_refused_on_every_protected_endpoint,
    a_malformed_authorization_header_is_refused,
    the_bearer_scheme_is_case_insensitive,
    a_token_signed_with_another_secret_is_refused,
    a_token_with_a_tampered_payload_is_refused,
    an_unsigned_alg_none_token_is_refused,
    an_hs256_token_keyed_with_the_rsa_public_key_is_refused,
    a_token_whose_algorithm_does_not_match_its_key_is_refused,
    an_asymmetric_token_without_a_jwks_configured_is_refused,
    an_expired_token_is_refused,
    a_token_expired_within_the_leeway_is_still_accepted,
    a_token_without_an_expiry_is_refused,
    a_token_not_yet_valid_is_refused,
    a_jwks_only_deployment_has_no_development_mode,
    a_token_for_another_audience_is_refused,
    a_token_without_a_subject_is_refused,
    a_token_whose_subject_is_not_a_uuid_is_refused,
    a_token_naming_an_unknown_key_id_is_refused,
    tokens_signed_with_the_jwks_keys_are_accepted,
    an_asymmetric_token_can_create_chats_and_post_messages,
    with_an_issuer_configured_only_tokens_from_that_issuer_are_accepted,
    the_issuer_check_applies_to_jwks_tokens_too,
    the_first_request_creates_the_user_from_the_token_claims,
    the_display_name_falls_back_to_the_metadata_name,
    a_user_without_email_or_name_still_gets_a_profile,
    users_sharing_an_email_local_part_get_distinct_usernames,
    a_later_token_with_new_claims_refreshes_the_profile,
    a_new_users_concurrent_first_requests_all_succeed,
    users_signing_in_at_once_with_the_same_local_part_get_distinct_usernames,
    usernames_survive_a_server_restart,
    a_user_can_look_up_themself,
    a_user_can_look_up_someone_who_shares_a_chat,
    a_stranger_is_not_found,
    a_user_id_that_is_not_a_uuid_is_a_validation_error,
);

/// Regression tests for server bugs found while writing this suite.
mod regressions {
    use super::*;
    on_both_backends!(
        a_token_without_an_audience_is_refused,
        with_an_issuer_configured_a_token_without_an_issuer_is_refused,
    );
}
