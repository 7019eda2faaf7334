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
