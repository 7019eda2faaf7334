//! Typed, documented, validated configuration. Defaults live here, in one place;
//! `configs/default.toml` documents every key; CLI flags override the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

mod check;

/// Whole configuration of a sentistream process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Media source settings.
    pub source: SourceConfig,
    /// Utterance segmentation settings.
    pub segment: SegmentConfig,
    /// Speech recognition settings.
    pub asr: AsrConfig,
    /// Model file locations.
    pub models: ModelsConfig,
    /// The large model and stages 2/3 of the cascade.
    pub cascade: CascadeConfig,
    /// Outputs of `run`.
    pub sinks: SinksConfig,
    /// Speaker diarization of mono audio.
    pub diarize: DiarizeConfig,
}

/// Speaker diarization: who speaks in each window of a mono recording or live stream.
///
/// Each window's speech is cut into overlapping segments, each gets a CAM++ speaker
/// embedding, and the embeddings are clustered into speakers (spectral clustering; the
/// number of speakers is given, or estimated from the eigenvalue gap). A recording
/// (`annotate`) is read twice: the first pass learns its speakers from the whole call. A
/// live stream re-clusters its recent segments at every window, keeping each speaker's
/// number. A window whose segments change speaker is split at the quietest point of the
/// change. Events carry `speaker: "S1"`, `"S2"`, ...
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiarizeConfig {
    /// Diarize (also turned on by `--speakers`).
    pub enabled: bool,
    /// Number of speakers when known; `0`: estimate (at most `max_speakers`).
    pub speakers: u32,
    /// Most speakers a stream may have when the number is estimated.
    pub max_speakers: u32,
    /// Segment length, seconds (one embedding each).
    pub segment_s: f32,
    /// Step between segments, seconds (finer: better change points, more cost).
    pub hop_s: f32,
    /// The CAM++ model file: a path, or a file name inside the models folder.
    pub model: PathBuf,
}

impl Default for DiarizeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            speakers: 0,
            max_speakers: 8,
            segment_s: 1.5,
            hop_s: 0.5,
            model: PathBuf::from("campplus/campplus_cn_en_common.pt"),
        }
    }
}

impl DiarizeConfig {
    fn check(&self, p: &mut Vec<String>) {
        let d = self;
        need(
            p,
            d.speakers <= 32,
            "diarize.speakers",
            d.speakers,
            "must be 0 (estimate) or 1..=32",
        );
        need(
            p,
            (1..=32).contains(&d.max_speakers),
            "diarize.max_speakers",
            d.max_speakers,
            "must be 1..=32",
        );
        need(
            p,
            (0.5..=5.0).contains(&d.segment_s),
            "diarize.segment_s",
            d.segment_s,
            "must be in [0.5, 5] seconds",
        );
        need(
            p,
            d.hop_s >= 0.1 && d.hop_s <= d.segment_s,
            "diarize.hop_s",
            d.hop_s,
            "must be in [0.1, diarize.segment_s] seconds",
        );
    }

    /// The most speakers a stream can have.
    pub fn speaker_limit(&self) -> usize {
        if self.speakers > 0 {
            self.speakers as usize
        } else {
            self.max_speakers as usize
        }
    }
}

/// Outputs of `run` (which ones is chosen on the command line with `--sink`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Events buffered per websocket client; a slower client loses its oldest (and is told).
    pub ws_client_buffer: usize,
    /// Connections the websocket server serves at once (page, websocket, /metrics,
    /// /health); more are answered 503 and closed.
    pub ws_max_clients: usize,
    /// Stream notices (started, interrupted, resumed, ended) in the JSON outputs.
    pub notices: bool,
    /// Outputs of `run` when no `--sink` is given: `stdout`, `ws://ADDR:PORT`,
    /// `kafka://HOST:PORT/TOPIC`, or a `.jsonl`/`.vtt`/`.srt` file.
    pub outputs: Vec<String>,
    /// The Kafka sink.
    pub kafka: KafkaConfig,
    /// Call summaries (talk time, turns, sentiment per quarter, most negative moments)
    /// in the outputs: at the end of every stream.
    pub summaries: bool,
    /// Also a summary of the stream so far every this many seconds of stream time (live
    /// streams, long files); 0: only at the end.
    pub summary_every_s: f64,
}

