//! A decoder-only language model in libtorch, loaded from its GGUF file: Llama
//! (SmolLM2-135M-Instruct) or Gemma 3 (Gemma-3-270M). Weights are dequantised and kept in
//! 8-bit blocks (computed in f32), the tokenizer is rebuilt from the GGUF metadata and run
//! through the `tokenizers` crate; a KV cache, optional LoRA on the query and value
//! projections, and input embeddings that may carry soft tokens.
//!
//! Layout facts this code relies on (checked at load time where possible):
//! - dequantised matrices are `[out, in]` (the reverse of the GGUF shape); they are kept
//!   transposed (`[in, out]`) so a projection is one `matmul`;
//! - Llama: q/k weights are stored permuted for adjacent-pair RoPE (llama.cpp's layout),
//!   so RoPE rotates pairs `(2i, 2i+1)`; Gemma 3 is stored unpermuted and rotates the two
//!   halves of each head (`i`, `i + head_dim / 2`);
//! - Gemma 3's RMS-norm weights are stored with Gemma's `1 +` already added (llama.cpp's
//!   converter does it), so every norm here is `x / rms(x) * w`;
//! - the output projection is tied to the token embedding (no `output.weight`).

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::assets::gguf::{Gguf, TensorType};
use crate::error::ModelError;
/// Values that share one scale in a [`Packed`] matrix.
const BLOCK: i64 = 32;

/// A big weight matrix (projection, embedding) kept in 8-bit blocks: every run of
/// [`BLOCK`] values along a row of the file's layout is stored as `u8` codes from the
/// block's minimum in steps of the file's own grid: a Q4_1 block's 16 evenly spaced
/// levels map onto codes exactly (step = range / 255, and 255 = 15 x 17), a Q8_0
/// block's levels too (step = its scale, largest magnitude / 127: at most 255 codes);
/// other types use range / 255 (within half a step). So SmolLM2's weights are kept
/// without loss in 140 MB instead of 270 MB in f16 (540 MB in f32). Widening a matrix to
/// f32 where it is used costs about as much as reading it, which a matmul over a prompt
/// does anyway (the call's large-model time: 2.68-2.74 s against 2.55-2.62 s in f16).
pub(crate) struct Packed {
    q: Tensor,
    /// Per block: `[rows, blocks, 1]`.
    min: Tensor,
    step: Tensor,
    rows: i64,
    cols: i64,
    /// Used as `[cols, rows]` (a linear layer's `x.matmul(w)`).
    transposed: bool,
}

impl Packed {
    /// Packs an f32 matrix `[rows, cols]` read from a tensor of type `kind` (a row whose
    /// length is not a multiple of [`BLOCK`] is one block). Done in place over the
    /// values, so loading leaves no large temporaries behind.
    fn new(data: &[f32], (rows, cols): (i64, i64), kind: TensorType, transposed: bool) -> Self {
        let block = if cols % BLOCK == 0 { BLOCK } else { cols };
        let n = data.len() / block as usize;
        let (mut q, mut min, mut step) = (vec![0u8; data.len()], vec![0f32; n], vec![0f32; n]);
        for (i, vals) in data.chunks_exact(block as usize).enumerate() {
            let lo = vals.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = match kind {
                TensorType::Q8_0 if block == BLOCK => hi.abs().max(lo.abs()) / 127.0,
                _ => (hi - lo) / 255.0,
            }
            .max(1e-12);
            for (c, v) in q[i * block as usize..].iter_mut().zip(vals) {
                *c = ((v - lo) / d).round().clamp(0.0, 255.0) as u8;
            }
            (min[i], step[i]) = (lo, d);
        }
        let shape = [rows, cols / block, 1];
        Self {
            q: Tensor::from_slice(&q).view([rows, cols / block, block]),
            min: Tensor::from_slice(&min).view(shape),
            step: Tensor::from_slice(&step).view(shape),
            rows,
            cols,
            transposed,
        }
    }

    /// The matrix in f32 (`[cols, rows]` when transposed).
    fn f32(&self) -> Tensor {
        let mut w = self.q.to_kind(Kind::Float);
        w *= &self.step;
        w += &self.min;
        let w = w.view([self.rows, self.cols]);
        if self.transposed { w.tr() } else { w }
    }

    /// Some rows in f32, `[n, cols]`.
    fn rows(&self, ids: &Tensor) -> Tensor {
        let mut w = self.q.index_select(0, ids).to_kind(Kind::Float);
        w *= self.step.index_select(0, ids);
        w += self.min.index_select(0, ids);
        w.view([-1, self.cols])
    }
}

