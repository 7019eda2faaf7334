//! Conversion of a CTranslate2 Whisper checkpoint (`model.bin`) into whisper.cpp's ggml
//! format, the only Whisper form that can be installed offline here.
//!
//! CT2 fuses some projections (self-attention q/k/v, cross-attention k/v) and names tensors
//! differently; whisper.cpp expects the names of OpenAI's PyTorch checkpoint. Everything
//! else (mel filters, BPE vocabulary) comes from the openai-whisper package assets.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use half::f16;

use crate::error::ModelError;

/// ggml file magic ("ggml" little-endian).
pub(crate) const GGML_MAGIC: u32 = 0x6767_6d6c;
const CT2_DTYPE_F32: u8 = 0;
const CT2_DTYPE_I8: u8 = 1;
const CT2_DTYPE_I16: u8 = 2;
const CT2_DTYPE_I32: u8 = 3;
const CT2_DTYPE_F16: u8 = 4;
/// Vocabulary size from which a Whisper model is multilingual.
const MULTILINGUAL_VOCAB: usize = 51865;

/// Whisper hyper-parameters, in the order of the ggml header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperHparams {
    /// Vocabulary size.
    pub n_vocab: i32,
    /// Encoder positions (1500 for 30 s).
    pub n_audio_ctx: i32,
    /// Encoder width.
    pub n_audio_state: i32,
    /// Encoder attention heads.
    pub n_audio_head: i32,
    /// Encoder layers.
    pub n_audio_layer: i32,
    /// Decoder positions.
    pub n_text_ctx: i32,
    /// Decoder width.
    pub n_text_state: i32,
    /// Decoder attention heads.
    pub n_text_head: i32,
    /// Decoder layers.
    pub n_text_layer: i32,
    /// Mel bands.
    pub n_mels: i32,
}

impl WhisperHparams {
    fn as_array(&self) -> [i32; 10] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
        ]
    }

    /// Whether the vocabulary is the multilingual one.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab as usize >= MULTILINGUAL_VOCAB
    }
}

/// One variable of a CT2 model: shape, dtype and raw little-endian bytes.
#[derive(Debug)]
struct Ct2Var {
    shape: Vec<usize>,
    dtype: u8,
    data: Vec<u8>,
}

impl Ct2Var {
    fn scalar_i64(&self) -> Option<i64> {
        let d = &self.data;
        match self.dtype {
            CT2_DTYPE_I8 => d.first().map(|&b| b as i8 as i64),
            CT2_DTYPE_I16 if d.len() >= 2 => Some(i16::from_le_bytes([d[0], d[1]]) as i64),
            CT2_DTYPE_I32 if d.len() >= 4 => {
                Some(i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64)
            }
            _ => None,
        }
    }

    fn element_size(&self) -> Option<usize> {
        match self.dtype {
            CT2_DTYPE_F32 | CT2_DTYPE_I32 => Some(4),
            CT2_DTYPE_F16 | CT2_DTYPE_I16 => Some(2),
            CT2_DTYPE_I8 => Some(1),
            _ => None,
        }
    }
}

/// A parsed CTranslate2 model file.
#[derive(Debug)]
pub(crate) struct Ct2Model {
    vars: HashMap<String, Ct2Var>,
}

/// Little-endian cursor over a byte slice that reports truncation as an error.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes read so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!("truncated at byte {} (wanted {n} more)", self.pos)),
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, String> {
        Ok(self.u32()? as i32)
    }
    /// Whether every byte has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

