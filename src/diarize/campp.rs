//! CAM++ speaker embeddings (3D-Speaker's "common advanced" zh+en model, 192-d) in tch,
//! inference only, loaded from the published PyTorch state dict.
//!
//! The network: a 2-D convolutional front end over the filterbank (`head`: a stem, two
//! stages of two residual blocks that halve the frequency axis, a last strided conv),
//! flattened to 32 x 10 channels; a strided TDNN layer; three densely connected blocks of
//! context-aware-masked TDNN layers (12, 24 and 16 layers, dilation 1, 2, 2) each followed
//! by a transition that halves the channels; batch norm + ReLU; mean and standard deviation
//! over time; a linear layer with a non-affine batch norm. Batch norms use their running
//! statistics (eps 1e-5).

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::ModelError;

/// Embedding size.
pub const EMBED_DIM: usize = 192;
/// Context-aware masking pools segments of this many frames.
const SEG_POOL: i64 = 100;
const BN_EPS: f64 = 1e-5;
/// (layers, dilation) of the three dense blocks; kernel 3 everywhere.
const BLOCKS: [(usize, i64); 3] = [(12, 1), (24, 2), (16, 2)];

/// A loaded CAM++ network (weights shared read-only between threads).
pub struct CamPlus {
    w: HashMap<String, Tensor>,
}

// SAFETY: the weights are written once, in `load`, and only read afterwards: every forward
// pass makes new tensors (no in-place operator touches a weight), and libtorch's operators
// may read one tensor from several threads at once. So streams share one network.
unsafe impl Sync for CamPlus {}