/// Longest sequence (prompt + cache) the RoPE tables cover.
pub(crate) const MAX_POSITIONS: i64 = 2048;

/// The model families [`Llm`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama (SmolLM2): SiLU-gated feed-forward, RoPE on adjacent pairs.
    Llama,
    /// Gemma 3: GELU-gated feed-forward; RMS norms on each head's query and key and after
    /// attention and the feed-forward; RoPE on halves, base 10,000 on the sliding-window
    /// layers and the file's base on every sixth (global) layer; input embeddings scaled
    /// by the square root of the width.
    Gemma3,
}

impl Arch {
    /// The GGUF `general.architecture` name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// Gemma 3: every sixth layer (5, 11, ...) attends globally, the others within the
/// sliding window (llama.cpp's and Hugging Face's layout for the 270M..27B models).
const GEMMA3_GLOBAL_EVERY: usize = 6;
/// Gemma 3: RoPE base of the sliding-window layers (the file's base is the global one).
const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlmShape {
    /// Model family.
    pub arch: Arch,
    /// Transformer blocks.
    pub(crate) layers: usize,
    /// Hidden width.
    pub(crate) embd: i64,
    /// Feed-forward width.
    pub(crate) ffn: i64,
    /// Query heads.
    pub(crate) heads: i64,
    /// Width of one attention head (Gemma 3's is not `embd / heads`).
    pub(crate) head_width: i64,
    /// Key/value heads (grouped-query attention).
    pub(crate) kv_heads: i64,
    /// RoPE frequency base (Gemma 3: of the global layers).
    pub(crate) rope_base: f64,
    /// Sliding attention window of the local layers (0: every layer attends globally).
    pub(crate) window: i64,
    /// RMS-norm epsilon.
    pub(crate) rms_eps: f64,
    /// Vocabulary size.
    pub(crate) vocab: i64,
}

impl LlmShape {
    /// Width of one attention head.
    pub(crate) fn head_dim(&self) -> i64 {
        self.head_width
    }

    /// Width of all query heads together (the attention's inner width).
    pub(crate) fn q_dim(&self) -> i64 {
        self.heads * self.head_width
    }

    /// Whether block `i` attends only within the sliding window.
    fn is_local(&self, i: usize) -> bool {
        self.window > 0 && !(i + 1).is_multiple_of(GEMMA3_GLOBAL_EVERY)
    }
}

/// Gemma 3's extra norms of one block.
struct GemmaNorms {
    /// Per-head query norm `[head_dim]`.
    q: Tensor,
    /// Per-head key norm `[head_dim]`.
    k: Tensor,
    /// Norm of the attention output before the residual add `[embd]`.
    post_attn: Tensor,
    /// Norm of the feed-forward output before the residual add `[embd]`.
    post_ffn: Tensor,
}

struct Block {
    attn_norm: Tensor,
    wq: Packed,
    wk: Packed,
    wv: Packed,
    wo: Packed,
    ffn_norm: Tensor,
    w_gate: Packed,
    w_up: Packed,
    w_down: Packed,
    gemma: Option<GemmaNorms>,
}

/// LoRA factors for one block's query and value projections: `x A B * scale` is added.
pub(crate) struct LoraBlock {
    /// Query down-projection `[embd, rank]`.
    pub(crate) q_a: Tensor,
    /// Query up-projection `[rank, embd]`.
    pub(crate) q_b: Tensor,
    /// Value down-projection `[embd, rank]`.
    pub(crate) v_a: Tensor,
    /// Value up-projection `[rank, kv_dim]`.
    pub(crate) v_b: Tensor,
}

/// LoRA adapters for all blocks.
pub struct Lora<'a> {
    /// One entry per block.
    pub(crate) blocks: &'a [LoraBlock],
    /// alpha / rank.
    pub(crate) scale: f64,
}

/// Keys and values of the tokens seen so far, per block: `[B, kv_heads, S, head_dim]`.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Cached positions.
    pub len: i64,
}

impl KvCache {
    /// The same cache repeated for a batch of `b` sequences (from a batch-1 cache).
    pub fn expand(&self, b: i64) -> KvCache {
        let rep = |t: &Tensor| {
            let s = t.size();
            t.expand([b, s[1], s[2], s[3]], false)
        };
        KvCache {
            k: self.k.iter().map(rep).collect(),
            v: self.v.iter().map(rep).collect(),
            len: self.len,
        }
    }
}

