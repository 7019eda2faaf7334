//! `train text`: tunes the top layers of a sentence encoder for sentiment (a LoRA update,
//! [`Tuning`]) on labelled sentences: a dataset's training transcripts plus any sentence
//! files (`--extra`), so the text a small model reads separates sentiment before the
//! small model is trained on it. A score head and a 3-class head on the pooled embedding
//! give the loss (L1 on the score + cross-entropy + the weighted sign loss); they are
//! thrown away afterwards (the
//! small model learns its own heads on the tuned embeddings). The epoch kept is the one
//! with the lowest validation loss; sentences of `--report` files are scored after
//! training and never used for a choice.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::error::{DatasetError, Error, ModelError, Result};
use crate::features::text::{EncoderKind, EncoderSpec, TextEncoder, Tuning};
use crate::routing::uncertainty::class_index;
use crate::train::dataset::{Dataset, Scale, Split};
use crate::train::metrics::{self, Metrics};

/// Options of `train text`.
#[derive(Debug, Clone)]
pub struct TextTrainOptions {
    /// Dataset folder (its train and valid transcripts with labels).
    pub data: PathBuf,
    /// Label range of the dataset and of the sentence files.
    pub scale: Scale,
    /// Encoder to tune.
    pub encoder: EncoderKind,
    /// Models folder.
    pub models_dir: PathBuf,
    /// Sentence files (`grade<TAB>text`, optional header, optional first column
    /// `domain`): every fifth line goes to validation, the rest to training.
    pub extra: Vec<PathBuf>,
    /// Times each extra training sentence is repeated per epoch (one value, or one per file).
    pub extra_weight: Vec<usize>,
    /// Whether a file's sentences are read with their domain in front (`tweet: ...`; one
    /// value, or one per file): text from another domain is tuned apart from untagged
    /// (served) text, so its conventions need not hold for conversation.
    pub extra_tag: Vec<bool>,
    /// Sentence files scored after training (never a choice).
    pub report: Vec<PathBuf>,
    /// Tuned top layers.
    pub layers: usize,
    /// LoRA rank.
    pub rank: i64,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate (Adam).
    pub lr: f64,
    /// Random seed.
    pub seed: i64,
    /// Weight of the sign loss (negative vs not; `trainer::sign_loss`).
    pub sign_weight: f64,
    /// Where to write the tuning.
    pub out: PathBuf,
}

/// Labelled sentences.
#[derive(Default)]
struct Sentences {
    texts: Vec<String>,
    labels: Vec<f32>,
}

impl Sentences {
    fn push(&mut self, text: &str, label: f32) {
        self.texts.push(text.to_string());
        self.labels.push(label);
    }
}

/// Reads a sentence file: `grade<TAB>text` or `domain<TAB>grade<TAB>text` per line, a
/// header line (a grade that is not a number on line 1) skipped. A grade outside
/// `[-limit, limit]` or a malformed line is an error naming the file and line.
fn read_sentences(path: &Path, limit: f32) -> Result<Vec<(String, f32)>> {
    read_tagged(path, limit, false)
}

/// [`read_sentences`], with `tag`: each text with its domain in front (`tweet: text`), a
/// line without a domain column being an error.
fn read_tagged(path: &Path, limit: f32, tag: bool) -> Result<Vec<(String, f32)>> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, reason: String| DatasetError::Malformed {
        path: path.to_path_buf(),
        row: line,
        reason,
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let (domain, grade, sentence) = match cols.as_slice() {
            [g, t] => ("", g.trim(), t.trim()),
            [d, g, t] => (d.trim(), g.trim(), t.trim()),
            _ => {
                return Err(bad(
                    i + 1,
                    format!(
                        "{} columns; expected grade<TAB>text or domain<TAB>grade<TAB>text",
                        cols.len()
                    ),
                )
                .into());
            }
        };
        let Ok(g) = grade.parse::<f32>() else {
            if i == 0 {
                continue;
            }
            return Err(bad(i + 1, format!("grade {grade:?} is not a number")).into());
        };
        if !g.is_finite() || g.abs() > limit || sentence.is_empty() {
            return Err(bad(
                i + 1,
                format!("grade {g} outside [-{limit}, {limit}] or an empty sentence"),
            )
            .into());
        }
        if !tag {
            out.push((sentence.to_string(), g));
        } else if domain.is_empty() {
            return Err(bad(
                i + 1,
                "empty or missing domain column to tag: give domain<TAB>grade<TAB>text, or --extra-tag false for this file".into(),
            )
            .into());
        } else {
            out.push((format!("{domain}: {sentence}"), g));
        }
    }
    Ok(out)
}

