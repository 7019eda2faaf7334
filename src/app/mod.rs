//! Jobs that wire the stages together: one or more sources (files, URIs, RTSP, webcams,
//! launch descriptions) in one process, live ones on their own clock, recorded ones as
//! fast as the machine allows. One thread per stream (source -> segmenter -> Whisper ->
//! features, [`stream`]) and one router (shared small model, cascade, sinks,
//! [`router`]); one shutdown signal for all of them ([`shutdown`]).

pub(crate) mod router;
pub mod shutdown;
pub mod stream;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assets::ModelFiles;
use crate::config::{CascadeConfig, Config};
use crate::error::{Error, Result};
use crate::event::Stage;
use crate::metrics::{Metrics, StreamFigures};
use crate::models::ubm::Ubm;
use crate::sinks::Fanout;
use router::{Router, SmallModel, StreamEnd};
use shutdown::Shutdown;
use stream::{StreamJob, StreamModels};

/// Figures of a finished run: per stream (from the metrics, the one place windows are
/// counted) and for the whole job.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunReport {
    /// Per stream: id and figures, in the order of the jobs.
    pub streams: Vec<(String, StreamFigures)>,
    /// Wall time of the whole job, seconds (model loading included).
    pub(crate) wall_s: f64,
    /// Wall time to load the models, seconds.
    pub(crate) load_s: f64,
    /// Peak resident memory, KiB (from /proc/self/status).
    pub(crate) peak_rss_kib: u64,
}

impl RunReport {
    fn total(&self, f: impl Fn(&StreamFigures) -> f64) -> f64 {
        self.streams.iter().map(|(_, s)| f(s)).sum()
    }

    /// A one-line human summary.
    pub(crate) fn summary(&self) -> String {
        let media_s = self
            .streams
            .iter()
            .map(|(_, s)| s.media_s)
            .fold(0.0, f64::max);
        let stage = |k: Stage| self.total(|s| s.stages[k.index()] as f64) as u64;
        let asr_s = self.total(|s| s.asr_s);
        let pct = |x: f64, of: f64| if of > 0.0 { 100.0 * x / of } else { 0.0 };
        format!(
            "{} windows, {:.1} s of media ({:.1} s in windows) in {:.2} s wall (models {:.2} s); whisper {:.2} s ({:.0}% of wall); features {:.2} s; ubm {:.3} s; escalated {} (mllm {}, fused {}, cross-verified {}, fallback {}), large model {:.2} s; real-time factor {:.3}; peak RSS {:.0} MiB",
            self.total(|s| s.windows as f64) as u64,
            media_s,
            self.total(|s| s.window_s),
            self.wall_s,
            self.load_s,
            asr_s,
            pct(asr_s, self.wall_s),
            self.total(|s| s.features_s),
            self.total(|s| s.ubm_s),
            self.total(|s| s.escalated() as f64) as u64,
            stage(Stage::Mllm),
            stage(Stage::Fused),
            stage(Stage::CrossVerified),
            stage(Stage::UbmFallback),
            self.total(|s| s.mllm_s),
            if media_s > 0.0 {
                self.wall_s / media_s
            } else {
                0.0
            },
            self.peak_rss_kib as f64 / 1024.0
        )
    }

    /// One line about one stream (`--stats`, and the log).
    pub(crate) fn stream_line(id: &str, f: &StreamFigures) -> String {
        format!(
            "stream {id}: {} windows, {:.1} s of media, real-time factor {:.3}, lag last {:.2} s max {:.2} s, dropped audio/video buffers {}/{}, interruptions {}",
            f.windows,
            f.media_s,
            f.rtf(),
            f.lag_s,
            f.max_lag_s,
            f.dropped_audio,
            f.dropped_video,
            f.interruptions
        )
    }
}

/// Peak resident set size of this process in KiB (0 where /proc is unavailable).
pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Progress bar on stderr (indicatif), drawn only when stderr is a terminal.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    known_length: bool,
    last_draw: Instant,
}

