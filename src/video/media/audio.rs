//! The speech track: the best audio stream decoded, resampled to 16 kHz mono by an FFmpeg
//! filter graph, and encoded as FLAC in chunks short enough to stay under the speech-to-text
//! provider's upload limit. A video without an audio stream (or without any sample) yields no
//! chunk, and transcription is skipped.

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;

use super::{open_input, seconds, Cancel, MediaError, PacketReader, Progress, Source};

/// Sample rate speech-to-text models are trained on.
pub const SPEECH_RATE: u32 = 16_000;
/// Largest file the speech-to-text provider accepts (25 MB).
pub const MAX_CHUNK_BYTES: u64 = 25_000_000;
/// Seconds of audio per chunk. FLAC never exceeds raw 16-bit PCM by more than its frame
/// headers, so 600 s (19.2 MB raw) is always under [`MAX_CHUNK_BYTES`].
pub const CHUNK_SECONDS: u32 = 600;

/// How the speech track is cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Seconds per chunk.
    pub chunk_seconds: u32,
    /// Seconds encoded at most; the rest of a longer track is left out (a container may
    /// understate its duration).
    pub max_seconds: f64,
}

/// One encoded chunk of the speech track.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    /// The FLAC file.
    pub path: PathBuf,
    /// Where it starts in the video, in seconds.
    pub start: f64,
    /// Its length, in seconds.
    pub duration: f64,
    /// Its size.
    pub bytes: u64,
}

/// One FLAC file being written.
struct ChunkWriter {
    octx: ffmpeg::format::context::Output,
    encoder: ffmpeg::encoder::Audio,
    path: PathBuf,
    start: f64,
    samples: i64,
    stream_time_base: ffmpeg::Rational,
}

impl ChunkWriter {
    fn open(path: PathBuf, start: f64) -> Result<ChunkWriter, MediaError> {
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::FLAC).ok_or_else(|| {
            MediaError::internal("speech audio", "no FLAC encoder in this FFmpeg")
        })?;
        let mut octx = ffmpeg::format::output_as(&path, "flac")
            .map_err(|e| MediaError::internal("creating an audio chunk", e))?;
        let mut encoder = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| MediaError::internal("FLAC encoder", e))?;
        encoder.set_rate(SPEECH_RATE as i32);
        encoder.set_format(ffmpeg::format::Sample::I16(
            ffmpeg::format::sample::Type::Packed,
        ));
        encoder.set_channel_layout(ffmpeg::ChannelLayout::MONO);
        encoder.set_channels(1);
        encoder.set_time_base((1, SPEECH_RATE as i32));
        let encoder = encoder
            .open_as(codec)
            .map_err(|e| MediaError::internal("opening the FLAC encoder", e))?;
        let stream_time_base = {
            let mut stream = octx
                .add_stream(codec)
                .map_err(|e| MediaError::internal("audio chunk stream", e))?;
            stream.set_parameters(&encoder);
            stream.set_time_base((1, SPEECH_RATE as i32));
            stream.time_base()
        };
        octx.write_header()
            .map_err(|e| MediaError::internal("writing an audio chunk", e))?;
        // The muxer may pick its own time base when writing the header.
        let stream_time_base = octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(stream_time_base);
        Ok(ChunkWriter {
            octx,
            encoder,
            path,
            start,
            samples: 0,
            stream_time_base,
        })
    }

    fn frame_size(&self) -> u32 {
        self.encoder.frame_size()
    }

    fn write(&mut self, frame: &mut ffmpeg::frame::Audio) -> Result<(), MediaError> {
        frame.set_pts(Some(self.samples));
        self.samples += frame.samples() as i64;
        self.encoder
            .send_frame(frame)
            .map_err(|e| MediaError::internal("encoding speech audio", e))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), MediaError> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            packet.rescale_ts((1, SPEECH_RATE as i32), self.stream_time_base);
            packet
                .write_interleaved(&mut self.octx)
                .map_err(|e| MediaError::internal("writing an audio chunk", e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<AudioChunk, MediaError> {
        self.encoder
            .send_eof()
            .map_err(|e| MediaError::internal("flushing speech audio", e))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(|e| MediaError::internal("finishing an audio chunk", e))?;
        let bytes = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| MediaError::internal("audio chunk", e))?;
        if bytes >= MAX_CHUNK_BYTES {
            return Err(MediaError::internal(
                "audio chunk",
                format!("{bytes} bytes is over the provider's limit"),
            ));
        }
        Ok(AudioChunk {
            path: self.path,
            start: self.start,
            duration: self.samples as f64 / f64::from(SPEECH_RATE),
            bytes,
        })
    }
}

