//! Stages 2 and 3 of U-ACS at run time: a bounded queue in front of large-model worker
//! threads, the queue-full and deadline policies, and a per-stream reorder buffer so events
//! leave in window order. The decisions themselves are the pure functions of
//! [`crate::routing::fusion`].

pub mod backend;
pub mod http;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded, unbounded};
use serde::{Deserialize, Serialize};

use crate::assets::ModelFiles;
use crate::config::{BackendKind, CascadeConfig, QueuePolicy};
use crate::error::ModelError;
use crate::event::{Event, FallbackReason, Opinion, Sentiment, Stage};
use crate::features::WindowFeatures;
use crate::models::mllm::{Adapter, AdapterMeta, Answer, Mllm};
use crate::models::ubm::UbmMeta;
use crate::routing::fusion::{Policy, Stage1, Stage2, Verdict, decide, fuse_probs, stage1};
use crate::routing::thresholds::{ThresholdSources, UNCALIBRATED_TAU2};
use crate::routing::uncertainty::polarity;
use crate::routing::verdict::settle;
use backend::Backend;

/// What to do with an escalation when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room (files: nothing escalated is skipped).
    Block,
    /// Emit the window with the small model's verdict, `fallback_reason: "queue_full"`
    /// (live: latency stays bounded).
    DropNewest,
}

/// One escalated window.
pub(crate) struct Escalation {
    /// Stream index.
    pub stream: usize,
    /// Order index within the stream.
    pub order: u64,
    /// Transcript.
    pub text: String,
    /// Features.
    pub features: WindowFeatures,
    /// The small model's verdict.
    pub small: Sentiment,
    /// Give up (fallback) after this instant.
    pub deadline: Option<Instant>,
    /// When it was offered.
    pub offered: Instant,
}

/// How an escalated window was resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolution {
    /// The cascade's final verdict.
    Final {
        /// Stage that produced it.
        stage: Stage,
        /// Final verdict.
        verdict: Verdict,
        /// Final class probabilities.
        probs: [f32; 3],
        /// The large model's first answer.
        first: Answer,
        /// The cross-verification answer, if asked.
        second: Option<Answer>,
    },
    /// The small model's verdict stands; why.
    Fallback(FallbackReason),
}

/// A worker's reply.
pub(crate) struct Resolved {
    /// Stream index.
    pub stream: usize,
    /// Order index.
    pub order: u64,
    /// Outcome.
    pub(crate) resolution: Resolution,
    /// Time waiting in the queue, ms.
    pub(crate) queue_ms: f64,
    /// Time in the large model, ms.
    pub(crate) mllm_ms: f64,
}

/// The stage-2/3 logic a worker runs for one escalation (first pass, decision, maybe a
/// cross-verification pass). `busy` is asked after the first pass: when it says other
/// escalations wait, stage 3's second pass is skipped and the two opinions are fused
/// (as [`Policy::NoCrossVerify`]), so a burst does not queue second passes in front of
/// first ones. Panics in the backend are caught by the caller.
pub(crate) fn resolve(
    backend: &mut dyn Backend,
    job: &Escalation,
    tau2: f32,
    policy: Policy,
    busy: &dyn Fn() -> bool,
) -> Resolution {
    let band = backend.band();
    let first = match backend.judge(&job.text, &job.features, None) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(order = job.order, "large model failed: {e}");
            return Resolution::Fallback(e.reason());
        }
    };
    let (small, large) = (verdict(&job.small), first.verdict());
    let policy = match policy {
        Policy::Full if busy() => {
            tracing::debug!(order = job.order, "others wait: stage 3 skipped, fused");
            Policy::NoCrossVerify
        }
        p => p,
    };
    match decide(small, large, tau2, band, policy) {
        Stage2::AcceptLarge => Resolution::Final {
            stage: Stage::Mllm,
            verdict: large,
            probs: first.probs,
            first,
            second: None,
        },
        Stage2::Fused(v) => Resolution::Final {
            stage: Stage::Fused,
            verdict: v,
            probs: fuse_probs(
                &job.small.probs,
                small.uncertainty,
                &first.probs,
                first.uncertainty,
            ),
            first,
            second: None,
        },
        Stage2::CrossVerify => {
            if job.deadline.is_some_and(|d| Instant::now() > d) {
                return Resolution::Fallback(FallbackReason::Deadline);
            }
            match backend.judge(&job.text, &job.features, Some((small, large))) {
                Ok(second) => Resolution::Final {
                    stage: Stage::CrossVerified,
                    verdict: second.verdict(),
                    probs: second.probs,
                    first,
                    second: Some(second),
                },
                Err(e) => {
                    tracing::warn!(order = job.order, "cross-verification failed: {e}");
                    Resolution::Fallback(e.reason())
                }
            }
        }
    }
}

