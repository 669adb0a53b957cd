//! Hostile media (issue 10): uploads that make FFmpeg open other files are refused at the
//! probe, media work runs in `echo-server media-worker` child processes that are killed on
//! cancel and at their time limit, a crashing worker costs one attempt of one job (never the
//! node), and the worker can neither reach the network nor read files outside its paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod video_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_app_with, Backend, TestApp, TestUser};
use serde_json::{json, Value};
use video_support::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// A video that exists only on the server's disk (what a hostile upload points at).
fn server_side_video(dir: &Path) -> std::path::PathBuf {
    make_video(dir, "server-secret", Container::Mp4, (320, 240), 3.0, true)
}

/// Uploads `body` as `name` (an `.mp4` with video/mp4) and waits for its job to end.
async fn upload_and_wait(app: &TestApp, user: &TestUser, body: Vec<u8>, name: &str) -> Value {
    let res = upload_to(
        app,
        "/api/v1/videos/upload",
        &user.token,
        body,
        Some(name),
        "video/mp4",
    )
    .await;
    assert_eq!(res.status(), 200);
    let accepted: Value = res.json().await.unwrap();
    wait_until_done(
        app,
        &user.token,
        accepted["job_id"].as_i64().unwrap(),
        JOB_TIMEOUT,
    )
    .await
}

/// The job failed at the probe, with `needle` in its message, and produced nothing.
fn assert_refused_at_probe(job: &Value, needle: &str, what: &str) {
    assert_eq!(job["status"], "FAILED", "{what}: {job}");
    assert_eq!(job["stage"], "probe", "{what}: {job}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not be read as a video") && message.contains(needle),
        "{what}: unclear error: {message}"
    );
    let md = &job["video_metadata"];
    for field in [
        "thumbnail_file_url",
        "extracted_video_resolution",
        "extracted_video_duration_seconds",
        "transcript_file_url",
    ] {
        assert!(md[field].is_null(), "{what}: {field} was filled: {md}");
    }
    assert_eq!(job["processing_stages"]["thumbnail"]["status"], "PENDING");
}

async fn a_playlist_named_mp4_is_refused_at_probe_and_reads_no_server_file(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = server_side_video(dir.path());

    // An HLS playlist (the file) and an ffconcat script, each naming the server file.
    let hls = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:7.0,\n{}\n#EXT-X-ENDLIST\n",
        secret.display()
    );
    let job = upload_and_wait(&app, &alice, hls.into_bytes(), "x.mp4").await;
    assert_refused_at_probe(&job, "(hls)", "HLS playlist");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap()
            .contains("refers to other files"),
        "{job}"
    );

    let concat = format!("ffconcat version 1.0\nfile '{}'\n", secret.display());
    let job = upload_and_wait(&app, &alice, concat.into_bytes(), "y.mp4").await;
    assert_refused_at_probe(&job, "(concat)", "ffconcat script");

    // Nothing but the two uploads was stored: no thumbnail, no audio of the server's file.
    let stored = files_under(&app.state.settings.data_dir.join("storage"));
    assert!(
        stored
            .iter()
            .all(|p| !p.to_string_lossy().contains("artifacts")),
        "artifacts stored for refused uploads: {stored:?}"
    );
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(5))
            .await
            .is_empty()
    );
    app.stop().await;
}

