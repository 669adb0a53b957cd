//! The server's side: runs one [`Request`] in a fresh `echo-server media-worker` process and
//! supervises it. The worker is killed (its whole process group, SIGKILL) on cancel, at the
//! wall-clock deadline (`VIDEO_WORKER_TIMEOUT_SECS`), on anything it says that is not the
//! protocol, and when the future running it is dropped. Its death by a signal, a deadline or
//! garbage output is an [`WorkerError::Attempt`]: it costs the job this attempt, never the
//! server.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use super::protocol::{Event, FailureKind, Request, MAX_LINE_BYTES, PROTOCOL_VERSION};
use crate::config::VideoSettings;
use crate::video::media::Cancel;

/// The hidden subcommand that runs a worker.
pub const WORKER_SUBCOMMAND: &str = "media-worker";

/// How long a worker that sent its result may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How often the cancel flag is looked at.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// Bytes of a worker's stderr kept for the log.
const STDERR_TAIL: usize = 4096;
/// Longest message of a worker's `failed` line passed on to a job's owner.
const MAX_MESSAGE_CHARS: usize = 600;

/// Why a worker produced no result.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerError {
    /// The job was cancelled; the worker was killed.
    Cancelled,
    /// The upload is not media this server reads (the message is for its owner).
    Unreadable(String),
    /// The worker failed cleanly on something that should have worked.
    Internal(String),
    /// The worker crashed, hung past its deadline, was killed for a limit, or spoke garbage:
    /// this attempt of the job is lost (the message says which, for the job's owner).
    Attempt(String),
}

/// Kills the worker's process group if the run ends without reaping it (a dropped future).
struct KillGuard {
    pid: Option<u32>,
}

impl KillGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            kill_group(pid);
        }
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL to the process group `pid` leads (the worker is its leader; anything it forked
/// despite the sandbox goes with it).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 1 {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// Resolves once `cancel` is set.
async fn cancelled(cancel: &Cancel) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// Reads one `\n`-terminated line into `buf` (cancel-safe: a partial line stays in `buf`).
/// `Ok(None)` at the end of the stream.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len()) as u64;
        let n = (&mut *reader).take(room).read_until(b'\n', buf).await?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            return Ok(Some(std::mem::take(buf)));
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(std::io::Error::other("a line over the length limit"));
        }
        if n == 0 {
            return Ok(if buf.is_empty() {
                None
            } else {
                Some(std::mem::take(buf))
            });
        }
    }
}

/// Reads a chunk of `stream` (pending forever once it is gone).
async fn read_some<R: AsyncRead + Unpin>(stream: &mut Option<R>, buf: &mut [u8]) -> usize {
    match stream.as_mut() {
        Some(s) => match s.read(buf).await {
            Ok(n) if n > 0 => n,
            _ => {
                *stream = None;
                0
            }
        },
        None => std::future::pending().await,
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes.
fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    tail.extend_from_slice(more);
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
}

/// A worker's message made safe to show: printable, bounded.
fn clean(message: &str) -> String {
    let mut s: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        s.push('…');
    }
    s
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}

/// What the owner of a job whose worker died of `signal` is told.
fn signal_message(signal: i32, settings: &VideoSettings) -> String {
    let name = signal_name(signal);
    match signal {
        libc::SIGXCPU => format!(
            "Media processing stopped: it exceeded its CPU time limit ({} s).",
            settings.worker_cpu_secs
        ),
        libc::SIGXFSZ => "Media processing stopped: it exceeded its output size limit.".into(),
        libc::SIGKILL => format!(
            "Media processing was killed (signal {signal}, {name}), possibly at its CPU or \
             memory limit."
        ),
        libc::SIGSYS => {
            format!("Media processing was stopped by its sandbox (signal {signal}, {name}).")
        }
        libc::SIGABRT => format!(
            "Media processing crashed (signal {signal}, {name}), possibly at its memory limit."
        ),
        _ => format!("Media processing crashed (signal {signal}, {name})."),
    }
}

/// Set once the first worker's sandbox report was logged at `info`.
static SANDBOX_LOGGED: AtomicBool = AtomicBool::new(false);

/// What the worker's stdout brought before it ended.
enum Heard {
    /// Its answer: `done` or `failed`.
    Answer(Result<serde_json::Value, WorkerError>),
    /// The end of its stdout without an answer.
    Silence,
    /// Something that is not the protocol.
    Garbage(String),
    /// The wall-clock deadline passed.
    TimedOut,
    /// The job was cancelled.
    Cancelled,
}