/// The language model.
pub struct Llm {
    /// Hyper-parameters.
    pub shape: LlmShape,
    /// The GGUF file it was loaded from.
    pub path: PathBuf,
    /// Tokenizer rebuilt from the GGUF metadata.
    pub tokenizer: Tokenizer,
    embed: Packed,
    blocks: Vec<Block>,
    out_norm: Tensor,
    /// RoPE cosine and sine tables of the global layers.
    rope: (Tensor, Tensor),
    /// RoPE tables of the sliding-window layers (Gemma 3).
    rope_local: Option<(Tensor, Tensor)>,
    /// Input embedding scale (Gemma 3: sqrt(embd); Llama: 1).
    embed_scale: f64,
    /// Beginning-of-sequence token, when the GGUF says sequences start with one
    /// (`tokenizer.ggml.add_bos_token`: Gemma 3 yes, SmolLM2 no).
    bos_id: Option<i64>,
    /// End-of-sequence token (generation stops there).
    eos_id: Option<i64>,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// GGUF token type of control tokens (`<bos>`, `<start_of_turn>`, ...).
const TOKEN_CONTROL: u64 = 3;
/// GGUF token type of user-defined pieces (`\n\n`, runs of spaces, `<table>`).
const TOKEN_USER: u64 = 4;
/// GGUF token type of byte-fallback tokens (`<0x0A>`).
const TOKEN_BYTE: u64 = 6;

/// Builds the tokenizer the GGUF describes: `gpt2` (byte-level BPE with merges, SmolLM2)
/// or `llama` (SentencePiece BPE with scores, Gemma 3).
pub(crate) fn tokenizer_from_gguf(g: &Gguf) -> Result<Tokenizer, ModelError> {
    match g.str("tokenizer.ggml.model").unwrap_or("") {
        "gpt2" => gpt2_tokenizer(g),
        "llama" => sentencepiece_tokenizer(g),
        model => Err(corrupt(
            &g.path,
            format!("tokenizer model {model:?} is not supported (gpt2 BPE or llama SentencePiece)"),
        )),
    }
}

/// A SentencePiece BPE tokenizer from the vocabulary, scores and token types: spaces
/// become `▁`, the pair whose merged piece scores highest is merged first (as
/// SentencePiece does; expressed as `tokenizers` BPE merges ranked by that score),
/// characters outside the vocabulary fall back to `<0xXX>` byte tokens, and control
/// tokens written in the text (`<start_of_turn>`) and user-defined pieces are matched
/// whole.
fn sentencepiece_tokenizer(g: &Gguf) -> Result<Tokenizer, ModelError> {
    use std::collections::HashMap;
    use tokenizers::decoders::{
        byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as DecodeSeq,
    };
    use tokenizers::models::bpe::{BPE, Vocab};
    use tokenizers::normalizers::Replace;
    use tokenizers::{AddedToken, DecoderWrapper};
    let bad = |what: &str| corrupt(&g.path, format!("{what} is missing or malformed"));
    let tokens = g
        .strings("tokenizer.ggml.tokens")
        .ok_or_else(|| bad("tokenizer.ggml.tokens"))?;
    let scores = g
        .floats("tokenizer.ggml.scores")
        .filter(|s| s.len() == tokens.len())
        .ok_or_else(|| bad("tokenizer.ggml.scores"))?;
    let types = g
        .uints("tokenizer.ggml.token_type")
        .filter(|t| t.len() == tokens.len())
        .ok_or_else(|| bad("tokenizer.ggml.token_type"))?;
    let plain = |i: usize| types[i] != TOKEN_CONTROL && types[i] != TOKEN_BYTE;
    let index: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| plain(*i))
        .map(|(i, t)| (*t, i))
        .collect();
    // Every split of a piece into two pieces is a merge ranked by the piece's score.
    let mut ranked: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, t) in tokens.iter().enumerate().filter(|(i, _)| plain(*i)) {
        for (cut, _) in t.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (index.get(&t[..cut]), index.get(&t[cut..])) {
                ranked.push((-scores[i], i, l, r));
            }
        }
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let merges = ranked
        .iter()
        .map(|&(_, _, l, r)| (tokens[l].to_string(), tokens[r].to_string()))
        .collect();
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let fail = |e: tokenizers::Error| corrupt(&g.path, format!("tokenizer cannot be built: {e}"));
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(fail)?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(Replace::new(" ", "\u{2581}").map_err(fail)?))
        .map_err(fail)?;
    let decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ").map_err(fail)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    tok.with_decoder(Some(DecodeSeq::new(decoders)));
    let control: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == TOKEN_CONTROL)
        .map(|(_, t)| AddedToken::from(t.to_string(), true))
        .collect();
    tok.add_special_tokens(control).map_err(fail)?;
    // User-defined pieces (runs of spaces, tabs and newlines, HTML tags) are matched whole
    // in the raw text before anything else, as llama.cpp does.
    let user: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == TOKEN_USER)
        .map(|(_, t)| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    tok.add_tokens(user).map_err(fail)?;
    Ok(tok)
}

