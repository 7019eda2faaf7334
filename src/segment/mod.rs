//! Utterance segmentation: a streaming Silero VAD ([`silero`]) gives a speech probability
//! for every 32 ms chunk as the audio arrives (each chunk is analysed once, the model's
//! state carried across chunks); [`windows::cut`] turns them into utterance windows.
//!
//! Every `step_s` seconds of new audio the probabilities not yet decided go through the
//! cut, so the end of an utterance is decided as soon as the configured pause has passed.
//! Memory stays bounded on endless input: decided audio and probabilities are dropped.

pub mod silero;
pub mod windows;

pub use windows::Span;

use std::path::Path;

use crate::config::{SegmentConfig, SourceConfig};
use crate::error::{Error, ModelError};
use crate::source::{Input, SAMPLE_RATE, Source, SourceMsg};
use silero::{CHUNK, Silero};

/// Gaps in audio timestamps larger than this are filled with silence.
const GAP_TOLERANCE_S: f64 = 0.05;
/// A single timestamp gap is filled with at most this much silence.
const MAX_GAP_FILL_S: f64 = 30.0;

/// An utterance window: the speech's stream-time bounds and its (padded) audio.
#[derive(Debug, Clone)]
pub struct Window {
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// Start of speech in seconds of stream time.
    pub start: f64,
    /// End of speech in seconds of stream time.
    pub end: f64,
    /// Stream time of `audio[0]` (speech start minus padding).
    pub(crate) audio_start: f64,
    /// Mono 16 kHz samples of the padded window (`segment.padding_s` around the speech,
    /// widened to `segment.min_window_s`).
    pub audio: Vec<f32>,
    /// Speaker number from 1 (diarization), when known.
    pub speaker: Option<u32>,
    /// Voiced stretches inside the speech (runs of VAD frames at or above
    /// `segment.threshold`), stream time, in order: talk time counts these, not the
    /// pauses a window spans.
    pub voiced: Vec<(f64, f64)>,
}

impl Window {
    /// Seconds of talk: the voiced runs plus the pauses between them shorter than
    /// `pause_s` (breaths, commas). Pauses are bridged inside the window only, so a window
    /// split at a speaker change counts the gap at the cut for neither piece (summaries
    /// bridge a short pause between two windows of one speaker that nobody else fills).
    pub fn voiced_s(&self, pause_s: f64) -> f64 {
        let runs: f64 = self.voiced.iter().map(|(a, b)| b - a).sum();
        let bridged: f64 = self
            .voiced
            .windows(2)
            .map(|p| p[1].0 - p[0].1)
            .filter(|&gap| gap < pause_s - 1e-9)
            .sum();
        runs + bridged
    }

    /// Index into `audio` of stream time `t` (clamped to the audio).
    pub fn sample_at(&self, t: f64) -> usize {
        sample_index(self.audio_start, self.audio.len(), t)
    }
}

/// Index of stream time `t` into `len` samples whose first is at stream time `start`
/// (clamped to `0..=len`).
pub(crate) fn sample_index(start: f64, len: usize, t: f64) -> usize {
    let i = ((t - start) * SAMPLE_RATE as f64).round().max(0.0) as usize;
    i.min(len)
}

/// Speech still going on in a [`Segmenter`].
pub struct OpenSpeech<'a> {
    /// Its start and the end of its last speech frame so far, stream time.
    pub span: Span,
    /// Its audio (`audio[0]` at `span.start`).
    pub audio: &'a [f32],
    probs: &'a [f32],
    probs_t0: f64,
    threshold: f32,
}

impl OpenSpeech<'_> {
    /// Its voiced runs (as [`Window::voiced`]).
    pub fn voiced(&self) -> Vec<(f64, f64)> {
        let frame_s = CHUNK as f64 / SAMPLE_RATE as f64;
        let (t0, span) = (self.probs_t0, self.span);
        voiced_runs(
            self.probs,
            (t0, frame_s),
            self.threshold,
            span.start,
            span.end,
        )
    }
}

/// Where [`cut_input`] hands its windows.
pub(crate) trait WindowSink {
    /// A final window.
    fn window(&mut self, w: Window);

    /// Speech still going on (its span and audio) after new audio: a stream time at
    /// which to end its window now (a speaker change, [`Segmenter::close_open_at`]).
    fn open(&mut self, _open: Option<OpenSpeech<'_>>) -> Option<f64> {
        None
    }
}

impl<F: FnMut(Window)> WindowSink for F {
    fn window(&mut self, w: Window) {
        self(w)
    }
}

