//! The Uncertainty-aware Baseline Model (paper Eq. 7), in tch: a frozen MiniLM sentence
//! embedding, a small conv encoder over the audio frames and a frame encoder over the face
//! features feed a shared representation h; a regression head gives the score and a
//! 3-class head the class distribution whose entropy is the uncertainty.
//!
//! A window missing a modality (no text, no video) still gets a prediction: the missing
//! part is zero and a presence flag tells the fusion layer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::features::WindowFeatures;
use crate::features::audio::AUDIO_DIM;
use crate::features::pitch;
use crate::features::text::{EncoderKind, EncoderSpec, TEXT_DIM};
use crate::features::visual::VIS_DIM;
use crate::routing::thresholds::Calibration;
use crate::routing::uncertainty::Gate;

/// Audio frames averaged into one encoder step (4 x 10 ms).
pub(crate) const AUDIO_POOL: usize = 4;
/// Normalised features are clipped to +-this many standard deviations, so inputs unlike
/// the training data (another camera, a smile never seen) cannot saturate the model.
const Z_CLIP: f32 = 5.0;
/// Longest audio sequence fed to the encoder (steps of 40 ms: 30 s).
const MAX_AUDIO_STEPS: usize = 750;

/// Hyper-parameters and everything needed besides the weights, stored as JSON beside them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UbmMeta {
    /// Feature layout version the model was trained on.
    pub(crate) feature_version: u32,
    /// Width of h.
    pub hidden: i64,
    /// Dropout in training.
    pub(crate) dropout: f64,
    /// Neutral band b for the 3 classes.
    pub band: f32,
    /// Per-feature mean of the audio frames (training split).
    pub audio_mean: Vec<f32>,
    /// Per-feature standard deviation of the audio frames.
    pub audio_std: Vec<f32>,
    /// Per-feature mean of the visual frames.
    pub(crate) visual_mean: Vec<f32>,
    /// Per-feature standard deviation of the visual frames.
    pub(crate) visual_std: Vec<f32>,
    /// Uncertainty calibration on the validation split, when calibrated.
    pub(crate) calibration: Option<Calibration>,
    /// Stage-1 threshold tau1 in use.
    pub tau1: Option<f32>,
    /// How tau1 was chosen ("lambda=0.5", "rate=0.3").
    pub(crate) tau1_rule: Option<String>,
    /// Score range of the training labels ([-3, 3] or [-1, 1]).
    pub(crate) score_limit: f32,
    /// Text encoder the model reads (models before it was recorded: MiniLM).
    #[serde(default)]
    pub text_encoder: EncoderKind,
    /// Languages (Whisper codes) the model is trained for (older models: English).
    #[serde(default = "english")]
    pub languages: Vec<String>,
    /// File name (beside the model) of the text encoder's tuning (`train text`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_tuning: Option<String>,
    /// What the uncertainty measures (models before it was recorded: entropy).
    #[serde(default)]
    pub gate: Gate,
    /// Reads pitch relative to the speaker ([`crate::features::pitch`]) instead of in
    /// Hz (`train ubm --speaker-pitch`; models before it was recorded: absolute).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub speaker_pitch: bool,
}

fn english() -> Vec<String> {
    vec!["en".into()]
}

impl UbmMeta {
    /// Factor from the model's score range to the events' (see
    /// [`crate::event::SCORE_LIMIT`]): 3 for a CH-SIMS model, 1 for a MOSI one.
    pub(crate) fn event_scale(&self) -> f32 {
        crate::event::SCORE_LIMIT / self.score_limit
    }

    /// The text encoder of the model saved at `base` (its tuning beside it).
    pub fn encoder_spec(&self, base: &Path) -> EncoderSpec {
        EncoderSpec {
            kind: self.text_encoder,
            tuning: self
                .text_tuning
                .as_ref()
                .map(|n| base.parent().unwrap_or(Path::new("")).join(n)),
        }
    }

    /// The neutral band on the events' score scale.
    pub(crate) fn event_band(&self) -> f32 {
        self.band * self.event_scale()
    }

    /// Fresh metadata with identity normalisation.
    pub fn new(hidden: i64, dropout: f64, band: f32, score_limit: f32) -> Self {
        Self {
            feature_version: crate::features::FEATURE_VERSION,
            hidden,
            dropout,
            band,
            audio_mean: vec![0.0; AUDIO_DIM],
            audio_std: vec![1.0; AUDIO_DIM],
            visual_mean: vec![0.0; VIS_DIM],
            visual_std: vec![1.0; VIS_DIM],
            calibration: None,
            tau1: None,
            tau1_rule: None,
            score_limit,
            text_encoder: EncoderKind::MiniLm,
            text_tuning: None,
            languages: english(),
            gate: Gate::Entropy,
            speaker_pitch: false,
        }
    }
}