/// What the Kafka sink does when its topic does not exist on the broker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TopicPolicy {
    /// Create it (`partitions`, `replication`).
    Create,
    /// Refuse to start, saying so.
    Fail,
}

/// The Kafka sink (`--sink kafka://HOST:PORT/TOPIC`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Topic for stream notices (started, interrupted, ended, ...); empty: the events
    /// topic.
    pub notice_topic: String,
    /// A missing topic is created or is an error at start-up.
    pub missing_topic: TopicPolicy,
    /// Partitions of a topic the sink creates.
    pub partitions: u32,
    /// Replication factor of a topic the sink creates.
    pub replication: u32,
    /// Folder of the on-disk spool (one per process).
    pub spool_dir: std::path::PathBuf,
    /// Largest spool, MiB; past it new events are dropped, counted and announced.
    pub spool_limit_mb: f64,
    /// How long librdkafka retries a message before the sink rebuilds the producer and
    /// resends from the spool, seconds.
    pub message_timeout_s: f64,
    /// At exit, how long to wait for the broker to acknowledge what is left, seconds
    /// (the rest stays in the spool for the next run).
    pub close_timeout_s: f64,
    /// Extra librdkafka properties (e.g. `"security.protocol" = "ssl"`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            notice_topic: String::new(),
            missing_topic: TopicPolicy::Create,
            partitions: 4,
            replication: 1,
            spool_dir: "sentistream-spool".into(),
            spool_limit_mb: 256.0,
            message_timeout_s: 30.0,
            close_timeout_s: 10.0,
            properties: Default::default(),
        }
    }
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            ws_client_buffer: 256,
            ws_max_clients: 64,
            notices: true,
            outputs: vec!["stdout".into()],
            kafka: KafkaConfig::default(),
            summaries: true,
            summary_every_s: 300.0,
        }
    }
}

/// Which large-model backend serves escalations.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// An LLM GGUF (SmolLM2 or Gemma 3) + its trained adapter in libtorch (built in).
    Local,
    /// A TorchScript module following the documented contract (`cascade.torchscript`).
    Torchscript,
    /// An OpenAI-compatible chat endpoint (`cascade.url`).
    Openai,
}

/// The dialect of an OpenAI-compatible endpoint (`cascade.remote_api`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RemoteApi {
    /// Standard chat-completions fields only.
    Openai,
    /// llama.cpp's server: label-word `logit_bias` and `post_sampling_probs`.
    LlamaCpp,
}

/// What happens to an escalation when the large-model queue is full.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueuePolicy {
    /// `block` for files, `drop_newest` for live sources.
    Auto,
    /// Wait for room: nothing escalated is skipped.
    Block,
    /// Emit the window with the small model's verdict (`fallback_reason: "queue_full"`).
    DropNewest,
}

/// The large model and stages 2/3.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    /// Escalate uncertain windows to the large model; false: the small model decides alone.
    pub enabled: bool,
    /// Backend serving escalations.
    pub backend: BackendKind,
    /// GGUF of the local LLM (path or name in the models folder): Llama (SmolLM2) or
    /// Gemma 3.
    pub gguf: PathBuf,
    /// Trained adapter base path (`.safetensors` + `.json`; path or name in the models folder).
    pub adapter: PathBuf,
    /// TorchScript module for `backend = "torchscript"`.
    pub torchscript: Option<PathBuf>,
    /// Chat-completions URL for `backend = "openai"` (http:// or https://).
    pub url: String,
    /// Model name sent to the endpoint.
    pub remote_model: String,
    /// The endpoint's dialect: `openai` sends only standard fields and reads the label
    /// words among the top log-probabilities; `llama_cpp` (llama.cpp's server, e.g. on
    /// the GGUF `models export-llm` writes) biases the three label words equally and reads
    /// their probabilities after sampling, i.e. exactly the restricted softmax the local
    /// model computes.
    pub remote_api: RemoteApi,
    /// Environment variable holding the endpoint's API key (unset: no key sent).
    pub api_key_env: String,
    /// Endpoint timeout per request, milliseconds.
    pub timeout_ms: u64,
    /// Worker threads, each with its own model.
    pub workers: usize,
    /// Escalations waiting for a worker, at most.
    pub queue: usize,
    /// Policy when the queue is full.
    pub when_full: QueuePolicy,
    /// Per-window deadline from escalation, milliseconds; 0: none.
    pub deadline_ms: u64,
    /// Recompute tau1 and tau2 at this lambda from the stored calibrations; unset: use
    /// the thresholds stored with the models.
    pub lambda: Option<f32>,
    /// Fixed tau1 (overrides the UBM's stored or lambda-derived one; 0 escalates every
    /// window with any uncertainty).
    pub tau1: Option<f32>,
    /// Fixed tau2 (overrides the calibrated one; the only one remote/TorchScript backends
    /// have unless the local adapter's calibration is present).
    pub tau2: Option<f32>,
    /// Large models for the windows of small models in other languages (the built-in
    /// large model reads English): one per small model, picked by its languages.
    pub languages: Vec<LanguageCascade>,
}