/// Worker threads behind a bounded queue.
pub struct Pool {
    tx: Option<Sender<Escalation>>,
    done: Receiver<Resolved>,
    handles: Vec<JoinHandle<()>>,
    when_full: WhenFull,
}

impl Pool {
    /// Starts one thread per backend (each owns its model), behind a queue of `queue`.
    pub fn start(
        backends: Vec<Box<dyn Backend>>,
        queue: usize,
        when_full: WhenFull,
        tau2: f32,
        policy: Policy,
    ) -> Self {
        Self::start_replying(backends, queue, when_full, tau2, policy, unbounded())
    }

    /// [`Pool::start`], the workers replying on `replies` (a channel several pools of one
    /// [`Cascade`] share, so the router waits on one channel).
    pub(crate) fn start_replying(
        backends: Vec<Box<dyn Backend>>,
        queue: usize,
        when_full: WhenFull,
        tau2: f32,
        policy: Policy,
        replies: (Sender<Resolved>, Receiver<Resolved>),
    ) -> Self {
        let (tx, rx) = bounded::<Escalation>(queue.max(1));
        let (done_tx, done) = replies;
        let shed = when_full == WhenFull::DropNewest;
        let handles = backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let (rx, done_tx) = (rx.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("mllm-{i}"))
                    .spawn(move || work(b, rx, done_tx, tau2, (policy, shed)))
                    .expect("spawn large-model worker")
            })
            .collect();
        Self {
            tx: Some(tx),
            done,
            handles,
            when_full,
        }
    }

    /// Offers an escalation; when it cannot be queued it is handed back with the reason
    /// (a full queue under `DropNewest`, or no worker left).
    pub(crate) fn offer(&self, job: Escalation) -> Result<(), (Box<Escalation>, FallbackReason)> {
        let Some(tx) = self.tx.as_ref() else {
            return Err((Box::new(job), FallbackReason::WorkerLost));
        };
        match self.when_full {
            WhenFull::Block => tx
                .send(job)
                .map_err(|e| (Box::new(e.into_inner()), FallbackReason::WorkerLost)),
            WhenFull::DropNewest => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) => (Box::new(j), FallbackReason::QueueFull),
                TrySendError::Disconnected(j) => (Box::new(j), FallbackReason::WorkerLost),
            }),
        }
    }

    /// Replies from the workers.
    pub(crate) fn results(&self) -> &Receiver<Resolved> {
        &self.done
    }

    /// Escalations waiting in the queue.
    pub(crate) fn depth(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    /// Closes the queue and waits for the workers to finish what they hold.
    pub fn close(&mut self) {
        self.tx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// One worker thread: answers escalations until the queue closes. Grad mode is per
/// thread, so it is switched off here; a panicking backend answers `worker_panic`.
/// `shed`: skip stage 3 while other escalations wait (live, `drop_newest`: latency
/// first; files keep every second pass, so their results do not depend on timing).
fn work(
    mut backend: Box<dyn Backend>,
    rx: Receiver<Escalation>,
    done: Sender<Resolved>,
    tau2: f32,
    (policy, shed): (Policy, bool),
) {
    let _g = tch::no_grad_guard();
    backend.prepare();
    for job in rx.iter() {
        let started = Instant::now();
        let queue_ms = (started - job.offered).as_secs_f64() * 1e3;
        let resolution = if job.deadline.is_some_and(|d| started > d) {
            Resolution::Fallback(FallbackReason::Deadline)
        } else {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                resolve(backend.as_mut(), &job, tau2, policy, &|| {
                    shed && !rx.is_empty()
                })
            }))
            .unwrap_or(Resolution::Fallback(FallbackReason::WorkerPanic))
        };
        let r = Resolved {
            stream: job.stream,
            order: job.order,
            resolution,
            queue_ms,
            mllm_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        if done.send(r).is_err() {
            break;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

/// Per-stream reorder buffer: items enter in any order with their order index and leave
/// strictly in order.
#[derive(Debug)]
pub(crate) struct Reorder<T> {
    next: u64,
    ready: BTreeMap<u64, T>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self {
            next: 0,
            ready: BTreeMap::new(),
        }
    }
}

impl<T> Reorder<T> {
    /// Adds item `order`.
    pub(crate) fn insert(&mut self, order: u64, item: T) {
        debug_assert!(order >= self.next, "order {order} already emitted");
        self.ready.insert(order, item);
    }
    /// The next item in order, if it has arrived.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let item = self.ready.remove(&self.next)?;
        self.next += 1;
        Some(item)
    }
    /// Items held.
    pub fn len(&self) -> usize {
        self.ready.len()
    }
}

/// Settings of the run-time cascade.
#[derive(Debug, Clone, Copy)]
pub struct CascadeSettings {
    /// Stage-1 threshold.
    pub tau1: f32,
    /// Neutral band.
    pub band: f32,
    /// Per-window deadline from the moment it is offered.
    pub deadline: Option<Duration>,
    /// Most windows held (waiting or reordering) per stream before the caller blocks.
    pub max_held: usize,
}

struct Waiting {
    event: Event,
    small: Sentiment,
    deadline: Option<Instant>,
    started: Instant,
    /// Lane it was escalated in.
    lane: usize,
}

/// One large model of a cascade and the thresholds of the small model it backs.
struct Lane {
    pool: Pool,
    s: CascadeSettings,
}

/// Runs stage 1 for every window and routes escalations through a [`Pool`]; events leave
/// in window order per stream, each exactly once. A cascade has a lane (a large model and
/// its thresholds) per small model it backs: the English model's, and one per
/// `[[cascade.languages]]` entry; a stream's windows keep their order across lanes.
pub struct Cascade {
    lanes: Vec<Lane>,
    /// Small model index -> its lane.
    lane_of: Vec<Option<usize>>,
    /// Most windows a stream holds (waiting or reordering) before the caller blocks.
    max_held: usize,
    waiting: HashMap<(usize, u64), Waiting>,
    order: Vec<Reorder<Event>>,
    next_order: Vec<u64>,
    /// Every worker has gone (their reply channel is disconnected).
    workers_gone: bool,
}

/// The small model's verdict as stages 2 and 3 see it (fusion weights, the large
/// model's second prompt): its uncertainty as the entropy of its probabilities, the unit
/// the large model's uncertainty has, whatever the small model's gate.
fn verdict(s: &Sentiment) -> Verdict {
    Verdict::by_entropy(s.score, &s.probs)
}

/// The small model's verdict as stage 1 sees it: its gate's uncertainty (the unit of
/// its tau1).
fn gate_verdict(s: &Sentiment) -> Verdict {
    Verdict {
        score: s.score,
        uncertainty: s.uncertainty,
    }
}

impl Cascade {
    /// A cascade over a started pool, backing the first small model.
    pub fn new(pool: Pool, s: CascadeSettings) -> Self {
        Self::with_lanes(vec![(pool, s)], vec![Some(0)])
    }

    /// A cascade with several lanes (their pools replying on one shared channel, see
    /// [`Pool::start_replying`]); `lane_of[m]` is the lane backing small model `m`.
    pub(crate) fn with_lanes(
        lanes: Vec<(Pool, CascadeSettings)>,
        lane_of: Vec<Option<usize>>,
    ) -> Self {
        debug_assert!(
            lanes
                .iter()
                .all(|(p, _)| p.results().same_channel(lanes[0].0.results())),
            "the lanes of a cascade share one reply channel"
        );
        Self {
            max_held: lanes.iter().map(|(_, s)| s.max_held).max().unwrap_or(64),
            lanes: lanes
                .into_iter()
                .map(|(pool, s)| Lane { pool, s })
                .collect(),
            lane_of,
            waiting: HashMap::new(),
            order: Vec::new(),
            next_order: Vec::new(),
            workers_gone: false,
        }
    }

    /// Escalations waiting in the queues.
    pub(crate) fn depth(&self) -> usize {
        self.lanes.iter().map(|l| l.pool.depth()).sum()
    }

    /// The lane backing small model `model`, if any.
    pub(crate) fn lane_for(&self, model: usize) -> Option<usize> {
        self.lane_of.get(model).copied().flatten()
    }

    /// The replies of every lane (one channel).
    fn results(&self) -> &Receiver<Resolved> {
        self.lanes[0].pool.results()
    }

    /// The workers' replies, for a caller that waits on several channels at once and
    /// then calls [`Cascade::poll`]; `None` once every worker is gone (the channel would
    /// be ready forever).
    pub(crate) fn replies(&self) -> Option<&Receiver<Resolved>> {
        (!self.workers_gone).then(|| self.results())
    }

    /// The nearest deadline of a window still waiting for the large model.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().filter_map(|w| w.deadline).min()
    }

    fn stream(&mut self, stream: usize) {
        while self.order.len() <= stream {
            self.order.push(Reorder::default());
            self.next_order.push(0);
        }
    }

    /// Takes a transcribed window and the first small model's verdict on it; escalates it
    /// if stage 1 says so. `started` is when its processing began. Ready events are passed
    /// to `emit` in order.
    pub fn submit(
        &mut self,
        stream: usize,
        event: Event,
        small: Sentiment,
        features: WindowFeatures,
        started: Instant,
        emit: &mut dyn FnMut(Event),
    ) {
        self.submit_to(0, stream, event, small, features, started, emit);
    }

    /// [`Cascade::submit`] for the small model that `lane` backs (see [`Cascade::lane_for`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit_to(
        &mut self,
        lane: usize,
        stream: usize,
        mut event: Event,
        small: Sentiment,
        features: WindowFeatures,
        started: Instant,
        emit: &mut dyn FnMut(Event),
    ) {
        let order = self.next_slot(stream);
        let s = self.lanes[lane].s;
        if stage1(gate_verdict(&small), s.tau1) == Stage1::Accept {
            event.set_sentiment(&settle(&small, s.band));
            self.order[stream].insert(order, stamp(event, started));
        } else {
            let offered = Instant::now();
            let deadline = s.deadline.map(|d| offered + d);
            let job = Escalation {
                stream,
                order,
                text: event.text.clone(),
                features,
                small,
                deadline,
                offered,
            };
            match self.lanes[lane].pool.offer(job) {
                Ok(()) => {
                    let w = Waiting {
                        event,
                        small,
                        deadline,
                        started,
                        lane,
                    };
                    self.waiting.insert((stream, order), w);
                }
                Err((_, reason)) => {
                    event.set_sentiment(&settle(&small.fallback(reason), s.band));
                    self.order[stream].insert(order, stamp(event, started));
                }
            }
        }
        self.settle_held(stream, emit);
    }

    /// The next place in `stream`'s output order.
    fn next_slot(&mut self, stream: usize) -> u64 {
        self.stream(stream);
        let order = self.next_order[stream];
        self.next_order[stream] += 1;
        order
    }

    /// Emits what is ready, then bounds what is held: waits for the workers while the
    /// stream holds too much.
    fn settle_held(&mut self, stream: usize, emit: &mut dyn FnMut(Event)) {
        self.poll(false, emit);
        while self.order[stream].len() + self.waiting_for(stream) > self.max_held {
            self.poll(true, emit);
        }
    }

    /// Emits a window that does not go through the cascade (decided by a small model the
    /// large model does not back, or without a verdict) in its stream's order.
    pub fn pass(
        &mut self,
        stream: usize,
        event: Event,
        started: Instant,
        emit: &mut dyn FnMut(Event),
    ) {
        let order = self.next_slot(stream);
        self.order[stream].insert(order, stamp(event, started));
        self.settle_held(stream, emit);
    }

    fn waiting_for(&self, stream: usize) -> usize {
        self.waiting.keys().filter(|k| k.0 == stream).count()
    }

    /// Applies worker replies and expired deadlines; emits what is ready. With `block`,
    /// waits for at least one reply (or the nearest deadline) first. When every worker
    /// is gone, what still waits falls back (`worker_lost`) instead of waiting forever.
    pub(crate) fn poll(&mut self, block: bool, emit: &mut dyn FnMut(Event)) {
        if block && !self.waiting.is_empty() {
            let r = match self.next_deadline() {
                Some(d) => self
                    .results()
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                    .map_err(|e| e.is_disconnected()),
                None => self.results().recv().map_err(|_| true),
            };
            match r {
                Ok(r) => self.apply(r),
                Err(true) => self.workers_lost(),
                Err(false) => {}
            }
        }
        loop {
            match self.results().try_recv() {
                Ok(r) => self.apply(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.workers_lost();
                    break;
                }
            }
        }
        let now = Instant::now();
        self.fall_back(FallbackReason::Deadline, |w| {
            w.deadline.is_some_and(|d| now > d)
        });
        for r in &mut self.order {
            while let Some(e) = r.pop() {
                emit(e);
            }
        }
    }

    /// The waiting windows that `pick` selects keep the small model's verdict, with
    /// `reason`.
    fn fall_back(&mut self, reason: FallbackReason, pick: impl Fn(&Waiting) -> bool) {
        let picked: Vec<(usize, u64)> = self
            .waiting
            .iter()
            .filter(|(_, w)| pick(w))
            .map(|(k, _)| *k)
            .collect();
        for (stream, order) in picked {
            let w = self.waiting.remove(&(stream, order)).expect("listed above");
            let mut e = w.event;
            let band = self.lanes[w.lane].s.band;
            e.set_sentiment(&settle(&w.small.fallback(reason), band));
            self.order[stream].insert(order, stamp(e, w.started));
        }
    }

    /// Every worker is gone: nothing waiting will be answered.
    fn workers_lost(&mut self) {
        self.workers_gone = true;
        self.fall_back(FallbackReason::WorkerLost, |_| true);
    }

    /// Applies one worker reply.
    fn apply(&mut self, r: Resolved) {
        // A reply after its deadline fallback was emitted is dropped (already counted).
        let Some(w) = self.waiting.remove(&(r.stream, r.order)) else {
            return;
        };
        let band = self.lanes[w.lane].s.band;
        let mut e = w.event;
        e.latency_ms.queue = round2(r.queue_ms);
        e.latency_ms.mllm = round2(r.mllm_ms);
        let sentiment = match r.resolution {
            Resolution::Final {
                stage,
                verdict,
                probs,
                first,
                second,
            } => {
                let last = second.unwrap_or(first);
                Sentiment {
                    score: verdict.score,
                    polarity: polarity(verdict.score, band),
                    probs,
                    uncertainty: verdict.uncertainty,
                    stage,
                    fallback: None,
                    small: w.small.small,
                    large: Some(Opinion {
                        score: last.score,
                        uncertainty: last.uncertainty,
                    }),
                }
            }
            Resolution::Fallback(reason) => w.small.fallback(reason),
        };
        e.set_sentiment(&settle(&sentiment, band));
        self.order[r.stream].insert(r.order, stamp(e, w.started));
    }

    /// Waits for every escalation (or its deadline) and emits the rest in order.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Event)) {
        while !self.waiting.is_empty() {
            self.poll(true, emit);
        }
        self.poll(false, emit);
    }
}

fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// Stamps an event's total latency and emission time as it leaves.
pub(crate) fn stamp(mut e: Event, started: Instant) -> Event {
    e.latency_ms.total = round2(started.elapsed().as_secs_f64() * 1e3);
    e.emitted_at_ms = crate::event::now_ms();
    e
}

/// Loads one backend per worker as configured (every model is loaded and checked here,
/// at start-up). Remote and TorchScript backends answer on the events' score scale:
/// neutral band `band`, scores in [-`limit`, `limit`].
pub(crate) fn load_backends(
    cfg: &CascadeConfig,
    models: &ModelFiles,
    band: f32,
    limit: f32,
) -> Result<Vec<Box<dyn Backend>>, ModelError> {
    let adapter = models.resolve(&cfg.adapter);
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    for _ in 0..cfg.workers.max(1) {
        backends.push(match cfg.backend {
            BackendKind::Local => {
                // Checked now, decoded on the worker's thread while the streams start.
                let gguf = models.resolve(&cfg.gguf);
                let meta = Mllm::check(&gguf, &adapter)?;
                let adapter = adapter.clone();
                Box::new(backend::Deferred::new(
                    "local",
                    meta.band,
                    Box::new(move || {
                        let model = Mllm::load(&gguf, &adapter)?;
                        Ok(Box::new(backend::LocalBackend::new(model)) as Box<dyn Backend>)
                    }),
                ))
            }
            BackendKind::Torchscript => {
                let p = cfg
                    .torchscript
                    .as_deref()
                    .ok_or_else(|| ModelError::Runtime {
                        name: "cascade".into(),
                        reason: "backend torchscript needs cascade.torchscript".into(),
                    })?;
                Box::new(backend::TorchScriptBackend::load(
                    &models.resolve(p),
                    band,
                    limit,
                )?)
            }
            BackendKind::Openai => Box::new(
                backend::OpenAiBackend::new(
                    &cfg.url,
                    &cfg.remote_model,
                    cfg.remote_api,
                    std::env::var(&cfg.api_key_env).ok(),
                    Duration::from_millis(cfg.timeout_ms),
                    band,
                    limit,
                )
                .map_err(|e| ModelError::Runtime {
                    name: "cascade".into(),
                    reason: e.to_string(),
                })?,
            ),
        });
    }
    Ok(backends)
}

