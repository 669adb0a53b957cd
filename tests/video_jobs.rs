//! Job control: cancelling mid-decode, a restart mid-job, the worker limit and the WebSocket
//! `jobs` request, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod video_support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::ws::WsClient;
use common::{spawn_app_with, spawn_on_database, Backend, TestUser};
use serde_json::{json, Value};
use video_support::*;

/// Minutes of the long test video (seconds of decoding for the speech-audio stage).
const LONG_MINUTES: u32 = 40;

/// The long video, made once per test process.
fn long_video() -> PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = make_long_video(dir.path(), "long", LONG_MINUTES);
        (dir, path)
    })
    .1
    .clone()
}

/// Waits for a `job` event of `job_id` in `stage` with some progress within it.
async fn wait_for_stage(ws: &mut WsClient, job_id: i64, stage: &str) -> Value {
    loop {
        let e = ws.next_of("job").await;
        let job = &e["job"];
        if job["id"] != job_id {
            continue;
        }
        assert!(!is_terminal(&job["status"]), "job ended early: {job}");
        if job["stage"] == stage && job["processing_stages"][stage]["progress"].as_i64() > Some(0) {
            return job.clone();
        }
    }
}

async fn cancelling_mid_decode_stops_the_job_and_removes_its_files(backend: Backend) {
    let video = tokio::task::spawn_blocking(long_video).await.unwrap();
    let app = spawn_app_with(backend, &[]).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let mut ws = WsClient::connect(&app, &alice.token).await;
    let accepted = upload_video(&app, &alice.token, &video, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    wait_for_stage(&mut ws, job_id, "audio").await;
    assert!(
        !scratch_entries(&app.state.settings.data_dir).is_empty(),
        "a running job has a scratch folder"
    );

    let res = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            Some(&alice.token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["status"], "CANCELLED", "{job}");
    assert_eq!(job["processing_stages"]["audio"]["status"], "CANCELLED");
    assert_eq!(job["video"]["id"], accepted["video_id"]);

    // Decoding stops within a second and takes its scratch files with it.
    let left = scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(2)).await;
    assert!(left.is_empty(), "scratch files left after cancel: {left:?}");
    let event = loop {
        let e = ws.next_of("job").await;
        if e["job"]["id"] == job_id && e["job"]["status"] == "CANCELLED" {
            break e;
        }
    };
    assert_eq!(event["job"]["progress"], job["progress"]);

    // It stays cancelled; cancelling again is a conflict.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = get_job(&app, &alice.token, job_id).await;
    assert_eq!(again["status"], "CANCELLED");
    assert_eq!(again["progress"], job["progress"]);
    common::assert_detail(
        app.send_json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            Some(&alice.token),
            &json!({}),
        )
        .await,
        409,
        "Job already finished",
        "second cancel",
    )
    .await;
    app.stop().await;
}

