//! Echo's web client (`/app`) in a real browser: Debian's Chromium driven by `playwright-core`
//! (tests/browser, pinned in its package-lock.json). Each scenario is a Node script run against a
//! server this test spawns; it prints JSON lines (`{"step"}` when it needs the test to act,
//! then `{"result"}` or `{"error"}`) and saves screenshots under `test-output/browser/`.
//!
//! These tests never skip: without Node.js, the npm packages (`npm ci --prefix tests/browser`)
//! or Chromium (`apt-get install -y chromium`) they fail and say what to install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{assert_detail, spawn_app_with, spawn_on_database, Backend, TestUser};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How the npm packages of the browser tests are installed (CI runs this).
const NPM_INSTALL: &str = "npm ci --prefix tests/browser";
/// Longest a scenario may go without printing its next line.
const STEP_TIMEOUT: Duration = Duration::from_secs(150);

/// One browser at a time: Chromium is heavy on a small machine, and one scenario's waits should
/// not depend on another's load.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output/browser")
}

fn chromium_path() -> String {
    std::env::var("ECHO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// Fails loudly, naming the command to run, when a tool of the browser tests is missing.
fn require_browser_tools() {
    let node = std::process::Command::new("node").arg("--version").output();
    match node {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "Node.js (>= 20) is required for the browser tests: apt-get install -y nodejs npm"
        ),
    }
    let pw = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "playwright-core is not installed for the browser tests: run `{NPM_INSTALL}` \
         (from the repository root; CI does this in .ci/run)"
    );
    let chromium = chromium_path();
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is required for the browser tests and {chromium} does not exist: \
         apt-get install -y chromium (or set ECHO_CHROMIUM)"
    );
}

/// A running scenario script.
struct Scenario {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Lines printed so far, for failure messages.
    transcript: Vec<String>,
}

impl Scenario {
    /// Starts `node tests/browser/<name>.mjs <args…>`.
    fn start(name: &str, args: &[&str]) -> Scenario {
        require_browser_tools();
        let script = browser_dir().join(format!("{name}.mjs"));
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .args(args)
            .current_dir(browser_dir())
            .env("ECHO_SCREENSHOT_DIR", screenshot_dir())
            .env("ECHO_CHROMIUM", chromium_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("node {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Scenario {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            transcript: Vec::new(),
        }
    }

    /// The next JSON line the script prints.
    async fn next(&mut self) -> Value {
        loop {
            let line = match tokio::time::timeout(STEP_TIMEOUT, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => self.fail("the script ended without a result").await,
                Ok(Err(e)) => self.fail(&format!("reading its output: {e}")).await,
                Err(_) => {
                    self.fail(&format!("no output for {}s", STEP_TIMEOUT.as_secs()))
                        .await
                }
            };
            self.transcript.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.is_object() {
                    return v;
                }
            }
        }
    }

    /// Waits for `{"step": step}`; a result or error instead fails the test.
    async fn expect_step(&mut self, step: &str) -> Value {
        let v = self.next().await;
        if v["step"] != step {
            self.fail(&format!("expected step {step:?}, got {v}")).await;
        }
        v
    }

    /// Answers a step.
    async fn answer(&mut self, line: &str) {
        let sent = self.stdin.write_all(format!("{line}\n").as_bytes()).await;
        if let Err(e) = sent {
            self.fail(&format!("answering the script: {e}")).await;
        }
        let _ = self.stdin.flush().await;
    }

    /// Waits for the result line and a successful exit; returns the result.
    async fn finish(mut self) -> Value {
        let v = self.next().await;
        if v.get("result").is_none() {
            self.fail("the scenario failed").await;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        match status {
            Ok(Ok(s)) if s.success() => {}
            other => {
                self.fail(&format!(
                    "the script printed a result but exited with {other:?}"
                ))
                .await
            }
        }
        eprintln!("browser scenario {}: {}", self.name, v["result"]);
        v["result"].clone()
    }

    /// Panics with everything the script said.
    async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.start_kill();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut stderr)).await;
        }
        // Whatever is still buffered (the error line usually).
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(200), self.stdout.next_line()).await
        {
            self.transcript.push(line);
        }
        panic!(
            "browser scenario {} failed: {why}\n--- its output ---\n{}\n--- stderr ---\n{stderr}",
            self.name,
            self.transcript.join("\n")
        );
    }
}

/// Runs a scenario that needs nothing from the test while it runs.
async fn run_scenario(name: &str, args: &[&str]) -> Value {
    Scenario::start(name, args).finish().await
}

