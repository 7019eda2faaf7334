//! Kaldi-compatible log mel filterbank, the input CAM++ was trained on: 25 ms frames every
//! 10 ms (only whole frames), DC offset removed, pre-emphasis 0.97, Povey window, 512-point
//! power spectrum, 80 triangular filters evenly spaced on Kaldi's mel scale
//! (`1127 ln(1 + f / 700)`) from 20 Hz to Nyquist, natural log floored at `f32::EPSILON`.
//! No dither. Samples are floats in [-1, 1] (the scale the model was trained with).
//!
//! Buffers are allocated once per extractor; `compute` writes into a caller-owned vector.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};

/// Samples per frame (25 ms at 16 kHz).
const FRAME_LEN: usize = 400;
/// Samples between frame starts (10 ms).
pub(crate) const FRAME_SHIFT: usize = 160;
/// FFT size: the frame padded to a power of two.
const FFT_LEN: usize = 512;
/// Filterbank channels.
pub const N_BINS: usize = 80;
const PREEMPHASIS: f32 = 0.97;
const LOW_HZ: f32 = 20.0;
const RATE_HZ: f32 = 16_000.0;

fn kaldi_mel(hz: f32) -> f32 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// Computes filterbank frames; reusable across segments.
pub struct Fbank {
    fft: Arc<dyn RealToComplex<f32>>,
    povey: Vec<f32>,
    /// Per channel: first FFT bin and the weights from there.
    filters: Vec<(usize, Vec<f32>)>,
    buf: Vec<f32>,
    spec: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

impl Fbank {
    /// Plans the FFT and builds the window and filters.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FFT_LEN);
        let povey = (0..FRAME_LEN)
            .map(|i| {
                let a = 2.0 * std::f64::consts::PI * i as f64 / (FRAME_LEN - 1) as f64;
                (0.5 - 0.5 * a.cos()).powf(0.85) as f32
            })
            .collect();
        let (lo, hi) = (kaldi_mel(LOW_HZ), kaldi_mel(RATE_HZ / 2.0));
        let step = (hi - lo) / (N_BINS + 1) as f32;
        let bin_hz = RATE_HZ / FFT_LEN as f32;
        // Kaldi weighs the first FFT_LEN / 2 bins; the Nyquist bin gets no weight.
        let filters = (0..N_BINS)
            .map(|m| {
                let left = lo + m as f32 * step;
                let (centre, right) = (left + step, left + 2.0 * step);
                let weights: Vec<(usize, f32)> = (0..FFT_LEN / 2)
                    .filter_map(|k| {
                        let mel = kaldi_mel(bin_hz * k as f32);
                        let up = (mel - left) / (centre - left);
                        let down = (right - mel) / (right - centre);
                        let w = up.min(down);
                        (w > 0.0).then_some((k, w))
                    })
                    .collect();
                let first = weights.first().map_or(0, |w| w.0);
                (first, weights.iter().map(|w| w.1).collect())
            })
            .collect();
        let scratch = fft.make_scratch_vec();
        Self {
            spec: fft.make_output_vec(),
            fft,
            povey,
            filters,
            buf: vec![0.0; FFT_LEN],
            scratch,
        }
    }

    /// Whole frames in `n` samples.
    pub fn frames_for(n: usize) -> usize {
        if n < FRAME_LEN {
            0
        } else {
            1 + (n - FRAME_LEN) / FRAME_SHIFT
        }
    }

    /// Replaces `out` with `frames_for(samples.len()) * N_BINS` log energies, frame-major,
    /// each channel's mean over the frames subtracted (what CAM++ expects).
    pub fn compute(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        let n = Self::frames_for(samples.len());
        out.clear();
        out.reserve(n * N_BINS);
        for f in 0..n {
            let start = f * FRAME_SHIFT;
            self.frame(&samples[start..start + FRAME_LEN], out);
        }
        if n == 0 {
            return;
        }
        for c in 0..N_BINS {
            let mean = (0..n).map(|f| out[f * N_BINS + c] as f64).sum::<f64>() / n as f64;
            for f in 0..n {
                out[f * N_BINS + c] -= mean as f32;
            }
        }
    }

    fn frame(&mut self, x: &[f32], out: &mut Vec<f32>) {
        let dc = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let b = &mut self.buf;
        for (d, &v) in b.iter_mut().zip(x) {
            *d = v - dc as f32;
        }
        for i in (1..FRAME_LEN).rev() {
            b[i] -= PREEMPHASIS * b[i - 1];
        }
        b[0] -= PREEMPHASIS * b[0];
        for (d, w) in b.iter_mut().zip(&self.povey) {
            *d *= w;
        }
        b[FRAME_LEN..].fill(0.0);
        self.fft
            .process_with_scratch(b, &mut self.spec, &mut self.scratch)
            .expect("FFT buffers sized by the plan");
        for (first, w) in &self.filters {
            let e: f32 = w
                .iter()
                .zip(&self.spec[*first..])
                .map(|(w, c)| w * c.norm_sqr())
                .sum();
            out.push(e.max(f32::EPSILON).ln());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_and_mean_removed() {
        assert_eq!(Fbank::frames_for(399), 0);
        assert_eq!(Fbank::frames_for(400), 1);
        assert_eq!(Fbank::frames_for(16000), 98);
        let x: Vec<f32> = (0..16000)
            .map(|i| 0.3 * (i as f32 * 0.07).sin() + 0.01 * ((i * 7919) % 13) as f32)
            .collect();
        let mut f = Fbank::new();
        let mut out = Vec::new();
        f.compute(&x, &mut out);
        assert_eq!(out.len(), 98 * N_BINS);
        for c in 0..N_BINS {
            let m: f32 = (0..98).map(|t| out[t * N_BINS + c]).sum::<f32>() / 98.0;
            assert!(m.abs() < 1e-3, "channel {c} mean {m}");
        }
    }

    #[test]
    fn filters_cover_the_band_in_order() {
        let f = Fbank::new();
        assert_eq!(f.filters.len(), N_BINS);
        let firsts: Vec<usize> = f.filters.iter().map(|x| x.0).collect();
        assert!(firsts.windows(2).all(|w| w[0] <= w[1]));
        assert!(f.filters.iter().all(|(_, w)| !w.is_empty()));
    }
}
