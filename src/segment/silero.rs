//! Silero VAD v6 (16 kHz) as a streaming model in plain Rust: one speech probability per
//! 512-sample chunk (32 ms), with the LSTM state carried from chunk to chunk, so every
//! chunk is analysed once, as it arrives. The weights are read from the ggml file that
//! whisper.cpp's VAD loads (`ggml-silero-v6.2.0.bin`), and the network is the one
//! whisper.cpp builds: reflect padding to 640 samples, an STFT as a 256-tap convolution
//! with hop 128 (4 frames of 129 magnitudes), four 3-tap convolutions with ReLU (strides
//! 1, 2, 2, 1), an LSTM cell of 128 units, ReLU, a 1x1 convolution and a sigmoid.
//!
//! Per chunk it is ~0.7 M multiply-adds and no allocation.

use std::path::Path;

use half::f16;

use crate::assets::convert::Cursor;
use crate::error::ModelError;

/// Samples per chunk.
pub const CHUNK: usize = 512;
/// Reflect padding on each side of a chunk.
const PAD: usize = 64;
/// STFT kernel length and hop.
const FFT: usize = 256;
const HOP: usize = 128;
/// STFT frames per chunk: (512 + 2 * 64 - 256) / 128 + 1.
const FRAMES: usize = (CHUNK + 2 * PAD - FFT) / HOP + 1;
/// Magnitude bins (the basis holds 129 real then 129 imaginary rows).
const BINS: usize = 129;
/// LSTM width.
const HIDDEN: usize = 128;
/// Strides of the four encoder convolutions (whisper.cpp's graph; padding 1 each).
const STRIDES: [usize; 4] = [1, 2, 2, 1];

/// A 1-D convolution (padding 1) with its weights stored `[out][k][in]`, so each output
/// is a sum of contiguous dot products over time-major input.
struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
}

impl Conv {
    /// A convolution from ggml's `[out][in][k]` weights.
    fn new(w: Vec<f32>, b: Vec<f32>, [cin, cout, k]: [usize; 3], stride: usize) -> Self {
        let mut t = vec![0.0; w.len()];
        for o in 0..cout {
            for c in 0..cin {
                for kk in 0..k {
                    t[(o * k + kk) * cin + c] = w[(o * cin + c) * k + kk];
                }
            }
        }
        Self {
            w: t,
            b,
            cin,
            cout,
            k,
            stride,
        }
    }

    /// `out = relu(conv(x))` for time-major `x` (`len` steps of `cin`) given with one zero
    /// step of padding on each side (`xp`: `len + 2` steps); `out` is time-major too.
    fn relu_forward(&self, xp: &[f32], len: usize, out: &mut [f32]) -> usize {
        let lout = (len + 2 - self.k) / self.stride + 1;
        for t in 0..lout {
            for o in 0..self.cout {
                let mut acc = self.b[o];
                for kk in 0..self.k {
                    let w = &self.w[(o * self.k + kk) * self.cin..][..self.cin];
                    let x = &xp[(t * self.stride + kk) * self.cin..][..self.cin];
                    acc += dot(w, x);
                }
                out[t * self.cout + o] = acc.max(0.0);
            }
        }
        lout
    }
}

/// The streaming Silero model: weights, LSTM state and scratch buffers.
pub struct Silero {
    /// STFT basis, `[2 * BINS][FFT]`.
    basis: Vec<f32>,
    enc: Vec<Conv>,
    /// LSTM weights `[4 * HIDDEN][HIDDEN]` (gates i, f, g, o) and biases.
    w_ih: Vec<f32>,
    b_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_hh: Vec<f32>,
    /// Output layer.
    w_out: Vec<f32>,
    b_out: f32,
    h: Vec<f32>,
    c: Vec<f32>,
    padded: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    gates: Vec<f32>,
}

/// Reads the header and every tensor of a ggml Silero file: `(name, values)`, plus the
/// encoder layers' `(in, out, kernel)`.
type Tensors = (Vec<(String, Vec<f32>)>, Vec<[usize; 3]>);

