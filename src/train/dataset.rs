//! Datasets in the MMSA raw layout (how CMU-MOSI, MOSEI and CH-SIMS ship):
//! `label.csv` (video_id, clip_id, text, label, ..., mode) and `Raw/<video_id>/<clip_id>.mp4`.
//! Clips go through the same source, VAD window cutting and feature code as `annotate`
//! (each clip is seen as serving cuts it: [`ClipCut`]); features are cached per clip so
//! extraction runs once.

use std::path::{Path, PathBuf};

use crate::config::{AsrConfig, SegmentConfig, SourceConfig};
use crate::error::{DatasetError, ModelError, Result};
use crate::features::asr::Asr;
use crate::features::text::EncoderSpec;
use crate::features::{Extractor, FEATURE_VERSION, WindowFeatures};
use crate::segment::{Segmenter, Vad, Window};
use crate::source::{VideoFrame, decode_all};

/// How a clip is cut before its features are made: as `annotate` cuts a recording (the
/// VAD's window, with its padding), so training and evaluation see what serving sees.
#[derive(Debug, Clone)]
pub struct ClipCut {
    /// The segmenter settings (`[segment]`).
    pub segment: SegmentConfig,
    /// The Silero VAD model file.
    pub vad: PathBuf,
}

/// Samples per push into the segmenter (0.1 s, as a decoder hands audio over).
const CUT_PIECE: usize = 1600;
/// Revision of how a clip is cut and analysed as served, in the feature cache's folder
/// name (2: faces analysed from the clip's start, as a stream does), so features cut
/// another way are recomputed.
const CUT_VERSION: u32 = 2;

impl ClipCut {
    /// The part of a decoded clip that serving analyses: the VAD window's audio (speech
    /// with its padding), the frames up to the end of speech (a stream analyses every
    /// frame from its start: the face tracker follows them all) and where the window's
    /// frames begin. A clip the VAD cuts into several windows (`annotate` would emit one
    /// event each) is taken from the first window's start to the last one's end; a clip
    /// with no speech found is taken whole.
    fn apply(
        &self,
        audio: Vec<f32>,
        frames: Vec<VideoFrame>,
    ) -> Result<(Vec<f32>, Vec<VideoFrame>, f64)> {
        let mut seg = Segmenter::new(self.segment.clone(), Vad::load(&self.vad)?);
        let mut windows: Vec<Window> = Vec::new();
        for piece in audio.chunks(CUT_PIECE) {
            seg.push(None, piece, &mut windows)?;
        }
        seg.finish(&mut windows)?;
        let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
            return Ok((audio, frames, f64::NEG_INFINITY));
        };
        let index = |t: f64| crate::segment::sample_index(0.0, audio.len(), t);
        let (from, speech_end) = (first.audio_start, last.end);
        let to = last.audio_start + last.audio.len() as f64 / crate::source::SAMPLE_RATE as f64;
        let cut = audio[index(from)..index(to)].to_vec();
        let frames = frames.into_iter().filter(|f| f.pts < speech_end).collect();
        Ok((cut, frames, from))
    }
}

/// Label range of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// CMU-MOSI / MOSEI: [-3, 3].
    Mosi,
    /// CH-SIMS: [-1, 1].
    Sims,
}

impl Scale {
    /// Largest absolute label.
    pub(crate) fn limit(self) -> f32 {
        match self {
            Scale::Mosi => 3.0,
            Scale::Sims => 1.0,
        }
    }
}

/// Where the transcript of a clip comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextSource {
    /// The `text` column (as MMSA does).
    Given,
    /// Whisper on the clip's audio.
    Asr,
}

/// Split of a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Split {
    /// Training.
    Train,
    /// Validation (calibration, model selection).
    Valid,
    /// Test.
    Test,
}

