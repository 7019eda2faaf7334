//! One stream's thread: source -> segmenter -> Whisper -> features. Windows (with their
//! features) go to the router, which runs the shared small model, the cascade and the
//! sinks. Live network sources reconnect with backoff after a failure; stream time
//! continues across the gap and the router is told (`interrupted`, `resumed`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::error::{Error, SourceError};
use crate::event::{Event, Latency, StatusEvent, StreamStatus};
use crate::features::asr::Asr;
use crate::features::{Extractor, WindowFeatures};
use crate::segment::{Segmenter, Vad, Window};
use crate::source::{Input, Source, SourceMsg, VideoFrame};

/// Windows wait at most this long (seconds of audio) for video frames to catch up. Audio
/// decodes ahead of video by several seconds in files (decoder queues), so this is a
/// safety net for a stalled video stream, not the normal path.
const MAX_VIDEO_WAIT_S: f64 = 30.0;
/// How often a stream checks the stop flag while waiting for media.
const POLL: Duration = Duration::from_millis(100);
/// A file or URI with no data for this long has stalled (an error).
const FILE_STALL: Duration = Duration::from_secs(60);
/// A live source with no data for this long has stalled (reconnect).
const LIVE_STALL: Duration = Duration::from_secs(10);

/// What a stream thread tells the router.
pub enum ToRouter {
    /// A transcribed window, with features when sentiment is on.
    Window(Box<Windowed>),
    /// A stream notice.
    Status(StatusEvent),
    /// Live buffers dropped so far.
    Dropped {
        /// Stream id.
        stream: String,
        /// Audio buffers.
        audio: u64,
        /// Video frames.
        video: u64,
    },
    /// The stream thread ended.
    Done {
        /// Stream index.
        stream: usize,
        /// Its figures.
        stats: StreamStats,
        /// Why it ended early, if it did.
        error: Option<Error>,
    },
}

/// A window on its way to the router.
pub struct Windowed {
    /// Stream index.
    pub stream: usize,
    /// The event with transcript, times and ASR/feature latency filled.
    pub event: Event,
    /// Features for the small model (`None`: transcription only).
    pub features: Option<WindowFeatures>,
    /// When this window's processing began.
    pub started: Instant,
}

/// Figures of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    /// Seconds of media (stream time) seen.
    pub media_s: f64,
    /// Seconds inside windows.
    pub window_s: f64,
    /// Windows sent.
    pub windows: u64,
    /// Wall time in Whisper, seconds.
    pub asr_s: f64,
    /// Wall time computing features, seconds.
    pub features_s: f64,
    /// Interruptions (reconnects).
    pub interruptions: u64,
}

/// What one stream reads and how.
#[derive(Debug, Clone)]
pub struct StreamJob {
    /// Stream id in events.
    pub id: String,
    /// What to open.
    pub input: Input,
    /// Whisper model file.
    pub whisper_model: PathBuf,
    /// Silero VAD file.
    pub vad_model: PathBuf,
    /// Models folder (features).
    pub models_dir: PathBuf,
    /// Compute features for the small model.
    pub sentiment: bool,
    /// Reconnect after failures (live network sources).
    pub reconnect: bool,
    /// Draw a progress bar (files, one stream, terminal).
    pub progress: bool,
}

/// Loaded per-stream models.
pub struct StreamModels {
    vad: Vad,
    asr: Asr,
    extractor: Option<Extractor>,
}

impl StreamModels {
    /// Loads the VAD, Whisper and (with sentiment) the feature extractor.
    pub fn load(job: &StreamJob, cfg: &Config) -> Result<Self, Error> {
        Ok(Self {
            vad: Vad::load(&job.vad_model)?,
            asr: Asr::load(&job.whisper_model, &cfg.asr)?,
            extractor: if job.sentiment {
                Some(Extractor::load(&job.models_dir)?)
            } else {
                None
            },
        })
    }
}

struct Processor<'a> {
    idx: usize,
    job: &'a StreamJob,
    asr: Asr,
    extractor: Option<Extractor>,
    tx: &'a Sender<ToRouter>,
    frames: VecDeque<VideoFrame>,
    pending: VecDeque<Window>,
    has_video: Option<bool>,
    video_ended: bool,
    video_high: f64,
    audio_high: f64,
    stats: StreamStats,
}