/// A large model for the windows a non-English small model scores (`[[cascade.languages]]`):
/// its uncertain windows go to this backend, through the same queue policy, deadline and
/// stages as the English cascade. Its tau1 is the small model's own calibrated threshold
/// unless set here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageCascade {
    /// Whisper language codes of the small model this large model backs.
    pub languages: Vec<String>,
    /// Backend serving its escalations (`openai`: a chat endpoint such as llama.cpp's
    /// server on the Qwen GGUF setup installs; `torchscript`; `local` with its own
    /// `gguf` and `adapter`).
    pub backend: BackendKind,
    /// Chat-completions URL for `backend = "openai"`.
    pub url: String,
    /// Model name sent to the endpoint.
    pub remote_model: String,
    /// The endpoint's dialect (see `cascade.remote_api`).
    pub remote_api: RemoteApi,
    /// Environment variable holding the endpoint's API key.
    pub api_key_env: String,
    /// Endpoint timeout per request, milliseconds.
    pub timeout_ms: u64,
    /// GGUF for `backend = "local"`.
    pub gguf: PathBuf,
    /// Adapter for `backend = "local"`.
    pub adapter: PathBuf,
    /// TorchScript module for `backend = "torchscript"`.
    pub torchscript: Option<PathBuf>,
    /// Worker threads (requests in flight for an endpoint).
    pub workers: usize,
    /// Escalations waiting for a worker, at most.
    pub queue: usize,
    /// Fixed tau1 for this small model (else its stored or lambda-derived one).
    pub tau1: Option<f32>,
    /// Fixed tau2 (else the uncalibrated default for remote backends).
    pub tau2: Option<f32>,
}

impl Default for LanguageCascade {
    fn default() -> Self {
        Self {
            languages: Vec::new(),
            backend: BackendKind::Openai,
            url: "http://127.0.0.1:8181/v1/chat/completions".into(),
            remote_model: "default".into(),
            remote_api: RemoteApi::LlamaCpp,
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_ms: 5000,
            gguf: PathBuf::new(),
            adapter: PathBuf::new(),
            torchscript: None,
            workers: 1,
            queue: 8,
            tau1: None,
            tau2: None,
        }
    }
}

impl CascadeConfig {
    /// The configuration of the cascade lane for a small model in `l`'s languages: its
    /// backend and thresholds, with this configuration's queue policy, deadline and lambda.
    pub fn for_language(&self, l: &LanguageCascade) -> CascadeConfig {
        CascadeConfig {
            enabled: self.enabled,
            backend: l.backend,
            gguf: l.gguf.clone(),
            adapter: l.adapter.clone(),
            torchscript: l.torchscript.clone(),
            url: l.url.clone(),
            remote_model: l.remote_model.clone(),
            remote_api: l.remote_api,
            api_key_env: l.api_key_env.clone(),
            timeout_ms: l.timeout_ms,
            workers: l.workers,
            queue: l.queue,
            when_full: self.when_full,
            deadline_ms: self.deadline_ms,
            lambda: self.lambda,
            tau1: l.tau1,
            tau2: l.tau2,
            languages: Vec::new(),
        }
    }

