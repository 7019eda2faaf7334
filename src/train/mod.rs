//! Training and evaluation: metrics as in the MMSA toolkit.

pub mod dataset;
/// The large model's verdicts on unlabelled sentences (`train label`).
pub mod distil;
/// Uncertainty estimators compared; temperature scaling.
pub mod estimators;
pub mod metrics;
pub mod mllm;
/// Earlier opinions for stage 3's training prompts (`eval --compare --opinions`).
pub(crate) mod opinions;
pub mod text;
pub mod trainer;
