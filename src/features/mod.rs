//! Per-window features: what was said (ASR, text encoder) and how it was said (audio).

pub mod asr;
pub mod audio;
pub mod text;
