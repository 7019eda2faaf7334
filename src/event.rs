//! The event: one JSON object per utterance window, the product's output format.
//!
//! The sentiment fields are filled by the models of later stages (UBM, large model); a
//! window that was only transcribed leaves them `null`, so consumers see one stable schema.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Events carry scores in [-3, 3] (MOSI) whatever the model's label range: a model
/// trained on CH-SIMS's [-1, 1] (the Chinese one) has its score and band stretched by 3,
/// so one stream's windows, summaries and alerts share one scale.
pub const SCORE_LIMIT: f32 = 3.0;

/// An enum whose values travel as fixed names (JSON, metric labels): the names are
/// defined once, in `name`, and serde uses them.
pub(crate) trait Named: Sized + Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// The value with this name.
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == s)
    }
}

fn serialize_named<S: Serializer, T: Named>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

fn deserialize_named<'de, D: Deserializer<'de>, T: Named>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    T::from_name(&s).ok_or_else(|| {
        let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
        serde::de::Error::custom(format!("unknown value {s:?}; expected one of {names:?}"))
    })
}

macro_rules! named_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_named(self, s)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_named(d)
            }
        }
    };
}

/// Which stage of the U-ACS cascade produced the final verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl Named for Stage {
    const ALL: &'static [Self] = &[
        Self::Ubm,
        Self::Mllm,
        Self::Fused,
        Self::CrossVerified,
        Self::UbmFallback,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::Ubm => "ubm",
            Self::Mllm => "mllm",
            Self::Fused => "fused",
            Self::CrossVerified => "cross_verified",
            Self::UbmFallback => "ubm_fallback",
        }
    }
}
named_serde!(Stage);

impl Stage {
    /// Whether the window went to the large model (anything but an accepted small verdict).
    pub fn escalated(self) -> bool {
        self != Self::Ubm
    }
    /// Position in [`Named::ALL`] (for per-stage counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
    /// The words subtitle files show for the stage (the machine name is [`Named::name`]).
    pub fn label(self) -> &'static str {
        match self {
            Self::CrossVerified => "cross-verified",
            Self::UbmFallback => "ubm fallback",
            s => s.name(),
        }
    }
}

/// Why an escalated window kept the small model's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FallbackReason {
    /// The large-model queue was full (`drop_newest`).
    QueueFull,
    /// The window's deadline passed before the large model answered.
    Deadline,
    /// The worker panicked on this window.
    WorkerPanic,
    /// Every large-model worker had stopped.
    WorkerLost,
    /// The backend ran but failed.
    BackendError,
    /// A remote endpoint did not answer in time.
    BackendTimeout,
    /// A remote endpoint could not be reached or answered with an HTTP error.
    BackendUnreachable,
    /// The large model's answer could not be understood.
    MalformedOutput,
}

impl Named for FallbackReason {
    const ALL: &'static [Self] = &[
        Self::QueueFull,
        Self::Deadline,
        Self::WorkerPanic,
        Self::WorkerLost,
        Self::BackendError,
        Self::BackendTimeout,
        Self::BackendUnreachable,
        Self::MalformedOutput,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Deadline => "deadline",
            Self::WorkerPanic => "worker_panic",
            Self::WorkerLost => "worker_lost",
            Self::BackendError => "backend_error",
            Self::BackendTimeout => "backend_timeout",
            Self::BackendUnreachable => "backend_unreachable",
            Self::MalformedOutput => "malformed_output",
        }
    }
}
named_serde!(FallbackReason);

/// A window's sentiment verdict, typed: what the router and the cascade decide, turned
/// into the event's sentiment fields by [`Event::set_sentiment`] only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sentiment {
    /// Final score.
    pub score: f32,
    /// Final polarity.
    pub polarity: Polarity,
    /// Final class probabilities (negative, neutral, positive).
    pub probs: [f32; 3],
    /// Final uncertainty (entropy, nats; a small model with the polarity-risk gate: its
    /// calibrated probability that the polarity is wrong).
    pub uncertainty: f32,
    /// The stage that decided.
    pub stage: Stage,
    /// Why an escalation kept the small model's verdict.
    pub fallback: Option<FallbackReason>,
    /// The small model's opinion.
    pub small: Opinion,
    /// The large model's (last) opinion.
    pub large: Option<Opinion>,
}

impl Sentiment {
    /// The small model's verdict, accepted at stage 1.
    pub fn small(score: f32, polarity: Polarity, probs: [f32; 3], uncertainty: f32) -> Self {
        Self {
            score,
            polarity,
            probs,
            uncertainty,
            stage: Stage::Ubm,
            fallback: None,
            small: Opinion { score, uncertainty },
            large: None,
        }
    }

    /// This (small-model) verdict standing after a failed escalation.
    pub fn fallback(self, reason: FallbackReason) -> Self {
        Self {
            stage: Stage::UbmFallback,
            fallback: Some(reason),
            ..self
        }
    }
}

/// Three-way polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// Score below -b.
    Negative,
    /// |score| <= b.
    Neutral,
    /// Score above b.
    Positive,
}

impl Named for Polarity {
    const ALL: &'static [Self] = &[Self::Negative, Self::Neutral, Self::Positive];
    fn name(self) -> &'static str {
        match self {
            Self::Negative => "negative",
            Self::Neutral => "neutral",
            Self::Positive => "positive",
        }
    }
}
named_serde!(Polarity);

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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

/// Stream id of one channel of a recorded call (`--channels`): `CALL:SPEAKER`.
pub(crate) fn channel_stream(call: &str, speaker: &str) -> String {
    format!("{call}:{speaker}")
}

