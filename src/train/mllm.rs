//! Training the large model's adapter (`train mllm`) and the cascade comparison
//! (`eval --compare`): small-only, large-only and U-ACS on the same windows.

use std::path::PathBuf;
use std::time::Instant;

use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::cascade::backend::Backend;
use crate::error::{DatasetError, ModelError, Result};
use crate::features::audio::AUDIO_DIM;
use crate::features::text::{EncoderKind, EncoderSpec};
use crate::features::visual::VIS_DIM;
use crate::models::mllm::{AdapterMeta, Answer, Mllm, Query};
use crate::models::ubm::{Modalities, Prediction, Ubm};
use crate::routing::fusion::{Policy, Stage1, Stage2, Verdict, decide, fuse_probs, stage1};
use crate::routing::thresholds::Calibration;
use crate::routing::uncertainty::{argmax, class_index, polarity};
use crate::routing::verdict::coherent;
use crate::train::dataset::{Dataset, Scale, Split, TextSource};
use crate::train::metrics::{self, Metrics};
use crate::train::opinions::{ClipOpinions, Opinion};
use crate::train::trainer::{SplitData, append_sentences, load_split, mean_std};

/// Options of `train mllm`.
#[derive(Debug, Clone)]
pub struct MllmTrainOptions {
    /// Dataset folder.
    pub data: PathBuf,
    /// Label range.
    pub(crate) scale: Scale,
    /// Models folder (MiniLM and face detector for features).
    pub models_dir: PathBuf,
    /// How clips are cut before their features (as served).
    pub cut: crate::train::dataset::ClipCut,
    /// The LLM's GGUF.
    pub gguf: PathBuf,
    /// Output base path (`.safetensors` + `.json`).
    pub out: PathBuf,
    /// Epochs over the train split.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub(crate) lr: f64,
    /// LoRA rank.
    pub rank: i64,
    /// Neutral band.
    pub band: f32,
    /// Seed.
    pub(crate) seed: u64,
    /// Feature threads.
    pub workers: usize,
    /// Share of training clips that also get a cross-verification prompt.
    pub(crate) cross_share: f32,
    /// lambda for tau2.
    pub lambda: f32,
    /// Use at most this many training clips (0: all).
    pub(crate) limit: usize,
    /// Labelled sentence files added as text-only windows (every fifth to validation).
    pub extra: Vec<PathBuf>,
    /// Times each extra training sentence counts per epoch (one value, or one per file).
    pub extra_weight: Vec<usize>,
    /// Files of real earlier opinions (`eval --compare --opinions`, out of fold): when
    /// given, stage-3 prompts are built from them instead of made-up ones.
    pub opinions: Vec<PathBuf>,
    /// Times each such prompt counts per epoch.
    pub opinions_weight: usize,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Two disagreeing earlier opinions for a cross-verification training prompt, as stage 3
/// meets them: two different classes, and usually (`right_share`) one of them is the true
/// class (random which, with random uncertainties), otherwise neither. The model must use
/// the evidence to pick, rather than copy an opinion or ignore both.
fn disagreeing(
    rng: &mut Rng,
    truth: usize,
    right_share: f32,
    limit: f32,
    band: f32,
) -> (Verdict, Verdict) {
    let (a, b) = if rng.uniform(0.0, 1.0) < right_share {
        let other = (truth + 1 + rng.below(2)) % 3;
        if rng.below(2) == 0 {
            (truth, other)
        } else {
            (other, truth)
        }
    } else {
        ((truth + 1) % 3, (truth + 2) % 3)
    };
    let mut opinion = |cls: usize| {
        let mag = rng.uniform(band * 3.0, limit * 0.85);
        let score = match cls {
            0 => -mag,
            1 => rng.uniform(-band, band),
            _ => mag,
        };
        Verdict {
            score,
            uncertainty: rng.uniform(0.3, 1.05),
        }
    };
    (opinion(a), opinion(b))
}

/// Share of cross-verification training prompts in which one earlier opinion is right.
const RIGHT_SHARE: f32 = 0.8;

/// What training reports.
#[derive(Debug, Clone)]
pub struct MllmReport {
    /// Validation metrics (first pass, value-head scores).
    pub valid: Metrics,
    /// Validation accuracy of the label-word class.
    pub(crate) valid_class_acc: f64,
    /// Training wall time, seconds.
    pub(crate) train_s: f64,
    /// Training examples seen.
    pub(crate) examples: usize,
    /// With `--opinions`: the stage-3 prompts built from them, and the training clips that
    /// had opinions.
    pub(crate) real_prompts: Option<(usize, usize)>,
}

fn runtime(e: impl std::fmt::Display) -> ModelError {
    ModelError::Runtime {
        name: "mllm training".into(),
        reason: e.to_string(),
    }
}

/// Answers a whole split (first pass), in batches.
pub(crate) fn judge_split(model: &Mllm, data: &SplitData, batch: usize) -> Result<Vec<Answer>> {
    let mut out = Vec::with_capacity(data.feats.len());
    let idx: Vec<usize> = (0..data.feats.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let qs: Vec<Query> = chunk
            .iter()
            .map(|&i| Query {
                text: &data.texts[i],
                features: &data.feats[i],
                earlier: None,
            })
            .collect();
        out.extend(model.judge_batch(&qs)?);
    }
    Ok(out)
}

/// Trains the adapter (LoRA + projectors + value head), calibrates tau2 on the validation
/// split and saves it.
pub fn train(o: &MllmTrainOptions) -> Result<(Mllm, MllmReport)> {
    let ds = Dataset::open(&o.data, o.scale)?;
    tch::manual_seed(o.seed as i64);
    let (train, valid) = load_train_valid(o, &ds)?;
    let real = real_prompts(o, &train)?;
    let mut model = fresh_model(o, &train)?;
    let mut opt = nn::AdamW::default()
        .wd(0.0)
        .build(&model.adapter.vs, o.lr)
        .map_err(runtime)?;
    // Examples: every clip plainly, a share of them again with disagreeing opinions.
    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut clock = Clock {
        started: Instant::now(),
        seen: 0,
    };
    for epoch in 1..=o.epochs {
        let prompts = real.as_ref().map(|(p, _)| p.as_slice());
        let examples = epoch_examples(&mut rng, &train, o, prompts);
        train_epoch(o, &train, &model, &mut opt, epoch, &examples, &mut clock)?;
    }
    let train_s = clock.started.elapsed().as_secs_f64();
    let (vm, class_acc) = calibrate_tau2(&mut model, &valid, o.lambda)?;
    model.adapter.save(&o.out)?;
    Ok((
        model,
        MllmReport {
            valid: vm,
            valid_class_acc: class_acc,
            train_s,
            examples: clock.seen,
            real_prompts: real.as_ref().map(|(p, covered)| (p.len(), *covered)),
        },
    ))
}

/// One training example: a clip index and, for a cross-verification prompt, the two
/// earlier opinions.
type Example = (usize, Option<(Verdict, Verdict)>);

/// Training progress across epochs: when training started and how many examples it saw.
struct Clock {
    started: Instant,
    seen: usize,
}

/// Loads the train and valid splits, checks both have clips and applies `o.limit` to the
/// train split.
fn load_train_valid(o: &MllmTrainOptions, ds: &Dataset) -> Result<(SplitData, SplitData)> {
    let minilm = EncoderSpec::plain(EncoderKind::MiniLm);
    let how = crate::train::dataset::Extraction {
        cut: &o.cut,
        text: TextSource::Given,
        models_dir: &o.models_dir,
        asr: None,
        encoder: &minilm,
    };
    // Sentence files are read first: a bad line stops the run before minutes of features.
    let (extra_train, extra_valid) =
        crate::train::text::extra_sentences(&o.extra, &o.extra_weight, o.scale.limit())?;
    let split = |s| load_split(ds, s, how, o.workers);
    let (mut train, mut valid) = (split(Split::Train)?, split(Split::Valid)?);
    if train.feats.is_empty() || valid.feats.is_empty() {
        return Err(DatasetError::Empty {
            root: o.data.clone(),
            reason: "training needs clips in both the train and valid splits".into(),
        }
        .into());
    }
    if o.limit > 0 && train.feats.len() > o.limit {
        train.feats.truncate(o.limit);
        train.labels.truncate(o.limit);
        train.texts.truncate(o.limit);
        train.ids.truncate(o.limit);
    }
    // After the limit: the sentences are added whole.
    append_sentences(None, &extra_train, &mut train)?;
    append_sentences(None, &extra_valid, &mut valid)?;
    if !o.extra.is_empty() {
        tracing::info!(
            train = extra_train.len(),
            valid = extra_valid.len(),
            "text-only sentences added"
        );
    }
    Ok((train, valid))
}

/// A model with a fresh adapter whose metadata carries the train split's feature
/// normalisation.
fn fresh_model(o: &MllmTrainOptions, train: &SplitData) -> Result<Mllm> {
    let bytes = std::fs::metadata(&o.gguf).map(|m| m.len()).unwrap_or(0);
    let mut meta = AdapterMeta::new(bytes, o.rank, o.band, o.scale.limit());
    let audio: Vec<&[f32]> = train.feats.iter().map(|f| f.audio.as_slice()).collect();
    let visual: Vec<&[f32]> = train.feats.iter().map(|f| f.visual.as_slice()).collect();
    (meta.audio_mean, meta.audio_std) = mean_std(AUDIO_DIM, &audio);
    (meta.visual_mean, meta.visual_std) = mean_std(VIS_DIM, &visual);
    meta.lambda = o.lambda;
    Ok(Mllm::fresh(&o.gguf, meta)?)
}

/// One epoch's examples, shuffled: every clip plainly, then the stage-3 prompts: the real
/// ones of `--opinions` (`real`, each `o.opinions_weight` times), else a share of the
/// clips again with made-up disagreeing opinions.
fn epoch_examples(
    rng: &mut Rng,
    train: &SplitData,
    o: &MllmTrainOptions,
    real: Option<&[Example]>,
) -> Vec<Example> {
    let n = train.feats.len();
    let mut examples: Vec<Example> = (0..n).map(|i| (i, None)).collect();
    match real {
        Some(prompts) => {
            for _ in 0..o.opinions_weight {
                examples.extend_from_slice(prompts);
            }
        }
        None => {
            for i in 0..n {
                if rng.uniform(0.0, 1.0) < o.cross_share {
                    let truth = class_index(train.labels[i], o.band);
                    let made_up = disagreeing(rng, truth, RIGHT_SHARE, o.scale.limit(), o.band);
                    examples.push((i, Some(made_up)));
                }
            }
        }
    }
    for i in (1..examples.len()).rev() {
        examples.swap(i, rng.below(i + 1));
    }
    examples
}

/// The stage-3 prompts of `--opinions` (None without it): each training clip on which
/// the real earlier opinions disagree with one model unsure; and how many training clips
/// had opinions.
fn real_prompts(o: &MllmTrainOptions, train: &SplitData) -> Result<Option<(Vec<Example>, usize)>> {
    if o.opinions.is_empty() {
        return Ok(None);
    }
    let all = crate::train::opinions::read(&o.opinions)?;
    let m = crate::train::opinions::match_train(&all, &train.ids, &train.labels, o.band)?;
    tracing::info!(
        clips = train.ids.len(),
        with_opinions = m.covered,
        prompts = m.prompts.len(),
        "stage-3 prompts from real opinions (disagreeing, one model unsure)"
    );
    if m.prompts.is_empty() {
        return Err(crate::error::Error::Usage(format!(
            "--opinions: none of the {} clips with opinions has disagreeing verdicts with an unsure model, so there is no stage-3 prompt to train on; check that the files come from `eval --compare --opinions` on held-out folds",
            m.covered
        )));
    }
    let prompts = m.prompts.into_iter().map(|(i, e)| (i, Some(e))).collect();
    Ok(Some((prompts, m.covered)))
}

/// Runs one epoch of optimiser steps over `examples`, logging the running loss.
fn train_epoch(
    o: &MllmTrainOptions,
    train: &SplitData,
    model: &Mllm,
    opt: &mut nn::Optimizer,
    epoch: usize,
    examples: &[Example],
    clock: &mut Clock,
) -> Result<()> {
    let total = examples.len();
    let steps = total.div_ceil(o.batch);
    let (mut run_loss, mut run_n) = (0.0, 0usize);
    for (step, chunk) in examples.chunks(o.batch).enumerate() {
        run_loss += train_step(o, train, model, opt, chunk)? * chunk.len() as f64;
        run_n += chunk.len();
        clock.seen += chunk.len();
        if (step + 1) % 20 == 0 || step + 1 == steps {
            let el = clock.started.elapsed().as_secs_f64();
            tracing::info!(
                "epoch {epoch}/{} step {}/{steps}: loss {:.4}, {:.2} s/example, {:.0} s elapsed",
                o.epochs,
                step + 1,
                run_loss / run_n as f64,
                el / clock.seen as f64,
                el
            );
            (run_loss, run_n) = (0.0, 0);
        }
    }
    Ok(())
}

/// One optimiser step on a batch (cross-entropy on the label words plus half the score
/// MAE); returns the batch's loss.
fn train_step(
    o: &MllmTrainOptions,
    train: &SplitData,
    model: &Mllm,
    opt: &mut nn::Optimizer,
    chunk: &[Example],
) -> Result<f64> {
    let qs: Vec<Query> = chunk
        .iter()
        .map(|(i, e)| Query {
            text: &train.texts[*i],
            features: &train.feats[*i],
            earlier: *e,
        })
        .collect();
    let y: Vec<f32> = chunk.iter().map(|(i, _)| train.labels[*i]).collect();
    let cls: Vec<i64> = y.iter().map(|&v| class_index(v, o.band) as i64).collect();
    let out = model.forward(&qs, true)?;
    let loss = out
        .logits
        .cross_entropy_for_logits(&Tensor::from_slice(&cls))
        + (out.scores - Tensor::from_slice(&y))
            .abs()
            .mean(Kind::Float)
            * 0.5;
    opt.backward_step(&loss);
    Ok(loss.double_value(&[]))
}

/// Judges the valid split, fits tau2's calibration into the adapter's metadata (warning
/// when it cannot) and returns the validation metrics and label-word class accuracy.
fn calibrate_tau2(model: &mut Mllm, valid: &SplitData, lambda: f32) -> Result<(Metrics, f64)> {
    let answers = judge_split(model, valid, 16)?;
    let samples = tau2_samples(answers.iter(), &valid.labels, model.adapter.meta.band);
    let class_acc = samples.iter().filter(|s| s.1).count() as f64 / samples.len() as f64;
    let scores: Vec<f32> = answers.iter().map(|a| a.score).collect();
    let vm = metrics::compute(&scores, &valid.labels);
    match Calibration::fit(&samples) {
        Some(c) => {
            model.adapter.meta.calibration = Some(c);
            model.adapter.meta.tau2 = Some(c.tau(lambda));
        }
        None => tracing::warn!("validation too small or too uniform to calibrate tau2"),
    }
    Ok((vm, class_acc))
}

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct CompareRow {
    /// Name.
    pub name: String,
    /// Metrics of the final scores.
    pub metrics: Metrics,
    /// Share of windows escalated to the large model.
    pub escalation: f64,
    /// Share of windows cross-verified.
    pub(crate) stage3: f64,
    /// Among cross-verified windows, the share whose polarity the second pass turned right
    /// (the first large answer had it wrong).
    pub(crate) correction: f64,
    /// Model compute time, seconds.
    pub(crate) runtime_s: f64,
    /// Each window's final score, as an event carries it.
    pub(crate) scores: Vec<f32>,
}

/// Everything measured once per test window, reused by every row.
pub(crate) struct CompareInputs {
    /// Labels.
    pub labels: Vec<f32>,
    /// Small model's predictions.
    pub small: Vec<Prediction>,
    /// Small model's cost per window (text encoding + forward), seconds.
    pub(crate) small_s: f64,
    /// Large model's first answers, with their wall time in seconds.
    pub first: Vec<(Answer, f64)>,
    /// Cross-verification answers, computed on demand.
    pub second: Vec<Option<(Answer, f64)>>,
}

/// The small model's verdict as stages 2 and 3 see it (entropy, the large model's unit;
/// stage 1 compares the gate's own uncertainty with tau1, as the cascade does).
fn verdict_of(p: &Prediction) -> Verdict {
    Verdict::by_entropy(p.score, &p.probs)
}

/// Runs U-ACS over precomputed answers for one (tau1, tau2, policy); second passes are
/// computed on demand with `ask` and memoised.
pub(crate) fn cascade_row(
    name: &str,
    inp: &mut CompareInputs,
    tau1: f32,
    tau2: f32,
    band: f32,
    policy: Policy,
    ask: &mut dyn FnMut(usize, (Verdict, Verdict)) -> Result<(Answer, f64)>,
) -> Result<CompareRow> {
    let n = inp.labels.len();
    let (mut scores, mut esc, mut s3, mut corrected) = (Vec::with_capacity(n), 0, 0, 0);
    let mut runtime = 0.0;
    for i in 0..n {
        let p = &inp.small[i];
        let small = verdict_of(p);
        runtime += inp.small_s;
        let gate = Verdict {
            uncertainty: p.uncertainty,
            ..small
        };
        if stage1(gate, tau1) == Stage1::Accept {
            scores.push(coherent(small.score, &p.probs, band).0);
            continue;
        }
        esc += 1;
        let (first, t1) = inp.first[i];
        runtime += t1;
        // Each outcome's score as an event carries it (the one-verdict rule on the
        // probabilities the cascade emits with it).
        let (score, probs) = match decide(small, first.verdict(), tau2, band, policy) {
            Stage2::AcceptLarge => (first.score, first.probs),
            Stage2::Fused(v) => (
                v.score,
                fuse_probs(&p.probs, small.uncertainty, &first.probs, first.uncertainty),
            ),
            Stage2::CrossVerify => {
                s3 += 1;
                if inp.second[i].is_none() {
                    inp.second[i] = Some(ask(i, (small, first.verdict()))?);
                }
                let (second, t2) = inp.second[i].expect("set above");
                runtime += t2;
                let truth = polarity(inp.labels[i], band);
                if polarity(second.score, band) == truth && polarity(first.score, band) != truth {
                    corrected += 1;
                }
                (second.score, second.probs)
            }
        };
        scores.push(coherent(score, &probs, band).0);
    }
    Ok(CompareRow {
        name: name.into(),
        metrics: metrics::compute(&scores, &inp.labels),
        escalation: esc as f64 / n as f64,
        stage3: s3 as f64 / n as f64,
        correction: if s3 > 0 {
            corrected as f64 / s3 as f64
        } else {
            0.0
        },
        runtime_s: runtime,
        scores,
    })
}

/// The comparison table (runtime relative to the large-model-only row).
pub(crate) fn format_compare(rows: &[CompareRow]) -> String {
    let large = rows
        .iter()
        .find(|r| r.name.starts_with("large model only"))
        .map_or(1.0, |r| r.runtime_s.max(1e-9));
    let mut s = String::from(
        "| system | Has0-Acc2 | Has0-F1 | MAE | Corr | Acc7 | escalated | stage 3 | corrected | runtime s | vs large |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = &r.metrics;
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} | {:.1} | {:.2} |\n",
            r.name,
            m.has0_acc2,
            m.has0_f1,
            m.mae,
            m.corr,
            m.acc7,
            r.escalation,
            r.stage3,
            r.correction,
            r.runtime_s,
            r.runtime_s / large
        ));
    }
    s
}

