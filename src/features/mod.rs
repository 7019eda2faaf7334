//! Per-window features: what was said (ASR).

pub mod asr;
