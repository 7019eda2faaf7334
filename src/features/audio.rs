//! Acoustic features of a window: one vector every 10 ms (25 ms Hann frames, 512-point
//! FFT): 40 log-mel energies, log energy, zero-crossing rate, spectral centroid, flatness
//! and roll-off, pitch (f0, normalised autocorrelation) and voicing strength.
//!
//! The same code runs for live windows and for training. All buffers (FFT plan, window,
//! mel filters, scratch) are allocated once per featurizer; `compute` appends to a
//! caller-owned output.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};

use crate::source::SAMPLE_RATE;

/// Samples per analysis frame (25 ms).
pub(crate) const FRAME: usize = 400;
/// Samples between frames (10 ms).
pub const HOP: usize = 160;
const NFFT: usize = 512;
/// Mel bands.
pub(crate) const N_MELS: usize = 40;
/// Values per frame.
pub const AUDIO_DIM: usize = N_MELS + 7;
/// Pitch search range, Hz.
const F0_MIN: f32 = 60.0;
const F0_MAX: f32 = 400.0;
/// Normalised autocorrelation above which a frame counts as voiced.
const VOICING_THRESHOLD: f32 = 0.45;
/// Frames quieter than this (dBFS) are not searched for pitch.
const PITCH_FLOOR_DB: f32 = -50.0;

/// Index of named values inside a frame vector (after the mel bands).
pub mod idx {
    use super::N_MELS;
    /// Log energy, dBFS / 100.
    pub const ENERGY: usize = N_MELS;
    /// Zero-crossing rate (crossings per sample).
    pub const ZCR: usize = N_MELS + 1;
    /// Spectral centroid / Nyquist.
    pub const CENTROID: usize = N_MELS + 2;
    /// Spectral flatness (geometric / arithmetic mean of the power spectrum).
    pub const FLATNESS: usize = N_MELS + 3;
    /// 85% roll-off frequency / Nyquist.
    pub const ROLLOFF: usize = N_MELS + 4;
    /// Pitch in Hz / 500 (0 when unvoiced).
    pub const F0: usize = N_MELS + 5;
    /// Voicing strength: peak normalised autocorrelation in the pitch range.
    pub const VOICING: usize = N_MELS + 6;
}

/// Computes frame features; reusable across windows.
pub struct AudioFeaturizer {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// `N_MELS` triangular filters over `NFFT / 2 + 1` bins, as (first bin, weights).
    mel: Vec<(usize, Vec<f32>)>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    power: Vec<f32>,
    scratch: Vec<Complex<f32>>,
}

impl Default for AudioFeaturizer {
    fn default() -> Self {
        Self::new()
    }
}

fn hz_to_mel(f: f32) -> f32 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f32) -> f32 {
    700.0 * (10f32.powf(m / 2595.0) - 1.0)
}

impl AudioFeaturizer {
    /// Plans the FFT and builds the window and mel filters.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(NFFT);
        let window = (0..FRAME)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (FRAME - 1) as f32).cos())
            .collect();
        let bins = NFFT / 2 + 1;
        let sr = SAMPLE_RATE as f32;
        let (lo, hi) = (hz_to_mel(20.0), hz_to_mel(sr / 2.0));
        let edges: Vec<f32> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f32 / (N_MELS + 1) as f32) * NFFT as f32 / sr)
            .collect();
        let mel = (0..N_MELS)
            .map(|m| {
                let (l, c, r) = (edges[m], edges[m + 1], edges[m + 2]);
                let first = l.floor().max(0.0) as usize;
                let last = (r.ceil() as usize).min(bins - 1);
                let w = (first..=last)
                    .map(|b| {
                        let b = b as f32;
                        if b <= c {
                            ((b - l) / (c - l).max(1e-6)).max(0.0)
                        } else {
                            ((r - b) / (r - c).max(1e-6)).max(0.0)
                        }
                    })
                    .collect();
                (first, w)
            })
            .collect();
        let scratch = fft.make_scratch_vec();
        Self {
            spectrum: fft.make_output_vec(),
            fft,
            window,
            mel,
            frame: vec![0.0; NFFT],
            power: vec![0.0; bins],
            scratch,
        }
    }

    /// Number of frames `compute` produces for `n` samples.
    pub(crate) fn frames_for(n: usize) -> usize {
        if n < FRAME {
            usize::from(n > 0)
        } else {
            1 + (n - FRAME) / HOP
        }
    }

    /// Appends `frames_for(samples.len()) * AUDIO_DIM` values to `out`.
    pub fn compute(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        let n = Self::frames_for(samples.len());
        out.reserve(n * AUDIO_DIM);
        for f in 0..n {
            let start = f * HOP;
            let end = (start + FRAME).min(samples.len());
            self.frame_features(&samples[start..end], out);
        }
    }

    fn frame_features(&mut self, x: &[f32], out: &mut Vec<f32>) {
        let nyq_bins = (NFFT / 2) as f32;
        // Time domain: energy, zero crossings, pitch.
        let energy = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
        let db = 10.0 * (energy + 1e-10).log10();
        let zcr = x
            .windows(2)
            .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
            .count() as f32
            / x.len().max(1) as f32;
        let (f0, voicing) = if db > PITCH_FLOOR_DB {
            pitch(x)
        } else {
            (0.0, 0.0)
        };

        // Spectrum.
        self.frame.iter_mut().for_each(|v| *v = 0.0);
        for (i, (&s, &w)) in x.iter().zip(&self.window).enumerate() {
            self.frame[i] = s * w;
        }
        // The buffers have the planned lengths, so the FFT cannot fail.
        let _ =
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch);
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr() / NFFT as f32;
        }
        for (first, w) in &self.mel {
            let e: f32 = w
                .iter()
                .zip(&self.power[*first..])
                .map(|(a, b)| a * b)
                .sum();
            out.push((e + 1e-10).ln() / 10.0);
        }
        let total: f32 = self.power.iter().sum::<f32>() + 1e-12;
        let centroid = self
            .power
            .iter()
            .enumerate()
            .map(|(i, p)| i as f32 * p)
            .sum::<f32>()
            / total
            / nyq_bins;
        let log_mean =
            self.power.iter().map(|p| (p + 1e-12).ln()).sum::<f32>() / self.power.len() as f32;
        let flatness = log_mean.exp() / (total / self.power.len() as f32);
        let mut acc = 0.0;
        let mut rolloff = 0.0;
        for (i, p) in self.power.iter().enumerate() {
            acc += p;
            if acc >= 0.85 * total {
                rolloff = i as f32 / nyq_bins;
                break;
            }
        }
        out.extend_from_slice(&[
            db / 100.0,
            zcr,
            centroid,
            flatness,
            rolloff,
            f0 / 500.0,
            voicing,
        ]);
    }
}

