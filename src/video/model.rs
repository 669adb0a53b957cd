//! A job's stages, their per-stage state (`processing_stages`) and the internal results a
//! resumed job needs (`stage_results`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The pipeline's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Duration, resolution, format, codecs, bit rate.
    Probe,
    /// The JPEG at 1 s.
    Thumbnail,
    /// The speech track: 16 kHz mono FLAC chunks.
    Audio,
    /// Speech-to-text of each chunk.
    Transcription,
    /// WebVTT and SRT from the transcript's segments.
    Subtitles,
    /// Title, description, tags and show notes from the transcript.
    Metadata,
    /// Everything stored; the job completes.
    Finalize,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Probe,
        Stage::Thumbnail,
        Stage::Audio,
        Stage::Transcription,
        Stage::Subtitles,
        Stage::Metadata,
        Stage::Finalize,
    ];

    /// The stage's name in `stage` and `processing_stages`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::Thumbnail => "thumbnail",
            Stage::Audio => "audio",
            Stage::Transcription => "transcription",
            Stage::Subtitles => "subtitles",
            Stage::Metadata => "metadata",
            Stage::Finalize => "finalize",
        }
    }

    /// Its share of the job's overall progress, in percent (they add up to 100).
    pub fn weight(self) -> u32 {
        match self {
            Stage::Probe => 5,
            Stage::Thumbnail => 5,
            Stage::Audio => 30,
            Stage::Transcription => 35,
            Stage::Subtitles => 5,
            Stage::Metadata => 15,
            Stage::Finalize => 5,
        }
    }

    /// Overall progress when this stage is `fraction` done.
    pub fn overall(self, fraction: f64) -> i32 {
        let before: u32 = Stage::ALL
            .iter()
            .take_while(|s| **s != self)
            .map(|s| s.weight())
            .sum();
        let within = f64::from(self.weight()) * fraction.clamp(0.0, 1.0);
        (f64::from(before) + within).floor().min(100.0) as i32
    }
}

/// A stage's status in `processing_stages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StageStatus {
    /// Not started.
    Pending,
    /// Running.
    Processing,
    /// Done; its results are stored.
    Completed,
    /// Not needed for this video (no audio track: no transcription, no subtitles).
    Skipped,
    /// Stopped by an error.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

/// One entry of `processing_stages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    /// Where it is.
    pub status: StageStatus,
    /// 0..=100 within the stage.
    pub progress: i32,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `processing_stages`: every stage by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingStages(pub serde_json::Map<String, serde_json::Value>);

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl ProcessingStages {
    /// All stages pending.
    pub fn new() -> ProcessingStages {
        let mut map = serde_json::Map::new();
        for s in Stage::ALL {
            map.insert(
                s.name().into(),
                serde_json::to_value(StageState {
                    status: StageStatus::Pending,
                    progress: 0,
                    started_at: None,
                    finished_at: None,
                    error: None,
                })
                .unwrap_or_default(),
            );
        }
        ProcessingStages(map)
    }

    /// The stored value, or all pending when absent or unreadable.
    pub fn from_json(value: Option<&serde_json::Value>) -> ProcessingStages {
        let mut stages = ProcessingStages::new();
        if let Some(serde_json::Value::Object(stored)) = value {
            for (k, v) in stored {
                if serde_json::from_value::<StageState>(v.clone()).is_ok() {
                    stages.0.insert(k.clone(), v.clone());
                }
            }
        }
        stages
    }

    /// The stage's state.
    pub fn get(&self, stage: Stage) -> Option<StageState> {
        self.0
            .get(stage.name())
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    fn put(&mut self, stage: Stage, state: &StageState) {
        if let Ok(v) = serde_json::to_value(state) {
            self.0.insert(stage.name().into(), v);
        }
    }

    /// True when the stage finished (completed or skipped) in an earlier run.
    pub fn is_done(&self, stage: Stage) -> bool {
        self.get(stage)
            .is_some_and(|s| matches!(s.status, StageStatus::Completed | StageStatus::Skipped))
    }

    /// Marks a stage running from now.
    pub fn start(&mut self, stage: Stage, at: DateTime<Utc>) {
        self.put(
            stage,
            &StageState {
                status: StageStatus::Processing,
                progress: 0,
                started_at: Some(stamp(at)),
                finished_at: None,
                error: None,
            },
        );
    }

    /// Sets a running stage's progress (0..=100).
    pub fn progress(&mut self, stage: Stage, progress: i32) {
        if let Some(mut s) = self.get(stage) {
            s.progress = progress.clamp(s.progress, 100);
            self.put(stage, &s);
        }
    }

    /// Ends a stage with `status` (and `error` for a failure).
    pub fn finish(
        &mut self,
        stage: Stage,
        status: StageStatus,
        at: DateTime<Utc>,
        error: Option<String>,
    ) {
        let mut s = self.get(stage).unwrap_or(StageState {
            status,
            progress: 0,
            started_at: None,
            finished_at: None,
            error: None,
        });
        s.status = status;
        if matches!(status, StageStatus::Completed | StageStatus::Skipped) {
            s.progress = 100;
        }
        s.finished_at = Some(stamp(at));
        s.error = error;
        self.put(stage, &s);
    }

    /// The value stored in `processing_stages`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.clone())
    }
}

impl Default for ProcessingStages {
    fn default() -> Self {
        ProcessingStages::new()
    }
}

/// A stored chunk of the speech track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChunk {
    /// Object key of the FLAC file.
    pub key: String,
    /// Where it starts in the video, in seconds.
    pub start: f64,
    /// Its length, in seconds.
    pub duration: f64,
}

/// Results of finished stages that later stages read (`stage_results`; never shown to
/// clients). A resumed job finds here what the stages before the interruption produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageResults {
    /// Duration from the probe, in seconds.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Container format (its extension-matching alias).
    #[serde(default)]
    pub format: Option<String>,
    /// Video codec from the probe.
    #[serde(default)]
    pub video_codec: Option<String>,
    /// Audio codec from the probe, when there is an audio track.
    #[serde(default)]
    pub audio_codec: Option<String>,
    /// Overall bit rate from the probe, bits per second.
    #[serde(default)]
    pub bit_rate: Option<i64>,
    /// The speech track's chunks; empty when the video has no audio.
    #[serde(default)]
    pub audio_chunks: Option<Vec<StoredChunk>>,
    /// Object key of the transcript JSON.
    #[serde(default)]
    pub transcript_key: Option<String>,
}

impl StageResults {
    /// The stored value, or empty.
    pub fn from_json(value: Option<&serde_json::Value>) -> StageResults {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// The value stored in `stage_results`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_weights_add_up_to_one_hundred() {
        assert_eq!(Stage::ALL.iter().map(|s| s.weight()).sum::<u32>(), 100);
        assert_eq!(Stage::Probe.overall(0.0), 0);
        assert_eq!(Stage::Audio.overall(0.5), 25);
        assert_eq!(Stage::Finalize.overall(1.0), 100);
    }

    #[test]
    fn finished_stages_survive_a_round_trip() {
        let mut s = ProcessingStages::new();
        s.start(Stage::Probe, Utc::now());
        s.finish(Stage::Probe, StageStatus::Completed, Utc::now(), None);
        s.finish(Stage::Transcription, StageStatus::Skipped, Utc::now(), None);
        let back = ProcessingStages::from_json(Some(&s.to_json()));
        assert!(back.is_done(Stage::Probe));
        assert!(back.is_done(Stage::Transcription));
        assert!(!back.is_done(Stage::Audio));
        assert_eq!(back.get(Stage::Probe).unwrap().progress, 100);
    }
}