fn read_file(bytes: &[u8]) -> Result<Tensors, String> {
    let mut r = Cursor::new(bytes);
    if r.i32()? as u32 != crate::assets::convert::GGML_MAGIC {
        return Err("bad magic: not a ggml model".into());
    }
    let name_len = r.i32()?;
    if !(1..=64).contains(&name_len) {
        return Err(format!("bad model type length {name_len}"));
    }
    let kind = String::from_utf8_lossy(r.take(name_len as usize)?).into_owned();
    if !kind.starts_with("silero") {
        return Err(format!("model type {kind:?} is not a Silero VAD"));
    }
    let (major, _minor, _patch) = (r.i32()?, r.i32()?, r.i32()?);
    let (window, _context) = (r.i32()?, r.i32()?);
    if window as usize != CHUNK || major < 5 {
        return Err(format!(
            "Silero v{major} with {window}-sample windows; a v5/v6 16 kHz model (512) is needed"
        ));
    }
    let layers = r.i32()?;
    if layers != 4 {
        return Err(format!("{layers} encoder layers where Silero has 4"));
    }
    let mut shapes = Vec::new();
    for _ in 0..layers {
        shapes.push([r.i32()? as usize, r.i32()? as usize, r.i32()? as usize]);
    }
    let (lstm_in, lstm_hidden, final_in, final_out) = (r.i32()?, r.i32()?, r.i32()?, r.i32()?);
    if (lstm_in, lstm_hidden, final_in, final_out) != (128, 128, 128, 1) {
        return Err("unexpected LSTM or output sizes".into());
    }
    let mut tensors = Vec::new();
    while !r.at_end() {
        let (ndim, len, ttype) = (r.i32()?, r.i32()?, r.i32()?);
        if !(0..=4).contains(&ndim) || !(1..=256).contains(&len) {
            return Err(format!("bad tensor record at byte {}", r.pos()));
        }
        let mut n = 1usize;
        for _ in 0..ndim {
            n = n.saturating_mul(r.i32()?.max(0) as usize);
        }
        let name = String::from_utf8_lossy(r.take(len as usize)?).into_owned();
        let values = match ttype {
            0 => r
                .take(n.saturating_mul(4))?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            1 => r
                .take(n.saturating_mul(2))?
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            t => return Err(format!("tensor {name}: unsupported type {t}")),
        };
        tensors.push((name, values));
    }
    Ok((tensors, shapes))
}

impl Silero {
    /// Loads the weights from a whisper.cpp Silero ggml file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing {
                path: path.into(),
                flag: "vad-model",
            },
            _ => ModelError::Io {
                path: path.into(),
                source,
            },
        })?;
        Self::from_bytes(&bytes).map_err(|reason| ModelError::Corrupt {
            path: path.into(),
            reason: format!("not a usable Silero VAD model: {reason}"),
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (mut tensors, shapes) = read_file(bytes)?;
        let mut take = |name: &str, len: usize| -> Result<Vec<f32>, String> {
            let i = tensors
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| format!("tensor {name} is missing"))?;
            let (_, v) = tensors.swap_remove(i);
            if v.len() != len {
                return Err(format!("tensor {name} has {} values, not {len}", v.len()));
            }
            Ok(v)
        };
        let basis = take("_model.stft.forward_basis_buffer", 2 * BINS * FFT)?;
        let mut enc = Vec::new();
        for (i, &[cin, cout, k]) in shapes.iter().enumerate() {
            let prefix = format!("_model.encoder.{i}.reparam_conv");
            enc.push(Conv::new(
                take(&format!("{prefix}.weight"), cout * cin * k)?,
                take(&format!("{prefix}.bias"), cout)?,
                [cin, cout, k],
                STRIDES[i],
            ));
        }
        let chain_ok = enc[0].cin == BINS
            && enc.windows(2).all(|p| p[0].cout == p[1].cin)
            && enc[3].cout == HIDDEN;
        if !chain_ok {
            return Err("encoder channels do not chain from 129 to 128".into());
        }
        let b_out = take("_model.decoder.decoder.2.bias", 1)?[0];
        Ok(Self {
            basis,
            enc,
            w_ih: take("_model.decoder.rnn.weight_ih", 4 * HIDDEN * HIDDEN)?,
            b_ih: take("_model.decoder.rnn.bias_ih", 4 * HIDDEN)?,
            w_hh: take("_model.decoder.rnn.weight_hh", 4 * HIDDEN * HIDDEN)?,
            b_hh: take("_model.decoder.rnn.bias_hh", 4 * HIDDEN)?,
            w_out: take("_model.decoder.decoder.2.weight", HIDDEN)?,
            b_out,
            h: vec![0.0; HIDDEN],
            c: vec![0.0; HIDDEN],
            padded: vec![0.0; CHUNK + 2 * PAD],
            a: vec![0.0; BINS * (FRAMES + 2)],
            b: vec![0.0; BINS * (FRAMES + 2)],
            gates: vec![0.0; 4 * HIDDEN],
        })
    }

    /// Speech probability of the next 512 samples of the stream (shorter input is padded
    /// with zeros).
    pub fn chunk(&mut self, x: &[f32]) -> f32 {
        let n = x.len().min(CHUNK);
        // Reflect padding: x[64..=1], x, x[510..=447] (zeros beyond a short input).
        let body = &mut self.padded[PAD..PAD + CHUNK];
        body[..n].copy_from_slice(&x[..n]);
        body[n..].fill(0.0);
        for i in 0..PAD {
            self.padded[i] = self.padded[2 * PAD - i];
            self.padded[PAD + CHUNK + i] = self.padded[PAD + CHUNK - 2 - i];
        }
        // STFT magnitudes, time-major, after one zero step (the first layer's padding).
        self.a[..BINS].fill(0.0);
        for t in 0..FRAMES {
            let frame = &self.padded[t * HOP..t * HOP + FFT];
            for bin in 0..BINS {
                let re = dot(&self.basis[bin * FFT..][..FFT], frame);
                let im = dot(&self.basis[(BINS + bin) * FFT..][..FFT], frame);
                self.a[(t + 1) * BINS + bin] = (re * re + im * im).sqrt();
            }
        }
        self.a[(FRAMES + 1) * BINS..(FRAMES + 2) * BINS].fill(0.0);
        let mut len = FRAMES;
        for (i, conv) in self.enc.iter().enumerate() {
            let (src, dst) = if i % 2 == 0 {
                (&self.a, &mut self.b)
            } else {
                (&self.b, &mut self.a)
            };
            // Output after a zero step, and a zero step after it: the next layer's padding.
            let c = conv.cout;
            dst[..c].fill(0.0);
            len = conv.relu_forward(src, len, &mut dst[c..]);
            dst[(len + 1) * c..(len + 2) * c].fill(0.0);
        }
        // After four layers the output is in `a` (one step of 128, after the padding).
        let x = &self.a[HIDDEN..2 * HIDDEN];
        for (g, gate) in self.gates.iter_mut().enumerate() {
            *gate = self.b_ih[g]
                + self.b_hh[g]
                + dot(&self.w_ih[g * HIDDEN..][..HIDDEN], x)
                + dot(&self.w_hh[g * HIDDEN..][..HIDDEN], &self.h);
        }
        let mut logit = self.b_out;
        for k in 0..HIDDEN {
            let i = sigmoid(self.gates[k]);
            let f = sigmoid(self.gates[HIDDEN + k]);
            let g = self.gates[2 * HIDDEN + k].tanh();
            let o = sigmoid(self.gates[3 * HIDDEN + k]);
            self.c[k] = f * self.c[k] + i * g;
            self.h[k] = o * self.c[k].tanh();
            logit += self.w_out[k] * self.h[k].max(0.0);
        }
        sigmoid(logit)
    }
}

