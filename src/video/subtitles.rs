//! Subtitles from a transcript's timed segments: WebVTT and SRT, one cue per segment, at the
//! segments' own times.

use serde::{Deserialize, Serialize};

/// A timed stretch of speech, in seconds from the start of the video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cue {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// What was said.
    pub text: String,
}

/// The transcript file stored for a video: its text and its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptFile {
    /// The whole text.
    pub text: String,
    /// Language, when the provider reported one.
    pub language: Option<String>,
    /// Timed segments, in order.
    pub segments: Vec<Cue>,
}

/// `HH:MM:SS` and milliseconds, with `sep` before the milliseconds (`.` for WebVTT, `,` for
/// SRT).
fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// Cue text on non-blank lines, without the `-->` that would end a cue early.
fn cue_text(text: &str) -> String {
    text.lines()
        .map(|l| l.trim().replace("-->", "->"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cues worth showing: non-empty text, positive length.
fn shown(cues: &[Cue]) -> impl Iterator<Item = (&Cue, String)> {
    cues.iter()
        .filter(|c| c.end > c.start)
        .map(|c| (c, cue_text(&c.text)))
        .filter(|(_, t)| !t.is_empty())
}

/// A WebVTT file.
pub fn to_vtt(cues: &[Cue]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for (i, (c, text)) in shown(cues).enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{text}\n\n",
            i + 1,
            timestamp(c.start, '.'),
            timestamp(c.end, '.')
        ));
    }
    out
}

/// An SRT file.
pub fn to_srt(cues: &[Cue]) -> String {
    let mut out = String::new();
    for (i, (c, text)) in shown(cues).enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{text}\n\n",
            i + 1,
            timestamp(c.start, ','),
            timestamp(c.end, ',')
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cues() -> Vec<Cue> {
        vec![
            Cue {
                start: 0.0,
                end: 2.5,
                text: "Hello there.".into(),
            },
            Cue {
                start: 3661.0015,
                end: 3662.25,
                text: "  a --> b \n\n second line ".into(),
            },
            Cue {
                start: 5.0,
                end: 5.0,
                text: "empty length".into(),
            },
        ]
    }

    #[test]
    fn webvtt_has_a_header_and_dotted_milliseconds() {
        assert_eq!(
            to_vtt(&cues()),
            "WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n\
             2\n01:01:01.002 --> 01:01:02.250\na -> b\nsecond line\n\n"
        );
    }

    #[test]
    fn srt_numbers_cues_and_uses_commas() {
        assert_eq!(
            to_srt(&cues()),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n\
             2\n01:01:01,002 --> 01:01:02,250\na -> b\nsecond line\n\n"
        );
    }
}