impl Ct2Model {
    /// Parses a CT2 `model.bin` held in memory.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut c = Cursor { buf: bytes, pos: 0 };
        let version = c.u32()?;
        if !(1..=10).contains(&version) {
            return Err(format!("unknown CTranslate2 binary version {version}"));
        }
        let spec = c.string()?;
        if spec != "WhisperSpec" {
            return Err(format!("model spec is {spec:?}, not a Whisper model"));
        }
        let _revision = c.u32()?;
        let count = c.u32()? as usize;
        let mut vars = HashMap::with_capacity(count);
        for _ in 0..count {
            let name = c.string()?;
            let ndim = c.u8()? as usize;
            let mut shape = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                shape.push(c.u32()? as usize);
            }
            let dtype = c.u8()?;
            let nbytes = c.u32()? as usize;
            let data = c.take(nbytes)?.to_vec();
            let var = Ct2Var { shape, dtype, data };
            if let Some(es) = var.element_size() {
                let elems: usize = var.shape.iter().product();
                if elems * es != nbytes {
                    return Err(format!(
                        "variable {name}: {nbytes} bytes do not match its shape"
                    ));
                }
            }
            vars.insert(name, var);
        }
        Ok(Self { vars })
    }

    fn var(&self, name: &str) -> Result<&Ct2Var, String> {
        self.vars
            .get(name)
            .ok_or_else(|| format!("variable {name} is missing"))
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let p = format!("{prefix}/layer_{i}/");
                self.vars.keys().any(|k| k.starts_with(&p))
            })
            .count()
    }

    /// Derives the hyper-parameters from tensor shapes.
    pub fn hparams(&self) -> Result<WhisperHparams, String> {
        let emb = &self.var("decoder/embeddings/weight")?.shape;
        let enc_pos = &self.var("encoder/position_encodings/encodings")?.shape;
        let dec_pos = &self.var("decoder/position_encodings/encodings")?.shape;
        let conv1 = &self.var("encoder/conv1/weight")?.shape;
        let heads = |n: &str| -> Result<i32, String> {
            self.var(n)?
                .scalar_i64()
                .map(|v| v as i32)
                .ok_or_else(|| format!("{n} is not an integer"))
        };
        if emb.len() != 2 || enc_pos.len() != 2 || dec_pos.len() != 2 || conv1.len() != 3 {
            return Err("unexpected tensor ranks for embeddings or conv1".into());
        }
        Ok(WhisperHparams {
            n_vocab: emb[0] as i32,
            n_audio_ctx: enc_pos[0] as i32,
            n_audio_state: enc_pos[1] as i32,
            n_audio_head: heads("encoder/num_heads")?,
            n_audio_layer: self.count_layers("encoder") as i32,
            n_text_ctx: dec_pos[0] as i32,
            n_text_state: emb[1] as i32,
            n_text_head: heads("decoder/num_heads")?,
            n_text_layer: self.count_layers("decoder") as i32,
            n_mels: conv1[1] as i32,
        })
    }
}

/// A tensor to write: ggml name, numpy-order shape, f16 source values.
struct OutTensor<'a> {
    name: String,
    shape: Vec<usize>,
    /// Raw f16 little-endian bytes.
    data: &'a [u8],
}

/// Whether whisper.cpp keeps this tensor in f32 (1-D tensors, conv biases, positions).
fn keeps_f32(name: &str, ndim: usize) -> bool {
    ndim < 2
        || name == "encoder.conv1.bias"
        || name == "encoder.conv2.bias"
        || name == "encoder.positional_embedding"
        || name == "decoder.positional_embedding"
}

/// Builds the list of output tensors from a CT2 model.
struct Mapper<'a> {
    m: &'a Ct2Model,
    out: Vec<OutTensor<'a>>,
}