    /// The lane configuration backing a small model that scores `languages`: this one
    /// for English, else its `[[cascade.languages]]` entry's; `None`: no large model
    /// backs it.
    pub fn lane(&self, languages: &[String]) -> Option<CascadeConfig> {
        if languages.iter().any(|l| l == "en") {
            return Some(self.clone());
        }
        self.language_entry(languages).map(|l| self.for_language(l))
    }

    /// The `[[cascade.languages]]` entry for a small model scoring `languages`.
    pub fn language_entry(&self, languages: &[String]) -> Option<&LanguageCascade> {
        self.languages
            .iter()
            .find(|e| e.languages.iter().any(|l| languages.contains(l)))
    }
}

impl Default for CascadeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BackendKind::Local,
            gguf: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            adapter: "mllm-adapter".into(),
            torchscript: None,
            url: "http://127.0.0.1:8080/v1/chat/completions".into(),
            remote_model: "default".into(),
            remote_api: RemoteApi::Openai,
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_ms: 5000,
            workers: 1,
            queue: 8,
            when_full: QueuePolicy::Auto,
            deadline_ms: 0,
            lambda: None,
            tau1: None,
            tau2: None,
            languages: Vec::new(),
        }
    }
}

/// How media is decoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Video frames per second delivered to the analysis (frames are dropped or duplicated).
    pub video_fps: u32,
    /// Width of delivered video frames in pixels; height follows the aspect ratio.
    pub video_width: u32,
    /// The face detector runs on every this many analysed frames of a window (its first
    /// included); the face is tracked in between (1: detect on every frame, ~3x the cost).
    pub face_detect_every: u32,
    /// Bound on decoded-but-unprocessed buffers between GStreamer and the analysis. Files
    /// pause decoding when it is full; live sources drop (and count) buffers instead.
    pub channel_capacity: usize,
    /// Live network sources: reconnect attempts after a failure before giving up (0: never
    /// give up).
    pub reconnect_attempts: u32,
    /// Longest wait between reconnect attempts, seconds (waits double from 0.5 s).
    pub reconnect_max_s: f32,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            video_fps: 5,
            video_width: 320,
            face_detect_every: FACE_DETECT_EVERY,
            channel_capacity: 256,
            reconnect_attempts: 0,
            reconnect_max_s: 10.0,
        }
    }
}

/// Default of `source.face_detect_every`: detection on every 5th analysed frame (once a
/// second at 5 fps), tracking between.
pub const FACE_DETECT_EVERY: u32 = 5;

/// How speech is cut into utterance windows (Silero VAD probabilities every 32 ms).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Speech probability at or above which a frame starts speech.
    pub threshold: f32,
    /// Probability below which a frame counts as silence (hysteresis; <= threshold).
    pub neg_threshold: f32,
    /// Speech shorter than this (seconds) is ignored as a blip.
    pub min_speech_s: f32,
    /// Windows shorter than this (seconds) are widened around their centre.
    pub min_window_s: f32,
    /// Windows longer than this (seconds) are split, preferably at a pause.
    pub max_window_s: f32,
    /// Audio kept before and after the detected speech (seconds).
    pub padding_s: f32,
    /// A pause shorter than this (seconds) does not end a window. On the validation calls
    /// (`scripts/make-valid-calls`, turns 0.3-1.2 s apart) 0.3 scores sentiment better
    /// (0.5 merges a third of the turns into a neighbour's window), but the VAD misses
    /// more speech and diarization is weaker; models/MODELS.md has the numbers.
    pub merge_gap_s: f32,
    /// Talk time (summaries) counts a window's voiced frames; pauses inside it, or between
    /// two windows of one speaker, shorter than this (seconds) count as talk too (breaths,
    /// commas), longer ones do not.
    pub talk_pause_s: f32,
    /// How much new audio (seconds) arrives between two window decisions. The VAD itself
    /// runs once per 32 ms chunk as audio arrives; a decision only reads its output.
    pub step_s: f32,
    /// A live stream processes a window as soon as the padding after its speech has been
    /// heard, while the pause that ends it (`merge_gap_s`) is still being confirmed; when
    /// the pause holds, the event goes out at once, and when speech resumes that work is
    /// thrown away. Only while the stream is caught up with its source (never while a
    /// file is read ahead), and not with diarization (its windows are split later).
    pub process_early: bool,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech_s: 0.25,
            min_window_s: 1.0,
            max_window_s: 15.0,
            padding_s: 0.2,
            merge_gap_s: 0.5,
            talk_pause_s: 0.4,
            step_s: 0.1,
            process_early: true,
        }
    }
}

