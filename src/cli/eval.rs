//! `eval`: MMSA metrics of the small model on a split, modality ablations, uncertainty,
//! speed; optionally the cascade comparison and the lambda sweep.

use std::path::Path;

use super::Context;
use super::args::EvalArgs;
use crate::cascade::backend::{Backend, LocalBackend};
use crate::error::{DatasetError, Error, ModelError, Result};
use crate::models::mllm::Mllm;
use crate::models::ubm::{Modalities, Prediction, Ubm};
use crate::train::dataset::{Scale, Split, TextSource};
use crate::train::mllm as mllm_train;
use crate::train::trainer::{self, SplitData};

/// The modality ablations, each a row of the table.
const VARIANTS: [(&str, [bool; 3]); 7] = [
    ("UBM T+A+V", [true, true, true]),
    ("without text", [false, true, true]),
    ("without audio", [true, false, true]),
    ("without visual", [true, true, false]),
    ("text only", [true, false, false]),
    ("audio only", [false, true, false]),
    ("visual only", [false, false, true]),
];

/// Runs `eval`.
pub(super) fn eval(e: &EvalArgs, ctx: &Context) -> Result<i32> {
    let base = e.data.ubm_base(&ctx.models);
    let model = Ubm::load(&base)?;
    let enc = model.meta.encoder_spec(&base);
    let (ds, mut data) = super::dataset_split(&e.data.data, &e.data, e.split, &enc, ctx)?;
    let held_out = held_out_sentences(e, ctx, &enc, &mut data)?;
    if data.feats.is_empty() {
        return Err(DatasetError::Empty {
            root: e.data.data.clone(),
            reason: format!("no clips in the {:?} split", e.split),
        }
        .into());
    }
    println!(
        "{:?} split of {} ({} clips{}{}):",
        e.split,
        e.data.data.display(),
        data.feats.len() - held_out,
        if held_out > 0 {
            format!(" + {held_out} held-out sentences, text only")
        } else {
            String::new()
        },
        if ds.missing > 0 {
            format!(", {} rows without media skipped", ds.missing)
        } else {
            String::new()
        }
    );
    let preds = ablations(&model, &data, e.data.scale);
    if let Some(path) = &e.predictions {
        write_predictions(path, &data, &preds, model.meta.band)?;
        println!("predictions of {} clips: {}", preds.len(), path.display());
    }
    speed(&model, &data);
    if e.compare {
        compare(e, ctx, &model, &data)?;
    }
    if e.lambda_sweep {
        sweep(&model, &data, &preds)?;
    }
    if e.estimators {
        estimators(e, ctx, &model, &data, &preds)?;
    }
    if let Some(url) = &e.remote {
        remote(e, ctx, url, &data)?;
    }
    Ok(0)
}

/// `--extra`: appends the held-out fifth of the sentence files to the valid split (text
/// only, as `train` holds them out) and returns how many.
fn held_out_sentences(
    e: &EvalArgs,
    ctx: &Context,
    enc: &crate::features::text::EncoderSpec,
    data: &mut SplitData,
) -> Result<usize> {
    if e.extra.is_empty() {
        return Ok(0);
    }
    if e.split != Split::Valid {
        return Err(Error::Usage(format!(
            "--extra adds the held-out sentences of the valid split; it cannot be used with \
             --split {:?}: add --split valid or drop --extra",
            e.split
        )));
    }
    let (_, valid) = crate::train::text::extra_sentences(&e.extra, &[1], e.data.scale.limit())?;
    trainer::append_sentences(Some(&enc.open(&ctx.models.dir)?), &valid, data)?;
    Ok(valid.len())
}

/// The local large model: the configured GGUF with `--adapter` or cascade.adapter.
fn large_model(e: &EvalArgs, ctx: &Context) -> Result<Mllm> {
    let cascade = &ctx.cfg.cascade;
    let adapter = e
        .adapter
        .clone()
        .unwrap_or_else(|| ctx.models.resolve(&cascade.adapter));
    Ok(Mllm::load(&ctx.models.resolve(&cascade.gguf), &adapter)?)
}

