//! Tuned top layers of a sentence encoder: a low-rank update (LoRA) of the linear maps of
//! its last layers, trained by `train text` on sentiment sentences and stored in a small
//! safetensors file beside the small model that reads it (the installed encoder stays as
//! it is). For layer `l` and map `m` (query, value, attention output, intermediate,
//! output) the file holds `layer{l}.{m}.a` (`[rank, in]`) and `layer{l}.{m}.b`
//! (`[out, rank]`, the LoRA scale folded in): the tuned weight is `W + b a`. The tuned
//! layers are the last ones, consecutive.

use std::path::Path;

use tch::{Kind, Tensor};

use super::{Layer, TEXT_DIM, corrupt};
use crate::error::ModelError;

/// The linear maps a tuning updates, by name; `[in, out]` widths.
pub(crate) const MAPS: [(&str, i64, i64); 5] = [
    ("q", TEXT_DIM as i64, TEXT_DIM as i64),
    ("v", TEXT_DIM as i64, TEXT_DIM as i64),
    ("attn_out", TEXT_DIM as i64, TEXT_DIM as i64),
    ("inter", TEXT_DIM as i64, 4 * TEXT_DIM as i64),
    ("out", 4 * TEXT_DIM as i64, TEXT_DIM as i64),
];

/// One map's low-rank update.
pub(crate) struct Lora {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`.
    pub b: Tensor,
}

impl Lora {
    /// `x`'s update through this map: `x a^T b^T`.
    pub(crate) fn apply(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.a.tr()).matmul(&self.b.tr())
    }
}

/// The updates of one layer, in [`MAPS`] order.
pub(crate) struct LayerTuning {
    pub maps: Vec<Lora>,
}

impl LayerTuning {
    /// The update of map `name`.
    pub(crate) fn map(&self, name: &str) -> &Lora {
        let i = MAPS
            .iter()
            .position(|(n, _, _)| *n == name)
            .expect("a tuned map");
        &self.maps[i]
    }
}

/// A tuning: updates of layers `from..from + layers.len()`.
pub struct Tuning {
    /// First tuned layer.
    pub(crate) from: usize,
    pub(crate) layers: Vec<LayerTuning>,
}

impl Tuning {
    /// A new trainable tuning of layers `from..total` with rank `rank`, its tensors in
    /// `p`: `a` random (scaled by 1/sqrt(in)), `b` zero, so it starts as the encoder.
    pub(crate) fn fresh(p: &tch::nn::Path, from: usize, total: usize, rank: i64) -> Self {
        use tch::nn::Init;
        let layers = (from..total)
            .map(|l| LayerTuning {
                maps: MAPS
                    .iter()
                    .map(|&(name, i, o)| Lora {
                        a: p.var(
                            &format!("layer{l}_{name}_a"),
                            &[rank, i],
                            Init::Randn {
                                mean: 0.0,
                                stdev: 1.0 / (i as f64).sqrt(),
                            },
                        ),
                        b: p.var(&format!("layer{l}_{name}_b"), &[o, rank], Init::Const(0.0)),
                    })
                    .collect(),
            })
            .collect();
        Self { from, layers }
    }

    /// Writes the tuning to `path` (safetensors).
    pub(crate) fn save(&self, path: &Path) -> Result<(), ModelError> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            for ((name, _, _), m) in MAPS.iter().zip(&l.maps) {
                let p = format!("layer{}.{name}", self.from + k);
                named.push((format!("{p}.a"), m.a.detach().contiguous()));
                named.push((format!("{p}.b"), m.b.detach().contiguous()));
            }
        }
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|source| ModelError::Io {
                path: d.into(),
                source,
            })?;
        }
        Tensor::write_safetensors(&named, path).map_err(|e| ModelError::Runtime {
            name: "text tuning".into(),
            reason: format!("cannot save {}: {e}", path.display()),
        })
    }

    /// Reads a tuning for an encoder of `total` layers from `path`.
    pub(crate) fn load(path: &Path, total: usize) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                flag: "ubm",
            });
        }
        let mut tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| corrupt(path, e.to_string()))?
            .into_iter()
            .collect();
        let from = (0..total)
            .find(|l| tensors.contains_key(&format!("layer{l}.q.a")))
            .ok_or_else(|| {
                corrupt(
                    path,
                    format!("no tuned layer of a {total}-layer encoder in it; retrain it with `sentistream train text`"),
                )
            })?;
        let mut layers = Vec::with_capacity(total - from);
        for l in from..total {
            let mut maps = Vec::with_capacity(MAPS.len());
            for (name, i, o) in MAPS {
                let mut take = |part: &str| {
                    let key = format!("layer{l}.{name}.{part}");
                    tensors.remove(&key).ok_or_else(|| {
                        corrupt(
                            path,
                            format!(
                                "tensor {key} is missing; retrain it with `sentistream train text`"
                            ),
                        )
                    })
                };
                let (a, b) = (
                    take("a")?.to_kind(Kind::Float),
                    take("b")?.to_kind(Kind::Float),
                );
                let (sa, sb) = (a.size(), b.size());
                if sa.len() != 2 || sb.len() != 2 || sa[1] != i || sb[0] != o || sa[0] != sb[1] {
                    return Err(corrupt(
                        path,
                        format!(
                            "layer {l} {name}: shapes {sa:?} and {sb:?} do not fit a [rank, {i}] x [{o}, rank] update of this encoder"
                        ),
                    ));
                }
                maps.push(Lora { a, b });
            }
            layers.push(LayerTuning { maps });
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(corrupt(
                path,
                format!("unexpected tensor {extra}: tuned for another encoder?"),
            ));
        }
        Ok(Self { from, layers })
    }
}

impl Layer {
    /// This layer with `t`'s updates merged into its weights (the rest shared).
    pub(super) fn merged(&self, t: &LayerTuning) -> Layer {
        let _guard = tch::no_grad_guard();
        let add = |p: &(Tensor, Tensor), m: &Lora| (&p.0 + m.b.matmul(&m.a), p.1.shallow_clone());
        let same = |p: &(Tensor, Tensor)| (p.0.shallow_clone(), p.1.shallow_clone());
        Layer {
            q: add(&self.q, t.map("q")),
            k: same(&self.k),
            v: add(&self.v, t.map("v")),
            attn_out: add(&self.attn_out, t.map("attn_out")),
            attn_ln: same(&self.attn_ln),
            inter: add(&self.inter, t.map("inter")),
            out: add(&self.out, t.map("out")),
            out_ln: same(&self.out_ln),
        }
    }
}

/// A short fingerprint of a file's bytes (FNV-1a, 64 bits, hex): names the feature caches
/// of an encoder with this tuning, so retraining it never reads stale features.
pub(crate) fn fingerprint(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::text::{EncoderKind, TextEncoder};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// A fresh tuning is the encoder itself; a trained one, saved and merged into the
    /// weights as a run loads it, gives the embeddings training computed through the
    /// separate low-rank path.
    #[test]
    fn a_saved_tuning_merges_into_the_embeddings_training_saw() {
        let dir = crate::assets::default_models_dir();
        let Ok(enc) = TextEncoder::open(EncoderKind::MiniLm, &dir) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: MiniLM missing in {}; scripts/setup installs it",
                dir.display()
            );
            eprintln!("skipped: MiniLM is not installed (scripts/setup)");
            return;
        };
        let texts = [
            "the support agent fixed it in minutes",
            "never again, what a waste of an afternoon",
        ];
        let base = enc.encode(&texts).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let t = Tuning::fresh(&vs.root(), 4, enc.depth(), 4);
        let st = enc.states(&texts, 4).unwrap();
        let refs: Vec<&Tensor> = st.iter().collect();
        let fresh = tch::no_grad(|| enc.pooled_from(&refs, &t));
        assert!(
            max_diff(&base, &fresh) < 1e-5,
            "a fresh tuning changes nothing"
        );
        tch::no_grad(|| {
            for l in &t.layers {
                for m in &l.maps {
                    let mut b = m.b.shallow_clone();
                    b.copy_(&(Tensor::randn_like(&b) * 0.05));
                }
            }
        });
        let trained = tch::no_grad(|| enc.pooled_from(&refs, &t));
        let file = tempfile::tempdir().unwrap();
        let path = file.path().join("m.text.safetensors");
        t.save(&path).unwrap();
        let tuned = TextEncoder::open(EncoderKind::MiniLm, &dir)
            .unwrap()
            .tuned(&path)
            .unwrap();
        let merged = tuned.encode(&texts).unwrap();
        assert!(max_diff(&merged, &trained) < 1e-4, "merged = low-rank path");
        assert!(
            max_diff(&merged, &base) > 1e-3,
            "the tuning changes the embedding"
        );
        // A tuning for another encoder depth, or a damaged file, is a clear error.
        let e = match TextEncoder::open(EncoderKind::MiniLm, &dir)
            .unwrap()
            .tuned(&file.path().join("missing.safetensors"))
        {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing tuning loads"),
        };
        assert!(e.contains("missing.safetensors"), "{e}");
        let short = Tuning::load(&path, 3)
            .err()
            .expect("layers 4-5 of a 3-layer encoder");
        assert!(short.to_string().contains("no tuned layer"), "{short}");
    }
}