impl<'a> Mapper<'a> {
    fn f16_var(&self, n: &str) -> Result<&'a Ct2Var, String> {
        let v = self.m.var(n)?;
        if v.dtype != CT2_DTYPE_F16 {
            return Err(format!(
                "{n} has dtype {}, only float16 CT2 models are supported",
                v.dtype
            ));
        }
        Ok(v)
    }

    /// Copies a whole variable under a new name.
    fn whole(&mut self, src: &str, dst: String) -> Result<(), String> {
        let v = self.f16_var(src)?;
        let mut shape = v.shape.clone();
        if dst == "encoder.conv1.bias" || dst == "encoder.conv2.bias" {
            shape.push(1);
        }
        self.out.push(OutTensor {
            name: dst,
            shape,
            data: &v.data,
        });
        Ok(())
    }

    /// Copies rows `[i*n/parts, (i+1)*n/parts)` of a fused variable under a new name.
    fn part(&mut self, src: &str, i: usize, parts: usize, dst: String) -> Result<(), String> {
        let v = self.f16_var(src)?;
        let rows = v.shape[0];
        if !rows.is_multiple_of(parts) {
            return Err(format!("{src}: {rows} rows do not split into {parts}"));
        }
        let per = rows / parts;
        let row_bytes = v.data.len() / rows;
        let mut shape = v.shape.clone();
        shape[0] = per;
        let data = &v.data[i * per * row_bytes..(i + 1) * per * row_bytes];
        self.out.push(OutTensor {
            name: dst,
            shape,
            data,
        });
        Ok(())
    }

    /// Copies `weight`/`bias` (or `gamma`/`beta`) pairs: `src/{a}` -> `dst.{b}`.
    fn pair(&mut self, src: &str, dst: &str, names: [(&str, &str); 2]) -> Result<(), String> {
        for (a, b) in names {
            self.whole(&format!("{src}/{a}"), format!("{dst}.{b}"))?;
        }
        Ok(())
    }
}

const LINEAR: [(&str, &str); 2] = [("weight", "weight"), ("bias", "bias")];
const NORM: [(&str, &str); 2] = [("gamma", "weight"), ("beta", "bias")];

/// Maps CT2 variables to whisper.cpp tensors, splitting the fused projections.
fn map_tensors<'a>(m: &'a Ct2Model, hp: &WhisperHparams) -> Result<Vec<OutTensor<'a>>, String> {
    let mut w = Mapper { m, out: Vec::new() };
    w.pair("encoder/conv1", "encoder.conv1", LINEAR)?;
    w.pair("encoder/conv2", "encoder.conv2", LINEAR)?;
    w.whole(
        "encoder/position_encodings/encodings",
        "encoder.positional_embedding".into(),
    )?;
    w.pair("encoder/layer_norm", "encoder.ln_post", NORM)?;
    w.whole(
        "decoder/embeddings/weight",
        "decoder.token_embedding.weight".into(),
    )?;
    w.whole(
        "decoder/position_encodings/encodings",
        "decoder.positional_embedding".into(),
    )?;
    w.pair("decoder/layer_norm", "decoder.ln", NORM)?;

    for (side, layers) in [("encoder", hp.n_audio_layer), ("decoder", hp.n_text_layer)] {
        for l in 0..layers as usize {
            map_block(&mut w, side, l)?;
        }
    }
    Ok(w.out)
}

/// Maps block `l` of the encoder or decoder (`side`): self-attention, cross-attention in
/// the decoder, then the MLP.
fn map_block(w: &mut Mapper<'_>, side: &str, l: usize) -> Result<(), String> {
    let s = format!("{side}/layer_{l}");
    let d = format!("{side}.blocks.{l}");
    map_self_attention(w, &s, &d)?;
    if side == "decoder" {
        map_cross_attention(w, &s, &d)?;
    }
    w.pair(&format!("{s}/ffn/linear_0"), &format!("{d}.mlp.0"), LINEAR)?;
    w.pair(&format!("{s}/ffn/linear_1"), &format!("{d}.mlp.2"), LINEAR)?;
    w.pair(&format!("{s}/ffn/layer_norm"), &format!("{d}.mlp_ln"), NORM)?;
    Ok(())
}

/// Maps a block's self-attention (CT2 prefix `s`, ggml prefix `d`), splitting q, k, v.
fn map_self_attention(w: &mut Mapper<'_>, s: &str, d: &str) -> Result<(), String> {
    // Self-attention: q, k, v fused in linear_0 (Whisper's key has no bias).
    let qkv = format!("{s}/self_attention/linear_0");
    for (i, n) in ["query", "key", "value"].into_iter().enumerate() {
        w.part(
            &format!("{qkv}/weight"),
            i,
            3,
            format!("{d}.attn.{n}.weight"),
        )?;
        if n != "key" {
            w.part(&format!("{qkv}/bias"), i, 3, format!("{d}.attn.{n}.bias"))?;
        }
    }
    w.pair(
        &format!("{s}/self_attention/linear_1"),
        &format!("{d}.attn.out"),
        LINEAR,
    )?;
    w.pair(
        &format!("{s}/self_attention/layer_norm"),
        &format!("{d}.attn_ln"),
        NORM,
    )
}