impl CamPlus {
    /// Loads `campplus_cn_en_common.pt`, checking that every tensor the network needs is
    /// there with the expected shape.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                flag: "speaker-model",
            });
        }
        let list =
            Tensor::loadz_multi(path).map_err(|e| bad(format!("not a PyTorch state dict: {e}")))?;
        let w: HashMap<String, Tensor> = list
            .into_iter()
            .map(|(k, t)| (k, t.to_kind(Kind::Float)))
            .collect();
        let net = Self { w };
        for (name, shape) in [
            ("head.conv1.weight", vec![32, 1, 3, 3]),
            ("xvector.tdnn.linear.weight", vec![128, 320, 5]),
            (
                "xvector.dense.linear.weight",
                vec![EMBED_DIM as i64, 1024, 1],
            ),
        ] {
            match net.w.get(name) {
                Some(t) if t.size() == shape => {}
                Some(t) => {
                    return Err(bad(format!(
                        "{name} has shape {:?}, expected {shape:?}",
                        t.size()
                    )));
                }
                None => return Err(bad(format!("{name} is missing: not the CAM++ zh+en model"))),
            }
        }
        let mut probe = Vec::new();
        net.check_all(&mut probe);
        if let Some(name) = probe.first() {
            return Err(bad(format!("{name} is missing: not the CAM++ zh+en model")));
        }
        Ok(net)
    }

    /// Names the forward pass needs that the file lacks.
    fn check_all(&self, missing: &mut Vec<String>) {
        let mut need = |n: String| {
            if !self.w.contains_key(&n) {
                missing.push(n);
            }
        };
        need("head.conv2.weight".into());
        for (b, (layers, _)) in BLOCKS.iter().enumerate() {
            for l in 1..=*layers {
                let p = format!("xvector.block{}.tdnnd{l}", b + 1);
                need(format!("{p}.linear1.weight"));
                need(format!("{p}.cam_layer.linear_local.weight"));
                need(format!("{p}.cam_layer.linear2.bias"));
            }
            need(format!("xvector.transit{}.linear.weight", b + 1));
        }
        need("xvector.out_nonlinear.batchnorm.running_var".into());
    }

    fn t(&self, name: &str) -> &Tensor {
        self.w
            .get(name)
            .unwrap_or_else(|| panic!("CAM++ tensor {name} checked at load"))
    }

    fn bn(&self, x: &Tensor, p: &str) -> Tensor {
        let (w, b) = (
            self.w.get(&format!("{p}.weight")),
            self.w.get(&format!("{p}.bias")),
        );
        x.batch_norm(
            w,
            b,
            Some(self.t(&format!("{p}.running_mean"))),
            Some(self.t(&format!("{p}.running_var"))),
            false,
            0.0,
            BN_EPS,
            false,
        )
    }

    fn conv2d(&self, x: &Tensor, name: &str, stride: [i64; 2], pad: i64) -> Tensor {
        x.conv2d(self.t(name), None::<Tensor>, stride, [pad, pad], [1, 1], 1)
    }

    fn conv1d(&self, x: &Tensor, p: &str, stride: i64, pad: i64, dilation: i64) -> Tensor {
        let bias = self.w.get(&format!("{p}.bias"));
        x.conv1d(
            self.t(&format!("{p}.weight")),
            bias,
            [stride],
            [pad],
            [dilation],
            1,
        )
    }

    fn res_block(&self, x: &Tensor, p: &str, stride: i64) -> Tensor {
        let out = self
            .bn(
                &self.conv2d(x, &format!("{p}.conv1.weight"), [stride, 1], 1),
                &format!("{p}.bn1"),
            )
            .relu();
        let out = self.bn(
            &self.conv2d(&out, &format!("{p}.conv2.weight"), [1, 1], 1),
            &format!("{p}.bn2"),
        );
        let short = if self.w.contains_key(&format!("{p}.shortcut.0.weight")) {
            let s = self.conv2d(x, &format!("{p}.shortcut.0.weight"), [stride, 1], 0);
            self.bn(&s, &format!("{p}.shortcut.1"))
        } else {
            x.shallow_clone()
        };
        (out + short).relu()
    }

    /// (B, 80, T) filterbank -> (B, 320, T) channels.
    fn head(&self, x: &Tensor) -> Tensor {
        let x = x.unsqueeze(1);
        let mut out = self
            .bn(&self.conv2d(&x, "head.conv1.weight", [1, 1], 1), "head.bn1")
            .relu();
        for (stage, stride) in [("layer1", 2), ("layer2", 2)] {
            out = self.res_block(&out, &format!("head.{stage}.0"), stride);
            out = self.res_block(&out, &format!("head.{stage}.1"), 1);
        }
        let out = self
            .bn(
                &self.conv2d(&out, "head.conv2.weight", [2, 1], 1),
                "head.bn2",
            )
            .relu();
        let s = out.size();
        out.reshape([s[0], s[1] * s[2], s[3]])
    }

    /// One context-aware-masked layer: its 32 new channels.
    fn cam_dense_layer(&self, x: &Tensor, p: &str, dilation: i64) -> Tensor {
        let h = self.bn(x, &format!("{p}.nonlinear1.batchnorm")).relu();
        let h = self.conv1d(&h, &format!("{p}.linear1"), 1, 0, 1);
        let h = self.bn(&h, &format!("{p}.nonlinear2.batchnorm")).relu();
        let c = format!("{p}.cam_layer");
        let local = self.conv1d(&h, &format!("{c}.linear_local"), 1, dilation, dilation);
        // Context: the utterance mean plus the mean of the 100-frame segment each frame is in.
        let t = h.size()[2];
        let seg = h.avg_pool1d([SEG_POOL], [SEG_POOL], [0], true, true);
        let seg = seg
            .repeat_interleave_self_int(SEG_POOL, Some(2), None)
            .narrow(2, 0, t);
        let context = h.mean_dim(Some([2i64].as_slice()), true, Kind::Float) + seg;
        let m = self
            .conv1d(&context, &format!("{c}.linear1"), 1, 0, 1)
            .relu();
        let m = self.conv1d(&m, &format!("{c}.linear2"), 1, 0, 1).sigmoid();
        local * m
    }

    /// Embeddings for a batch of filterbanks `(B, T, 80)` (mean-normalised): `(B, 192)`.
    pub fn embed(&self, feats: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = self.head(&feats.permute([0, 2, 1]));
            let x = self.conv1d(&x, "xvector.tdnn.linear", 2, 2, 1);
            let mut x = self.bn(&x, "xvector.tdnn.nonlinear.batchnorm").relu();
            for (b, (layers, dilation)) in BLOCKS.iter().enumerate() {
                for l in 1..=*layers {
                    let new = self.cam_dense_layer(
                        &x,
                        &format!("xvector.block{}.tdnnd{l}", b + 1),
                        *dilation,
                    );
                    x = Tensor::cat(&[x, new], 1);
                }
                let p = format!("xvector.transit{}", b + 1);
                x = self.bn(&x, &format!("{p}.nonlinear.batchnorm")).relu();
                x = self.conv1d(&x, &format!("{p}.linear"), 1, 0, 1);
            }
            let x = self.bn(&x, "xvector.out_nonlinear.batchnorm").relu();
            let dims = [2i64];
            let mean = x.mean_dim(Some(dims.as_slice()), false, Kind::Float);
            let std = x.std_dim(Some(dims.as_slice()), true, false);
            let stats = Tensor::cat(&[mean, std], 1).unsqueeze(2);
            let e = self.conv1d(&stats, "xvector.dense.linear", 1, 0, 1);
            self.bn(&e, "xvector.dense.nonlinear.batchnorm")
                .squeeze_dim(2)
        })
    }
}