/// Prints the local large model (multimodal, value head) beside a remote one on the
/// same windows: metrics, agreement of the polarity, time per window.
fn remote(e: &EvalArgs, ctx: &Context, url: &str, data: &SplitData) -> Result<()> {
    use crate::cascade::backend::OpenAiBackend;
    let cascade = &ctx.cfg.cascade;
    let llm = large_model(e, ctx)?;
    let meta = &llm.adapter.meta;
    let (band, limit) = (meta.band, meta.score_limit);
    let mut server = OpenAiBackend::new(
        url,
        &cascade.remote_model,
        cascade.remote_api,
        std::env::var(&cascade.api_key_env).ok(),
        std::time::Duration::from_millis(cascade.timeout_ms),
        band,
        limit,
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    let t = std::time::Instant::now();
    let local = mllm_train::judge_split(&llm, data, 1)?;
    let local_ms = t.elapsed().as_secs_f64() * 1e3 / data.feats.len() as f64;
    let t = std::time::Instant::now();
    let mut far = Vec::with_capacity(local.len());
    for (text, f) in data.texts.iter().zip(&data.feats) {
        far.push(
            server
                .judge(text, f, None)
                .map_err(|e| Error::Usage(e.to_string()))?,
        );
    }
    let far_ms = t.elapsed().as_secs_f64() * 1e3 / data.feats.len() as f64;
    let words = |a: &crate::models::mllm::Answer| limit * (a.probs[2] - a.probs[0]);
    let class = |v: f32| crate::routing::uncertainty::class_index(v, band);
    let agree = |xs: &[f32], ys: &[f32]| {
        xs.iter()
            .zip(ys)
            .filter(|(x, y)| class(**x) == class(**y))
            .count() as f64
            / xs.len() as f64
    };
    let local_score: Vec<f32> = local.iter().map(|a| a.score).collect();
    let local_words: Vec<f32> = local.iter().map(words).collect();
    let remote_score: Vec<f32> = far.iter().map(|a| a.score).collect();
    println!(
        "\nlarge model, local vs remote ({url}, {:?}) on the same {} windows:",
        cascade.remote_api,
        data.feats.len()
    );
    println!(
        "| large model | Has0-Acc2 | Has0-F1 | Acc3 | MAE | Corr | polarity agrees with local | ms per window |\n|---|---|---|---|---|---|---|---|"
    );
    for (name, scores, ms) in [
        (
            "local: text + voice + face, value-head score",
            &local_score,
            local_ms,
        ),
        ("local: label-word score", &local_words, local_ms),
        ("remote: text only, label-word score", &remote_score, far_ms),
    ] {
        let m = crate::train::metrics::compute(scores, &data.labels);
        println!(
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {ms:.0} |",
            m.has0_acc2,
            m.has0_f1,
            m.acc3,
            m.mae,
            m.corr,
            agree(scores, &local_score)
        );
    }
    Ok(())
}

/// Prints the metrics table of every modality ablation and the uncertainty figures;
/// returns the predictions with all modalities.
fn ablations(model: &Ubm, data: &SplitData, scale: Scale) -> Vec<Prediction> {
    let mut rows = Vec::new();
    let mut sims = Vec::new();
    let mut all = Vec::new();
    for (name, [text, audio, visual]) in VARIANTS {
        let use_ = Modalities {
            text,
            audio,
            visual,
        };
        let (metrics, preds) = trainer::evaluate(model, data, use_);
        if scale == Scale::Sims {
            let scores: Vec<f32> = preds.iter().map(|p| p.score).collect();
            sims.push((
                name,
                crate::train::metrics::compute_sims(&scores, &data.labels),
            ));
        }
        if rows.is_empty() {
            all = preds;
        }
        rows.push((name.to_string(), metrics));
    }
    println!("{}", trainer::format_table(&rows));
    if !sims.is_empty() {
        println!(
            "CH-SIMS metrics (MMSA): labels and scores clipped to [-1, 1]\n| model | Acc2 | Acc3 | Acc5 | F1 | MAE | Corr |\n|---|---|---|---|---|---|---|"
        );
        for (name, m) in sims {
            println!(
                "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
                m.acc2, m.acc3, m.acc5, m.f1, m.mae, m.corr
            );
        }
    }
    verdict_rule(&all, data, model.meta.band);
    let gate = model.meta.gate;
    let u = trainer::uncertainty_report(&all, &data.labels, model.meta.band, gate);
    println!(
        "uncertainty ({}): correct mean {:.4}, wrong mean {:.4}, AUROC for errors {}, corr with |error| {:.4}",
        gate.name(),
        u.mean_correct,
        u.mean_wrong,
        u.auroc.map(|a| format!("{a:.4}")).unwrap_or("n/a".into()),
        u.corr_abs_error
    );
    all
}

/// Prints how often the two heads disagree on the polarity, and the metrics of the
/// scores events carry (the one-verdict rule, `routing::verdict`) beside the raw ones.
fn verdict_rule(preds: &[Prediction], data: &SplitData, band: f32) {
    use crate::routing::uncertainty::{argmax, class_index};
    let n = preds.len().max(1) as f64;
    let disagree = preds
        .iter()
        .filter(|p| argmax(&p.probs) != class_index(p.score, band))
        .count();
    let truth: Vec<usize> = data.labels.iter().map(|&y| class_index(y, band)).collect();
    let acc = |f: &dyn Fn(&Prediction) -> usize| {
        preds
            .iter()
            .zip(&truth)
            .filter(|(p, t)| f(p) == **t)
            .count() as f64
            / n
    };
    let coherent: Vec<f32> = preds
        .iter()
        .map(|p| crate::routing::verdict::coherent(p.score, &p.probs, band).0)
        .collect();
    let m = crate::train::metrics::compute(&coherent, &data.labels);
    println!(
        "one verdict (band {band}): the heads disagree on {:.1}% of windows; 3-class accuracy at the band: score {:.4}, class head {:.4}; event scores (class head decides, score moved into its range): Has0-Acc2 {:.4}, Acc3 {:.4}, MAE {:.4}, Corr {:.4}",
        disagree as f64 / n * 100.0,
        acc(&|p| class_index(p.score, band)),
        acc(&|p| argmax(&p.probs)),
        m.has0_acc2,
        m.acc3,
        m.mae,
        m.corr
    );
}

/// One clip's prediction as `eval --predictions` writes it.
#[derive(serde::Serialize)]
struct ClipPrediction<'a> {
    clip: &'a str,
    label: f32,
    /// As an event carries it (`routing::verdict`).
    score: f32,
    polarity: crate::event::Polarity,
    /// The regression head's own score.
    raw_score: f32,
    p_negative: f32,
    p_neutral: f32,
    p_positive: f32,
    uncertainty: f32,
    text: &'a str,
}