/// tau1 and tau2: fixed in the config, else from the stored calibrations at the
/// configured lambda, else the thresholds stored with the models (tau2 of the local
/// adapter only; other backends get [`UNCALIBRATED_TAU2`] unless set).
fn thresholds(
    cfg: &CascadeConfig,
    models: &ModelFiles,
    ubm: &UbmMeta,
) -> Result<(f32, f32), ModelError> {
    let tau1 = ThresholdSources {
        fixed: cfg.tau1,
        lambda: cfg.lambda,
        calibration: ubm.calibration,
        stored: ubm.tau1,
    }
    .resolve()
    .ok_or_else(|| ModelError::Runtime {
        name: "cascade".into(),
        reason: "the UBM has no tau1; run `sentistream calibrate` or set cascade.enabled = false"
            .into(),
    })?;
    let adapter = models.resolve(&cfg.adapter);
    let adapter_meta: Option<AdapterMeta> = std::fs::read_to_string(Adapter::paths(&adapter).1)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|_| cfg.backend == BackendKind::Local);
    let tau2 = ThresholdSources {
        fixed: cfg.tau2,
        lambda: cfg.lambda,
        calibration: adapter_meta.as_ref().and_then(|m| m.calibration),
        stored: adapter_meta.as_ref().and_then(|m| m.tau2),
    }
    .resolve()
    .unwrap_or(UNCALIBRATED_TAU2);
    Ok((tau1, tau2))
}