/// Decodes `input` to its end (video frames dropped) and cuts it into windows, handing
/// each to `each` as soon as it is final. Returns the number of samples decoded.
pub(crate) fn cut_input(
    input: &Input,
    source: &SourceConfig,
    segment: &SegmentConfig,
    vad: Vad,
    each: &mut dyn WindowSink,
) -> Result<usize, Error> {
    let src = Source::open_input(input, source)?;
    let mut seg = Segmenter::new(segment.clone(), vad);
    let (mut ready, mut samples) = (Vec::new(), 0usize);
    loop {
        match src.recv() {
            SourceMsg::Audio { pts, samples: s } => {
                samples += s.len();
                seg.push(pts, &s, &mut ready)?;
                src.recycle_audio(s);
                if let Some(at) = each.open(seg.open_speech()) {
                    seg.close_open_at(at, &mut ready);
                }
            }
            SourceMsg::Video(f) => src.recycle_frame(f.data),
            SourceMsg::Eos => break,
            SourceMsg::Error(e) => return Err(e.into()),
            SourceMsg::StreamsKnown { .. } | SourceMsg::VideoEnd => {}
        }
        ready.drain(..).for_each(|w| each.window(w));
    }
    seg.finish(&mut ready)?;
    ready.drain(..).for_each(|w| each.window(w));
    Ok(samples)
}

/// Runs of frames at or above `threshold` in `probs` (frame `i` starts at
/// `t0 + i * frame_s`), clipped to `[from, to]`.
fn voiced_runs(
    probs: &[f32],
    (t0, frame_s): (f64, f64),
    threshold: f32,
    from: f64,
    to: f64,
) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let first = (((from - t0) / frame_s).floor().max(0.0)) as usize;
    for (i, &p) in probs.iter().enumerate().skip(first) {
        let (a, b) = (t0 + i as f64 * frame_s, t0 + (i + 1) as f64 * frame_s);
        if a >= to {
            break;
        }
        if p < threshold {
            continue;
        }
        let (a, b) = (a.max(from), b.min(to));
        match out.last_mut() {
            Some(r) if a - r.1 < 1e-9 => r.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

/// The Silero voice-activity model, streaming.
pub(crate) struct Vad {
    model: Silero,
}

impl Vad {
    /// Loads a Silero ggml model (whisper.cpp's VAD format), checking it first so a bad
    /// file gives a clear error.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Ok(Self {
            model: Silero::load(path)?,
        })
    }
}

/// Streaming segmenter: audio in, utterance windows out.
pub(crate) struct Segmenter {
    cfg: SegmentConfig,
    vad: Vad,
    /// Stream time of the first sample.
    origin: Option<f64>,
    /// Audio not yet dropped; `buf[0]` is sample number `dropped` of the stream.
    buf: Vec<f32>,
    dropped: usize,
    /// Samples analysed by the VAD (a multiple of `CHUNK` until the end).
    analysed: usize,
    /// VAD probabilities from chunk number `probs_from` on (not yet decided).
    probs: Vec<f32>,
    probs_from: usize,
    /// Everything before this stream time has been decided.
    committed: f64,
    /// End of the last emitted window (windows never overlap).
    last_end: f64,
    /// Speech still going on at the latest decision.
    open: Option<Span>,
    /// End of the probabilities that decision read, stream time.
    seen: f64,
    since_pass: usize,
    next_seq: u64,
}

impl Segmenter {
    /// Creates a segmenter around a loaded VAD.
    pub fn new(cfg: SegmentConfig, vad: Vad) -> Self {
        let cap = ((cfg.max_window_s + cfg.merge_gap_s + 2.0 * cfg.step_s + 2.0)
            * SAMPLE_RATE as f32) as usize;
        let frames = (cap / CHUNK).max(64);
        Self {
            cfg,
            vad,
            origin: None,
            buf: Vec::with_capacity(cap),
            dropped: 0,
            analysed: 0,
            probs: Vec::with_capacity(frames),
            probs_from: 0,
            committed: 0.0,
            last_end: 0.0,
            open: None,
            seen: 0.0,
            since_pass: 0,
            next_seq: 0,
        }
    }

    /// Stream time of sample number `n`.
    fn time_of(&self, n: usize) -> f64 {
        self.origin.unwrap_or(0.0) + n as f64 / SAMPLE_RATE as f64
    }

    fn buf_end(&self) -> f64 {
        self.time_of(self.dropped + self.buf.len())
    }

