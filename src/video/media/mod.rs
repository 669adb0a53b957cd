//! FFmpeg (ffmpeg-next over the system's libav* libraries): probing, the thumbnail and the
//! speech track. Every function here blocks. The server never calls them itself: they run in
//! `echo-server media-worker` child processes (see [`crate::video::sandbox`]), which the job
//! actor kills to stop them. A [`Cancel`] flag still stops them in-process (the decode loops
//! check it per packet, FFmpeg's I/O through its interrupt callback), for benchmarks and tests.
//!
//! Uploads are untrusted: [`open_input`] reads them through a custom `AVIOContext` over an
//! open file, accepts only the demuxers of [`ALLOWED_DEMUXERS`] and lets no demuxer open a
//! second resource (no protocol at all), so playlists and file lists are refused.

pub mod audio;
pub mod probe;
pub mod thumbnail;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use ffmpeg_next as ffmpeg;

/// A shared stop flag: set once, seen by every clone.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every holder to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once set, for `?` in decode loops.
    pub fn check(&self) -> Result<(), MediaError> {
        if self.is_cancelled() {
            Err(MediaError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Progress of the running stage, 0..=1000 (per mille), written by the media thread and read
/// by the job actor.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU32>);

impl Progress {
    /// Zero progress.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Records `fraction` (clamped to 0..=1); never moves backwards.
    pub fn set(&self, fraction: f64) {
        let permille = (fraction.clamp(0.0, 1.0) * 1000.0) as u32;
        self.0.fetch_max(permille, Ordering::Relaxed);
    }

    /// Back to zero, for the next stage.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// The fraction done, 0..=1.
    pub fn get(&self) -> f64 {
        f64::from(self.0.load(Ordering::Relaxed)) / 1000.0
    }
}

/// Why media work stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    /// The cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// The input is not media this server can read; the message is for the video's owner.
    #[error("{0}")]
    Unreadable(String),
    /// FFmpeg failed on something that should have worked (an encoder, a file write).
    #[error("media processing failed: {0}")]
    Internal(String),
}

impl MediaError {
    /// An internal failure with context.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> MediaError {
        MediaError::Internal(format!("{what}: {e}"))
    }
}

/// Initialises FFmpeg once per process and silences its own log: failures reach the job's
/// `error_message` and this server's log instead.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| e.to_string())?;
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
        Ok(())
    })
    .clone()
    .map_err(|e| MediaError::internal("initialising FFmpeg", e))
}

/// Demuxers an upload may be read with: the video containers this server accepts. Anything
/// else FFmpeg recognises — playlists and lists of other files (`hls`, `concat`, `dash`,
/// `imf`), image sequences (`image2`), session descriptions (`sdp`), still images, audio-only
/// formats — is refused when the file is opened (`format_whitelist`).
pub const ALLOWED_DEMUXERS: &[&str] = &[
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", // QuickTime / MP4 family
    "matroska", "webm", // Matroska and WebM
    "avi", "flv", "mpegts", // AVI, Flash video, MPEG transport stream
    "mpeg",   // MPEG program stream (.mpg, .vob)
    "ogg",    // Ogg (Theora)
    "asf",    // ASF / WMV
];

/// Demuxers whose files name other files or URLs to open (what the allow-list is there to
/// keep out); named as such in the refusal.
const REFERRING_DEMUXERS: &[&str] = &[
    "hls",
    "applehttp",
    "concat",
    "dash",
    "imf",
    "image2",
    "sdp",
    "rtsp",
    "webm_dash_manifest",
    "avisynth",
    "vapoursynth",
];

/// `protocol_whitelist` of every input: a name no protocol has, so a demuxer that tries to open
/// a second resource (a segment, a listed file, a URL) is refused. The upload itself is read
/// through a custom `AVIOContext` over an already open file, never by name.
pub const NO_PROTOCOLS: &str = "none";

/// Bytes looked at to name a refused file's format in the message.
const DETECT_BYTES: usize = 1 << 20;

/// Damaged packets skipped in a row before the file counts as unreadable.
const MAX_BAD_PACKETS_IN_A_ROW: u32 = 1000;

/// An upload, open for reading. FFmpeg reads it through a custom `AVIOContext` over this file
/// (so it can be opened before a sandbox takes file system access away), never by name.
#[derive(Debug)]
pub struct Source {
    file: std::fs::File,
    /// `upload.<ext>`: the name FFmpeg's format probe sees (its extension is a hint only).
    name: String,
    size: u64,
}

impl Source {
    /// Opens the file at `path`; `extension` (without the dot) is the upload's.
    pub fn open(path: &Path, extension: &str) -> Result<Source, MediaError> {
        let file = std::fs::File::open(path)
            .map_err(|e| MediaError::internal("opening the uploaded file", e))?;
        Source::from_file(file, extension)
    }

