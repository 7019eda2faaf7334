//! Training, calibration and evaluation of the UBM on a dataset in the MMSA raw layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::config::AsrConfig;
use crate::error::{DatasetError, ModelError, Result};
use crate::features::audio::AUDIO_DIM;
use crate::features::text::TEXT_DIM;
use crate::features::text::{EncoderKind, EncoderSpec, TextEncoder};
use crate::features::visual::VIS_DIM;
use crate::features::{WindowFeatures, pitch};
use crate::models::ubm::{Modalities, Prediction, Ubm, UbmMeta};
use crate::routing::thresholds::{self, Calibration};
use crate::routing::uncertainty::{Gate, class_index};
use crate::routing::verdict::has0_right;
use crate::train::dataset::{self, Dataset, Scale, Split, TextSource};
use crate::train::metrics::{self, Metrics};
use crate::train::text::Graded;

/// Options of `train ubm`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Dataset folder.
    pub data: PathBuf,
    /// Label range.
    pub(crate) scale: Scale,
    /// Transcript source.
    pub text: TextSource,
    /// Models folder (text encoder, face detector, Whisper for `--text asr`).
    pub models_dir: PathBuf,
    /// Text encoder the model reads (recorded in its metadata).
    pub encoder: EncoderKind,
    /// File name (beside `out`) of the encoder's tuning, if any (recorded too).
    pub tuning: Option<String>,
    /// Languages the model is for (recorded in its metadata; windows in other languages
    /// get no verdict from it).
    pub languages: Vec<String>,
    /// Whisper model for `--text asr`.
    pub asr: Option<AsrConfig>,
    /// How clips are cut before their features (as served).
    pub cut: dataset::ClipCut,
    /// Where to write the model (base path; `.safetensors` and `.json` are added).
    pub out: PathBuf,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub(crate) lr: f64,
    /// Weight of the classification loss (alpha in L1 + alpha CE).
    pub(crate) alpha: f64,
    /// Weight of the sign loss ([`sign_loss`]: negative vs not, as Has0-Acc2 counts).
    pub(crate) sign_weight: f64,
    /// Width of h.
    pub hidden: i64,
    /// Neutral band b.
    pub band: f32,
    /// Random seed.
    pub(crate) seed: i64,
    /// Feature extraction threads.
    pub workers: usize,
    /// lambda for tau1 after training.
    pub lambda: f32,
    /// Chance that a training batch loses its audio (and, apart, its faces).
    pub modality_dropout: f64,
    /// Labelled sentence files (`train text --extra`'s format) added as text-only
    /// windows: every fifth line to validation, the rest to training.
    pub extra: Vec<PathBuf>,
    /// Times each extra training sentence counts per epoch (one value, or one per file).
    pub extra_weight: Vec<usize>,
    /// Gate on the calibrated probability that the emitted polarity is wrong (its
    /// temperature fitted on validation) instead of the entropy.
    pub polarity_risk: bool,
    /// Read pitch relative to the speaker ([`crate::features::pitch`]).
    pub speaker_pitch: bool,
}

/// Features and labels of one split.
pub struct SplitData {
    /// Features per clip.
    pub feats: Vec<WindowFeatures>,
    /// Labels.
    pub labels: Vec<f32>,
    /// Transcripts (the given text column).
    pub texts: Vec<String>,
    /// Clip ids, `video_id/clip_id`.
    pub ids: Vec<String>,
}

/// Loads a dataset split's features (cached), skipping undecodable clips.
pub fn load_split(
    ds: &Dataset,
    split: Split,
    how: dataset::Extraction<'_>,
    workers: usize,
) -> Result<SplitData> {
    let clips = ds.split(split);
    let total = clips.len();
    let started = Instant::now();
    let progress = |n: usize| {
        if n.is_multiple_of(250) || n == total {
            tracing::info!(split = ?split, "features {n}/{total} ({:.0} s)", started.elapsed().as_secs_f64());
        }
    };
    let feats = dataset::features(ds, &clips, how, workers, &progress)?;
    let mut out = SplitData {
        feats: Vec::new(),
        labels: Vec::new(),
        texts: Vec::new(),
        ids: Vec::new(),
    };
    let mut failed = 0;
    let mut speakers = Vec::new();
    for (c, f) in clips.iter().zip(feats) {
        match f {
            Some(f) => {
                speakers.push(c.speaker.as_str());
                out.feats.push(f);
                out.labels.push(c.label);
                out.texts.push(c.text.clone());
                out.ids.push(format!("{}/{}", c.video_id, c.clip_id));
            }
            None => failed += 1,
        }
    }
    if failed > 0 {
        tracing::warn!(split = ?split, "{failed} clips could not be decoded and were skipped");
    }
    // Each clip's speaker reference pitch from that speaker's clips up to it, in
    // label.csv's order, as a stream would have heard them.
    pitch::assign_references(&mut out.feats, &speakers);
    Ok(out)
}

