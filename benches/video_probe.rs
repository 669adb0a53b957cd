//! Probe + thumbnail of a 60 s 1080p H.264 file, in-process (Echo's pipeline) against the
//! FFmpeg command-line tools (`ffprobe` + `ffmpeg -ss 1 -i FILE -frames:v 1 out.jpg`), plus the
//! speech-audio stage, the peak memory of one job's media stages, and how media work scales
//! over parallel jobs.
//!
//! ```text
//! cargo bench --bench video_probe                   # makes the sample with the ffmpeg CLI
//! cargo bench --bench video_probe -- /path/to/file.mp4 [iterations]
//! ```
//!
//! Needs the `ffmpeg` and `ffprobe` CLIs (apt package `ffmpeg`) for the comparison and to make
//! the sample; Echo itself never runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use echo::video::media::{audio, probe, thumbnail, Cancel, Progress};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(cmd: &mut Command) {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ffmpeg CLI (apt-get install ffmpeg)");
    assert!(status.success(), "{cmd:?} failed");
}

/// A 60 s 1920x1080 H.264 + AAC file (x264 defaults, so key frames up to 250 frames apart).
fn make_sample(dir: &Path) -> PathBuf {
    let out = dir.join("sample-1080p-60s.mp4");
    eprintln!("making {} with the ffmpeg CLI…", out.display());
    run(Command::new("ffmpeg")
        .args([
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30:duration=60",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=60",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "128k"])
        .arg(&out));
    out
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| make_sample(dir.path()));
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(15);
    let cancel = Cancel::new();
    echo::video::media::init().expect("ffmpeg");

    // Warm both paths (page cache, dynamic loading) before timing.
    let p = probe::probe(&file, "mp4", &cancel).expect("probe");
    thumbnail::thumbnail(&file, p.duration, &cancel).expect("thumbnail");
    eprintln!(
        "file: {} — {:.2} s, {}x{}, {} / {:?}, {} b/s",
        file.display(),
        p.duration,
        p.width,
        p.height,
        p.video_codec,
        p.audio_codec,
        p.bit_rate.unwrap_or(0)
    );
    let baseline_rss = rss_kib();

    let out = dir.path().join("cli.jpg");
    let ffprobe = || {
        run(Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_format",
                "-show_streams",
                "-of",
                "json",
            ])
            .arg(&file))
    };
    ffprobe();
    // The two sides alternate, so both meet the same machine load; each pair gives a ratio.
    let (mut ours, mut cli, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut probes, mut thumbs) = (Vec::new(), Vec::new());
    let mut thumb_size = (0, 0);
    for _ in 0..iterations {
        let t = Instant::now();
        let p = probe::probe(&file, "mp4", &cancel).expect("probe");
        let probed = t.elapsed();
        let thumb = thumbnail::thumbnail(&file, p.duration, &cancel).expect("thumbnail");
        let echo_time = t.elapsed();
        probes.push(probed);
        thumbs.push(echo_time - probed);
        thumb_size = (thumb.width, thumb.height);

        let t = Instant::now();
        ffprobe();
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-ss", "1", "-i"])
            .arg(&file)
            .args(["-frames:v", "1"])
            .arg(&out));
        let cli_time = t.elapsed();
        ratios.push(echo_time.as_secs_f64() / cli_time.as_secs_f64());
        ours.push(echo_time);
        cli.push(cli_time);
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (ours, cli) = (median(ours), median(cli));
    println!("probe + thumbnail ({iterations} runs, median)");
    println!(
        "  echo (in-process, thumbnail {}x{}): {:8.1} ms",
        thumb_size.0,
        thumb_size.1,
        ms(ours)
    );
    println!(
        "    of which probe {:.1} ms, thumbnail {:.1} ms",
        ms(median(probes)),
        ms(median(thumbs))
    );
    println!("  ffprobe + ffmpeg -ss 1 -frames:v 1: {:8.1} ms", ms(cli));
    println!(
        "  ratio: {:.2}x (median of per-pair ratios; medians' ratio {:.2}x)",
        ratio,
        ours.as_secs_f64() / cli.as_secs_f64()
    );

    // The speech-audio stage (decode, resample to 16 kHz mono, FLAC) on the same file.
    let t = Instant::now();
    let chunks = audio::extract_speech(
        &file,
        dir.path(),
        p.duration,
        audio::Limits {
            chunk_seconds: audio::CHUNK_SECONDS,
            max_seconds: f64::MAX,
        },
        &cancel,
        &Progress::new(),
    )
    .expect("speech audio");
    let speech = t.elapsed();
    let bytes: u64 = chunks.iter().map(|c| c.bytes).sum();
    println!(
        "speech audio: {:.1} ms for {:.1} s of sound ({} chunk(s), {} KiB FLAC)",
        ms(speech),
        chunks.iter().map(|c| c.duration).sum::<f64>(),
        chunks.len(),
        bytes / 1024
    );
    println!(
        "memory: one job's media stages peak at {} MiB RSS over a {} MiB baseline",
        peak_rss_kib().saturating_sub(baseline_rss) / 1024,
        baseline_rss / 1024
    );

    // Parallel jobs: each thread runs probe + thumbnail + speech audio on its own copy.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut levels = vec![1usize, cores, cores * 2];
    levels.dedup();
    for n in levels {
        let t = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let file = file.clone();
                let out = dir.path().join(format!("par-{n}-{i}"));
                std::thread::spawn(move || {
                    std::fs::create_dir_all(&out).expect("dir");
                    let cancel = Cancel::new();
                    let p = probe::probe(&file, "mp4", &cancel).expect("probe");
                    thumbnail::thumbnail(&file, p.duration, &cancel).expect("thumbnail");
                    audio::extract_speech(
                        &file,
                        &out,
                        p.duration,
                        audio::Limits {
                            chunk_seconds: audio::CHUNK_SECONDS,
                            max_seconds: f64::MAX,
                        },
                        &cancel,
                        &Progress::new(),
                    )
                    .expect("speech audio");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("job thread");
        }
        let wall = t.elapsed();
        println!(
            "{n} parallel job(s): {:.1} ms wall, {:.2} jobs/s",
            ms(wall),
            n as f64 / wall.as_secs_f64()
        );
    }
}
