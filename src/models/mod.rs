//! Model files: the asset registry and installer, and the Whisper format converter.

pub mod assets;
pub mod convert;
pub mod gguf;
pub mod ubm;