/// Builds the configured backends and thresholds for the small models (`metas[m]` of
/// model `m`, each backed as [`CascadeConfig::lane`] says): a ready [`Cascade`], or
/// `None` when no model is backed. `live`: queue policy `auto` becomes `drop_newest`.
pub(crate) fn from_config(
    cfg: &CascadeConfig,
    models: &ModelFiles,
    metas: &[&UbmMeta],
    live: bool,
) -> Result<Option<Cascade>, ModelError> {
    let (tx, rx) = unbounded();
    let mut lanes = Vec::new();
    let mut lane_of = Vec::with_capacity(metas.len());
    for ubm in metas {
        let Some(lane) = cfg.lane(&ubm.languages) else {
            lane_of.push(None);
            continue;
        };
        // Small verdicts reach the cascade on the events' scale ([-3, 3]).
        let band = ubm.event_band();
        let backends = load_backends(&lane, models, band, crate::event::SCORE_LIMIT)?;
        let (tau1, tau2) = thresholds(&lane, models, ubm)?;
        let when_full = match (lane.when_full, live) {
            (QueuePolicy::Block, _) | (QueuePolicy::Auto, false) => WhenFull::Block,
            (QueuePolicy::DropNewest, _) | (QueuePolicy::Auto, true) => WhenFull::DropNewest,
        };
        tracing::info!(
            languages = ?ubm.languages,
            backend = ?lane.backend,
            workers = lane.workers,
            tau1,
            tau2,
            ?when_full,
            "cascade ready"
        );
        let replies = (tx.clone(), rx.clone());
        let pool =
            Pool::start_replying(backends, lane.queue, when_full, tau2, Policy::Full, replies);
        let settings = CascadeSettings {
            tau1,
            band,
            deadline: (lane.deadline_ms > 0).then(|| Duration::from_millis(lane.deadline_ms)),
            max_held: lane.queue + lane.workers + 64,
        };
        lane_of.push(Some(lanes.len()));
        lanes.push((pool, settings));
    }
    Ok((!lanes.is_empty()).then(|| Cascade::with_lanes(lanes, lane_of)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_in_order() {
        let mut r = Reorder::default();
        r.insert(2, "c");
        r.insert(0, "a");
        assert_eq!(r.pop(), Some("a"));
        assert_eq!(r.pop(), None);
        r.insert(1, "b");
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some("b"), Some("c"), None));
        assert_eq!(r.len(), 0);
    }
}