/// The large model of `eval --compare`: a backend (on the small model's score scale)
/// and its tau2 calibration, if it has one.
pub(crate) struct CompareLarge<'a> {
    /// Answers windows.
    pub(crate) backend: &'a mut dyn Backend,
    /// Its stage-2 calibration (the local adapter's); `None`: `tau2` or the default.
    pub(crate) calibration: Option<Calibration>,
    /// Fixed tau2 (configured), used when there is no calibration.
    pub(crate) tau2: Option<f32>,
}

/// A backend's answer, its failure as a model error.
fn ask_backend(
    backend: &mut dyn Backend,
    data: &SplitData,
    i: usize,
    earlier: Option<(Verdict, Verdict)>,
) -> Result<Answer> {
    backend
        .judge(&data.texts[i], &data.feats[i], earlier)
        .map_err(|e| {
            ModelError::Runtime {
                name: "large model".into(),
                reason: e.to_string(),
            }
            .into()
        })
}

/// What `eval --compare` measured: the table's rows, and the large model's uncertainty
/// calibration fitted on these windows (its first answers; `None` without both correct
/// and wrong answers).
pub(crate) struct Comparison {
    /// The table.
    pub(crate) rows: Vec<CompareRow>,
    /// The large model's tau2 calibration on this split.
    pub(crate) large_calibration: Option<Calibration>,
    /// Each window's two earlier verdicts, as stage 3 would be shown them, with whether
    /// each model is unsure at the served thresholds (`eval --compare --opinions`).
    pub(crate) opinions: Vec<ClipOpinions>,
}