/// Least time between two updates of the bar (drawing is called per decoded buffer).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Progress {
    pub(crate) fn new(wanted: bool) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(5),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .expect("valid progress template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            known_length: false,
            last_draw: Instant::now(),
        }
    }

    /// Media seconds done of `total_s` (asked only when the bar is drawn; `None` while
    /// unknown), windows so far. At most one update per [`PROGRESS_EVERY`].
    pub(crate) fn draw(
        &mut self,
        done_s: f64,
        total_s: impl FnOnce() -> Option<f64>,
        windows: u64,
    ) {
        let Some(bar) = &self.bar else { return };
        if self.last_draw.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_draw = Instant::now();
        if let Some(t) = total_s().filter(|t| *t > 0.0) {
            if !self.known_length {
                self.known_length = true;
                bar.set_style(
                    indicatif::ProgressStyle::with_template("[{bar:30}] {percent:>3}% {msg}")
                        .expect("valid progress template")
                        .progress_chars("#-"),
                );
            }
            bar.set_length((t * 1000.0) as u64);
            bar.set_position((done_s.clamp(0.0, t) * 1000.0) as u64);
            bar.set_message(format!("{done_s:.1}/{t:.1} s, {windows} windows"));
        } else {
            bar.set_message(format!("{done_s:.1} s, {windows} windows"));
        }
    }

    /// Draws the final state and leaves the bar on screen.
    pub(crate) fn finish(&mut self, done_s: f64, windows: u64) {
        if let Some(bar) = self.bar.take() {
            bar.set_message(format!("{done_s:.1} s, {windows} windows"));
            bar.finish();
        }
    }
}

/// Calls split by channel: call id -> its channel streams' ids.
fn channel_calls(jobs: &[StreamJob]) -> Vec<(String, Vec<String>)> {
    let mut calls: Vec<(String, Vec<String>)> = Vec::new();
    for j in jobs {
        if let crate::source::Input::Channel { speaker, .. } = &j.input {
            let call = crate::event::call_of(&j.id, Some(speaker)).to_string();
            match calls.iter_mut().find(|(c, _)| *c == call) {
                Some((_, v)) => v.push(j.id.clone()),
                None => calls.push((call, vec![j.id.clone()])),
            }
        }
    }
    calls
}

/// The router's summaries as the configuration asks.
fn summaries(cfg: &Config, calls: &[(String, Vec<String>)]) -> router::Summaries {
    if !cfg.sinks.summaries {
        return router::Summaries::default();
    }
    calls.iter().fold(
        router::Summaries::new(cfg.sinks.summary_every_s)
            .talk_pause(cfg.segment.talk_pause_s as f64),
        |s, (call, streams)| s.call(call, streams),
    )
}

/// Shared models and settings of a run.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Small models, the first backed by the cascade (empty: transcription only).
    pub small: Vec<crate::models::SmallSpec>,
    /// Cascade settings (`None`: the small models decide alone).
    pub cascade: Option<CascadeConfig>,
    /// Models folder.
    pub models: ModelFiles,
    /// Live run (queue policy `auto` becomes drop_newest).
    pub live: bool,
    /// Write stream notices (started, interrupted, resumed, ended) to the sinks.
    pub notices: bool,
}

/// How one stream ended.
#[derive(Debug)]
pub(crate) struct StreamResult {
    /// Stream id.
    pub id: String,
    /// Why it ended early (an error, or a panic of its thread).
    pub error: Option<Error>,
}

/// The shared stages: the small models (none: transcripts only; in the order of
/// [`Shared::small`]) and the cascade.
type Stages = (Vec<Box<dyn SmallModel>>, Option<crate::cascade::Cascade>);