/// One labelled clip.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Video id.
    pub video_id: String,
    /// Clip id.
    pub clip_id: String,
    /// Transcript from label.csv.
    pub text: String,
    /// Sentiment label.
    pub label: f32,
    /// Split.
    pub split: Split,
    /// Media file.
    pub path: PathBuf,
    /// Who speaks: `label.csv`'s optional `speaker` column, else the video id (MOSI's
    /// videos are one speaker each). Speaker-relative pitch is referenced per speaker.
    pub speaker: String,
}

/// A dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Folder.
    pub root: PathBuf,
    /// Clips whose media exists.
    pub clips: Vec<Clip>,
    /// Rows whose media file is missing (skipped).
    pub missing: usize,
}

impl Dataset {
    /// Reads and checks `label.csv`; a malformed row stops with its row number.
    pub fn open(root: &Path, scale: Scale) -> Result<Self, DatasetError> {
        let path = root.join("label.csv");
        if !path.is_file() {
            return Err(DatasetError::MissingLabels { root: root.into() });
        }
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(&path)
            .map_err(|e| DatasetError::Malformed {
                path: path.clone(),
                row: 1,
                reason: e.to_string(),
            })?;
        let cols = Self::label_columns(&mut rdr, &path)?;
        let (mut clips, mut missing) = (Vec::new(), 0);
        let lim = scale.limit();
        for (i, rec) in rdr.records().enumerate() {
            let row = i + 2;
            let rec = rec.map_err(|e| DatasetError::Malformed {
                path: path.clone(),
                row,
                reason: e.to_string(),
            })?;
            match Self::clip_of_row(root, &path, row, &rec, &cols, lim)? {
                Some(clip) => clips.push(clip),
                None => missing += 1,
            }
        }
        if clips.is_empty() {
            return Err(DatasetError::Empty {
                root: root.into(),
                reason: format!("no clip found under Raw/ ({missing} rows point at missing files)"),
            });
        }
        Ok(Self {
            root: root.into(),
            clips,
            missing,
        })
    }

    /// Finds the needed columns in `label.csv`'s header (row 1), or says which are lacking.
    fn label_columns(
        rdr: &mut csv::Reader<std::fs::File>,
        path: &Path,
    ) -> Result<LabelColumns, DatasetError> {
        let header = rdr
            .headers()
            .map_err(|e| DatasetError::Malformed {
                path: path.into(),
                row: 1,
                reason: e.to_string(),
            })?
            .clone();
        let col = |name: &str| header.iter().position(|h| h.trim() == name);
        let (Some(vid), Some(clip), Some(text), Some(label), Some(mode)) = (
            col("video_id"),
            col("clip_id"),
            col("text"),
            col("label"),
            col("mode"),
        ) else {
            return Err(DatasetError::Malformed {
                path: path.into(),
                row: 1,
                reason: format!(
                    "header {:?} lacks video_id, clip_id, text, label or mode",
                    header.iter().collect::<Vec<_>>()
                ),
            });
        };
        Ok(LabelColumns {
            vid,
            clip,
            text,
            label,
            mode,
            speaker: col("speaker"),
        })
    }

    /// Checks one `label.csv` row (label range, split, ids) and makes its clip; `None`
    /// when the row's media file is missing.
    fn clip_of_row(
        root: &Path,
        path: &Path,
        row: usize,
        rec: &csv::StringRecord,
        cols: &LabelColumns,
        lim: f32,
    ) -> Result<Option<Clip>, DatasetError> {
        let get = |c: usize, name: &str| {
            rec.get(c)
                .map(str::trim)
                .ok_or_else(|| DatasetError::Malformed {
                    path: path.into(),
                    row,
                    reason: format!("no {name} column"),
                })
        };
        let label_txt = get(cols.label, "label")?;
        let label: f32 = label_txt.parse().map_err(|_| DatasetError::Malformed {
            path: path.into(),
            row,
            reason: format!("label {label_txt:?} is not a number"),
        })?;
        if !label.is_finite() || label.abs() > lim + 1e-6 {
            return Err(DatasetError::LabelRange {
                path: path.into(),
                row,
                value: label,
                lo: -lim,
                hi: lim,
            });
        }
        let split = Self::split_of_mode(path, row, get(cols.mode, "mode")?)?;
        let (video_id, clip_id) = (
            get(cols.vid, "video_id")?.to_string(),
            get(cols.clip, "clip_id")?.to_string(),
        );
        if video_id.is_empty()
            || clip_id.is_empty()
            || video_id.contains("..")
            || clip_id.contains("..")
        {
            return Err(DatasetError::Malformed {
                path: path.into(),
                row,
                reason: "empty or unsafe video_id/clip_id".into(),
            });
        }
        let media = root
            .join("Raw")
            .join(&video_id)
            .join(format!("{clip_id}.mp4"));
        if !media.is_file() {
            return Ok(None);
        }
        let speaker = cols
            .speaker
            .and_then(|c| rec.get(c))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(&video_id)
            .to_string();
        Ok(Some(Clip {
            speaker,
            video_id,
            clip_id,
            text: get(cols.text, "text")?.to_string(),
            label,
            split,
            path: media,
        }))
    }

