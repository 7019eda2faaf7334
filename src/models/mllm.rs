//! The multimodal large model of the cascade: the LLM ([`Llm`]: SmolLM2 or Gemma 3) plus a small adapter
//! (LoRA on the query/value projections, projectors that turn the window's audio and
//! visual feature sequences into soft tokens placed in the prompt beside the transcript,
//! and a value head on the last hidden state).
//!
//! Class probabilities are the next-token probabilities of the three label words
//! (renormalised over them), the uncertainty is their entropy and the score comes from
//! the value head. The cross-verification prompt (stage 3) also states the two earlier
//! opinions and their uncertainties.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::error::ModelError;
use crate::features::WindowFeatures;
use crate::features::audio::AUDIO_DIM;
use crate::features::visual::VIS_DIM;
use crate::models::llm::{Arch, KvCache, Llm, Lora, LoraBlock};
use crate::routing::fusion::Verdict;
use crate::routing::thresholds::Calibration;
use crate::routing::uncertainty::entropy;

/// Version of the prompt layout; an adapter trained on another version is refused.
pub(crate) const PROMPT_VERSION: u32 = 1;
/// The label words, in class order (0 negative, 1 neutral, 2 positive).
pub(crate) const LABEL_WORDS: [&str; 3] = ["negative", "neutral", "positive"];
/// Longest transcript (characters) placed in a prompt; longer ones are cut at a word.
pub(crate) const MAX_TEXT_CHARS: usize = 400;

/// Fixed start of every prompt (its keys and values are computed once and cached), in
/// SmolLM2's chat format.
const PREFIX: &str = "<|im_start|>system\nYou judge the sentiment of a speaker from their words, voice and face.<|im_end|>\n<|im_start|>user\nWords: \"";
const QUESTION: &str =
    "\nIs the sentiment positive, neutral or negative?<|im_end|>\n<|im_start|>assistant\n";
/// The same prompt in Gemma's turn format (no system turn; `<bos>` is prepended).
const GEMMA_PREFIX: &str = "<start_of_turn>user\nYou judge the sentiment of a speaker from their words, voice and face.\nWords: \"";
const GEMMA_QUESTION: &str =
    "\nIs the sentiment positive, neutral or negative?<end_of_turn>\n<start_of_turn>model\n";

/// The fixed prompt parts for a model family: (prefix, question).
fn template(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::Llama => (PREFIX, QUESTION),
        Arch::Gemma3 => (GEMMA_PREFIX, GEMMA_QUESTION),
    }
}

/// Metadata stored beside the adapter weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdapterMeta {
    /// Prompt layout version.
    pub(crate) prompt_version: u32,
    /// Feature layout version.
    pub(crate) feature_version: u32,
    /// Size in bytes of the GGUF the adapter was trained on (a cheap identity check).
    pub(crate) base_model_bytes: u64,
    /// LoRA rank.
    pub rank: i64,
    /// LoRA alpha (scale = alpha / rank).
    pub(crate) alpha: f64,
    /// Soft tokens for audio.
    pub(crate) audio_tokens: i64,
    /// Soft tokens for video.
    pub(crate) visual_tokens: i64,
    /// Audio feature normalisation.
    pub audio_mean: Vec<f32>,
    /// Audio feature normalisation.
    pub audio_std: Vec<f32>,
    /// Visual feature normalisation.
    pub(crate) visual_mean: Vec<f32>,
    /// Visual feature normalisation.
    pub(crate) visual_std: Vec<f32>,
    /// Neutral band.
    pub band: f32,
    /// Label range limit (3 for MOSI, 1 for SIMS).
    pub(crate) score_limit: f32,
    /// Uncertainty calibration on the validation split.
    pub(crate) calibration: Option<Calibration>,
    /// lambda used for tau2.
    pub lambda: f32,
    /// tau2 (large-model acceptance threshold).
    pub tau2: Option<f32>,
}