async fn a_restart_mid_job_resumes_it_from_its_last_finished_stage(backend: Backend) {
    let video = tokio::task::spawn_blocking(long_video).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_string_lossy().into_owned();
    let extra = [
        ("ECHO_DATA_DIR", data_dir.as_str()),
        ("VIDEO_SWEEP_SECS", "0.5"),
    ];
    let app = spawn_app_with(backend, &extra).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let mut ws = WsClient::connect(&app, &alice.token).await;
    let accepted = upload_video(&app, &alice.token, &video, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    let before = wait_for_stage(&mut ws, job_id, "audio").await;
    let database_url = app.database_url.clone();
    drop(ws);
    app.stop().await;

    let app = spawn_on_database(&database_url, &extra).await;
    let job = wait_until_done(&app, &alice.token, job_id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let stages = &job["processing_stages"];
    // Stages finished before the restart were not run again.
    for s in ["probe", "thumbnail"] {
        assert_eq!(
            stages[s]["started_at"], before["processing_stages"][s]["started_at"],
            "{s} ran again: {stages}"
        );
    }
    let duration = job["video_metadata"]["extracted_video_duration_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        (duration - f64::from(LONG_MINUTES * 60)).abs() < 1.0,
        "{duration}"
    );
    let transcript: Value = serde_json::from_slice(
        &fetch(
            job["video_metadata"]["transcript_file_url"]
                .as_str()
                .unwrap(),
        )
        .await,
    )
    .unwrap();
    // The speech track was split into chunks of at most 10 minutes, each transcribed, with the
    // segments placed at their chunk's offset.
    let segments = transcript["segments"].as_array().unwrap();
    let mut chunks = std::collections::BTreeSet::new();
    for s in segments {
        let text = s["text"].as_str().unwrap();
        let k: u32 = text["Development transcript of audio-".len()..][..3]
            .parse()
            .unwrap();
        chunks.insert(k);
        let start = s["start"].as_f64().unwrap();
        assert!(
            start > f64::from(k * 600) - 1.0 && start < f64::from((k + 1) * 600),
            "segment of chunk {k} at {start}"
        );
    }
    assert!(chunks.len() >= (LONG_MINUTES / 10) as usize, "{chunks:?}");
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(5))
            .await
            .is_empty()
    );
    app.stop().await;
}

async fn at_most_video_workers_jobs_run_and_the_jobs_request_lists_them(backend: Backend) {
    let video = tokio::task::spawn_blocking(long_video).await.unwrap();
    let app = spawn_app_with(backend, &[("VIDEO_WORKERS", "1")]).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let mut ws = WsClient::connect(&app, &alice.token).await;
    let empty = ws.request(json!({"type": "jobs"}), "j0").await;
    assert_eq!(empty, json!({"type": "jobs", "id": "j0", "jobs": []}));

    let first = upload_video(&app, &alice.token, &video, "video/mp4").await;
    let second = upload_video(&app, &alice.token, &video, "video/mp4").await;
    let first_id = first["job_id"].as_i64().unwrap();
    let second_id = second["job_id"].as_i64().unwrap();
    wait_for_stage(&mut ws, first_id, "audio").await;
    assert_eq!(
        get_job(&app, &alice.token, second_id).await["status"],
        "PENDING"
    );

    let listed = ws.request(json!({"type": "jobs"}), "j1").await;
    assert_eq!(listed["type"], "jobs", "{listed}");
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{listed}");
    // Newest first, each with its video and metadata.
    assert_eq!(jobs[0]["id"], second_id);
    assert_eq!(jobs[0]["status"], "PENDING");
    assert_eq!(jobs[1]["id"], first_id);
    assert_eq!(jobs[1]["status"], "PROCESSING");
    for j in jobs {
        assert!(
            j["video"]["id"].is_i64() && j["video_metadata"].is_object(),
            "{j}"
        );
    }
    let rest: Value = app
        .get("/api/v1/jobs/", Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest.as_array().unwrap().len(), 2);

    // Cancelling the pending one never starts it; the running one carries on.
    let res = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{second_id}/cancel"),
            Some(&alice.token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["processing_stages"], Value::Null);
    let res = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{first_id}/cancel"),
            Some(&alice.token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let listed = ws.request(json!({"type": "jobs"}), "j2").await;
    assert_eq!(listed["jobs"], json!([]));
    app.stop().await;
}

async fn a_job_whose_actor_died_is_failed_with_the_reason(backend: Backend) {
    let video = tokio::task::spawn_blocking(long_video).await.unwrap();
    let app = spawn_app_with(backend, &[]).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let mut ws = WsClient::connect(&app, &alice.token).await;
    let accepted = upload_video(&app, &alice.token, &video, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    wait_for_stage(&mut ws, job_id, "audio").await;
    // What a dying `VideoJob` tells its supervisor (from its `Drop`).
    app.state
        .videos
        .supervisor()
        .do_send(echo::video::messages::JobEnded {
            job_id: job_id as i32,
            failure: Some("the job's actor panicked".into()),
        });
    let job = wait_until_done(&app, &alice.token, job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["error_message"], "the job's actor panicked");
    // The failure is final: the job's actor (still alive here) gives up at its next write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = get_job(&app, &alice.token, job_id).await;
    assert_eq!(again["status"], "FAILED");
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(3))
            .await
            .is_empty()
    );
    app.stop().await;
}

