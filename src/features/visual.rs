//! Visual features of a window's frames with OpenCV: the res10 SSD face detector (DNN
//! module), Haar as a fallback, and the smile cascade inside the face. One vector per
//! frame; frames without a face are kept and marked (`PRESENT` = 0), not dropped.
//!
//! The detector runs on the first frame (of a clip, or of a live stream: a stream's
//! frames are analysed as they arrive) and then on every [`DETECT_EVERY`]th; in between, the face is tracked by matching its grey patch in a
//! neighbourhood of its last place (a fraction of a detection's cost), so motion and
//! the smile are still measured on every frame.

use std::path::{Path, PathBuf};

use opencv::core::{Mat, Rect, Scalar, Size, Vec3b, Vector};
use opencv::prelude::*;
use opencv::{dnn, imgproc, objdetect};

use crate::error::ModelError;

/// Values per frame.
pub const VIS_DIM: usize = 11;
/// res10 detections below this confidence are ignored.
const MIN_CONFIDENCE: f32 = 0.5;
/// The detector runs on every this many frames of a window (the first included); the
/// frames between are tracked.
pub const DETECT_EVERY: u32 = crate::config::FACE_DETECT_EVERY;
/// A tracked face whose patch matches worse than this (normalised correlation) is lost
/// until the next detection.
const MIN_TRACK_SCORE: f64 = 0.6;
/// The tracker searches this fraction of the face's size around its last place.
const TRACK_SEARCH: f32 = 0.25;
/// The tracker matches on the grey frame shrunk this many times (16x fewer operations
/// than at full size for 4).
const TRACK_SHRINK: i32 = 4;

/// Side of the res10 input. The model was trained at 300; at 160 it finds faces wider
/// than ~1/10 of the frame (webcams, calls, the samples) at about a third of the cost.
pub(crate) const SSD_SIZE: i32 = 160;

/// Index of named values inside a frame vector.
pub mod idx {
    /// 1 when a face was found.
    pub const PRESENT: usize = 0;
    /// Detector confidence.
    pub const CONFIDENCE: usize = 1;
    /// Face centre x / frame width.
    pub const CX: usize = 2;
    /// Face centre y / frame height.
    pub const CY: usize = 3;
    /// Face width / frame width.
    pub const W: usize = 4;
    /// Face height / frame height.
    pub const H: usize = 5;
    /// Movement of the face centre since the previous frame with a face (frame widths).
    pub const MOTION: usize = 6;
    /// Change of face width since the previous frame with a face.
    pub const SCALE_CHANGE: usize = 7;
    /// 1 when the smile cascade fires in the lower half of the face.
    pub const SMILE: usize = 8;
    /// Width of the widest smile / face width.
    pub const SMILE_WIDTH: usize = 9;
    /// Mean grey level of the face / 255.
    pub const BRIGHTNESS: usize = 10;
}

/// Where the detector files are.
#[derive(Debug, Clone)]
pub struct VisualModels {
    /// res10 `deploy.prototxt` (optional: Haar is used without it).
    pub prototxt: Option<PathBuf>,
    /// res10 caffemodel.
    pub caffemodel: Option<PathBuf>,
    /// Haar frontal-face cascade.
    pub face_cascade: PathBuf,
    /// Haar smile cascade.
    pub smile_cascade: PathBuf,
}

/// Debian's opencv-data location of the Haar cascades.
pub(crate) const HAAR_DIR: &str = "/usr/share/opencv4/haarcascades";

impl VisualModels {
    /// The installed models: res10 from the models folder when present, Haar from opencv-data.
    pub fn installed(models_dir: &Path) -> Self {
        let proto = models_dir
            .join(crate::assets::FACE_DIR)
            .join("deploy.prototxt");
        let caffe = models_dir
            .join(crate::assets::FACE_DIR)
            .join("res10_300x300_ssd_iter_140000.caffemodel");
        let both = proto.is_file() && caffe.is_file();
        Self {
            prototxt: both.then_some(proto),
            caffemodel: both.then_some(caffe),
            face_cascade: Path::new(HAAR_DIR).join("haarcascade_frontalface_default.xml"),
            smile_cascade: Path::new(HAAR_DIR).join("haarcascade_smile.xml"),
        }
    }
}