/// Sentences with their grades.
pub(crate) type Graded = Vec<(String, f32)>;

/// The sentences of `--extra` files split as every training command splits them: every
/// fifth line of a file (1-based 5, 10, ...) is for validation, the rest for training,
/// each training line repeated as many times as its file's weight (`weights`: one value
/// for every file, or one per file). Grades on the dataset's scale.
pub(crate) fn extra_sentences(
    files: &[PathBuf],
    weights: &[usize],
    limit: f32,
) -> Result<(Graded, Graded)> {
    extra_tagged(files, weights, &[false], limit)
}

/// [`extra_sentences`], each file's lines tagged with their domain where `tags` (one value
/// for every file, or one per file) says so ([`read_tagged`]).
fn extra_tagged(
    files: &[PathBuf],
    weights: &[usize],
    tags: &[bool],
    limit: f32,
) -> Result<(Graded, Graded)> {
    let weights = per_file(weights, files.len(), "--extra-weight", "weight")?;
    let tags = per_file(tags, files.len(), "--extra-tag", "value")?;
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for ((f, times), tag) in files.iter().zip(weights).zip(tags) {
        let times = times.max(1);
        for (i, row) in read_tagged(f, limit, tag)?.into_iter().enumerate() {
            if i % 5 == 4 {
                valid.push(row);
            } else {
                train.extend(std::iter::repeat_n(row, times));
            }
        }
    }
    Ok((train, valid))
}

/// One value per file of an option given once for every file or once per file (`flag`
/// names it in the error, `what` its value).
fn per_file<T: Copy>(values: &[T], files: usize, flag: &str, what: &str) -> Result<Vec<T>> {
    match values {
        [one] => Ok(vec![*one; files]),
        _ if values.len() == files => Ok(values.to_vec()),
        _ => Err(Error::Usage(format!(
            "{flag} given {} times for {files} --extra files: give one {what} for all, or one per file in the order of --extra",
            values.len()
        ))),
    }
}

/// What `train text` reports.
pub struct TextTrainReport {
    /// Training and validation sentences.
    pub sizes: (usize, usize),
    /// The kept epoch (1-based).
    pub best_epoch: usize,
    /// Validation metrics of the kept epoch (the score head).
    pub valid: Metrics,
    /// Per report file: what [`Report`] says.
    pub reports: Vec<Report>,
    /// Seconds spent on the frozen layers and on training.
    pub seconds: (f64, f64),
}

/// The score head on one `--report` file.
pub struct Report {
    /// The file.
    pub file: PathBuf,
    /// Metrics of the score head on the tuned encoder.
    pub metrics: Metrics,
    /// Neutral sentences (label 0) scoring at or above 0 (Has0-Acc2 counts them right),
    /// and all neutral sentences.
    pub neutral_kept: (usize, usize),
}

/// The throwaway heads on the pooled embedding.
struct Heads {
    score: nn::Linear,
    class: nn::Linear,
}

impl Heads {
    fn new(p: &nn::Path) -> Self {
        let d = crate::features::text::TEXT_DIM as i64;
        Self {
            score: nn::linear(p / "score", d, 1, Default::default()),
            class: nn::linear(p / "class", d, 3, Default::default()),
        }
    }

    /// Score (on the unit scale) and class logits; the unit-length embedding is scaled
    /// up so a linear head can reach the whole range.
    fn forward(&self, pooled: &Tensor) -> (Tensor, Tensor) {
        let x = pooled * 8.0;
        (
            self.score.forward(&x).squeeze_dim(-1),
            self.class.forward(&x),
        )
    }
}

