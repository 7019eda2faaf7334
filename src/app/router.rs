//! The router: the one place events are finished. It owns the small model (shared by all
//! streams), the cascade (shared large-model workers) and the sinks; it turns windows from
//! the stream threads into events, in window order per stream.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::app::stream::{StreamStats, ToRouter, Windowed};
use crate::cascade::Cascade;
use crate::error::Error;
use crate::event::{Event, Opinion, Output, Probs, Stage};
use crate::metrics::Metrics;
use crate::models::ubm::{Modalities, Ubm};
use crate::routing::uncertainty::polarity;
use crate::sinks::Fanout;

/// Figures the router collects.
#[derive(Debug, Clone, Default)]
pub struct RouterStats {
    /// Events written.
    pub windows: u64,
    /// Wall time in the small model, seconds.
    pub ubm_s: f64,
    /// Windows escalated.
    pub escalated: u64,
    /// Windows per final stage: mllm, fused, cross_verified, ubm_fallback.
    pub stages: [u64; 4],
    /// Wall time in large-model passes, seconds.
    pub mllm_s: f64,
}

/// What the router ends with.
pub struct Finished {
    /// Router figures.
    pub stats: RouterStats,
    /// Per stream: figures and the error that ended it early.
    pub streams: Vec<(StreamStats, Option<Error>)>,
    /// Errors of sinks that failed.
    pub sink_errors: Vec<crate::error::SinkError>,
}

/// Shared stages and outputs.
pub struct Router {
    /// Small model.
    pub ubm: Option<Ubm>,
    /// Large-model cascade.
    pub cascade: Option<Cascade>,
    /// Outputs.
    pub sinks: Fanout,
    /// Metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// Write stream notices (started, interrupted, ...) to the sinks.
    pub notices: bool,
    stats: RouterStats,
}

fn emit(sinks: &mut Fanout, metrics: &Metrics, stats: &mut RouterStats, e: Event) {
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
    metrics.window(&e);
    tracing::debug!(stream = %e.stream, seq = e.seq, start = e.start, end = e.end, stage = ?e.stage, "event");
    sinks.write(&Output::Window(e));
}

impl Router {
    /// A router over loaded models and opened sinks.
    pub fn new(
        ubm: Option<Ubm>,
        cascade: Option<Cascade>,
        sinks: Fanout,
        metrics: std::sync::Arc<Metrics>,
        notices: bool,
    ) -> Self {
        Self {
            ubm,
            cascade,
            sinks,
            metrics,
            notices,
            stats: RouterStats::default(),
        }
    }

    fn window(&mut self, w: Windowed) {
        let Windowed {
            stream,
            mut event,
            features,
            started,
        } = w;
        let scored = match (&self.ubm, features) {
            (Some(ubm), Some(feats)) => {
                let t = Instant::now();
                let p = ubm.predict(&[&feats], Modalities::ALL)[0];
                event.latency_ms.ubm = t.elapsed().as_secs_f64() * 1e3;
                self.stats.ubm_s += event.latency_ms.ubm / 1e3;
                event.score = Some(p.score);
                event.polarity = Some(polarity(p.score, ubm.meta.band));
                event.probs = Some(Probs {
                    negative: p.probs[0],
                    neutral: p.probs[1],
                    positive: p.probs[2],
                });
                event.uncertainty = Some(p.uncertainty);
                event.stage = Some(Stage::Ubm);
                event.ubm = Some(Opinion {
                    score: p.score,
                    uncertainty: p.uncertainty,
                });
                Some((p.probs, feats))
            }
            _ => None,
        };
        let (sinks, metrics, stats) = (&mut self.sinks, &*self.metrics, &mut self.stats);
        match (&mut self.cascade, scored) {
            (Some(c), Some((probs, feats))) => {
                c.submit(stream, event, probs, feats, started, &mut |e| {
                    emit(sinks, metrics, stats, e)
                });
                metrics.queue_depth(c.pool().depth());
            }
            _ => emit(sinks, metrics, stats, crate::cascade::stamp(event, started)),
        }
    }

    fn poll(&mut self) {
        let (sinks, metrics, stats) = (&mut self.sinks, &*self.metrics, &mut self.stats);
        if let Some(c) = &mut self.cascade {
            c.poll(false, &mut |e| emit(sinks, metrics, stats, e));
            metrics.queue_depth(c.pool().depth());
        }
    }

    /// Runs until every one of `streams` stream threads has reported `Done`, then
    /// finishes the cascade and closes the sinks.
    pub fn run(mut self, rx: Receiver<ToRouter>, streams: usize) -> Finished {
        let mut done: Vec<Option<(StreamStats, Option<Error>)>> =
            (0..streams).map(|_| None).collect();
        let mut left = streams;
        while left > 0 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(ToRouter::Window(w)) => self.window(*w),
                Ok(ToRouter::Status(s)) => {
                    // A notice follows the windows before it (escalated ones included).
                    self.drain_cascade();
                    if s.status == crate::event::StreamStatus::Started {
                        // Stream time `at` is live now: the origin for lag.
                        self.metrics.set_origin(&s.stream, s.at);
                    }
                    self.metrics.status(&s);
                    if self.notices {
                        self.sinks.write(&Output::Status(s));
                    }
                }
                Ok(ToRouter::Dropped {
                    stream,
                    audio,
                    video,
                }) => self.metrics.dropped(&stream, audio, video),
                Ok(ToRouter::Done {
                    stream,
                    stats,
                    error,
                }) => {
                    if done[stream].is_none() {
                        left -= 1;
                    }
                    done[stream] = Some((stats, error));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.poll();
        }
        self.drain_cascade();
        self.sinks.close();
        Finished {
            stats: self.stats,
            streams: done.into_iter().map(|d| d.unwrap_or_default()).collect(),
            sink_errors: std::mem::take(&mut self.sinks.errors),
        }
    }

    fn drain_cascade(&mut self) {
        let (sinks, metrics, stats) = (&mut self.sinks, &*self.metrics, &mut self.stats);
        if let Some(c) = &mut self.cascade {
            c.finish(&mut |e| emit(sinks, metrics, stats, e));
        }
    }
}