/// Which modalities the model may use (for ablations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modalities {
    /// Use the text.
    pub text: bool,
    /// Use the audio.
    pub audio: bool,
    /// Use the video.
    pub visual: bool,
}

impl Modalities {
    /// All three.
    pub(crate) const ALL: Self = Self {
        text: true,
        audio: true,
        visual: true,
    };
}

/// A padded batch of windows.
pub struct Batch {
    text: Tensor,
    text_present: Tensor,
    audio: Tensor,
    audio_mask: Tensor,
    visual: Tensor,
    visual_mask: Tensor,
}

/// One prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prediction {
    /// Score, clipped to the label range.
    pub score: f32,
    /// P(negative), P(neutral), P(positive).
    pub probs: [f32; 3],
    /// Entropy of `probs` (nats).
    pub uncertainty: f32,
}

/// The model.
pub struct Ubm {
    /// Parameters.
    pub vs: nn::VarStore,
    /// Metadata (normalisation, thresholds).
    pub meta: UbmMeta,
    text_proj: nn::Linear,
    a_conv1: nn::Conv1D,
    a_conv2: nn::Conv1D,
    a_proj: nn::Linear,
    v_frame: nn::Linear,
    v_proj: nn::Linear,
    fuse: nn::Linear,
    reg: nn::Linear,
    cls: nn::Linear,
}

fn masked_mean_max(x: &Tensor, mask: &Tensor) -> Tensor {
    // x [B, T, C], mask [B, T] (1 real, 0 padding); empty rows pool to zeros.
    let m = mask.unsqueeze(-1);
    let count = m.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let mean =
        (x * &m).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / count.clamp_min(1.0);
    let max = x
        .masked_fill(&m.eq(0.0), -1e9)
        .amax([1i64].as_slice(), false);
    let any = count.gt(0.0).to_kind(Kind::Float);
    Tensor::cat(&[mean, max * &any], 1)
}

