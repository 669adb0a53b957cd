//! The worker's side: `echo-server media-worker`. It reads one [`Request`] from stdin, opens
//! the upload, confines itself ([`confine`]), says `ready`, runs the FFmpeg part of one stage
//! and says `done` or `failed` (see [`protocol`](super::protocol)).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use super::confine::{self, Plan};
use super::protocol::{
    AudioResult, CheckResult, ChunkFile, Event, FailureKind, Limits, Request, Task,
    ThumbnailResult, MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use crate::video::media::{self, audio, probe, thumbnail, Cancel, MediaError, Progress, Source};

/// How often progress is looked at (and sent when it moved).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Writes one event line to stdout. A server that stopped listening ends the worker.
fn emit(event: &Event) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        std::process::exit(70);
    };
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    if out.write_all(&line).and_then(|()| out.flush()).is_err() {
        std::process::exit(74);
    }
}

fn fail(kind: FailureKind, message: impl Into<String>) -> ExitCode {
    emit(&Event::Failed {
        kind,
        message: message.into(),
    });
    ExitCode::SUCCESS
}

/// `echo-server media-worker`.
pub fn main() -> ExitCode {
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_REQUEST_BYTES)
        .read_to_end(&mut raw)
    {
        eprintln!("media-worker: reading the request: {e}");
        return ExitCode::from(2);
    }
    let request: Request = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("media-worker: bad request: {e}");
            return ExitCode::from(2);
        }
    };
    if !arm_parent_death(request.parent_pid) {
        eprintln!("media-worker: the server that started this worker is gone");
        return ExitCode::from(3);
    }
    // Everything the sandbox will take away is done first: the upload is opened (FFmpeg reads
    // it through this descriptor), FFmpeg initialised, the output folder checked.
    let source = match Source::open(&request.input, &request.extension) {
        Ok(s) => s,
        Err(e) => return fail(FailureKind::Internal, e.to_string()),
    };
    if let Err(e) = media::init() {
        return fail(FailureKind::Internal, e.to_string());
    }
    let writable_dir = match &request.task {
        Task::Audio { out_dir, .. } => {
            if !out_dir.is_dir() {
                return fail(
                    FailureKind::Internal,
                    format!("no output folder {}", out_dir.display()),
                );
            }
            Some(out_dir.as_path())
        }
        _ => None,
    };
    let sandbox = confine::confine(&Plan {
        limits: request.limits,
        writable_dir,
    });
    emit(&Event::Ready {
        protocol: PROTOCOL_VERSION,
        sandbox,
    });
    let task = request.task.clone();
    let ext = request.extension.clone();
    let limits = request.limits;
    let outcome = std::panic::catch_unwind(move || run(&source, &ext, &task, &limits));
    match outcome {
        Ok(Ok(result)) => {
            emit(&Event::Done { result });
            ExitCode::SUCCESS
        }
        Ok(Err(MediaError::Unreadable(m))) => fail(FailureKind::Unreadable, m),
        Ok(Err(e)) => fail(FailureKind::Internal, e.to_string()),
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail(
                FailureKind::Internal,
                format!("media worker panicked: {why}"),
            )
        }
    }
}

/// Asks for SIGKILL when the server goes away; false when it already has (the worker was
/// re-parented before the request was read).
fn arm_parent_death(parent: Option<u32>) -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    match parent {
        // SAFETY: getppid cannot fail.
        Some(pid) => (unsafe { libc::getppid() }) as u32 == pid,
        None => true,
    }
}