/// Face detector and per-frame featurizer.
pub struct VisualFeaturizer {
    net: Option<dnn::Net>,
    ssd_size: i32,
    face_cascade: Option<objdetect::CascadeClassifier>,
    smile: objdetect::CascadeClassifier,
    gray: Mat,
    faces: Vector<Rect>,
    smiles: Vector<Rect>,
    prev: Option<[f32; 3]>,
    /// Detect on every this many frames (1: every frame).
    detect_every: u32,
    /// Frames since the last detection in this window.
    since_detect: u32,
    /// The face last found (detected or tracked) and its confidence.
    last: Option<(f32, Rect)>,
    /// The grey frame shrunk `TRACK_SHRINK` times, the last face's patch in it (the
    /// tracker's template), and the match scores.
    small: Mat,
    template: Mat,
    scores: Mat,
}

fn cv_err(path: &Path, e: opencv::Error) -> ModelError {
    ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("OpenCV could not load it: {e}"),
    }
}

fn load_cascade(path: &Path) -> Result<objdetect::CascadeClassifier, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Missing {
            path: path.to_path_buf(),
            flag: "models-dir",
        });
    }
    let c = objdetect::CascadeClassifier::new(path).map_err(|e| cv_err(path, e))?;
    if c.empty().unwrap_or(true) {
        return Err(ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a Haar cascade".into(),
        });
    }
    Ok(c)
}

fn runtime(e: opencv::Error) -> ModelError {
    ModelError::Runtime {
        name: "opencv".into(),
        reason: e.to_string(),
    }
}

impl VisualFeaturizer {
    /// Loads the detectors (res10 if given, else Haar) and the smile cascade.
    pub fn load(m: &VisualModels) -> Result<Self, ModelError> {
        let net = match (&m.prototxt, &m.caffemodel) {
            (Some(p), Some(c)) => {
                let net = dnn::read_net_from_caffe(&p.to_string_lossy(), &c.to_string_lossy())
                    .map_err(|e| cv_err(c, e))?;
                if net.empty().unwrap_or(true) {
                    return Err(ModelError::Corrupt {
                        path: c.clone(),
                        reason: "empty network".into(),
                    });
                }
                Some(net)
            }
            _ => None,
        };
        let face_cascade = if net.is_none() {
            Some(load_cascade(&m.face_cascade)?)
        } else {
            None
        };
        Ok(Self {
            net,
            ssd_size: SSD_SIZE,
            face_cascade,
            smile: load_cascade(&m.smile_cascade)?,
            gray: Mat::default(),
            faces: Vector::new(),
            smiles: Vector::new(),
            prev: None,
            detect_every: DETECT_EVERY,
            since_detect: 0,
            last: None,
            small: Mat::default(),
            template: Mat::default(),
            scores: Mat::default(),
        })
    }

    /// Runs the detector on every `n`th frame (1: every frame, as before tracking).
    pub fn set_detect_every(&mut self, n: u32) {
        self.detect_every = n.max(1);
    }

