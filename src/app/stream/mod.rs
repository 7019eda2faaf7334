//! One stream's thread: source -> segmenter -> Whisper -> features. Windows (with their
//! features) go to the router, which runs the shared small model, the cascade and the
//! sinks. Live network sources reconnect with backoff after a failure ([`reconnect`]);
//! stream time continues across the gap ([`clock`]) and the router is told
//! (`interrupted`, `resumed`). Frames wait in a bounded queue ([`frames`]) until their
//! window is processed; they are analysed (faces) while the stream is idle or beside
//! Whisper.

pub(crate) mod clock;
pub(crate) mod frames;
pub(crate) mod reconnect;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::app::Progress;
use crate::app::shutdown::Shutdown;
use crate::config::AsrConfig;
use crate::config::Config;
use crate::diarize::Diarizer;
use crate::diarize::campp::CamPlus;
use crate::error::{Error, SourceError};
use crate::event::{Event, StatusEvent, StreamStatus};
use crate::features::asr::{Asr, WhisperModels};
use crate::features::pitch::PitchBaseline;
use crate::features::text::{EncoderSpec, TextEncoder};
use crate::features::visual::VIS_DIM;
use crate::features::{Extractor, Look, WindowFeatures, window_visual};
use crate::models::pick_model;
use crate::segment::{Segmenter, Vad, Window};
use crate::source::{Input, Next, Source, SourceMsg, VideoFrame};
use clock::{MAX_VIDEO_WAIT_S, StreamClock};
use frames::FrameQueue;
use reconnect::{Reconnect, Retry};

/// A file or URI with no data for this long has stalled (an error).
const FILE_STALL: Duration = Duration::from_secs(60);
/// A live source with no data for this long has stalled (reconnect).
const LIVE_STALL: Duration = Duration::from_secs(10);
/// How often a stream reports how far it has decoded (and its dropped buffers).
const PROGRESS_REPORT: Duration = Duration::from_secs(1);

/// What a stream thread tells the router.
pub(crate) enum ToRouter {
    /// A transcribed window, with features when sentiment is on.
    Window(Box<Windowed>),
    /// A stream notice.
    Status(StatusEvent),
    /// How far decoding has got, and the live buffers dropped so far (every second).
    Progress {
        /// Stream id.
        stream: String,
        /// Stream time decoded, seconds.
        media_s: f64,
        /// Audio buffers dropped.
        audio: u64,
        /// Video frames dropped.
        video: u64,
    },
    /// A reconnect attempt is about to be made.
    Retrying {
        /// Stream id.
        stream: String,
    },
    /// The stream thread ended.
    Done {
        /// Stream index.
        stream: usize,
        /// Why it ended early, if it did.
        error: Option<Error>,
    },
}

/// A window on its way to the router.
pub(crate) struct Windowed {
    /// Stream index.
    pub stream: usize,
    /// The event with transcript, times and ASR/feature latency filled.
    pub event: Event,
    /// Features for the small model (`None`: transcription only, or a language no small
    /// model knows, said in `event.no_sentiment`).
    pub features: Option<WindowFeatures>,
    /// Which small model scores it (index into `Shared::small`).
    pub model: usize,
    /// When this window's processing began.
    pub started: Instant,
}

/// What one stream reads and how.
#[derive(Debug, Clone)]
pub(crate) struct StreamJob {
    /// Stream id in events.
    pub id: String,
    /// What to open.
    pub input: Input,
    /// Whisper model file.
    pub(crate) whisper_model: PathBuf,
    /// Whisper model for English windows (`asr.english_model`).
    pub(crate) english_model: Option<PathBuf>,
    /// Silero VAD file.
    pub(crate) vad_model: PathBuf,
    /// Models folder (features).
    pub models_dir: PathBuf,
    /// The small models (features for them; none: transcription only).
    pub small: Vec<crate::models::SmallSpec>,
    /// Reconnect after failures (live network sources).
    pub reconnect: bool,
    /// Draw a progress bar (files, one stream, terminal).
    pub progress: bool,
    /// Diarize with this CAM++ model (`None`: no diarization).
    pub(crate) speaker_model: Option<PathBuf>,
    /// A recording: learn its speakers in a first pass over the whole file.
    pub(crate) learn_speakers: bool,
}