/// One running worker process and what the server keeps of it.
struct Worker {
    child: tokio::process::Child,
    /// Kills the process group unless it was reaped.
    guard: KillGuard,
    pid: u32,
    task: &'static str,
    stderr: Option<tokio::process::ChildStderr>,
    /// The last bytes of its stderr, for the log.
    tail: Vec<u8>,
    /// Set once it said `ready` with the expected protocol.
    ready: bool,
}

impl Worker {
    /// Starts `echo-server media-worker` in its own process group, with an empty environment,
    /// and writes `request` to its stdin.
    async fn start(
        settings: &VideoSettings,
        request: &Request,
    ) -> Result<(Self, BufReader<tokio::process::ChildStdout>), WorkerError> {
        let mut line = serde_json::to_vec(request)
            .map_err(|e| WorkerError::Internal(format!("encoding a media request: {e}")))?;
        line.push(b'\n');
        let mut command = tokio::process::Command::new(&settings.worker_bin);
        command
            .arg(WORKER_SUBCOMMAND)
            // Nothing of the server's environment (secrets, database URLs) reaches the worker.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            tracing::error!(bin = %settings.worker_bin.display(), error = %e, "could not start a media worker");
            WorkerError::Attempt(format!("Media processing could not start ({e})."))
        })?;
        let guard = KillGuard { pid: child.id() };
        if let Some(mut stdin) = child.stdin.take() {
            // A worker that dies before reading is seen later, by its exit.
            let _ = stdin.write_all(&line).await;
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(WorkerError::Internal("media worker without stdout".into()));
        };
        let worker = Worker {
            pid: child.id().unwrap_or(0),
            stderr: child.stderr.take(),
            child,
            guard,
            task: request.task.name(),
            tail: Vec::new(),
            ready: false,
        };
        Ok((worker, BufReader::new(stdout)))
    }

    /// Reads the worker's lines until its answer, the end of its stdout, garbage, the
    /// deadline or a cancel; keeps the tail of its stderr meanwhile.
    async fn listen<R: AsyncRead + Unpin>(
        &mut self,
        stdout: &mut BufReader<R>,
        deadline: tokio::time::Instant,
        cancel: &Cancel,
        on_progress: &impl Fn(f64),
    ) -> Heard {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            tokio::select! {
                r = read_line(stdout, &mut buf) => match r {
                    Ok(Some(bytes)) => {
                        if let Some(heard) = self.on_line(&bytes, on_progress) {
                            return heard;
                        }
                    }
                    Ok(None) => return Heard::Silence,
                    Err(e) => return Heard::Garbage(e.to_string()),
                },
                n = read_some(&mut self.stderr, &mut chunk) => keep_tail(&mut self.tail, &chunk[..n]),
                _ = tokio::time::sleep_until(deadline) => return Heard::TimedOut,
                _ = cancelled(cancel) => return Heard::Cancelled,
            }
        }
    }

    /// What one line of the protocol means; `None` to keep listening.
    fn on_line(&mut self, bytes: &[u8], on_progress: &impl Fn(f64)) -> Option<Heard> {
        let event = match serde_json::from_slice::<Event>(bytes) {
            Ok(event) => event,
            Err(e) => return Some(Heard::Garbage(format!("not the protocol: {e}"))),
        };
        match event {
            Event::Ready { protocol, .. } if protocol != PROTOCOL_VERSION => Some(Heard::Garbage(
                format!("protocol {protocol}, expected {PROTOCOL_VERSION}"),
            )),
            Event::Ready { sandbox, .. } => {
                self.ready = true;
                if !SANDBOX_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        landlock = %sandbox.landlock,
                        seccomp = sandbox.seccomp,
                        network_namespace = sandbox.network_namespace,
                        capabilities_dropped = sandbox.capabilities_dropped,
                        rlimits = sandbox.rlimits,
                        notes = ?sandbox.notes,
                        "media workers are sandboxed"
                    );
                } else {
                    tracing::debug!(
                        pid = self.pid,
                        task = self.task,
                        ?sandbox,
                        "media worker ready"
                    );
                }
                None
            }
            Event::Progress { fraction } if self.ready && fraction.is_finite() => {
                on_progress(fraction.clamp(0.0, 1.0));
                None
            }
            Event::Done { result } if self.ready => Some(Heard::Answer(Ok(result))),
            Event::Failed { kind, message } => {
                let message = clean(&message);
                Some(Heard::Answer(Err(match kind {
                    FailureKind::Unreadable => WorkerError::Unreadable(message),
                    FailureKind::Internal => WorkerError::Internal(message),
                })))
            }
            other => Some(Heard::Garbage(format!("unexpected {other:?}"))),
        }
    }

    /// Kills the process group and reaps it.
    async fn kill(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.guard.kill();
        let status = self.child.wait().await;
        self.guard.pid = None;
        status
    }

    /// Waits for the worker's exit until `until` (then kills it; `Ok(None)`), keeping its
    /// stderr's tail; a cancel kills it and is an error.
    async fn exit(
        &mut self,
        until: tokio::time::Instant,
        cancel: &Cancel,
    ) -> Result<Option<std::io::Result<std::process::ExitStatus>>, WorkerError> {
        let mut chunk = [0u8; 1024];
        loop {
            tokio::select! {
                s = self.child.wait() => {
                    // Reaped: its pid may be reused from now on, so it is never signalled again.
                    self.guard.pid = None;
                    return Ok(Some(s));
                }
                n = read_some(&mut self.stderr, &mut chunk) => keep_tail(&mut self.tail, &chunk[..n]),
                _ = tokio::time::sleep_until(until) => {
                    let _ = self.kill().await;
                    return Ok(None);
                }
                _ = cancelled(cancel) => {
                    let _ = self.kill().await;
                    return Err(WorkerError::Cancelled);
                }
            }
        }
    }
}