    /// Which detector runs.
    pub fn detector(&self) -> &'static str {
        if self.net.is_some() {
            "res10-ssd"
        } else {
            "haar"
        }
    }

    /// Forgets the previous face (call before each window): the window's first frame is
    /// detected.
    pub fn reset(&mut self) {
        self.prev = None;
        self.last = None;
        self.since_detect = 0;
    }

    /// Appends `VIS_DIM` values for one tightly packed RGB frame to `out`.
    pub fn frame(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let (w, h) = (width as i32, height as i32);
        let img = Mat::new_rows_cols_with_bytes::<Vec3b>(h, w, rgb).map_err(runtime)?;
        imgproc::cvt_color_def(&img, &mut self.gray, imgproc::COLOR_RGB2GRAY).map_err(runtime)?;
        let tracking = self.detect_every > 1;
        if tracking {
            // A frame of another size (a new source, a resolution change) starts afresh.
            if (self.small.cols(), self.small.rows()) != (w / TRACK_SHRINK, h / TRACK_SHRINK) {
                self.last = None;
            }
            imgproc::resize(
                &self.gray,
                &mut self.small,
                Size::new(w / TRACK_SHRINK, h / TRACK_SHRINK),
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )
            .map_err(runtime)?;
        }
        let due = self.since_detect.is_multiple_of(self.detect_every);
        let tracked = if due { None } else { self.track()? };
        // A face the tracker lost is looked for again at once.
        let found = match tracked {
            Some(f) => Some(f),
            None => {
                self.since_detect = 0;
                match &mut self.net {
                    Some(net) => ssd_face(net, &img, self.ssd_size, w, h)?,
                    None => self.haar_face()?,
                }
            }
        };
        self.since_detect += 1;
        if tracking {
            self.remember(found)?;
        }
        let Some((conf, face)) = found else {
            out.extend_from_slice(&[0.0; VIS_DIM]);
            return Ok(());
        };
        let (fw, fh) = (w as f32, h as f32);
        let cx = (face.x as f32 + face.width as f32 / 2.0) / fw;
        let cy = (face.y as f32 + face.height as f32 / 2.0) / fh;
        let rw = face.width as f32 / fw;
        let (motion, scale_change) = match self.prev {
            Some([px, py, pw]) => (((cx - px).powi(2) + (cy - py).powi(2)).sqrt(), rw - pw),
            None => (0.0, 0.0),
        };
        self.prev = Some([cx, cy, rw]);
        let smile_w = self.smile_width(face)?;
        let face_roi = Mat::roi(&self.gray, face).map_err(runtime)?;
        let brightness = opencv::core::mean_def(&face_roi).map_err(runtime)?[0] as f32 / 255.0;
        out.extend_from_slice(&[
            1.0,
            conf,
            cx,
            cy,
            rw,
            face.height as f32 / fh,
            motion,
            scale_change,
            if self.smiles.is_empty() { 0.0 } else { 1.0 },
            smile_w,
            brightness,
        ]);
        Ok(())
    }

    /// Keeps the face found in this frame and its (shrunk) grey patch for the tracker.
    fn remember(&mut self, found: Option<(f32, Rect)>) -> Result<(), ModelError> {
        self.last = found;
        if let Some((_, face)) = found {
            let s = shrink(face);
            if s.width < 4 || s.height < 4 {
                self.last = None; // too small to follow: detect again
                return Ok(());
            }
            Mat::roi(&self.small, s)
                .and_then(|patch| patch.copy_to(&mut self.template))
                .map_err(runtime)?;
        }
        Ok(())
    }

    /// The last face followed into this frame: its grey patch matched (normalised
    /// correlation) within a margin around its last place. `None` when there was no face
    /// or the best match is poor.
    fn track(&mut self) -> Result<Option<(f32, Rect)>, ModelError> {
        let Some((conf, full)) = self.last else {
            return Ok(None);
        };
        let face = shrink(full);
        let (fw, fh) = (self.small.cols(), self.small.rows());
        let mx = ((face.width as f32 * TRACK_SEARCH).ceil() as i32).max(2);
        let my = ((face.height as f32 * TRACK_SEARCH).ceil() as i32).max(2);
        let (x0, y0) = ((face.x - mx).max(0), (face.y - my).max(0));
        let (x1, y1) = (
            (face.x + face.width + mx).min(fw),
            (face.y + face.height + my).min(fh),
        );
        let area = Rect::new(x0, y0, x1 - x0, y1 - y0);
        if area.width < face.width || area.height < face.height {
            return Ok(None);
        }
        let region = Mat::roi(&self.small, area).map_err(runtime)?;
        imgproc::match_template_def(
            &region,
            &self.template,
            &mut self.scores,
            imgproc::TM_CCOEFF_NORMED,
        )
        .map_err(runtime)?;
        let (mut best, mut at) = (0.0f64, opencv::core::Point::default());
        opencv::core::min_max_loc(
            &self.scores,
            None,
            Some(&mut best),
            None,
            Some(&mut at),
            &opencv::core::no_array(),
        )
        .map_err(runtime)?;
        if best < MIN_TRACK_SCORE {
            return Ok(None);
        }
        // Back to full size: the shift found, applied to the full-size face.
        let (dx, dy) = (x0 + at.x - face.x, y0 + at.y - face.y);
        let moved = Rect::new(
            (full.x + dx * TRACK_SHRINK).clamp(0, (self.gray.cols() - full.width).max(0)),
            (full.y + dy * TRACK_SHRINK).clamp(0, (self.gray.rows() - full.height).max(0)),
            full.width,
            full.height,
        );
        Ok(Some((conf, moved)))
    }

    /// The largest Haar face in the grey frame, with confidence 1 (used without res10).
    fn haar_face(&mut self) -> Result<Option<(f32, Rect)>, ModelError> {
        let cascade = self
            .face_cascade
            .as_mut()
            .expect("Haar is loaded when res10 is not");
        cascade
            .detect_multi_scale(
                &self.gray,
                &mut self.faces,
                1.1,
                4,
                0,
                Size::new(24, 24),
                Size::default(),
            )
            .map_err(runtime)?;
        Ok(self.faces.iter().max_by_key(|r| r.area()).map(|r| (1.0, r)))
    }

    /// Runs the smile cascade in the lower half of `face` (hits land in `self.smiles`) and
    /// returns the widest smile's width / face width.
    fn smile_width(&mut self, face: Rect) -> Result<f32, ModelError> {
        // Smiles in the lower half of the face.
        let lower = Rect::new(
            face.x,
            face.y + face.height / 2,
            face.width,
            face.height - face.height / 2,
        );
        let roi = Mat::roi(&self.gray, lower).map_err(runtime)?;
        let min_smile = Size::new((face.width / 4).max(8), (face.height / 10).max(4));
        self.smile
            .detect_multi_scale(
                &roi,
                &mut self.smiles,
                1.15,
                15,
                0,
                min_smile,
                Size::default(),
            )
            .map_err(runtime)?;
        Ok(self.smiles.iter().map(|r| r.width).max().unwrap_or(0) as f32 / face.width as f32)
    }
}