/// Runs `task` on `source`.
fn run(
    source: &Source,
    extension: &str,
    task: &Task,
    limits: &Limits,
) -> Result<serde_json::Value, MediaError> {
    let cancel = Cancel::new();
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| MediaError::internal("encoding the result", e))
    };
    match task {
        Task::Probe => json(serde_json::to_value(probe::probe_source(
            source, extension, &cancel,
        )?)),
        Task::Thumbnail { duration } => {
            let t = thumbnail::thumbnail_of(source, *duration, &cancel)?;
            json(serde_json::to_value(ThumbnailResult {
                jpeg_base64: base64::engine::general_purpose::STANDARD.encode(&t.jpeg),
                width: t.width,
                height: t.height,
                at_seconds: t.at_seconds,
            }))
        }
        Task::Audio {
            duration,
            out_dir,
            chunk_seconds,
            max_seconds,
        } => {
            let progress = Progress::new();
            let reporter = ProgressReporter::start(progress.clone());
            let chunks = audio::extract_speech_from(
                source,
                out_dir,
                *duration,
                audio::Limits {
                    chunk_seconds: *chunk_seconds,
                    max_seconds: *max_seconds,
                },
                &cancel,
                &progress,
            );
            reporter.stop();
            let chunks = chunks?
                .into_iter()
                .map(|c| ChunkFile {
                    file: c
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    start: c.start,
                    duration: c.duration,
                })
                .collect();
            json(serde_json::to_value(AudioResult { chunks }))
        }
        Task::Check {
            outside_file,
            tcp_port,
            unix_socket,
        } => json(serde_json::to_value(check(
            source,
            outside_file,
            *tcp_port,
            unix_socket.as_deref(),
            limits,
        ))),
    }
}

/// Sends `progress` events from a thread of its own while a task runs.
struct ProgressReporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressReporter {
    fn start(progress: Progress) -> ProgressReporter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut sent = -1.0;
                while !flag.load(Ordering::Acquire) {
                    let now = progress.get();
                    if now > sent {
                        sent = now;
                        emit(&Event::Progress { fraction: now });
                    }
                    std::thread::sleep(PROGRESS_EVERY);
                }
            })
            .ok();
        ProgressReporter { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the sandbox lets through (see [`Task::Check`]).
fn check(
    source: &Source,
    outside_file: &Path,
    tcp_port: u16,
    unix_socket: Option<&Path>,
    limits: &Limits,
) -> CheckResult {
    let (unix_connect_denied, unix_connect) = match unix_socket {
        None => (true, "not tried".to_string()),
        Some(path) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => (false, format!("connected to {}", path.display())),
            Err(e) => (true, format!("denied: {e}")),
        },
    };
    let input_readable = source.size() == 0 || source.read_start(1).is_ok_and(|b| b.len() == 1);
    let (outside_file_denied, outside_file) = match std::fs::read(outside_file) {
        Ok(bytes) => (false, format!("read {} bytes", bytes.len())),
        Err(e) => (true, format!("denied: {e}")),
    };
    let (tcp_socket_denied, tcp_socket) = match raw_socket(libc::AF_INET) {
        Ok(()) => (false, "created".to_string()),
        Err(e) => (true, format!("denied: {e}")),
    };
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], tcp_port));
    let (tcp_connect_denied, tcp_connect) =
        match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Ok(_) => (false, format!("connected to {address}")),
            Err(e) => (true, format!("denied: {e}")),
        };
    CheckResult {
        input_readable,
        outside_file_denied,
        outside_file,
        tcp_socket_denied,
        tcp_socket,
        tcp_connect_denied,
        tcp_connect,
        unix_socket_allowed: raw_socket(libc::AF_UNIX).is_ok(),
        unix_connect_denied,
        unix_connect,
        allocation_over_memory_limit_denied: {
            let mut v: Vec<u8> = Vec::new();
            let bytes = (limits.memory_mb + 64).saturating_mul(1024 * 1024);
            usize::try_from(bytes).map_or(true, |n| v.try_reserve_exact(n).is_err())
        },
        limits_in_force: Limits {
            memory_mb: soft_limit(rlimit::Resource::AS) / (1024 * 1024),
            cpu_secs: soft_limit(rlimit::Resource::CPU),
            file_bytes: soft_limit(rlimit::Resource::FSIZE),
            open_files: soft_limit(rlimit::Resource::NOFILE),
        },
        core_limit: soft_limit(rlimit::Resource::CORE),
        network_namespace: std::fs::read_link("/proc/self/ns/net")
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
    }
}

/// The soft limit of `resource` (`u64::MAX` when unlimited or unreadable).
fn soft_limit(resource: rlimit::Resource) -> u64 {
    rlimit::getrlimit(resource).map_or(u64::MAX, |(soft, _)| soft)
}

/// Makes (and closes) a stream socket of `domain`.
fn raw_socket(domain: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain syscall; the descriptor is closed at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    Ok(())
}