/// Floor of a feature's standard deviation: a feature nearly constant in training (a
/// smile never seen) must not blow up when it moves in the field.
const MIN_STD: f64 = 0.05;

/// Per-dimension mean and standard deviation over all frames of `data`.
pub(crate) fn mean_std(dim: usize, data: &[&[f32]]) -> (Vec<f32>, Vec<f32>) {
    let (mut sum, mut sq, mut n) = (vec![0f64; dim], vec![0f64; dim], 0f64);
    for d in data {
        for frame in d.chunks_exact(dim) {
            for (k, v) in frame.iter().enumerate() {
                sum[k] += *v as f64;
                sq[k] += (*v as f64).powi(2);
            }
            n += 1.0;
        }
    }
    let n = n.max(1.0);
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / n - (*m as f64).powi(2)).max(0.0).sqrt().max(MIN_STD)) as f32)
        .collect();
    (mean, std)
}

/// What training reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Clips per split (train, valid).
    pub clips: (usize, usize),
    /// Rows whose clip file is missing.
    pub missing: usize,
    /// Best epoch (1-based) on the validation split.
    pub(crate) best_epoch: usize,
    /// Validation metrics at the best epoch.
    pub valid: Metrics,
    /// Training wall time, seconds (features excluded).
    pub(crate) train_s: f64,
    /// Feature extraction wall time, seconds.
    pub(crate) features_s: f64,
}

/// Trains the UBM, keeps the epoch with the lowest validation MAE (Has0-Acc2 breaks ties),
/// calibrates tau1 on the validation split and saves the model.
pub fn train(o: &TrainOptions) -> Result<(Ubm, TrainReport)> {
    let ds = Dataset::open(&o.data, o.scale)?;
    // The output's folder must be writable before hours of features and epochs.
    if let Some(d) = o.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|source| ModelError::Io {
            path: d.to_path_buf(),
            source,
        })?;
    }
    tch::manual_seed(o.seed);
    let (train, valid, features_s) = load_train_valid(o, &ds)?;
    let model = fresh_ubm(o, &train);
    let mut opt = nn::AdamW::default()
        .wd(1e-4)
        .build(&model.vs, o.lr)
        .map_err(|e| ModelError::Runtime {
            name: "optimizer".into(),
            reason: e.to_string(),
        })?;
    let t1 = Instant::now();
    let n = train.feats.len();
    let mut best: Option<(f64, f64, usize)> = None;
    let best_path = o.out.with_extension("best.safetensors");
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = o.seed as u64 | 1;
    for epoch in 1..=o.epochs {
        shuffle(&mut order, &mut rng);
        let epoch_loss = train_epoch(o, &model, &mut opt, &train, &order, &mut rng);
        let m = evaluate(&model, &valid, Modalities::ALL).0;
        tracing::info!(
            epoch,
            loss = epoch_loss / n as f64,
            valid_acc2 = m.has0_acc2,
            valid_mae = m.mae,
            "epoch"
        );
        keep_if_better(&model, &best_path, &mut best, &m, epoch)?;
    }
    let mut model = model;
    model.vs.load(&best_path).map_err(|e| ModelError::Runtime {
        name: "ubm".into(),
        reason: e.to_string(),
    })?;
    let _ = std::fs::remove_file(&best_path);
    let train_s = t1.elapsed().as_secs_f64();
    // Training must not be lost to a validation split too small to calibrate on.
    if let Err(e) = calibrate_model(&mut model, &valid, CalibrationRule::Lambda(o.lambda)) {
        tracing::warn!(
            "saved without tau1: {e}; run `sentistream calibrate` with more validation data"
        );
    }
    model.save(&o.out)?;
    let (valid_m, _) = evaluate(&model, &valid, Modalities::ALL);
    let report = TrainReport {
        clips: (train.feats.len(), valid.feats.len()),
        missing: ds.missing,
        best_epoch: best.map(|b| b.2).unwrap_or(0),
        valid: valid_m,
        train_s,
        features_s,
    };
    Ok((model, report))
}