async fn a_hostile_playlist_does_not_pin_a_video_worker(backend: Backend) {
    // The second report: the same upload sat in a stage forever (cancel answered
    // CANCELLED but the work went on), so with one worker nobody else's video ever ran.
    let app = spawn_app_with(backend, &[("VIDEO_WORKERS", "1")]).await;
    let (mallory, alice) = (TestUser::new(), TestUser::new());
    app.touch(&mallory.token).await;
    app.touch(&alice.token).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = server_side_video(dir.path());
    let hls = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:7.0,\n{}\n#EXT-X-ENDLIST\n",
        secret.display()
    );
    let res = upload_to(
        &app,
        "/api/v1/videos/upload",
        &mallory.token,
        hls.into_bytes(),
        Some("x.mp4"),
        "video/mp4",
    )
    .await;
    assert_eq!(res.status(), 200);
    let hostile: Value = res.json().await.unwrap();
    let hostile_id = hostile["job_id"].as_i64().unwrap();
    // Give it time to get wherever it gets, then cancel it (a 409 if it already ended).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let res = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{hostile_id}/cancel"),
            Some(&mallory.token),
            &json!({}),
        )
        .await;
    assert!(
        res.status() == 200 || res.status() == 409,
        "cancel: {}",
        res.status()
    );

    // Another user's video gets the worker and completes.
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job = wait_until_done(
        &app,
        &alice.token,
        accepted["job_id"].as_i64().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let hostile = get_job(&app, &mallory.token, hostile_id).await;
    assert!(is_terminal(&hostile["status"]), "{hostile}");
    assert!(
        hostile["video_metadata"]["thumbnail_file_url"].is_null(),
        "the server's file was served as a thumbnail: {hostile}"
    );
    app.stop().await;
}