    /// Appends decoded audio (`pts`: stream time of its first sample) and emits the
    /// windows that became final into `out`.
    pub fn push(
        &mut self,
        pts: Option<f64>,
        samples: &[f32],
        out: &mut Vec<Window>,
    ) -> Result<(), ModelError> {
        match (self.origin, pts) {
            (None, p) => {
                let t = p.unwrap_or(0.0);
                self.origin = Some(t);
                self.committed = t;
                self.last_end = t;
            }
            (Some(_), Some(p)) => {
                let gap = p - self.buf_end();
                if gap > GAP_TOLERANCE_S {
                    let fill = (gap.min(MAX_GAP_FILL_S) * SAMPLE_RATE as f64) as usize;
                    tracing::debug!(gap_s = gap, "audio timestamp gap filled with silence");
                    self.buf.resize(self.buf.len() + fill, 0.0);
                    self.since_pass += fill;
                }
            }
            (Some(_), None) => {}
        }
        self.buf.extend_from_slice(samples);
        self.since_pass += samples.len();
        self.analyse(false);
        if self.since_pass as f64 >= self.cfg.step_s as f64 * SAMPLE_RATE as f64 {
            self.pass(false, out);
        }
        Ok(())
    }

    /// Flushes at end of input: open speech becomes a final window.
    pub fn finish(&mut self, out: &mut Vec<Window>) -> Result<(), ModelError> {
        if self.origin.is_some() {
            self.analyse(true);
            self.pass(true, out);
        }
        Ok(())
    }

    /// Runs the VAD over every whole chunk not analysed yet (and, at the end, over the
    /// last partial one).
    fn analyse(&mut self, last: bool) {
        let end = self.dropped + self.buf.len();
        while self.analysed < end && (last || self.analysed + CHUNK <= end) {
            let from = self.analysed - self.dropped;
            let to = (from + CHUNK).min(self.buf.len());
            self.probs.push(self.vad.model.chunk(&self.buf[from..to]));
            self.analysed += to - from;
        }
    }

    fn index_of(&self, t: f64) -> usize {
        let i = ((t - self.time_of(self.dropped)) * SAMPLE_RATE as f64).round();
        (i.max(0.0) as usize).min(self.buf.len())
    }

    /// Emits the window of `speech` (padded, within `last_end..ceil`).
    fn emit(&mut self, speech: Span, ceil: f64, out: &mut Vec<Window>) {
        let w = windows::window_for(speech, &self.cfg, self.last_end, ceil);
        if w.is_empty() {
            return;
        }
        out.push(self.window_of(speech, w));
        self.next_seq += 1;
        self.last_end = w.end;
    }

    /// The next window: `speech` with its audio over `w`.
    fn window_of(&self, speech: Span, w: Span) -> Window {
        let (a, b) = (self.index_of(w.start), self.index_of(w.end));
        let (from, to) = (speech.start.max(w.start), speech.end.min(w.end));
        let frame_s = CHUNK as f64 / SAMPLE_RATE as f64;
        let t_from = self.time_of(self.probs_from * CHUNK);
        let threshold = self.cfg.threshold;
        let voiced = voiced_runs(&self.probs, (t_from, frame_s), threshold, from, to);
        Window {
            seq: self.next_seq,
            start: from,
            end: to,
            audio_start: w.start,
            audio: self.buf[a..b].to_vec(),
            speaker: None,
            voiced,
        }
    }

    /// The open speech in a pause: its sequence number and speech span, once all the
    /// audio its window would have is here (the padding after it heard). If the pause
    /// lasts `merge_gap_s`, [`Self::tentative_window`] is the window it becomes.
    pub fn tentative(&self) -> Option<(u64, Span)> {
        let span = self.open?;
        let w = windows::window_for(span, &self.cfg, self.last_end, f64::INFINITY);
        // The VAD has seen the padding after the speech end as silence.
        let heard = self.seen >= w.end - 1e-9 && self.seen > span.end;
        (heard && !w.is_empty()).then_some((self.next_seq, span))
    }

    /// The window the open speech becomes if its pause lasts (see [`Self::tentative`]).
    pub fn tentative_window(&self) -> Option<Window> {
        self.tentative()?;
        let span = self.open?;
        let w = windows::window_for(span, &self.cfg, self.last_end, self.buf_end());
        Some(self.window_of(span, w))
    }

