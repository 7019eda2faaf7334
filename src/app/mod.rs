//! Jobs that wire the stages together. `annotate` runs one recorded input as fast as the
//! machine allows; `run` runs one or more sources (files, URIs, RTSP, webcams, launch
//! descriptions) in one process, live ones on their own clock. Both use the same parts:
//! one thread per stream (source -> segmenter -> Whisper -> features, [`stream`]) and one
//! router (shared small model, cascade, sinks, [`router`]).

pub mod router;
pub mod stream;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::config::{CascadeConfig, Config};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::models::ubm::Ubm;
use crate::sinks::Fanout;
use crate::source::Input;
use router::Router;
use stream::{StreamJob, StreamModels, StreamStats};

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
    pub cascade: Option<CascadeConfig>,
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
pub(crate) struct Progress {
    enabled: bool,
    last_draw: Instant,
}

impl Progress {
    pub(crate) fn new(wanted: bool) -> Self {
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            last_draw: Instant::now(),
        }
    }

    pub(crate) fn draw(&mut self, done_s: f64, total_s: Option<f64>, windows: u64, force: bool) {
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

    pub(crate) fn finish(&mut self) {
        if self.enabled {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Shared models and settings of a run.
pub struct Shared {
    /// Small model base path (`None`: transcription only).
    pub ubm: Option<PathBuf>,
    /// Cascade settings (`None`: the small model decides alone).
    pub cascade: Option<CascadeConfig>,
    /// Models folder.
    pub models_dir: PathBuf,
    /// Live run (queue policy `auto` becomes drop_newest).
    pub live: bool,
    /// Write stream notices (started, interrupted, resumed, ended) to the sinks.
    pub notices: bool,
}

/// Per-stream results of a run.
pub struct StreamResult {
    /// Stream id.
    pub id: String,
    /// Figures.
    pub stats: StreamStats,
    /// Why it ended early.
    pub error: Option<Error>,
}

/// Runs stream jobs to their end (or until `stop`), with every event going to `sinks`.
/// Models load first, so a bad model file fails before any media work.
pub fn execute(
    cfg: &Config,
    jobs: Vec<StreamJob>,
    shared: &Shared,
    sinks: Fanout,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(RunStats, Vec<StreamResult>)> {
    let started = Instant::now();
    let mut loaded = Vec::with_capacity(jobs.len());
    for j in &jobs {
        loaded.push(StreamModels::load(j, cfg)?);
    }
    let ubm = match &shared.ubm {
        Some(base) => Some(Ubm::load(base)?),
        None => None,
    };
    let cascade = match (&shared.cascade, &ubm) {
        (Some(c), Some(u)) => Some(crate::cascade::from_config(
            c,
            &shared.models_dir,
            &u.meta,
            shared.live,
        )?),
        _ => None,
    };
    let load_s = started.elapsed().as_secs_f64();
    let (tx, rx) = crossbeam_channel::bounded(256);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut handles = Vec::new();
    for (i, (job, models)) in jobs.into_iter().zip(loaded).enumerate() {
        let (tx, stop, cfg) = (tx.clone(), stop.clone(), cfg.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("stream-{i}"))
                .spawn(move || stream::run_stream(i, job, cfg, models, tx, stop))
                .expect("spawn stream thread"),
        );
    }
    drop(tx);
    let n = ids.len();
    let finished = Router::new(ubm, cascade, sinks, metrics, shared.notices).run(rx, n);
    for h in handles {
        let _ = h.join();
    }
    let r = finished.stats;
    let mut stats = RunStats {
        windows: r.windows,
        ubm_s: r.ubm_s,
        escalated: r.escalated,
        stages: r.stages,
        mllm_s: r.mllm_s,
        load_s,
        ..RunStats::default()
    };
    let mut results = Vec::with_capacity(n);
    for (id, (s, error)) in ids.into_iter().zip(finished.streams) {
        stats.media_s = stats.media_s.max(s.media_s);
        stats.window_s += s.window_s;
        stats.asr_s += s.asr_s;
        stats.features_s += s.features_s;
        results.push(StreamResult {
            id,
            stats: s,
            error,
        });
    }
    stats.wall_s = started.elapsed().as_secs_f64();
    stats.peak_rss_kib = peak_rss_kib();
    if let Some(e) = finished.sink_errors.into_iter().next() {
        return Err(e.into());
    }
    Ok((stats, results))
}

/// Runs `annotate`: every utterance window of the input becomes one event on `sinks`.
///
/// On a decoding error part-way, the windows found so far are still emitted before the
/// error is returned.
pub fn annotate(cfg: &Config, job: &AnnotateJob, sinks: Fanout) -> Result<RunStats> {
    let stream = StreamJob {
        id: job.stream_id.clone(),
        input: Input::Uri(job.input.clone()),
        whisper_model: job.whisper_model.clone(),
        vad_model: job.vad_model.clone(),
        models_dir: job.models_dir.clone(),
        sentiment: job.ubm.is_some(),
        reconnect: false,
        progress: job.progress,
    };
    let shared = Shared {
        ubm: job.ubm.clone(),
        cascade: job.cascade.clone(),
        models_dir: job.models_dir.clone(),
        live: false,
        notices: false,
    };
    let (stats, mut results) = execute(
        cfg,
        vec![stream],
        &shared,
        sinks,
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    )?;
    match results.pop().and_then(|r| r.error) {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
