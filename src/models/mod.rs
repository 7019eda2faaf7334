//! The models: the small model (UBM) and the large model (LLM + multimodal adapter), and
//! how trained weights are saved beside their metadata.

pub mod export;
pub mod llm;
pub mod mllm;
pub mod ubm;

use std::path::{Path, PathBuf};

use crate::error::ModelError;

/// Paths of a trained model's weights (`.safetensors`) and metadata (`.json`) for a base
/// path such as `models/ubm`.
pub(crate) fn weight_paths(base: &Path) -> (PathBuf, PathBuf) {
    (
        base.with_extension("safetensors"),
        base.with_extension("json"),
    )
}

/// Saves a model's weights and its metadata side by side (see [`weight_paths`]).
pub(crate) fn save_weights<M: serde::Serialize>(
    vs: &tch::nn::VarStore,
    meta: &M,
    base: &Path,
    name: &str,
) -> Result<(), ModelError> {
    let (w, m) = weight_paths(base);
    if let Some(d) = w.parent() {
        std::fs::create_dir_all(d).map_err(|source| ModelError::Io {
            path: d.into(),
            source,
        })?;
    }
    vs.save(&w).map_err(|e| ModelError::Runtime {
        name: name.into(),
        reason: format!("cannot save {}: {e}", w.display()),
    })?;
    let json = serde_json::to_string_pretty(meta).expect("metadata serialises");
    std::fs::write(&m, json).map_err(|source| ModelError::Io { path: m, source })
}

/// One small model of a run: where it is, which languages it scores, which text
/// encoder it reads, and whether the cascade's large model backs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SmallSpec {
    /// Base path (`.safetensors` + `.json`).
    pub base: PathBuf,
    /// Whisper language codes it scores.
    pub languages: Vec<String>,
    /// Its text encoder.
    pub encoder: crate::features::text::EncoderSpec,
    /// The main large model (English) backs it: it scores English (other languages are
    /// backed by their `[[cascade.languages]]` entry, if any).
    pub cascade: bool,
}

/// Which small model scores a window in `language`: the one trained for it; a window
/// without a language (nothing transcribed) goes to the first. `None`: no model knows
/// the language, so the window gets no verdict rather than one from a model that cannot
/// read it.
pub fn pick_model(models: &[SmallSpec], language: Option<&str>) -> Option<usize> {
    match language {
        None => (!models.is_empty()).then_some(0),
        Some(l) => models
            .iter()
            .position(|m| m.languages.iter().any(|x| x == l)),
    }
}
