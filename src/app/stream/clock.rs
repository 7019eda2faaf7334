//! A stream's clock: stream time from buffer timestamps, continued across reconnects
//! (each connection's timestamps start again near zero), and how far audio and video
//! have got, which decides when a window's frames are all there.

use std::time::Instant;

use crate::source::SAMPLE_RATE;

/// Windows of a live input wait at most this long (seconds of audio) for video frames to
/// catch up: a safety net for a stalled camera. A recorded input always waits (its video
/// ends with an end-of-stream message): audio decodes far ahead of video when Whisper
/// keeps the cores busy (40 s ahead on a 98 s call), and windows processed without their
/// frames made the features depend on timing.
pub(crate) const MAX_VIDEO_WAIT_S: f64 = 30.0;

/// Stream time of one stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamClock {
    /// Added to the current connection's timestamps.
    offset: f64,
    /// End of the latest audio, stream time.
    pub(crate) audio_high: f64,
    /// Latest video frame, stream time.
    pub(crate) video_high: f64,
    /// Whether the input has video (unknown until the pipeline says).
    pub(crate) has_video: Option<bool>,
    /// The current connection's video ended.
    pub(crate) video_ended: bool,
    /// When the stream was interrupted, while it is.
    interrupted_at: Option<Instant>,
    /// A recorded input: windows wait for their frames however far audio is ahead.
    pub(crate) recorded: bool,
}

impl Default for StreamClock {
    fn default() -> Self {
        Self {
            offset: 0.0,
            audio_high: 0.0,
            video_high: f64::NEG_INFINITY,
            has_video: None,
            video_ended: false,
            interrupted_at: None,
            recorded: false,
        }
    }
}

impl StreamClock {
    /// The clock of a stream; `recorded`: windows wait for their frames however far audio
    /// gets ahead.
    pub(crate) fn new(recorded: bool) -> Self {
        Self {
            recorded,
            ..Self::default()
        }
    }

    /// The source failed or ended at wall time `now`; false when already interrupted.
    pub(crate) fn interrupt(&mut self, now: Instant) -> bool {
        if self.interrupted_at.is_some() {
            return false;
        }
        self.interrupted_at = Some(now);
        true
    }

    /// The first audio of a connection, at connection time `pts`: when it resumes an
    /// interrupted stream, the stream time where it resumes. Stream time continues: the
    /// outage's wall duration is kept, so windows after the gap are as late as they
    /// really were.
    pub(crate) fn connected(&mut self, pts: Option<f64>, now: Instant) -> Option<f64> {
        let t = self.interrupted_at.take()?;
        let gap = now.saturating_duration_since(t).as_secs_f64();
        self.offset = self.audio_high + gap - pts.unwrap_or(0.0);
        Some(self.audio_high + gap)
    }

    /// An audio buffer of `samples` at connection time `pts`: its stream time.
    pub(crate) fn audio(&mut self, pts: Option<f64>, samples: usize) -> Option<f64> {
        let pts = pts.map(|t| t + self.offset);
        let end = pts.unwrap_or(self.audio_high) + samples as f64 / SAMPLE_RATE as f64;
        self.audio_high = self.audio_high.max(end);
        pts
    }

    /// A video frame at connection time `pts`: its stream time.
    pub(crate) fn video(&mut self, pts: f64) -> f64 {
        let t = pts + self.offset;
        self.video_high = self.video_high.max(t);
        t
    }

    /// Whether a window ending at `end` has all its frames (or never will).
    pub(crate) fn video_ready(&self, end: f64) -> bool {
        self.has_video == Some(false)
            || self.video_ended
            || self.video_high >= end
            || (!self.recorded && self.audio_high - end > MAX_VIDEO_WAIT_S)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stream_time_continues_across_a_reconnect() {
        let mut c = StreamClock::default();
        let t0 = Instant::now();
        assert_eq!(
            c.connected(Some(0.0), t0),
            None,
            "the first connection resumes nothing"
        );
        assert_eq!(c.audio(Some(0.0), SAMPLE_RATE as usize * 10), Some(0.0));
        assert_eq!(c.audio_high, 10.0);
        assert!(c.interrupt(t0));
        assert!(!c.interrupt(t0), "one interruption until media flows again");
        // Reopened 2 s later; the new connection's clock starts at 0.5 s.
        let resumed = c.connected(Some(0.5), t0 + Duration::from_secs(2)).unwrap();
        assert!(
            (resumed - 12.0).abs() < 1e-9,
            "resumes where media picks up"
        );
        let t = c.audio(Some(0.5), 0).unwrap();
        assert!((t - 12.0).abs() < 1e-9, "{t}");
        assert!((c.video(1.5) - 13.0).abs() < 1e-9);
    }

    #[test]
    fn windows_wait_for_video_unless_there_is_none() {
        let mut c = StreamClock::default();
        c.audio(Some(0.0), SAMPLE_RATE as usize * 5);
        assert!(!c.video_ready(4.0), "video not known yet");
        c.has_video = Some(true);
        c.video(3.0);
        assert!(!c.video_ready(4.0));
        c.video(4.2);
        assert!(c.video_ready(4.0));
        // Live: a window gives up on video once audio is far ahead; recorded: it waits.
        c.audio(Some(5.0), SAMPLE_RATE as usize * 40);
        assert!(c.video_ready(10.0));
        c.recorded = true;
        assert!(!c.video_ready(10.0));
        c.video_ended = true;
        assert!(c.video_ready(10.0));
        c.has_video = Some(false);
        assert!(c.video_ready(100.0));
    }
}