/// Writes one prediction per clip (JSON lines, or CSV for a `.csv` name), so the metrics
/// can be recomputed with other tools.
fn write_predictions(path: &Path, data: &SplitData, preds: &[Prediction], band: f32) -> Result<()> {
    let rows = data
        .ids
        .iter()
        .zip(&data.labels)
        .zip(&data.texts)
        .zip(preds);
    let rows = rows.map(|(((clip, &label), text), p)| {
        let (score, polarity) = crate::routing::verdict::coherent(p.score, &p.probs, band);
        ClipPrediction {
            clip,
            label,
            score,
            polarity,
            raw_score: p.score,
            p_negative: p.probs[0],
            p_neutral: p.probs[1],
            p_positive: p.probs[2],
            uncertainty: p.uncertainty,
            text,
        }
    });
    let text = if path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("csv"))
    {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in rows {
            w.serialize(r).map_err(|e| Error::Usage(e.to_string()))?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Usage(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| Error::Usage(e.to_string()))?
    } else {
        let lines: Vec<String> = rows
            .map(|r| serde_json::to_string(&r).expect("a prediction serialises"))
            .collect();
        lines.join("\n") + "\n"
    };
    crate::sinks::files::write_whole(path, &text).map_err(|e| {
        Error::Usage(format!(
            "{e}; --predictions needs a writable path (its folder must exist)"
        ))
    })
}

/// Writes each comparison row's score per window (JSON lines).
fn write_compare_predictions(
    path: &Path,
    data: &SplitData,
    rows: &[mllm_train::CompareRow],
) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        for ((clip, label), score) in data.ids.iter().zip(&data.labels).zip(&r.scores) {
            let line =
                serde_json::json!({"clip": clip, "label": label, "system": r.name, "score": score});
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    crate::sinks::files::write_whole(path, &text).map_err(|e| {
        Error::Usage(format!(
            "{e}; --compare-predictions needs a writable path (its folder must exist)"
        ))
    })
}

