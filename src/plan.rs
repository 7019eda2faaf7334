//! The composition root: configuration plus command-line overrides become a run plan
//! (every model path resolved against [`ModelFiles`], the one place for default names;
//! stream jobs with their ids; the shared stages). The CLI only parses arguments and
//! hands them here; nothing below this module knows the CLI.

use std::path::{Path, PathBuf};

use crate::app::Shared;
use crate::app::stream::StreamJob;
use crate::assets::{self, ModelFiles};
use crate::config::{AudioCtx, Config};
use crate::error::{Error, Result};
pub use crate::models::{SmallSpec, pick_model};
use crate::source::Input;

/// What the command line may override.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// Whisper model (asr.model).
    pub(crate) whisper_model: Option<PathBuf>,
    /// Silero VAD model (models.vad).
    pub(crate) vad_model: Option<PathBuf>,
    /// Spoken language (asr.language).
    pub language: Option<String>,
    /// Whisper threads (asr.threads).
    pub threads: Option<u32>,
    /// Analysis frames per second (source.video_fps).
    pub fps: Option<u32>,
    /// Small model base paths, the first for English (default: the installed `ubm` and
    /// `ubm-zh`).
    pub ubm: Vec<PathBuf>,
    /// Transcribe only.
    pub(crate) no_sentiment: bool,
    /// Small model only (cascade.enabled = false).
    pub(crate) no_cascade: bool,
    /// lambda for tau1/tau2 (cascade.lambda).
    pub lambda: Option<f32>,
    /// Whisper's full 30 s context (asr.audio_ctx = full).
    pub(crate) full_audio_ctx: bool,
    /// Diarize with this many speakers, 0: estimate (diarize.enabled, diarize.speakers).
    pub(crate) speakers: Option<u32>,
}

impl Overrides {
    /// Writes the overrides into `cfg` and validates the result.
    pub(crate) fn apply(&self, cfg: &mut Config) -> Result<()> {
        if let Some(l) = &self.language {
            cfg.asr.language = l.clone();
        }
        if let Some(t) = self.threads {
            cfg.asr.threads = t;
        }
        if let Some(f) = self.fps {
            cfg.source.video_fps = f;
        }
        if let Some(w) = &self.whisper_model {
            // The model named on the command line serves every window.
            cfg.asr.model = w.clone();
            cfg.asr.english_model = None;
        }
        if self.no_cascade {
            cfg.cascade.enabled = false;
        }
        if self.lambda.is_some() {
            cfg.cascade.lambda = self.lambda;
        }
        if self.full_audio_ctx {
            cfg.asr.audio_ctx = AudioCtx::Full;
        }
        if let Some(n) = self.speakers {
            cfg.diarize.enabled = true;
            cfg.diarize.speakers = n;
        }
        cfg.validate()?;
        Ok(())
    }
}

/// The models folder: the flag, else `models.dir`, else the default search.
pub(crate) fn model_files(flag: Option<&Path>, cfg: &Config) -> ModelFiles {
    ModelFiles::new(
        flag.map(Path::to_path_buf)
            .or_else(|| cfg.models.dir.clone())
            .unwrap_or_else(assets::default_models_dir),
    )
}

/// The configured Whisper settings with the model resolved against the models folder
/// (training and evaluation transcribe with them).
pub(crate) fn asr_config(cfg: &Config, models: &ModelFiles) -> crate::config::AsrConfig {
    crate::config::AsrConfig {
        model: models.resolve(&cfg.asr.model),
        english_model: english_model(cfg, models),
        ..cfg.asr.clone()
    }
}

/// How `train` and `eval` cut each clip: the configured segmenter and VAD, as `annotate`.
pub(crate) fn clip_cut(cfg: &Config, models: &ModelFiles) -> crate::train::dataset::ClipCut {
    let vad = cfg
        .models
        .vad
        .as_deref()
        .unwrap_or(Path::new(assets::VAD_FILE));
    crate::train::dataset::ClipCut {
        segment: cfg.segment.clone(),
        vad: models.resolve(vad),
    }
}

/// `asr.english_model` resolved against the models folder (`None` when empty).
fn english_model(cfg: &Config, models: &ModelFiles) -> Option<PathBuf> {
    cfg.asr
        .english_model
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| models.resolve(p))
}

