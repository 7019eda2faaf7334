//! Per-window features: what was said (ASR, text encoder), how it was said (audio) and how
//! the speaker looked (visual). [`Extractor`] runs the same code for live windows and for
//! training clips, so training and serving cannot disagree.

pub mod asr;
pub mod audio;
pub mod pitch;
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
    /// The speaker's reference pitch so far ([`pitch::PitchBaseline`]), for models that
    /// read pitch relative to the speaker; `None`: the window's own voiced frames. Not
    /// cached: it depends on the speaker's earlier windows.
    pub pitch_ref: Option<f32>,
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
            pitch_ref: None,
        })
    }
}

/// One video frame's visual values (`VIS_DIM`), analysed as the frame arrived, so a
/// window's faces cost nothing when it closes and the pixels need not be kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Look {
    /// Stream time of the frame, seconds.
    pub pts: f64,
    /// What [`VisualFeaturizer::frame`] gave for it.
    pub values: [f32; VIS_DIM],
}

/// Index of the face's motion since the previous face in a frame's values.
const MOTION: usize = 6;
/// Index of the face's change of width since the previous face.
const SCALE_CHANGE: usize = 7;

/// Appends a window's frames to its visual features. A window's motion starts at its
/// own first face (as for a clip analysed on its own), whatever the stream showed before.
pub(crate) fn window_visual(looks: &[Look], out: &mut Vec<f32>) {
    let from = out.len();
    for l in looks {
        out.extend_from_slice(&l.values);
    }
    if let Some(first) = out[from..].chunks_exact_mut(VIS_DIM).find(|v| v[0] > 0.0) {
        first[MOTION] = 0.0;
        first[SCALE_CHANGE] = 0.0;
    }
}

/// Feature extractors for all three modalities.
pub(crate) struct Extractor {
    audio: AudioFeaturizer,
    visual: VisualFeaturizer,
    /// One frame's values as the featurizer writes them.
    scratch: Vec<f32>,
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
            scratch: Vec::with_capacity(VIS_DIM),
            texts,
        })
    }

    /// Features of one window: its audio, its transcript and its frames (see
    /// [`Self::media`]).
    pub(crate) fn extract(
        &mut self,
        audio: &[f32],
        frames: (&[VideoFrame], f64),
        text: &str,
    ) -> Result<WindowFeatures, ModelError> {
        let mut f = self.media(audio, frames)?;
        self.add_text(&mut f, text, 0)?;
        Ok(f)
    }

    /// The audio and face features of one window of a clip (text `None`): the clip's
    /// frames up to the window's end are analysed from the first (the face detected on
    /// it, then tracked), as a stream of the clip would, and those from stream time
    /// `from` on are the window's.
    pub(crate) fn media(
        &mut self,
        audio: &[f32],
        (frames, from): (&[VideoFrame], f64),
    ) -> Result<WindowFeatures, ModelError> {
        self.visual.reset();
        let mut looks = Vec::with_capacity(frames.len());
        for fr in frames {
            let look = self.look(fr)?;
            if look.pts >= from {
                looks.push(look);
            }
        }
        let mut f = WindowFeatures {
            audio: self.audio_features(audio),
            ..WindowFeatures::default()
        };
        window_visual(&looks, &mut f.visual);
        Ok(f)
    }

    /// One video frame of a stream, analysed as it arrives (in stream order: the face is
    /// tracked from the frame before, and detected on every `detect_every`th frame).
    pub(crate) fn look(&mut self, fr: &VideoFrame) -> Result<Look, ModelError> {
        self.scratch.clear();
        self.visual
            .frame(&fr.data, fr.width, fr.height, &mut self.scratch)?;
        let mut values = [0.0; VIS_DIM];
        values.copy_from_slice(&self.scratch);
        Ok(Look {
            pts: fr.pts,
            values,
        })
    }

    /// The audio features of one window (`AUDIO_DIM` values per 10 ms).
    pub(crate) fn audio_features(&mut self, audio: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.audio.compute(audio, &mut out);
        out
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
    fn a_windows_motion_starts_at_its_first_face() {
        let look = |pts: f64, face: bool, motion: f32| {
            let mut values = [0.0; VIS_DIM];
            if face {
                values[0] = 1.0;
                values[MOTION] = motion;
                values[SCALE_CHANGE] = motion / 2.0;
            }
            Look { pts, values }
        };
        // The stream's faces moved before the window: its first face (after a frame
        // without one) starts from rest; later faces keep their motion.
        let looks = [
            look(1.0, false, 0.0),
            look(1.2, true, 0.3),
            look(1.4, true, 0.1),
        ];
        let mut out = vec![9.0];
        window_visual(&looks, &mut out);
        assert_eq!(out.len(), 1 + 3 * VIS_DIM);
        let frames: Vec<&[f32]> = out[1..].chunks(VIS_DIM).collect();
        assert_eq!(frames[0], &[0.0; VIS_DIM]);
        assert_eq!((frames[1][MOTION], frames[1][SCALE_CHANGE]), (0.0, 0.0));
        assert_eq!((frames[2][MOTION], frames[2][SCALE_CHANGE]), (0.1, 0.05));
        assert_eq!(out[0], 9.0, "what was there is kept");
    }

    #[test]
    fn cache_bytes_round_trip() {
        let f = WindowFeatures {
            text: Some(vec![0.5; TEXT_DIM]),
            audio: vec![1.0; 3 * AUDIO_DIM],
            visual: vec![2.0; 2 * VIS_DIM],
            pitch_ref: None,
        };
        assert_eq!(WindowFeatures::from_bytes(&f.to_bytes()), Some(f));
        let g = WindowFeatures {
            text: None,
            audio: vec![],
            visual: vec![0.0; VIS_DIM],
            pitch_ref: None,
        };
        assert_eq!(WindowFeatures::from_bytes(&g.to_bytes()), Some(g.clone()));
        let mut bad = g.to_bytes();
        bad.pop();
        assert_eq!(WindowFeatures::from_bytes(&bad), None);
    }
}