/// Encoder context sizing for Whisper.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AudioCtx {
    /// Sized to the window (50 positions per second plus a margin): short windows cost less.
    Auto,
    /// Whisper's full 30 s context for every window (slowest, as upstream).
    Full,
}

/// Whisper settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// Whisper ggml model: a path, or a file name inside the models folder.
    pub model: PathBuf,
    /// Whisper model for windows in English (an English-only model is faster at the same
    /// accuracy): used for every window with `language = "en"`, and with "auto" once the
    /// first window with text is detected as English. Empty: `model` for every language.
    pub english_model: Option<PathBuf>,
    /// Spoken language: "auto" to detect per window, or a code such as "en".
    pub language: String,
    /// With language "auto": detect on every window (true), or on the first window with
    /// text and keep that language for the stream (false; detection costs a full 30 s
    /// encoder pass, more than doubling Whisper's time per window).
    pub redetect_language: bool,
    /// With language "auto": the languages detection may choose from (Whisper codes;
    /// empty: any of Whisper's 99). A stream known to be in English or Mandarin says
    /// `["en", "zh"]`, so an unclear window is never taken for Latin or Thai.
    pub languages: Vec<String>,
    /// CPU threads used by Whisper.
    pub threads: u32,
    /// Encoder context sizing.
    pub audio_ctx: AudioCtx,
    /// With `audio_ctx = "auto"`: seconds of encoder context beyond the window (Whisper
    /// was trained on speech followed by silence; too little and it repeats or garbles
    /// short windows). The encoder's cost grows with window + margin.
    pub ctx_margin_s: f32,
    /// Text of a window whose no-speech probability exceeds this is dropped.
    pub no_speech_threshold: f32,
    /// Text whose mean token log-probability is below this (with high no-speech) is dropped.
    pub logprob_threshold: f32,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("ggml-base-q8_0.bin"),
            english_model: Some(PathBuf::from("ggml-tiny.en-q8_0.bin")),
            language: "auto".into(),
            redetect_language: false,
            languages: Vec::new(),
            threads: 2,
            audio_ctx: AudioCtx::Auto,
            ctx_margin_s: 2.0,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
        }
    }
}

/// Where model files are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Models folder; empty means `SENTISTREAM_MODELS`, `./models` or the source tree's.
    pub dir: Option<PathBuf>,
    /// Silero VAD model for whisper.cpp: a path, or a file name inside the models folder.
    pub vad: Option<PathBuf>,
}

/// Whisper language codes accepted by `asr.language` (besides "auto").
pub(crate) const LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
];

impl Config {
    /// Reads a TOML config file and validates it, reporting every problem at once
    /// (unknown keys, wrong types, bad values), each with its line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        check::parse(path, &text)
    }

    /// Checks every key and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        self.source.check(&mut p);
        self.segment.check(&mut p);
        self.asr.check(&mut p);
        self.sinks.check(&mut p);
        self.cascade.check(&mut p);
        self.diarize.check(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }
}

/// Adds "KEY = VALUE: must be ..." to `p` unless `ok`.
fn need(p: &mut Vec<String>, ok: bool, key: &str, value: impl std::fmt::Display, rule: &str) {
    if !ok {
        p.push(format!("{key} = {value}: {rule}"));
    }
}

