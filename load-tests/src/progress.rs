//! Live progress: an indicatif bar on a terminal, a status line every few
//! seconds on stderr otherwise (CI logs), nothing with `--no-progress`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    pb: ProgressBar,
    tty: bool,
    enabled: bool,
    last_line: Instant,
    phase: String,
    len: u64,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let target = if enabled && tty {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        let pb = ProgressBar::with_draw_target(Some(1), target);
        Self {
            pb,
            tty,
            enabled,
            last_line: Instant::now() - Duration::from_secs(60),
            phase: String::new(),
            len: 1,
        }
    }

    /// Start a phase counting `len` items (`timed = false`) or `len` seconds.
    pub fn phase(&mut self, name: &str, len: u64, timed: bool) {
        let tpl = if timed {
            "{prefix:>9.bold} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos:>4}/{len}s\n          {msg}"
        } else {
            "{prefix:>9.bold} [{elapsed_precise}] {wide_bar:.green/blue} {pos}/{len}\n          {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(tpl) {
            self.pb.set_style(style.progress_chars("=> "));
        }
        self.pb.reset();
        self.pb.set_length(len.max(1));
        self.pb.set_position(0);
        self.pb.set_prefix(name.to_string());
        self.pb.set_message(String::new());
        self.phase = name.to_string();
        self.len = len.max(1);
        self.last_line = Instant::now();
        if self.enabled && !self.tty {
            eprintln!(
                "[{name}] started ({len}{})",
                if timed { "s" } else { " items" }
            );
        }
    }

    pub fn update(&mut self, pos: u64, msg: String) {
        if !self.enabled {
            return;
        }
        if self.tty {
            self.pb.set_position(pos.min(self.len));
            self.pb.set_message(msg);
        } else if self.last_line.elapsed() >= Duration::from_secs(2) {
            self.last_line = Instant::now();
            eprintln!(
                "[{}] {}/{} {}",
                self.phase,
                pos.min(self.len),
                self.len,
                msg
            );
        }
    }

    pub fn println(&self, line: &str) {
        if self.tty && self.enabled {
            self.pb.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&mut self) {
        self.pb.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.pb.finish_and_clear();
    }
}

/// Drive `fut` to completion while refreshing the progress display from `status`
/// (returns the position and the message) every 200 ms.
pub async fn with_ticker<F, S>(progress: &mut Progress, fut: F, mut status: S) -> F::Output
where
    F: std::future::Future,
    S: FnMut() -> (u64, String),
{
    tokio::pin!(fut);
    let mut iv = tokio::time::interval(Duration::from_millis(200));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            out = &mut fut => {
                let (p, m) = status();
                progress.update(p, m);
                return out;
            }
            _ = iv.tick() => {
                let (p, m) = status();
                progress.update(p, m);
            }
        }
    }
}
