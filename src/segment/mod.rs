//! Utterance segmentation: Silero VAD (through whisper.cpp's VAD API) gives a speech
//! probability every 32 ms; [`windows::cut`] turns them into utterance windows.
//!
//! The segmenter is streaming: audio is appended as it is decoded, and every `step_s`
//! seconds the VAD runs over the audio not yet decided (bounded by the maximum window
//! length plus a pause), so memory and per-pass cost stay bounded on endless input.

pub mod windows;

use std::path::Path;

use whisper_rs::{WhisperVadContext, WhisperVadContextParams};

use crate::config::SegmentConfig;
use crate::error::ModelError;
use crate::source::SAMPLE_RATE;

/// Gaps in audio timestamps larger than this are filled with silence.
const GAP_TOLERANCE_S: f64 = 0.05;
/// A single timestamp gap is filled with at most this much silence.
const MAX_GAP_FILL_S: f64 = 30.0;

/// An utterance window: the speech's stream-time bounds and its (padded) audio.
#[derive(Debug, Clone)]
pub struct Window {
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// Start of speech in seconds of stream time.
    pub start: f64,
    /// End of speech in seconds of stream time.
    pub end: f64,
    /// Stream time of `audio[0]` (speech start minus padding).
    pub(crate) audio_start: f64,
    /// Mono 16 kHz samples of the padded window (`segment.padding_s` around the speech,
    /// widened to `segment.min_window_s`).
    pub audio: Vec<f32>,
}

/// The Silero voice-activity model.
pub(crate) struct Vad {
    ctx: WhisperVadContext,
}

impl Vad {
    /// Loads a Silero ggml model, checking it first so a bad file gives a clear error.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes_head = read_head(path, "vad-model")?;
        if bytes_head.len() < 4
            || u32::from_le_bytes([bytes_head[0], bytes_head[1], bytes_head[2], bytes_head[3]])
                != crate::assets::convert::GGML_MAGIC
        {
            return Err(ModelError::Corrupt {
                path: path.into(),
                reason: "not a ggml Silero VAD model (bad magic)".into(),
            });
        }
        let mut params = WhisperVadContextParams::new();
        params.set_n_threads(1);
        params.set_use_gpu(false);
        let path_str = path.to_str().ok_or_else(|| ModelError::Corrupt {
            path: path.into(),
            reason: "path is not UTF-8".into(),
        })?;
        let ctx = WhisperVadContext::new(path_str, params).map_err(|e| ModelError::Corrupt {
            path: path.into(),
            reason: format!("whisper.cpp could not load it as a VAD model ({e})"),
        })?;
        Ok(Self { ctx })
    }

    /// Speech probability for every 512-sample frame of `samples`.
    pub fn probabilities(&mut self, samples: &[f32]) -> Result<&[f32], ModelError> {
        if samples.len() < 512 {
            return Ok(&[]);
        }
        self.ctx
            .detect_speech(samples)
            .map_err(|e| ModelError::Runtime {
                name: "silero-vad".into(),
                reason: e.to_string(),
            })?;
        Ok(self.ctx.probabilities())
    }
}

/// Reads the first bytes of a model file, mapping "not found" to a helpful error.
pub(crate) fn read_head(path: &Path, flag: &'static str) -> Result<Vec<u8>, ModelError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.into(),
            flag,
        },
        _ => ModelError::Io {
            path: path.into(),
            source,
        },
    })?;
    let mut head = vec![0u8; 64];
    let n = f.read(&mut head).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    head.truncate(n);
    Ok(head)
}

/// Streaming segmenter: audio in, utterance windows out.
pub(crate) struct Segmenter {
    cfg: SegmentConfig,
    vad: Vad,
    /// Audio not yet dropped; `buf[0]` is at stream time `buf_t0`.
    buf: Vec<f32>,
    buf_t0: Option<f64>,
    /// Everything before this stream time has been decided.
    committed: f64,
    /// End of the last emitted window (windows never overlap).
    last_end: f64,
    since_pass: usize,
    next_seq: u64,
    probs: Vec<f32>,
}