impl SourceConfig {
    fn check(&self, p: &mut Vec<String>) {
        let s = self;
        need(
            p,
            (1..=60).contains(&s.video_fps),
            "source.video_fps",
            s.video_fps,
            "must be 1..=60",
        );
        need(
            p,
            (1..=100).contains(&s.face_detect_every),
            "source.face_detect_every",
            s.face_detect_every,
            "must be 1..=100",
        );
        need(
            p,
            (16..=3840).contains(&s.video_width) && s.video_width.is_multiple_of(2),
            "source.video_width",
            s.video_width,
            "must be an even number in 16..=3840",
        );
        need(
            p,
            s.channel_capacity > 0,
            "source.channel_capacity",
            s.channel_capacity,
            "must be at least 1",
        );
        need(
            p,
            (0.5..=3600.0).contains(&s.reconnect_max_s),
            "source.reconnect_max_s",
            s.reconnect_max_s,
            "must be in [0.5, 3600] seconds",
        );
    }
}

impl SegmentConfig {
    fn check(&self, p: &mut Vec<String>) {
        let g = self;
        need(
            p,
            (0.0..=1.0).contains(&g.threshold),
            "segment.threshold",
            g.threshold,
            "must be in [0, 1]",
        );
        need(
            p,
            (0.0..=1.0).contains(&g.neg_threshold) && g.neg_threshold <= g.threshold,
            "segment.neg_threshold",
            g.neg_threshold,
            "must be in [0, segment.threshold]",
        );
        for (k, v) in [
            ("min_speech_s", g.min_speech_s),
            ("min_window_s", g.min_window_s),
            ("padding_s", g.padding_s),
            ("merge_gap_s", g.merge_gap_s),
            ("talk_pause_s", g.talk_pause_s),
        ] {
            need(
                p,
                (0.0..=10.0).contains(&v),
                &format!("segment.{k}"),
                v,
                "must be in [0, 10] seconds",
            );
        }
        need(
            p,
            (2.0..=30.0).contains(&g.max_window_s),
            "segment.max_window_s",
            g.max_window_s,
            "must be in [2, 30] seconds (Whisper sees at most 30 s)",
        );
        if g.min_window_s >= g.max_window_s {
            p.push("segment.min_window_s must be below segment.max_window_s".into());
        }
        need(
            p,
            (0.032..=10.0).contains(&g.step_s),
            "segment.step_s",
            g.step_s,
            "must be in [0.032, 10] seconds",
        );
    }
}

impl AsrConfig {
    fn check(&self, p: &mut Vec<String>) {
        let a = self;
        if a.language != "auto" && !LANGUAGES.contains(&a.language.as_str()) {
            p.push(format!(
                "asr.language = {:?}: use \"auto\" or a Whisper language code such as \"en\"",
                a.language
            ));
        }
        for l in a
            .languages
            .iter()
            .filter(|l| !LANGUAGES.contains(&l.as_str()))
        {
            p.push(format!(
                "asr.languages contains {l:?}: use Whisper language codes such as \"en\", \"zh\""
            ));
        }
        need(
            p,
            (1..=64).contains(&a.threads),
            "asr.threads",
            a.threads,
            "must be 1..=64",
        );
        need(
            p,
            (0.0..=30.0).contains(&a.ctx_margin_s),
            "asr.ctx_margin_s",
            a.ctx_margin_s,
            "must be in [0, 30] seconds",
        );
        need(
            p,
            (0.0..=1.0).contains(&a.no_speech_threshold),
            "asr.no_speech_threshold",
            a.no_speech_threshold,
            "must be in [0, 1]",
        );
        need(
            p,
            a.logprob_threshold <= 0.0,
            "asr.logprob_threshold",
            a.logprob_threshold,
            "must be <= 0",
        );
        if a.model.as_os_str().is_empty() {
            p.push("asr.model is empty: name a ggml Whisper file".into());
        }
    }
}

impl SinksConfig {
    fn check(&self, p: &mut Vec<String>) {
        let b = self.ws_client_buffer;
        need(
            p,
            (1..=100_000).contains(&b),
            "sinks.ws_client_buffer",
            b,
            "must be 1..=100000",
        );
        let m = self.ws_max_clients;
        need(
            p,
            (1..=10_000).contains(&m),
            "sinks.ws_max_clients",
            m,
            "must be 1..=10000",
        );
        need(
            p,
            !self.outputs.is_empty(),
            "sinks.outputs",
            "[]",
            "must name at least one output (e.g. \"stdout\")",
        );
        self.kafka.check(p);
        let e = self.summary_every_s;
        need(
            p,
            e == 0.0 || (10.0..=86_400.0).contains(&e),
            "sinks.summary_every_s",
            e,
            "must be 0 (only at the end) or 10..=86400",
        );
    }
}