/// The error of a worker stopped at its wall-clock deadline.
fn timed_out(settings: &VideoSettings) -> WorkerError {
    WorkerError::Attempt(format!(
        "Media processing stopped: it exceeded the time limit ({} s).",
        settings.worker_timeout.as_secs()
    ))
}

/// Why a worker that exited with `status` and no answer produced nothing.
fn death_reason(
    status: std::io::Result<std::process::ExitStatus>,
    settings: &VideoSettings,
) -> String {
    match status {
        Ok(s) => match (s.signal(), s.code()) {
            (Some(signal), _) => signal_message(signal, settings),
            (None, Some(0)) | (None, None) => "Media processing ended without a result.".into(),
            (None, Some(code)) => {
                format!("Media processing failed: its worker exited with status {code}.")
            }
        },
        Err(e) => format!("Media processing failed: {e}."),
    }
}

/// Runs `request` in a new worker process and returns its result (the `done` line's
/// `result`). `on_progress` gets every progress fraction the worker reports.
pub async fn run(
    settings: &VideoSettings,
    request: &Request,
    cancel: &Cancel,
    on_progress: impl Fn(f64),
) -> Result<serde_json::Value, WorkerError> {
    let (mut worker, mut stdout) = Worker::start(settings, request).await?;
    let (pid, task) = (worker.pid, worker.task);
    let deadline = tokio::time::Instant::now() + settings.worker_timeout;
    let answer = match worker
        .listen(&mut stdout, deadline, cancel, &on_progress)
        .await
    {
        Heard::Answer(answer) => Some(answer),
        Heard::Silence => None,
        Heard::Garbage(why) => {
            let _ = worker.kill().await;
            tracing::warn!(pid, task, error = %why, stderr = %String::from_utf8_lossy(&worker.tail), "media worker spoke garbage; killed");
            return Err(WorkerError::Attempt(
                "Media processing failed: its worker process misbehaved.".into(),
            ));
        }
        Heard::TimedOut => {
            let _ = worker.kill().await;
            tracing::warn!(pid, task, "media worker killed at its time limit");
            return Err(timed_out(settings));
        }
        Heard::Cancelled => {
            let _ = worker.kill().await;
            tracing::debug!(pid, task, "media worker killed: job cancelled");
            return Err(WorkerError::Cancelled);
        }
    };
    // Wait for the exit: briefly once it answered, else up to the deadline.
    let until = match answer {
        Some(_) => tokio::time::Instant::now() + EXIT_GRACE,
        None => deadline,
    };
    let status = worker.exit(until, cancel).await?;
    match (answer, status) {
        (Some(answer), _) => answer,
        (None, None) => Err(timed_out(settings)),
        (None, Some(status)) => {
            let why = death_reason(status, settings);
            let stderr = String::from_utf8_lossy(&worker.tail);
            tracing::warn!(pid, task, reason = %why, %stderr, "media worker died");
            Err(WorkerError::Attempt(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_whole_and_capped() {
        let data: &[u8] = b"{\"a\":1}\npartial";
        let mut r = BufReader::new(data);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf).await.unwrap(),
            Some(b"{\"a\":1}".to_vec())
        );
        assert_eq!(
            read_line(&mut r, &mut buf).await.unwrap(),
            Some(b"partial".to_vec())
        );
        assert_eq!(read_line(&mut r, &mut buf).await.unwrap(), None);

        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line(&mut r, &mut Vec::new()).await.is_err());
    }

    #[test]
    fn worker_messages_are_made_printable_and_short() {
        assert_eq!(clean("bad\nfile\u{7}"), "bad file ");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 5);
        assert_eq!(clean(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