/// A full-size rectangle in the tracker's shrunk frame.
fn shrink(r: Rect) -> Rect {
    Rect::new(
        r.x / TRACK_SHRINK,
        r.y / TRACK_SHRINK,
        r.width / TRACK_SHRINK,
        r.height / TRACK_SHRINK,
    )
}

/// The most confident res10 face in a `w` x `h` RGB frame, if any (at least 5 pixels each way).
fn ssd_face(
    net: &mut dnn::Net,
    img: &impl opencv::core::ToInputArray,
    ssd_size: i32,
    w: i32,
    h: i32,
) -> Result<Option<(f32, Rect)>, ModelError> {
    let blob = dnn::blob_from_image(
        img,
        1.0,
        Size::new(ssd_size, ssd_size),
        // The frame is RGB and the network wants BGR: swap, with its means given
        // in the network's (BGR) order.
        Scalar::new(104.0, 177.0, 123.0, 0.0),
        true,
        false,
        opencv::core::CV_32F,
    )
    .map_err(runtime)?;
    net.set_input_def(&blob).map_err(runtime)?;
    let det = net.forward_single_def().map_err(runtime)?;
    // [1, 1, N, 7]: (image, class, confidence, x1, y1, x2, y2) in [0, 1].
    let n = det.total() / 7;
    let data = det.data_typed::<f32>().map_err(runtime)?;
    let mut best: Option<(f32, Rect)> = None;
    for i in 0..n {
        let d = &data[i * 7..i * 7 + 7];
        if d[2] >= MIN_CONFIDENCE && best.is_none_or(|b| d[2] > b.0) {
            let (x1, y1) = (
                (d[3] * w as f32).max(0.0) as i32,
                (d[4] * h as f32).max(0.0) as i32,
            );
            let (x2, y2) = (
                (d[5] * w as f32).min(w as f32) as i32,
                (d[6] * h as f32).min(h as f32) as i32,
            );
            if x2 > x1 + 4 && y2 > y1 + 4 {
                best = Some((d[2], Rect::new(x1, y1, x2 - x1, y2 - y1)));
            }
        }
    }
    Ok(best)
}
