//! Uploaded videos processed end to end (probe, thumbnail, speech audio, transcription with the
//! development provider, subtitles, metadata), with progress over WebSocket, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod video_support;

use std::time::Duration;

use common::ws::WsClient;
use common::{spawn_app, Backend, TestApp, TestUser};
use serde_json::Value;
use video_support::*;

/// Longest a small test video may take to process.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// Checks a COMPLETED job's metadata, thumbnail and subtitles against what was uploaded.
async fn assert_processed(job: &Value, (w, h): (u32, u32), secs: f64, format: &str, audio: bool) {
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["progress"], 100);
    assert!(job["error_message"].is_null());
    let md = &job["video_metadata"];
    let duration = md["extracted_video_duration_seconds"].as_f64().unwrap();
    assert!(
        (duration - secs).abs() <= 0.1,
        "duration {duration} is not within 0.1 s of {secs}"
    );
    assert_eq!(md["extracted_video_resolution"], format!("{w}x{h}"));
    assert_eq!(md["extracted_video_format"], format);
    assert!(md["extracted_video_codec"].is_string());
    assert!(md["extracted_bit_rate"].as_i64().unwrap() > 0);

    let thumb_url = md["thumbnail_file_url"].as_str().expect("thumbnail URL");
    assert!(!thumb_url.starts_with("gs://") && thumb_url.starts_with("http"));
    let expected = if w > 1280 {
        (1280, ((h as f64 * 1280.0 / w as f64).round() as u32) & !1)
    } else {
        (w, h)
    };
    assert_eq!(
        jpeg_size(&fetch(thumb_url).await),
        expected,
        "thumbnail size"
    );

    assert!(md["title"].as_str().is_some_and(|t| !t.is_empty()), "{md}");
    assert!(md["description"].is_string());
    assert!(md["tags"].is_array());
    assert!(md["show_notes_text"].is_string());

    let stages = &job["processing_stages"];
    for s in ["probe", "thumbnail", "metadata", "finalize"] {
        assert_eq!(stages[s]["status"], "COMPLETED", "stage {s}: {stages}");
        assert_eq!(stages[s]["progress"], 100);
        assert!(stages[s]["started_at"].is_string() && stages[s]["finished_at"].is_string());
    }
    if !audio {
        for s in ["audio", "transcription", "subtitles"] {
            assert_eq!(stages[s]["status"], "SKIPPED", "stage {s}: {stages}");
        }
        assert!(md["subtitle_files_urls"].is_null());
        assert!(md["transcript_file_url"].is_null());
        return;
    }
    for s in ["audio", "transcription", "subtitles"] {
        assert_eq!(stages[s]["status"], "COMPLETED", "stage {s}: {stages}");
    }
    // The development provider's segments, as stored in the transcript file…
    let transcript: Value =
        serde_json::from_slice(&fetch(md["transcript_file_url"].as_str().unwrap()).await).unwrap();
    let segments = transcript["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    assert_eq!(md["transcript_text"], transcript["text"]);
    let mut previous_end = 0.0;
    for (i, s) in segments.iter().enumerate() {
        let text = s["text"].as_str().unwrap();
        assert!(
            text.starts_with("Development transcript of audio-000.flac, part ")
                && text.ends_with(&format!(" of {}.", segments.len())),
            "segment {i}: {text}"
        );
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(start >= previous_end - 1e-6 && end > start && end <= secs + 0.15);
        previous_end = end;
    }
    // …are exactly the cues of both subtitle files, at their real times.
    let urls = &md["subtitle_files_urls"];
    for kind in ["vtt", "srt"] {
        let file = String::from_utf8(fetch(urls[kind].as_str().unwrap()).await).unwrap();
        if kind == "vtt" {
            assert!(file.starts_with("WEBVTT"), "{file}");
        }
        let cues = parse_cues(&file);
        assert_eq!(cues.len(), segments.len(), "{kind}: {file}");
        for (cue, seg) in cues.iter().zip(segments) {
            assert!(
                (cue.0 - seg["start"].as_f64().unwrap()).abs() < 0.002,
                "{kind} start"
            );
            assert!(
                (cue.1 - seg["end"].as_f64().unwrap()).abs() < 0.002,
                "{kind} end"
            );
            assert_eq!(cue.2, seg["text"].as_str().unwrap());
        }
    }
}