/// Loaded per-stream models.
pub(crate) struct StreamModels {
    vad: Vad,
    asr: Asr,
    extractor: Option<Extractor>,
    diarizer: Option<Diarizer>,
}

impl StreamModels {
    /// Loads the VAD, a Whisper decoder and (with sentiment) the feature extractor; model
    /// weights come from `shared`, so streams of one process share them.
    pub fn load(job: &StreamJob, cfg: &Config, shared: &mut SharedWeights) -> Result<Self, Error> {
        let asr_cfg = AsrConfig {
            model: job.whisper_model.clone(),
            english_model: job.english_model.clone(),
            ..cfg.asr.clone()
        };
        let diarizer = match &job.speaker_model {
            Some(path) => {
                let net = match &shared.speakers {
                    Some(n) => n.clone(),
                    None => shared
                        .speakers
                        .insert(Arc::new(CamPlus::load(path)?))
                        .clone(),
                };
                Some(Diarizer::new(&cfg.diarize, net))
            }
            None => None,
        };
        Ok(Self {
            diarizer,
            vad: Vad::load(&job.vad_model)?,
            asr: Asr::new(&mut shared.whisper, &asr_cfg)?,
            extractor: if job.small.is_empty() {
                None
            } else {
                let mut texts = Vec::with_capacity(job.small.len());
                for spec in &job.small {
                    texts.push(match shared.text.get(&spec.encoder) {
                        Some(t) => t.clone(),
                        None => shared
                            .text
                            .entry(spec.encoder.clone())
                            .or_insert(Arc::new(spec.encoder.open(&job.models_dir)?))
                            .clone(),
                    });
                }
                Some(Extractor::with_text(
                    &job.models_dir,
                    texts,
                    cfg.source.face_detect_every,
                )?)
            },
        })
    }
}

/// Model weights loaded once per process and shared by its streams: Whisper per file, the
/// text encoder and the speaker embedding network.
#[derive(Default)]
pub(crate) struct SharedWeights {
    whisper: WhisperModels,
    text: std::collections::HashMap<EncoderSpec, Arc<TextEncoder>>,
    speakers: Option<Arc<CamPlus>>,
}

/// Turns utterance windows into transcribed windows with features, in order, once their
/// frames are there.
struct Processor<'a> {
    idx: usize,
    job: &'a StreamJob,
    asr: Asr,
    extractor: Option<Extractor>,
    diarizer: Option<Diarizer>,
    tx: &'a Sender<ToRouter>,
    frames: FrameQueue,
    pending: VecDeque<Window>,
    clock: StreamClock,
    windows: u64,
    /// End of the latest window sent, stream time.
    last_end: f64,
    /// `segment.talk_pause_s`: shorter pauses inside a window count as talk.
    talk_pause_s: f64,
    /// Seconds spent analysing frames since the last window.
    look_s: f64,
    /// Each speaker's reference pitch over the windows sent (key: the diarised speaker;
    /// `None` for an undiarised stream), for speaker-relative models.
    pitch: HashMap<Option<u32>, PitchBaseline>,
    /// A window processed before its pause was confirmed (`segment.process_early`).
    early: Option<(EarlyKey, Windowed)>,
    early_work: EarlyWork,
}

/// What processing windows early came to.
#[derive(Debug, Default)]
struct EarlyWork {
    /// Windows whose early result was sent.
    sent: u64,
    /// Early results thrown away (speech resumed after the pause).
    wasted: u64,
    /// Whisper and feature time of those, seconds.
    wasted_s: f64,
}

