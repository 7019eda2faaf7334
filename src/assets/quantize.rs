//! Quantisation of a ggml Whisper file (f16) into the block formats whisper.cpp computes
//! with directly (Q8_0, Q5_1): the matrices of every layer shrink 2-3x, and so does the
//! memory traffic of the encoder and decoder, which dominates on a CPU.
//!
//! whisper.cpp creates every 2-D weight (attention, MLP, token embedding) with the file's
//! weight type; convolution kernels stay f16 and 1-D tensors and positions f32. The
//! header's ftype carries the quantisation version (`2 * 1000 + ftype`).

use std::io::{BufWriter, Write};
use std::path::Path;

use half::f16;

use super::convert::{self, Cursor};
use crate::error::ModelError;

/// ggml's quantisation format version, stored in the ftype field (x 1000).
const QNT_VERSION: i32 = 2;
/// Elements per block in both formats.
const QK: usize = 32;

/// A block format whisper.cpp reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quant {
    /// 8-bit values, one f16 scale per 32 (34 bytes per block): near lossless.
    #[value(name = "q8_0")]
    Q8_0,
    /// 5-bit values, f16 scale and minimum per 32 (24 bytes per block).
    #[value(name = "q5_1")]
    Q5_1,
}

impl Quant {
    /// ggml tensor type id.
    fn ggml_type(self) -> i32 {
        match self {
            Self::Q8_0 => 8,
            Self::Q5_1 => 7,
        }
    }
    /// ggml file type id ("mostly" this type).
    fn ftype(self) -> i32 {
        match self {
            Self::Q8_0 => 7,
            Self::Q5_1 => 9,
        }
    }
    /// Bytes per block of 32 values.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q5_1 => 24,
        }
    }
    /// Bytes per block of a ggml tensor type this crate can check, with its block size.
    pub(crate) fn type_layout(ttype: u32) -> Option<(usize, usize)> {
        match ttype {
            0 => Some((4, 1)),
            1 => Some((2, 1)),
            7 => Some((Self::Q5_1.block_bytes(), QK)),
            8 => Some((Self::Q8_0.block_bytes(), QK)),
            _ => None,
        }
    }
    /// The name used in file names (`ggml-base-q8_0.bin`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q5_1 => "q5_1",
        }
    }
}

/// What a quantisation wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantReport {
    /// Tensors quantised.
    pub quantised: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// Output size in bytes.
    pub bytes: u64,
}

/// `ggml-base.bin` -> `ggml-base-q8_0.bin`, beside the input.
pub fn default_output(input: &Path, q: Quant) -> std::path::PathBuf {
    let stem = input.file_stem().and_then(|s| s.to_str()).unwrap_or("ggml");
    input.with_file_name(format!("{stem}-{}.bin", q.suffix()))
}