/// The resampling graph: whatever the decoder produces → 16 kHz mono signed 16-bit, in frames
/// of the encoder's size.
fn resampler(
    decoder: &ffmpeg::decoder::Audio,
    frame_size: u32,
) -> Result<ffmpeg::filter::Graph, MediaError> {
    let layout = match decoder.channel_layout() {
        l if l.bits() != 0 => l,
        _ => ffmpeg::ChannelLayout::default(i32::from(decoder.channels().max(1))),
    };
    let mut graph = ffmpeg::filter::Graph::new();
    let args = format!(
        "time_base=1/{rate}:sample_rate={rate}:sample_fmt={fmt}:channel_layout=0x{layout:x}",
        rate = decoder.rate().max(1),
        fmt = decoder.format().name(),
        layout = layout.bits(),
    );
    let abuffer = ffmpeg::filter::find("abuffer")
        .ok_or_else(|| MediaError::internal("speech audio", "no abuffer filter"))?;
    let sink = ffmpeg::filter::find("abuffersink")
        .ok_or_else(|| MediaError::internal("speech audio", "no abuffersink filter"))?;
    graph
        .add(&abuffer, "in", &args)
        .map_err(|e| MediaError::internal("audio graph input", e))?;
    graph
        .add(&sink, "out", "")
        .map_err(|e| MediaError::internal("audio graph output", e))?;
    {
        let mut out = graph
            .get("out")
            .ok_or_else(|| MediaError::internal("audio graph", "no output"))?;
        out.set_sample_format(ffmpeg::format::Sample::I16(
            ffmpeg::format::sample::Type::Packed,
        ));
        out.set_channel_layout(ffmpeg::ChannelLayout::MONO);
        out.set_sample_rate(SPEECH_RATE);
    }
    graph
        .output("in", 0)
        .and_then(|p| p.input("out", 0))
        .and_then(|p| p.parse("aresample=16000"))
        .map_err(|e| MediaError::internal("audio graph", e))?;
    graph
        .validate()
        .map_err(|e| MediaError::internal("audio graph", e))?;
    if frame_size > 0 {
        if let Some(mut out) = graph.get("out") {
            out.sink().set_frame_size(frame_size);
        }
    }
    Ok(graph)
}

/// Decoded audio on its way to FLAC chunks.
struct SpeechEncoder<'a> {
    dir: &'a Path,
    chunk_samples: i64,
    max_samples: i64,
    frame_size: u32,
    graph: Option<ffmpeg::filter::Graph>,
    writer: Option<ChunkWriter>,
    chunks: Vec<AudioChunk>,
    /// Where the first decoded sample sits in the video, in seconds.
    offset: Option<f64>,
    /// Running sample count of the decoded track (its continuous timeline).
    next_pts: i64,
    /// Resampled samples written so far.
    written: i64,
    filtered: ffmpeg::frame::Audio,
}

impl SpeechEncoder<'_> {
    /// Feeds one decoded frame (timestamped `first_seconds` when it is the first one).
    fn push(
        &mut self,
        decoder: &ffmpeg::decoder::Audio,
        frame: &mut ffmpeg::frame::Audio,
        first_seconds: f64,
    ) -> Result<(), MediaError> {
        if self.graph.is_none() {
            self.graph = Some(resampler(decoder, self.frame_size)?);
        }
        self.offset.get_or_insert(first_seconds);
        // Container timestamps may jump or repeat; the speech track is one continuous run of
        // samples.
        frame.set_pts(Some(self.next_pts));
        self.next_pts += frame.samples() as i64;
        let Some(mut input) = self.graph.as_mut().and_then(|g| g.get("in")) else {
            return Err(MediaError::internal("audio graph", "no input"));
        };
        input
            .source()
            .add(frame)
            .map_err(|e| MediaError::internal("resampling audio", e))?;
        self.pump()
    }

    /// Moves what the graph has ready into the current chunk, starting a new one when full.
    fn pump(&mut self) -> Result<(), MediaError> {
        loop {
            let Some(mut out) = self.graph.as_mut().and_then(|g| g.get("out")) else {
                return Ok(());
            };
            if out.sink().frame(&mut self.filtered).is_err() {
                return Ok(());
            }
            let n = self.filtered.samples() as i64;
            if self.written + n > self.max_samples {
                // Past the longest track processed: drained and dropped.
                continue;
            }
            if self
                .writer
                .as_ref()
                .is_some_and(|w| w.samples + n > self.chunk_samples)
            {
                if let Some(full) = self.writer.take() {
                    self.chunks.push(full.finish()?);
                }
            }
            if self.writer.is_none() {
                let start =
                    self.offset.unwrap_or(0.0) + self.written as f64 / f64::from(SPEECH_RATE);
                let path = self
                    .dir
                    .join(format!("audio-{:03}.flac", self.chunks.len()));
                self.writer = Some(ChunkWriter::open(path, start)?);
            }
            if let Some(w) = self.writer.as_mut() {
                w.write(&mut self.filtered)?;
            }
            self.written += n;
        }
    }

    /// Flushes the graph and the last chunk.
    fn finish(mut self) -> Result<Vec<AudioChunk>, MediaError> {
        if let Some(mut input) = self.graph.as_mut().and_then(|g| g.get("in")) {
            input
                .source()
                .flush()
                .map_err(|e| MediaError::internal("flushing the audio graph", e))?;
        }
        self.pump()?;
        if let Some(last) = self.writer.take() {
            self.chunks.push(last.finish()?);
        }
        Ok(self.chunks)
    }
}

