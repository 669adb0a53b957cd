//! Title, description, tags and show notes from a transcript: asked of the configured chat
//! model as JSON, or derived deterministically from the transcript with the development
//! provider (which is not a model) and whenever the model's answer is unusable.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use super::subtitles::{Cue, TranscriptFile};
use crate::ai::{AiProvider, ChatChunk, ChatRequest, PromptMessage, Role};
use crate::db::videos::Descriptive;

/// Longest title kept.
pub const MAX_TITLE_CHARS: usize = 100;
/// Longest description kept.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Most tags kept.
pub const MAX_TAGS: usize = 10;
/// Transcript characters sent to the model at most.
const PROMPT_TRANSCRIPT_CHARS: usize = 12_000;
/// Longest wait for the model's whole answer.
const MODEL_TIMEOUT: Duration = Duration::from_secs(120);

const SYSTEM_PROMPT: &str = "You write the metadata of a video from its transcript. Answer with \
one JSON object and nothing else: {\"title\": string (at most 80 characters), \"description\": \
string (2-4 sentences), \"tags\": [up to 8 short lowercase keywords], \"show_notes\": string \
(a Markdown bullet list of the main points, each starting with its [mm:ss] time)}.";

const STOPWORDS: &[&str] = &[
    "about", "after", "again", "also", "because", "been", "before", "being", "could", "does",
    "doing", "down", "each", "from", "have", "having", "here", "into", "just", "like", "more",
    "most", "only", "other", "over", "part", "same", "should", "some", "such", "than", "that",
    "their", "them", "then", "there", "these", "they", "this", "those", "through", "under", "very",
    "were", "what", "when", "where", "which", "while", "will", "with", "would", "your",
];

/// Metadata for a video named `filename` with `transcript` (none: no speech).
pub async fn describe(
    ai: &dyn AiProvider,
    filename: &str,
    transcript: Option<&TranscriptFile>,
) -> Descriptive {
    let Some(t) = transcript.filter(|t| !t.text.trim().is_empty()) else {
        return deterministic(filename, None);
    };
    if ai.name() == "dev" {
        return deterministic(filename, Some(t));
    }
    match tokio::time::timeout(MODEL_TIMEOUT, ask_model(ai, t)).await {
        Ok(Ok(d)) => d,
        Ok(Err(why)) => {
            tracing::warn!(%why, "video metadata from the model failed; derived from the transcript");
            deterministic(filename, Some(t))
        }
        Err(_) => {
            tracing::warn!("video metadata from the model timed out; derived from the transcript");
            deterministic(filename, Some(t))
        }
    }
}

#[derive(Deserialize)]
struct ModelAnswer {
    title: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    show_notes: Option<String>,
}

async fn ask_model(ai: &dyn AiProvider, t: &TranscriptFile) -> Result<Descriptive, String> {
    let mut listing = String::new();
    for c in &t.segments {
        if listing.len() > PROMPT_TRANSCRIPT_CHARS {
            break;
        }
        listing.push_str(&format!("[{}] {}\n", mmss(c.start), c.text.trim()));
    }
    let request = ChatRequest {
        model: ai.default_model().to_string(),
        messages: vec![
            PromptMessage {
                role: Role::System,
                content: SYSTEM_PROMPT.into(),
            },
            PromptMessage {
                role: Role::User,
                content: format!("Transcript:\n{listing}"),
            },
        ],
        max_output_tokens: Some(800),
    };
    let mut stream = ai.stream_chat(request);
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item.map_err(|e| e.to_string())? {
            ChatChunk::Delta(d) => text.push_str(&d),
            ChatChunk::Done { .. } => break,
        }
    }
    let json = text
        .find('{')
        .zip(text.rfind('}'))
        .filter(|(a, b)| a < b)
        .map(|(a, b)| &text[a..=b])
        .ok_or("the answer holds no JSON object")?;
    let answer: ModelAnswer = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let title = answer
        .title
        .map(|s| clip(s.trim(), MAX_TITLE_CHARS))
        .filter(|s| !s.is_empty())
        .ok_or("no title")?;
    let mut tags: Vec<String> = Vec::new();
    for tag in answer.tags {
        let tag = clip(tag.trim(), 40).to_lowercase();
        if !tag.is_empty() && !tags.contains(&tag) && tags.len() < MAX_TAGS {
            tags.push(tag);
        }
    }
    Ok(Descriptive {
        title: Some(title),
        description: answer
            .description
            .map(|s| clip(s.trim(), MAX_DESCRIPTION_CHARS)),
        tags: Some(tags),
        show_notes: answer.show_notes.map(|s| clip(s.trim(), 10_000)),
    })
}