impl EarlyWork {
    fn discard(&mut self, early: Option<(EarlyKey, Windowed)>) {
        if let Some((_, w)) = early {
            self.wasted += 1;
            self.wasted_s += (w.event.latency_ms.asr + w.event.latency_ms.features) / 1e3;
        }
    }
}

impl Processor<'_> {
    /// Queues new windows from the segmenter (diarized, and split at speaker changes,
    /// when diarization is on).
    fn enqueue(&mut self, ready: &mut Vec<Window>) {
        match &mut self.diarizer {
            Some(d) => ready
                .drain(..)
                .for_each(|w| d.process(w, &mut self.pending)),
            None => self.pending.extend(ready.drain(..)),
        }
    }

    /// Processes pending windows whose video has arrived (or will never arrive); with
    /// `all`, every pending window.
    fn drain(&mut self, all: bool) -> Result<(), Error> {
        while let Some(w) = self.pending.front() {
            if !(all || self.clock.video_ready(w.end)) {
                break;
            }
            let w = self.pending.pop_front().expect("front exists");
            self.window(&w)?;
            // Frames before the window's end are no longer needed.
            self.frames.release_before(w.end);
        }
        Ok(())
    }

    /// Keeps a video frame for the windows that will need it. A stream with nothing else
    /// to do (it keeps up with its source) analyses its frames at once (faces, when
    /// sentiment is on), so its windows find them done; pixels go back to the source as
    /// soon as their frame is analysed.
    fn frame(&mut self, f: VideoFrame, source: &Source, keep_s: f64) -> Result<(), Error> {
        self.frames.push(f, keep_s);
        let res = match &mut self.extractor {
            Some(x) if source.caught_up() => {
                let t = Instant::now();
                let res = self.frames.analyse(f64::INFINITY, &mut |f| x.look(f));
                self.look_s += t.elapsed().as_secs_f64();
                res
            }
            Some(_) => Ok(()),
            None => self.frames.analyse(f64::INFINITY, &mut |f| {
                Ok(Look {
                    pts: f.pts,
                    values: [0.0; VIS_DIM],
                })
            }),
        };
        self.frames
            .spent()
            .for_each(|buf| source.recycle_frame(buf));
        Ok(res?)
    }

    /// Processes a final window and sends it, or sends what [`Self::early`] made of it.
    fn window(&mut self, w: &Window) -> Result<(), Error> {
        let done = match self.early.take() {
            Some((key, done)) if key == early_key(w) => {
                self.early_work.sent += 1;
                done
            }
            other => {
                self.early_work.discard(other);
                self.process(w)?
            }
        };
        if let Some(f) = &done.features {
            self.pitch.entry(w.speaker).or_default().observe(&f.audio);
        }
        self.windows += 1;
        self.last_end = self.last_end.max(done.event.end);
        let _ = self.tx.send(ToRouter::Window(Box::new(done)));
        Ok(())
    }

    /// Processes the window that speech in a pause becomes if the pause lasts
    /// (`segment.process_early`), so the event can go out as soon as the pause is
    /// confirmed; kept until that window comes (or thrown away when it differs).
    fn process_early(&mut self, seg: &Segmenter) -> Result<(), Error> {
        let Some((seq, span)) = seg.tentative() else {
            return Ok(());
        };
        let key = (seq, span.start, span.end);
        let known = self
            .early
            .as_ref()
            .is_some_and(|(k, _)| (k.0, k.1, k.2) == key);
        if known || !self.pending.is_empty() || !self.clock.video_ready(span.end) {
            return Ok(());
        }
        let Some(w) = seg.tentative_window() else {
            return Ok(());
        };
        let done = self.process(&w)?;
        let old = self.early.replace((early_key(&w), done));
        self.early_work.discard(old);
        Ok(())
    }

    /// Detects the stream's language on its first speech while it is still spoken (live,
    /// caught up: the thread would only wait), once there is enough of it.
    fn detect_ahead(&mut self, seg: &Segmenter) -> Result<(), Error> {
        if !self.asr.needs_language() {
            return Ok(());
        }
        let Some(open) = seg.open_speech() else {
            return Ok(());
        };
        let needed = Asr::DETECT_AHEAD_S * crate::source::SAMPLE_RATE as f64;
        if (open.audio.len() as f64) >= needed {
            self.asr.detect_ahead(open.audio)?;
        }
        Ok(())
    }

    /// Transcribes a window and computes its features.
    fn process(&mut self, w: &Window) -> Result<Windowed, Error> {
        let started = Instant::now();
        // Audio features and the faces of frames not analysed yet do not need the
        // transcript: they are computed on a second thread while Whisper runs.
        let (asr, extractor, frames) = (&mut self.asr, &mut self.extractor, &mut self.frames);
        let (tr, media) = std::thread::scope(|s| {
            let media = extractor.as_mut().map(|x| {
                std::thread::Builder::new()
                    .name("window-media".into())
                    .spawn_scoped(s, move || {
                        let t = Instant::now();
                        let audio = x.audio_features(&w.audio);
                        frames
                            .analyse(w.end, &mut |f| x.look(f))
                            .map(|()| (audio, t.elapsed()))
                    })
                    .expect("spawn a window-media thread")
            });
            let tr = asr.transcribe(&w.audio);
            let media = media.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (tr, media)
        });
        let tr = tr?;
        let mut event = Event::transcribed(&self.job.id, w.seq, round_ms(w.start), round_ms(w.end));
        if let Input::Channel { index, speaker, .. } = &self.job.input {
            event.speaker = Some(speaker.clone());
            event.channel = Some(*index);
        } else if let Some(s) = w.speaker {
            event.speaker = Some(format!("S{s}"));
        }
        event.voiced_s = Some(round_ms(w.voiced_s(self.talk_pause_s)));
        event.text = tr.text;
        event.language = tr.language;
        event.asr_confidence = tr.confidence;
        event.frames = self.frames.count_between(w.start, w.end) as u32;
        event.latency_ms.asr = tr.asr_ms;
        // A window with nothing transcribed has no language to go by (Whisper still names
        // one, often at random for silence): the first model scores its voice and face.
        let heard = (!event.text.trim().is_empty()).then_some(event.language.as_deref());
        let model = pick_model(&self.job.small, heard.flatten());
        // The faces' share includes frames analysed since the previous window.
        let look_s = std::mem::take(&mut self.look_s);
        let features = match (&self.extractor, media.transpose()?, model) {
            (Some(x), Some((audio, audio_time)), Some(m)) => {
                let t = Instant::now();
                let mut f = WindowFeatures {
                    audio,
                    ..WindowFeatures::default()
                };
                // The speaker's windows sent so far and this one (an early result thrown
                // away never counts).
                let mut pitch = self.pitch.get(&w.speaker).copied().unwrap_or_default();
                pitch.observe(&f.audio);
                f.pitch_ref = pitch.reference();
                window_visual(self.frames.gather(w.audio_start, w.end), &mut f.visual);
                x.add_text(&mut f, &event.text, m)?;
                let secs = (audio_time + t.elapsed()).as_secs_f64() + look_s;
                event.latency_ms.features = secs * 1e3;
                Some(f)
            }
            (Some(_), _, None) => {
                event.no_sentiment = Some(no_model_for(&self.job.small, &event.language));
                None
            }
            _ => None,
        };
        Ok(Windowed {
            stream: self.idx,
            event,
            features,
            model: model.unwrap_or(0),
            started,
        })
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

    fn report_progress(&self, source: &Source) {
        let (audio, video) = source.drops();
        let _ = self.tx.send(ToRouter::Progress {
            stream: self.job.id.clone(),
            media_s: self.clock.audio_high,
            audio,
            video,
        });
    }
}