/// Puts a finished job back as a dead node would leave it: PROCESSING under an expired lease,
/// after `attempts` starts, with `unfinished` stages not done.
async fn leave_as_crashed(app: &common::TestApp, job_id: i32, attempts: i32, unfinished: &[&str]) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = app.state.db.conn().await.unwrap();
    let job = echo::db::videos::find_job(&mut conn, job_id)
        .await
        .unwrap()
        .unwrap();
    let mut stages = job.processing_stages.unwrap();
    for s in unfinished {
        stages[*s] = json!({"status": "PENDING", "progress": 0});
    }
    let expired = chrono::Utc::now() - chrono::Duration::minutes(5);
    echo::run!(&mut conn, |c| diesel::update(
        video_jobs::table.find(job_id)
    )
    .set((
        video_jobs::status.eq("PROCESSING"),
        video_jobs::stage.eq(Some(unfinished[0])),
        video_jobs::progress.eq(80),
        video_jobs::processing_stages.eq(Some(&stages)),
        video_jobs::attempts.eq(attempts),
        video_jobs::lease_owner.eq(Some("a-node-that-died")),
        video_jobs::lease_expires_at.eq(Some(expired)),
    ))
    .execute(c)
    .await)
    .unwrap();
}

async fn a_job_left_processing_by_a_dead_node_resumes_from_its_last_finished_stage(
    backend: Backend,
) {
    let app = spawn_app_with(backend, &[("VIDEO_SWEEP_SECS", "0.3")]).await;
    let alice = TestUser::new();
    let dir = tempfile::tempdir().unwrap();
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    let done = wait_until_done(&app, &alice.token, job_id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "COMPLETED");
    leave_as_crashed(&app, job_id as i32, 1, &["metadata", "finalize"]).await;

    // The sweep finds the expired lease and resumes the job at its first unfinished stage.
    let job = wait_until_done(&app, &alice.token, job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let (before, after) = (&done["processing_stages"], &job["processing_stages"]);
    for s in ["probe", "thumbnail", "audio", "transcription", "subtitles"] {
        assert_eq!(after[s], before[s], "{s} ran again");
    }
    for s in ["metadata", "finalize"] {
        assert_eq!(after[s]["status"], "COMPLETED");
        assert_ne!(
            after[s]["started_at"], before[s]["started_at"],
            "{s} did not run"
        );
    }
    assert_eq!(job["progress"], 100);
    app.stop().await;
}

async fn a_job_interrupted_too_often_is_failed_instead_of_resumed(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("VIDEO_SWEEP_SECS", "0.3"), ("VIDEO_MAX_ATTEMPTS", "3")],
    )
    .await;
    let alice = TestUser::new();
    let dir = tempfile::tempdir().unwrap();
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    wait_until_done(&app, &alice.token, job_id, Duration::from_secs(60)).await;
    leave_as_crashed(
        &app,
        job_id as i32,
        3,
        &[
            "audio",
            "transcription",
            "subtitles",
            "metadata",
            "finalize",
        ],
    )
    .await;
    let job = wait_until_done(&app, &alice.token, job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(
        job["error_message"],
        "Processing was interrupted 3 times; giving up."
    );
    app.stop().await;
}

on_both_backends!(
    cancelling_mid_decode_stops_the_job_and_removes_its_files,
    a_restart_mid_job_resumes_it_from_its_last_finished_stage,
    at_most_video_workers_jobs_run_and_the_jobs_request_lists_them,
    a_job_whose_actor_died_is_failed_with_the_reason,
    a_job_left_processing_by_a_dead_node_resumes_from_its_last_finished_stage,
    a_job_interrupted_too_often_is_failed_instead_of_resumed,
);