    /// Wraps an open file.
    pub fn from_file(file: std::fs::File, extension: &str) -> Result<Source, MediaError> {
        let size = file
            .metadata()
            .map_err(|e| MediaError::internal("reading the uploaded file", e))?
            .len();
        let ext: String = extension
            .trim_start_matches('.')
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let name = if ext.is_empty() {
            "upload".to_string()
        } else {
            format!("upload.{}", ext.to_ascii_lowercase())
        };
        Ok(Source { file, name, size })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's first `n` bytes (fewer for a shorter file).
    pub fn read_start(&self, n: usize) -> Result<Vec<u8>, MediaError> {
        use std::io::Read;
        let mut buf = Vec::with_capacity(n);
        self.reader()?
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(|e| MediaError::internal("reading the uploaded file", e))?;
        Ok(buf)
    }

    /// A handle on the file positioned at its start (one per FFmpeg input; inputs are opened
    /// one after the other, never at once).
    fn reader(&self) -> Result<std::fs::File, MediaError> {
        use std::io::Seek;
        let mut f = self
            .file
            .try_clone()
            .map_err(|e| MediaError::internal("reading the uploaded file", e))?;
        f.rewind()
            .map_err(|e| MediaError::internal("reading the uploaded file", e))?;
        Ok(f)
    }

    /// The name of the demuxer FFmpeg's probe picks for the file's first bytes (no demuxer is
    /// opened), for the refusal message.
    fn detect_format(&self) -> Option<String> {
        use std::io::Read;
        let mut f = self.reader().ok()?;
        let pad = ffmpeg::ffi::AVPROBE_PADDING_SIZE as usize;
        let mut buf = vec![0u8; DETECT_BYTES + pad];
        let mut n = 0;
        while n < DETECT_BYTES {
            match f.read(&mut buf[n..DETECT_BYTES]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let name = std::ffi::CString::new(self.name.clone()).ok()?;
        let pd = ffmpeg::ffi::AVProbeData {
            filename: name.as_ptr(),
            buf: buf.as_mut_ptr(),
            buf_size: i32::try_from(n).ok()?,
            mime_type: std::ptr::null(),
        };
        let mut score = 0;
        // SAFETY: `pd` points at `buf`, which holds `n` bytes plus the zeroed padding FFmpeg
        // requires, and at `name`; both outlive the call. Only the probe functions run.
        let format = unsafe { ffmpeg::ffi::av_probe_input_format3(&pd, 1, &mut score) };
        if format.is_null() || score <= 0 {
            return None;
        }
        // SAFETY: a registered demuxer's `name` is a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr((*format).name) };
        Some(name.to_string_lossy().into_owned())
    }
}

/// The extension of `path` (without the dot), or `""`.
pub fn extension_of(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_string()
}

/// True when FFmpeg's (comma-separated) demuxer `names` include an allowed one.
pub fn is_allowed_demuxer(names: &str) -> bool {
    names
        .split(',')
        .any(|n| ALLOWED_DEMUXERS.contains(&n.trim()))
}

/// The message for a file FFmpeg could not (or may not) open.
fn refusal(detected: Option<&str>, error: &ffmpeg::Error) -> String {
    match detected {
        Some(name) if name.split(',').any(|n| REFERRING_DEMUXERS.contains(&n)) => format!(
            "The file could not be read as a video: it is a playlist or list of files ({name}) \
             that refers to other files, which uploads may not do. Upload the video file itself."
        ),
        Some(name) if !is_allowed_demuxer(name) => format!(
            "The file could not be read as a video: its format ({name}) is not a supported \
             video container (MP4/MOV, WebM/MKV, AVI, FLV, MPEG-TS, MPEG-PS, Ogg, ASF/WMV)."
        ),
        _ => format!("The file could not be read as a video ({error}); is it a valid video file?"),
    }
}

/// Opens `source` for demuxing with the demuxer allow-list and no protocol; FFmpeg's blocking
/// I/O gives up as soon as `cancel` is set.
pub fn open_input(
    source: &Source,
    cancel: &Cancel,
) -> Result<ffmpeg::format::context::Input, MediaError> {
    open_restricted(source, &ALLOWED_DEMUXERS.join(","), NO_PROTOCOLS, cancel)
}

/// [`open_input`] with explicit `format_whitelist` and `protocol_whitelist` values.
fn open_restricted(
    source: &Source,
    formats: &str,
    protocols: &str,
    cancel: &Cancel,
) -> Result<ffmpeg::format::context::Input, MediaError> {
    init()?;
    let io = ffmpeg::format::context::StreamIo::from_read_seek(source.reader()?)
        .map_err(|e| MediaError::internal("reading the uploaded file", e))?;
    let mut options = ffmpeg::Dictionary::new();
    options.set("format_whitelist", formats);
    options.set("protocol_whitelist", protocols);
    let flag = cancel.clone();
    ffmpeg::format::input_from_stream_with_interrupt(
        io,
        Some(&source.name),
        Some(options),
        move || flag.is_cancelled(),
    )
    .map_err(|e| {
        if cancel.is_cancelled() {
            MediaError::Cancelled
        } else {
            MediaError::Unreadable(refusal(source.detect_format().as_deref(), &e))
        }
    })
}

/// Reads an input's packets one at a time. Unlike ffmpeg-next's `packets()` iterator, which
/// retries a damaged packet forever (a demuxer that keeps answering `AVERROR_INVALIDDATA` —
/// as the HLS file did — pins the thread at 100% CPU), it gives up after
/// `MAX_BAD_PACKETS_IN_A_ROW` and checks `cancel` between tries.
#[derive(Debug, Default)]
pub struct PacketReader {
    bad_in_a_row: u32,
}

impl PacketReader {
    /// A reader.
    pub fn new() -> PacketReader {
        PacketReader::default()
    }

    /// The next packet, `None` at the end of the input (or at an I/O error, which FFmpeg
    /// latches: every later read would return it again).
    pub fn next(
        &mut self,
        ictx: &mut ffmpeg::format::context::Input,
        cancel: &Cancel,
    ) -> Result<Option<ffmpeg::Packet>, MediaError> {
        loop {
            cancel.check()?;
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(ictx) {
                Ok(()) => {
                    self.bad_in_a_row = 0;
                    return Ok(Some(packet));
                }
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::InvalidData) => {
                    self.bad_in_a_row += 1;
                    if self.bad_in_a_row > MAX_BAD_PACKETS_IN_A_ROW {
                        return Err(MediaError::Unreadable(
                            "The file is damaged: its data could not be read past a point.".into(),
                        ));
                    }
                }
                Err(_) if cancel.is_cancelled() => return Err(MediaError::Cancelled),
                Err(_) => return Ok(None),
            }
        }
    }
}

/// Seconds of a stream timestamp, relative to the stream's start.
pub fn seconds(ts: i64, time_base: ffmpeg::Rational, start: i64) -> f64 {
    let start = if start == ffmpeg::ffi::AV_NOPTS_VALUE {
        0
    } else {
        start
    };
    (ts.saturating_sub(start)) as f64 * f64::from(time_base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_of(content: &[u8], ext: &str) -> (std::path::PathBuf, Source) {
        let path = std::env::temp_dir().join(format!(
            "echo-media-{}.{ext}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, content).unwrap();
        let source = Source::open(&path, ext).unwrap();
        (path, source)
    }

    #[test]
    fn playlists_and_file_lists_are_refused_and_named() {
        let target = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let cases = [
            (
                format!(
                    "#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:7.0,\n{target}\n#EXT-X-ENDLIST\n"
                ),
                "(hls)",
            ),
            (
                format!("ffconcat version 1.0\nfile '{target}'\n"),
                "(concat)",
            ),
        ];
        for (content, name) in cases {
            let (path, source) = source_of(content.as_bytes(), "mp4");
            let err = open_input(&source, &Cancel::new()).err();
            let _ = std::fs::remove_file(&path);
            match err {
                Some(MediaError::Unreadable(m)) => {
                    assert!(
                        m.contains(name) && m.contains("refers to other files"),
                        "{m}"
                    )
                }
                other => panic!("{name} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn the_allow_list_and_the_protocol_ban_each_refuse_a_playlist() {
        // A real video for the playlist to name (made with the ffmpeg CLI, as in the
        // integration tests).
        let video =
            std::env::temp_dir().join(format!("echo-media-{}.mp4", uuid::Uuid::new_v4().simple()));
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg("testsrc=size=64x48:rate=5:duration=1")
            .args(["-c:v", "mpeg4"])
            .arg(&video)
            .stdin(std::process::Stdio::null())
            .status()
            .expect("the ffmpeg CLI is needed to make test media (apt-get install ffmpeg)");
        assert!(made.success());
        let playlist = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:7.0,\n{}\n#EXT-X-ENDLIST\n",
            video.display()
        );
        let (path, source) = source_of(playlist.as_bytes(), "mp4");
        // Even with the `file` protocol allowed, the allow-list refuses the playlist…
        let refused = open_restricted(&source, &ALLOWED_DEMUXERS.join(","), "file", &Cancel::new());
        // …which FFmpeg would otherwise open, reading the file it names.
        let with_hls = format!("hls,{}", ALLOWED_DEMUXERS.join(","));
        let opened = open_restricted(&source, &with_hls, "file", &Cancel::new());
        // And without any protocol, even an allowed playlist demuxer opens nothing.
        let no_protocol = open_restricted(&source, &with_hls, NO_PROTOCOLS, &Cancel::new());
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&video);
        match refused {
            Err(MediaError::Unreadable(m)) => assert!(m.contains("(hls)"), "{m}"),
            other => panic!("the playlist was not refused: {:?}", other.map(|_| ())),
        }
        assert!(
            opened.is_ok(),
            "the control case did not open: {:?}",
            opened.err()
        );
        assert!(
            no_protocol.is_err(),
            "a playlist opened the file it names without a protocol"
        );
    }

    #[test]
    fn only_video_containers_are_allowed() {
        assert!(is_allowed_demuxer("mov,mp4,m4a,3gp,3g2,mj2"));
        assert!(is_allowed_demuxer("matroska,webm"));
        assert!(is_allowed_demuxer("mpegts"));
        for refused in [
            "hls", "concat", "dash", "image2", "png_pipe", "mp3", "tty", "sdp",
        ] {
            assert!(!is_allowed_demuxer(refused), "{refused}");
        }
    }
}