/// The call of a stream: its id without the `:SPEAKER` suffix of a channel stream.
pub fn call_of<'a>(stream: &'a str, speaker: Option<&str>) -> &'a str {
    speaker
        .and_then(|sp| stream.strip_suffix(sp))
        .and_then(|s| s.strip_suffix(':'))
        .unwrap_or(stream)
}

/// A call summary (a JSON object with a `summary` field): at the end of a stream, and
/// every `sinks.summary_every_s` of stream time on a live one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryEvent {
    /// Stream id.
    pub stream: String,
    /// The summary.
    pub summary: crate::summary::CallSummary,
    /// Wall-clock emission time, ms since the Unix epoch.
    pub emitted_at_ms: u64,
}

/// Anything a sink receives.
// Windows are nearly every output: boxing them would allocate once more per window.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// One window's result.
    Window(Event),
    /// A stream-level notice.
    Status(StatusEvent),
    /// A call summary.
    Summary(Box<SummaryEvent>),
}

impl Output {
    /// The JSON line (without newline).
    pub(crate) fn to_json(&self) -> String {
        let mut w = Vec::with_capacity(512);
        self.write_json(&mut w).expect("events serialise");
        String::from_utf8(w).expect("JSON is UTF-8")
    }
    /// Appends the JSON object (without newline) to `w`.
    pub(crate) fn write_json(&self, w: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Output::Window(e) => serde_json::to_writer(w, e),
            Output::Status(s) => serde_json::to_writer(w, s),
            Output::Summary(s) => serde_json::to_writer(w, s),
        }
    }

    /// Stream id.
    pub fn stream(&self) -> &str {
        match self {
            Output::Window(e) => &e.stream,
            Output::Status(s) => &s.stream,
            Output::Summary(s) => &s.stream,
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
    /// Seconds of talk in the window: VAD frames at or above `segment.threshold`, plus
    /// pauses between them shorter than `segment.talk_pause_s`; what talk time counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voiced_s: Option<f64>,
    /// Who spoke (`--channels`: the channel's name); absent when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// Audio channel of the recording the window came from (`--channels`), from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
    /// Transcript ("" when nothing reliable was said).
    pub text: String,
    /// Language of the transcript.
    pub language: Option<String>,
    /// Mean token probability of the transcript.
    pub asr_confidence: f32,
    /// Video frames seen in the window.
    pub frames: u32,
    /// Why the window has no verdict although sentiment is on: its language has no
    /// small model (no English model is ever applied to another language's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_sentiment: Option<String>,
    /// Final sentiment score.
    pub score: Option<f32>,
    /// Final polarity.
    pub polarity: Option<Polarity>,
    /// Final class probabilities.
    pub probs: Option<Probs>,
    /// Final uncertainty (entropy, nats; a small model with the polarity-risk gate: its
    /// calibrated probability that the polarity is wrong).
    pub uncertainty: Option<f32>,
    /// Stage that decided.
    pub stage: Option<Stage>,
    /// Why an escalation fell back to the small model.
    pub fallback_reason: Option<FallbackReason>,
    /// The small model's opinion.
    pub ubm: Option<Opinion>,
    /// The large model's opinion.
    pub mllm: Option<Opinion>,
    /// Time spent, milliseconds.
    pub latency_ms: Latency,
    /// Wall-clock emission time, milliseconds since the Unix epoch.
    pub emitted_at_ms: u64,
}

impl Event {
    /// The call the window belongs to (see [`call_of`]).
    pub fn call_id(&self) -> &str {
        call_of(&self.stream, self.speaker.as_deref())
    }

    /// A transcribed window without a verdict yet (sentiment fields `null`).
    pub fn transcribed(stream: &str, seq: u64, start: f64, end: f64) -> Self {
        Self {
            stream: stream.into(),
            seq,
            start,
            end,
            voiced_s: None,
            speaker: None,
            channel: None,
            text: String::new(),
            language: None,
            asr_confidence: 0.0,
            frames: 0,
            no_sentiment: None,
            score: None,
            polarity: None,
            probs: None,
            uncertainty: None,
            stage: None,
            fallback_reason: None,
            ubm: None,
            mllm: None,
            latency_ms: Latency::default(),
            emitted_at_ms: 0,
        }
    }

    /// Writes a verdict into the sentiment fields: the one place they are filled.
    /// Callers pass verdicts settled by the one-verdict rule (`routing::verdict::settle`).
    pub(crate) fn set_sentiment(&mut self, s: &Sentiment) {
        let [negative, neutral, positive] = s.probs;
        self.score = Some(s.score);
        self.polarity = Some(s.polarity);
        self.probs = Some(Probs {
            negative,
            neutral,
            positive,
        });
        self.uncertainty = Some(s.uncertainty);
        self.stage = Some(s.stage);
        self.fallback_reason = s.fallback;
        self.ubm = Some(s.small);
        self.mllm = s.large;
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for s in Stage::ALL {
            let v = serde_json::to_value(s).unwrap();
            assert_eq!(v, s.name());
            assert_eq!(serde_json::from_value::<Stage>(v).unwrap(), *s);
        }
        for r in FallbackReason::ALL {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v, r.name());
            assert_eq!(serde_json::from_value::<FallbackReason>(v).unwrap(), *r);
        }
        let e = serde_json::from_value::<Stage>("large".into()).unwrap_err();
        assert!(e.to_string().contains("cross_verified"), "{e}");
    }

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
pub(crate) mod tests_support {
    use super::*;

    /// A window event of `stream` at 1.0-2.5 s.
    pub fn event(stream: &str) -> Event {
        Event {
            stream: stream.into(),
            seq: 0,
            start: 1.0,
            end: 2.5,
            voiced_s: None,
            no_sentiment: None,
            speaker: None,
            channel: None,
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