impl AdapterMeta {
    /// Fresh metadata with identity normalisation.
    pub fn new(base_model_bytes: u64, rank: i64, band: f32, score_limit: f32) -> Self {
        Self {
            prompt_version: PROMPT_VERSION,
            feature_version: crate::features::FEATURE_VERSION,
            base_model_bytes,
            rank,
            alpha: 2.0 * rank as f64,
            audio_tokens: 4,
            visual_tokens: 2,
            audio_mean: vec![0.0; AUDIO_DIM],
            audio_std: vec![1.0; AUDIO_DIM],
            visual_mean: vec![0.0; VIS_DIM],
            visual_std: vec![1.0; VIS_DIM],
            band,
            score_limit,
            calibration: None,
            lambda: 0.5,
            tau2: None,
        }
    }
}

/// The trainable part: LoRA, projectors and value head.
pub struct Adapter {
    /// Parameters.
    pub vs: nn::VarStore,
    /// Metadata.
    pub meta: AdapterMeta,
    pub(crate) lora: Vec<LoraBlock>,
    a1: nn::Linear,
    a2: nn::Linear,
    v1: nn::Linear,
    v2: nn::Linear,
    value: nn::Linear,
}

impl Adapter {
    fn new(meta: AdapterMeta, llm: &Llm) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let sh = llm.shape;
        let (c, q, kv, r) = (sh.embd, sh.q_dim(), sh.kv_heads * sh.head_dim(), meta.rank);
        let a_init = nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0 / (c as f64).sqrt(),
        };
        let lora = (0..sh.layers)
            .map(|i| {
                let b = &p / format!("lora{i}");
                LoraBlock {
                    q_a: b.var("q_a", &[c, r], a_init),
                    q_b: b.var("q_b", &[r, q], nn::Init::Const(0.0)),
                    v_a: b.var("v_a", &[c, r], a_init),
                    v_b: b.var("v_b", &[r, kv], nn::Init::Const(0.0)),
                }
            })
            .collect();
        let small = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            ..Default::default()
        };
        Self {
            a1: nn::linear(&p / "a1", 2 * AUDIO_DIM as i64, 256, Default::default()),
            a2: nn::linear(&p / "a2", 256, c, small),
            v1: nn::linear(&p / "v1", 2 * VIS_DIM as i64, 128, Default::default()),
            v2: nn::linear(&p / "v2", 128, c, small),
            value: nn::linear(&p / "value", c, 1, Default::default()),
            lora,
            vs,
            meta,
        }
    }

    /// Paths of the weights and metadata for a base path (e.g. `models/mllm-adapter`).
    pub(crate) fn paths(base: &Path) -> (PathBuf, PathBuf) {
        crate::models::weight_paths(base)
    }

    /// Saves weights (`.safetensors`) and metadata (`.json`).
    pub fn save(&self, base: &Path) -> Result<(), ModelError> {
        crate::models::save_weights(&self.vs, &self.meta, base, "mllm adapter")
    }
}

/// One request to the large model.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Transcript of the window.
    pub text: &'a str,
    /// Audio/visual features of the window.
    pub features: &'a WindowFeatures,
    /// For cross-verification: the small model's and the large model's first opinions.
    pub earlier: Option<(Verdict, Verdict)>,
}

/// The large model's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    /// Score from the value head, clipped to the label range.
    pub score: f32,
    /// Class probabilities (negative, neutral, positive) from the label words.
    pub probs: [f32; 3],
    /// Entropy of `probs` (nats).
    pub uncertainty: f32,
    /// Prompt length in tokens (cached prefix included).
    pub prompt_tokens: usize,
}

impl Answer {
    /// As a verdict for the routing functions.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            score: self.score,
            uncertainty: self.uncertainty,
        }
    }
}

/// Text of the cross-verification paragraph (also used by the remote backend).
pub(crate) fn cross_check_text(small: Verdict, large: Verdict, band: f32) -> String {
    let word = |v: Verdict| LABEL_WORDS[crate::routing::uncertainty::class_index(v.score, band)];
    format!(
        "\nTwo earlier readings disagree. Fast model: {} (score {:+.1}, uncertainty {:.2}). First look: {} (score {:+.1}, uncertainty {:.2}). Re-examine the evidence.",
        word(small),
        small.score,
        small.uncertainty,
        word(large),
        large.score,
        large.uncertainty
    )
}