/// What identifies a window's content: its number, speech span, audio start and length.
type EarlyKey = (u64, f64, f64, f64, usize);

fn early_key(w: &Window) -> EarlyKey {
    (w.seq, w.start, w.end, w.audio_start, w.audio.len())
}

/// Why a window in `language` has no verdict: no small model is trained for it.
fn no_model_for(small: &[crate::models::SmallSpec], language: &Option<String>) -> String {
    let known: Vec<&str> = small
        .iter()
        .flat_map(|s| s.languages.iter().map(String::as_str))
        .collect();
    format!(
        "no sentiment model for language {:?} (models here: {}); the transcript is kept; train one with `sentistream train ubm --languages {}`",
        language.as_deref().unwrap_or("?"),
        known.join(", "),
        language.as_deref().unwrap_or("CODE")
    )
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// How one connection ended.
enum Ended {
    /// End of input.
    Eos,
    /// Shutdown.
    Stopped,
    /// The source failed.
    Failed(SourceError),
}

/// One stream's running state across its connections.
struct Runner<'a> {
    p: Processor<'a>,
    seg: Segmenter,
    cfg: &'a Config,
    shutdown: &'a Shutdown,
    reconnect: Reconnect,
    progress: Progress,
    /// Audio arrived on some connection.
    got_any: bool,
}