impl KafkaConfig {
    fn check(&self, p: &mut Vec<String>) {
        let k = "sinks.kafka";
        need(
            p,
            (1..=10_000).contains(&self.partitions),
            &format!("{k}.partitions"),
            self.partitions,
            "must be 1..=10000",
        );
        need(
            p,
            (1..=16).contains(&self.replication),
            &format!("{k}.replication"),
            self.replication,
            "must be 1..=16",
        );
        need(
            p,
            self.spool_limit_mb > 0.0 && self.spool_limit_mb <= 1e6,
            &format!("{k}.spool_limit_mb"),
            self.spool_limit_mb,
            "must be > 0 and <= 1000000",
        );
        need(
            p,
            (0.1..=3600.0).contains(&self.message_timeout_s),
            &format!("{k}.message_timeout_s"),
            self.message_timeout_s,
            "must be 0.1..=3600",
        );
        need(
            p,
            (0.0..=3600.0).contains(&self.close_timeout_s),
            &format!("{k}.close_timeout_s"),
            self.close_timeout_s,
            "must be 0..=3600",
        );
        need(
            p,
            !self.spool_dir.as_os_str().is_empty(),
            &format!("{k}.spool_dir"),
            "\"\"",
            "must name a folder",
        );
    }
}

/// Checks an endpoint URL: `http://` or `https://` with a host (and a numeric port).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| {
        format!("not a URL ({e}); expected e.g. http://127.0.0.1:8080/v1/chat/completions")
    })?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    let port_given = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.ends_with(']'));
    if port_given && uri.port_u16().is_none() {
        return Err("the port is not a number in 1..=65535".into());
    }
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        (Some("http" | "https"), _) => Err("the URL has no host".into()),
        _ => Err("expected an http:// or https:// URL".into()),
    }
}

impl CascadeConfig {
    fn check(&self, p: &mut Vec<String>) {
        let c = self;
        need(
            p,
            (1..=16).contains(&c.workers),
            "cascade.workers",
            c.workers,
            "must be 1..=16",
        );
        need(
            p,
            (1..=4096).contains(&c.queue),
            "cascade.queue",
            c.queue,
            "must be 1..=4096",
        );
        if c.backend == BackendKind::Torchscript && c.torchscript.is_none() {
            p.push(
                "cascade.backend = \"torchscript\" needs cascade.torchscript (a .pt file)".into(),
            );
        }
        if c.backend == BackendKind::Openai
            && let Err(e) = check_url(&c.url)
        {
            p.push(format!("cascade.url = {:?}: {e}", c.url));
        }
        need(
            p,
            c.timeout_ms > 0,
            "cascade.timeout_ms",
            c.timeout_ms,
            "must be at least 1",
        );
        if let Some(l) = c.lambda {
            need(
                p,
                (0.0..=1.0).contains(&l),
                "cascade.lambda",
                l,
                "must be in [0, 1]",
            );
        }
        for (k, v) in [("tau1", c.tau1), ("tau2", c.tau2)] {
            if let Some(t) = v {
                need(
                    p,
                    (0.0..=1.1).contains(&t),
                    &format!("cascade.{k}"),
                    t,
                    "must be in [0, ln 3 = 1.0986]",
                );
            }
        }
        self.check_languages(p);
    }