impl Ubm {
    /// Builds a model with fresh weights.
    pub fn new(meta: UbmMeta) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let h = meta.hidden;
        let conv = |stride| nn::ConvConfig {
            padding: 2,
            stride,
            ..Default::default()
        };
        Self {
            text_proj: nn::linear(&p / "text_proj", TEXT_DIM as i64, h, Default::default()),
            a_conv1: nn::conv1d(&p / "a_conv1", AUDIO_DIM as i64, 64, 5, conv(1)),
            a_conv2: nn::conv1d(&p / "a_conv2", 64, 64, 5, conv(2)),
            a_proj: nn::linear(&p / "a_proj", 128, 64, Default::default()),
            v_frame: nn::linear(&p / "v_frame", VIS_DIM as i64, 32, Default::default()),
            v_proj: nn::linear(&p / "v_proj", 64, 64, Default::default()),
            fuse: nn::linear(&p / "fuse", h + 64 + 64 + 3, h, Default::default()),
            reg: nn::linear(&p / "reg", h, 1, Default::default()),
            cls: nn::linear(&p / "cls", h, 3, Default::default()),
            vs,
            meta,
        }
    }

    /// Paths of the weights and metadata for a base path (e.g. `models/ubm`).
    pub(crate) fn paths(base: &Path) -> (PathBuf, PathBuf) {
        crate::models::weight_paths(base)
    }

    /// Saves weights (`.safetensors`) and metadata (`.json`).
    pub fn save(&self, base: &Path) -> Result<(), ModelError> {
        crate::models::save_weights(&self.vs, &self.meta, base, "ubm")
    }

    /// Reads a saved model's metadata only (its languages and text encoder).
    pub fn read_meta(base: &Path) -> Result<UbmMeta, ModelError> {
        let (w, m) = Self::paths(base);
        for p in [&w, &m] {
            if !p.is_file() {
                return Err(ModelError::Missing {
                    path: p.clone(),
                    flag: "ubm",
                });
            }
        }
        Self::meta_of(&m)
    }

    fn meta_of(m: &Path) -> Result<UbmMeta, ModelError> {
        let text = std::fs::read_to_string(m).map_err(|source| ModelError::Io {
            path: m.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
            path: m.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Loads a saved model; weights that do not fit the architecture are a clear error.
    pub fn load(base: &Path) -> Result<Self, ModelError> {
        let meta = Self::read_meta(base)?;
        let (w, m) = Self::paths(base);
        if meta.feature_version != crate::features::FEATURE_VERSION {
            return Err(ModelError::Corrupt {
                path: m,
                reason: format!(
                    "trained on feature version {}, this build computes version {}; retrain with `sentistream train ubm`",
                    meta.feature_version,
                    crate::features::FEATURE_VERSION
                ),
            });
        }
        if let Gate::PolarityRisk { temperature } = meta.gate
            && !(temperature.is_finite() && temperature > 0.0)
        {
            return Err(ModelError::Corrupt {
                path: m,
                reason: format!(
                    "gate.temperature {temperature} must be a positive number; recalibrate with `sentistream calibrate`"
                ),
            });
        }
        let mut model = Self::new(meta);
        model.vs.load(&w).map_err(|e| ModelError::Corrupt {
            path: w.clone(),
            reason: format!("weights do not match the UBM architecture ({e})"),
        })?;
        Ok(model)
    }

    /// Builds a padded batch from windows, normalising with the model's statistics.
    pub fn batch(&self, items: &[&WindowFeatures], use_: Modalities) -> Batch {
        let b = items.len() as i64;
        let mut text = vec![0f32; items.len() * TEXT_DIM];
        let mut text_present = vec![0f32; items.len()];
        let steps: Vec<usize> = items
            .iter()
            .map(|f| f.audio_frames().div_ceil(AUDIO_POOL).min(MAX_AUDIO_STEPS))
            .collect();
        let ta = steps.iter().copied().max().unwrap_or(0).max(1);
        let tv = items
            .iter()
            .map(|f| f.visual_frames())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut audio = vec![0f32; items.len() * ta * AUDIO_DIM];
        let mut audio_mask = vec![0f32; items.len() * ta];
        let mut visual = vec![0f32; items.len() * tv * VIS_DIM];
        let mut visual_mask = vec![0f32; items.len() * tv];
        let (am, asd, vm, vsd) = (
            &self.meta.audio_mean,
            &self.meta.audio_std,
            &self.meta.visual_mean,
            &self.meta.visual_std,
        );
        for (i, f) in items.iter().enumerate() {
            if use_.text
                && let Some(t) = &f.text
            {
                text[i * TEXT_DIM..(i + 1) * TEXT_DIM].copy_from_slice(t);
                text_present[i] = 1.0;
            }
            if use_.audio {
                let frames = f.audio_frames();
                let values = pitch::model_audio(f, self.meta.speaker_pitch);
                for s in 0..steps[i] {
                    let (lo, hi) = (s * AUDIO_POOL, ((s + 1) * AUDIO_POOL).min(frames));
                    let dst = &mut audio[(i * ta + s) * AUDIO_DIM..(i * ta + s + 1) * AUDIO_DIM];
                    for fr in lo..hi {
                        for (d, v) in values[fr * AUDIO_DIM..(fr + 1) * AUDIO_DIM]
                            .iter()
                            .enumerate()
                        {
                            dst[d] +=
                                ((v - am[d]) / asd[d]).clamp(-Z_CLIP, Z_CLIP) / (hi - lo) as f32;
                        }
                    }
                    audio_mask[i * ta + s] = 1.0;
                }
            }
            if use_.visual {
                for fr in 0..f.visual_frames() {
                    for d in 0..VIS_DIM {
                        visual[(i * tv + fr) * VIS_DIM + d] =
                            ((f.visual[fr * VIS_DIM + d] - vm[d]) / vsd[d]).clamp(-Z_CLIP, Z_CLIP);
                    }
                    visual_mask[i * tv + fr] = 1.0;
                }
            }
        }
        Batch {
            text: Tensor::from_slice(&text).view([b, TEXT_DIM as i64]),
            text_present: Tensor::from_slice(&text_present).view([b, 1]),
            audio: Tensor::from_slice(&audio).view([b, ta as i64, AUDIO_DIM as i64]),
            audio_mask: Tensor::from_slice(&audio_mask).view([b, ta as i64]),
            visual: Tensor::from_slice(&visual).view([b, tv as i64, VIS_DIM as i64]),
            visual_mask: Tensor::from_slice(&visual_mask).view([b, tv as i64]),
        }
    }

    /// Forward pass: (scores `[B]`, class logits `[B, 3]`).
    pub fn forward(&self, x: &Batch, train: bool) -> (Tensor, Tensor) {
        let drop = |t: Tensor| t.dropout(self.meta.dropout, train);
        let t = drop(self.text_proj.forward(&x.text).gelu("none")) * &x.text_present;
        // Audio: [B, T, C] -> conv over time -> pooled.
        let a = x.audio.transpose(1, 2);
        // Zero the padded steps so a window's encoding does not depend on its batch.
        let a = self.a_conv1.forward(&a).gelu("none") * x.audio_mask.unsqueeze(1);
        let a = self.a_conv2.forward(&a).gelu("none").transpose(1, 2);
        let steps = a.size()[1];
        let amask = x.audio_mask.slice(1, 0, None, 2).narrow(1, 0, steps);
        let a = drop(
            self.a_proj
                .forward(&masked_mean_max(&a, &amask))
                .gelu("none"),
        );
        let v = self.v_frame.forward(&x.visual).gelu("none");
        let v = drop(
            self.v_proj
                .forward(&masked_mean_max(&v, &x.visual_mask))
                .gelu("none"),
        );
        let a_present = x.audio_mask.amax([1i64].as_slice(), true);
        let v_present = x.visual_mask.amax([1i64].as_slice(), true);
        let h = Tensor::cat(
            &[
                t,
                a,
                v,
                x.text_present.shallow_clone(),
                a_present,
                v_present,
            ],
            1,
        );
        let h = drop(self.fuse.forward(&h).gelu("none"));
        (self.reg.forward(&h).squeeze_dim(1), self.cls.forward(&h))
    }

    /// Predictions for windows (no gradient).
    pub(crate) fn predict(&self, items: &[&WindowFeatures], use_: Modalities) -> Vec<Prediction> {
        let _g = tch::no_grad_guard();
        let (score, logits) = self.forward(&self.batch(items, use_), false);
        let score: Vec<f32> = Vec::try_from(score).unwrap_or_default();
        let probs: Vec<f32> =
            Vec::try_from(logits.softmax(-1, Kind::Float).view([-1])).unwrap_or_default();
        let lim = self.meta.score_limit;
        score
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let p = [probs[i * 3], probs[i * 3 + 1], probs[i * 3 + 2]];
                let score = s.clamp(-lim, lim);
                Prediction {
                    score,
                    probs: p,
                    uncertainty: self.meta.gate.uncertainty(&p),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(text: bool, audio_frames: usize, video_frames: usize) -> WindowFeatures {
        WindowFeatures {
            text: text.then(|| vec![0.05; TEXT_DIM]),
            audio: (0..audio_frames * AUDIO_DIM)
                .map(|i| (i % 7) as f32 * 0.1)
                .collect(),
            visual: vec![0.5; video_frames * VIS_DIM],
            pitch_ref: None,
        }
    }

    #[test]
    fn predicts_for_any_mix_of_modalities() {
        let m = Ubm::new(UbmMeta::new(32, 0.1, 0.1, 3.0));
        let ws = [
            window(true, 300, 15),
            window(false, 120, 0),
            window(true, 7, 3),
        ];
        let refs: Vec<&WindowFeatures> = ws.iter().collect();
        let p = m.predict(&refs, Modalities::ALL);
        assert_eq!(p.len(), 3);
        for q in &p {
            assert!(q.score.is_finite() && q.uncertainty.is_finite());
            assert!((q.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(
                q.uncertainty >= 0.0 && q.uncertainty <= crate::routing::uncertainty::LN_3 + 1e-5
            );
        }
        // A window alone and in a padded batch gets the same prediction.
        let alone = m.predict(&[&ws[2]], Modalities::ALL)[0];
        assert!(
            (alone.score - p[2].score).abs() < 1e-4,
            "{alone:?} vs {:?}",
            p[2]
        );
    }

    #[test]
    fn save_load_round_trip_and_mismatch_error() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("ubm");
        let m = Ubm::new(UbmMeta::new(32, 0.1, 0.1, 3.0));
        m.save(&base).unwrap();
        let back = Ubm::load(&base).unwrap();
        let w = window(true, 50, 5);
        assert_eq!(
            m.predict(&[&w], Modalities::ALL),
            back.predict(&[&w], Modalities::ALL)
        );
        // Same metadata, other width: the weights no longer fit.
        let mut meta = back.meta.clone();
        meta.hidden = 48;
        std::fs::write(
            base.with_extension("json"),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        let e = Ubm::load(&base)
            .err()
            .expect("mismatch must fail")
            .to_string();
        assert!(e.contains("do not match the UBM architecture"), "{e}");
    }
}
