//! `train ubm` and `train mllm`.

use super::Context;
use super::args::{TrainCommand, TrainLabelArgs, TrainMllmArgs, TrainTextArgs, TrainUbmArgs};
use crate::error::{Error, Result};
use crate::plan::clip_cut;
use crate::train::dataset::TextSource;
use crate::train::mllm::{self as mllm_train, MllmTrainOptions};
use crate::train::trainer::{self, TrainOptions};

/// Runs a `train` subcommand.
pub(super) fn train(t: &TrainCommand, ctx: &Context) -> Result<i32> {
    match t {
        TrainCommand::Ubm(u) => ubm(u, ctx),
        TrainCommand::Mllm(m) => mllm(m, ctx),
        TrainCommand::Text(t) => text(t, ctx),
        TrainCommand::Label(l) => label(l, ctx),
    }
}

fn text(t: &TrainTextArgs, ctx: &Context) -> Result<i32> {
    tch::set_num_threads(t.threads.max(1));
    let o = crate::train::text::TextTrainOptions {
        data: t.data.clone(),
        scale: t.scale,
        encoder: t.text_encoder,
        models_dir: ctx.models.dir.clone(),
        extra: t.extra.clone(),
        extra_weight: t.extra_weight.clone(),
        extra_tag: t.extra_tag.clone(),
        report: t.report.clone(),
        layers: t.layers,
        rank: t.rank,
        epochs: t.epochs,
        batch: t.batch,
        lr: t.lr,
        seed: t.seed,
        sign_weight: t.sign_weight,
        out: t.out.clone(),
    };
    let r = crate::train::text::train_text(&o)?;
    println!(
        "tuned the top {} layers of {} on {} sentences (valid {}); best epoch {}; frozen layers {:.0} s, training {:.0} s; saved {}",
        t.layers,
        t.text_encoder.name(),
        r.sizes.0,
        r.sizes.1,
        r.best_epoch,
        r.seconds.0,
        r.seconds.1,
        t.out.display()
    );
    let mut rows = vec![("score head (valid)".to_string(), r.valid)];
    let mut neutral = Vec::new();
    for rep in r.reports {
        let (kept, n) = rep.neutral_kept;
        rows.push((format!("score head ({})", rep.file.display()), rep.metrics));
        neutral.push(format!(
            "{}: {kept} of {n} neutral sentences at or above 0",
            rep.file.display()
        ));
    }
    println!("{}", trainer::format_table(&rows));
    for line in neutral {
        println!("{line}");
    }
    Ok(0)
}

fn label(l: &TrainLabelArgs, ctx: &Context) -> Result<i32> {
    tch::set_num_threads(l.threads.max(1));
    let cascade = &ctx.cfg.cascade;
    let o = crate::train::distil::LabelOptions {
        input: l.input.clone(),
        out: l.out.clone(),
        gguf: l
            .gguf
            .clone()
            .unwrap_or_else(|| ctx.models.resolve(&cascade.gguf)),
        adapter: l
            .adapter
            .clone()
            .unwrap_or_else(|| ctx.models.resolve(&cascade.adapter)),
        domain: l.domain.clone(),
        zero_band: l.zero_band,
        batch: l.batch,
    };
    let r = crate::train::distil::label(&o)?;
    println!(
        "labelled {} sentences ({} lines skipped: blank, header or repeated) in {:.0} s: {} negative, {} neutral, {} positive; wrote {}",
        r.written,
        r.skipped,
        r.seconds,
        r.by_class[0],
        r.by_class[1],
        r.by_class[2],
        l.out.display()
    );
    Ok(0)
}

