//! Per-window features: what was said (ASR, text encoder), how it was said (audio) and how
//! the speaker looked (visual). [`Extractor`] runs the same code for live windows and for
//! training clips, so training and serving cannot disagree.

pub mod asr;
pub mod audio;
pub mod text;
pub mod visual;

use std::path::Path;
use std::sync::Arc;

use crate::error::ModelError;
use crate::source::VideoFrame;
use audio::{AUDIO_DIM, AudioFeaturizer};
use text::{TEXT_DIM, TextEncoder};
use visual::{VIS_DIM, VisualFeaturizer, VisualModels};

/// Version of the feature layout; cached features of another version are recomputed.
pub(crate) const FEATURE_VERSION: u32 = 1;

/// The three modalities of one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowFeatures {
    /// Sentence embedding of the transcript (`TEXT_DIM`), `None` without text.
    pub text: Option<Vec<f32>>,
    /// Audio frames, `AUDIO_DIM` values each (10 ms hop).
    pub audio: Vec<f32>,
    /// Video frames, `VIS_DIM` values each; frames without a face are all zero.
    pub visual: Vec<f32>,
}

impl WindowFeatures {
    /// Number of audio frames.
    pub(crate) fn audio_frames(&self) -> usize {
        self.audio.len() / AUDIO_DIM
    }
    /// Number of video frames.
    pub(crate) fn visual_frames(&self) -> usize {
        self.visual.len() / VIS_DIM
    }
    /// Serialises to little-endian bytes (for the feature cache).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + 4 * (TEXT_DIM + self.audio.len() + self.visual.len()));
        for v in [
            FEATURE_VERSION,
            self.text.is_some() as u32,
            self.audio_frames() as u32,
            self.visual_frames() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in self
            .text
            .iter()
            .flatten()
            .chain(&self.audio)
            .chain(&self.visual)
        {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }
    /// Reads [`Self::to_bytes`] output; `None` if it is of another version or damaged.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        let u = |i: usize| {
            b.get(i * 4..i * 4 + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        if u(0)? != FEATURE_VERSION {
            return None;
        }
        let (has_text, na, nv) = (u(1)? == 1, u(2)? as usize, u(3)? as usize);
        let nt = if has_text { TEXT_DIM } else { 0 };
        let floats: Vec<f32> = b[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if floats.len() != nt + na * AUDIO_DIM + nv * VIS_DIM {
            return None;
        }
        Some(Self {
            text: has_text.then(|| floats[..nt].to_vec()),
            audio: floats[nt..nt + na * AUDIO_DIM].to_vec(),
            visual: floats[nt + na * AUDIO_DIM..].to_vec(),
        })
    }
}

/// Feature extractors for all three modalities.
pub(crate) struct Extractor {
    audio: AudioFeaturizer,
    visual: VisualFeaturizer,
    /// Text encoder per small model (see `plan::SmallSpec`), shared between streams.
    texts: Vec<Arc<TextEncoder>>,
}

impl Extractor {
    /// Loads the text encoder `encoder` and the face detectors from the models folder.
    pub fn load(models_dir: &Path, encoder: &text::EncoderSpec) -> Result<Self, ModelError> {
        let text = encoder.open(models_dir)?;
        Self::with_text(models_dir, vec![Arc::new(text)], visual::DETECT_EVERY)
    }

    /// The face detectors from the models folder (detecting on every `detect_every`th
    /// frame), with text encoders (one per small model) shared with other streams.
    pub fn with_text(
        models_dir: &Path,
        texts: Vec<Arc<TextEncoder>>,
        detect_every: u32,
    ) -> Result<Self, ModelError> {
        let mut visual = VisualFeaturizer::load(&VisualModels::installed(models_dir))?;
        visual.set_detect_every(detect_every);
        Ok(Self {
            audio: AudioFeaturizer::new(),
            visual,
            texts,
        })
    }

    /// Features of one window: its audio, its frames and its transcript.
    pub(crate) fn extract<'a>(
        &mut self,
        audio: &[f32],
        frames: impl IntoIterator<Item = &'a VideoFrame>,
        text: &str,
    ) -> Result<WindowFeatures, ModelError> {
        let mut f = self.media(audio, frames)?;
        self.add_text(&mut f, text, 0)?;
        Ok(f)
    }

    /// The audio and face features of one window (text `None`): they do not depend on the
    /// transcript, so a live stream computes them while Whisper runs.
    pub(crate) fn media<'a>(
        &mut self,
        audio: &[f32],
        frames: impl IntoIterator<Item = &'a VideoFrame>,
    ) -> Result<WindowFeatures, ModelError> {
        let mut f = WindowFeatures::default();
        self.audio.compute(audio, &mut f.audio);
        self.visual.reset();
        for fr in frames {
            self.visual
                .frame(&fr.data, fr.width, fr.height, &mut f.visual)?;
        }
        Ok(f)
    }

    /// Adds the transcript's sentence embedding by small model `model`'s encoder (none
    /// for an empty transcript).
    pub(crate) fn add_text(
        &self,
        f: &mut WindowFeatures,
        text: &str,
        model: usize,
    ) -> Result<(), ModelError> {
        if !text.trim().is_empty() {
            f.text = Some(self.texts[model].encode_one(text)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_bytes_round_trip() {
        let f = WindowFeatures {
            text: Some(vec![0.5; TEXT_DIM]),
            audio: vec![1.0; 3 * AUDIO_DIM],
            visual: vec![2.0; 2 * VIS_DIM],
        };
        assert_eq!(WindowFeatures::from_bytes(&f.to_bytes()), Some(f));
        let g = WindowFeatures {
            text: None,
            audio: vec![],
            visual: vec![0.0; VIS_DIM],
        };
        assert_eq!(WindowFeatures::from_bytes(&g.to_bytes()), Some(g.clone()));
        let mut bad = g.to_bytes();
        bad.pop();
        assert_eq!(WindowFeatures::from_bytes(&bad), None);
    }
}