    /// The split named by a row's `mode` column.
    fn split_of_mode(path: &Path, row: usize, mode: &str) -> Result<Split, DatasetError> {
        match mode.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "valid" | "validation" | "val" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => Err(DatasetError::UnknownMode {
                path: path.into(),
                row,
                mode: mode.to_string(),
            }),
        }
    }

    /// Clips of one split.
    pub fn split(&self, s: Split) -> Vec<&Clip> {
        self.clips.iter().filter(|c| c.split == s).collect()
    }

    /// Cache file of a clip's features (`served`: cut as `annotate` cuts it, [`ClipCut`];
    /// caches of whole clips, without it, are not read).
    /// The text encoder is part of the folder's name (`tag`: [`EncoderSpec::cache_tag`],
    /// empty for MiniLM as installed, the first).
    pub(crate) fn cache_path(&self, clip: &Clip, text: TextSource, tag: &str) -> PathBuf {
        let mut mode = match text {
            TextSource::Given => "given",
            TextSource::Asr => "asr",
        }
        .to_string();
        if !tag.is_empty() {
            mode = format!("{mode}-{tag}");
        }
        self.root
            .join(".sentistream-cache")
            .join(format!("v{FEATURE_VERSION}.{CUT_VERSION}-served-{mode}"))
            .join(&clip.video_id)
            .join(format!("{}.feat", clip.clip_id))
    }
}

/// Column positions of the fields `Dataset::open` reads from `label.csv`.
struct LabelColumns {
    vid: usize,
    clip: usize,
    text: usize,
    label: usize,
    mode: usize,
    speaker: Option<usize>,
}

/// One feature worker: models are loaded on the first clip that is not cached.
struct ClipWorker<'a> {
    ds: &'a Dataset,
    how: Extraction<'a>,
    /// The encoder's cache tag.
    tag: &'a str,
    /// The tag of the same encoder without its tuning, when the encoder is tuned: its
    /// cached audio and face features are reused (with `--text given` only the text
    /// changes).
    plain_tag: Option<&'a str>,
    extractor: Option<Extractor>,
    asr: Option<Asr>,
}

/// How clip features are made.
#[derive(Debug, Clone, Copy)]
pub struct Extraction<'a> {
    /// How each clip is cut (as served).
    pub cut: &'a ClipCut,
    /// Which transcript the text features read.
    pub text: TextSource,
    /// Models folder (feature models).
    pub models_dir: &'a Path,
    /// Text encoder (the one the model was or will be trained with).
    pub encoder: &'a EncoderSpec,
    /// Whisper settings (with the model path resolved) for `--text asr`.
    pub asr: Option<&'a AsrConfig>,
}

/// `path` if it exists and is not older than `source` (what it was made from).
fn fresh<'p>(path: &'p Path, source: &Path) -> Option<&'p Path> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(path)? >= modified(source)?).then_some(path)
}

