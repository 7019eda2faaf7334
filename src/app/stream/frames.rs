//! The video frames a stream holds until the windows that need them are processed,
//! bounded so a long silence (no window claims frames) cannot grow memory. Every frame is
//! analysed once, in stream order (the face tracker follows it from frame to frame):
//! whenever the stream thread has nothing else to do (a live stream between windows), or
//! beside Whisper when a window needs its frames (a file read ahead). Either way the
//! results are the same. Analysed frames keep their values ([`Look`]), not their pixels.

use std::collections::VecDeque;

use crate::error::ModelError;
use crate::features::Look;
use crate::source::VideoFrame;

/// Video frames in stream-time order: analysed ones, then the ones not analysed yet.
#[derive(Debug, Default)]
pub(crate) struct FrameQueue {
    looks: VecDeque<Look>,
    raw: VecDeque<VideoFrame>,
    /// A window's frames, gathered for its features (reused).
    window: Vec<Look>,
    /// Pixel buffers of analysed or released frames, to give back to the source.
    spent: Vec<Vec<u8>>,
}

impl FrameQueue {
    /// Adds a frame (not analysed yet); frames older than `keep_s` before the newest are
    /// released.
    pub(crate) fn push(&mut self, f: VideoFrame, keep_s: f64) {
        let oldest = f.pts - keep_s;
        self.raw.push_back(f);
        while self.looks.front().is_some_and(|l| l.pts < oldest) {
            self.looks.pop_front();
        }
        while self.raw.front().is_some_and(|f| f.pts < oldest) {
            let f = self.raw.pop_front().expect("front exists");
            self.spent.push(f.data);
        }
    }

    /// Analyses, in order, the frames not analysed yet that come before stream time
    /// `upto` (all of them with `f64::INFINITY`).
    pub(crate) fn analyse(
        &mut self,
        upto: f64,
        look: &mut dyn FnMut(&VideoFrame) -> Result<Look, ModelError>,
    ) -> Result<(), ModelError> {
        while self.raw.front().is_some_and(|f| f.pts < upto) {
            let f = self.raw.pop_front().expect("front exists");
            let l = look(&f);
            self.spent.push(f.data);
            self.looks.push_back(l?);
        }
        Ok(())
    }

    /// Frames in [start, end), analysed or not.
    pub(crate) fn count_between(&self, start: f64, end: f64) -> usize {
        let inside = |pts: f64| pts >= start && pts < end;
        self.looks.iter().filter(|l| inside(l.pts)).count()
            + self.raw.iter().filter(|f| inside(f.pts)).count()
    }

    /// Analysed frames in [start, end), gathered in one slice.
    pub(crate) fn gather(&mut self, start: f64, end: f64) -> &[Look] {
        self.window.clear();
        let frames = self.looks.iter().filter(|f| f.pts >= start && f.pts < end);
        self.window.extend(frames);
        &self.window
    }

    /// Releases analysed frames before `t` (no later window needs them).
    pub(crate) fn release_before(&mut self, t: f64) {
        while self.looks.front().is_some_and(|f| f.pts < t) {
            self.looks.pop_front();
        }
    }

    /// Pixel buffers no frame needs any more.
    pub(crate) fn spent(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.spent.drain(..)
    }

    /// Frames held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.looks.len() + self.raw.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::visual::VIS_DIM;

    fn frame(pts: f64) -> VideoFrame {
        VideoFrame {
            pts,
            width: 2,
            height: 2,
            data: vec![0; 12],
        }
    }

    fn look(f: &VideoFrame) -> Result<Look, ModelError> {
        Ok(Look {
            pts: f.pts,
            values: [f.pts as f32; VIS_DIM],
        })
    }

    #[test]
    fn holds_a_bounded_span_and_analyses_each_frame_once_in_order() {
        let mut q = FrameQueue::default();
        let mut seen = Vec::new();
        let mut count = |f: &VideoFrame| {
            seen.push(f.pts);
            look(f)
        };
        for i in 0..100 {
            q.push(frame(i as f64 * 0.2), 5.1);
            if i == 50 {
                q.analyse(f64::INFINITY, &mut count).unwrap();
            }
        }
        // 5 s of frames at 5 fps (plus the edge) are kept; the unanalysed ones released
        // give their buffers back.
        assert_eq!(q.len(), 26);
        assert_eq!(q.spent().count(), 100 - 26);
        assert_eq!(q.count_between(18.9, 19.5), 3);
        assert!(q.gather(18.9, 19.5).is_empty(), "not analysed yet");
        q.analyse(19.1, &mut count).unwrap();
        q.analyse(19.5, &mut count).unwrap();
        let w = q.gather(18.9, 19.5);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].values[0], 19.0);
        assert_eq!(q.count_between(18.9, 19.5), 3);
        // Each frame once, in stream order: the 26 held at frame 50, then the 24 before
        // 19.5 s of those pushed later and still held.
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "{seen:?}");
        assert_eq!(seen.len(), 26 + 24);
        q.release_before(18.9);
        assert_eq!(q.len(), 5);
    }
}