/// Default stream id of a source: the file name, the URI's host and path, or the device.
pub(crate) fn default_id(input: &str) -> String {
    let base = input.split('?').next().unwrap_or(input);
    if let Some((_, rest)) = base.split_once("://") {
        return rest.trim_end_matches('/').replace('/', "_");
    }
    Path::new(base)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.to_string())
}

/// Stream ids for `sources`: the given ones in order, defaults for the rest; a repeated
/// id gets `#N` (its position) so events stay apart.
pub(crate) fn stream_ids(sources: &[String], given: &[String]) -> Result<Vec<String>> {
    if given.len() > sources.len() {
        return Err(Error::Usage(format!(
            "{} --id given for {} sources",
            given.len(),
            sources.len()
        )));
    }
    let mut ids: Vec<String> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let mut id = given.get(i).cloned().unwrap_or_else(|| default_id(src));
        if ids.contains(&id) {
            id = format!("{id}#{}", i + 1);
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Whisper threads per stream: Whisper's threads spin while they wait, so more threads
/// than cores (two streams with 2 threads each on 2 cores) made every window 10x slower.
/// Unless set on the command line, the cores are split between the streams.
pub(crate) fn fair_threads(configured: u32, streams: usize, cores: usize, flag_set: bool) -> u32 {
    let fair = (cores as u32 / streams.max(1) as u32).max(1);
    if flag_set || configured <= fair {
        configured
    } else {
        fair
    }
}

/// A run, ready to execute.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The configuration with the overrides applied, validated.
    pub cfg: Config,
    /// The stream jobs.
    pub(crate) jobs: Vec<StreamJob>,
    /// The shared stages.
    pub shared: Shared,
}

/// The sources of a run and how to treat them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// Paths, URIs, devices or launch descriptions.
    pub inputs: Vec<String>,
    /// Stream ids given on the command line.
    pub ids: Vec<String>,
    /// Treat every source as live (reopen when it ends or fails).
    pub live: bool,
    /// Recorded inputs (`annotate`): each is a path or URI read once to its end, never
    /// reopened, never a launch description.
    pub(crate) recorded: bool,
    /// Draw a progress bar (one recorded input).
    pub progress: bool,
    /// Write stream notices to the sinks.
    pub notices: bool,
    /// One speaker name per audio channel (`--channels`): each recorded input becomes
    /// one stream per channel, `ID:NAME`, whose events carry `speaker` and `channel`.
    pub channels: Vec<String>,
}

/// Streams of recorded inputs split by channel: (input, id) per channel.
fn split_channels(
    inputs: Vec<Input>,
    ids: Vec<String>,
    channels: &[String],
) -> Result<(Vec<Input>, Vec<String>)> {
    if channels.is_empty() {
        return Ok((inputs, ids));
    }
    let mut seen = Vec::new();
    for c in channels {
        if c.is_empty() || c.contains(':') || seen.contains(&c) {
            return Err(Error::Usage(format!(
                "--channels {}: give one distinct, non-empty name per channel, without ':' (e.g. agent,customer)",
                channels.join(",")
            )));
        }
        seen.push(c);
    }
    let (mut out_inputs, mut out_ids) = (Vec::new(), Vec::new());
    for (input, id) in inputs.into_iter().zip(ids) {
        for (k, speaker) in channels.iter().enumerate() {
            out_inputs.push(Input::Channel {
                uri: input.name().to_string(),
                index: k as u32,
                count: channels.len() as u32,
                speaker: speaker.clone(),
            });
            out_ids.push(crate::event::channel_stream(&id, speaker));
        }
    }
    Ok((out_inputs, out_ids))
}