    /// `[[cascade.languages]]`: each names languages (not English, which the main large
    /// model backs), no language twice, and a usable backend.
    fn check_languages(&self, p: &mut Vec<String>) {
        let mut seen: Vec<&str> = Vec::new();
        for (i, l) in self.languages.iter().enumerate() {
            let at = format!("cascade.languages[{i}]");
            if l.languages.is_empty() {
                p.push(format!("{at}.languages is empty: name the Whisper language codes (e.g. [\"zh\"]) whose small model it backs"));
            }
            for code in &l.languages {
                if code == "en" {
                    p.push(format!("{at}.languages names \"en\": English windows go to the main large model ([cascade]); remove it"));
                } else if seen.contains(&code.as_str()) {
                    p.push(format!(
                        "{at}.languages: {code:?} is already backed by an earlier entry; keep one"
                    ));
                }
                seen.push(code);
            }
            // lambda is shared with [cascade]: checked there, not once per entry.
            let lane = CascadeConfig {
                lambda: None,
                ..self.for_language(l)
            };
            let mut q = Vec::new();
            lane.check(&mut q);
            p.extend(
                q.into_iter()
                    .map(|m| m.replace("cascade.", &format!("{at}."))),
            );
            if l.backend == BackendKind::Local
                && (l.gguf.as_os_str().is_empty() || l.adapter.as_os_str().is_empty())
            {
                p.push(format!("{at}: backend \"local\" needs its own gguf and adapter (the built-in ones read English)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_matches_documented_file() {
        Config::default().validate().unwrap();
        let doc: Config = toml::from_str(include_str!("../../configs/default.toml")).unwrap();
        assert_eq!(
            doc,
            Config::default(),
            "configs/default.toml must show the defaults"
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut c = Config::default();
        c.source.video_fps = 0;
        c.segment.max_window_s = 100.0;
        c.asr.language = "klingon".into();
        let ConfigError::Invalid(p) = c.validate().unwrap_err() else {
            panic!("wrong error kind")
        };
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn detection_languages_must_be_whisper_codes() {
        let mut c = Config::default();
        c.asr.languages = vec!["en".into(), "zh".into()];
        assert!(c.validate().is_ok());
        c.asr.languages.push("xx".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("asr.languages contains \"xx\""), "{e}");
    }

    #[test]
    fn endpoint_urls_are_checked() {
        for ok in [
            "http://127.0.0.1:8080/v1/chat/completions",
            "https://llm.example.com/v1/chat/completions",
            "http://host",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x/",
            "http://:80/",
            "http://host:port/",
            "127.0.0.1:8080",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn language_cascades_are_checked() {
        let ok: Config = toml::from_str(
            "[[cascade.languages]]\nlanguages = [\"zh\"]\nurl = \"http://127.0.0.1:8181/v1/chat/completions\"\n",
        )
        .unwrap();
        ok.validate().unwrap();
        let l = &ok.cascade.languages[0];
        assert_eq!(
            (l.backend, l.remote_api),
            (BackendKind::Openai, RemoteApi::LlamaCpp)
        );
        let lane = ok.cascade.for_language(l);
        assert_eq!(lane.url, l.url);
        assert_eq!(lane.when_full, ok.cascade.when_full);
        assert!(ok.cascade.language_entry(&["zh".into()]).is_some());
        assert!(ok.cascade.language_entry(&["en".into()]).is_none());
        // English: the main large model; Chinese: the entry's; German: none.
        assert_eq!(ok.cascade.lane(&["en".into()]), Some(ok.cascade.clone()));
        assert_eq!(ok.cascade.lane(&["zh".into()]).unwrap().url, l.url);
        assert!(ok.cascade.lane(&["de".into()]).is_none());
        let bad: Config = toml::from_str(
            "[[cascade.languages]]\nlanguages = [\"en\", \"zh\"]\nurl = \"ftp://x\"\nworkers = 0\n\
             [[cascade.languages]]\nlanguages = [\"zh\"]\n\
             [[cascade.languages]]\nlanguages = []\n\
             [[cascade.languages]]\nlanguages = [\"de\"]\nbackend = \"local\"\n",
        )
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        for want in [
            "cascade.languages[0].languages names \"en\"",
            "cascade.languages[0].url",
            "cascade.languages[0].workers",
            "cascade.languages[1].languages: \"zh\" is already backed",
            "cascade.languages[2].languages is empty",
            "cascade.languages[3]: backend \"local\" needs its own gguf and adapter",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<Config>("[asr]\nlanguag = \"en\"\n").unwrap_err();
        assert!(e.to_string().contains("languag"));
    }
}
