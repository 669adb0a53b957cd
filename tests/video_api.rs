//! The video REST contract (docs/API.md): upload validation, ownership, listing, metadata edits, the
//! test upload and signed uploads on local storage, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod video_support;

use std::time::Duration;

use common::{assert_detail, assert_validation, spawn_app, spawn_app_with, Backend, TestUser};
use serde_json::{json, Value};
use video_support::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// A small mp4, uploaded and processed; returns the finished job.
async fn processed_video(app: &common::TestApp, user: &TestUser) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let accepted = upload_video(app, &user.token, &file, "video/mp4").await;
    let job = wait_until_done(
        app,
        &user.token,
        accepted["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    job
}

async fn a_non_video_upload_is_refused_with_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let res = upload_to(
        &app,
        "/api/v1/videos/upload",
        &alice.token,
        b"plain text".to_vec(),
        Some("notes.txt"),
        "text/plain",
    )
    .await;
    assert_detail(res, 400, "File must be a video", "text upload").await;
    let videos: Value = app
        .get("/users/me/videos", Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(videos, json!([]));
}

async fn an_upload_without_a_file_is_422(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let form = reqwest::multipart::Form::new().text("title", "no file here");
    let res = app
        .client
        .post(app.url("/api/v1/videos/upload"))
        .bearer_auth(&alice.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_validation(res, json!(["body", "file"]), "missing", "no file part").await;
    let res = app
        .post("/api/v1/videos/upload", &alice.token, &json!({"file": "x"}))
        .await;
    assert_validation(res, json!(["body", "file"]), "missing", "not multipart").await;
    let res = app
        .client
        .post(app.url("/api/v1/videos/upload"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn an_oversized_upload_is_413_and_stores_nothing(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAX_UPLOAD_BYTES", "100000")]).await;
    let alice = TestUser::new();
    // Declared too large up front…
    let res = upload_to(
        &app,
        "/api/v1/videos/upload",
        &alice.token,
        vec![0u8; 2_000_000],
        Some("big.mp4"),
        "video/mp4",
    )
    .await;
    assert_detail(res, 413, "Request body too large", "declared size").await;
    // …or found too large while streaming (no Content-Length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..30).map(|_| Ok(vec![7u8; 10_000])).collect();
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(
        futures_util::stream::iter(chunks),
    ))
    .file_name("big.mp4")
    .mime_str("video/mp4")
    .unwrap();
    let res = app
        .client
        .post(app.url("/api/v1/videos/upload"))
        .bearer_auth(&alice.token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_detail(res, 413, "Request body too large", "streamed size").await;
    let videos: Value = app
        .get("/users/me/videos", Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(videos, json!([]));
    let uploads = app
        .state
        .settings
        .data_dir
        .join("storage")
        .join("uploads")
        .join(alice.id.to_string());
    let stored = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "nothing may be stored for a refused upload");
    let partial = std::fs::read_dir(app.state.settings.data_dir.join("storage/.partial"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(partial, 0);
}

async fn another_users_job_is_403_and_their_video_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    app.touch(&bob.token).await;
    let job = processed_video(&app, &alice).await;
    let (job_id, video_id) = (
        job["id"].as_i64().unwrap(),
        job["video_id"].as_i64().unwrap(),
    );
    assert_detail(
        app.get(&format!("/api/v1/videos/jobs/{job_id}"), Some(&bob.token))
            .await,
        403,
        "User not authorized to view this job",
        "another user's job",
    )
    .await;
    assert_detail(
        app.get("/api/v1/videos/jobs/999999", Some(&bob.token))
            .await,
        404,
        "Job not found",
        "no such job",
    )
    .await;
    assert_detail(
        app.get(&format!("/api/v1/videos/{video_id}"), Some(&bob.token))
            .await,
        404,
        "Video not found",
        "another user's video",
    )
    .await;
    assert_detail(
        app.send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/videos/{video_id}/metadata"),
            Some(&bob.token),
            &json!({"title": "mine now"}),
        )
        .await,
        404,
        "Video not found",
        "another user's metadata",
    )
    .await;
    assert_detail(
        app.post(
            &format!("/api/v1/jobs/{job_id}/cancel"),
            &bob.token,
            &json!({}),
        )
        .await,
        404,
        "Job not found",
        "cancel another user's job",
    )
    .await;
    assert_validation(
        app.get("/api/v1/videos/jobs/abc", Some(&bob.token)).await,
        json!(["path", "job_id"]),
        "int_parsing",
        "bad job id",
    )
    .await;
    for path in [
        "/users/me/videos",
        "/users/me/jobs",
        "/api/v1/jobs/?status=COMPLETED",
    ] {
        let list: Value = app.get(path, Some(&bob.token)).await.json().await.unwrap();
        assert_eq!(list, json!([]), "{path} shows only the caller's");
    }
}

async fn jobs_are_listed_by_status_and_unknown_statuses_are_422(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let job = processed_video(&app, &alice).await;
    let active: Value = app
        .get("/api/v1/jobs/", Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active, json!([]), "default is PENDING and PROCESSING");
    let done: Value = app
        .get(
            "/api/v1/jobs?status=COMPLETED&status=FAILED",
            Some(&alice.token),
        )
        .await
        .json()
        .await
        .unwrap();
    let done = done.as_array().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], job["id"]);
    assert_eq!(
        common::keys(&done[0]),
        [
            "created_at",
            "error_message",
            "id",
            "processing_stages",
            "progress",
            "stage",
            "status",
            "updated_at",
            "video",
            "video_id",
            "video_metadata"
        ]
    );
    common::assert_utc_timestamp(&done[0]["created_at"], "created_at");
    assert_validation(
        app.get(
            "/api/v1/jobs/?status=PENDING&status=DONE",
            Some(&alice.token),
        )
        .await,
        json!(["query", "status", 1]),
        "enum",
        "unknown status",
    )
    .await;
    assert_validation(
        app.get("/api/v1/jobs/?limit=0", Some(&alice.token)).await,
        json!(["query", "limit"]),
        "greater_than_equal",
        "bad limit",
    )
    .await;
    let mine: Value = app
        .get("/users/me/jobs", Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let videos: Value = app
        .get("/users/me/videos", Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(videos.as_array().unwrap().len(), 1);
    assert_eq!(
        common::keys(&videos[0]),
        [
            "content_type",
            "created_at",
            "id",
            "original_filename",
            "size_bytes",
            "storage_path",
            "updated_at",
            "uploader_user_id"
        ]
    );
    assert_eq!(videos[0]["original_filename"], "clip.mp4");
}

async fn metadata_edits_stick_and_extra_fields_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let job = processed_video(&app, &alice).await;
    let video_id = job["video_id"].as_i64().unwrap();
    let path = format!("/api/v1/videos/{video_id}/metadata");
    let res = app
        .send_json(
            reqwest::Method::PUT,
            &path,
            Some(&alice.token),
            &json!({"title": "My clip", "tags": ["rust", "video"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let md: Value = res.json().await.unwrap();
    assert_eq!(md["title"], "My clip");
    assert_eq!(md["tags"], json!(["rust", "video"]));
    assert_eq!(md["job_id"], job["id"]);
    assert_eq!(md["description"], job["video_metadata"]["description"]);
    assert_validation(
        app.send_json(
            reqwest::Method::PUT,
            &path,
            Some(&alice.token),
            &json!({"title": "x", "owner": "me"}),
        )
        .await,
        json!(["body", "owner"]),
        "extra_forbidden",
        "extra field",
    )
    .await;
    assert_validation(
        app.send_json(
            reqwest::Method::PUT,
            &path,
            Some(&alice.token),
            &json!({"tags": "not a list"}),
        )
        .await,
        json!(["body", "tags"]),
        "list_type",
        "tags not a list",
    )
    .await;
    let video: Value = app
        .get(&format!("/api/v1/videos/{video_id}"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(video["video_metadata"]["title"], "My clip");
    assert_detail(
        app.send_json(
            reqwest::Method::PUT,
            "/api/v1/videos/999999/metadata",
            Some(&alice.token),
            &json!({"title": "x"}),
        )
        .await,
        404,
        "Video not found",
        "no such video",
    )
    .await;
}

async fn the_test_upload_stores_a_named_file(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let res = upload_to(
        &app,
        "/test/upload",
        &alice.token,
        b"hello".to_vec(),
        Some("hello.txt"),
        "text/plain",
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"], "File uploaded successfully");
    assert_eq!(body["filename"], "hello.txt");
    assert_eq!(body["content_type"], "text/plain");
    assert_eq!(body["size"], 5);
    let saved = body["saved_path"].as_str().unwrap();
    assert!(!saved.starts_with('/') && !saved.contains(".."), "{saved}");
    let res = upload_to(
        &app,
        "/test/upload",
        &alice.token,
        b"x".to_vec(),
        None,
        "text/plain",
    )
    .await;
    assert_detail(res, 400, "Missing filename", "no filename").await;
    let res = app
        .client
        .post(app.url("/test/upload"))
        .bearer_auth(&alice.token)
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_validation(res, json!(["body", "file"]), "missing", "no file").await;
}

async fn a_signed_upload_round_trips_through_this_servers_files_route(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let res = app
        .post(
            "/api/v1/videos/signed-upload-url",
            &alice.token,
            &json!({"filename": "../../etc/clip.mp4", "content_type": "text/plain"}),
        )
        .await;
    assert_detail(res, 400, "File must be a video", "not a video").await;
    let res = app
        .post(
            "/api/v1/videos/signed-upload-url",
            &alice.token,
            &json!({"filename": "../../etc/clip.mp4", "content_type": "video/mp4"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let signed: Value = res.json().await.unwrap();
    let url = signed["upload_url"].as_str().unwrap().to_string();
    let video_id = signed["video_id"].as_i64().unwrap();
    let key = signed["storage_path"].as_str().unwrap();
    assert!(key.starts_with(&format!("uploads/{}/", alice.id)) && key.ends_with(".mp4"));
    assert!(!key.contains(".."), "{key}");
    assert!(
        url.contains("/files/uploads/") && url.contains("sig="),
        "{url}"
    );

    // Completing before the file arrived: 404.
    let complete = json!({"video_id": video_id, "original_filename": "clip.mp4",
        "content_type": "video/mp4", "size_bytes": 1, "storage_path": key});
    assert_detail(
        app.post("/api/v1/videos/upload-complete", &alice.token, &complete)
            .await,
        404,
        "Uploaded file not found",
        "complete before upload",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let bytes = std::fs::read(&file).unwrap();
    let tampered = url.replace("sig=", "sig=00");
    let res = app
        .client
        .put(&tampered)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "tampered signature");
    let res = app
        .client
        .put(&url)
        .header("content-type", "video/mp4")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "PUT to the signed URL");
    let res = app
        .client
        .put(&url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409, "a second PUT");
    // The upload URL does not allow reading.
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 403);

    let res = app
        .post("/api/v1/videos/upload-complete", &alice.token, &complete)
        .await;
    assert_eq!(res.status(), 200);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["video_id"], video_id);
    assert_eq!(accepted["status"], "PENDING");
    assert_detail(
        app.post("/api/v1/videos/upload-complete", &alice.token, &complete)
            .await,
        409,
        "Upload already completed",
        "complete twice",
    )
    .await;
    let bob = TestUser::new();
    assert_detail(
        app.post("/api/v1/videos/upload-complete", &bob.token, &complete)
            .await,
        404,
        "Video not found",
        "another user's upload",
    )
    .await;
    let job = wait_until_done(
        &app,
        &alice.token,
        accepted["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["video"]["size_bytes"], bytes.len() as i64);
    assert_eq!(job["video"]["original_filename"], "clip.mp4");
    assert_eq!(
        job["video_metadata"]["extracted_video_resolution"],
        "160x120"
    );
    // Artifact URLs are signed for GET only, and a forged path is refused.
    let thumb = job["video_metadata"]["thumbnail_file_url"]
        .as_str()
        .unwrap();
    assert_eq!(jpeg_size(&fetch(thumb).await), (160, 120));
    let res = app.client.put(thumb).body("x").send().await.unwrap();
    assert_eq!(res.status(), 403);
    let forged = thumb.replace("thumbnail.jpg", "subtitles.vtt");
    assert_eq!(app.client.get(&forged).send().await.unwrap().status(), 403);
    let res = app
        .client
        .get(app.url("/files/../../etc/passwd?expires=9999999999&sig=00"))
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 403 || res.status() == 404,
        "{}",
        res.status()
    );
}

async fn a_video_over_the_duration_limit_fails_at_probe(backend: Backend) {
    let app = spawn_app_with(backend, &[("VIDEO_MAX_DURATION_SECS", "1.5")]).await;
    let alice = TestUser::new();
    let dir = tempfile::tempdir().unwrap();
    let file = make_video(dir.path(), "long", Container::Mp4, (160, 120), 3.0, true);
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job = wait_until_done(
        &app,
        &alice.token,
        accepted["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["stage"], "probe");
    assert_eq!(
        job["error_message"],
        "The video is 3 s long; videos up to 1.5 s are processed."
    );
}

async fn the_openapi_document_lists_every_video_operation(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/test/upload", "post"),
        ("/api/v1/videos/upload", "post"),
        ("/api/v1/videos/signed-upload-url", "post"),
        ("/api/v1/videos/upload-complete", "post"),
        ("/api/v1/videos/{video_id}", "get"),
        ("/api/v1/videos/{video_id}/metadata", "put"),
        ("/api/v1/videos/jobs/{job_id}", "get"),
        ("/api/v1/jobs/", "get"),
        ("/api/v1/jobs/{job_id}/cancel", "post"),
        ("/users/me/videos", "get"),
        ("/users/me/jobs", "get"),
        ("/files/{key}", "get"),
        ("/files/{key}", "put"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "missing {method} {path}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "VideoResponse",
        "VideoJobWithDetailsResponse",
        "VideoMetadataResponse",
        "MetadataUpdate",
        "UploadAccepted",
    ] {
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
}

on_both_backends!(
    the_openapi_document_lists_every_video_operation,
    a_video_over_the_duration_limit_fails_at_probe,
    a_non_video_upload_is_refused_with_400,
    an_upload_without_a_file_is_422,
    an_oversized_upload_is_413_and_stores_nothing,
    another_users_job_is_403_and_their_video_404,
    jobs_are_listed_by_status_and_unknown_statuses_are_422,
    metadata_edits_stick_and_extra_fields_are_refused,
    the_test_upload_stores_a_named_file,
    a_signed_upload_round_trips_through_this_servers_files_route,
);