/// The transcript as placed in a prompt: trimmed, quotes replaced, cut at a word.
pub(crate) fn prompt_text(text: &str) -> String {
    let t = text.trim().replace('"', "'");
    if t.len() <= MAX_TEXT_CHARS {
        return t;
    }
    let mut cut = MAX_TEXT_CHARS;
    while !t.is_char_boundary(cut) {
        cut -= 1;
    }
    match t[..cut].rfind(' ') {
        Some(sp) => t[..sp].to_string(),
        None => t[..cut].to_string(),
    }
}

/// Segment means and standard deviations of a frame sequence: `[segments, 2 * dim]`,
/// normalised and clipped; zeros when there are no frames.
fn segment_stats(frames: &[f32], dim: usize, segs: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let n = frames.len() / dim;
    let mut out = vec![0f32; segs * 2 * dim];
    if n == 0 {
        return out;
    }
    for s in 0..segs {
        let (a, b) = (
            s * n / segs,
            ((s + 1) * n / segs).max(s * n / segs + 1).min(n),
        );
        let cnt = (b - a) as f32;
        for k in 0..dim {
            let z = |i: usize| ((frames[i * dim + k] - mean[k]) / std[k]).clamp(-5.0, 5.0);
            let m = (a..b).map(z).sum::<f32>() / cnt;
            let var = (a..b).map(|i| (z(i) - m).powi(2)).sum::<f32>() / cnt;
            out[s * 2 * dim + k] = m;
            out[s * 2 * dim + dim + k] = var.sqrt();
        }
    }
    out
}

/// The multimodal large model.
pub struct Mllm {
    /// The language model.
    pub llm: Llm,
    /// The adapter.
    pub adapter: Adapter,
    label_ids: [i64; 3],
    prefix_ids: Vec<i64>,
    question_ids: Vec<i64>,
    prefix_cache: OnceCell<KvCache>,
}

/// Outputs of a batch forward: label-word logits `[B, 3]` and scores `[B]`.
pub struct Outputs {
    /// Label-word logits.
    pub logits: Tensor,
    /// Value-head scores (unclipped).
    pub(crate) scores: Tensor,
    /// Prompt length in tokens per query (cached prefix included).
    pub tokens: Vec<usize>,
}

impl Mllm {
    /// A model with a fresh adapter (for training).
    pub fn fresh(gguf: &Path, meta: AdapterMeta) -> Result<Self, ModelError> {
        let llm = Llm::load(gguf)?;
        let adapter = Adapter::new(meta, &llm);
        Self::assemble(llm, adapter)
    }

    /// Loads the LLM and a trained adapter; everything is checked here, at start-up.
    pub fn load(gguf: &Path, adapter: &Path) -> Result<Self, ModelError> {
        let meta = Self::adapter_meta(gguf, adapter)?;
        let (w, _) = Adapter::paths(adapter);
        let llm = Llm::load(gguf)?;
        let mut adapter = Adapter::new(meta, &llm);
        adapter.vs.load(&w).map_err(|e| ModelError::Corrupt {
            path: w.clone(),
            reason: format!("weights do not match the adapter architecture ({e})"),
        })?;
        Self::assemble(llm, adapter)
    }

    /// The checks of [`Mllm::load`] that need no weights decoded (a few milliseconds):
    /// the adapter's files and metadata, that it was trained on this base model (its
    /// byte size), and the GGUF's header, tensor directory and llama hyper-parameters.
    /// Returns the adapter's metadata.
    pub fn check(gguf: &Path, adapter: &Path) -> Result<AdapterMeta, ModelError> {
        let meta = Self::adapter_meta(gguf, adapter)?;
        Llm::check(gguf)?;
        Ok(meta)
    }