/// Maps a decoder block's cross-attention (CT2 prefix `s`, ggml prefix `d`), splitting k, v.
fn map_cross_attention(w: &mut Mapper<'_>, s: &str, d: &str) -> Result<(), String> {
    // Cross-attention: query in linear_0, k and v fused in linear_1, out in linear_2.
    let a = format!("{s}/attention");
    w.pair(
        &format!("{a}/linear_0"),
        &format!("{d}.cross_attn.query"),
        LINEAR,
    )?;
    w.part(
        &format!("{a}/linear_1/weight"),
        0,
        2,
        format!("{d}.cross_attn.key.weight"),
    )?;
    w.part(
        &format!("{a}/linear_1/weight"),
        1,
        2,
        format!("{d}.cross_attn.value.weight"),
    )?;
    w.part(
        &format!("{a}/linear_1/bias"),
        1,
        2,
        format!("{d}.cross_attn.value.bias"),
    )?;
    w.pair(
        &format!("{a}/linear_2"),
        &format!("{d}.cross_attn.out"),
        LINEAR,
    )?;
    w.pair(
        &format!("{a}/layer_norm"),
        &format!("{d}.cross_attn_ln"),
        NORM,
    )
}

/// Reads a float32 2-D array (`mel_<n>`) from numpy's `mel_filters.npz`.
pub(crate) fn read_mel_filters(
    npz: &Path,
    n_mels: usize,
) -> Result<(usize, usize, Vec<f32>), String> {
    let file = std::fs::File::open(npz).map_err(|e| format!("{}: {e}", npz.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("{}: not a zip/npz: {e}", npz.display()))?;
    let member = format!("mel_{n_mels}.npy");
    let mut entry = zip
        .by_name(&member)
        .map_err(|_| format!("{}: has no {member}", npz.display()))?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    parse_npy_f32_2d(&bytes)
}

/// Parses a little-endian float32, C-order, 2-D `.npy` array.
pub(crate) fn parse_npy_f32_2d(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy array".into());
    }
    let major = bytes[6];
    let (hlen, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        if bytes.len() < 12 {
            return Err("truncated .npy header".into());
        }
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .ok_or("truncated .npy header")?,
    )
    .map_err(|_| "non-text .npy header")?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(format!(
            "unsupported .npy array (need little-endian f32, C order): {header}"
        ));
    }
    let shape_txt = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in .npy header")?;
    let dims: Vec<usize> = shape_txt
        .trim()
        .trim_start_matches('(')
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if dims.len() != 2 {
        return Err(format!("expected a 2-D array, got shape {dims:?}"));
    }
    let data = &bytes[start + hlen..];
    if data.len() != dims[0] * dims[1] * 4 {
        return Err("array data size does not match its shape".into());
    }
    let vals = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((dims[0], dims[1], vals))
}

/// Reads a `.tiktoken` BPE file: base64 tokens in rank order.
pub(crate) fn read_tiktoken(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tokens: Vec<(usize, Vec<u8>)> = Vec::with_capacity(52_000);
    for (lineno, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut it = line.split_whitespace();
        let (Some(tok), Some(rank)) = (it.next(), it.next()) else {
            return Err(format!(
                "{}:{}: expected `<base64> <rank>`",
                path.display(),
                lineno + 1
            ));
        };
        // Python's lenient b64decode (used by Whisper) reads a lone "=" as the empty token.
        let tok = tok.trim_start_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(tok)
            .map_err(|e| format!("{}:{}: bad base64: {e}", path.display(), lineno + 1))?;
        let rank: usize = rank
            .parse()
            .map_err(|_| format!("{}:{}: bad rank", path.display(), lineno + 1))?;
        tokens.push((rank, bytes));
    }
    tokens.sort_by_key(|(r, _)| *r);
    Ok(tokens.into_iter().map(|(_, b)| b).collect())
}

