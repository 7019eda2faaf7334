//! Pitch relative to the speaker (issue 11, item 7): a model that reads absolute pitch
//! learns each training voice's normal pitch and calls a high-voiced stranger "bright". A
//! model trained with speaker-relative pitch sees, in the pitch slot of each voiced frame,
//! how far the frame's f0 is from the speaker's reference: the geometric mean f0 of that
//! speaker's voiced frames so far (this window included). Serving keeps one
//! [`PitchBaseline`] per stream and speaker; training and `eval` keep one per speaker of a
//! dataset (its `speaker` column, else its video) fed in clip order, so both see a window
//! exactly as serving would after the same speech.

use std::borrow::Cow;

use super::WindowFeatures;
use super::audio::{AUDIO_DIM, idx};

/// Running reference pitch of one speaker.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PitchBaseline {
    sum_log: f64,
    voiced: u64,
}

impl PitchBaseline {
    /// Adds a window's voiced frames (`AUDIO_DIM` values per frame).
    pub fn observe(&mut self, audio: &[f32]) {
        for frame in audio.chunks_exact(AUDIO_DIM) {
            let f0 = frame[idx::F0];
            if f0 > 0.0 {
                self.sum_log += f64::from(f0).ln();
                self.voiced += 1;
            }
        }
    }

    /// The reference pitch (in the F0 slot's units, Hz / 500); `None` before any voiced
    /// frame.
    pub fn reference(&self) -> Option<f32> {
        (self.voiced > 0).then(|| (self.sum_log / self.voiced as f64).exp() as f32)
    }
}

/// A voiced frame's pitch as a speaker-relative model reads it: 1 + octaves above the
/// reference (clamped to 0.05..2, so a voiced frame never reads as unvoiced 0); unvoiced
/// frames stay 0. Without a reference (no voiced frame yet) the value is 1 when voiced.
pub fn relative(f0: f32, reference: Option<f32>) -> f32 {
    if f0 <= 0.0 {
        return 0.0;
    }
    match reference {
        Some(r) if r > 0.0 => (1.0 + (f0 / r).log2()).clamp(0.05, 2.0),
        _ => 1.0,
    }
}

/// Rewrites the pitch slot of `audio`'s frames in place (see [`relative`]).
pub fn make_relative(audio: &mut [f32], reference: Option<f32>) {
    for frame in audio.chunks_exact_mut(AUDIO_DIM) {
        frame[idx::F0] = relative(frame[idx::F0], reference);
    }
}

/// A window's speaker reference: the one its stream or dataset set, else the window's own
/// voiced frames.
pub fn window_reference(f: &WindowFeatures) -> Option<f32> {
    f.pitch_ref.or_else(|| {
        let mut b = PitchBaseline::default();
        b.observe(&f.audio);
        b.reference()
    })
}

/// A window's audio frames as a model reads them: as computed, or (`speaker_pitch`) with
/// the pitch slot relative to the speaker (a copy; borrowed otherwise).
pub fn model_audio(f: &WindowFeatures, speaker_pitch: bool) -> Cow<'_, [f32]> {
    if !speaker_pitch {
        return Cow::Borrowed(&f.audio);
    }
    let mut a = f.audio.clone();
    make_relative(&mut a, window_reference(f));
    Cow::Owned(a)
}

/// Sets each window's speaker reference from the windows before it of the same speaker
/// and itself: `speakers[i]` names window `i`'s speaker, windows are in stream order.
pub fn assign_references(feats: &mut [WindowFeatures], speakers: &[&str]) {
    let mut seen: std::collections::HashMap<&str, PitchBaseline> = Default::default();
    for (f, s) in feats.iter_mut().zip(speakers) {
        let b = seen.entry(s).or_default();
        b.observe(&f.audio);
        f.pitch_ref = b.reference();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f0s: &[f32]) -> Vec<f32> {
        let mut a = vec![0.0; f0s.len() * AUDIO_DIM];
        for (k, f) in f0s.iter().enumerate() {
            a[k * AUDIO_DIM + idx::F0] = *f;
        }
        a
    }

    #[test]
    fn reference_is_the_geometric_mean_of_voiced_frames() {
        let mut b = PitchBaseline::default();
        assert_eq!(b.reference(), None);
        b.observe(&frames(&[0.2, 0.0, 0.8]));
        assert!((b.reference().unwrap() - 0.4).abs() < 1e-6);
        // An octave above the reference reads 2, an octave below 0.05 (clamped from 0).
        assert!((relative(0.8, b.reference()) - 2.0).abs() < 1e-6);
        assert!((relative(0.4, b.reference()) - 1.0).abs() < 1e-6);
        assert_eq!(relative(0.2, b.reference()), 0.05);
        assert_eq!(relative(0.0, b.reference()), 0.0);
        assert_eq!(relative(0.3, None), 1.0);
        // A model reads the audio as computed, or with its own window as the reference.
        let f = WindowFeatures {
            audio: frames(&[0.2, 0.0, 0.8]),
            ..WindowFeatures::default()
        };
        assert!(matches!(model_audio(&f, false), Cow::Borrowed(a) if a == f.audio.as_slice()));
        let read = model_audio(&f, true);
        let slot: Vec<f32> = read.chunks_exact(AUDIO_DIM).map(|fr| fr[idx::F0]).collect();
        assert_eq!(slot, [0.05, 0.0, 2.0]);
    }

    #[test]
    fn references_run_per_speaker_in_order() {
        let w = |f0: f32| WindowFeatures {
            audio: frames(&[f0, f0]),
            ..WindowFeatures::default()
        };
        let mut feats = vec![w(0.2), w(0.4), w(0.8), w(0.0)];
        assign_references(&mut feats, &["a", "b", "a", "b"]);
        assert!((feats[0].pitch_ref.unwrap() - 0.2).abs() < 1e-6);
        assert!((feats[1].pitch_ref.unwrap() - 0.4).abs() < 1e-6);
        assert!((feats[2].pitch_ref.unwrap() - 0.4).abs() < 1e-6);
        // A window without voice keeps its speaker's reference.
        assert!((feats[3].pitch_ref.unwrap() - 0.4).abs() < 1e-6);
        // The same high voice reads the same relative pitch whatever its absolute level.
        let (mut lo, mut hi) = (frames(&[0.2, 0.3]), frames(&[0.4, 0.6]));
        make_relative(&mut lo, Some(0.2));
        make_relative(&mut hi, Some(0.4));
        assert_eq!(lo, hi);
    }
}