fn ubm(u: &TrainUbmArgs, ctx: &Context) -> Result<i32> {
    if u.text_encoder != crate::features::text::EncoderKind::MiniLm && u.data.ubm.is_none() {
        return Err(Error::Usage(format!(
            "--text-encoder {}: name the new model with --ubm (e.g. --ubm models/ubm-zh) so the English model at models/ubm is not overwritten, and its languages with --languages",
            u.text_encoder.name()
        )));
    }
    if let Some(bad) = u
        .languages
        .iter()
        .find(|l| !crate::config::LANGUAGES.contains(&l.as_str()))
    {
        return Err(Error::Usage(format!(
            "--languages {bad:?}: not a Whisper language code; use codes such as en or zh"
        )));
    }
    let out = u.data.ubm_base(&ctx.models);
    let tuning = match &u.text_tuning {
        Some(p) => Some(tuning_name(p, &out)?),
        None => None,
    };
    let opts = TrainOptions {
        tuning,
        data: u.data.data.clone(),
        scale: u.data.scale,
        text: u.data.text,
        models_dir: ctx.models.dir.clone(),
        encoder: u.text_encoder,
        languages: u.languages.clone(),
        asr: Some(super::data_asr_config(&u.data, ctx)?),
        cut: clip_cut(&ctx.cfg, &ctx.models),
        out,
        epochs: u.epochs,
        batch: u.batch,
        lr: u.lr,
        alpha: u.alpha,
        sign_weight: u.sign_weight,
        hidden: u.hidden,
        band: u.band,
        seed: u.seed,
        workers: u.data.workers,
        lambda: u.lambda,
        modality_dropout: u.modality_dropout,
        extra: u.extra.clone(),
        extra_weight: u.extra_weight.clone(),
        polarity_risk: u.gate == super::args::GateArg::PolarityRisk,
        speaker_pitch: u.speaker_pitch,
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

/// The file name of a tuning that must lie beside the model written to `out` (so the
/// model and its tuning move together).
fn tuning_name(p: &std::path::Path, out: &std::path::Path) -> Result<String> {
    let dir = |x: &std::path::Path| {
        let d = x.parent().unwrap_or(std::path::Path::new("."));
        std::fs::canonicalize(if d.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            d
        })
        .ok()
    };
    let name = p.file_name().and_then(|n| n.to_str());
    match (name, p.is_file(), dir(p) == dir(out) && dir(out).is_some()) {
        (Some(n), true, true) => Ok(n.to_string()),
        (_, false, _) => Err(Error::Usage(format!(
            "--text-tuning {}: no such file; write it with `sentistream train text --out`",
            p.display()
        ))),
        _ => Err(Error::Usage(format!(
            "--text-tuning {}: put it in the folder of the model ({}), so the two move together",
            p.display(),
            out.display()
        ))),
    }
}

fn mllm(t: &TrainMllmArgs, ctx: &Context) -> Result<i32> {
    tch::set_num_threads(t.threads.max(1));
    if t.data.text != TextSource::Given {
        return Err(Error::Usage(
            "train mllm reads the given transcripts; drop --text asr".into(),
        ));
    }
    let cascade = &ctx.cfg.cascade;
    let opts = MllmTrainOptions {
        data: t.data.data.clone(),
        scale: t.data.scale,
        models_dir: ctx.models.dir.clone(),
        cut: clip_cut(&ctx.cfg, &ctx.models),
        gguf: t
            .gguf
            .clone()
            .unwrap_or_else(|| ctx.models.resolve(&cascade.gguf)),
        out: t
            .out
            .clone()
            .unwrap_or_else(|| ctx.models.resolve(&cascade.adapter)),
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
        extra: t.extra.clone(),
        extra_weight: t.extra_weight.clone(),
        opinions: t.opinions.clone(),
        opinions_weight: t.opinions_weight.max(1),
    };
    let (model, r) = mllm_train::train(&opts)?;
    println!(
        "trained on {} examples in {:.0} s; validation label-word accuracy {:.4}",
        r.examples, r.train_s, r.valid_class_acc
    );
    match r.real_prompts {
        Some((prompts, covered)) => println!(
            "stage-3 prompts: {prompts} from real earlier opinions (of {covered} training clips with opinions), x{} per epoch",
            opts.opinions_weight
        ),
        None => println!(
            "stage-3 prompts: made-up earlier opinions on a share {} of the clips",
            opts.cross_share
        ),
    }
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
