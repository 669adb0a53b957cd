//! The thumbnail: the frame shown at 1 s (10% into videos shorter than 2 s), scaled to at most
//! 1280 px wide and encoded as JPEG by FFmpeg's MJPEG encoder.

use std::path::Path;

use ffmpeg_next as ffmpeg;

use super::{open_input, seconds, Cancel, MediaError, PacketReader, Source};

/// Widest thumbnail, in pixels.
pub const MAX_WIDTH: u32 = 1280;
/// Where the thumbnail is taken in videos at least twice this long, in seconds.
pub const AT_SECONDS: f64 = 1.0;
/// Fraction of the duration where shorter videos' thumbnail is taken.
pub const SHORT_VIDEO_FRACTION: f64 = 0.1;
/// Frames closer than this to the target are all decoded, non-reference ones included.
const SKIP_MARGIN_SECONDS: f64 = 0.25;
/// Decoder threads for the thumbnail's frame.
const DECODE_THREADS: usize = 2;
/// MJPEG quantiser scale (2 best … 31 worst).
const JPEG_QSCALE: i32 = 3;

/// A JPEG image.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    /// The JPEG file's bytes.
    pub jpeg: Vec<u8>,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Where in the video it was taken, in seconds.
    pub at_seconds: f64,
}

/// Where the thumbnail of a video of `duration` seconds is taken.
pub fn target_seconds(duration: f64) -> f64 {
    if duration >= 2.0 * AT_SECONDS {
        AT_SECONDS
    } else {
        (duration * SHORT_VIDEO_FRACTION).max(0.0)
    }
}

/// The thumbnail size for a `width`×`height` video: at most [`MAX_WIDTH`] wide, aspect kept,
/// both sides even (4:2:0 JPEG).
pub fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    let out_w = width.clamp(2, MAX_WIDTH);
    let out_h =
        ((f64::from(height) * f64::from(out_w) / f64::from(width.max(1))).round() as u32).max(2);
    (out_w & !1, out_h & !1)
}

/// Decodes the frame at [`target_seconds`] of the video at `path` and encodes it as JPEG.
pub fn thumbnail(path: &Path, duration: f64, cancel: &Cancel) -> Result<Thumbnail, MediaError> {
    thumbnail_of(
        &Source::open(path, &super::extension_of(path))?,
        duration,
        cancel,
    )
}

/// [`thumbnail`] of an open upload.
pub fn thumbnail_of(
    source: &Source,
    duration: f64,
    cancel: &Cancel,
) -> Result<Thumbnail, MediaError> {
    let mut ictx = open_input(source, cancel)?;
    let (track, mut decoder) = VideoTrack::open(&ictx)?;
    let target = target_seconds(duration);
    if target > 0.0 {
        track.seek_before(&mut ictx, target);
    }
    let picture = track
        .decode_until(&mut ictx, &mut decoder, target, cancel)?
        .ok_or_else(|| {
            MediaError::Unreadable("No video frame could be decoded from the file.".into())
        })?;
    let at_seconds = track
        .seconds(picture.timestamp().or(picture.pts()).unwrap_or(0))
        .max(0.0);
    let (jpeg, width, height) = encode_jpeg(&picture)?;
    Ok(Thumbnail {
        jpeg,
        width,
        height,
        at_seconds,
    })
}

/// The input's best video stream: where its packets are and how to read their times.
struct VideoTrack {
    index: usize,
    time_base: ffmpeg::Rational,
    start: i64,
}

