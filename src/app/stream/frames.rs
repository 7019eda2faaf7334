//! The frames a stream holds until the windows that need them are processed, bounded so
//! a long silence (no window claims frames) cannot grow memory. Pixel buffers go back to
//! the source for reuse.

use std::collections::VecDeque;

use crate::source::VideoFrame;

/// Video frames in stream-time order.
#[derive(Debug, Default)]
pub(crate) struct FrameQueue {
    frames: VecDeque<VideoFrame>,
}

impl FrameQueue {
    /// Adds a frame; frames older than `keep_s` before the newest are released.
    pub(crate) fn push(&mut self, f: VideoFrame, keep_s: f64, recycle: &mut dyn FnMut(Vec<u8>)) {
        let newest = f.pts;
        self.frames.push_back(f);
        while self.frames.front().is_some_and(|f| f.pts < newest - keep_s) {
            let f = self.frames.pop_front().expect("front exists");
            recycle(f.data);
        }
    }

    /// Frames in [start, end).
    pub(crate) fn between(&self, start: f64, end: f64) -> impl Iterator<Item = &VideoFrame> {
        self.frames
            .iter()
            .filter(move |f| f.pts >= start && f.pts < end)
    }

    /// Releases frames before `t` (no later window needs them).
    pub(crate) fn release_before(&mut self, t: f64, recycle: &mut dyn FnMut(Vec<u8>)) {
        while self.frames.front().is_some_and(|f| f.pts < t) {
            let f = self.frames.pop_front().expect("front exists");
            recycle(f.data);
        }
    }

    /// Frames held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pts: f64) -> VideoFrame {
        VideoFrame {
            pts,
            width: 2,
            height: 2,
            data: vec![0; 12],
        }
    }

    #[test]
    fn holds_a_bounded_span_and_recycles_what_it_drops() {
        let mut q = FrameQueue::default();
        let mut recycled = 0;
        for i in 0..100 {
            q.push(frame(i as f64 * 0.2), 5.1, &mut |_| recycled += 1);
        }
        // 5 s of frames at 5 fps (plus the edge) are kept.
        assert_eq!(q.len(), 26);
        assert_eq!(recycled, 74);
        assert_eq!(q.between(18.9, 19.5).count(), 3);
        q.release_before(18.9, &mut |_| recycled += 1);
        assert_eq!(q.len(), 5);
        assert_eq!(recycled, 95);
    }
}