impl Plan {
    /// Builds the plan: applies the overrides, parses the inputs, resolves every model.
    pub fn new(mut cfg: Config, models: ModelFiles, o: &Overrides, s: &Sources) -> Result<Self> {
        o.apply(&mut cfg)?;
        if !s.channels.is_empty() && !s.recorded {
            return Err(Error::Usage(
                "--channels is for recorded calls (annotate)".into(),
            ));
        }
        if !s.channels.is_empty() && cfg.diarize.enabled {
            return Err(Error::Usage(format!(
                "--channels {} already names each channel's speaker; diarization (--speakers or diarize.enabled) is for mono audio: use one or the other",
                s.channels.join(",")
            )));
        }
        let speaker_model = cfg
            .diarize
            .enabled
            .then(|| models.resolve(&cfg.diarize.model));
        let inputs = if s.recorded {
            s.inputs.iter().map(|i| Input::Uri(i.clone())).collect()
        } else {
            s.inputs
                .iter()
                .map(|i| Input::parse(i, &cfg.source))
                .collect::<Result<Vec<_>, _>>()?
        };
        let (inputs, ids) = split_channels(inputs, stream_ids(&s.inputs, &s.ids)?, &s.channels)?;
        let live = !s.recorded && (s.live || inputs.iter().any(Input::known_live));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = fair_threads(cfg.asr.threads, inputs.len(), cores, o.threads.is_some());
        if threads != cfg.asr.threads {
            tracing::info!(
                "{} streams on {cores} cores: Whisper uses {threads} thread(s) per stream (asr.threads = {}; --threads overrides)",
                inputs.len(),
                cfg.asr.threads
            );
            cfg.asr.threads = threads;
        }
        let small = Self::small_models(&models, o)?;
        let vad = o
            .vad_model
            .clone()
            .or_else(|| cfg.models.vad.clone())
            .unwrap_or_else(|| PathBuf::from(assets::VAD_FILE));
        let jobs = inputs
            .into_iter()
            .zip(ids)
            .map(|(input, id)| StreamJob {
                reconnect: !s.recorded && (s.live || input.known_live()),
                id,
                input,
                whisper_model: models.resolve(&cfg.asr.model),
                english_model: english_model(&cfg, &models),
                vad_model: models.resolve(&vad),
                models_dir: models.dir.clone(),
                small: small.clone(),
                progress: s.progress,
                speaker_model: speaker_model.clone(),
                learn_speakers: s.recorded,
            })
            .collect();
        let shared = Shared {
            // Which models it backs is decided when it is built (`CascadeConfig::lane`).
            cascade: (cfg.cascade.enabled && !small.is_empty()).then(|| cfg.cascade.clone()),
            small,
            models,
            live,
            notices: s.notices,
        };
        Ok(Self { cfg, jobs, shared })
    }

