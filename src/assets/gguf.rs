//! GGUF (v2/v3) reader: metadata, tensor directory, and dequantisation of F32, F16, Q4_1,
//! Q5_0, Q8_0, Q4_K and Q6_K tensors to f32. The large models ship as GGUF with their
//! tokenizer in the metadata: SmolLM2-135M-Instruct as Q4_1, Gemma-3-270M as Q4_K_M
//! (a mix of Q5_0, Q8_0, Q4_K and Q6_K).
//!
//! Shapes: GGUF lists dimensions fastest-first (ne0, ne1, ...); [`Gguf::tensor_f32`]
//! returns them reversed, i.e. row-major as PyTorch/tch expect.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::f16;

use crate::error::ModelError;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Values per quantisation block (Q4_1, Q8_0).
pub(crate) const QK: usize = 32;
/// Bytes of a Q4_1 block: f16 scale, f16 minimum, 16 bytes of 4-bit values.
pub(crate) const Q4_1_BLOCK: usize = 20;
/// Bytes of a Q8_0 block: f16 scale, 32 signed bytes.
pub(crate) const Q8_0_BLOCK: usize = 34;
/// Bytes of a Q5_0 block: f16 scale, 4 bytes of fifth bits, 16 bytes of 4-bit values.
const Q5_0_BLOCK: usize = 22;
/// Values per K-quant super-block (Q4_K, Q6_K).
const QK_K: usize = 256;
/// Bytes of a Q4_K super-block: f16 scale, f16 minimum scale, 12 bytes of packed 6-bit
/// sub-block scales and minimums, 128 bytes of 4-bit values.
const Q4_K_BLOCK: usize = 144;
/// Bytes of a Q6_K super-block: 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16
/// signed 8-bit sub-block scales, f16 scale.
const Q6_K_BLOCK: usize = 210;
/// Refuse arrays or strings longer than this (a corrupt length must not exhaust memory).
const MAX_LEN: u64 = 1 << 28;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unsigned integer (u8, u16, u32, u64).
    UInt(u64),
    /// Signed integer (i8, i16, i32, i64).
    Int(i64),
    /// Float (f32, f64).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

/// ggml tensor types this reader dequantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 4-bit with per-block scale and minimum.
    Q4_1,
    /// 5-bit with per-block scale (offset 16).
    Q5_0,
    /// 8-bit with per-block scale.
    Q8_0,
    /// 4-bit K-quant: super-blocks of 256, 6-bit scales and minimums per 32.
    Q4K,
    /// 6-bit K-quant: super-blocks of 256, 8-bit scales per 16.
    Q6K,
    /// Any other ggml type (listed, not dequantised).
    Other(u32),
}

impl TensorType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            other => Self::Other(other),
        }
    }

    /// Bytes for `n` values, when the type is supported.
    pub(crate) fn bytes_for(self, n: usize) -> Option<usize> {
        match self {
            Self::F32 => Some(n * 4),
            Self::F16 => Some(n * 2),
            Self::Q4_1 => n.is_multiple_of(QK).then(|| n / QK * Q4_1_BLOCK),
            Self::Q5_0 => n.is_multiple_of(QK).then(|| n / QK * Q5_0_BLOCK),
            Self::Q8_0 => n.is_multiple_of(QK).then(|| n / QK * Q8_0_BLOCK),
            Self::Q4K => n.is_multiple_of(QK_K).then(|| n / QK_K * Q4_K_BLOCK),
            Self::Q6K => n.is_multiple_of(QK_K).then(|| n / QK_K * Q6_K_BLOCK),
            Self::Other(_) => None,
        }
    }

    /// The ggml type id.
    pub(crate) fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q6K => 14,
            Self::Other(id) => id,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions as stored (fastest first).
    pub(crate) dims: Vec<u64>,
    /// Storage type.
    pub kind: TensorType,
    /// Offset from the start of the data section.
    pub(crate) offset: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Row-major shape (the stored dimensions reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An opened GGUF file: metadata and tensor directory (tensor data is read on demand).
#[derive(Debug)]
pub struct Gguf {
    /// File path.
    pub path: PathBuf,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    data_start: u64,
    file_len: u64,
    /// Metadata key count and where the metadata ends (for copying it verbatim).
    n_kv: u64,
    meta_end: u64,
    align: u64,
}

struct Reader<R: Read> {
    r: R,
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("truncated at byte {}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        if n > MAX_LEN {
            return Err(format!("string of {n} bytes at byte {}", self.pos));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("truncated string at byte {}", self.pos))?;
        self.pos += n;
        String::from_utf8(b).map_err(|_| format!("string at byte {} is not UTF-8", self.pos))
    }
    fn value(&mut self, kind: u32) -> Result<Value, String> {
        Ok(match kind {
            0 => Value::UInt(self.bytes::<1>()?[0] as u64),
            1 => Value::Int(self.bytes::<1>()?[0] as i8 as i64),
            2 => Value::UInt(u16::from_le_bytes(self.bytes::<2>()?) as u64),
            3 => Value::Int(i16::from_le_bytes(self.bytes::<2>()?) as i64),
            4 => Value::UInt(self.u32()? as u64),
            5 => Value::Int(i32::from_le_bytes(self.bytes::<4>()?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes::<4>()?) as f64),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let item = self.u32()?;
                let n = self.u64()?;
                if n > MAX_LEN {
                    return Err(format!("array of {n} items at byte {}", self.pos));
                }
                let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    v.push(self.value(item)?);
                }
                Value::Array(v)
            }
            10 => Value::UInt(self.u64()?),
            11 => Value::Int(i64::from_le_bytes(self.bytes::<8>()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes::<8>()?)),
            other => {
                return Err(format!(
                    "unknown metadata type {other} at byte {}",
                    self.pos
                ));
            }
        })
    }
}