/// `eval --compare`: measures the UBM and the large model on every window of `split`,
/// then replays the cascade at several lambdas and the ablations.
pub(crate) fn compare(
    ubm: &Ubm,
    large: CompareLarge<'_>,
    data: &SplitData,
    text_encode_s: f64,
    lambdas: &[f32],
) -> Result<Comparison> {
    let _g = tch::no_grad_guard();
    let n = data.feats.len();
    let backend = large.backend;
    let band = backend.band();
    let (small, small_s) = small_pass(ubm, data, text_encode_s);
    let first = first_pass(backend, data)?;
    let large_calibration = Calibration::fit(&tau2_samples(
        first.iter().map(|(a, _)| a),
        &data.labels,
        band,
    ));
    let mut inp = CompareInputs {
        labels: data.labels.clone(),
        small,
        small_s,
        first,
        second: vec![None; n],
    };
    let mut ask = |i: usize, e: (Verdict, Verdict)| -> Result<(Answer, f64)> {
        let t = Instant::now();
        let a = ask_backend(backend, data, i, Some(e))?;
        Ok((a, t.elapsed().as_secs_f64()))
    };
    let mut rows = baseline_rows(&inp, n, band);
    let c1 = ubm.meta.calibration.ok_or_else(|| ModelError::Runtime {
        name: "eval --compare".into(),
        reason: "the UBM is not calibrated; run `sentistream calibrate`".into(),
    })?;
    let (fixed, c2) = (large.tau2, large.calibration);
    if fixed.is_none() && c2.is_none() {
        tracing::warn!("the large model has no tau2 calibration; using the default tau2");
    }
    let tau2 = |l: f32| tau2_at(fixed, c2, l);
    // lambda 0.5: the ablations', and the adapter's default (the served tau2).
    let (t1, t2) = (c1.tau(0.5), tau2(0.5));
    let opinions = clip_opinions(data, &inp, ubm.meta.tau1.unwrap_or(t1), t2);
    // The lambda sweep, then the ablations at lambda 0.5.
    let mut settings: Vec<(String, f32, f32, Policy)> = lambdas
        .iter()
        .map(|&l| {
            (
                format!("U-ACS lambda {l:.1}"),
                c1.tau(l),
                tau2(l),
                Policy::Full,
            )
        })
        .collect();
    for (name, tau1, p) in [
        (
            "U-ACS 0.5 without stage 3 (fusion only)",
            t1,
            Policy::NoCrossVerify,
        ),
        (
            "U-ACS 0.5 without fusion (large final)",
            t1,
            Policy::LargeFinal,
        ),
        // tau1 = 0: stage 1 accepts nothing, stages 2 and 3 as served.
        ("tau1 0: every window escalated", 0.0, Policy::Full),
    ] {
        settings.push((name.into(), tau1, t2, p));
    }
    for (name, tau1, tau2, p) in settings {
        rows.push(cascade_row(&name, &mut inp, tau1, tau2, band, p, &mut ask)?);
    }
    Ok(Comparison {
        rows,
        large_calibration,
        opinions,
    })
}