/// Builds a `tokenizers` BPE tokenizer (GPT-2 byte level, digits split one by one, as the
/// GGUF's `smollm` pre-tokenizer type says) from the GGUF vocabulary and merges.
fn gpt2_tokenizer(g: &Gguf) -> Result<Tokenizer, ModelError> {
    let tokens = g
        .strings("tokenizer.ggml.tokens")
        .ok_or_else(|| corrupt(&g.path, "tokenizer.ggml.tokens is missing"))?;
    let merges = g
        .strings("tokenizer.ggml.merges")
        .ok_or_else(|| corrupt(&g.path, "tokenizer.ggml.merges is missing"))?;
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    // Control tokens (<|im_start|>, <|endoftext|>, ...) are matched whole, never split.
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.starts_with("<|") && t.ends_with("|>") || t.starts_with("<file_sep"))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    spec.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| corrupt(&g.path, format!("tokenizer cannot be built: {e}")))
}

impl Llm {
    /// Loads a Llama (SmolLM2) or Gemma 3 GGUF; a missing, truncated or foreign file is
    /// a clear error.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let (g, shape) = Self::open(path)?;
        let (c, vocab) = (shape.embd, shape.vocab);
        let mut blocks = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            blocks.push(Self::read_block(&g, path, &shape, i)?);
        }
        let embed = Self::gguf_packed(&g, path, "token_embd.weight", (vocab, c), false)?;
        let out_norm = Self::gguf_tensor(&g, path, "output_norm.weight", &[c])?;
        let tokenizer = tokenizer_from_gguf(&g)?;
        let gemma = shape.arch == Arch::Gemma3;
        Ok(Self {
            shape,
            path: path.to_path_buf(),
            tokenizer,
            embed,
            blocks,
            out_norm,
            rope: Self::rope_tables(&shape, shape.rope_base),
            rope_local: gemma.then(|| Self::rope_tables(&shape, GEMMA3_LOCAL_ROPE_BASE)),
            embed_scale: if gemma { (c as f64).sqrt() } else { 1.0 },
            bos_id: match g.flag("tokenizer.ggml.add_bos_token") {
                Some(true) => g.uint("tokenizer.ggml.bos_token_id").map(|b| b as i64),
                _ => None,
            },
            eos_id: g.uint("tokenizer.ggml.eos_token_id").map(|e| e as i64),
        })
    }

    /// Checks that `path` is a Llama or Gemma 3 GGUF with consistent hyper-parameters,
    /// reading only its header and tensor directory.
    pub fn check(path: &Path) -> Result<(), ModelError> {
        Self::open(path).map(|_| ())
    }

    /// The GGUF's header and tensor directory, with its hyper-parameters checked (a
    /// Llama or Gemma 3 model, consistent head counts, the output tied to the embedding).
    fn open(path: &Path) -> Result<(Gguf, LlmShape), ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                flag: "llm",
            });
        }
        let g = Gguf::open(path)?;
        let shape = Self::read_shape(&g, path)?;
        if g.info("output.weight").is_some() {
            return Err(corrupt(
                path,
                "untied output.weight is not supported (SmolLM2 and Gemma 3 tie it to the embedding)",
            ));
        }
        Ok((g, shape))
    }

    /// Hyper-parameters from the GGUF metadata, after checking it is a Llama or Gemma 3
    /// model with consistent head counts.
    fn read_shape(g: &Gguf, path: &Path) -> Result<LlmShape, ModelError> {
        let arch = match g.str("general.architecture").unwrap_or("") {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(corrupt(
                    path,
                    format!("architecture {other:?} is not supported (llama or gemma3)"),
                ));
            }
        };
        let a = arch.name();
        let u = |k: &str| {
            g.uint(&format!("{a}.{k}"))
                .ok_or_else(|| corrupt(path, format!("metadata {a}.{k} is missing")))
        };
        let vocab = g
            .strings("tokenizer.ggml.tokens")
            .map(|t| t.len() as i64)
            .ok_or_else(|| corrupt(path, "tokenizer.ggml.tokens is missing"))?;
        let (embd, heads) = (
            u("embedding_length")? as i64,
            u("attention.head_count")? as i64,
        );
        if heads == 0 {
            return Err(corrupt(path, "head count is 0"));
        }
        let shape = LlmShape {
            arch,
            layers: u("block_count")? as usize,
            embd,
            ffn: u("feed_forward_length")? as i64,
            heads,
            head_width: g
                .uint(&format!("{a}.attention.key_length"))
                .map_or(embd / heads, |k| k as i64),
            kv_heads: u("attention.head_count_kv")? as i64,
            rope_base: g.float(&format!("{a}.rope.freq_base")).unwrap_or(10000.0),
            window: match arch {
                Arch::Llama => 0,
                Arch::Gemma3 => u("attention.sliding_window")? as i64,
            },
            rms_eps: g
                .float(&format!("{a}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            vocab,
        };
        if shape.kv_heads == 0 || shape.heads % shape.kv_heads != 0 || shape.head_width % 2 != 0 {
            return Err(corrupt(path, "head counts or widths are inconsistent"));
        }
        Ok(shape)
    }

    /// Tensor `name` dequantised to f32, checked to have the shape `want`.
    fn gguf_tensor(g: &Gguf, path: &Path, name: &str, want: &[i64]) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_slice(&Self::gguf_values(g, path, name, want)?).view(want))
    }

    /// The values of tensor `name`, after checking that its shape is `want`.
    fn gguf_values(
        g: &Gguf,
        path: &Path,
        name: &str,
        want: &[i64],
    ) -> Result<Vec<f32>, ModelError> {
        let (dims, data) = g.tensor_f32(name)?;
        let dims: Vec<i64> = dims.iter().map(|d| *d as i64).collect();
        if dims != want {
            return Err(corrupt(
                path,
                format!("tensor {name} has shape {dims:?}, expected {want:?}"),
            ));
        }
        Ok(data)
    }

    /// A linear weight: stored `[out, in]` in 8-bit blocks along `in` ([`Packed`], as
    /// the file's blocks run), used as `[in, out]` for `x.matmul(w)`.
    fn gguf_linear(
        g: &Gguf,
        path: &Path,
        name: &str,
        out: i64,
        inp: i64,
    ) -> Result<Packed, ModelError> {
        Self::gguf_packed(g, path, name, (out, inp), true)
    }

    /// A matrix `[rows, cols]` of the file, packed ([`Packed`]).
    fn gguf_packed(
        g: &Gguf,
        path: &Path,
        name: &str,
        (rows, cols): (i64, i64),
        transposed: bool,
    ) -> Result<Packed, ModelError> {
        let data = Self::gguf_values(g, path, name, &[rows, cols])?;
        let kind = g.info(name).map_or(TensorType::F32, |t| t.kind);
        Ok(Packed::new(&data, (rows, cols), kind, transposed))
    }

    /// The weights of transformer block `i`.
    fn read_block(g: &Gguf, path: &Path, shape: &LlmShape, i: usize) -> Result<Block, ModelError> {
        let (c, hd, q) = (shape.embd, shape.head_dim(), shape.q_dim());
        let kv = shape.kv_heads * hd;
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let linear = |s: &str, out: i64, inp: i64| Self::gguf_linear(g, path, &n(s), out, inp);
        let norm = |s: &str, width: i64| Self::gguf_tensor(g, path, &n(s), &[width]);
        let gemma = match shape.arch {
            Arch::Llama => None,
            Arch::Gemma3 => Some(GemmaNorms {
                q: norm("attn_q_norm", hd)?,
                k: norm("attn_k_norm", hd)?,
                post_attn: norm("post_attention_norm", c)?,
                post_ffn: norm("post_ffw_norm", c)?,
            }),
        };
        Ok(Block {
            attn_norm: norm("attn_norm", c)?,
            wq: linear("attn_q", q, c)?,
            wk: linear("attn_k", kv, c)?,
            wv: linear("attn_v", kv, c)?,
            wo: linear("attn_output", c, q)?,
            ffn_norm: norm("ffn_norm", c)?,
            w_gate: linear("ffn_gate", shape.ffn, c)?,
            w_up: linear("ffn_up", shape.ffn, c)?,
            w_down: linear("ffn_down", c, shape.ffn)?,
            gemma,
        })
    }

    /// RoPE cosine and sine tables for frequency base `base`, `[MAX_POSITIONS, head_dim / 2]`.
    fn rope_tables(shape: &LlmShape, base: f64) -> (Tensor, Tensor) {
        let half = shape.head_dim() / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (base.powf(-2.0 * i as f64 / shape.head_dim() as f64)) as f32)
            .collect();
        let pos = Tensor::arange(MAX_POSITIONS, (Kind::Float, Device::Cpu)).unsqueeze(1);
        let angles = pos * Tensor::from_slice(&inv).unsqueeze(0);
        (angles.cos(), angles.sin())
    }

    /// Token ids of `text`; control tokens written in the text (`<|im_start|>`) are parsed.
    pub fn tokenize(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Runtime {
                name: "llm tokenizer".into(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().iter().map(|i| *i as i64).collect())
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|i| *i as u32).collect();
        self.tokenizer.decode(&ids, false).unwrap_or_default()
    }

    /// Id of a single-token word; an error names the word if it splits.
    pub fn single_token(&self, word: &str) -> Result<i64, ModelError> {
        match self.tokenize(word)?.as_slice() {
            [id] => Ok(*id),
            ids => Err(ModelError::Runtime {
                name: "llm tokenizer".into(),
                reason: format!("{word:?} is {} tokens, expected one", ids.len()),
            }),
        }
    }

    /// Input embeddings of token ids: `[T, embd]` (Gemma 3: scaled by sqrt(embd)).
    pub fn embed(&self, ids: &[i64]) -> Tensor {
        let rows = self.embed.rows(&Tensor::from_slice(ids));
        if self.embed_scale == 1.0 {
            rows
        } else {
            rows * self.embed_scale
        }
    }

    /// Output-projection rows of some tokens, `[n, embd]` (for label-word logits; the
    /// tied embedding, unscaled).
    pub(crate) fn head_rows(&self, ids: &[i64]) -> Tensor {
        self.embed.rows(&Tensor::from_slice(ids))
    }

    /// The token id that begins every sequence, when the model wants one (Gemma 3).
    pub fn bos(&self) -> Option<i64> {
        self.bos_id
    }

    /// Logits over the whole vocabulary for hidden states `[.., embd]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.embed.f32().tr())
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Tensor {
        let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        x * (var + self.shape.rms_eps).rsqrt() * w
    }

    /// Rotates `x` `[B, H, T, hd]` for positions `start..start+T` with the tables of
    /// block `layer`: adjacent pairs (Llama) or the two halves of each head (Gemma 3).
    fn rope(&self, x: &Tensor, start: i64, layer: usize) -> Tensor {
        let s = x.size();
        let (t, hd) = (s[2], s[3]);
        let (cos, sin) = match &self.rope_local {
            Some(local) if self.shape.is_local(layer) => local,
            _ => &self.rope,
        };
        let cos = cos.narrow(0, start, t);
        let sin = sin.narrow(0, start, t);
        let (x0, x1) = match self.shape.arch {
            Arch::Llama => {
                let pairs = x.reshape([s[0], s[1], t, hd / 2, 2]);
                (pairs.select(-1, 0), pairs.select(-1, 1))
            }
            Arch::Gemma3 => (x.narrow(3, 0, hd / 2), x.narrow(3, hd / 2, hd / 2)),
        };
        let r0 = &x0 * &cos - &x1 * &sin;
        let r1 = &x0 * &sin + &x1 * &cos;
        match self.shape.arch {
            Arch::Llama => Tensor::stack(&[r0, r1], -1).reshape([s[0], s[1], t, hd]),
            Arch::Gemma3 => Tensor::cat(&[r0, r1], -1),
        }
    }

    /// Attention masks of one pass over `t` new positions after `past` cached ones: the
    /// causal mask, and (Gemma 3's sliding-window layers) the causal mask that also hides
    /// keys `window` or more positions back. `true` hides.
    fn masks(&self, t: i64, past: i64) -> (Tensor, Tensor) {
        let total = past + t;
        let causal = Tensor::ones([t, total], (Kind::Bool, Device::Cpu)).triu(past + 1);
        let w = self.shape.window;
        let local = if w > 0 && total > w {
            let far = Tensor::ones([t, total], (Kind::Bool, Device::Cpu)).tril(past - w);
            causal.logical_or(&far)
        } else {
            causal.shallow_clone()
        };
        (causal, local)
    }

    // `q = q + ..` as in `forward`: no in-place update of tensors autograd may keep.
    #[allow(clippy::assign_op_pattern)]
    /// Block `i`'s attention over the normed input `h` `[B, T, embd]`: its output
    /// (projected, and normed for Gemma 3) and the block's keys and values with the cached
    /// ones before them.
    fn attention(
        &self,
        i: usize,
        h: &Tensor,
        cache: Option<&KvCache>,
        lora: Option<&Lora>,
        mask: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let (sh, blk) = (&self.shape, &self.blocks[i]);
        let s = h.size();
        let (b, t) = (s[0], s[1]);
        let past = cache.map_or(0, |c| c.len);
        let (nh, kvh, hd) = (sh.heads, sh.kv_heads, sh.head_dim());
        let mut q = h.matmul(&blk.wq.f32());
        let k = h.matmul(&blk.wk.f32());
        let mut v = h.matmul(&blk.wv.f32());
        if let Some(l) = lora {
            let lb = &l.blocks[i];
            q = q + h.matmul(&lb.q_a).matmul(&lb.q_b) * l.scale;
            v = v + h.matmul(&lb.v_a).matmul(&lb.v_b) * l.scale;
        }
        let (mut q, mut k) = (q.view([b, t, nh, hd]), k.view([b, t, kvh, hd]));
        if let Some(gn) = &blk.gemma {
            q = self.rms(&q, &gn.q);
            k = self.rms(&k, &gn.k);
        }
        let q = self.rope(&q.transpose(1, 2), past, i);
        let k = self.rope(&k.transpose(1, 2), past, i);
        let v = v.view([b, t, kvh, hd]).transpose(1, 2);
        let (k, v) = match cache {
            Some(c) => (
                Tensor::cat(&[&c.k[i], &k], 2),
                Tensor::cat(&[&c.v[i], &v], 2),
            ),
            None => (k, v),
        };
        // Grouped-query attention without copying keys: [B, kvh, g, T, S].
        let q5 = q.reshape([b, kvh, nh / kvh, t, hd]);
        let scores = q5.matmul(&k.unsqueeze(2).transpose(-1, -2)) / (hd as f64).sqrt();
        let att = scores
            .masked_fill(mask, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        let o = att
            .matmul(&v.unsqueeze(2))
            .reshape([b, nh, t, hd])
            .transpose(1, 2)
            .reshape([b, t, sh.q_dim()])
            .matmul(&blk.wo.f32());
        let o = match &blk.gemma {
            Some(gn) => self.rms(&o, &gn.post_attn),
            None => o,
        };
        (o, k, v)
    }

    /// Block `i`'s gated feed-forward over the normed input `h` (SiLU for Llama, GELU and
    /// an output norm for Gemma 3).
    fn feed_forward(&self, i: usize, h: &Tensor) -> Tensor {
        let blk = &self.blocks[i];
        let gate = h.matmul(&blk.w_gate.f32());
        let gate = match self.shape.arch {
            Arch::Llama => gate.silu(),
            Arch::Gemma3 => gate.gelu("tanh"),
        };
        let ff = (gate * h.matmul(&blk.w_up.f32())).matmul(&blk.w_down.f32());
        match &blk.gemma {
            Some(gn) => self.rms(&ff, &gn.post_ffn),
            None => ff,
        }
    }

    // `x = x + ..` on purpose: an in-place `+=` would modify tensors autograd saved for
    // the backward pass (the residual stream feeds the RMS norms).
    #[allow(clippy::assign_op_pattern)]
    /// Runs the blocks over input embeddings `x` `[B, T, embd]` after the cached positions
    /// (causal attention; right padding is harmless as padding comes after real tokens).
    /// Returns the final-normed hidden states `[B, T, embd]` and the extended cache.
    pub fn forward(
        &self,
        x: &Tensor,
        cache: Option<&KvCache>,
        lora: Option<&Lora>,
    ) -> Result<(Tensor, KvCache), ModelError> {
        let t = x.size()[1];
        let past = cache.map_or(0, |c| c.len);
        if past + t > MAX_POSITIONS {
            return Err(ModelError::Runtime {
                name: "llm".into(),
                reason: format!(
                    "prompt of {} tokens exceeds the {MAX_POSITIONS}-position limit",
                    past + t
                ),
            });
        }
        let (causal, local) = self.masks(t, past);
        let mut out = KvCache {
            k: Vec::with_capacity(self.blocks.len()),
            v: Vec::with_capacity(self.blocks.len()),
            len: past + t,
        };
        let mut x = x.shallow_clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            let mask = if self.shape.is_local(i) {
                &local
            } else {
                &causal
            };
            let h = self.rms(&x, &blk.attn_norm);
            let (o, k, v) = self.attention(i, &h, cache, lora, mask);
            x = x + o;
            let h = self.rms(&x, &blk.ffn_norm);
            x = x + self.feed_forward(i, &h);
            out.k.push(k);
            out.v.push(v);
        }
        Ok((self.rms(&x, &self.out_norm), out))
    }

    /// Greedy generation (for checks and the CLI's `llm` smoke test): up to `max` new tokens.
    pub fn generate(&self, prompt: &str, max: usize) -> Result<String, ModelError> {
        let _g = tch::no_grad_guard();
        let mut ids: Vec<i64> = self.bos().into_iter().collect();
        ids.extend(self.tokenize(prompt)?);
        let (mut h, mut cache) = self.forward(&self.embed(&ids).unsqueeze(0), None, None)?;
        let mut out = Vec::new();
        for _ in 0..max {
            let last = h.select(1, h.size()[1] - 1);
            let next = self.logits(&last).argmax(-1, false).int64_value(&[0]);
            let text = self.decode(&[next]);
            if text.contains("<|im_end|>")
                || text.contains("<end_of_turn>")
                || Some(next) == self.eos_id
                || next == 0
            {
                break;
            }
            out.push(next);
            let (h2, c2) = self.forward(&self.embed(&[next]).unsqueeze(0), Some(&cache), None)?;
            h = h2;
            cache = c2;
        }
        Ok(self.decode(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_attends_globally_on_every_sixth_layer_only() {
        let shape = LlmShape {
            arch: Arch::Gemma3,
            layers: 18,
            embd: 640,
            ffn: 2048,
            heads: 4,
            head_width: 256,
            kv_heads: 1,
            rope_base: 1e6,
            window: 512,
            rms_eps: 1e-6,
            vocab: 262_144,
        };
        let global: Vec<usize> = (0..18).filter(|&i| !shape.is_local(i)).collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!((shape.head_dim(), shape.q_dim()), (256, 1024));
        let llama = LlmShape {
            arch: Arch::Llama,
            window: 0,
            ..shape
        };
        assert!((0..18).all(|i| !llama.is_local(i)));
    }

    #[test]
    fn packed_blocks_keep_the_files_4_and_8_bit_grids_exactly() {
        // A Q4_1 block: 16 evenly spaced levels from its minimum; a Q8_0 block: its
        // scale times integers within +-127, the largest magnitude 127.
        let q4: Vec<f32> = (0..64)
            .map(|i| -0.3 + 0.021 * ((i * 7) % 16) as f32)
            .collect();
        let d = 0.0173f32;
        let q8: Vec<f32> = (0..64i32)
            .map(|i| d * ((i * 37) % 255 - 127) as f32)
            .collect();
        for (vals, kind) in [(q4, TensorType::Q4_1), (q8, TensorType::Q8_0)] {
            let p = Packed::new(&vals, (2, 32), kind, false);
            let back: Vec<f32> = Vec::try_from(p.f32().flatten(0, -1)).unwrap();
            let worst = vals
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-6, "{kind:?}: {worst}");
            let row = p.rows(&Tensor::from_slice(&[1i64]));
            let row: Vec<f32> = Vec::try_from(row.flatten(0, -1)).unwrap();
            assert_eq!(row.len(), 32);
            assert!((row[5] - vals[37]).abs() < 1e-6);
            let t = Packed::new(&vals, (2, 32), kind, true).f32();
            assert_eq!(t.size(), [32, 2]);
        }
        // A row shorter than a block is one block, within half a step of range / 255.
        let odd: Vec<f32> = (0..10).map(|i| i as f32 * 0.37 - 1.0).collect();
        let p = Packed::new(&odd, (2, 5), TensorType::F32, false);
        let back: Vec<f32> = Vec::try_from(p.f32().flatten(0, -1)).unwrap();
        let step = 4.0 * 0.37 / 255.0;
        assert!(
            odd.iter()
                .zip(&back)
                .all(|(a, b)| (a - b).abs() <= step / 2.0 + 1e-6)
        );
    }
}
