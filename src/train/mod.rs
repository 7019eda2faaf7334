//! Training and evaluation: metrics as in the MMSA toolkit.

pub mod dataset;
pub mod metrics;
pub mod mllm;
pub mod trainer;
