//! sentistream: a streaming video sentiment processor (U-ACS, arXiv 2509.04459).
//!
//! Map of the modules, in data-flow order:

/// Jobs wiring the stages: stream threads, the router, the shutdown signal, the report.
pub mod app;
/// Model files: where they are, the registry installer, the Whisper converter, GGUF.
pub mod assets;
/// Stages 2/3 at run time: large-model workers, queue policies, reordering.
pub mod cascade;
/// Command line: argument definitions and one file per command (main calls `cli::run`).
pub mod cli;
/// Typed, documented, validated configuration.
pub mod config;
/// Speaker diarization: CAM++ embeddings, the online speaker registry, window splitting.
pub mod diarize;
/// Error enums per boundary.
pub mod error;
/// The output event (one JSON object per window).
pub mod event;
/// Per-window features: ASR, audio, face, text.
pub mod features;
/// Prometheus metrics and health.
pub mod metrics;
/// The models: UBM, LLM, MLLM.
pub mod models;
/// The composition root: configuration + overrides -> a run plan.
pub mod plan;
/// Self-contained HTML reports of annotated calls and batches.
pub mod report;
/// U-ACS decisions as pure functions: uncertainty, thresholds, fusion.
pub mod routing;
/// Silero VAD -> utterance windows.
pub mod segment;
/// Where events go.
pub mod sinks;
/// GStreamer: decode files/URIs to 16 kHz mono audio + RGB frames, stream time.
pub mod source;
/// Call summaries: talk time, turns, sentiment per quarter, trend, negative moments.
pub mod summary;
/// Training and evaluation: datasets, UBM and MLLM training, metrics.
pub mod train;
