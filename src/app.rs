//! Jobs that wire the stages together: `annotate` runs source -> segmenter -> ASR -> sink
//! for one recorded input, as fast as the machine allows.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::cascade::Cascade;
use crate::config::Config;
use crate::error::{Error, Result, SourceError};
use crate::event::{self, Event, Latency, Opinion, Probs, Stage};
use crate::features::Extractor;
use crate::features::asr::Asr;
use crate::models::ubm::{Modalities, Ubm};
use crate::routing::uncertainty::polarity;
use crate::segment::{Segmenter, Vad, Window};
use crate::sinks::JsonlSink;
use crate::source::{Source, SourceMsg, VideoFrame};

/// Windows wait at most this long (seconds of audio) for video frames to catch up. Audio
/// decodes ahead of video by several seconds in files (decoder queues), so this is a
/// safety net for a stalled video stream, not the normal path.
const MAX_VIDEO_WAIT_S: f64 = 30.0;

/// What to annotate and with which models.
#[derive(Debug, Clone)]
pub struct AnnotateJob {
    /// File path or URI.
    pub input: String,
    /// Stream id written in every event.
    pub stream_id: String,
    /// Whisper ggml model file.
    pub whisper_model: PathBuf,
    /// Silero VAD ggml model file.
    pub vad_model: PathBuf,
    /// Draw a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// Models folder (MiniLM, face detector).
    pub models_dir: PathBuf,
    /// Small sentiment model (base path); `None` transcribes only.
    pub ubm: Option<PathBuf>,
    /// Stages 2/3 (large model); `None`: the small model decides alone.
    pub cascade: Option<crate::config::CascadeConfig>,
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Events written.
    pub windows: u64,
    /// Seconds of media processed (stream time).
    pub media_s: f64,
    /// Seconds of speech inside windows.
    pub window_s: f64,
    /// Wall time of the whole job, seconds (model loading included).
    pub wall_s: f64,
    /// Wall time spent inside Whisper, seconds.
    pub asr_s: f64,
    /// Wall time computing audio, face and text features, seconds.
    pub features_s: f64,
    /// Wall time in the small model, seconds.
    pub ubm_s: f64,
    /// Windows escalated to the large model.
    pub escalated: u64,
    /// Windows per final stage: mllm, fused, cross_verified, ubm_fallback.
    pub stages: [u64; 4],
    /// Wall time in large-model passes, seconds.
    pub mllm_s: f64,
    /// Wall time to load the models, seconds.
    pub load_s: f64,
    /// Peak resident memory, KiB (from /proc/self/status).
    pub peak_rss_kib: u64,
}

impl RunStats {
    /// A one-line human summary.
    pub fn summary(&self) -> String {
        let rtf = if self.media_s > 0.0 {
            self.wall_s / self.media_s
        } else {
            0.0
        };
        format!(
            "{} windows, {:.1} s of media ({:.1} s in windows) in {:.2} s wall (models {:.2} s); whisper {:.2} s ({:.0}% of wall); features {:.2} s; ubm {:.3} s; escalated {} (mllm {}, fused {}, cross-verified {}, fallback {}), large model {:.2} s; real-time factor {:.3}; peak RSS {:.0} MiB",
            self.windows,
            self.media_s,
            self.window_s,
            self.wall_s,
            self.load_s,
            self.asr_s,
            if self.wall_s > 0.0 {
                100.0 * self.asr_s / self.wall_s
            } else {
                0.0
            },
            self.features_s,
            self.ubm_s,
            self.escalated,
            self.stages[0],
            self.stages[1],
            self.stages[2],
            self.stages[3],
            self.mllm_s,
            rtf,
            self.peak_rss_kib as f64 / 1024.0
        )
    }
}

/// Peak resident set size of this process in KiB (0 where /proc is unavailable).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    enabled: bool,
    last_draw: Instant,
}