impl ClipWorker<'_> {
    /// Cached features, if the cache file is newer than the clip and readable.
    fn cached(&self, clip: &Clip) -> Option<WindowFeatures> {
        self.read_cache(&self.ds.cache_path(clip, self.how.text, self.tag), clip)
    }

    /// The features in cache file `cache`, if it is newer than the clip and readable.
    fn read_cache(&self, cache: &Path, clip: &Clip) -> Option<WindowFeatures> {
        WindowFeatures::from_bytes(&std::fs::read(fresh(cache, &clip.path)?).ok()?)
    }

    /// With a tuned encoder: the untuned encoder's cached features of the clip with the
    /// text (given, or the transcript cached beside them) encoded again (the audio and
    /// faces do not depend on the encoder), written to this encoder's cache.
    fn retexted(&mut self, clip: &Clip) -> Result<Option<WindowFeatures>> {
        let Some(plain) = self.plain_tag else {
            return Ok(None);
        };
        let plain_path = self.ds.cache_path(clip, self.how.text, plain);
        let text = match self.how.text {
            TextSource::Given => clip.text.clone(),
            // Whisper's transcript, kept beside the untuned features; none, or one older
            // than those features (an earlier extraction's): decode again.
            TextSource::Asr => {
                let txt = plain_path.with_extension("txt");
                match fresh(&txt, &plain_path).and_then(|t| std::fs::read_to_string(t).ok()) {
                    Some(t) => t,
                    None => return Ok(None),
                }
            }
        };
        let Some(mut f) = self.read_cache(&plain_path, clip) else {
            return Ok(None);
        };
        let extractor = self.extractor()?;
        f.text = None;
        extractor.add_text(&mut f, &text, 0)?;
        self.write_cache(clip, &f);
        Ok(Some(f))
    }

    /// The extractor, loaded on first use.
    fn extractor(&mut self) -> Result<&mut Extractor> {
        if self.extractor.is_none() {
            self.extractor = Some(Extractor::load(self.how.models_dir, self.how.encoder)?);
        }
        Ok(self.extractor.as_mut().expect("loaded above"))
    }

    /// Writes a clip's features to this encoder's cache; failing to write it only costs
    /// a recomputation.
    fn write_cache(&self, clip: &Clip, f: &WindowFeatures) {
        let cache = self.ds.cache_path(clip, self.how.text, self.tag);
        if let Some(d) = cache.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(&cache, f.to_bytes());
    }

    /// Keeps Whisper's transcript beside the clip's cached features, so a tuned encoder
    /// re-encodes it instead of decoding the clip again.
    fn write_transcript(&self, clip: &Clip, text: &str) {
        let cache = self.ds.cache_path(clip, self.how.text, self.tag);
        let _ = std::fs::write(cache.with_extension("txt"), text);
    }

    fn transcript(&mut self, clip: &Clip, audio: &[f32]) -> Result<String> {
        if self.how.text == TextSource::Given {
            return Ok(clip.text.clone());
        }
        let asr = match &mut self.asr {
            Some(a) => a,
            None => {
                let cfg = self.how.asr.ok_or_else(|| ModelError::Runtime {
                    name: "asr".into(),
                    reason: "--text asr needs a Whisper model".into(),
                })?;
                let mut models = crate::features::asr::WhisperModels::default();
                self.asr.insert(Asr::new(&mut models, cfg)?)
            }
        };
        Ok(asr.transcribe(audio)?.text)
    }

    /// Features of one clip (cached, or computed and cached); `None` if it cannot be decoded.
    fn clip_features(&mut self, clip: &Clip) -> Result<Option<WindowFeatures>> {
        if let Some(f) = self.cached(clip) {
            return Ok(Some(f));
        }
        if let Some(f) = self.retexted(clip)? {
            return Ok(Some(f));
        }
        let (audio, frames, from) = match decode_all(&clip.path, &SourceConfig::default()) {
            Ok((audio, frames)) => self.how.cut.apply(audio, frames)?,
            Err(e) => {
                tracing::warn!(clip = %clip.path.display(), "skipped: {e}");
                return Ok(None);
            }
        };
        let transcript = self.transcript(clip, &audio)?;
        let f = self
            .extractor()?
            .extract(&audio, (&frames, from), &transcript)?;
        self.write_cache(clip, &f);
        if self.how.text == TextSource::Asr {
            self.write_transcript(clip, &transcript);
        }
        Ok(Some(f))
    }
}

