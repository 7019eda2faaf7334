//! sentistream: a streaming video sentiment processor (U-ACS, arXiv 2509.04459).
//!
//! Map of the modules, in data-flow order:
pub mod app; // jobs wiring the stages: annotate
pub mod cli;
pub mod config; // typed, documented, validated configuration
pub mod error; // error enums per boundary
pub mod event; // the output event (one JSON object per window)
pub mod features; // per-window features: ASR (whisper.cpp)
pub mod models; // model assets: registry packages, install/verify, CT2 -> ggml conversion
pub mod routing; // U-ACS decisions as pure functions: uncertainty, thresholds, fusion
pub mod segment; // Silero VAD -> utterance windows (pure window logic in segment::windows)
pub mod sinks; // where events go: JSON lines
pub mod source;
pub mod train; // training and evaluation: MMSA metrics // GStreamer: decode files/URIs to 16 kHz mono audio + RGB frames, stream time // command line (thin main calls cli::run)