/// Loads the train and valid splits' features, checks both have clips, and returns them
/// with the feature extraction wall time in seconds.
fn load_train_valid(o: &TrainOptions, ds: &Dataset) -> Result<(SplitData, SplitData, f64)> {
    let t0 = Instant::now();
    let spec = EncoderSpec {
        kind: o.encoder,
        tuning: o
            .tuning
            .as_ref()
            .map(|n| o.out.parent().unwrap_or(Path::new("")).join(n)),
    };
    let how = dataset::Extraction {
        cut: &o.cut,
        text: o.text,
        models_dir: &o.models_dir,
        asr: o.asr.as_ref(),
        encoder: &spec,
    };
    // Sentence files are read first: a bad line stops the run before minutes of features.
    let extra = super::text::extra_sentences(&o.extra, &o.extra_weight, o.scale.limit())?;
    let split = |s| load_split(ds, s, how, o.workers);
    let (mut train, mut valid) = (split(Split::Train)?, split(Split::Valid)?);
    if !o.extra.is_empty() {
        add_sentences(o, &spec, &extra, &mut train, &mut valid)?;
    }
    let features_s = t0.elapsed().as_secs_f64();
    if train.feats.is_empty() || valid.feats.is_empty() {
        return Err(DatasetError::Empty {
            root: o.data.clone(),
            reason: "training needs clips in both the train and valid splits".into(),
        }
        .into());
    }
    Ok((train, valid, features_s))
}

/// Adds the `--extra` sentences as windows with text and neither audio nor faces (the
/// model's masks mark both absent, as for a window without them in the field): they
/// teach the text path conversational sentences the corpus lacks.
fn add_sentences(
    o: &TrainOptions,
    spec: &EncoderSpec,
    (tr, va): &(Graded, Graded),
    train: &mut SplitData,
    valid: &mut SplitData,
) -> Result<()> {
    let enc = spec.open(&o.models_dir)?;
    append_sentences(Some(&enc), tr, train)?;
    append_sentences(Some(&enc), va, valid)?;
    tracing::info!(
        train = tr.len(),
        valid = va.len(),
        "text-only sentences added"
    );
    Ok(())
}

/// Appends graded sentences to `to` as text-only windows (ids `extra/N`), encoded by
/// `enc` (the small model's text encoder) when given (the large model reads the text
/// itself and needs no embedding). A weighted `--extra` file arrives with its lines
/// already repeated (`text::extra_sentences`): each copy is encoded in its own batch
/// place, as the committed models were trained.
pub(crate) fn append_sentences(
    enc: Option<&TextEncoder>,
    rows: &[(String, f32)],
    to: &mut SplitData,
) -> Result<()> {
    for chunk in rows.chunks(64) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
        let emb: Option<Vec<f32>> = match enc {
            Some(enc) => Some(Vec::try_from(enc.encode(&texts)?.view([-1])).map_err(
                |e: tch::TchError| ModelError::Runtime {
                    name: "text encoder".into(),
                    reason: e.to_string(),
                },
            )?),
            None => None,
        };
        for (k, (text, label)) in chunk.iter().enumerate() {
            let e = emb
                .as_ref()
                .map(|v| v[k * TEXT_DIM..(k + 1) * TEXT_DIM].to_vec());
            to.feats.push(WindowFeatures {
                text: e,
                audio: Vec::new(),
                visual: Vec::new(),
                pitch_ref: None,
            });
            to.labels.push(*label);
            to.texts.push(text.clone());
            to.ids.push(format!("extra/{}", to.ids.len()));
        }
    }
    Ok(())
}