impl Runner<'_> {
    /// Reads one connection until it ends; `Err` is an error that ends the stream.
    fn read(&mut self, source: &Source) -> Result<(Ended, bool), Error> {
        let mut ready = Vec::new();
        let mut got_audio = false;
        let mut last_report = Instant::now();
        let mut last_data = Instant::now();
        let limit = if source.is_live() || self.p.job.reconnect {
            LIVE_STALL
        } else {
            FILE_STALL
        };
        loop {
            let msg = match source.next(
                self.shutdown.receiver(),
                limit.saturating_sub(last_data.elapsed()),
            ) {
                Next::Stop => return Ok((Ended::Stopped, got_audio)),
                Next::Idle if last_data.elapsed() < limit => continue,
                Next::Idle => {
                    let input = self.p.job.input.name().into();
                    let secs = limit.as_secs();
                    return Ok((
                        Ended::Failed(SourceError::Stalled { input, secs }),
                        got_audio,
                    ));
                }
                Next::Msg(m) => m,
            };
            match msg {
                SourceMsg::Audio { pts, samples } => {
                    last_data = Instant::now();
                    if !got_audio {
                        got_audio = true;
                        self.connected(pts);
                    }
                    let pts = self.p.clock.audio(pts, samples.len());
                    let res = self.seg.push(pts, &samples, &mut ready);
                    source.recycle_audio(samples);
                    res?;
                    // A speaker change inside speech still going on ends its window now.
                    if let Some(d) = &mut self.p.diarizer
                        && let Some(at) = d.watch(self.seg.open_speech())
                    {
                        self.seg.close_open_at(at, &mut ready);
                    }
                }
                SourceMsg::Video(mut f) => {
                    last_data = Instant::now();
                    f.pts = self.p.clock.video(f.pts);
                    let keep = self.cfg.segment.max_window_s as f64 + MAX_VIDEO_WAIT_S;
                    self.p.frame(f, source, keep)?;
                }
                SourceMsg::StreamsKnown { has_video, .. } => {
                    self.p.clock.has_video = Some(has_video)
                }
                SourceMsg::VideoEnd => self.p.clock.video_ended = true,
                SourceMsg::Eos => return Ok((Ended::Eos, got_audio)),
                SourceMsg::Error(e) => return Ok((Ended::Failed(e), got_audio)),
            }
            self.p.enqueue(&mut ready);
            self.p.drain(false)?;
            if self.cfg.segment.process_early && self.p.diarizer.is_none() && source.caught_up() {
                self.p.process_early(&self.seg)?;
            }
            if source.caught_up() {
                self.p.detect_ahead(&self.seg)?;
            }
            if last_report.elapsed() > PROGRESS_REPORT {
                last_report = Instant::now();
                self.p.report_progress(source);
            }
            let done = self
                .p
                .pending
                .front()
                .map_or(self.p.clock.audio_high, |w| w.start);
            self.progress
                .draw(done, || source.duration(), self.p.windows);
        }
    }

    /// The first audio of a connection: the stream started, or resumed.
    fn connected(&mut self, pts: Option<f64>) {
        if let Some(at) = self.p.clock.connected(pts, Instant::now()) {
            self.p.status(StreamStatus::Resumed, at, None);
        } else if !self.reconnect.retrying() {
            self.p
                .status(StreamStatus::Started, pts.unwrap_or(0.0), None);
        }
        self.reconnect.reset();
    }

    /// Whatever a connection ended with, open speech becomes a final window and waiting
    /// windows are processed (frames stop at the gap).
    fn flush(&mut self, source: &Source) -> Result<(), Error> {
        let mut ready = Vec::new();
        self.seg.finish(&mut ready)?;
        self.p.enqueue(&mut ready);
        self.p.clock.video_ended = true;
        self.p.drain(true)?;
        self.p.clock.video_ended = false;
        self.p.report_progress(source);
        Ok(())
    }

    /// After a connection ended: `None` to reconnect, or how the stream ends.
    fn after(&mut self, ended: Ended) -> Option<Option<Error>> {
        let input = || self.p.job.input.name().to_string();
        let reason = match ended {
            Ended::Stopped => return Some(None),
            Ended::Eos if !self.p.job.reconnect && !self.got_any => {
                return Some(Some(SourceError::NoAudio { input: input() }.into()));
            }
            Ended::Eos if !self.p.job.reconnect => return Some(None),
            Ended::Failed(e) if !self.p.job.reconnect => return Some(Some(e.into())),
            // A wrong address or refused credentials: retrying cannot help, unless the
            // stream has already worked (then the server may just be restarting).
            Ended::Failed(e) if e.is_permanent() && !self.got_any => {
                return Some(Some(e.into()));
            }
            Ended::Failed(e) => e.to_string(),
            Ended::Eos => "the source ended".to_string(),
        };
        if self.p.clock.interrupt(Instant::now()) {
            self.p.status(
                StreamStatus::Interrupted,
                self.p.clock.audio_high,
                Some(reason.clone()),
            );
            tracing::warn!(stream = %self.p.job.id, "interrupted: {reason}; reconnecting");
        }
        self.wait_to_retry(reason)
    }

    /// Waits before reopening; `Some` when the stream ends instead (shutdown, or out of
    /// attempts: an error that says why).
    fn wait_to_retry(&mut self, reason: String) -> Option<Option<Error>> {
        let retry = self.reconnect.failed();
        if let (Retry::After(d), n) = (retry, self.reconnect.attempt())
            && (n <= 3 || n.is_multiple_of(10))
        {
            tracing::warn!(stream = %self.p.job.id, "reconnect attempt {n} in {:.1} s ({reason})", d.as_secs_f64());
        }
        if let Retry::After(_) = retry {
            let stream = self.p.job.id.clone();
            let _ = self.p.tx.send(ToRouter::Retrying { stream });
        }
        match retry {
            Retry::After(d) if self.shutdown.sleep(d) => Some(None),
            Retry::After(_) => None,
            Retry::GiveUp { attempts } => {
                tracing::error!(stream = %self.p.job.id, "giving up after {attempts} reconnect attempts");
                Some(Some(
                    SourceError::Aborted {
                        input: self.p.job.input.name().into(),
                        reason: format!(
                            "gave up after {attempts} reconnect attempts; last failure: {reason}"
                        ),
                    }
                    .into(),
                ))
            }
        }
    }

    /// The diarization learning pass over a recording, when asked for.
    fn learn_speakers(&mut self) -> Result<(), Error> {
        if let (Some(d), true) = (&mut self.p.diarizer, self.p.job.learn_speakers) {
            let vad = Vad::load(&self.p.job.vad_model)?;
            d.learn(&self.p.job.input, &self.cfg.source, &self.cfg.segment, vad)?;
        }
        Ok(())
    }

    /// Opens and reads connections until the stream ends; the error that ended it.
    fn run(&mut self) -> Option<Error> {
        loop {
            let source = match Source::open_input(&self.p.job.input, &self.cfg.source) {
                Ok(s) => s,
                Err(e)
                    if self.p.job.reconnect
                        && self.reconnect.retrying()
                        && !self.shutdown.is_set() =>
                {
                    match self.wait_to_retry(e.to_string()) {
                        None => continue,
                        Some(end) => return end,
                    }
                }
                Err(e) => return Some(e.into()),
            };
            let (ended, got_audio) = match self.read(&source) {
                Ok(r) => r,
                Err(e) => return Some(e),
            };
            if let Err(e) = self.flush(&source) {
                return Some(e);
            }
            self.got_any |= got_audio;
            drop(source);
            if let Some(end) = self.after(ended) {
                return end;
            }
        }
    }
}

