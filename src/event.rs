//! The event: one JSON object per utterance window, the product's output format.
//!
//! The sentiment fields are filled by the models of later stages (UBM, large model); a
//! window that was only transcribed leaves them `null`, so consumers see one stable schema.

use serde::{Deserialize, Serialize};

/// Which stage of the U-ACS cascade produced the final verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Accepted from the small model (u_s <= tau1).
    Ubm,
    /// Accepted from the large model (u_l <= tau2).
    Mllm,
    /// Uncertainty-weighted average of both (same polarity).
    Fused,
    /// Large model's answer after cross-verification (polarities differed).
    CrossVerified,
    /// Escalation failed (queue full, timeout, worker error): small model's verdict.
    UbmFallback,
}

/// Three-way polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Polarity {
    /// Score below -b.
    Negative,
    /// |score| <= b.
    Neutral,
    /// Score above b.
    Positive,
}

/// Class probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probs {
    /// P(negative).
    pub negative: f32,
    /// P(neutral).
    pub neutral: f32,
    /// P(positive).
    pub positive: f32,
}

/// One model's opinion on a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opinion {
    /// Sentiment score (dataset range, e.g. [-3, 3]).
    pub score: f32,
    /// Entropy of the class distribution (nats).
    pub uncertainty: f32,
}

/// Time spent per stage, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Whisper.
    pub asr: f64,
    /// Audio, face and text features.
    pub features: f64,
    /// Small model forward.
    pub ubm: f64,
    /// Waiting in the large-model queue (escalated windows).
    #[serde(default)]
    pub queue: f64,
    /// Large model passes (escalated windows).
    #[serde(default)]
    pub mllm: f64,
    /// From the end of the window's audio being decoded to the event being emitted.
    pub total: f64,
}

/// What happened to a stream (not a window): interruptions, resumption, its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    /// The stream started delivering media.
    Started,
    /// The source failed or went away; sentistream is reconnecting.
    Interrupted,
    /// Media flows again after an interruption.
    Resumed,
    /// The stream ended (end of input, shutdown, or given up).
    Ended,
}

/// A stream-level notice, written to the same sinks as window events (a JSON object with
/// a `status` field instead of `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Stream id.
    pub stream: String,
    /// What happened.
    pub status: StreamStatus,
    /// Stream time (seconds) at which it happened.
    pub at: f64,
    /// Why (errors, shutdown), if known.
    pub reason: Option<String>,
    /// Wall-clock emission time, ms since the Unix epoch.
    pub emitted_at_ms: u64,
}

/// Anything a sink receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// One window's result.
    Window(Event),
    /// A stream-level notice.
    Status(StatusEvent),
}

impl Output {
    /// The JSON line (without newline).
    pub fn to_json(&self) -> String {
        match self {
            Output::Window(e) => serde_json::to_string(e),
            Output::Status(s) => serde_json::to_string(s),
        }
        .expect("events serialise")
    }
    /// Stream id.
    pub fn stream(&self) -> &str {
        match self {
            Output::Window(e) => &e.stream,
            Output::Status(s) => &s.stream,
        }
    }
}

/// One utterance window's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stream id (the input name unless set).
    pub stream: String,
    /// Window number within the stream, from 0, without gaps.
    pub seq: u64,
    /// Window start, seconds of stream time.
    pub start: f64,
    /// Window end, seconds of stream time.
    pub end: f64,
    /// Transcript ("" when nothing reliable was said).
    pub text: String,
    /// Language of the transcript.
    pub language: Option<String>,
    /// Mean token probability of the transcript.
    pub asr_confidence: f32,
    /// Video frames seen in the window.
    pub frames: u32,
    /// Final sentiment score.
    pub score: Option<f32>,
    /// Final polarity.
    pub polarity: Option<Polarity>,
    /// Final class probabilities.
    pub probs: Option<Probs>,
    /// Final uncertainty (entropy, nats).
    pub uncertainty: Option<f32>,
    /// Stage that decided.
    pub stage: Option<Stage>,
    /// Why an escalation fell back to the small model.
    pub fallback_reason: Option<String>,
    /// The small model's opinion.
    pub ubm: Option<Opinion>,
    /// The large model's opinion.
    pub mllm: Option<Opinion>,
    /// Time spent, milliseconds.
    pub latency_ms: Latency,
    /// Wall-clock emission time, milliseconds since the Unix epoch.
    pub emitted_at_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_stable_field_names() {
        let mut e = tests_support::event("cam1");
        e.stage = Some(Stage::CrossVerified);
        e.latency_ms = Latency {
            asr: 10.0,
            features: 1.0,
            ubm: 0.5,
            total: 12.0,
            ..Latency::default()
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["stage"], "cross_verified");
        assert_eq!(v["polarity"], "positive");
        assert_eq!(v["probs"]["positive"].as_f64().unwrap() as f32, 0.7);
        assert!(v["mllm"].is_null());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}

/// An event with every field set, for unit tests of sinks and metrics.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// A window event of `stream` at 1.0-2.5 s.
    pub fn event(stream: &str) -> Event {
        Event {
            stream: stream.into(),
            seq: 0,
            start: 1.0,
            end: 2.5,
            text: "hello there".into(),
            language: Some("en".into()),
            asr_confidence: 0.9,
            frames: 7,
            score: Some(1.25),
            polarity: Some(Polarity::Positive),
            probs: Some(Probs {
                negative: 0.1,
                neutral: 0.2,
                positive: 0.7,
            }),
            uncertainty: Some(0.8),
            stage: Some(Stage::Ubm),
            fallback_reason: None,
            ubm: Some(Opinion {
                score: 1.25,
                uncertainty: 0.8,
            }),
            mllm: None,
            latency_ms: Latency::default(),
            emitted_at_ms: 1,
        }
    }
}