/// Decodes the best audio stream of `path` into FLAC chunks in `dir` (`audio-000.flac`, …) of
/// at most `limits.chunk_seconds` each. `duration` (from the probe) scales `progress`.
/// Returns no chunk when there is no audio.
pub fn extract_speech(
    path: &Path,
    dir: &Path,
    duration: f64,
    limits: Limits,
    cancel: &Cancel,
    progress: &Progress,
) -> Result<Vec<AudioChunk>, MediaError> {
    let source = Source::open(path, &super::extension_of(path))?;
    extract_speech_from(&source, dir, duration, limits, cancel, progress)
}

/// [`extract_speech`] of an open upload.
pub fn extract_speech_from(
    source: &Source,
    dir: &Path,
    duration: f64,
    limits: Limits,
    cancel: &Cancel,
    progress: &Progress,
) -> Result<Vec<AudioChunk>, MediaError> {
    let mut ictx = open_input(source, cancel)?;
    let Some((index, time_base, start)) = ictx
        .streams()
        .best(ffmpeg::media::Type::Audio)
        .map(|s| (s.index(), s.time_base(), s.start_time()))
    else {
        return Ok(Vec::new());
    };
    let params = ictx
        .stream(index)
        .map(|s| s.parameters())
        .ok_or_else(|| MediaError::internal("audio stream", "vanished"))?;
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().audio())
        .map_err(|e| MediaError::Unreadable(format!("The audio track cannot be decoded: {e}")))?;
    // The encoder's frame size, which the graph's output must match.
    let probe_path = dir.join("audio-frame-size.flac");
    let frame_size = ChunkWriter::open(probe_path.clone(), 0.0)
        .map(|w| w.frame_size())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&probe_path);
    let mut speech = SpeechEncoder {
        dir,
        chunk_samples: i64::from(limits.chunk_seconds.max(1)) * i64::from(SPEECH_RATE),
        max_samples: (limits.max_seconds.max(0.0) * f64::from(SPEECH_RATE)) as i64,
        frame_size,
        graph: None,
        writer: None,
        chunks: Vec::new(),
        offset: None,
        next_pts: 0,
        written: 0,
        filtered: ffmpeg::frame::Audio::empty(),
    };
    let mut decoded = ffmpeg::frame::Audio::empty();
    let first_seconds = |frame: &ffmpeg::frame::Audio| {
        frame
            .timestamp()
            .or(frame.pts())
            .map(|ts| seconds(ts, time_base, start).max(0.0))
            .unwrap_or(0.0)
    };
    let mut reader = PacketReader::new();
    while let Some(packet) = reader.next(&mut ictx, cancel)? {
        if packet.stream() != index {
            continue;
        }
        if let Some(ts) = packet.pts().or(packet.dts()) {
            if duration > 0.0 {
                progress.set(seconds(ts, time_base, start) / duration);
            }
        }
        // A damaged packet costs its few milliseconds of sound, not the whole track.
        if decoder.send_packet(&packet).is_err() {
            continue;
        }
        while decoder.receive_frame(&mut decoded).is_ok() {
            let t = first_seconds(&decoded);
            speech.push(&decoder, &mut decoded, t)?;
        }
    }
    cancel.check()?;
    if decoder.send_eof().is_ok() {
        while decoder.receive_frame(&mut decoded).is_ok() {
            let t = first_seconds(&decoded);
            speech.push(&decoder, &mut decoded, t)?;
        }
    }
    let chunks = speech.finish()?;
    progress.set(1.0);
    Ok(chunks)
}
