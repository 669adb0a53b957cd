//! Probing: duration, resolution, container format, codecs and bit rate, from the container's
//! headers and the streams' codec parameters (nothing is decoded but the decoder is opened, so
//! an unsupported codec fails here, with a clear message).

use std::path::Path;

use ffmpeg_next as ffmpeg;

use super::{open_input, Cancel, MediaError, Source};

/// What a probe found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Seconds.
    pub duration: f64,
    /// Coded width of the video stream.
    pub width: u32,
    /// Coded height.
    pub height: u32,
    /// Container format (`mp4`, `mov`, `webm`, `matroska`, …).
    pub format: String,
    /// Video codec (`h264`, `vp9`, …).
    pub video_codec: String,
    /// Audio codec of the best audio stream, if any.
    pub audio_codec: Option<String>,
    /// Bits per second (the container's figure, else size over duration).
    pub bit_rate: Option<i64>,
}

/// Probes the file at `path`. `extension` (without the dot) picks the container's name among
/// FFmpeg's aliases (`mov,mp4,m4a,…` is `mp4` for an `.mp4` upload).
pub fn probe(path: &Path, extension: &str, cancel: &Cancel) -> Result<Probe, MediaError> {
    probe_source(&Source::open(path, extension)?, extension, cancel)
}

/// [`probe`] of an open upload.
pub fn probe_source(
    source: &Source,
    extension: &str,
    cancel: &Cancel,
) -> Result<Probe, MediaError> {
    let ictx = open_input(source, cancel)?;
    cancel.check()?;
    let video = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| {
            MediaError::Unreadable("The file has no video stream; it is not a video.".into())
        })?;
    let codec_id = video.parameters().id();
    let decoder = ffmpeg::codec::context::Context::from_parameters(video.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| {
            MediaError::Unreadable(format!(
                "The video codec ({}) is not supported: {e}",
                codec_id.name()
            ))
        })?;
    let (width, height) = (decoder.width(), decoder.height());
    if width == 0 || height == 0 {
        return Err(MediaError::Unreadable(
            "The video stream has no picture size; the file is damaged or not a video.".into(),
        ));
    }
    let duration = container_duration(&ictx).ok_or_else(|| {
        MediaError::Unreadable("The video's duration could not be determined.".into())
    })?;
    let audio_codec = ictx
        .streams()
        .best(ffmpeg::media::Type::Audio)
        .map(|a| a.parameters().id().name().to_string());
    let size = source.size();
    let bit_rate = match ictx.bit_rate() {
        b if b > 0 => Some(b),
        _ if duration > 0.0 && size > 0 => Some((size as f64 * 8.0 / duration) as i64),
        _ => None,
    };
    Ok(Probe {
        duration,
        width,
        height,
        format: format_name(ictx.format().name(), extension),
        video_codec: codec_id.name().to_string(),
        audio_codec,
        bit_rate,
    })
}

/// The container's duration in seconds, else the longest stream's.
fn container_duration(ictx: &ffmpeg::format::context::Input) -> Option<f64> {
    let d = ictx.duration();
    if d > 0 && d != ffmpeg::ffi::AV_NOPTS_VALUE {
        return Some(d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));
    }
    ictx.streams()
        .filter(|s| s.duration() > 0 && s.duration() != ffmpeg::ffi::AV_NOPTS_VALUE)
        .map(|s| s.duration() as f64 * f64::from(s.time_base()))
        .fold(None, |best: Option<f64>, d| {
            Some(best.map_or(d, |b| b.max(d)))
        })
        .filter(|d| *d > 0.0)
}

/// Picks the alias matching the upload's extension from FFmpeg's comma-separated demuxer
/// names, else the first (`matroska,webm` → `webm` for a `.webm` file).
pub fn format_name(names: &str, extension: &str) -> String {
    let ext = extension.trim_start_matches('.').to_ascii_lowercase();
    let mut aliases = names.split(',').map(str::trim).filter(|n| !n.is_empty());
    let first = aliases.clone().next().unwrap_or(names).to_string();
    aliases
        .find(|n| !ext.is_empty() && *n == ext)
        .map(str::to_string)
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_alias_follows_the_extension() {
        assert_eq!(format_name("mov,mp4,m4a,3gp,3g2,mj2", "mp4"), "mp4");
        assert_eq!(format_name("mov,mp4,m4a,3gp,3g2,mj2", ".MOV"), "mov");
        assert_eq!(format_name("matroska,webm", "webm"), "webm");
        assert_eq!(format_name("matroska,webm", "bin"), "matroska");
        assert_eq!(format_name("avi", ""), "avi");
    }
}