/// An untrained UBM whose feature normalisation comes from the train split.
fn fresh_ubm(o: &TrainOptions, train: &SplitData) -> Ubm {
    let mut meta = UbmMeta::new(o.hidden, 0.2, o.band, o.scale.limit());
    meta.text_encoder = o.encoder;
    meta.text_tuning = o.tuning.clone();
    meta.languages = o.languages.clone();
    if o.polarity_risk {
        // The temperature is fitted on validation after training (`calibrate_model`).
        meta.gate = Gate::PolarityRisk { temperature: 1.0 };
    }
    meta.speaker_pitch = o.speaker_pitch;
    // The statistics are of the audio as the model reads it.
    let read: Vec<_> = train
        .feats
        .iter()
        .map(|f| pitch::model_audio(f, o.speaker_pitch))
        .collect();
    let audio: Vec<&[f32]> = read.iter().map(|a| a.as_ref()).collect();
    let visual: Vec<&[f32]> = train.feats.iter().map(|f| f.visual.as_slice()).collect();
    (meta.audio_mean, meta.audio_std) = mean_std(AUDIO_DIM, &audio);
    (meta.visual_mean, meta.visual_std) = mean_std(VIS_DIM, &visual);
    Ubm::new(meta)
}

/// Binary cross-entropy of "not negative" (label >= 0, so neutral counts with positive,
/// as MMSA's Has0-Acc2 counts it) with the score as logit (10 per unit of the label
/// range): L1 alone leaves a neutral window's sign to chance, this term puts neutral
/// scores just above 0 and negative ones below.
pub(crate) fn sign_loss(score: &Tensor, labels: &[f32], limit: f32) -> Tensor {
    let target: Vec<f32> = labels.iter().map(|&y| f32::from(y >= 0.0)).collect();
    (score * (10.0 / f64::from(limit))).binary_cross_entropy_with_logits::<Tensor>(
        &Tensor::from_slice(&target),
        None,
        None,
        tch::Reduction::Mean,
    )
}

/// A uniform draw in [0, 1) from the xorshift state.
fn uniform(rng: &mut u64) -> f64 {
    (xorshift(rng) >> 11) as f64 / (1u64 << 53) as f64
}