/// Reads `job` events for `job_id` until it ends; checks they come in order with
/// non-decreasing progress.
async fn follow_job(ws: &mut WsClient, job_id: i64) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let e = ws.next_of("job").await;
        if e["job"]["id"] != job_id {
            continue;
        }
        let done = is_terminal(&e["job"]["status"]);
        events.push(e["job"].clone());
        if done {
            return events;
        }
    }
}

async fn upload_and_process(
    backend: Backend,
    container: Container,
    size: (u32, u32),
    secs: f64,
    audio: bool,
) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let mut ws = WsClient::connect(&app, &alice.token).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_video(dir.path(), "clip", container, size, secs, audio);
    let accepted = upload_video(&app, &alice.token, &file, container.content_type()).await;
    let job_id = accepted["job_id"].as_i64().unwrap();

    let events = follow_job(&mut ws, job_id).await;
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"PENDING"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"COMPLETED"), "{statuses:?}");
    assert!(statuses.contains(&"PROCESSING"));
    let mut seen_processing = false;
    for s in &statuses[1..statuses.len() - 1] {
        assert_eq!(*s, "PROCESSING", "{statuses:?}");
        seen_processing = true;
    }
    assert!(seen_processing);
    let progress: Vec<i64> = events
        .iter()
        .map(|e| e["progress"].as_i64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {progress:?}"
    );
    for e in &events {
        assert!(e.get("video").is_none() && e.get("video_metadata").is_none());
        assert_eq!(e["video_id"], accepted["video_id"]);
    }

    let job = get_job(&app, &alice.token, job_id).await;
    assert_processed(&job, size, secs, container.ext(), audio).await;
    assert_eq!(job["video"]["id"], accepted["video_id"]);
    assert_eq!(job["video"]["content_type"], container.content_type());
    let key = job["video"]["storage_path"].as_str().unwrap();
    assert!(key.starts_with(&format!("uploads/{}/", alice.id)), "{key}");
    assert!(key.ends_with(&format!(".{}", container.ext())), "{key}");
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(5))
            .await
            .is_empty(),
        "temporary files left behind"
    );

    // The video endpoint shows the same job and metadata.
    let video: Value = app
        .get(
            &format!("/api/v1/videos/{}", accepted["video_id"]),
            Some(&alice.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(video["latest_job"]["id"], job_id);
    assert_eq!(video["latest_job"]["status"], "COMPLETED");
    assert_eq!(
        video["video_metadata"]["extracted_video_resolution"],
        format!("{}x{}", size.0, size.1)
    );
    stop(app).await;
}

async fn stop(app: TestApp) {
    app.stop().await;
}

async fn an_mp4_upload_ends_completed_with_metadata_thumbnail_and_subtitles(backend: Backend) {
    upload_and_process(backend, Container::Mp4, (320, 240), 3.0, true).await;
}

async fn a_webm_upload_ends_completed(backend: Backend) {
    upload_and_process(backend, Container::Webm, (640, 360), 2.5, true).await;
}

async fn a_1080p_mov_upload_gets_a_1280_wide_thumbnail(backend: Backend) {
    upload_and_process(backend, Container::Mov, (1920, 1080), 1.5, true).await;
}

async fn a_video_without_audio_skips_transcription_cleanly(backend: Backend) {
    upload_and_process(backend, Container::Mp4, (320, 240), 2.0, false).await;
}

async fn a_text_file_sent_as_mp4_fails_at_probe_with_a_clear_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let res = upload_to(
        &app,
        "/api/v1/videos/upload",
        &alice.token,
        b"this is not a video, just some text pretending to be one\n".repeat(50),
        Some("notes.mp4"),
        "video/mp4",
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let job = wait_until_done(
        &app,
        &alice.token,
        body["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["stage"], "probe");
    let message = job["error_message"].as_str().unwrap();
    assert!(
        message.contains("could not be read as a video"),
        "unclear error: {message}"
    );
    assert_eq!(job["processing_stages"]["probe"]["status"], "FAILED");
    assert_eq!(job["processing_stages"]["probe"]["error"], message);
    assert_eq!(job["processing_stages"]["thumbnail"]["status"], "PENDING");
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(5))
            .await
            .is_empty()
    );
    stop(app).await;
}

on_both_backends!(
    an_mp4_upload_ends_completed_with_metadata_thumbnail_and_subtitles,
    a_webm_upload_ends_completed,
    a_1080p_mov_upload_gets_a_1280_wide_thumbnail,
    a_video_without_audio_skips_transcription_cleanly,
    a_text_file_sent_as_mp4_fails_at_probe_with_a_clear_message,
);