fn shots(result: &Value) -> Vec<String> {
    result["screenshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_screenshots(result: &Value, at_least: usize) {
    let paths = shots(result);
    assert!(
        paths.len() >= at_least,
        "expected {at_least} screenshots: {result}"
    );
    for p in paths {
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {p} is missing or empty");
    }
}

// -------------------------------------------------------------------------------------------
// Served files and development sign-in (no browser needed)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_from_the_binary() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    for path in ["/app", "/app/"] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let html = res.text().await.unwrap();
        assert!(html.contains("/app/app.js"), "{path} loads the app");
    }
    for (path, ct) in [
        ("/app/app.js", "text/javascript"),
        ("/app/realtime.js", "text/javascript"),
        ("/app/style.css", "text/css"),
        ("/app/icon.svg", "image/svg+xml"),
    ] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        let got = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(got.starts_with(ct), "{path}: {got}");
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        let again = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates");
    }
    let config: Value = app
        .get("/app/config.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["dev_sign_in"], false);
    assert_detail(
        app.get("/app/nope.js", None).await,
        404,
        "Not Found",
        "/app/nope.js",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_token_endpoint_is_not_found_when_a_secret_is_set() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    assert!(app.state.dev_secret.is_none());
    let user = TestUser::new();
    for token in [None, Some(user.token.as_str())] {
        let res = app
            .send_json(reqwest::Method::POST, "/dev/token", token, &json!({}))
            .await;
        assert_detail(res, 404, "Not Found", "POST /dev/token").await;
        let res = app.get("/dev/token", token).await;
        assert_detail(res, 404, "Not Found", "GET /dev/token").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_token_endpoint_signs_in_on_the_development_secret() {
    let app = spawn_app_with(Backend::Sqlite, &[("SUPABASE_JWT_SECRET", "")]).await;
    assert!(app.state.dev_secret.is_some(), "development mode");
    let config: Value = app
        .get("/app/config.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["dev_sign_in"], true);
    let res = app
        .send_json(
            reqwest::Method::POST,
            "/dev/token",
            None,
            &json!({"name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().expect("token");
    let me: Value = app
        .get("/users/me", Some(token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], body["user_id"]);
    assert_eq!(me["full_name"], "Ada Lovelace");
    assert_eq!(me["username"], "ada-lovelace");
    // Again as the same user.
    let res = app
        .send_json(
            reqwest::Method::POST,
            "/dev/token",
            None,
            &json!({"user_id": body["user_id"]}),
        )
        .await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["user_id"], body["user_id"]);
    let res = app
        .send_json(
            reqwest::Method::POST,
            "/dev/token",
            None,
            &json!({"user_id": "nope"}),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_detail(
        app.get("/dev/token", None).await,
        405,
        "Method Not Allowed",
        "GET",
    )
    .await;
}

// -------------------------------------------------------------------------------------------
// Browser scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_in_one_room_see_each_others_messages() {
    let _one = BROWSER.lock().await;
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    app.touch(&bob.token).await; // B must exist to be added by id
    let result = run_scenario("two-users", &[&app.address, &alice.token, &bob.token]).await;
    let texts = result["textsA"].as_array().expect("texts");
    assert_eq!(texts.len(), 8, "{result}");
    assert_eq!(texts[0], "Hello from A");
    assert_eq!(result["textsA"], result["textsB"]);
    assert_eq!(result["seqsA"], json!([1, 2, 3, 4, 5, 6, 7, 8]));
    assert!(
        result["unreadLabel"]
            .as_str()
            .is_some_and(|l| l.contains("1 unread")),
        "{result}"
    );
    assert!(result["typingA"]
        .as_str()
        .is_some_and(|t| t.contains("is typing")));
    assert_screenshots(&result, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_reply_grows_in_place_a_late_joiner_catches_up_and_stop_ends_it() {
    let _one = BROWSER.lock().await;
    // The development provider, slowed down: 400 words at 8 a second cannot finish first.
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("AI_PROVIDER", "dev"),
            ("AI_DEV_TOKENS_PER_SEC", "8"),
            ("AI_DEV_FIRST_TOKEN_MS", "100"),
            ("AI_DEV_REPLY_TOKENS", "400"),
        ],
    )
    .await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    app.touch(&bob.token).await;
    let result = run_scenario("ai-stop", &[&app.address, &alice.token, &bob.token]).await;
    let partial = result["partialA"].as_str().expect("partial");
    let final_text = result["finalA"].as_str().expect("final");
    assert!(
        !partial.is_empty() && final_text.starts_with(partial),
        "{result}"
    );
    let words = final_text.split(' ').count();
    assert!(words < 400, "the reply was stopped early ({words} words)");
    // What the pages show is what was stored.
    let chat = result["chatId"].as_str().expect("chat id");
    let stored: Value = app
        .get(&format!("/chats/{chat}/messages/"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    let last = stored.as_array().and_then(|m| m.last()).expect("messages");
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["content"], final_text);
    assert_screenshots(&result, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_page_reconnects_and_shows_missed_messages_once() {
    let _one = BROWSER.lock().await;
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    app.touch(&bob.token).await;
    let chat = app.create_chat(&alice.token, "Restart room").await;
    let chat_id = chat["id"].as_str().expect("id").to_string();
    app.add_member(&alice.token, &chat_id, bob.id).await;
    for text in ["before 1", "before 2"] {
        app.post_message(&bob.token, &chat_id, text).await;
    }
    let (port, database_url, address) = (app.port, app.database_url.clone(), app.address.clone());

    let mut scenario = Scenario::start("reconnect", &[&address, &alice.token, &chat_id]);
    scenario.expect_step("ready").await;
    // The server goes away (sessions get 1001) and comes back on the same port and data.
    app.stop().await;
    let port_setting = port.to_string();
    let app = spawn_on_database(&database_url, &[("PORT", &port_setting)]).await;
    assert_eq!(app.port, port);
    for text in ["missed 1", "missed 2", "missed 3"] {
        app.post_message(&bob.token, &chat_id, text).await;
    }
    scenario.answer("restarted").await;
    let result = scenario.finish().await;
    assert_eq!(
        result["texts"],
        json!([
            "before 1",
            "before 2",
            "missed 1",
            "missed 2",
            "missed 3",
            "written while offline",
            "after"
        ]),
        "{result}"
    );
    assert_eq!(result["seqs"], json!([1, 2, 3, 4, 5, 6, 7]));
    // Stored once each, too: the outbox's retry carried its client_msg_id.
    let stored: Value = app
        .get(&format!("/chats/{chat_id}/messages/"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored.as_array().map(Vec::len), Some(7), "{stored}");
    // Reconnect delays double from 1 s up to 15 s, each jittered within [step/2, step].
    for (i, b) in result["backoff"]
        .as_array()
        .expect("backoff")
        .iter()
        .enumerate()
    {
        let step = (1000.0 * 2f64.powi(i as i32)).min(15_000.0);
        let (min, max) = (b["min"].as_f64().unwrap(), b["max"].as_f64().unwrap());
        assert!(min >= step / 2.0 && max <= step, "attempt {}: {b}", i + 1);
        assert!(
            max - min > step / 10.0,
            "attempt {} is not jittered: {b}",
            i + 1
        );
    }
    // The page saw the server's close frame (1001) and said so while it waited.
    let shown = result["whileDown"].as_str().unwrap_or_default();
    assert!(shown.contains("the server restarted"), "{result}");
    assert_screenshots(&result, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_sign_in_works_by_keyboard_at_360_px() {
    let _one = BROWSER.lock().await;
    let app = spawn_app_with(Backend::Sqlite, &[("SUPABASE_JWT_SECRET", "")]).await;
    assert!(app.state.dev_secret.is_some(), "development mode");
    let result = run_scenario("dev-signin", &[&app.address]).await;
    let user_id = result["userId"].as_str().expect("user id");
    assert!(uuid::Uuid::parse_str(user_id).is_ok(), "{result}");
    assert_screenshots(&result, 3);
}

/// A small MP4 (2 s of test pattern and a tone) made with the `ffmpeg` CLI.
fn make_test_video(dir: &Path) -> PathBuf {
    let path = dir.join("echo-browser-test.mp4");
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=duration=2:size=320x240:rate=15"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("the ffmpeg CLI is required to make the test video: apt-get install -y ffmpeg ({e})")
        });
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_video_shows_upload_and_job_progress_then_its_thumbnail() {
    let _one = BROWSER.lock().await;
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let user = TestUser::new();
    // The page is written against docs/API.md's video contract; the server must have it.
    let probe = app
        .client
        .post(app.url("/api/v1/videos/upload"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("request");
    assert_ne!(
        probe.status(),
        404,
        "POST /api/v1/videos/upload does not exist on this server: the video pipeline \
         (src/video, src/routes/videos.rs) is not in the tree yet, so the page's video view \
         cannot be tested"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let video = make_test_video(dir.path());
    let video = video.to_string_lossy().into_owned();
    let result = run_scenario("video", &[&app.address, &user.token, &video]).await;
    assert_eq!(result["status"], "COMPLETED", "{result}");
    let upload = result["seen"]["upload"].as_array().expect("upload values");
    assert_eq!(upload.last(), Some(&json!(100)), "{result}");
    let job = result["seen"]["job"].as_array().expect("job values");
    assert_eq!(job.last(), Some(&json!(100)), "{result}");
    assert!(
        result["thumbnail"]["width"].as_u64().unwrap_or(0) > 0,
        "{result}"
    );
    let metadata = result["metadata"].as_array().expect("metadata labels");
    for label in ["Duration", "Resolution", "Format"] {
        assert!(
            metadata.contains(&json!(label)),
            "no {label} shown: {result}"
        );
    }
    assert!(
        result["subtitles"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("VTT"))),
        "{result}"
    );
    assert!(
        result["subtitlePreview"]
            .as_str()
            .is_some_and(|t| t.contains("-->")),
        "the subtitles' cues are shown: {result}"
    );
    assert_screenshots(&result, 3);
}