impl VideoTrack {
    /// Finds the best video stream and opens a decoder for it.
    fn open(
        ictx: &ffmpeg::format::context::Input,
    ) -> Result<(VideoTrack, ffmpeg::decoder::Video), MediaError> {
        let stream = ictx
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| MediaError::Unreadable("The file has no video stream.".into()))?;
        let track = VideoTrack {
            index: stream.index(),
            time_base: stream.time_base(),
            start: stream.start_time(),
        };
        let decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|mut c| {
                // Reaching the frame at 1 s can mean decoding a whole GOP; two frame threads
                // halve that for the short time this stage runs.
                c.set_threading(ffmpeg::codec::threading::Config {
                    kind: ffmpeg::codec::threading::Type::Frame,
                    count: DECODE_THREADS,
                    ..Default::default()
                });
                c.decoder().video()
            })
            .map_err(|e| MediaError::Unreadable(format!("The video cannot be decoded: {e}")))?;
        Ok((track, decoder))
    }

    /// A timestamp of this stream in seconds from its start.
    fn seconds(&self, ts: i64) -> f64 {
        seconds(ts, self.time_base, self.start)
    }

    /// Seeks to the key frame at or before `target` seconds; decoding forward reaches it. A
    /// failed seek (unseekable input) just decodes from the start.
    fn seek_before(&self, ictx: &mut ffmpeg::format::context::Input, target: f64) {
        let start_us = if self.start == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            (self.start as f64 * f64::from(self.time_base) * 1e6) as i64
        };
        let ts = start_us + (target * 1e6) as i64;
        if ictx.seek(ts, ..ts).is_err() {
            tracing::debug!("thumbnail seek failed; decoding from the start");
        }
    }

    /// Decodes until the first frame at or after `target` seconds; the last frame decoded when
    /// the stream ends before it.
    fn decode_until(
        &self,
        ictx: &mut ffmpeg::format::context::Input,
        decoder: &mut ffmpeg::decoder::Video,
        target: f64,
        cancel: &Cancel,
    ) -> Result<Option<ffmpeg::frame::Video>, MediaError> {
        let mut chosen = None;
        let mut reader = PacketReader::new();
        while let Some(packet) = reader.next(ictx, cancel)? {
            if packet.stream() != self.index {
                continue;
            }
            // Frames well before the target that nothing else refers to are never shown and
            // never needed: skipping them halves the work of reaching the target.
            let early = packet
                .pts()
                .is_some_and(|ts| self.seconds(ts) < target - SKIP_MARGIN_SECONDS);
            decoder.skip_frame(if early {
                ffmpeg::codec::discard::Discard::NonReference
            } else {
                ffmpeg::codec::discard::Discard::Default
            });
            if decoder.send_packet(&packet).is_ok() && self.take(decoder, target, &mut chosen) {
                return Ok(chosen);
            }
        }
        cancel.check()?;
        if decoder.send_eof().is_ok() {
            self.take(decoder, target, &mut chosen);
        }
        Ok(chosen)
    }

    /// Receives the decoder's frames into `chosen`; true once one is at or after `target`.
    fn take(
        &self,
        decoder: &mut ffmpeg::decoder::Video,
        target: f64,
        chosen: &mut Option<ffmpeg::frame::Video>,
    ) -> bool {
        let mut frame = ffmpeg::frame::Video::empty();
        while decoder.receive_frame(&mut frame).is_ok() {
            let t = self.seconds(frame.timestamp().or(frame.pts()).unwrap_or(0));
            *chosen = Some(frame.clone());
            if t + 1e-3 >= target {
                return true;
            }
        }
        false
    }
}

/// Scales `picture` to the thumbnail size and encodes it as a JPEG.
fn encode_jpeg(picture: &ffmpeg::frame::Video) -> Result<(Vec<u8>, u32, u32), MediaError> {
    let (w, h) = thumbnail_size(picture.width(), picture.height());
    let pixel = ffmpeg::format::Pixel::YUVJ420P;
    let mut scaler = ffmpeg::software::scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        pixel,
        w,
        h,
        ffmpeg::software::scaling::Flags::BICUBIC,
    )
    .map_err(|e| MediaError::internal("thumbnail scaler", e))?;
    let mut scaled = ffmpeg::frame::Video::empty();
    scaler
        .run(picture, &mut scaled)
        .map_err(|e| MediaError::internal("scaling the thumbnail", e))?;
    scaled.set_pts(Some(0));
    let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG)
        .ok_or_else(|| MediaError::internal("thumbnail", "no MJPEG encoder in this FFmpeg"))?;
    let mut encoder = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| MediaError::internal("MJPEG encoder", e))?;
    encoder.set_width(w);
    encoder.set_height(h);
    encoder.set_format(pixel);
    encoder.set_time_base((1, 25));
    encoder.set_flags(ffmpeg::codec::Flags::QSCALE);
    encoder.set_global_quality(JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA);
    let mut encoder = encoder
        .open_as(codec)
        .map_err(|e| MediaError::internal("opening the MJPEG encoder", e))?;
    encoder
        .send_frame(&scaled)
        .map_err(|e| MediaError::internal("encoding the thumbnail", e))?;
    encoder
        .send_eof()
        .map_err(|e| MediaError::internal("encoding the thumbnail", e))?;
    let mut packet = ffmpeg::Packet::empty();
    let mut jpeg = Vec::new();
    while encoder.receive_packet(&mut packet).is_ok() {
        if let Some(data) = packet.data() {
            jpeg.extend_from_slice(data);
        }
    }
    if jpeg.is_empty() {
        return Err(MediaError::internal("encoding the thumbnail", "no output"));
    }
    Ok((jpeg, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_at_most_1280_wide_with_the_aspect_kept() {
        assert_eq!(thumbnail_size(1920, 1080), (1280, 720));
        assert_eq!(thumbnail_size(320, 240), (320, 240));
        assert_eq!(thumbnail_size(3840, 2160), (1280, 720));
        assert_eq!(thumbnail_size(1080, 1920), (1080, 1920));
        assert_eq!(thumbnail_size(641, 481), (640, 480));
    }

    #[test]
    fn short_videos_take_their_thumbnail_ten_percent_in() {
        assert_eq!(target_seconds(60.0), 1.0);
        assert_eq!(target_seconds(2.0), 1.0);
        assert!((target_seconds(1.5) - 0.15).abs() < 1e-9);
    }
}