/// The small models and the cascade, loaded and checked before any media work.
fn load_shared(shared: &Shared) -> Result<Stages> {
    let mut ubms = Vec::with_capacity(shared.small.len());
    for spec in &shared.small {
        ubms.push(Ubm::load(&spec.base)?);
    }
    let cascade = match &shared.cascade {
        Some(c) => {
            let metas: Vec<&crate::models::ubm::UbmMeta> = ubms.iter().map(|u| &u.meta).collect();
            crate::cascade::from_config(c, &shared.models, &metas, shared.live)?
        }
        None => None,
    };
    let small = ubms
        .into_iter()
        .map(|u| Box::new(u) as Box<dyn SmallModel>)
        .collect();
    Ok((small, cascade))
}

/// The message of a thread's panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Joins stream threads and pairs each with how the router saw it end: a thread that
/// panicked is an error naming the panic, never a success.
fn join_streams(
    ids: Vec<String>,
    handles: Vec<std::thread::JoinHandle<()>>,
    ends: Vec<StreamEnd>,
) -> Vec<StreamResult> {
    ids.into_iter()
        .zip(handles)
        .zip(ends)
        .map(|((id, h), end)| {
            let error = match (h.join(), end) {
                (Err(p), _) => Some(Error::StreamPanicked {
                    stream: id.clone(),
                    reason: panic_message(p.as_ref()),
                }),
                (Ok(()), StreamEnd::Failed(e)) => Some(e),
                (Ok(()), StreamEnd::Finished) => None,
                (Ok(()), StreamEnd::Vanished) => Some(Error::StreamPanicked {
                    stream: id.clone(),
                    reason: "its thread ended without a report".into(),
                }),
            };
            StreamResult { id, error }
        })
        .collect()
}

/// What a run works on: the configuration, the streams, the shared stages, where
/// events go, the metrics, and the shutdown trigger.
pub struct Run<'a> {
    /// The configuration (overrides applied).
    pub cfg: &'a Config,
    /// One job per stream.
    pub(crate) jobs: Vec<StreamJob>,
    /// The shared stages.
    pub shared: &'a Shared,
    /// Where events go.
    pub sinks: Fanout,
    /// The process metrics (the run report is read from them).
    pub metrics: Arc<Metrics>,
    /// Stops the streams early: fired by Ctrl-C / SIGTERM, or from inside the run when
    /// every output failed.
    pub stop: Arc<shutdown::Trigger>,
}

/// Runs stream jobs to their end (or until the shutdown), with every event going to the
/// sinks. `loaded` and `stages` were loaded and checked before any media work, so a bad
/// model file fails first; `started` is when loading began (the report's `load_s`).
/// Stream `i` runs `body` with its job and `loaded[i]` (the real body is
/// [`stream::run_stream`] with the stream's models).
pub(crate) fn execute_with<P, F>(
    run: Run,
    (loaded, stages, started): (Vec<P>, Stages, Instant),
    body: F,
) -> Result<(RunReport, Vec<StreamResult>)>
where
    P: Send + 'static,
    F: Fn(usize, StreamJob, P, Config, crossbeam_channel::Sender<stream::ToRouter>, Shutdown)
        + Send
        + Sync
        + Clone
        + 'static,
{
    let (small, cascade) = stages;
    let load_s = started.elapsed().as_secs_f64();
    let (tx, rx) = crossbeam_channel::bounded(256);
    let ids: Vec<String> = run.jobs.iter().map(|j| j.id.clone()).collect();
    let channel_calls = channel_calls(&run.jobs);
    let mut handles = Vec::new();
    for (i, (job, models)) in run.jobs.into_iter().zip(loaded).enumerate() {
        let (tx, shutdown, cfg, body) =
            (tx.clone(), run.stop.watch(), run.cfg.clone(), body.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("stream-{i}"))
                .spawn(move || body(i, job, models, cfg, tx, shutdown))
                .expect("spawn stream thread"),
        );
    }
    drop(tx);
    let metrics = run.metrics;
    let router = Router::new(
        small,
        cascade,
        run.sinks,
        metrics.clone(),
        run.shared.notices,
    )
    .summarizing(summaries(run.cfg, &channel_calls))
    .stopping(run.stop);
    let finished = router.run(rx, ids.len());
    let results = join_streams(ids.clone(), handles, finished.streams);
    let report = RunReport {
        streams: ids
            .iter()
            .map(|id| (id.clone(), metrics.stream(id).unwrap_or_default()))
            .collect(),
        wall_s: started.elapsed().as_secs_f64(),
        load_s,
        peak_rss_kib: peak_rss_kib(),
    };
    if let Some(e) = finished.sink_errors.into_iter().next() {
        return Err(e.into());
    }
    Ok((report, results))
}