/// Computes (or reads from the cache) the features of clips, on `workers` threads.
/// Returns features in clip order; clips that fail to decode are `None` and counted.
pub fn features(
    ds: &Dataset,
    clips: &[&Clip],
    how: Extraction<'_>,
    workers: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Option<WindowFeatures>>> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let tag = how.encoder.cache_tag()?;
    let tag = tag.as_str();
    let plain = how
        .encoder
        .tuning
        .as_ref()
        .map(|_| EncoderSpec::plain(how.encoder.kind).cache_tag())
        .transpose()?;
    let plain_tag = plain.as_deref();
    let chunk = clips.len().div_ceil(workers.max(1)).max(1);
    let results: Vec<Result<Vec<Option<WindowFeatures>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = clips
            .chunks(chunk)
            .map(|part| {
                let done = &done;
                s.spawn(move || {
                    let _g = tch::no_grad_guard();
                    let mut w = ClipWorker {
                        ds,
                        how,
                        tag,
                        plain_tag,
                        extractor: None,
                        asr: None,
                    };
                    let mut out = Vec::with_capacity(part.len());
                    for clip in part {
                        out.push(w.clip_features(clip)?);
                        progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("feature worker panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(clips.len());
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, csv: &str, clips: &[(&str, &str)]) {
        std::fs::write(dir.join("label.csv"), csv).unwrap();
        for (v, c) in clips {
            std::fs::create_dir_all(dir.join("Raw").join(v)).unwrap();
            std::fs::write(dir.join("Raw").join(v).join(format!("{c}.mp4")), b"x").unwrap();
        }
    }

    const HEAD: &str = "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n";

    #[test]
    fn reads_rows_and_skips_missing_clips() {
        let d = tempfile::tempdir().unwrap();
        let csv = format!(
            "{HEAD}v1,1,\"good, really\",1.5,0,0,0,Positive,train\nv1,2,bad,-2,0,0,0,Negative,test\nv2,1,gone,0,0,0,0,Neutral,valid\n"
        );
        write(d.path(), &csv, &[("v1", "1"), ("v1", "2")]);
        let ds = Dataset::open(d.path(), Scale::Mosi).unwrap();
        assert_eq!(ds.clips.len(), 2);
        assert_eq!(ds.missing, 1);
        assert_eq!(ds.clips[0].text, "good, really");
        assert_eq!(ds.split(Split::Test).len(), 1);
    }

    #[test]
    fn bad_rows_name_file_and_row() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            (
                format!("{HEAD}v1,1,t,4.5,0,0,0,P,train\n"),
                "row 2: label 4.5 is outside",
            ),
            (
                format!("{HEAD}v1,1,t,1,0,0,0,P,train\nv1,1,t,x,0,0,0,P,train\n"),
                "row 3: label \"x\" is not a number",
            ),
            (
                format!("{HEAD}v1,1,t,1,0,0,0,P,holdout\n"),
                "row 2: unknown mode \"holdout\"",
            ),
            ("video,clip\nv1,1\n".to_string(), "lacks video_id"),
        ];
        for (csv, want) in cases {
            write(d.path(), &csv, &[("v1", "1")]);
            let e = Dataset::open(d.path(), Scale::Mosi)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("label.csv"), "{e}");
        }
        // SIMS range.
        write(
            d.path(),
            &format!("{HEAD}v1,1,t,1.5,0,0,0,P,train\n"),
            &[("v1", "1")],
        );
        assert!(
            Dataset::open(d.path(), Scale::Sims)
                .unwrap_err()
                .to_string()
                .contains("[-1, 1]")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            Dataset::open(empty.path(), Scale::Mosi)
                .unwrap_err()
                .to_string()
                .contains("no label.csv")
        );
    }
}