/// The next state of a small xorshift generator: reproducible without another dependency.
fn xorshift(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// Shuffles `order` in place.
pub(crate) fn shuffle(order: &mut [usize], rng: &mut u64) {
    // Fisher-Yates.
    for i in (1..order.len()).rev() {
        order.swap(i, (xorshift(rng) % (i as u64 + 1)) as usize);
    }
}

/// One epoch of optimiser steps over the train split in `order` (L1 + alpha CE); returns
/// the summed loss over clips.
fn train_epoch(
    o: &TrainOptions,
    model: &Ubm,
    opt: &mut nn::Optimizer,
    train: &SplitData,
    order: &[usize],
    rng: &mut u64,
) -> f64 {
    let mut epoch_loss = 0.0;
    for chunk in order.chunks(o.batch) {
        let items: Vec<&WindowFeatures> = chunk.iter().map(|&i| &train.feats[i]).collect();
        let y: Vec<f32> = chunk.iter().map(|&i| train.labels[i]).collect();
        let cls: Vec<i64> = y.iter().map(|&v| class_index(v, o.band) as i64).collect();
        // Modality dropout: a batch now and then without its audio or its faces, so the
        // model also learns to decide from the text alone (an unfamiliar voice or no face).
        let mut drop = || uniform(rng) < o.modality_dropout;
        let use_ = Modalities {
            text: true,
            audio: !drop(),
            visual: !drop(),
        };
        let batch = model.batch(&items, use_);
        let (score, logits) = model.forward(&batch, true);
        let yt = Tensor::from_slice(&y);
        let loss = (&score - &yt).abs().mean(Kind::Float)
            + logits.cross_entropy_for_logits(&Tensor::from_slice(&cls)) * o.alpha
            + sign_loss(&score, &y, o.scale.limit()) * o.sign_weight;
        opt.backward_step(&loss);
        epoch_loss += loss.double_value(&[]) * chunk.len() as f64;
    }
    epoch_loss
}

/// Saves the weights to `best_path` when this epoch's validation metrics `m` beat `best`.
fn keep_if_better(
    model: &Ubm,
    best_path: &Path,
    best: &mut Option<(f64, f64, usize)>,
    m: &Metrics,
    epoch: usize,
) -> Result<()> {
    // Model selection on validation MAE (MMSA's key metric for regression): with a
    // small validation split it is far steadier than Acc2.
    let better =
        best.is_none_or(|(acc, mae, _)| m.mae < mae || (m.mae == mae && m.has0_acc2 > acc));
    if better {
        *best = Some((m.has0_acc2, m.mae, epoch));
        model.vs.save(best_path).map_err(|e| ModelError::Runtime {
            name: "ubm".into(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Predicts a whole split in batches.
pub(crate) fn predict_split(model: &Ubm, data: &SplitData, use_: Modalities) -> Vec<Prediction> {
    let mut out = Vec::with_capacity(data.feats.len());
    for chunk in data.feats.chunks(64) {
        let items: Vec<&WindowFeatures> = chunk.iter().collect();
        out.extend(model.predict(&items, use_));
    }
    out
}

/// Metrics of a split, with the predictions.
pub(crate) fn evaluate(
    model: &Ubm,
    data: &SplitData,
    use_: Modalities,
) -> (Metrics, Vec<Prediction>) {
    let preds = predict_split(model, data, use_);
    let scores: Vec<f32> = preds.iter().map(|p| p.score).collect();
    (metrics::compute(&scores, &data.labels), preds)
}

/// How tau1 is chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CalibrationRule {
    /// tau(lambda) from the Gaussian fits.
    Lambda(f32),
    /// Escalate this share of validation windows.
    Rate(f32),
}

/// Whether the prediction is right in the sense its gate measures: the 3-class
/// prediction (argmax of probs) for the entropy, the emitted score's Has0 polarity for
/// the polarity risk.
fn correct(p: &Prediction, label: f32, band: f32, gate: Gate) -> bool {
    match gate {
        Gate::Entropy => crate::routing::uncertainty::argmax(&p.probs) == class_index(label, band),
        Gate::PolarityRisk { .. } => has0_right(&p.probs, label),
    }
}

/// Fits the uncertainty calibration on `valid` and sets tau1.
pub(crate) fn calibrate_model(
    model: &mut Ubm,
    valid: &SplitData,
    rule: CalibrationRule,
) -> Result<Option<Calibration>> {
    let band = model.meta.band;
    if let Gate::PolarityRisk { .. } = model.meta.gate {
        let preds = predict_split(model, valid, Modalities::ALL);
        let temperature = super::estimators::fit_temperature(&preds, &valid.labels, band);
        model.meta.gate = Gate::PolarityRisk { temperature };
    }
    let gate = model.meta.gate;
    let preds = predict_split(model, valid, Modalities::ALL);
    let samples: Vec<(f32, bool)> = preds
        .iter()
        .zip(&valid.labels)
        .map(|(p, &y)| (p.uncertainty, correct(p, y, band, gate)))
        .collect();
    // The Gaussian fits need right and wrong windows; the rate rule needs neither.
    let cal = Calibration::fit(&samples);
    let (tau, rule_txt) = match (rule, cal) {
        (CalibrationRule::Lambda(l), Some(c)) => (c.tau(l), format!("lambda={l}")),
        (CalibrationRule::Lambda(_), None) => {
            return Err(ModelError::Runtime {
                name: "calibration".into(),
                reason: format!(
                    "the {} validation windows are all classified {}; tau(lambda) needs both right and wrong ones (use --escalation-rate, or more validation data)",
                    samples.len(),
                    if samples.iter().all(|s| s.1) { "right" } else { "wrong" }
                ),
            }
            .into());
        }
        (CalibrationRule::Rate(r), _) => {
            let u: Vec<f32> = samples.iter().map(|s| s.0).collect();
            let tau = thresholds::tau_for_rate(&u, r).ok_or_else(|| ModelError::Runtime {
                name: "calibration".into(),
                reason: "the validation split is empty".into(),
            })?;
            (tau, format!("rate={r}"))
        }
    };
    model.meta.calibration = cal;
    model.meta.tau1 = Some(tau);
    model.meta.tau1_rule = Some(rule_txt);
    Ok(cal)
}

/// Uncertainty diagnostics on a split.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UncertaintyReport {
    /// Mean entropy of correctly classified windows.
    pub(crate) mean_correct: f32,
    /// Mean entropy of wrongly classified windows.
    pub(crate) mean_wrong: f32,
    /// AUROC of entropy for detecting errors.
    pub(crate) auroc: Option<f32>,
    /// Pearson correlation of entropy with absolute score error.
    pub(crate) corr_abs_error: f64,
}

/// How informative the uncertainty is.
pub(crate) fn uncertainty_report(
    preds: &[Prediction],
    labels: &[f32],
    band: f32,
    gate: Gate,
) -> UncertaintyReport {
    let ok: Vec<bool> = preds
        .iter()
        .zip(labels)
        .map(|(p, &y)| correct(p, y, band, gate))
        .collect();
    let u: Vec<f32> = preds.iter().map(|p| p.uncertainty).collect();
    let mean = |want: bool| {
        let v: Vec<f32> = u
            .iter()
            .zip(&ok)
            .filter(|(_, c)| **c == want)
            .map(|(x, _)| *x)
            .collect();
        v.iter().sum::<f32>() / v.len().max(1) as f32
    };
    let wrong: Vec<bool> = ok.iter().map(|c| !c).collect();
    let abs_err: Vec<f32> = preds
        .iter()
        .zip(labels)
        .map(|(p, y)| (p.score - y).abs())
        .collect();
    UncertaintyReport {
        mean_correct: mean(true),
        mean_wrong: mean(false),
        auroc: thresholds::auroc(&u, &wrong),
        corr_abs_error: metrics::pearson(&u, &abs_err),
    }
}

/// One row of the lambda sweep.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SweepRow {
    /// lambda.
    pub lambda: f32,
    /// tau1 at lambda.
    pub tau: f32,
    /// Share of windows escalated (u > tau).
    pub(crate) escalation_rate: f64,
    /// Has0-Acc2 of the windows the UBM accepts.
    pub(crate) accepted_acc2: f64,
    /// 3-class accuracy of the accepted windows.
    pub(crate) accepted_acc3: f64,
}

/// Escalation rate vs accuracy of the accepted windows for lambda in 0.1..0.9.
pub(crate) fn lambda_sweep(
    cal: &Calibration,
    preds: &[Prediction],
    labels: &[f32],
    band: f32,
) -> Vec<SweepRow> {
    (1..=9)
        .map(|k| {
            let lambda = k as f32 / 10.0;
            let tau = cal.tau(lambda);
            let acc: Vec<usize> = (0..preds.len())
                .filter(|&i| preds[i].uncertainty <= tau)
                .collect();
            let n = acc.len().max(1) as f64;
            SweepRow {
                lambda,
                tau,
                escalation_rate: 1.0 - acc.len() as f64 / preds.len().max(1) as f64,
                // As served: the emitted (one-verdict) score's sign.
                accepted_acc2: acc
                    .iter()
                    .filter(|&&i| has0_right(&preds[i].probs, labels[i]))
                    .count() as f64
                    / n,
                accepted_acc3: acc
                    .iter()
                    .filter(|&&i| correct(&preds[i], labels[i], band, Gate::Entropy))
                    .count() as f64
                    / n,
            }
        })
        .collect()
}

/// Formats the metric table (one row per named result).
pub(crate) fn format_table(rows: &[(String, Metrics)]) -> String {
    let mut s = format!(
        "| {:<16} | {:>9} | {:>7} | {:>9} | {:>7} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} | {:>5} |\n|{}|\n",
        "model",
        "Has0-Acc2",
        "Has0-F1",
        "Non0-Acc2",
        "Non0-F1",
        "Acc3",
        "Acc5",
        "Acc7",
        "MAE",
        "Corr",
        "n",
        "---|".repeat(11).trim_end_matches('|')
    );
    for (name, m) in rows {
        s += &format!(
            "| {:<16} | {:>9.4} | {:>7.4} | {:>9.4} | {:>7.4} | {:>6.4} | {:>6.4} | {:>6.4} | {:>6.4} | {:>6.4} | {:>5} |\n",
            name,
            m.has0_acc2,
            m.has0_f1,
            m.non0_acc2,
            m.non0_f1,
            m.acc3,
            m.acc5,
            m.acc7,
            m.mae,
            m.corr,
            m.n
        );
    }
    s
}