/// Inputs of a conversion.
#[derive(Debug, Clone)]
pub struct ConvertInputs {
    /// CT2 `model.bin` (parts already concatenated).
    pub ct2_model: PathBuf,
    /// openai-whisper `mel_filters.npz`.
    pub mel_filters: PathBuf,
    /// Folder holding `gpt2.tiktoken` and `multilingual.tiktoken`.
    pub tiktoken_dir: PathBuf,
}

/// Summary of a finished conversion.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// Hyper-parameters written.
    pub hparams: WhisperHparams,
    /// Number of tensors written.
    pub tensors: usize,
    /// Size of the output in bytes.
    pub bytes: u64,
}

/// Converts a CT2 Whisper model into a ggml file at `out` (written atomically).
pub fn convert_ct2_to_ggml(
    inputs: &ConvertInputs,
    out: &Path,
) -> Result<ConvertReport, ModelError> {
    let corrupt = |p: &Path, reason: String| ModelError::Corrupt {
        path: p.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(&inputs.ct2_model).map_err(|source| ModelError::Io {
        path: inputs.ct2_model.clone(),
        source,
    })?;
    let model = Ct2Model::parse(&bytes).map_err(|r| corrupt(&inputs.ct2_model, r))?;
    drop(bytes);
    let hp = model.hparams().map_err(|r| corrupt(&inputs.ct2_model, r))?;
    let (mel_rows, mel_cols, mel) = read_mel_filters(&inputs.mel_filters, hp.n_mels as usize)
        .map_err(|r| corrupt(&inputs.mel_filters, r))?;
    let vocab_file = inputs.tiktoken_dir.join(if hp.is_multilingual() {
        "multilingual.tiktoken"
    } else {
        "gpt2.tiktoken"
    });
    let vocab = read_tiktoken(&vocab_file).map_err(|r| corrupt(&vocab_file, r))?;
    let tensors = map_tensors(&model, &hp).map_err(|r| corrupt(&inputs.ct2_model, r))?;

    let tmp = out.with_extension("bin.partial");
    let io = |source| ModelError::Io {
        path: tmp.clone(),
        source,
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_ggml_header(&mut w, &hp, mel_rows, mel_cols, &mel, &vocab).map_err(io)?;
    write_ggml_tensors(&mut w, &tensors).map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(|source| ModelError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(ConvertReport {
        hparams: hp,
        tensors: tensors.len(),
        bytes,
    })
}

/// Writes the ggml header: magic, hyper-parameters, ftype, mel filters and vocabulary.
fn write_ggml_header(
    w: &mut impl Write,
    hp: &WhisperHparams,
    mel_rows: usize,
    mel_cols: usize,
    mel: &[f32],
    vocab: &[Vec<u8>],
) -> std::io::Result<()> {
    w.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in hp.as_array() {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(&1i32.to_le_bytes())?; // ftype: mostly f16
    w.write_all(&(mel_rows as i32).to_le_bytes())?;
    w.write_all(&(mel_cols as i32).to_le_bytes())?;
    for v in mel {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(&(vocab.len() as i32).to_le_bytes())?;
    for tok in vocab {
        w.write_all(&(tok.len() as i32).to_le_bytes())?;
        w.write_all(tok)?;
    }
    Ok(())
}

/// Writes the tensor records, widening to f32 the tensors whisper.cpp keeps in f32.
fn write_ggml_tensors(w: &mut impl Write, tensors: &[OutTensor<'_>]) -> std::io::Result<()> {
    let mut f32_buf: Vec<u8> = Vec::new();
    for t in tensors {
        let as_f32 = keeps_f32(&t.name, t.shape.len());
        w.write_all(&(t.shape.len() as i32).to_le_bytes())?;
        w.write_all(&(t.name.len() as i32).to_le_bytes())?;
        w.write_all(&(if as_f32 { 0i32 } else { 1i32 }).to_le_bytes())?;
        for d in t.shape.iter().rev() {
            w.write_all(&(*d as i32).to_le_bytes())?;
        }
        w.write_all(t.name.as_bytes())?;
        if as_f32 {
            f32_buf.clear();
            for c in t.data.chunks_exact(2) {
                let v = f16::from_le_bytes([c[0], c[1]]).to_f32();
                f32_buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&f32_buf)?;
        } else {
            w.write_all(t.data)?;
        }
    }
    Ok(())
}

/// Header of a ggml Whisper file, read to check a file before whisper.cpp loads it.
#[derive(Debug, Clone)]
pub struct GgmlHeader {
    /// Hyper-parameters.
    pub hparams: WhisperHparams,
    /// ftype field.
    pub ftype: i32,
    /// Number of tensors.
    pub tensors: usize,
}

/// Reads and checks a whole ggml Whisper file: header, vocabulary and every tensor record.
/// Catches truncated and foreign files with a clear error instead of a crash in C code.
pub fn inspect_ggml(path: &Path) -> Result<GgmlHeader, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::Missing {
                path: path.to_path_buf(),
                flag: "whisper-model",
            }
        } else {
            ModelError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut c = Cursor {
        buf: &bytes,
        pos: 0,
    };
    let hparams = read_ggml_hparams(&mut c).map_err(corrupt)?;
    let ftype = c.u32().map_err(corrupt)? as i32;
    skip_ggml_mel_and_vocab(&mut c).map_err(corrupt)?;
    let mut tensors = 0;
    while c.pos < bytes.len() {
        read_ggml_tensor(&mut c).map_err(corrupt)?;
        tensors += 1;
    }
    Ok(GgmlHeader {
        hparams,
        ftype,
        tensors,
    })
}

/// Reads the magic and the ten hyper-parameters of a ggml Whisper file, checking both.
fn read_ggml_hparams(c: &mut Cursor<'_>) -> Result<WhisperHparams, String> {
    let magic = c.u32()?;
    if magic != GGML_MAGIC {
        return Err(format!("bad magic {magic:#010x}, not a ggml Whisper model"));
    }
    let mut h = [0i32; 10];
    for v in &mut h {
        *v = c.u32()? as i32;
    }
    let hparams = WhisperHparams {
        n_vocab: h[0],
        n_audio_ctx: h[1],
        n_audio_state: h[2],
        n_audio_head: h[3],
        n_audio_layer: h[4],
        n_text_ctx: h[5],
        n_text_state: h[6],
        n_text_head: h[7],
        n_text_layer: h[8],
        n_mels: h[9],
    };
    if h.iter().any(|&v| v <= 0 || v > 1_000_000) {
        return Err(format!("implausible hyper-parameters {h:?}"));
    }
    Ok(hparams)
}

/// Skips the mel filter matrix and the vocabulary, checking they lie inside the file.
fn skip_ggml_mel_and_vocab(c: &mut Cursor<'_>) -> Result<(), String> {
    let rows = c.u32()? as usize;
    let cols = c.u32()? as usize;
    c.take(rows * cols * 4)?;
    let n_vocab = c.u32()? as usize;
    for _ in 0..n_vocab {
        let len = c.u32()? as usize;
        c.take(len)?;
    }
    Ok(())
}

/// Where one tensor record lies in a ggml file.
pub(crate) struct TensorRecord {
    /// The whole record, from its dimension count to its last data byte.
    pub record: std::ops::Range<usize>,
    /// Its data bytes.
    pub data: std::ops::Range<usize>,
    /// ggml type id.
    pub ttype: u32,
    /// Dimensions, innermost first (ggml order).
    pub dims: Vec<usize>,
}

/// Reads one tensor record (dimensions, name, f32/f16/Q8_0/Q5_1 data), checking it is
/// well formed and lies inside the file.
pub(crate) fn read_ggml_tensor(c: &mut Cursor<'_>) -> Result<TensorRecord, String> {
    let start = c.pos;
    let ndim = c.u32()? as usize;
    let name_len = c.u32()? as usize;
    let ttype = c.u32()?;
    if ndim == 0 || ndim > 4 || name_len > 256 {
        return Err(format!("bad tensor record at byte {start}"));
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        dims.push(c.u32()? as usize);
    }
    c.take(name_len)?;
    let (block_bytes, block) = super::quantize::Quant::type_layout(ttype).ok_or_else(|| {
        format!("unsupported tensor type {ttype} (f32, f16, Q8_0 and Q5_1 files are checked)")
    })?;
    let elems = dims.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    if elems % block != 0 {
        return Err(format!(
            "tensor at byte {start}: {elems} values is not a whole number of blocks"
        ));
    }
    let data_start = c.pos;
    c.take((elems / block).saturating_mul(block_bytes))?;
    Ok(TensorRecord {
        record: start..c.pos,
        data: data_start..c.pos,
        ttype,
        dims,
    })
}

/// Skips a ggml Whisper file's header: magic, hyper-parameters, ftype, mel filters and
/// vocabulary.
pub(crate) fn skip_ggml_header(c: &mut Cursor<'_>) -> Result<(), String> {
    read_ggml_hparams(c)?;
    c.u32()?;
    skip_ggml_mel_and_vocab(c)
}

/// Number of tensors whisper.cpp expects for a model with these layer counts.
pub(crate) fn expected_tensor_count(hp: &WhisperHparams) -> usize {
    // encoder: conv1 w/b, conv2 w/b, positions, ln_post w/b; 15 per block.
    // decoder: token embedding, positions, ln w/b; 24 per block.
    7 + 15 * hp.n_audio_layer as usize + 4 + 24 * hp.n_text_layer as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct2_var(buf: &mut Vec<u8>, name: &str, shape: &[u32], dtype: u8, data: &[u8]) {
        let n = name.len() as u16 + 1;
        buf.extend_from_slice(&n.to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        buf.push(shape.len() as u8);
        for d in shape {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        buf.push(dtype);
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(data);
    }

    #[test]
    fn parses_ct2_header_and_scalars() {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        let spec = b"WhisperSpec\0";
        b.extend_from_slice(&(spec.len() as u16).to_le_bytes());
        b.extend_from_slice(spec);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        ct2_var(
            &mut b,
            "encoder/num_heads",
            &[],
            CT2_DTYPE_I16,
            &6i16.to_le_bytes(),
        );
        ct2_var(&mut b, "x/bias", &[2], CT2_DTYPE_F16, &[0, 60, 0, 188]);
        let m = Ct2Model::parse(&b).unwrap();
        assert_eq!(m.var("encoder/num_heads").unwrap().scalar_i64(), Some(6));
        assert_eq!(m.var("x/bias").unwrap().shape, vec![2]);
        // Truncation is an error, not a panic.
        assert!(Ct2Model::parse(&b[..b.len() - 3]).is_err());
    }

    #[test]
    fn rejects_other_specs() {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        let spec = b"TransformerSpec\0";
        b.extend_from_slice(&(spec.len() as u16).to_le_bytes());
        b.extend_from_slice(spec);
        assert!(Ct2Model::parse(&b).unwrap_err().contains("not a Whisper"));
    }

    #[test]
    fn parses_npy() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let (r, c, v) = parse_npy_f32_2d(&b).unwrap();
        assert_eq!((r, c), (2, 3));
        assert_eq!(v[5], 5.0);
    }

    #[test]
    fn tensor_counts_match_whisper_cpp() {
        let base = WhisperHparams {
            n_vocab: 51865,
            n_audio_ctx: 1500,
            n_audio_state: 512,
            n_audio_head: 8,
            n_audio_layer: 6,
            n_text_ctx: 448,
            n_text_state: 512,
            n_text_head: 8,
            n_text_layer: 6,
            n_mels: 80,
        };
        assert_eq!(expected_tensor_count(&base), 245);
        let tiny = WhisperHparams {
            n_audio_layer: 4,
            n_text_layer: 4,
            ..base
        };
        assert_eq!(expected_tensor_count(&tiny), 167);
    }

    #[test]
    fn f32_rule() {
        assert!(keeps_f32("encoder.conv1.bias", 2));
        assert!(keeps_f32("decoder.positional_embedding", 2));
        assert!(keeps_f32("decoder.ln.weight", 1));
        assert!(!keeps_f32("decoder.token_embedding.weight", 2));
    }
}