/// Runs one stream to its end (end of input, shutdown, or a failure that is not retried)
/// and reports `Done` to the router. `models` were loaded by the caller so that model
/// errors surface before any media work.
pub(crate) fn run_stream(
    idx: usize,
    job: StreamJob,
    models: StreamModels,
    cfg: Config,
    tx: Sender<ToRouter>,
    shutdown: Shutdown,
) {
    let StreamModels {
        vad,
        asr,
        extractor,
        diarizer,
    } = models;
    let mut r = Runner {
        p: Processor {
            idx,
            job: &job,
            asr,
            extractor,
            diarizer,
            tx: &tx,
            frames: FrameQueue::default(),
            pending: VecDeque::new(),
            clock: StreamClock::new(!job.reconnect),
            windows: 0,
            last_end: 0.0,
            talk_pause_s: cfg.segment.talk_pause_s as f64,
            look_s: 0.0,
            pitch: HashMap::new(),
            early: None,
            early_work: EarlyWork::default(),
        },
        seg: Segmenter::new(cfg.segment.clone(), vad),
        cfg: &cfg,
        shutdown: &shutdown,
        reconnect: Reconnect::new(cfg.source.reconnect_attempts, cfg.source.reconnect_max_s),
        progress: Progress::new(job.progress),
        got_any: false,
    };
    let error = match r.learn_speakers() {
        Ok(()) => r.run(),
        Err(e) => Some(e),
    };
    r.progress.finish(r.p.clock.audio_high, r.p.windows);
    if let Some(d) = &r.p.diarizer {
        tracing::info!(
            stream = %job.id,
            speakers = d.speakers(),
            segments = d.segments_done,
            "diarization: {} speaker(s); {:.0} ms embedding and labelling in all ({:.1} ms per window)",
            d.speakers(),
            d.busy_s * 1e3,
            d.busy_s * 1e3 / r.p.windows.max(1) as f64
        );
    }
    let early = &r.p.early_work;
    if early.sent + early.wasted > 0 {
        tracing::info!(
            stream = %job.id,
            sent = early.sent,
            wasted = early.wasted,
            "processed early: {} of {} windows went out as their pause was confirmed; {} early results thrown away (speech resumed), {:.1} s of Whisper and features",
            early.sent,
            r.p.windows,
            early.wasted,
            early.wasted_s
        );
    }
    let reason = match (&error, shutdown.is_set()) {
        (Some(e), _) => Some(e.to_string()),
        (None, true) => Some("shutdown".to_string()),
        _ => None,
    };
    // The stream ended no earlier than its last window.
    let at = r.p.clock.audio_high.max(r.p.last_end);
    r.p.status(StreamStatus::Ended, at, reason);
    let _ = tx.send(ToRouter::Done { stream: idx, error });
}