/// Writes what `--compare-predictions` and `--opinions` ask for.
fn write_compare_files(
    e: &EvalArgs,
    data: &SplitData,
    cmp: &mllm_train::Comparison,
    band: f32,
) -> Result<()> {
    if let Some(path) = &e.compare_predictions {
        write_compare_predictions(path, data, &cmp.rows)?;
        println!(
            "per-window scores of {} rows: {}",
            cmp.rows.len(),
            path.display()
        );
    }
    if let Some(path) = &e.opinions {
        let text = crate::train::opinions::to_jsonl(&cmp.opinions);
        crate::sinks::files::write_whole(path, &text).map_err(|e| {
            Error::Usage(format!(
                "{e}; --opinions needs a writable path (its folder must exist)"
            ))
        })?;
        let worth = cmp
            .opinions
            .iter()
            .filter(|o| o.worth_verifying(band))
            .count();
        println!(
            "earlier opinions of {} windows ({worth} disagreeing with a model unsure): {}",
            cmp.opinions.len(),
            path.display()
        );
    }
    Ok(())
}

/// Prints the small model's forward time per window, batched and at batch 1 (as live).
fn speed(model: &Ubm, data: &SplitData) {
    let started = std::time::Instant::now();
    trainer::evaluate(model, data, Modalities::ALL);
    let batched_ms = started.elapsed().as_secs_f64() * 1e3 / data.feats.len() as f64;
    let n1 = data.feats.len().min(100);
    let t1 = std::time::Instant::now();
    for f in &data.feats[..n1] {
        model.predict(&[f], Modalities::ALL);
    }
    let single_ms = t1.elapsed().as_secs_f64() * 1e3 / n1 as f64;
    println!(
        "UBM forward, features cached: {single_ms:.2} ms per window at batch 1, {batched_ms:.2} ms batched"
    );
}

/// Prints the cascade comparison (small only, large only, U-ACS at several lambdas).
fn compare(e: &EvalArgs, ctx: &Context, model: &Ubm, data: &SplitData) -> Result<()> {
    if e.data.text != TextSource::Given {
        return Err(Error::Usage(
            "--compare uses the given transcripts; drop --text asr".into(),
        ));
    }
    // The English model is backed by the configured large model (cascade.backend); a
    // model for other languages by its [[cascade.languages]] entry (on the model's own
    // score scale here).
    let cascade = &ctx.cfg.cascade;
    let english = model.meta.languages.iter().any(|l| l == "en");
    let lane = cascade.lane(&model.meta.languages).ok_or_else(|| {
        Error::Usage(format!(
            "--compare: no large model for a model in {:?}; add a [[cascade.languages]] entry for it to the configuration (README, Languages)",
            model.meta.languages
        ))
    })?;
    let (mut backend, calibration, name): (Box<dyn Backend>, _, String) =
        if lane.backend == crate::config::BackendKind::Local && english {
            let llm = large_model(e, ctx)?;
            let c = llm.adapter.meta.calibration;
            (Box::new(LocalBackend::new(llm)), c, "local".to_string())
        } else {
            // A remote or TorchScript model (e.g. served by llama.cpp).
            let (band, limit) = (model.meta.band, model.meta.score_limit);
            let mut b = crate::cascade::load_backends(&lane, &ctx.models, band, limit)?;
            let desc = format!("{:?} at {}", lane.backend, lane.url);
            let mut b = b.remove(0);
            b.prepare(); // loaded now, so the timed answers do not include it
            (b, None, desc)
        };
    let tau2 = lane.tau2;
    // The UBM's per-window cost includes encoding the transcript.
    let enc = model
        .meta
        .encoder_spec(&e.data.ubm_base(&ctx.models))
        .open(&ctx.models.dir)?;
    let n_enc = data.texts.len().min(50);
    let t = std::time::Instant::now();
    for text in &data.texts[..n_enc] {
        enc.encode_one(text)?;
    }
    let text_s = t.elapsed().as_secs_f64() / n_enc.max(1) as f64;
    let large = mllm_train::CompareLarge {
        backend: backend.as_mut(),
        calibration,
        tau2,
    };
    let cmp = mllm_train::compare(model, large, data, text_s, &[0.1, 0.3, 0.5, 0.7, 0.9])?;
    println!(
        "\ncascade comparison ({} windows; large model {name}; runtime = model compute: text encoding {:.1} ms + UBM, and large-model passes at batch 1; shared feature extraction excluded):",
        data.feats.len(),
        text_s * 1e3
    );
    println!("{}", mllm_train::format_compare(&cmp.rows));
    write_compare_files(e, data, &cmp, model.meta.band)?;
    if let Some(c) = cmp.large_calibration {
        // A remote model has no stored calibration: this is how to give it one (fit on a
        // validation split, never on test).
        println!(
            "large model uncertainty on these windows: correct {:.4} +- {:.4} (n {}), wrong {:.4} +- {:.4} (n {}); tau2 at lambda 0.3 / 0.5 / 0.7: {:.4} / {:.4} / {:.4} (fitted on the {:?} split; set `tau2` of its [cascade] or [[cascade.languages]] entry from a validation split)",
            c.correct.mu,
            c.correct.sigma,
            c.correct.n,
            c.wrong.mu,
            c.wrong.sigma,
            c.wrong.n,
            c.tau(0.3),
            c.tau(0.5),
            c.tau(0.7),
            e.split
        );
    }
    Ok(())
}