/// Waits until a media worker (a process of this test whose command line names `needle`)
/// runs, and returns its pid.
async fn wait_for_worker(needle: &str, within: Duration) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = child_processes(needle).first() {
            return *pid;
        }
        assert!(start.elapsed() < within, "no {needle} worker started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `job_id` to be PROCESSING in `stage`.
async fn wait_for_stage(app: &TestApp, token: &str, job_id: i64, stage: &str) -> Value {
    let start = Instant::now();
    loop {
        let job = get_job(app, token, job_id).await;
        assert!(!is_terminal(&job["status"]), "job ended early: {job}");
        if job["status"] == "PROCESSING" && job["stage"] == stage {
            return job;
        }
        assert!(
            start.elapsed() < JOB_TIMEOUT,
            "job never reached {stage}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cancel(app: &TestApp, token: &str, job_id: i64) -> Value {
    let res = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            Some(token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn cancelling_a_runaway_worker_kills_it_within_a_second(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // A worker that spins forever in the audio stage, deaf to everything but SIGKILL.
    let runaway = fake_worker(
        dir.path(),
        "runaway-worker",
        "audio",
        "trap '' TERM INT HUP; while :; do :; done",
    );
    let runaway = runaway.to_string_lossy().into_owned();
    let app = spawn_app_with(
        backend,
        &[
            ("VIDEO_WORKERS", "1"),
            ("VIDEO_WORKER_BIN", runaway.as_str()),
        ],
    )
    .await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let first = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let first_id = first["job_id"].as_i64().unwrap();
    wait_for_stage(&app, &alice.token, first_id, "audio").await;
    let pid = wait_for_worker("runaway-worker", Duration::from_secs(10)).await;
    let second = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let second_id = second["job_id"].as_i64().unwrap();

    let job = cancel(&app, &alice.token, first_id).await;
    assert_eq!(job["status"], "CANCELLED", "{job}");
    let cancelled_at = Instant::now();
    while process_alive(pid) {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(1),
            "worker {pid} still running 1 s after cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slot it held is free: the next job runs (and reaches its own runaway worker).
    wait_for_stage(&app, &alice.token, second_id, "audio").await;
    let next = wait_for_worker("runaway-worker", Duration::from_secs(10)).await;
    assert_ne!(next, pid);
    cancel(&app, &alice.token, second_id).await;
    let start = Instant::now();
    while process_alive(next) {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "second worker lives on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        scratch_cleared(&app.state.settings.data_dir, Duration::from_secs(3))
            .await
            .is_empty()
    );
    app.stop().await;
}

async fn a_worker_past_its_time_limit_fails_the_attempt_with_a_clear_message(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let runaway = fake_worker(dir.path(), "slow-worker", "thumbnail", "sleep 600");
    let runaway = runaway.to_string_lossy().into_owned();
    let app = spawn_app_with(
        backend,
        &[
            ("VIDEO_WORKER_BIN", runaway.as_str()),
            ("VIDEO_WORKER_TIMEOUT_SECS", "2"),
            ("VIDEO_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let started = Instant::now();
    let job = wait_until_done(
        &app,
        &alice.token,
        accepted["job_id"].as_i64().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["stage"], "thumbnail");
    let message = job["error_message"].as_str().unwrap();
    assert!(
        message.contains("Media processing stopped: it exceeded the time limit"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        child_processes("slow-worker").is_empty(),
        "the timed-out worker lives on"
    );
    app.stop().await;
}

async fn attempts_of(app: &TestApp, job_id: i64) -> i32 {
    let mut conn = app.state.db.conn().await.unwrap();
    echo::db::videos::find_job(&mut conn, job_id as i32)
        .await
        .unwrap()
        .unwrap()
        .attempts
}

async fn a_crashing_worker_costs_one_attempt_and_the_node_keeps_serving(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // Crashes (SIGSEGV) in the thumbnail stage the first time only.
    let once = fake_worker(
        dir.path(),
        "crash-once",
        "thumbnail",
        "if [ ! -e \"$MARK\" ]; then : > \"$MARK\"; kill -SEGV $$; fi",
    );
    // Crashes in the thumbnail stage every time.
    let always = fake_worker(dir.path(), "crash-always", "thumbnail", "kill -SEGV $$");
    let file = make_video(dir.path(), "clip", Container::Mp4, (160, 120), 1.0, true);

    let once = once.to_string_lossy().into_owned();
    let app = spawn_app_with(
        backend,
        &[
            ("VIDEO_WORKER_BIN", once.as_str()),
            ("VIDEO_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    let job = wait_until_done(&app, &alice.token, job_id, JOB_TIMEOUT).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert!(job["video_metadata"]["thumbnail_file_url"].is_string());
    assert_eq!(attempts_of(&app, job_id).await, 2, "one crash, one retry");
    assert_eq!(app.get("/", None).await.status(), 200);
    app.stop().await;

    let always = always.to_string_lossy().into_owned();
    let app = spawn_app_with(
        backend,
        &[
            ("VIDEO_WORKER_BIN", always.as_str()),
            ("VIDEO_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    app.touch(&alice.token).await;
    let accepted = upload_video(&app, &alice.token, &file, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    let job = wait_until_done(&app, &alice.token, job_id, JOB_TIMEOUT).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["stage"], "thumbnail");
    let message = job["error_message"].as_str().unwrap();
    assert!(
        message.contains("Media processing crashed") && message.contains("3 attempts"),
        "{message}"
    );
    assert_eq!(job["processing_stages"]["probe"]["status"], "COMPLETED");
    assert_eq!(attempts_of(&app, job_id).await, 3);
    // The node is unharmed and keeps serving.
    assert_eq!(app.get("/", None).await.status(), 200);
    app.stop().await;
}

on_both_backends!(
    a_playlist_named_mp4_is_refused_at_probe_and_reads_no_server_file,
    a_hostile_playlist_does_not_pin_a_video_worker,
    cancelling_a_runaway_worker_kills_it_within_a_second,
    a_worker_past_its_time_limit_fails_the_attempt_with_a_clear_message,
    a_crashing_worker_costs_one_attempt_and_the_node_keeps_serving,
);

/// Runs `echo-server media-worker` on `request` and returns its JSON lines.
fn run_worker(request: &Value) -> (Vec<Value>, std::process::ExitStatus) {
    let mut child = Command::new(worker_bin())
        .arg("media-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the media worker");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{request}").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("worker said {l:?}: {e}")))
        .collect();
    (lines, out.status)
}

#[test]
fn the_media_worker_can_neither_reach_the_network_nor_read_server_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("upload.mp4");
    std::fs::write(&input, b"the upload").unwrap();
    // A file the worker was not given (a secret elsewhere on the server's disk).
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("secret.env");
    std::fs::write(&secret, b"DATABASE_URL=postgres://root:hunter2@db/echo").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A local daemon's socket (a database's, a container runtime's).
    let daemon = secrets.path().join("daemon.sock");
    let unix_listener = std::os::unix::net::UnixListener::bind(&daemon).unwrap();

    let (lines, status) = run_worker(&json!({
        "input": input,
        "extension": "mp4",
        "parent_pid": std::process::id(),
        "limits": {"memory_mb": 600, "cpu_secs": 30, "file_bytes": 4096, "open_files": 40},
        "task": {"op": "check", "outside_file": secret, "tcp_port": port, "unix_socket": daemon},
    }));
    assert!(status.success(), "{status}: {lines:?}");
    let ready = lines
        .iter()
        .find(|l| l["event"] == "ready")
        .expect("a ready line");
    let sandbox = &ready["sandbox"];
    let done = lines
        .iter()
        .find(|l| l["event"] == "done")
        .expect("a done line");
    let check = &done["result"];
    eprintln!("worker sandbox: {sandbox}\ncheck: {check}");

    // Its own input stays readable.
    assert_eq!(check["input_readable"], true, "{check}");
    // Its resource limits are those asked for, and the memory limit holds.
    assert_eq!(sandbox["rlimits"], true, "{sandbox}");
    assert_eq!(
        check["limits_in_force"],
        json!({"memory_mb": 600, "cpu_secs": 30, "file_bytes": 4096, "open_files": 40}),
        "{check}"
    );
    assert_eq!(check["core_limit"], 0, "{check}");
    assert_eq!(
        check["allocation_over_memory_limit_denied"], true,
        "{check}"
    );
    assert_eq!(sandbox["capabilities_dropped"], true, "{sandbox}");
    // seccomp: no socket but AF_UNIX.
    assert_eq!(sandbox["seccomp"], true, "{sandbox}");
    assert_eq!(check["tcp_socket_denied"], true, "{check}");
    assert_eq!(check["unix_socket_allowed"], true, "{check}");
    assert_eq!(check["unix_connect_denied"], true, "{check}");
    assert!(unix_listener.set_nonblocking(true).is_ok());
    assert!(
        unix_listener.accept().is_err(),
        "the worker reached a local daemon"
    );
    // No network at all: its own (empty) network namespace, wherever this machine allows one
    // (judged here, not by the worker's own report).
    if can_unshare_network() {
        assert_eq!(sandbox["network_namespace"], true, "{sandbox}");
        assert_eq!(check["tcp_connect_denied"], true, "{check}");
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let theirs = check["network_namespace"].as_str().expect("its namespace");
        assert!(theirs.starts_with("net:["), "{check}");
        assert_ne!(
            theirs,
            ours.to_string_lossy(),
            "the worker shares our network"
        );
    } else {
        eprintln!("!!! NO NETWORK NAMESPACE can be made here (`unshare -n` fails): {sandbox}");
    }
    assert!(listener.set_nonblocking(true).is_ok());
    assert!(
        listener.accept().is_err(),
        "the worker reached a TCP listener"
    );
    // Landlock: nothing outside its paths, wherever the kernel has Landlock (asked of the
    // kernel here, not of the worker).
    match kernel_landlock_abi() {
        Some(abi) => {
            eprintln!("kernel Landlock ABI {abi}");
            assert_eq!(sandbox["landlock_enforced"], true, "{sandbox}");
            assert_eq!(sandbox["landlock_abi"], abi, "{sandbox}");
            assert_eq!(check["outside_file_denied"], true, "{check}");
        }
        None => eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED the Landlock assertion: this kernel has no Landlock            !!!\n\
             !!! (the worker says: {})\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            sandbox["landlock"]
        ),
    }
}

/// The kernel's Landlock ABI version (`landlock_create_ruleset(NULL, 0, VERSION)`), `None`
/// without Landlock.
fn kernel_landlock_abi() -> Option<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a null attribute and the VERSION flag the call only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (abi > 0).then_some(abi)
}

/// True when this machine lets a process make a network namespace (`unshare -n`).
fn can_unshare_network() -> bool {
    Command::new("unshare")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
