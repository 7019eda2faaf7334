//! The large model for an external llama.cpp server (`models export-llm`): the trained
//! LoRA merged into the base model's (SmolLM2's or Gemma 3's) attention query and value
//! weights, written as a GGUF that
//! any llama.cpp build loads. The merged tensors are stored in f16 (a LoRA delta is far
//! below the file's quantisation step); every other tensor and the tokenizer are copied unchanged.
//!
//! What the server cannot run: the audio and visual soft tokens (llama.cpp's chat API
//! takes text only) and the adapter's value head (the score is derived from the label
//! words' probabilities instead). The server sees the transcript in the same prompt
//! words as the local model, without the `Voice:`/`Face:` parts.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;

use crate::assets::gguf::Gguf;
use crate::error::ModelError;
use crate::models::mllm::Mllm;

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Tensors replaced by merged f16 weights.
    pub merged: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Largest absolute change of a merged weight.
    pub max_delta: f32,
}

/// Merges the adapter `adapter` (base path) into `gguf` and writes `out`.
pub fn export_merged(gguf: &Path, adapter: &Path, out: &Path) -> Result<ExportReport, ModelError> {
    let model = Mllm::load(gguf, adapter)?;
    let g = Gguf::open(gguf)?;
    let meta = &model.adapter.meta;
    let scale = meta.alpha / meta.rank as f64;
    let runtime = |e: tch::TchError| ModelError::Runtime {
        name: "export".into(),
        reason: e.to_string(),
    };
    let mut replace = BTreeMap::new();
    let mut max_delta = 0f32;
    for (i, lb) in model.adapter.lora.iter().enumerate() {
        for (name, a, b) in [("attn_q", &lb.q_a, &lb.q_b), ("attn_v", &lb.v_a, &lb.v_b)] {
            let key = format!("blk.{i}.{name}.weight");
            let (shape, w) = g.tensor_f32(&key)?;
            // x.matmul(a).matmul(b) * scale adds (a b)^T * scale to the [out, in] weight.
            let delta = tch::no_grad(|| (a.matmul(b).tr() * scale).contiguous().view([-1]));
            let delta: Vec<f32> = Vec::try_from(&delta).map_err(runtime)?;
            if delta.len() != w.len() {
                return Err(ModelError::Corrupt {
                    path: gguf.into(),
                    reason: format!("{key}: shape {shape:?} does not match the adapter"),
                });
            }
            let merged: Vec<f16> = w
                .iter()
                .zip(&delta)
                .map(|(w, d)| {
                    max_delta = max_delta.max(d.abs());
                    f16::from_f32(w + d)
                })
                .collect();
            replace.insert(key, merged);
        }
    }
    let note = format!(
        "{} + sentistream LoRA (rank {}, alpha {}) merged into attn_q/attn_v; text-only: the audio/visual soft tokens and the value head are not included",
        model.llm.shape.arch.name(),
        meta.rank,
        meta.alpha
    );
    let bytes = g.write_with(out, &replace, &[("sentistream.export", note.as_str())])?;
    Ok(ExportReport {
        merged: replace.len(),
        bytes,
        max_delta,
    })
}