/// Quantises the f16 ggml Whisper file `input` into `out` (written atomically).
pub fn quantize_ggml(input: &Path, out: &Path, q: Quant) -> Result<QuantReport, ModelError> {
    let header = convert::inspect_ggml(input)?;
    let corrupt = |reason: String| ModelError::Corrupt {
        path: input.to_path_buf(),
        reason,
    };
    if header.ftype != 1 {
        return Err(corrupt(format!(
            "ftype {} is not an f16 model; quantise the f16 file (e.g. ggml-base.bin)",
            header.ftype
        )));
    }
    let bytes = std::fs::read(input).map_err(|source| ModelError::Io {
        path: input.into(),
        source,
    })?;
    let mut c = Cursor::new(&bytes);
    convert::skip_ggml_header(&mut c).map_err(corrupt)?;
    let header_end = c.pos();
    let tmp = out.with_extension("bin.partial");
    let io = |source| ModelError::Io {
        path: tmp.clone(),
        source,
    };
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
    // Magic and ten hyper-parameters, then the ftype with the quantisation version.
    w.write_all(&bytes[..44]).map_err(io)?;
    w.write_all(&(QNT_VERSION * 1000 + q.ftype()).to_le_bytes())
        .map_err(io)?;
    w.write_all(&bytes[48..header_end]).map_err(io)?;
    let mut report = QuantReport {
        quantised: 0,
        copied: 0,
        bytes: 0,
    };
    let mut block = Vec::with_capacity(1 << 20);
    while c.pos() < bytes.len() {
        let t = convert::read_ggml_tensor(&mut c).map_err(corrupt)?;
        let quantise = t.ttype == 1 && t.dims.len() == 2 && t.dims[0] % QK == 0;
        let ttype = if quantise {
            q.ggml_type()
        } else {
            t.ttype as i32
        };
        w.write_all(&bytes[t.record.start..t.record.start + 8])
            .map_err(io)?;
        w.write_all(&ttype.to_le_bytes()).map_err(io)?;
        w.write_all(&bytes[t.record.start + 12..t.data.start])
            .map_err(io)?;
        let data = &bytes[t.data.clone()];
        if quantise {
            block.clear();
            quantize_f16(data, q, &mut block);
            w.write_all(&block).map_err(io)?;
            report.quantised += 1;
        } else {
            w.write_all(data).map_err(io)?;
            report.copied += 1;
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(|source| ModelError::Io {
        path: out.into(),
        source,
    })?;
    report.bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(report)
}

/// Quantises little-endian f16 values (a multiple of 32) into `out`.
fn quantize_f16(data: &[u8], q: Quant, out: &mut Vec<u8>) {
    let mut x = [0f32; QK];
    for chunk in data.chunks_exact(2 * QK) {
        for (v, b) in x.iter_mut().zip(chunk.chunks_exact(2)) {
            *v = f16::from_le_bytes([b[0], b[1]]).to_f32();
        }
        match q {
            Quant::Q8_0 => block_q8_0(&x, out),
            Quant::Q5_1 => block_q5_1(&x, out),
        }
    }
}

/// One Q8_0 block: d = max|x| / 127 (f16), then round(x / d) as i8.
fn block_q8_0(x: &[f32; QK], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| ((v * id).round() as i8) as u8));
}

/// One Q5_1 block: d = (max - min) / 31 and m = min (f16 each), the high bits of the 32
/// values as a u32, then their low 4 bits, value j in the low nibble of byte j and value
/// j + 16 in its high nibble.
fn block_q5_1(x: &[f32; QK], out: &mut Vec<u8>) {
    let (min, max) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 31.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    let q = |v: f32| (((v - min) * id + 0.5) as u8).min(31);
    let mut qh = 0u32;
    let mut qs = [0u8; QK / 2];
    for j in 0..QK / 2 {
        let (a, b) = (q(x[j]), q(x[j + QK / 2]));
        qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
        qh |= u32::from(a >> 4) << j;
        qh |= u32::from(b >> 4) << (j + QK / 2);
    }
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend_from_slice(&qs);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequant(q: Quant, b: &[u8]) -> Vec<f32> {
        let h = |i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        match q {
            Quant::Q8_0 => b[2..34].iter().map(|&v| h(0) * (v as i8) as f32).collect(),
            Quant::Q5_1 => {
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                (0..QK)
                    .map(|j| {
                        let lo = if j < 16 {
                            b[8 + j] & 15
                        } else {
                            b[8 + j - 16] >> 4
                        };
                        let hi = ((qh >> j) & 1) as u8;
                        h(0) * f32::from(lo | (hi << 4)) + h(2)
                    })
                    .collect()
            }
        }
    }

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let mut x = [0f32; QK];
        for (i, v) in x.iter_mut().enumerate() {
            *v = ((i as f32) * 0.37).sin() * 0.8 - 0.1;
        }
        for q in [Quant::Q8_0, Quant::Q5_1] {
            let mut b = Vec::new();
            match q {
                Quant::Q8_0 => block_q8_0(&x, &mut b),
                Quant::Q5_1 => block_q5_1(&x, &mut b),
            }
            assert_eq!(b.len(), q.block_bytes());
            let step = match q {
                Quant::Q8_0 => 0.8 / 127.0,
                Quant::Q5_1 => 1.6 / 31.0,
            };
            for (a, r) in x.iter().zip(dequant(q, &b)) {
                assert!((a - r).abs() <= step * 0.51 + 1e-3, "{q:?}: {a} vs {r}");
            }
        }
    }

    #[test]
    fn zero_block_is_zero() {
        let mut b = Vec::new();
        block_q8_0(&[0.0; QK], &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }
}
