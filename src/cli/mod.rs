//! The command line: argument definitions ([`args`]) and one small file per command.
//! Each command builds what it needs through [`crate::plan`] and the library; no other
//! module knows the CLI.

mod annotate;
pub mod args;
mod batch;
mod calibrate;
mod diarize;
mod eval;
mod models;
mod run;
mod train;

use std::path::{Path, PathBuf};

pub use args::{Cli, Command};

use crate::assets::ModelFiles;
use crate::config::Config;
use crate::error::Result;

/// What every command starts from: the configuration and the models folder.
pub(crate) struct Context {
    /// The configuration file's path, if one was given.
    pub(crate) config_path: Option<PathBuf>,
    /// The configuration (file or defaults), validated.
    pub(crate) cfg: Config,
    /// The models folder.
    pub(crate) models: ModelFiles,
}

/// Whisper settings for a dataset's `--text asr` (with its `--language`).
pub(crate) fn data_asr_config(
    d: &args::DataArgs,
    ctx: &Context,
) -> Result<crate::config::AsrConfig> {
    let mut asr = crate::plan::asr_config(&ctx.cfg, &ctx.models);
    if let Some(l) = &d.language {
        if l != "auto" && !crate::config::LANGUAGES.contains(&l.as_str()) {
            return Err(crate::error::Error::Usage(format!(
                "--language {l:?}: use \"auto\" or a Whisper language code such as \"zh\""
            )));
        }
        asr.language = l.clone();
    }
    Ok(asr)
}

/// Opens the dataset at `dir` (scale and transcript source from `d`) and loads one
/// split's features (cached; Whisper with the configured settings for `--text asr`).
pub(crate) fn dataset_split(
    dir: &Path,
    d: &args::DataArgs,
    split: crate::train::dataset::Split,
    encoder: &crate::features::text::EncoderSpec,
    ctx: &Context,
) -> Result<(
    crate::train::dataset::Dataset,
    crate::train::trainer::SplitData,
)> {
    let ds = crate::train::dataset::Dataset::open(dir, d.scale)?;
    let asr = data_asr_config(d, ctx)?;
    let cut = crate::plan::clip_cut(&ctx.cfg, &ctx.models);
    let how = crate::train::dataset::Extraction {
        cut: &cut,
        text: d.text,
        models_dir: &ctx.models.dir,
        asr: Some(&asr),
        encoder,
    };
    let data = crate::train::trainer::load_split(&ds, split, how, d.workers)?;
    Ok((ds, data))
}

/// Opens the outputs, runs the plan's streams until they end or Ctrl-C / SIGTERM, and
/// says whether the run was stopped early.
pub(crate) fn execute(
    plan: crate::plan::Plan,
    specs: &[crate::sinks::SinkSpec],
) -> Result<(crate::app::RunReport, Vec<crate::app::StreamResult>, bool)> {
    use std::sync::Arc;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let sinks = crate::sinks::open_all(specs, &plan.cfg.sinks, &metrics)?;
    let stop = Arc::new(crate::app::shutdown::Trigger::default());
    crate::app::shutdown::stop_on_signals(stop.clone());
    let stopped = stop.watch();
    let (report, results) = crate::app::execute(crate::app::Run {
        cfg: &plan.cfg,
        jobs: plan.jobs,
        shared: &plan.shared,
        sinks,
        metrics,
        stop,
    })?;
    Ok((report, results, stopped.is_set()))
}

/// Runs the parsed command; returns the process exit code (0 success, 1 failure).
pub fn run(cli: Cli) -> Result<i32> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let models = crate::plan::model_files(cli.models_dir.as_deref(), &cfg);
    let ctx = Context {
        config_path: cli.config.clone(),
        cfg,
        models,
    };
    match &cli.command {
        Command::Annotate(a) => annotate::annotate(a, ctx),
        Command::Run(r) => run::run(r, ctx),
        Command::Models(m) => models::models(m, &ctx),
        Command::Train(t) => train::train(t, &ctx),
        Command::Calibrate(c) => calibrate::calibrate(c, &ctx),
        Command::Eval(e) => eval::eval(e, &ctx),
        Command::Diarize(d) => diarize::diarize(d, ctx),
        Command::ValidateConfig => {
            let path = ctx
                .config_path
                .as_deref()
                .unwrap_or(Path::new("(defaults)"));
            println!("{}: ok", path.display());
            Ok(0)
        }
    }
}