/// Token states below the tuned layers, per sentence.
fn states(enc: &TextEncoder, texts: &[String], upto: usize) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(texts.len());
    // Batches of similar length pad little.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut slots: Vec<Option<Tensor>> = (0..texts.len()).map(|_| None).collect();
    for chunk in order.chunks(32) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, s) in chunk.iter().zip(enc.states(&batch, upto)?) {
            slots[i] = Some(s);
        }
    }
    out.extend(
        slots
            .into_iter()
            .map(|s| s.expect("every sentence encoded")),
    );
    Ok(out)
}

/// The encoder with the tuning being trained and the throwaway heads.
struct Tuned<'a> {
    enc: &'a TextEncoder,
    tuning: Tuning,
    heads: Heads,
    sign_weight: f64,
}

impl Tuned<'_> {
    /// Loss (L1 + cross-entropy + sign) and unit-scale scores of sentences `idx`.
    fn loss(&self, st: &[Tensor], labels: &[f32], idx: &[usize]) -> (Tensor, Tensor) {
        let refs: Vec<&Tensor> = idx.iter().map(|&i| &st[i]).collect();
        let (score, logits) = self
            .heads
            .forward(&self.enc.pooled_from(&refs, &self.tuning));
        let y: Vec<f32> = idx.iter().map(|&i| labels[i]).collect();
        // The small model's classes: neutral within the default band (0.1 of the unit scale).
        let c: Vec<i64> = y.iter().map(|&v| class_index(v, 0.1) as i64).collect();
        let loss = (&score - Tensor::from_slice(&y)).abs().mean(Kind::Float)
            + logits.cross_entropy_for_logits(&Tensor::from_slice(&c))
            + super::trainer::sign_loss(&score, &y, 1.0) * self.sign_weight;
        (loss, score)
    }

    /// Mean loss and score predictions of a whole set (no gradient).
    fn evaluate(&self, st: &[Tensor], labels: &[f32]) -> (f64, Vec<f32>) {
        let _guard = tch::no_grad_guard();
        let (mut total, mut preds) = (0.0, Vec::with_capacity(labels.len()));
        let all: Vec<usize> = (0..labels.len()).collect();
        for chunk in all.chunks(64) {
            let (loss, score) = self.loss(st, labels, chunk);
            total += loss.double_value(&[]) * chunk.len() as f64;
            preds.extend(Vec::<f32>::try_from(&score).unwrap_or_default());
        }
        (total / labels.len().max(1) as f64, preds)
    }
}

/// The training and validation sentences, labels on the unit scale.
fn gather(o: &TextTrainOptions) -> Result<(Sentences, Sentences)> {
    let ds = Dataset::open(&o.data, o.scale)?;
    let limit = o.scale.limit();
    let (mut train, mut valid) = (Sentences::default(), Sentences::default());
    for c in ds.split(Split::Train) {
        train.push(&c.text, c.label / limit);
    }
    for c in ds.split(Split::Valid) {
        valid.push(&c.text, c.label / limit);
    }
    let (extra_train, extra_valid) = extra_tagged(&o.extra, &o.extra_weight, &o.extra_tag, limit)?;
    for (t, g) in &extra_train {
        train.push(t, g / limit);
    }
    for (t, g) in &extra_valid {
        valid.push(t, g / limit);
    }
    if train.texts.is_empty() || valid.texts.is_empty() {
        return Err(DatasetError::Empty {
            root: o.data.clone(),
            reason:
                "no training or no validation sentences (train and valid splits, --extra files)"
                    .into(),
        }
        .into());
    }
    Ok((train, valid))
}