impl Processor<'_> {
    /// Processes pending windows whose video has arrived (or will never arrive).
    fn drain(&mut self, source: Option<&Source>, all: bool) -> Result<(), Error> {
        while let Some(w) = self.pending.front() {
            let video_ready = self.has_video == Some(false)
                || self.video_ended
                || self.video_high >= w.end
                || self.audio_high - w.end > MAX_VIDEO_WAIT_S;
            if !(all || video_ready) {
                break;
            }
            let w = self.pending.pop_front().expect("front exists");
            self.window(&w)?;
            // Frames before the window's end are no longer needed.
            while self.frames.front().is_some_and(|f| f.pts < w.end) {
                let f = self.frames.pop_front().expect("front exists");
                if let Some(s) = source {
                    s.recycle_frame(f.data);
                }
            }
        }
        Ok(())
    }

    fn window(&mut self, w: &Window) -> Result<(), Error> {
        let started = Instant::now();
        let frames = self
            .frames
            .iter()
            .filter(|f| f.pts >= w.start && f.pts < w.end)
            .count() as u32;
        let tr = self.asr.transcribe(&w.audio)?;
        let mut event = Event {
            stream: self.job.id.clone(),
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
        let features = match &mut self.extractor {
            Some(x) => {
                let t = Instant::now();
                let in_window = self
                    .frames
                    .iter()
                    .filter(|f| f.pts >= w.audio_start && f.pts < w.end);
                let f = x.extract(&w.audio, in_window, &event.text)?;
                event.latency_ms.features = t.elapsed().as_secs_f64() * 1e3;
                self.stats.features_s += event.latency_ms.features / 1e3;
                Some(f)
            }
            None => None,
        };
        self.stats.asr_s += tr.asr_ms / 1e3;
        self.stats.windows += 1;
        self.stats.window_s += w.end - w.start;
        let _ = self.tx.send(ToRouter::Window(Box::new(Windowed {
            stream: self.idx,
            event,
            features,
            started,
        })));
        Ok(())
    }

    fn status(&self, status: StreamStatus, at: f64, reason: Option<String>) {
        let _ = self.tx.send(ToRouter::Status(StatusEvent {
            stream: self.job.id.clone(),
            status,
            at: round_ms(at),
            reason,
            emitted_at_ms: crate::event::now_ms(),
        }));
    }
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// How one connection ended.
enum Ended {
    /// End of input.
    Eos,
    /// Stop requested.
    Stopped,
    /// The source failed.
    Failed(SourceError),
}

/// Runs one stream to its end (end of input, stop flag, or a failure that is not
/// retried) and reports `Done` to the router. `models` were loaded by the caller so that
/// model errors surface before any media work.
pub fn run_stream(
    idx: usize,
    job: StreamJob,
    cfg: Config,
    models: StreamModels,
    tx: Sender<ToRouter>,
    stop: Arc<AtomicBool>,
) {
    let StreamModels {
        vad,
        asr,
        extractor,
    } = models;
    let mut seg = Segmenter::new(cfg.segment.clone(), vad);
    let mut p = Processor {
        idx,
        job: &job,
        asr,
        extractor,
        tx: &tx,
        frames: VecDeque::new(),
        pending: VecDeque::new(),
        has_video: None,
        video_ended: false,
        video_high: f64::NEG_INFINITY,
        audio_high: 0.0,
        stats: StreamStats::default(),
    };
    let mut progress = super::Progress::new(job.progress);
    let mut ready = Vec::new();
    let mut attempt = 0u32;
    // Stream-time offset of the current connection (continues across reconnects).
    let mut offset = 0.0f64;
    let mut error: Option<Error> = None;
    let mut interrupted_at: Option<Instant> = None;
    let mut got_any = false;
    'connections: loop {
        let source = match Source::open_input(&job.input, &cfg.source) {
            Ok(s) => s,
            Err(e) => {
                if job.reconnect && attempt > 0 && !stop.load(Ordering::SeqCst) {
                    attempt += 1;
                    if backoff(attempt, &stop, &cfg) {
                        continue 'connections;
                    }
                    break 'connections;
                }
                error = Some(e.into());
                break 'connections;
            }
        };
        let mut got_audio = false;
        let mut last_drop_report = Instant::now();
        let mut last_data = Instant::now();
        let ended = loop {
            if stop.load(Ordering::SeqCst) {
                break Ended::Stopped;
            }
            let Some(msg) = source.recv_timeout(POLL) else {
                let limit = if source.is_live() || job.reconnect {
                    LIVE_STALL
                } else {
                    FILE_STALL
                };
                if last_data.elapsed() > limit {
                    break Ended::Failed(SourceError::Decode {
                        input: job.input.name().into(),
                        reason: format!("no data for {} s; the input stalled", limit.as_secs()),
                    });
                }
                continue;
            };
            if matches!(msg, SourceMsg::Audio { .. } | SourceMsg::Video(_)) {
                last_data = Instant::now();
            }
            match msg {
                SourceMsg::Audio { pts, samples } => {
                    if !got_audio {
                        got_audio = true;
                        if let Some(t) = interrupted_at.take() {
                            // Stream time continues: the outage's wall duration is kept.
                            offset = p.audio_high + t.elapsed().as_secs_f64() - pts.unwrap_or(0.0);
                            p.status(StreamStatus::Resumed, p.audio_high, None);
                        } else if attempt == 0 {
                            p.status(StreamStatus::Started, pts.unwrap_or(0.0), None);
                        }
                        attempt = 0;
                    }
                    let pts = pts.map(|t| t + offset);
                    let end = pts.unwrap_or(p.audio_high)
                        + samples.len() as f64 / crate::source::SAMPLE_RATE as f64;
                    p.audio_high = p.audio_high.max(end);
                    let res = seg.push(pts, &samples, &mut ready);
                    source.recycle_audio(samples);
                    if let Err(e) = res {
                        error = Some(e.into());
                        break 'connections;
                    }
                }
                SourceMsg::Video(mut f) => {
                    f.pts += offset;
                    p.video_high = p.video_high.max(f.pts);
                    p.frames.push_back(f);
                    // Bound memory when no window claims frames for a long time (silence).
                    while p.frames.front().is_some_and(|f| {
                        f.pts < p.video_high - cfg.segment.max_window_s as f64 - MAX_VIDEO_WAIT_S
                    }) {
                        let f = p.frames.pop_front().expect("front exists");
                        source.recycle_frame(f.data);
                    }
                }
                SourceMsg::StreamsKnown { has_video, .. } => p.has_video = Some(has_video),
                SourceMsg::VideoEnd => p.video_ended = true,
                SourceMsg::Eos => break Ended::Eos,
                SourceMsg::Error(e) => break Ended::Failed(e),
            }
            p.pending.extend(ready.drain(..));
            if let Err(e) = p.drain(Some(&source), false) {
                error = Some(e);
                break 'connections;
            }
            if source.is_live() && last_drop_report.elapsed() > Duration::from_secs(1) {
                last_drop_report = Instant::now();
                let (audio, video) = source.drops();
                let _ = tx.send(ToRouter::Dropped {
                    stream: job.id.clone(),
                    audio,
                    video,
                });
            }
            let done = p.pending.front().map_or(p.audio_high, |w| w.start);
            progress.draw(done, source.duration(), p.stats.windows, false);
        };
        // Whatever this connection ended with, open speech becomes a final window and
        // waiting windows are processed (frames stop at the gap).
        let flushed = seg.finish(&mut ready).map_err(Error::from).and_then(|_| {
            p.pending.extend(ready.drain(..));
            p.video_ended = true;
            p.drain(Some(&source), true)
        });
        if let Err(e) = flushed {
            error = Some(e);
            break 'connections;
        }
        p.video_ended = false;
        got_any |= got_audio;
        let (audio, video) = source.drops();
        let _ = tx.send(ToRouter::Dropped {
            stream: job.id.clone(),
            audio,
            video,
        });
        drop(source);
        match ended {
            Ended::Eos if !job.reconnect && !got_any => {
                error = Some(
                    SourceError::NoAudio {
                        input: job.input.name().into(),
                    }
                    .into(),
                );
                break 'connections;
            }
            Ended::Eos if !job.reconnect => break 'connections,
            Ended::Stopped => break 'connections,
            Ended::Failed(e) if !job.reconnect => {
                error = Some(e.into());
                break 'connections;
            }
            ended => {
                let reason = match ended {
                    Ended::Failed(e) => e.to_string(),
                    _ => "the source ended".to_string(),
                };
                if interrupted_at.is_none() {
                    interrupted_at = Some(Instant::now());
                    p.stats.interruptions += 1;
                    p.status(
                        StreamStatus::Interrupted,
                        p.audio_high,
                        Some(reason.clone()),
                    );
                    tracing::warn!(stream = %job.id, "interrupted: {reason}; reconnecting");
                }
                attempt += 1;
                if !backoff(attempt, &stop, &cfg) {
                    break 'connections;
                }
            }
        }
    }
    progress.draw(p.audio_high, None, p.stats.windows, true);
    progress.finish();
    p.stats.media_s = p.audio_high;
    let reason = match (&error, stop.load(Ordering::SeqCst)) {
        (Some(e), _) => Some(e.to_string()),
        (None, true) => Some("shutdown".to_string()),
        _ => None,
    };
    p.status(StreamStatus::Ended, p.audio_high, reason);
    let _ = tx.send(ToRouter::Done {
        stream: idx,
        stats: p.stats,
        error,
    });
}

/// Sleeps before reconnect `attempt` (0.5 s doubling up to `source.reconnect_max_s`);
/// false when stopping or out of attempts.
fn backoff(attempt: u32, stop: &AtomicBool, cfg: &Config) -> bool {
    let max = cfg.source.reconnect_attempts;
    if max > 0 && attempt > max {
        tracing::error!("giving up after {max} reconnect attempts");
        return false;
    }
    let wait = (0.5 * 2f64.powi(attempt.saturating_sub(1).min(10) as i32))
        .min(cfg.source.reconnect_max_s as f64);
    let until = Instant::now() + Duration::from_secs_f64(wait);
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(POLL);
    }
    !stop.load(Ordering::SeqCst)
}