/// Pitch by normalised autocorrelation over 60-400 Hz; (f0 Hz, strength), f0 = 0 if unvoiced.
fn pitch(x: &[f32]) -> (f32, f32) {
    let sr = SAMPLE_RATE as f32;
    let (min_lag, max_lag) = ((sr / F0_MAX) as usize, (sr / F0_MIN) as usize);
    if x.len() <= max_lag + 16 {
        return (0.0, 0.0);
    }
    let mean = x.iter().sum::<f32>() / x.len() as f32;
    let n = x.len() - max_lag;
    let e0: f32 = x[..n].iter().map(|v| (v - mean) * (v - mean)).sum();
    // Normalised autocorrelation per lag, on the stack (max_lag < 512 at 16 kHz).
    let mut r = [0.0f32; 512];
    let mut peak = 0.0f32;
    for lag in min_lag..=max_lag {
        let (mut num, mut e1) = (0.0f32, 0.0f32);
        for i in 0..n {
            let (a, b) = (x[i] - mean, x[i + lag] - mean);
            num += a * b;
            e1 += b * b;
        }
        r[lag] = num / (e0 * e1).sqrt().max(1e-9);
        peak = peak.max(r[lag]);
    }
    // The shortest lag that is a local maximum close to the best one: multiples of the
    // period correlate as well, and picking them would halve the pitch.
    let best = (min_lag + 1..max_lag)
        .find(|&l| r[l] >= 0.9 * peak && r[l] >= r[l - 1] && r[l] >= r[l + 1])
        .map(|l| (l, r[l]))
        .unwrap_or((0, peak));
    if best.0 > 0 && best.1 >= VOICING_THRESHOLD {
        (sr / best.0 as f32, best.1)
    } else {
        (0.0, best.1.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, secs: f32, amp: f32) -> Vec<f32> {
        (0..(secs * SAMPLE_RATE as f32) as usize)
            .map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / SAMPLE_RATE as f32).sin())
            .collect()
    }

    #[test]
    fn frame_count_and_width() {
        let mut f = AudioFeaturizer::new();
        let mut out = Vec::new();
        f.compute(&vec![0.0; 16_000], &mut out);
        assert_eq!(AudioFeaturizer::frames_for(16_000), 98);
        assert_eq!(out.len(), 98 * AUDIO_DIM);
    }

    #[test]
    fn pitch_of_a_tone_and_silence() {
        let mut f = AudioFeaturizer::new();
        let mut out = Vec::new();
        f.compute(&tone(200.0, 0.5, 0.5), &mut out);
        let frame = &out[10 * AUDIO_DIM..11 * AUDIO_DIM];
        let f0 = frame[idx::F0] * 500.0;
        assert!((f0 - 200.0).abs() < 5.0, "f0 {f0}");
        assert!(frame[idx::VOICING] > 0.9);
        // Centroid near 200 Hz of 8 kHz.
        assert!(
            frame[idx::CENTROID] < 0.1,
            "centroid {}",
            frame[idx::CENTROID]
        );
        // The mel band holding 200 Hz dominates.
        let peak = (0..N_MELS)
            .max_by(|&a, &b| frame[a].total_cmp(&frame[b]))
            .unwrap();
        assert!(peak < 8, "peak band {peak}");
        out.clear();
        f.compute(&vec![0.0; 8000], &mut out);
        assert_eq!(out[idx::F0], 0.0);
        assert!(
            out[idx::ENERGY] < -0.9,
            "silence energy {}",
            out[idx::ENERGY]
        );
    }

    #[test]
    fn noise_is_flat_and_unvoiced() {
        // Deterministic white-ish noise (LCG).
        let mut s = 12345u32;
        let noise: Vec<f32> = (0..8000)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let mut f = AudioFeaturizer::new();
        let mut out = Vec::new();
        f.compute(&noise, &mut out);
        let frame = &out[5 * AUDIO_DIM..6 * AUDIO_DIM];
        assert!(
            frame[idx::FLATNESS] > 0.3,
            "flatness {}",
            frame[idx::FLATNESS]
        );
        assert_eq!(frame[idx::F0], 0.0);
        assert!(frame[idx::ZCR] > 0.3);
    }
}