    /// The small models (none: transcripts only, when sentiment is off or no default
    /// model is installed): those named by `--ubm`, else the installed English `ubm` and
    /// Chinese `ubm-zh`. Each says from its metadata which languages it scores.
    fn small_models(models: &ModelFiles, o: &Overrides) -> Result<Vec<SmallSpec>> {
        if o.no_sentiment {
            return Ok(Vec::new());
        }
        let bases: Vec<PathBuf> = if o.ubm.is_empty() {
            let found: Vec<PathBuf> = [models.ubm(), models.ubm_zh()]
                .into_iter()
                .filter(|b| b.with_extension("json").is_file())
                .collect();
            if found.is_empty() {
                tracing::warn!(
                    "no sentiment model at {}: events carry transcripts only; train one with `sentistream train ubm` or pass --ubm",
                    models.ubm().display()
                );
            }
            found
        } else {
            o.ubm.clone()
        };
        let mut specs: Vec<SmallSpec> = Vec::with_capacity(bases.len());
        for base in bases {
            let meta = crate::models::ubm::Ubm::read_meta(&base)?;
            for l in &meta.languages {
                if let Some(other) = specs.iter().find(|s| s.languages.contains(l)) {
                    return Err(Error::Usage(format!(
                        "the small models {} and {} are both for language {l:?}; pass one of them with --ubm",
                        other.base.display(),
                        base.display()
                    )));
                }
            }
            specs.push(SmallSpec {
                // The large model is English: it backs the model that scores English.
                cascade: meta.languages.iter().any(|l| l == "en"),
                encoder: meta.encoder_spec(&base),
                languages: meta.languages,
                base,
            });
        }
        // The model the large model backs comes first (the cascade serves model 0).
        specs.sort_by_key(|s| !s.cascade);
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_default_to_names_and_stay_unique() {
        let sources: Vec<String> = ["a/call.mp4", "rtsp://cam:8554/live/", "b/call.mp4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            stream_ids(&sources, &[]).unwrap(),
            vec!["call.mp4", "cam:8554_live", "call.mp4#3"]
        );
        assert_eq!(stream_ids(&sources, &["front".into()]).unwrap()[0], "front");
        let e = stream_ids(&sources[..1], &["x".into(), "y".into()]).unwrap_err();
        assert!(e.to_string().contains("2 --id given for 1 sources"), "{e}");
    }

    #[test]
    fn whisper_threads_are_split_between_streams_unless_set() {
        assert_eq!(fair_threads(2, 1, 2, false), 2);
        assert_eq!(fair_threads(2, 2, 2, false), 1);
        assert_eq!(fair_threads(4, 3, 2, false), 1);
        assert_eq!(fair_threads(4, 3, 2, true), 4);
    }

    /// Writes a small model's metadata (and an empty weights file) for `languages`.
    fn small_model_at(base: &Path, languages: &[&str], enc: crate::features::text::EncoderKind) {
        let mut meta = crate::models::ubm::UbmMeta::new(8, 0.1, 0.1, 1.0);
        meta.languages = languages.iter().map(|l| l.to_string()).collect();
        meta.text_encoder = enc;
        std::fs::write(
            base.with_extension("json"),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        std::fs::write(base.with_extension("safetensors"), b"").unwrap();
    }

    #[test]
    fn each_language_gets_its_own_small_model_or_none() {
        use crate::features::text::EncoderKind;
        let dir = tempfile::tempdir().unwrap();
        let models = ModelFiles::new(dir.path());
        small_model_at(&models.ubm(), &["en"], EncoderKind::MiniLm);
        small_model_at(&models.ubm_zh(), &["zh"], EncoderKind::E5Small);
        let specs = Plan::small_models(&models, &Overrides::default()).unwrap();
        assert_eq!(specs.len(), 2);
        assert!(
            specs[0].cascade && !specs[1].cascade,
            "the large model backs English only"
        );
        assert_eq!(specs[1].encoder.kind, EncoderKind::E5Small);
        assert_eq!(specs[1].encoder.tuning, None);
        assert_eq!(pick_model(&specs, Some("en")), Some(0));
        assert_eq!(pick_model(&specs, Some("zh")), Some(1));
        assert_eq!(
            pick_model(&specs, Some("de")),
            None,
            "no English model on German text"
        );
        assert_eq!(pick_model(&specs, None), Some(0));
        assert_eq!(pick_model(&[], None), None);
        // Two models for one language is a usage error that names both.
        let twin = dir.path().join("other");
        small_model_at(&twin, &["zh", "ja"], EncoderKind::E5Small);
        let o = Overrides {
            ubm: vec![models.ubm_zh(), twin.clone()],
            ..Overrides::default()
        };
        let e = Plan::small_models(&models, &o).unwrap_err().to_string();
        assert!(
            e.contains("ubm-zh") && e.contains("other") && e.contains("\"zh\""),
            "{e}"
        );
        // Named models replace the defaults; sentiment off means none.
        let o = Overrides {
            ubm: vec![twin],
            ..Overrides::default()
        };
        assert_eq!(
            Plan::small_models(&models, &o).unwrap()[0].languages,
            ["zh", "ja"]
        );
        let off = Overrides {
            no_sentiment: true,
            ..Overrides::default()
        };
        assert!(Plan::small_models(&models, &off).unwrap().is_empty());
    }

    #[test]
    fn every_model_path_is_resolved_in_the_models_folder() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelFiles::new(dir.path());
        let o = Overrides {
            no_sentiment: true,
            fps: Some(7),
            ..Overrides::default()
        };
        let s = Sources {
            inputs: vec!["in.mp4".into()],
            ..Sources::default()
        };
        let plan = Plan::new(Config::default(), models, &o, &s).unwrap();
        let job = &plan.jobs[0];
        assert_eq!(job.whisper_model, dir.path().join("ggml-base-q8_0.bin"));
        assert_eq!(
            job.english_model,
            Some(dir.path().join("ggml-tiny.en-q8_0.bin"))
        );
        assert_eq!(job.vad_model, dir.path().join(assets::VAD_FILE));
        assert_eq!(plan.cfg.source.video_fps, 7);
        assert!(plan.shared.small.is_empty() && plan.shared.cascade.is_none());
        // A model named on the command line serves every window.
        let named = Overrides {
            whisper_model: Some("ggml-base.bin".into()),
            ..Overrides::default()
        };
        let plan = Plan::new(Config::default(), ModelFiles::new(dir.path()), &named, &s).unwrap();
        assert_eq!(plan.jobs[0].whisper_model, dir.path().join("ggml-base.bin"));
        assert_eq!(plan.jobs[0].english_model, None);
        let bad = Overrides {
            fps: Some(0),
            ..Overrides::default()
        };
        let e = Plan::new(Config::default(), ModelFiles::new(dir.path()), &bad, &s).unwrap_err();
        assert!(e.to_string().contains("source.video_fps = 0"), "{e}");
    }
}