/// Dot product with eight partial sums (the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 16-bit mono PCM samples of a WAV file (its `data` chunk).
    pub(crate) fn wav_samples(bytes: &[u8]) -> Vec<f32> {
        let mut i = 12;
        while i + 8 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]);
            if &bytes[i..i + 4] == b"data" {
                let data = &bytes[i + 8..(i + 8 + len as usize).min(bytes.len())];
                return data
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                    .collect();
            }
            i += 8 + len as usize;
        }
        panic!("no data chunk");
    }

    /// The reference is whisper.cpp's own Silero graph (the VAD API of whisper-rs) on the
    /// same file and audio: both must give the same probability for every chunk.
    #[test]
    fn matches_whisper_cpp_on_speech() {
        let dir = crate::assets::default_models_dir();
        let (model, wav) = (dir.join(crate::assets::VAD_FILE), dir.join("test/jfk.wav"));
        if !model.is_file() || !wav.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: {} or {} missing; scripts/setup installs them",
                model.display(),
                wav.display()
            );
            eprintln!("skipped: the Silero model or jfk.wav is not installed (scripts/setup)");
            return;
        }
        let audio = wav_samples(&std::fs::read(&wav).unwrap());
        let mut params = whisper_rs::WhisperVadContextParams::new();
        params.set_n_threads(1);
        params.set_use_gpu(false);
        let mut reference =
            whisper_rs::WhisperVadContext::new(model.to_str().unwrap(), params).unwrap();
        reference.detect_speech(&audio).unwrap();
        let want = reference.probabilities().to_vec();
        let mut ours = Silero::load(&model).unwrap();
        let got: Vec<f32> = audio.chunks(CHUNK).map(|c| ours.chunk(c)).collect();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "largest difference from whisper.cpp: {worst:.2e} over {} chunks",
            got.len()
        );
        let speech = want.iter().filter(|&&p| p > 0.5).count();
        assert!(speech > want.len() / 2, "the clip is mostly speech");
        assert!(worst < 0.01, "largest difference {worst}");
        // A fresh model gives the same first chunk again (no hidden state between models).
        let mut fresh = Silero::load(&model).unwrap();
        assert_eq!(fresh.chunk(&audio[..CHUNK]), got[0]);
    }
}