/// Runs stream jobs with the real stream threads; each stream's models (VAD, Whisper,
/// features) load before any thread starts.
pub(crate) fn execute(run: Run) -> Result<(RunReport, Vec<StreamResult>)> {
    let started = Instant::now();
    set_torch_threads(run.jobs.len());
    let mut weights = stream::SharedWeights::default();
    let loaded = run
        .jobs
        .iter()
        .map(|j| StreamModels::load(j, run.cfg, &mut weights))
        .collect::<Result<Vec<_>>>()?;
    // The streams hold what they use: a model they all let go of (Whisper's multilingual
    // model once every stream is known to be English) is freed at once.
    drop(weights);
    // The large model is checked here and decoded on its worker's thread while the
    // streams start (`cascade::backend::Deferred`).
    let stages = load_shared(run.shared)?;
    execute_with(run, (loaded, stages, started), stream::run_stream)
}

/// libtorch's pool (small and large model, speaker embeddings) gets a fair share of the
/// cores as Whisper does: with several streams, its default of one thread per core made
/// the threads contend (3 diarized streams: 138 s of CPU against 107 s).
fn set_torch_threads(streams: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tch::set_num_threads((cores / streams.max(1)).max(1) as i32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Input;
    use std::path::PathBuf;
    use stream::ToRouter;

    fn job(id: &str) -> StreamJob {
        StreamJob {
            id: id.into(),
            input: Input::Uri(format!("{id}.mp4")),
            whisper_model: PathBuf::new(),
            english_model: None,
            vad_model: PathBuf::new(),
            models_dir: PathBuf::new(),
            small: Vec::new(),
            reconnect: false,
            progress: false,
            speaker_model: None,
            learn_speakers: false,
        }
    }

    #[test]
    fn a_panicking_stream_is_an_error_that_names_it() {
        let shared = Shared {
            small: Vec::new(),
            cascade: None,
            models: ModelFiles::new("models"),
            live: false,
            notices: false,
        };
        let body = |i: usize,
                    job: StreamJob,
                    _models: (),
                    _cfg: Config,
                    tx: crossbeam_channel::Sender<ToRouter>,
                    _s: Shutdown| {
            if job.id == "cam2" {
                panic!("injected failure in {}", job.id);
            }
            let _ = tx.send(ToRouter::Done {
                stream: i,
                error: None,
            });
        };
        let run = Run {
            cfg: &Config::default(),
            jobs: vec![job("cam1"), job("cam2")],
            shared: &shared,
            sinks: Fanout::default(),
            metrics: Arc::new(Metrics::default()),
            stop: Arc::default(),
        };
        let stages = load_shared(&shared).unwrap();
        let (report, results) =
            execute_with(run, (vec![(); 2], stages, Instant::now()), body).unwrap();
        assert_eq!(report.streams.len(), 2);
        assert!(results[0].error.is_none());
        let e = results[1]
            .error
            .as_ref()
            .expect("the panic is an error")
            .to_string();
        assert!(
            e.contains("cam2") && e.contains("injected failure in cam2"),
            "{e}"
        );
    }
}