    /// The adapter's metadata, after checking its files, versions and base model size.
    fn adapter_meta(gguf: &Path, adapter: &Path) -> Result<AdapterMeta, ModelError> {
        let (w, m) = Adapter::paths(adapter);
        for p in [&w, &m] {
            if !p.is_file() {
                return Err(ModelError::Missing {
                    path: p.clone(),
                    flag: "mllm-adapter",
                });
            }
        }
        let text = std::fs::read_to_string(&m).map_err(|source| ModelError::Io {
            path: m.clone(),
            source,
        })?;
        let meta: AdapterMeta = serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
            path: m.clone(),
            reason: e.to_string(),
        })?;
        let refuse = |reason: String| ModelError::Corrupt {
            path: m.clone(),
            reason,
        };
        if meta.prompt_version != PROMPT_VERSION {
            return Err(refuse(format!(
                "adapter was trained with prompt version {}, this build uses {PROMPT_VERSION}; retrain with `sentistream train mllm`",
                meta.prompt_version
            )));
        }
        if meta.feature_version != crate::features::FEATURE_VERSION {
            return Err(refuse(format!(
                "adapter was trained on feature version {}, this build computes {}; retrain with `sentistream train mllm`",
                meta.feature_version,
                crate::features::FEATURE_VERSION
            )));
        }
        let bytes = std::fs::metadata(gguf).map(|md| md.len()).unwrap_or(0);
        if gguf.is_file() && bytes != meta.base_model_bytes {
            return Err(refuse(format!(
                "adapter was trained on a {}-byte base model, {} has {bytes} bytes; use the matching GGUF or retrain",
                meta.base_model_bytes,
                gguf.display()
            )));
        }
        Ok(meta)
    }

    fn assemble(llm: Llm, adapter: Adapter) -> Result<Self, ModelError> {
        let label_ids = [
            llm.single_token(LABEL_WORDS[0])?,
            llm.single_token(LABEL_WORDS[1])?,
            llm.single_token(LABEL_WORDS[2])?,
        ];
        let (prefix, question) = template(llm.shape.arch);
        let mut prefix_ids: Vec<i64> = llm.bos().into_iter().collect();
        prefix_ids.extend(llm.tokenize(prefix)?);
        let question_ids = llm.tokenize(question)?;
        Ok(Self {
            llm,
            adapter,
            label_ids,
            prefix_ids,
            question_ids,
            prefix_cache: OnceCell::new(),
        })
    }

    /// Length of the fixed, cached prompt prefix in tokens.
    pub fn prefix_tokens(&self) -> usize {
        self.prefix_ids.len()
    }

    fn lora(&self) -> Lora<'_> {
        Lora {
            blocks: &self.adapter.lora,
            scale: self.adapter.meta.alpha / self.adapter.meta.rank as f64,
        }
    }

    /// Embeddings of the variable part of a prompt `[T, embd]` (after the cached prefix).
    fn suffix(&self, q: &Query) -> Result<Tensor, ModelError> {
        let meta = &self.adapter.meta;
        let mut ids = self.llm.tokenize(&prompt_text(q.text))?;
        ids.extend(self.llm.tokenize("\"\nVoice:")?);
        let words = self.llm.embed(&ids);
        let a = segment_stats(
            &q.features.audio,
            AUDIO_DIM,
            meta.audio_tokens as usize,
            &meta.audio_mean,
            &meta.audio_std,
        );
        let v = segment_stats(
            &q.features.visual,
            VIS_DIM,
            meta.visual_tokens as usize,
            &meta.visual_mean,
            &meta.visual_std,
        );
        let a = Tensor::from_slice(&a).view([meta.audio_tokens, 2 * AUDIO_DIM as i64]);
        let v = Tensor::from_slice(&v).view([meta.visual_tokens, 2 * VIS_DIM as i64]);
        let a = a
            .apply(&self.adapter.a1)
            .gelu("none")
            .apply(&self.adapter.a2);
        let v = v
            .apply(&self.adapter.v1)
            .gelu("none")
            .apply(&self.adapter.v2);
        let face = self.llm.embed(&self.llm.tokenize("\nFace:")?);
        let mut tail = Vec::new();
        if let Some((s, l)) = q.earlier {
            tail.extend(self.llm.tokenize(&cross_check_text(s, l, meta.band))?);
        }
        tail.extend_from_slice(&self.question_ids);
        let tail = self.llm.embed(&tail);
        Ok(Tensor::cat(&[words, a, face, v, tail], 0))
    }

    fn prefix(&self, b: i64, cached: bool) -> Result<KvCache, ModelError> {
        let compute = || -> Result<KvCache, ModelError> {
            let x = self.llm.embed(&self.prefix_ids).unsqueeze(0);
            Ok(self.llm.forward(&x, None, Some(&self.lora()))?.1)
        };
        if !cached {
            return Ok(compute()?.expand(b));
        }
        if self.prefix_cache.get().is_none() {
            let c = tch::no_grad(compute)?;
            let _ = self.prefix_cache.set(c);
        }
        Ok(self.prefix_cache.get().expect("set above").expand(b))
    }

    /// Batch forward. `train` recomputes the prefix with gradients (LoRA changes it);
    /// otherwise the prefix's keys and values are computed once and reused.
    pub fn forward(&self, qs: &[Query], train: bool) -> Result<Outputs, ModelError> {
        let b = qs.len() as i64;
        let parts = qs
            .iter()
            .map(|q| self.suffix(q))
            .collect::<Result<Vec<_>, _>>()?;
        let lens: Vec<i64> = parts.iter().map(|p| p.size()[0]).collect();
        let t = *lens.iter().max().unwrap_or(&1);
        let c = self.llm.shape.embd;
        let padded: Vec<Tensor> = parts
            .iter()
            .map(|p| {
                let n = p.size()[0];
                if n == t {
                    p.shallow_clone()
                } else {
                    Tensor::cat(
                        &[
                            p.shallow_clone(),
                            Tensor::zeros([t - n, c], (Kind::Float, Device::Cpu)),
                        ],
                        0,
                    )
                }
            })
            .collect();
        let x = Tensor::stack(&padded, 0);
        let cache = self.prefix(b, !train)?;
        let (h, _) = self.llm.forward(&x, Some(&cache), Some(&self.lora()))?;
        let last = Tensor::from_slice(&lens.iter().map(|l| l - 1).collect::<Vec<_>>());
        let idx = last.view([b, 1, 1]).expand([b, 1, c], false);
        let hl = h.gather(1, &idx, false).squeeze_dim(1);
        let logits = hl.matmul(&self.llm.head_rows(&self.label_ids).tr());
        let scores = hl.apply(&self.adapter.value).squeeze_dim(-1);
        let tokens = lens
            .iter()
            .map(|l| self.prefix_ids.len() + *l as usize)
            .collect();
        Ok(Outputs {
            logits,
            scores,
            tokens,
        })
    }

    /// Prompt length in tokens of a query (prefix included).
    pub fn prompt_tokens(&self, q: &Query) -> Result<usize, ModelError> {
        Ok(self.prefix_ids.len() + self.suffix(q)?.size()[0] as usize)
    }

    /// Answers a batch of queries (no gradients).
    pub fn judge_batch(&self, qs: &[Query]) -> Result<Vec<Answer>, ModelError> {
        let _g = tch::no_grad_guard();
        let out = self.forward(qs, false)?;
        let probs = out.logits.softmax(-1, Kind::Float);
        let limit = self.adapter.meta.score_limit;
        let mut answers = Vec::with_capacity(qs.len());
        for i in 0..qs.len() {
            let p: Vec<f32> =
                Vec::<f32>::try_from(probs.get(i as i64)).map_err(|e| ModelError::Runtime {
                    name: "mllm".into(),
                    reason: e.to_string(),
                })?;
            let probs = [p[0], p[1], p[2]];
            let score = out.scores.double_value(&[i as i64]) as f32;
            answers.push(Answer {
                score: score.clamp(-limit, limit),
                probs,
                uncertainty: entropy(&probs),
                prompt_tokens: out.tokens[i],
            });
        }
        Ok(answers)
    }

    /// Answers one query.
    pub fn judge(&self, q: &Query) -> Result<Answer, ModelError> {
        Ok(self.judge_batch(std::slice::from_ref(q))?.remove(0))
    }
}