/// Tunes the encoder, saves the tuning and reports.
pub fn train_text(o: &TextTrainOptions) -> Result<TextTrainReport> {
    let (train, valid) = gather(o)?;
    let enc = TextEncoder::open(o.encoder, &o.models_dir)?;
    let depth = enc.depth();
    if o.layers == 0 || o.layers > depth {
        return Err(Error::Usage(format!(
            "--layers {}: tune between 1 and {depth} layers of {}",
            o.layers,
            o.encoder.name()
        )));
    }
    let from = depth - o.layers;
    let t0 = Instant::now();
    let st_train = states(&enc, &train.texts, from)?;
    let st_valid = states(&enc, &valid.texts, from)?;
    let frozen_s = t0.elapsed().as_secs_f64();
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let model = Tuned {
        enc: &enc,
        tuning: Tuning::fresh(&(vs.root() / "tuning"), from, depth, o.rank),
        heads: Heads::new(&(vs.root() / "heads")),
        sign_weight: o.sign_weight,
    };
    let t1 = Instant::now();
    let (best_epoch, best_preds) = fit(o, &model, &vs, (&st_train, &train), (&st_valid, &valid))?;
    let train_s = t1.elapsed().as_secs_f64();
    model.tuning.save(&o.out)?;
    let reports = report(o, &model.heads)?;
    Ok(TextTrainReport {
        sizes: (train.texts.len(), valid.texts.len()),
        best_epoch,
        valid: on_scale(&best_preds, &valid.labels, o.scale.limit()),
        reports,
        seconds: (frozen_s, train_s),
    })
}

/// The epochs: Adam steps over the shuffled training sentences, then the validation loss;
/// the tuning and heads of the epoch with the lowest loss are restored at the end.
/// Returns that epoch and its validation predictions.
fn fit(
    o: &TextTrainOptions,
    model: &Tuned,
    vs: &nn::VarStore,
    (st_train, train): (&[Tensor], &Sentences),
    (st_valid, valid): (&[Tensor], &Sentences),
) -> Result<(usize, Vec<f32>)> {
    let mut opt = nn::Adam::default()
        .build(vs, o.lr)
        .map_err(|e| ModelError::Runtime {
            name: "train text".into(),
            reason: e.to_string(),
        })?;
    let snapshot = || -> Vec<Tensor> {
        vs.trainable_variables()
            .iter()
            .map(|p| p.detach().copy())
            .collect()
    };
    let mut rng = (o.seed as u64) | 1;
    let (mut best, mut best_epoch, mut best_preds) = (f64::INFINITY, 0, Vec::new());
    let mut kept = snapshot();
    let mut order: Vec<usize> = (0..train.texts.len()).collect();
    for epoch in 1..=o.epochs {
        super::trainer::shuffle(&mut order, &mut rng);
        for idx in order.chunks(o.batch.max(1)) {
            let (loss, _) = model.loss(st_train, &train.labels, idx);
            opt.backward_step(&loss);
        }
        let (loss, preds) = model.evaluate(st_valid, &valid.labels);
        let m = on_scale(&preds, &valid.labels, o.scale.limit());
        tracing::info!(
            epoch,
            loss,
            has0_acc2 = m.has0_acc2,
            "train text: validation"
        );
        println!(
            "epoch {epoch}: valid loss {loss:.4}, Has0-Acc2 {:.3}, MAE {:.3}",
            m.has0_acc2, m.mae
        );
        if loss < best {
            (best, best_epoch, best_preds) = (loss, epoch, preds);
            kept = snapshot();
        }
    }
    tch::no_grad(|| {
        for (mut p, k) in vs.trainable_variables().into_iter().zip(&kept) {
            p.copy_(k);
        }
    });
    Ok((best_epoch, best_preds))
}

/// Metrics of unit-scale scores on the dataset's own scale (MOSI's Acc7 and MAE count in
/// [-3, 3] units).
fn on_scale(preds: &[f32], truth: &[f32], limit: f32) -> Metrics {
    let scaled = |v: &[f32]| -> Vec<f32> { v.iter().map(|x| x * limit).collect() };
    metrics::compute(&scaled(preds), &scaled(truth))
}