impl Segmenter {
    /// Creates a segmenter around a loaded VAD.
    pub fn new(cfg: SegmentConfig, vad: Vad) -> Self {
        let cap = ((cfg.max_window_s + cfg.merge_gap_s + 2.0 * cfg.step_s + 2.0)
            * SAMPLE_RATE as f32) as usize;
        Self {
            cfg,
            vad,
            buf: Vec::with_capacity(cap),
            buf_t0: None,
            committed: 0.0,
            last_end: 0.0,
            since_pass: 0,
            next_seq: 0,
            probs: Vec::with_capacity(1024),
        }
    }

    fn buf_end(&self) -> f64 {
        self.buf_t0.unwrap_or(0.0) + self.buf.len() as f64 / SAMPLE_RATE as f64
    }

    /// Appends decoded audio (`pts`: stream time of its first sample) and emits the
    /// windows that became final into `out`.
    pub fn push(
        &mut self,
        pts: Option<f64>,
        samples: &[f32],
        out: &mut Vec<Window>,
    ) -> Result<(), ModelError> {
        match (self.buf_t0, pts) {
            (None, p) => {
                let t = p.unwrap_or(0.0);
                self.buf_t0 = Some(t);
                self.committed = t;
                self.last_end = t;
            }
            (Some(_), Some(p)) => {
                let gap = p - self.buf_end();
                if gap > GAP_TOLERANCE_S {
                    let fill = (gap.min(MAX_GAP_FILL_S) * SAMPLE_RATE as f64) as usize;
                    tracing::debug!(gap_s = gap, "audio timestamp gap filled with silence");
                    self.buf.resize(self.buf.len() + fill, 0.0);
                    self.since_pass += fill;
                }
            }
            (Some(_), None) => {}
        }
        self.buf.extend_from_slice(samples);
        self.since_pass += samples.len();
        if self.since_pass as f64 >= self.cfg.step_s as f64 * SAMPLE_RATE as f64 {
            self.pass(false, out)?;
        }
        Ok(())
    }

    /// Flushes at end of input: open speech becomes a final window.
    pub fn finish(&mut self, out: &mut Vec<Window>) -> Result<(), ModelError> {
        if self.buf_t0.is_some() {
            self.pass(true, out)?;
        }
        Ok(())
    }

    fn index_of(&self, t: f64) -> usize {
        let i = ((t - self.buf_t0.unwrap_or(0.0)) * SAMPLE_RATE as f64).round();
        (i.max(0.0) as usize).min(self.buf.len())
    }

    fn pass(&mut self, last: bool, out: &mut Vec<Window>) -> Result<(), ModelError> {
        self.since_pass = 0;
        let from = self.index_of(self.committed);
        let t_from = self.buf_t0.unwrap_or(0.0) + from as f64 / SAMPLE_RATE as f64;
        self.probs.clear();
        self.probs
            .extend_from_slice(self.vad.probabilities(&self.buf[from..])?);
        let cut = windows::cut(&self.probs, t_from, &self.cfg, last);
        let ceil = self.buf_end();
        for speech in &cut.closed {
            let w = windows::window_for(*speech, &self.cfg, self.last_end, ceil);
            if w.is_empty() {
                continue;
            }
            let (a, b) = (self.index_of(w.start), self.index_of(w.end));
            out.push(Window {
                seq: self.next_seq,
                start: speech.start.max(w.start),
                end: speech.end.min(w.end),
                audio_start: w.start,
                audio: self.buf[a..b].to_vec(),
            });
            self.next_seq += 1;
            self.last_end = w.end;
        }
        self.committed = if last {
            ceil
        } else {
            cut.committed.max(self.committed)
        };
        // Keep enough audio before the commit point for padding and widening.
        let keep_from = self.committed - self.cfg.padding_s as f64 - self.cfg.min_window_s as f64;
        let drop = self.index_of(keep_from);
        if drop > 0 {
            self.buf.drain(..drop);
            self.buf_t0 = Some(self.buf_t0.unwrap_or(0.0) + drop as f64 / SAMPLE_RATE as f64);
        }
        Ok(())
    }
}
