//! Model files: the asset registry and installer, the Whisper format converter, the GGUF
//! reader, the small model (UBM) and the large model (LLM + multimodal adapter).

pub mod assets;
pub mod convert;
pub mod gguf;
pub mod llm;
pub mod mllm;
pub mod ubm;