/// Scores the `--report` files through the saved tuning (loaded back as a run loads it).
fn report(o: &TextTrainOptions, heads: &Heads) -> Result<Vec<Report>> {
    let limit = o.scale.limit();
    let spec = EncoderSpec {
        kind: o.encoder,
        tuning: Some(o.out.clone()),
    };
    let tuned = spec.open(&o.models_dir)?;
    let _guard = tch::no_grad_guard();
    let mut out = Vec::new();
    for f in &o.report {
        let rows = read_sentences(f, limit)?;
        let texts: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
        let truth: Vec<f32> = rows.iter().map(|(_, g)| g / limit).collect();
        let mut preds = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            let (s, _) = heads.forward(&tuned.encode(chunk)?);
            preds.extend(Vec::<f32>::try_from(&s).unwrap_or_default());
        }
        let neutral: Vec<f32> = (0..truth.len())
            .filter(|&i| truth[i] == 0.0)
            .map(|i| preds[i])
            .collect();
        let kept = neutral.iter().filter(|&&p| p >= 0.0).count();
        out.push(Report {
            file: f.clone(),
            metrics: on_scale(&preds, &truth, limit),
            neutral_kept: (kept, neutral.len()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_files_read_two_or_three_columns_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.tsv");
        std::fs::write(
            &p,
            "domain\tgrade\ttext\nsupport\t0.4\tfine, thanks\n\n-1.0\tawful\n",
        )
        .unwrap();
        let rows = read_sentences(&p, 1.0).unwrap();
        assert_eq!(
            rows,
            vec![
                ("fine, thanks".to_string(), 0.4),
                ("awful".to_string(), -1.0)
            ]
        );
        std::fs::write(&p, "0.2\tok\nx\t0.2\tok\tmore\n").unwrap();
        let e = read_sentences(&p, 1.0).unwrap_err().to_string();
        assert!(
            e.contains("s.tsv") && e.contains("row 2") && e.contains("4 columns"),
            "{e}"
        );
        std::fs::write(&p, "0.2\tok\n2.5\ttoo strong\n").unwrap();
        let e = read_sentences(&p, 1.0).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("outside [-1, 1]"), "{e}");
        std::fs::write(&p, "0.2\tok\nhigh\tbad grade\n").unwrap();
        let e = read_sentences(&p, 1.0).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn extra_weights_apply_per_file_and_validation_lines_are_never_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tsv"), dir.path().join("b.tsv"));
        let lines = |tag: &str| -> String { (1..=5).map(|i| format!("0.5\t{tag}{i}\n")).collect() };
        std::fs::write(&a, lines("a")).unwrap();
        std::fs::write(&b, lines("b")).unwrap();
        let files = [a, b];
        let count = |rows: &Graded, t: &str| rows.iter().filter(|r| r.0 == t).count();
        let (train, valid) = extra_sentences(&files, &[3, 1], 3.0).unwrap();
        assert_eq!((count(&train, "a1"), count(&train, "b1")), (3, 1));
        assert_eq!(train.len(), 4 * 3 + 4);
        assert_eq!(valid, vec![("a5".into(), 0.5), ("b5".into(), 0.5)]);
        let (train, _) = extra_sentences(&files, &[2], 3.0).unwrap();
        assert_eq!(train.len(), 16);
        let e = extra_sentences(&files, &[1, 2, 3], 3.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--extra-weight given 3 times for 2"), "{e}");
    }

    #[test]
    fn tagged_files_carry_their_domain_and_untagged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tsv"), dir.path().join("b.tsv"));
        std::fs::write(&a, "domain\tgrade\ttext\ntweet\t-1\tso slow\n").unwrap();
        std::fs::write(&b, "support\t0\tone moment\n").unwrap();
        let files = [a.clone(), b];
        let (train, _) = extra_tagged(&files, &[1], &[true, false], 3.0).unwrap();
        assert_eq!(
            train,
            vec![("tweet: so slow".into(), -1.0), ("one moment".into(), 0.0)]
        );
        let e = extra_tagged(&files, &[1], &[true, false, true], 3.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--extra-tag given 3 times for 2"), "{e}");
        std::fs::write(&a, "-1\tso slow\n").unwrap();
        let e = extra_tagged(&files, &[1], &[true], 3.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing domain column") && e.contains("a.tsv"),
            "{e}"
        );
    }
}