/// `mm:ss` (or `h:mm:ss`).
fn mmss(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// At most `max` characters, cut at a word boundary with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > max / 2 => cut[..i].trim_end().to_string(),
        _ => cut,
    };
    format!("{cut}…")
}

/// The file name without its extension, as a fallback title.
fn name_title(filename: &str) -> String {
    let stem = filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(filename)
        .rsplit_once('.')
        .map(|(s, _)| s)
        .unwrap_or(filename);
    let title = clip(
        stem.replace(['_', '-'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .as_str(),
        MAX_TITLE_CHARS,
    );
    if title.is_empty() {
        "Untitled video".into()
    } else {
        title
    }
}

/// Metadata derived from the transcript alone (deterministic).
pub fn deterministic(filename: &str, transcript: Option<&TranscriptFile>) -> Descriptive {
    let Some(t) = transcript.filter(|t| !t.text.trim().is_empty()) else {
        return Descriptive {
            title: Some(name_title(filename)),
            description: Some("No speech was detected in this video.".into()),
            tags: Some(Vec::new()),
            show_notes: Some(String::new()),
        };
    };
    let text = t.text.split_whitespace().collect::<Vec<_>>().join(" ");
    let first_sentence = text
        .split_inclusive(['.', '!', '?'])
        .next()
        .unwrap_or(&text)
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .to_string();
    let title = if first_sentence.is_empty() {
        name_title(filename)
    } else {
        clip(&first_sentence, MAX_TITLE_CHARS)
    };
    Descriptive {
        title: Some(title),
        description: Some(clip(&text, 300)),
        tags: Some(keywords(&text, 5)),
        show_notes: Some(show_notes(&t.segments)),
    }
}

/// The `n` most frequent longer words (ties alphabetical), lower case.
fn keywords(text: &str, n: usize) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let w = word.to_lowercase();
        if w.chars().count() >= 4
            && !w.chars().all(|c| c.is_ascii_digit())
            && !STOPWORDS.contains(&w.as_str())
        {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(n).map(|(w, _)| w).collect()
}

/// One `- [mm:ss] text` line per segment (at most 50).
fn show_notes(segments: &[Cue]) -> String {
    segments
        .iter()
        .filter(|c| !c.text.trim().is_empty())
        .take(50)
        .map(|c| format!("- [{}] {}", mmss(c.start), c.text.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_speech_the_title_comes_from_the_file_name() {
        let d = deterministic("my_holiday-clip.mp4", None);
        assert_eq!(d.title.as_deref(), Some("my holiday clip"));
        assert_eq!(d.tags, Some(vec![]));
    }

    #[test]
    fn with_speech_everything_comes_from_the_transcript() {
        let t = TranscriptFile {
            text: "Rust makes systems programming safer. Rust and actors, actors everywhere."
                .into(),
            language: Some("en".into()),
            segments: vec![
                Cue {
                    start: 0.0,
                    end: 2.0,
                    text: "Rust makes systems programming safer.".into(),
                },
                Cue {
                    start: 65.0,
                    end: 70.0,
                    text: "Rust and actors, actors everywhere.".into(),
                },
            ],
        };
        let d = deterministic("x.mp4", Some(&t));
        assert_eq!(
            d.title.as_deref(),
            Some("Rust makes systems programming safer")
        );
        assert_eq!(
            d.tags.unwrap(),
            vec!["actors", "rust", "everywhere", "makes", "programming"]
        );
        assert_eq!(
            d.show_notes.as_deref(),
            Some("- [00:00] Rust makes systems programming safer.\n- [01:05] Rust and actors, actors everywhere.")
        );
    }
}