/// Every window's small-model verdict and large-model first pass, in stage 3's unit,
/// each marked unsure where the served cascade would treat it so.
fn clip_opinions(data: &SplitData, inp: &CompareInputs, tau1: f32, tau2: f32) -> Vec<ClipOpinions> {
    let mut out = Vec::with_capacity(inp.small.len());
    for (i, p) in inp.small.iter().enumerate() {
        let small = verdict_of(p);
        let large = inp.first[i].0.verdict();
        out.push(ClipOpinions {
            clip: data.ids[i].clone(),
            label: data.labels[i],
            small: Opinion {
                score: small.score,
                uncertainty: small.uncertainty,
                unsure: p.uncertainty > tau1,
            },
            large: Opinion {
                score: large.score,
                uncertainty: large.uncertainty,
                unsure: large.uncertainty > tau2,
            },
        });
    }
    out
}

/// tau2 as the served cascade resolves it: configured, else the calibration at lambda
/// (an adapter trained on a tiny split, or a remote model, may have none), else the
/// uncalibrated default.
fn tau2_at(fixed: Option<f32>, calibration: Option<Calibration>, lambda: f32) -> f32 {
    crate::routing::thresholds::ThresholdSources {
        fixed,
        lambda: Some(lambda),
        calibration,
        stored: None,
    }
    .resolve()
    .unwrap_or(crate::routing::thresholds::UNCALIBRATED_TAU2)
}