/// Prints the uncertainty estimators' comparison, with the temperature fitted on a
/// validation split.
fn estimators(
    e: &EvalArgs,
    ctx: &Context,
    model: &Ubm,
    data: &SplitData,
    preds: &[Prediction],
) -> Result<()> {
    use crate::train::estimators as est;
    let dir = e.temperature_data.as_ref().unwrap_or(&e.data.data);
    let enc = model.meta.encoder_spec(&e.data.ubm_base(&ctx.models));
    let (_, valid) = super::dataset_split(dir, &e.data, Split::Valid, &enc, ctx)?;
    if valid.feats.is_empty() {
        return Err(DatasetError::Empty {
            root: dir.clone(),
            reason: "no clips in the valid split to fit the temperature on; pass --temperature-data with the training corpus".into(),
        }
        .into());
    }
    let band = model.meta.band;
    let vp = trainer::predict_split(model, &valid, Modalities::ALL);
    let t = est::fit_temperature(&vp, &valid.labels, band);
    let raw: Vec<[f32; 3]> = preds.iter().map(|p| p.probs).collect();
    let cal: Vec<[f32; 3]> = raw.iter().map(|p| est::at_temperature(p, t)).collect();
    println!(
        "\nuncertainty estimators (temperature {t:.2} fitted on the valid split of {}, {} clips); ECE of the class head: raw {:.4}, after temperature {:.4}",
        dir.display(),
        valid.feats.len(),
        est::ece(&raw, &data.labels, band),
        est::ece(&cal, &data.labels, band)
    );
    println!(
        "| estimator | AUROC for emitted-polarity errors | accepted Has0-Acc2 at 10% / 20% / 30% / 50% escalated |\n|---|---|---|"
    );
    for r in est::compare(preds, &data.labels, band, t) {
        let a = r.accepted.map(|x| format!("{x:.3}")).join(" / ");
        let auroc = r.auroc.map_or("n/a".into(), |x| format!("{x:.4}"));
        println!("| {} | {auroc} | {a} |", r.name);
    }
    Ok(())
}

/// Prints escalation rate against the accuracy of accepted windows for lambda 0.1..0.9.
fn sweep(model: &Ubm, data: &SplitData, preds: &[Prediction]) -> Result<()> {
    let cal = model.meta.calibration.ok_or_else(|| ModelError::Runtime {
        name: "ubm".into(),
        reason: "the model is not calibrated; run `sentistream calibrate`".into(),
    })?;
    println!(
        "\n| lambda | tau1 | escalation rate | accepted Has0-Acc2 | accepted Acc3 |\n|---|---|---|---|---|"
    );
    for r in trainer::lambda_sweep(&cal, preds, &data.labels, model.meta.band) {
        println!(
            "| {:.1} | {:.4} | {:.3} | {:.4} | {:.4} |",
            r.lambda, r.tau, r.escalation_rate, r.accepted_acc2, r.accepted_acc3
        );
    }
    Ok(())
}