impl Gguf {
    /// Reads the header, metadata and tensor directory, checking that every tensor lies
    /// inside the file (so a truncated download fails here, not at first use).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing {
                path: path.to_path_buf(),
                flag: "llm-model",
            },
            _ => ModelError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut r = Reader {
            r: BufReader::with_capacity(1 << 20, file),
            pos: 0,
        };
        let (n_tensors, n_kv) = Self::read_header(&mut r).map_err(corrupt)?;
        let metadata = Self::read_metadata(&mut r, n_kv).map_err(corrupt)?;
        let meta_end = r.pos;
        let tensors = Self::read_directory(&mut r, n_tensors).map_err(corrupt)?;
        let align = match metadata.get("general.alignment") {
            Some(Value::UInt(a)) if *a > 0 => *a,
            _ => DEFAULT_ALIGNMENT,
        };
        let data_start = r.pos.div_ceil(align) * align;
        let g = Self {
            path: path.to_path_buf(),
            metadata,
            tensors,
            data_start,
            file_len,
            n_kv,
            meta_end,
            align,
        };
        g.check_extents().map_err(corrupt)?;
        Ok(g)
    }

    /// Reads the magic, version and counts, refusing other formats and implausible counts;
    /// returns (tensor count, metadata key count).
    fn read_header<R: Read>(r: &mut Reader<R>) -> Result<(u64, u64), String> {
        if &r.bytes::<4>()? != GGUF_MAGIC {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        if n_tensors > 1 << 20 || n_kv > 1 << 20 {
            return Err(format!(
                "implausible counts: {n_tensors} tensors, {n_kv} keys"
            ));
        }
        Ok((n_tensors, n_kv))
    }

    /// Reads `n_kv` metadata key/value pairs.
    fn read_metadata<R: Read>(
        r: &mut Reader<R>,
        n_kv: u64,
    ) -> Result<BTreeMap<String, Value>, String> {
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let kind = r.u32()?;
            let v = r.value(kind)?;
            metadata.insert(key, v);
        }
        Ok(metadata)
    }

    /// Reads the directory entries (name, dimensions, type, offset) of `n_tensors` tensors.
    fn read_directory<R: Read>(
        r: &mut Reader<R>,
        n_tensors: u64,
    ) -> Result<Vec<TensorInfo>, String> {
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let nd = r.u32()?;
            if nd == 0 || nd > 4 {
                return Err(format!("tensor {name} has {nd} dimensions"));
            }
            let dims = (0..nd).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            let kind = TensorType::from_id(r.u32()?);
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        Ok(tensors)
    }

    /// Checks that the data of every tensor of a known size lies inside the file.
    fn check_extents(&self) -> Result<(), String> {
        for t in &self.tensors {
            if let Some(n) = t.kind.bytes_for(t.len())
                && self.data_start + t.offset + n as u64 > self.file_len
            {
                return Err(format!(
                    "tensor {} runs past the end of the file (truncated download?)",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// A metadata string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A metadata unsigned integer.
    pub fn uint(&self, key: &str) -> Option<u64> {
        match self.metadata.get(key)? {
            Value::UInt(v) => Some(*v),
            Value::Int(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }

    /// A metadata boolean.
    pub(crate) fn flag(&self, key: &str) -> Option<bool> {
        match self.metadata.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A metadata float.
    pub(crate) fn float(&self, key: &str) -> Option<f64> {
        match self.metadata.get(key)? {
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// A metadata array whose every item `item` converts, or `None`.
    fn array<'a, T>(&'a self, key: &str, item: impl Fn(&'a Value) -> Option<T>) -> Option<Vec<T>> {
        match self.metadata.get(key)? {
            Value::Array(items) => items.iter().map(item).collect(),
            _ => None,
        }
    }

    /// A metadata array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn strings(&self, key: &str) -> Option<Vec<&str>> {
        self.array(key, |v| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// A metadata array of numbers as f64 (e.g. `tokenizer.ggml.scores`).
    pub(crate) fn floats(&self, key: &str) -> Option<Vec<f64>> {
        self.array(key, |v| match v {
            Value::Float(x) => Some(*x),
            Value::Int(x) => Some(*x as f64),
            Value::UInt(x) => Some(*x as f64),
            _ => None,
        })
    }

    /// A metadata array of non-negative integers (e.g. `tokenizer.ggml.token_type`).
    pub(crate) fn uints(&self, key: &str) -> Option<Vec<u64>> {
        self.array(key, |v| match v {
            Value::UInt(x) => Some(*x),
            Value::Int(x) if *x >= 0 => Some(*x as u64),
            _ => None,
        })
    }

    /// Directory entry of a tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads and dequantises a tensor: (row-major shape, values).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let corrupt = |reason: String| ModelError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let t = self
            .info(name)
            .ok_or_else(|| corrupt(format!("tensor {name} is missing")))?;
        let n = t.len();
        let bytes = t
            .kind
            .bytes_for(n)
            .ok_or_else(|| corrupt(format!("tensor {name} has unsupported type {:?}", t.kind)))?;
        let mut f = File::open(&self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        let start = self.data_start + t.offset;
        if start + bytes as u64 > self.file_len {
            return Err(corrupt(format!(
                "tensor {name} runs past the end of the file"
            )));
        }
        f.seek(SeekFrom::Start(start))
            .map_err(|source| ModelError::Io {
                path: self.path.clone(),
                source,
            })?;
        let mut raw = vec![0u8; bytes];
        f.read_exact(&mut raw).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut out = Vec::with_capacity(n);
        match t.kind {
            TensorType::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            TensorType::F16 => out.extend(
                raw.chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            quantised => {
                let (block, decode): (usize, Dequantize) = match quantised {
                    TensorType::Q4_1 => (Q4_1_BLOCK, dequantize_q4_1),
                    TensorType::Q5_0 => (Q5_0_BLOCK, dequantize_q5_0),
                    TensorType::Q8_0 => (Q8_0_BLOCK, dequantize_q8_0),
                    TensorType::Q4K => (Q4_K_BLOCK, dequantize_q4_k),
                    TensorType::Q6K => (Q6_K_BLOCK, dequantize_q6_k),
                    _ => unreachable!("bytes_for rejected it"),
                };
                raw.chunks_exact(block).for_each(|b| decode(b, &mut out));
            }
        }
        Ok((t.shape(), out))
    }
}

/// Dequantises one Q4_1 block (20 bytes -> 32 values): x = d * q + m, where the low
/// nibbles of the 16 bytes are values 0..16 and the high nibbles values 16..32.
pub(crate) fn dequantize_q4_1(block: &[u8], out: &mut Vec<f32>) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    let qs = &block[4..Q4_1_BLOCK];
    out.extend(qs.iter().map(|&b| d * (b & 0x0f) as f32 + m));
    out.extend(qs.iter().map(|&b| d * (b >> 4) as f32 + m));
}

/// Dequantises one Q8_0 block (34 bytes -> 32 values): x = d * q.
pub(crate) fn dequantize_q8_0(block: &[u8], out: &mut Vec<f32>) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    out.extend(block[2..Q8_0_BLOCK].iter().map(|&q| d * q as i8 as f32));
}

/// Dequantises one Q5_0 block (22 bytes -> 32 values): x = d * (q - 16), where value j
/// (and j + 16) takes its low 4 bits from the low (high) nibble of byte j and its fifth
/// bit from bit j (j + 16) of the little-endian 32-bit word after the scale.
pub(crate) fn dequantize_q5_0(block: &[u8], out: &mut Vec<f32>) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..Q5_0_BLOCK];
    let fifth = |bit: usize| (((high >> bit) & 1) << 4) as i32;
    out.extend(
        qs.iter()
            .enumerate()
            .map(|(j, &b)| d * (((b & 0x0f) as i32 | fifth(j)) - 16) as f32),
    );
    out.extend(
        qs.iter()
            .enumerate()
            .map(|(j, &b)| d * (((b >> 4) as i32 | fifth(j + 16)) - 16) as f32),
    );
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K super-block from its 12
/// packed bytes: sub-blocks 0..4 use the low 6 bits of bytes j and j + 4; sub-blocks
/// 4..8 take 4 bits from byte j + 4 and their top 2 bits from the spare top bits of
/// bytes j - 4 and j.
fn q4_k_scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
    } else {
        (
            ((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4)) as f32,
            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f32,
        )
    }
}

/// Dequantises one Q4_K super-block (144 bytes -> 256 values): for each of its 8
/// sub-blocks of 32, x = d * scale * q - dmin * min; each 32 bytes of values hold two
/// sub-blocks, the first in the low nibbles, the second in the high ones.
pub(crate) fn dequantize_q4_k(block: &[u8], out: &mut Vec<f32>) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let dmin = f16::from_le_bytes([block[2], block[3]]).to_f32();
    let scales = &block[4..16];
    for (pair, qs) in block[16..Q4_K_BLOCK].chunks_exact(32).enumerate() {
        let (s0, m0) = q4_k_scale_min(2 * pair, scales);
        let (s1, m1) = q4_k_scale_min(2 * pair + 1, scales);
        let (a0, b0, a1, b1) = (d * s0, dmin * m0, d * s1, dmin * m1);
        out.extend(qs.iter().map(|&q| a0 * (q & 0x0f) as f32 - b0));
        out.extend(qs.iter().map(|&q| a1 * (q >> 4) as f32 - b1));
    }
}

/// Dequantises one Q6_K super-block (210 bytes -> 256 values): x = d * scale * (q - 32)
/// with 16 sub-blocks of 16 values. Each half of 128 values uses 64 bytes of low bits
/// (value l and l + 64 share byte l's nibbles, l + 32 and l + 96 byte l + 32's) and 32
/// bytes of high bits (2 bits per value, for l, l + 32, l + 64, l + 96 in that order).
pub(crate) fn dequantize_q6_k(block: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, sc) = (&block[..128], &block[128..192], &block[192..208]);
    let d = f16::from_le_bytes([block[208], block[209]]).to_f32();
    let start = out.len();
    out.resize(start + QK_K, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l] as i32;
            let q = [
                ((ql[l] & 0x0f) as i32 | ((h & 3) << 4)) - 32,
                ((ql[l + 32] & 0x0f) as i32 | (((h >> 2) & 3) << 4)) - 32,
                ((ql[l] >> 4) as i32 | (((h >> 4) & 3) << 4)) - 32,
                ((ql[l + 32] >> 4) as i32 | (((h >> 6) & 3) << 4)) - 32,
            ];
            for (k, qk) in q.iter().enumerate() {
                y[l + 32 * k] = d * (sc[is + 2 * k] as i8) as f32 * *qk as f32;
            }
        }
    }
}

/// Decodes one quantised block, appending its values.
type Dequantize = fn(&[u8], &mut Vec<f32>);

/// Bytes of the header before the metadata pairs (magic, version, counts).
const HEADER_BYTES: u64 = 24;

impl Gguf {
    /// Writes a copy of this file to `out` with some tensors replaced by f16 data of the
    /// same shape (row-major, as [`Gguf::tensor_f32`] returns it) and string metadata
    /// keys added; everything else (metadata, tokenizer, the other tensors' bytes) is
    /// copied verbatim, so llama.cpp loads the result like the original. Returns the
    /// bytes written.
    pub fn write_with(
        &self,
        out: &Path,
        replace: &BTreeMap<String, Vec<f16>>,
        extra: &[(&str, &str)],
    ) -> Result<u64, ModelError> {
        for (name, data) in replace {
            let t = self.info(name).ok_or_else(|| ModelError::Corrupt {
                path: self.path.clone(),
                reason: format!("no tensor {name} to replace"),
            })?;
            if t.len() != data.len() {
                return Err(ModelError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("{name}: {} values given for {}", data.len(), t.len()),
                });
            }
        }
        let (head, sizes) = self.header_with(replace, extra)?;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ModelError::Io { path: p, source }
        };
        let mut src = File::open(&self.path).map_err(io(&self.path))?;
        let mut w = std::io::BufWriter::new(File::create(out).map_err(io(out))?);
        w.write_all(&head).map_err(io(out))?;
        let mut written = head.len() as u64;
        for (t, &bytes) in self.tensors.iter().zip(&sizes) {
            let raw = match replace.get(&t.name) {
                Some(data) => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                None => {
                    let mut raw = vec![0u8; bytes as usize];
                    src.seek(SeekFrom::Start(self.data_start + t.offset))
                        .and_then(|_| src.read_exact(&mut raw))
                        .map_err(io(&self.path))?;
                    raw
                }
            };
            let pad = bytes.div_ceil(self.align) * self.align - bytes;
            w.write_all(&raw)
                .and_then(|_| w.write_all(&vec![0u8; pad as usize]))
                .map_err(io(out))?;
            written += bytes + pad;
        }
        w.flush().map_err(io(out))?;
        Ok(written)
    }

    /// The new file's header (metadata copied verbatim plus `extra`, and the tensor
    /// directory with new types and offsets), padded to the alignment, and each tensor's
    /// data size.
    fn header_with(
        &self,
        replace: &BTreeMap<String, Vec<f16>>,
        extra: &[(&str, &str)],
    ) -> Result<(Vec<u8>, Vec<u64>), ModelError> {
        let io = |source| ModelError::Io {
            path: self.path.clone(),
            source,
        };
        let mut src = File::open(&self.path).map_err(io)?;
        let mut meta = vec![0u8; (self.meta_end - HEADER_BYTES) as usize];
        src.seek(SeekFrom::Start(HEADER_BYTES))
            .and_then(|_| src.read_exact(&mut meta))
            .map_err(io)?;
        let mut head = Vec::with_capacity(meta.len() + 64 * self.tensors.len());
        head.extend_from_slice(GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.n_kv + extra.len() as u64).to_le_bytes());
        head.extend_from_slice(&meta);
        let put_str = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        for (k, v) in extra {
            put_str(&mut head, k);
            head.extend_from_slice(&8u32.to_le_bytes());
            put_str(&mut head, v);
        }
        let mut offset = 0u64;
        let mut sizes = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let (kind, bytes) = if replace.contains_key(&t.name) {
                (1u32, t.len() as u64 * 2)
            } else {
                let id = match t.kind {
                    TensorType::Other(id) => {
                        return Err(ModelError::Corrupt {
                            path: self.path.clone(),
                            reason: format!("{}: ggml type {id} cannot be copied", t.name),
                        });
                    }
                    known => known.id(),
                };
                (id, t.kind.bytes_for(t.len()).unwrap_or(0) as u64)
            };
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&kind.to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            sizes.push(bytes);
            offset = (offset + bytes).div_ceil(self.align) * self.align;
        }
        let padded = (head.len() as u64).div_ceil(self.align) * self.align;
        head.resize(padded as usize, 0);
        Ok((head, sizes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = -1; byte k holds low nibble k % 16 and high nibble 15 - k % 16.
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.5));
        b.extend_from_slice(&f16b(-1.0));
        b.extend((0..16u8).map(|k| k | ((15 - k) << 4)));
        let mut out = Vec::new();
        dequantize_q4_1(&b, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!(out[0], -1.0); // q = 0
        assert_eq!(out[15], 6.5); // q = 15 -> 0.5 * 15 - 1
        assert_eq!(out[16], 6.5); // high nibble of byte 0 = 15
        assert_eq!(out[31], -1.0); // high nibble of byte 15 = 0
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.25));
        b.extend((0..32i32).map(|k| (k - 16) as i8 as u8));
        let mut out = Vec::new();
        dequantize_q8_0(&b, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 0.0);
        assert_eq!(out[31], 3.75);
    }

    #[test]
    fn q5_0_block_by_hand() {
        // d = 0.5; fifth bits set for values 0..16 only; byte j: low nibble j, high 15 - j.
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.5));
        b.extend_from_slice(&0x0000_ffffu32.to_le_bytes());
        b.extend((0..16u8).map(|k| k | ((15 - k) << 4)));
        let mut out = Vec::new();
        dequantize_q5_0(&b, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!(out[0], 0.0); // (0 | 16) - 16
        assert_eq!(out[15], 7.5); // (15 | 16) - 16 = 15
        assert_eq!(out[16], -0.5); // 15 - 16
        assert_eq!(out[31], -8.0); // 0 - 16
    }

    #[test]
    fn q4_k_super_block_by_hand() {
        // d = 1, dmin = 0.5. Sub-blocks 0..4: scale j + 1, min 2 (low 6 bits of bytes j,
        // j + 4); 4..8: scale 5, min 3 from bytes 8..12, and sub-block 4's scale gets
        // 16 from the top bits of byte 0.
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(1.0));
        b.extend_from_slice(&f16b(0.5));
        let mut scales = [1u8, 2, 3, 4, 2, 2, 2, 2, 0x35, 0x35, 0x35, 0x35];
        scales[0] |= 0x40;
        b.extend_from_slice(&scales);
        b.extend(std::iter::repeat_n(0x21u8, 128)); // low nibble 1, high nibble 2
        let mut out = Vec::new();
        dequantize_q4_k(&b, &mut out);
        assert_eq!(out.len(), 256);
        assert_eq!(out[0], 0.0); // 1 * 1 - 0.5 * 2
        assert_eq!(out[32], 3.0); // 2 * 2 - 1
        assert_eq!(out[64], 2.0); // 3 * 1 - 1
        assert_eq!(out[128], 19.5); // (5 + 16) * 1 - 0.5 * 3
        assert_eq!(out[160], 8.5); // 5 * 2 - 1.5
    }

    #[test]
    fn q6_k_super_block_by_hand() {
        // d = 0.5; scale i + 1 for sub-block i except the last (-2); every low byte 0x21,
        // every high byte 0xE4 (2-bit fields 0, 1, 2, 3 for values l, l+32, l+64, l+96).
        let mut b = vec![0x21u8; 128];
        b.extend(std::iter::repeat_n(0xE4u8, 64));
        let mut sc: Vec<u8> = (1..=16u8).collect();
        sc[15] = (-2i8) as u8;
        b.extend_from_slice(&sc);
        b.extend_from_slice(&f16b(0.5));
        let mut out = Vec::new();
        dequantize_q6_k(&b, &mut out);
        assert_eq!(out.len(), 256);
        assert_eq!(out[0], -15.5); // (1 | 0) - 32 = -31, scale 1
        assert_eq!(out[32], -22.5); // (1 | 16) - 32 = -15, scale 3
        assert_eq!(out[64], 5.0); // (2 | 32) - 32 = 2, scale 5
        assert_eq!(out[96], 63.0); // (2 | 48) - 32 = 18, scale 7
        assert_eq!(out[240], -18.0); // second half, l = 16: scale -2, q 18
    }

    fn gguf_string(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn synthetic_file_round_trip_and_truncation() {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&2u64.to_le_bytes()); // keys
        gguf_string(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        gguf_string(&mut b, "llama");
        gguf_string(&mut b, "tokenizer.ggml.tokens");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        gguf_string(&mut b, "a");
        gguf_string(&mut b, "b");
        gguf_string(&mut b, "w");
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes()); // ne0 = 3 (fastest)
        b.extend_from_slice(&2u64.to_le_bytes()); // ne1 = 2
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, &b).unwrap();
        let g = Gguf::open(&p).unwrap();
        assert_eq!(g.str("general.architecture"), Some("llama"));
        assert_eq!(g.strings("tokenizer.ggml.tokens"), Some(vec!["a", "b"]));
        let (shape, v) = g.tensor_f32("w").unwrap();
        assert_eq!(shape, vec![2, 3], "row-major: stored dims reversed");
        assert_eq!(v, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        std::fs::write(&p, &b[..b.len() - 8]).unwrap();
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(e.contains("runs past the end"), "{e}");
        std::fs::write(&p, b"GGML....").unwrap();
        assert!(
            Gguf::open(&p)
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );
    }
}