/// tau2's calibration samples: each answer's uncertainty, and whether its class (argmax
/// of the label-word probabilities) is the label's.
fn tau2_samples<'a>(
    answers: impl Iterator<Item = &'a Answer>,
    labels: &[f32],
    band: f32,
) -> Vec<(f32, bool)> {
    answers
        .zip(labels)
        .map(|(a, &y)| (a.uncertainty, argmax(&a.probs) == class_index(y, band)))
        .collect()
}

/// Small model on every window, one at a time (as served); returns its predictions and
/// its cost per window in seconds (text encoding included).
fn small_pass(ubm: &Ubm, data: &SplitData, text_encode_s: f64) -> (Vec<Prediction>, f64) {
    let n = data.feats.len();
    let t = Instant::now();
    let small: Vec<Prediction> = data
        .feats
        .iter()
        .map(|f| ubm.predict(&[f], Modalities::ALL)[0])
        .collect();
    let small_s = t.elapsed().as_secs_f64() / n as f64 + text_encode_s;
    (small, small_s)
}

/// Large model first pass on every window, one at a time, with each answer's wall time.
fn first_pass(backend: &mut dyn Backend, data: &SplitData) -> Result<Vec<(Answer, f64)>> {
    let n = data.feats.len();
    let mut first = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let a = ask_backend(backend, data, i, None)?;
        first.push((a, t.elapsed().as_secs_f64()));
        if (i + 1) % 50 == 0 {
            tracing::info!(
                "large model: {}/{n} windows ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(first)
}

/// The two reference rows of the comparison: small model only and large model only.
fn baseline_rows(inp: &CompareInputs, n: usize, band: f32) -> Vec<CompareRow> {
    let mut rows = Vec::new();
    // Scores as events carry them (one-verdict rule), as in every U-ACS row.
    let small_scores: Vec<f32> = inp
        .small
        .iter()
        .map(|p| coherent(p.score, &p.probs, band).0)
        .collect();
    rows.push(CompareRow {
        name: "UBM only".into(),
        metrics: metrics::compute(&small_scores, &inp.labels),
        escalation: 0.0,
        stage3: 0.0,
        correction: 0.0,
        runtime_s: inp.small_s * n as f64,
        scores: small_scores,
    });
    let large_scores: Vec<f32> = inp
        .first
        .iter()
        .map(|a| coherent(a.0.score, &a.0.probs, band).0)
        .collect();
    let large_runtime: f64 = inp.first.iter().map(|a| a.1).sum();
    rows.push(CompareRow {
        name: "large model only".into(),
        metrics: metrics::compute(&large_scores, &inp.labels),
        escalation: 1.0,
        stage3: 0.0,
        correction: 0.0,
        runtime_s: large_runtime,
        scores: large_scores,
    });
    rows
}