    /// Speech still going on, as of the latest decision.
    pub fn open_speech(&self) -> Option<OpenSpeech<'_>> {
        let span = self.open?;
        let (a, b) = (self.index_of(span.start), self.index_of(span.end));
        Some(OpenSpeech {
            span,
            audio: &self.buf[a..b],
            probs: &self.probs,
            probs_t0: self.time_of(self.probs_from * CHUNK),
            threshold: self.cfg.threshold,
        })
    }

    /// Ends the open speech at stream time `at` (a speaker change found inside it): the
    /// speech before `at` becomes a window now, without padding past `at`; the speech
    /// after it goes on as new open speech. Does nothing unless `at` lies inside the open
    /// speech.
    pub fn close_open_at(&mut self, at: f64, out: &mut Vec<Window>) {
        let Some(open) = self.open else {
            return;
        };
        if !(open.start < at && at < open.end) {
            return;
        }
        self.emit(
            Span {
                start: open.start,
                end: at,
            },
            at,
            out,
        );
        self.open = None;
        self.commit(at);
    }

    fn pass(&mut self, last: bool, out: &mut Vec<Window>) {
        self.since_pass = 0;
        let t_from = self.time_of(self.probs_from * CHUNK);
        let cut = windows::cut(&self.probs, t_from, &self.cfg, last);
        self.seen = t_from + self.probs.len() as f64 * (CHUNK as f64 / SAMPLE_RATE as f64);
        let ceil = self.buf_end();
        for speech in &cut.closed {
            self.emit(*speech, ceil, out);
        }
        self.open = cut.open;
        self.commit(if last {
            ceil
        } else {
            cut.committed.max(self.committed)
        });
    }

    /// Everything before stream time `at` is decided: its probabilities and the audio no
    /// window can need any more are dropped.
    fn commit(&mut self, at: f64) {
        self.committed = at;
        let t_from = self.time_of(self.probs_from * CHUNK);
        // Probabilities before the commit point are decided.
        let decided = ((self.committed - t_from) * SAMPLE_RATE as f64 / CHUNK as f64).round();
        let n = (decided.max(0.0) as usize).min(self.probs.len());
        self.probs.drain(..n);
        self.probs_from += n;
        // Keep enough audio before the commit point for padding and widening, and all
        // audio the VAD has not seen.
        let keep_from = self.committed - self.cfg.padding_s as f64 - self.cfg.min_window_s as f64;
        let drop = self
            .index_of(keep_from)
            .min(self.analysed.saturating_sub(self.dropped));
        if drop > 0 {
            self.buf.drain(..drop);
            self.dropped += drop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model file path when setup installed it.
    fn model() -> Option<std::path::PathBuf> {
        let p = crate::assets::default_models_dir().join(crate::assets::VAD_FILE);
        p.is_file().then_some(p)
    }

    /// A decaying 220 Hz tone with noise: speech-like enough to move the model.
    fn signal(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 16000.0;
                let env = if (t % 2.0) < 1.2 { 0.5 } else { 0.0 };
                env * ((2.0 * std::f32::consts::PI * 220.0 * t).sin()
                    + 0.3 * (2.0 * std::f32::consts::PI * 1330.0 * t).sin())
            })
            .collect()
    }

    #[test]
    fn voiced_runs_join_frames_and_clip_to_the_span() {
        let p = [0.1, 0.9, 0.8, 0.2, 0.7, 0.9];
        let voiced = voiced_runs(&p, (10.0, 0.5), 0.5, 10.2, 12.75);
        assert_eq!(voiced, vec![(10.5, 11.5), (12.0, 12.75)]);
        let w = Window {
            seq: 0,
            start: 10.2,
            end: 12.75,
            audio_start: 10.0,
            audio: Vec::new(),
            speaker: None,
            voiced,
        };
        assert!((w.voiced_s(0.4) - 1.75).abs() < 1e-9);
        // A pause shorter than talk_pause_s is talk.
        assert!((w.voiced_s(0.6) - 2.25).abs() < 1e-9);
    }

    /// The Silero model and JFK's 11 s of speech, when setup installed them (in CI a
    /// missing clip is a failure).
    fn model_and_jfk() -> Option<(std::path::PathBuf, Vec<f32>)> {
        let wav = crate::assets::default_models_dir().join("test/jfk.wav");
        let Some(path) = model() else {
            eprintln!("skipped: Silero model not installed (scripts/setup)");
            return None;
        };
        if !wav.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: {} missing",
                wav.display()
            );
            eprintln!("skipped: jfk.wav not installed (scripts/setup)");
            return None;
        }
        let audio = super::silero::tests::wav_samples(&std::fs::read(&wav).unwrap());
        Some((path, audio))
    }

    #[test]
    fn open_speech_can_be_closed_early_at_a_speaker_change() {
        let Some((path, audio)) = model_and_jfk() else {
            return;
        };
        // Long merge gap: JFK's 11 s are one utterance until we end it.
        let cfg = SegmentConfig {
            merge_gap_s: 3.0,
            ..SegmentConfig::default()
        };
        let mut seg = Segmenter::new(cfg, Vad::load(&path).unwrap());
        let (mut out, mut at) = (Vec::new(), None);
        for piece in audio.chunks(1600) {
            seg.push(None, piece, &mut out).unwrap();
            if at.is_none()
                && let Some(open) = seg.open_speech()
                && open.span.len() > 4.0
            {
                let span = open.span;
                assert_eq!(open.audio.len(), (span.len() * 16000.0).round() as usize);
                let voiced = open.voiced();
                assert!(voiced.first().unwrap().0 >= span.start - 1e-9);
                assert!(voiced.last().unwrap().1 <= span.end + 1e-9);
                // Outside the open speech: nothing happens.
                seg.close_open_at(span.end + 1.0, &mut out);
                assert!(out.is_empty());
                let t = span.start + 3.0;
                seg.close_open_at(t, &mut out);
                assert_eq!(out.len(), 1, "the first part goes out at once");
                let w = &out[0];
                assert!((w.end - t).abs() < 1e-9, "{} vs {t}", w.end);
                assert!(w.audio_start + w.audio.len() as f64 / 16000.0 <= t + 1e-3);
                assert!(w.voiced.iter().all(|r| r.1 <= t + 1e-9));
                at = Some(t);
            }
        }
        seg.finish(&mut out).unwrap();
        let t = at.expect("JFK's speech was open for 4 s");
        assert!(out.len() >= 2, "the rest follows");
        assert!(
            out[1..]
                .iter()
                .all(|w| w.start >= t - 1e-9 && w.audio_start >= t - 1e-9)
        );
        assert!(out.windows(2).all(|p| p[1].seq == p[0].seq + 1));
    }

    #[test]
    fn a_tentative_window_is_the_window_its_pause_closes() {
        let Some((path, mut audio)) = model_and_jfk() else {
            return;
        };
        // A pause of 0.35 s inside "fellow Americans" (shorter than merge_gap_s): the
        // window waits for it, and speech resumes.
        audio.splice(32000..32000, std::iter::repeat_n(0.0, 5600));
        let cfg = SegmentConfig::default();
        let mut seg = Segmenter::new(cfg.clone(), Vad::load(&path).unwrap());
        let (mut out, mut tentative, mut matched, mut resumed) = (Vec::new(), None, 0, 0);
        for piece in audio.chunks(800) {
            seg.push(None, piece, &mut out).unwrap();
            for w in out.drain(..) {
                let t: Window = tentative
                    .take()
                    .expect("a window closes after a tentative one");
                assert_eq!((t.seq, t.start, t.end), (w.seq, w.start, w.end));
                assert_eq!(t.audio_start, w.audio_start);
                assert_eq!(t.audio, w.audio, "the same samples");
                assert_eq!(t.voiced, w.voiced);
                matched += 1;
            }
            match (seg.tentative(), &tentative) {
                (Some((seq, span)), Some(t))
                    if (t.seq, t.start, t.end) == (seq, span.start, span.end) => {}
                (Some(_), _) => {
                    resumed += tentative.is_some() as usize;
                    tentative = seg.tentative_window();
                    let t = tentative.as_ref().unwrap();
                    // The padding after the speech has been heard, and no more is taken.
                    let end = t.audio_start + t.audio.len() as f64 / 16000.0;
                    assert!(
                        (end - (t.end + cfg.padding_s as f64)).abs() < 1e-3,
                        "{end} vs {}",
                        t.end
                    );
                }
                (None, _) => {}
            }
        }
        assert!(matched >= 2, "JFK's pauses close windows: {matched}");
        assert!(
            resumed >= 1,
            "a pause shorter than merge_gap_s is thrown away: {resumed}"
        );
    }

    #[test]
    fn streaming_chunks_equal_one_pass() {
        let Some(path) = model() else {
            eprintln!("skipped: Silero model not installed (scripts/setup)");
            return;
        };
        let x = signal(16000 * 3);
        let mut whole = Silero::load(&path).unwrap();
        let a: Vec<f32> = x.chunks(CHUNK).map(|c| whole.chunk(c)).collect();
        // Fed in odd-sized pieces through the segmenter, the same chunks are analysed once.
        let cfg = SegmentConfig::default();
        let mut seg = Segmenter::new(cfg, Vad::load(&path).unwrap());
        let mut out = Vec::new();
        for piece in x.chunks(777) {
            seg.push(None, piece, &mut out).unwrap();
        }
        seg.analyse(true);
        assert_eq!(seg.analysed, x.len());
        assert!(a.iter().all(|p| (0.0..=1.0).contains(p)));
        let tail = &a[a.len() - seg.probs.len()..];
        assert_eq!(tail, &seg.probs[..]);
    }
}