impl Progress {
    fn new(wanted: bool) -> Self {
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            last_draw: Instant::now(),
        }
    }

    fn draw(&mut self, done_s: f64, total_s: Option<f64>, windows: u64, force: bool) {
        if !self.enabled || (!force && self.last_draw.elapsed().as_millis() < 200) {
            return;
        }
        self.last_draw = Instant::now();
        let mut err = std::io::stderr().lock();
        match total_s.filter(|t| *t > 0.0) {
            Some(t) => {
                let frac = (done_s / t).clamp(0.0, 1.0);
                let filled = (frac * 30.0) as usize;
                let _ = write!(
                    err,
                    "\r[{}{}] {:5.1}% {:.1}/{:.1} s, {windows} windows ",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    frac * 100.0,
                    done_s,
                    t
                );
            }
            None => {
                let _ = write!(err, "\r{done_s:.1} s, {windows} windows ");
            }
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.enabled {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// State of one annotate run between source messages.
struct Annotator<'a, W: Write> {
    job: &'a AnnotateJob,
    asr: Asr,
    sentiment: Option<(Extractor, Ubm)>,
    cascade: Option<Cascade>,
    sink: &'a mut JsonlSink<W>,
    sink_error: Option<Error>,
    frames: VecDeque<VideoFrame>,
    pending: VecDeque<Window>,
    has_video: Option<bool>,
    video_ended: bool,
    video_high: f64,
    audio_high: f64,
    stats: RunStats,
}

impl<W: Write> Annotator<'_, W> {
    /// Emits pending windows whose video has arrived (or will never arrive).
    fn drain(&mut self, source: &Source, all: bool) -> Result<()> {
        while let Some(w) = self.pending.front() {
            let video_ready = self.has_video == Some(false)
                || self.video_ended
                || self.video_high >= w.end
                || self.audio_high - w.end > MAX_VIDEO_WAIT_S;
            if !(all || video_ready) {
                break;
            }
            let w = self.pending.pop_front().expect("front exists");
            self.emit(&w)?;
            // Frames before the window's end are no longer needed.
            while self.frames.front().is_some_and(|f| f.pts < w.end) {
                let f = self.frames.pop_front().expect("front exists");
                source.recycle_frame(f.data);
            }
        }
        Ok(())
    }

    fn emit(&mut self, w: &Window) -> Result<()> {
        let t0 = Instant::now();
        let frames = self
            .frames
            .iter()
            .filter(|f| f.pts >= w.start && f.pts < w.end)
            .count() as u32;
        let tr = self.asr.transcribe(&w.audio)?;
        let mut e = Event {
            stream: self.job.stream_id.clone(),
            seq: w.seq,
            start: round_ms(w.start),
            end: round_ms(w.end),
            text: tr.text,
            language: tr.language,
            asr_confidence: tr.confidence,
            frames,
            score: None,
            polarity: None,
            probs: None,
            uncertainty: None,
            stage: None,
            fallback_reason: None,
            ubm: None,
            mllm: None,
            latency_ms: Latency {
                asr: tr.asr_ms,
                ..Latency::default()
            },
            emitted_at_ms: 0,
        };
        let mut routed = None;
        if let Some((extractor, ubm)) = &mut self.sentiment {
            let t1 = Instant::now();
            let in_window = self
                .frames
                .iter()
                .filter(|f| f.pts >= w.audio_start && f.pts < w.end);
            let feats = extractor.extract(&w.audio, in_window, &e.text)?;
            let t2 = Instant::now();
            let p = ubm.predict(&[&feats], Modalities::ALL)[0];
            e.latency_ms.features = (t2 - t1).as_secs_f64() * 1e3;
            e.latency_ms.ubm = t2.elapsed().as_secs_f64() * 1e3;
            e.score = Some(p.score);
            e.polarity = Some(polarity(p.score, ubm.meta.band));
            e.probs = Some(Probs {
                negative: p.probs[0],
                neutral: p.probs[1],
                positive: p.probs[2],
            });
            e.uncertainty = Some(p.uncertainty);
            e.stage = Some(Stage::Ubm);
            e.ubm = Some(Opinion {
                score: p.score,
                uncertainty: p.uncertainty,
            });
            self.stats.features_s += e.latency_ms.features / 1e3;
            self.stats.ubm_s += e.latency_ms.ubm / 1e3;
            routed = Some((p.probs, feats));
        }
        self.stats.asr_s += tr.asr_ms / 1e3;
        let (sink, stats, err) = (&mut *self.sink, &mut self.stats, &mut self.sink_error);
        let mut write = |ev: Event| write_event(sink, stats, err, ev);
        match (&mut self.cascade, routed) {
            (Some(c), Some((probs, feats))) => c.submit(0, e, probs, feats, t0, &mut write),
            _ => {
                e.latency_ms.total = t0.elapsed().as_secs_f64() * 1e3;
                e.emitted_at_ms = event::now_ms();
                write(e);
            }
        }
        match self.sink_error.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Emits everything the cascade still holds (at the end of the input).
    fn flush(&mut self) -> Result<()> {
        if let Some(c) = &mut self.cascade {
            let (sink, stats, err) = (&mut *self.sink, &mut self.stats, &mut self.sink_error);
            c.finish(&mut |ev| write_event(sink, stats, err, ev));
        }
        match self.sink_error.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Writes one event and counts it; the first sink error is kept (later events are still
/// offered to the sink, which fails the same way).
fn write_event<W: Write>(
    sink: &mut JsonlSink<W>,
    stats: &mut RunStats,
    err: &mut Option<Error>,
    e: Event,
) {
    tracing::debug!(stream = %e.stream, seq = e.seq, start = e.start, end = e.end, stage = ?e.stage, "window");
    match e.stage {
        Some(Stage::Mllm) => stats.stages[0] += 1,
        Some(Stage::Fused) => stats.stages[1] += 1,
        Some(Stage::CrossVerified) => stats.stages[2] += 1,
        Some(Stage::UbmFallback) => stats.stages[3] += 1,
        _ => {}
    }
    if e.stage.is_some_and(|s| s != Stage::Ubm) {
        stats.escalated += 1;
    }
    stats.mllm_s += e.latency_ms.mllm / 1e3;
    stats.windows += 1;
    stats.window_s += e.end - e.start;
    if let Err(x) = sink.write(&e)
        && err.is_none()
    {
        *err = Some(x.into());
    }
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// Runs `annotate`: every utterance window of the input becomes one event on `sink`.
///
/// On a decoding error part-way, the windows found so far are still emitted before the
/// error is returned.
pub fn annotate<W: Write>(
    cfg: &Config,
    job: &AnnotateJob,
    sink: &mut JsonlSink<W>,
) -> Result<RunStats> {
    let started = Instant::now();
    // Models first: a bad model file fails before any media work.
    let vad = Vad::load(&job.vad_model)?;
    let asr = Asr::load(&job.whisper_model, &cfg.asr)?;
    let sentiment = match &job.ubm {
        Some(base) => Some((Extractor::load(&job.models_dir)?, Ubm::load(base)?)),
        None => None,
    };
    let cascade = match (&job.cascade, &sentiment) {
        (Some(c), Some((_, ubm))) => Some(crate::cascade::from_config(
            c,
            &job.models_dir,
            &ubm.meta,
            false,
        )?),
        _ => None,
    };
    let load_s = started.elapsed().as_secs_f64();
    let mut segmenter = Segmenter::new(cfg.segment.clone(), vad);
    let source = Source::open(&job.input, &cfg.source)?;
    let mut progress = Progress::new(job.progress);
    let mut a = Annotator {
        job,
        asr,
        sentiment,
        cascade,
        sink,
        sink_error: None,
        frames: VecDeque::new(),
        pending: VecDeque::new(),
        has_video: None,
        video_ended: false,
        video_high: f64::NEG_INFINITY,
        audio_high: 0.0,
        stats: RunStats {
            load_s,
            ..RunStats::default()
        },
    };
    let mut ready = Vec::new();
    let mut failure: Option<Error> = None;
    let mut got_audio = false;
    loop {
        match source.recv() {
            SourceMsg::Audio { pts, samples } => {
                got_audio = true;
                let end = pts.unwrap_or(a.audio_high)
                    + samples.len() as f64 / crate::source::SAMPLE_RATE as f64;
                a.audio_high = a.audio_high.max(end);
                let res = segmenter.push(pts, &samples, &mut ready);
                source.recycle_audio(samples);
                res?;
            }
            SourceMsg::Video(f) => {
                a.video_high = a.video_high.max(f.pts);
                a.frames.push_back(f);
                // Bound memory when no window claims frames for a long time (silence).
                while a.frames.front().is_some_and(|f| {
                    f.pts < a.video_high - cfg.segment.max_window_s as f64 - MAX_VIDEO_WAIT_S
                }) {
                    let f = a.frames.pop_front().expect("front exists");
                    source.recycle_frame(f.data);
                }
            }
            SourceMsg::StreamsKnown { has_video, .. } => a.has_video = Some(has_video),
            SourceMsg::VideoEnd => a.video_ended = true,
            SourceMsg::Eos => break,
            SourceMsg::Error(e) => {
                if !got_audio || matches!(e, SourceError::NoAudio { .. }) {
                    return Err(e.into());
                }
                failure = Some(e.into());
                break;
            }
        }
        a.pending.extend(ready.drain(..));
        a.drain(&source, false)?;
        // Done up to the first window still waiting (decoding runs ahead of the work);
        // the duration is known once the pipeline has prerolled, not at start.
        let done = a.pending.front().map_or(a.audio_high, |w| w.start);
        progress.draw(done, source.duration(), a.stats.windows, false);
    }
    if !got_audio && failure.is_none() {
        return Err(SourceError::NoAudio {
            input: job.input.clone(),
        }
        .into());
    }
    segmenter.finish(&mut ready)?;
    a.pending.extend(ready.drain(..));
    a.drain(&source, true)?;
    a.flush()?;
    progress.draw(a.audio_high, source.duration(), a.stats.windows, true);
    progress.finish();
    drop(source);
    let mut stats = a.stats;
    stats.media_s = a.audio_high;
    stats.wall_s = started.elapsed().as_secs_f64();
    stats.peak_rss_kib = peak_rss_kib();
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
