//! Process metrics in the Prometheus text exposition format (served at `/metrics`) and
//! the health summary (served at `/health`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::time::Instant;

use crate::event::{Event, FallbackReason, Named, Stage, StatusEvent, StreamStatus};

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

impl Histogram {
    /// Counts `v` in its bucket (the first bound at or above it; none past the last).
    fn observe(&mut self, v: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.n += 1;
    }
}

/// Per-stream figures: the one place a run's windows and times are counted (the live
/// `/metrics` and `/health`, and the report printed at the end, all read them).
#[derive(Debug, Clone)]
pub struct StreamFigures {
    /// State: running, interrupted or ended.
    pub state: StreamStatus,
    /// Windows emitted.
    pub windows: u64,
    /// Windows per final stage (indexed by [`Stage::index`]).
    pub(crate) stages: [u64; 5],
    /// Stream time seen, seconds: the last window's end, or where the stream ended.
    pub(crate) media_s: f64,
    /// Seconds of stream time inside windows.
    pub(crate) window_s: f64,
    /// Wall seconds in Whisper.
    pub(crate) asr_s: f64,
    /// Wall seconds computing audio, face and text features.
    pub(crate) features_s: f64,
    /// Wall seconds in the small model.
    pub(crate) ubm_s: f64,
    /// Wall seconds in large-model passes.
    pub(crate) mllm_s: f64,
    /// How far the last event trailed the live edge (emission time minus the moment its
    /// utterance ended, on the stream's clock), seconds.
    pub(crate) lag_s: f64,
    /// The largest such lag so far, seconds.
    pub(crate) max_lag_s: f64,
    /// Wall clock origin: the instant stream time 0 corresponds to (live sources).
    origin: Option<Instant>,
    /// Decoded buffers dropped because analysis fell behind (live sources).
    pub(crate) dropped_audio: u64,
    /// Video frames dropped (live sources).
    pub(crate) dropped_video: u64,
    /// Interruptions (reconnects).
    pub(crate) interruptions: u64,
    /// Reconnect attempts made.
    pub(crate) reconnect_attempts: u64,
}

impl Default for StreamFigures {
    fn default() -> Self {
        Self {
            state: StreamStatus::Started,
            windows: 0,
            stages: [0; 5],
            media_s: 0.0,
            window_s: 0.0,
            asr_s: 0.0,
            features_s: 0.0,
            ubm_s: 0.0,
            mllm_s: 0.0,
            lag_s: 0.0,
            max_lag_s: 0.0,
            origin: None,
            dropped_audio: 0,
            dropped_video: 0,
            interruptions: 0,
            reconnect_attempts: 0,
        }
    }
}

impl StreamFigures {
    /// Real-time factor: ASR + feature time / media time.
    pub(crate) fn rtf(&self) -> f64 {
        if self.media_s > 0.0 {
            (self.asr_s + self.features_s) / self.media_s
        } else {
            0.0
        }
    }

    /// Windows that went to the large model.
    pub fn escalated(&self) -> u64 {
        Stage::ALL
            .iter()
            .filter(|s| s.escalated())
            .map(|s| self.stages[s.index()])
            .sum()
    }
}

#[derive(Debug, Clone, Default)]
struct Inner {
    streams: BTreeMap<String, StreamFigures>,
    fallbacks: BTreeMap<FallbackReason, u64>,
    latency: BTreeMap<&'static str, Histogram>,
    queue_depth: u64,
    ws_clients: u64,
    ws_lost: u64,
    ws_refused: u64,
    bus: Bus,
}

/// Figures of the message-bus (Kafka) sink.
#[derive(Debug, Clone, Default)]
struct Bus {
    /// Events appended to the spool.
    spooled: u64,
    /// Events the broker acknowledged.
    delivered: u64,
    /// Events dropped because the spool was full.
    dropped: u64,
    /// Producer rebuilds after a delivery failure.
    retries: u64,
    /// Events not yet acknowledged.
    pending: u64,
    /// Bytes in the spool.
    spool_bytes: u64,
    /// Seconds from an event's arrival at the sink to the broker's acknowledgement.
    latency: Histogram,
}

/// All metrics of the process; shared by reference (`Arc`).
pub struct Metrics {
    inner: Mutex<Inner>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            started: Instant::now(),
        }
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream's wall-clock origin for lag: stream time `t` was live at `now`.
    pub(crate) fn set_origin(&self, stream: &str, t: f64) {
        let mut g = self.lock();
        let f = g.streams.entry(stream.to_string()).or_default();
        f.origin = Instant::now().checked_sub(std::time::Duration::from_secs_f64(t.max(0.0)));
    }

    /// Records an emitted window.
    pub fn window(&self, e: &Event) {
        let mut g = self.lock();
        let f = g.streams.entry(e.stream.clone()).or_default();
        let l = &e.latency_ms;
        f.windows += 1;
        f.media_s = f.media_s.max(e.end);
        f.window_s += e.end - e.start;
        f.asr_s += l.asr / 1e3;
        f.features_s += l.features / 1e3;
        f.ubm_s += l.ubm / 1e3;
        f.mllm_s += l.mllm / 1e3;
        if let Some(s) = e.stage {
            f.stages[s.index()] += 1;
        }
        let lag = f
            .origin
            .map(|o| (o.elapsed().as_secs_f64() - e.end).max(0.0));
        if let Some(lag) = lag {
            f.lag_s = lag;
            f.max_lag_s = f.max_lag_s.max(lag);
            g.latency.entry("live_delay").or_default().observe(lag);
        }
        if let Some(r) = e.fallback_reason {
            *g.fallbacks.entry(r).or_default() += 1;
        }
        let escalated = e.stage.is_some_and(Stage::escalated);
        for (k, v) in [
            ("asr", l.asr),
            ("features", l.features),
            ("ubm", l.ubm),
            ("queue", l.queue),
            ("mllm", l.mllm),
            ("total", l.total),
        ] {
            if (k == "queue" || k == "mllm") && !escalated {
                continue;
            }
            g.latency.entry(k).or_default().observe(v / 1e3);
        }
    }

    /// Records a stream notice.
    pub fn status(&self, s: &StatusEvent) {
        let mut g = self.lock();
        let f = g.streams.entry(s.stream.clone()).or_default();
        f.state = s.status;
        match s.status {
            StreamStatus::Interrupted => f.interruptions += 1,
            StreamStatus::Ended => f.media_s = f.media_s.max(s.at),
            _ => {}
        }
    }

    /// How far a stream has decoded (stream time) and its dropped-buffer counters.
    pub fn progress(&self, stream: &str, media_s: f64, audio: u64, video: u64) {
        let mut g = self.lock();
        let f = g.streams.entry(stream.to_string()).or_default();
        f.media_s = f.media_s.max(media_s);
        f.dropped_audio = audio;
        f.dropped_video = video;
    }

    /// A stream is about to try reconnecting.
    pub(crate) fn retrying(&self, stream: &str) {
        let mut g = self.lock();
        g.streams
            .entry(stream.to_string())
            .or_default()
            .reconnect_attempts += 1;
    }

    /// Sets the large-model queue depth.
    pub(crate) fn queue_depth(&self, d: usize) {
        self.lock().queue_depth = d as u64;
    }

    /// Websocket client count and events lost to slow clients.
    pub fn ws(&self, clients: usize, lost_add: u64) {
        let mut g = self.lock();
        g.ws_clients = clients as u64;
        g.ws_lost += lost_add;
    }

    /// A websocket client was refused because the server was full.
    pub(crate) fn ws_refused(&self) {
        self.lock().ws_refused += 1;
    }

    /// An event was appended to the bus spool.
    pub(crate) fn bus_spooled(&self) {
        self.lock().bus.spooled += 1;
    }

    /// An event was dropped because the bus spool was full.
    pub(crate) fn bus_dropped(&self) {
        self.lock().bus.dropped += 1;
    }

    /// The broker acknowledged an event `latency_s` after it reached the sink.
    pub(crate) fn bus_delivered(&self, latency_s: f64) {
        let mut g = self.lock();
        g.bus.delivered += 1;
        g.bus.latency.observe(latency_s);
    }

    /// The bus producer was rebuilt after a delivery failure.
    pub(crate) fn bus_retry(&self) {
        self.lock().bus.retries += 1;
    }

    /// Events not yet acknowledged and the spool's size in bytes.
    pub(crate) fn bus_pending(&self, (events, bytes): (u64, u64)) {
        let mut g = self.lock();
        g.bus.pending = events;
        g.bus.spool_bytes = bytes;
    }

    /// Bus figures: spooled, delivered, dropped, pending.
    pub fn bus(&self) -> [u64; 4] {
        let b = &self.lock().bus;
        [b.spooled, b.delivered, b.dropped, b.pending]
    }

    /// Snapshot of one stream.
    pub fn stream(&self, id: &str) -> Option<StreamFigures> {
        self.lock().streams.get(id).cloned()
    }

    /// The Prometheus text exposition (format 0.0.4, written by `prometheus-client`
    /// from a snapshot of these figures).
    pub fn render(&self) -> String {
        let snapshot = Snapshot {
            inner: self.lock().clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
        };
        let mut registry = Registry::with_prefix("sentistream");
        registry.register_collector(Box::new(snapshot));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }

    /// Every stream's figures, by id.
    pub fn streams(&self) -> Vec<(String, StreamFigures)> {
        self.lock()
            .streams
            .iter()
            .map(|(id, f)| (id.clone(), f.clone()))
            .collect()
    }

    /// The health summary (JSON).
    pub fn health(&self) -> serde_json::Value {
        let g = self.lock();
        let streams: serde_json::Map<String, serde_json::Value> = g
            .streams
            .iter()
            .map(|(id, f)| {
                (
                    id.clone(),
                    serde_json::json!({
                        "state": f.state,
                        "windows": f.windows,
                        "media_s": f.media_s,
                        "lag_s": f.lag_s,
                        "max_lag_s": f.max_lag_s,
                        "realtime_factor": f.rtf(),
                        "interruptions": f.interruptions,
                    }),
                )
            })
            .collect();
        let ok = g
            .streams
            .values()
            .all(|f| f.state != StreamStatus::Interrupted);
        serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "streams": streams,
            "queue_depth": g.queue_depth,
        })
    }
}

/// A per-stream family: name, help, and the value read from a stream's figures.
type PerStream<T> = (&'static str, &'static str, fn(&StreamFigures) -> T);

/// The figures at one scrape, encoded by `prometheus-client`.
#[derive(Debug)]
struct Snapshot {
    inner: Inner,
    uptime_s: f64,
}

/// Writes one family with one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One family without labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let kind = metric.metric_type();
    metric.encode(enc.encode_descriptor(name, help, None, kind)?)
}

impl Snapshot {
    /// Per-stream families.
    fn streams(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = &self.inner;
        let by_stream = |v: fn(&StreamFigures) -> f64| {
            g.streams
                .iter()
                .map(move |(id, f)| ([("stream", id.as_str())], ConstGauge::new(v(f))))
        };
        let counted = |v: fn(&StreamFigures) -> u64| {
            g.streams
                .iter()
                .map(move |(id, f)| ([("stream", id.as_str())], ConstCounter::new(v(f))))
        };
        let c = MetricType::Counter;
        let counters: [PerStream<u64>; 3] = [
            ("windows", "Utterance windows emitted.", |f| f.windows),
            (
                "interruptions",
                "Times a stream's source failed and was reconnected.",
                |f| f.interruptions,
            ),
            (
                "reconnect_attempts",
                "Attempts to reopen a failed live source.",
                |f| f.reconnect_attempts,
            ),
        ];
        for (name, help, value) in counters {
            family(enc, name, help, c, counted(value))?;
        }
        let gauges: [PerStream<f64>; 2] = [
            (
                "lag_seconds",
                "How far the last event trailed the live edge of its stream.",
                |f| f.lag_s,
            ),
            (
                "realtime_factor",
                "ASR + feature time divided by media time, per stream.",
                StreamFigures::rtf,
            ),
        ];
        for (name, help, value) in gauges {
            family(enc, name, help, MetricType::Gauge, by_stream(value))?;
        }
        let events = g.streams.iter().flat_map(|(id, f)| {
            Stage::ALL
                .iter()
                .filter(|s| f.stages[s.index()] > 0)
                .map(move |s| {
                    let labels = [("stream", id.as_str()), ("stage", s.name())];
                    (labels, ConstCounter::new(f.stages[s.index()]))
                })
        });
        family(enc, "events", "Window events by final stage.", c, events)?;
        let drops = g.streams.iter().flat_map(|(id, f)| {
            [("audio", f.dropped_audio), ("video", f.dropped_video)].map(|(kind, n)| {
                (
                    [("stream", id.as_str()), ("kind", kind)],
                    ConstCounter::new(n),
                )
            })
        });
        let help = "Decoded buffers dropped because analysis fell behind a live source.";
        family(enc, "dropped_buffers", help, c, drops)
    }

    /// Process-wide families: counters and gauges without labels, fallbacks by reason,
    /// latency histograms by stage.
    fn totals(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = &self.inner;
        let escalated: u64 = g.streams.values().map(StreamFigures::escalated).sum();
        for (name, help, v) in [
            (
                "escalations",
                "Windows escalated to the large model.",
                escalated,
            ),
            (
                "websocket_lost",
                "Events a slow websocket client lost (its oldest).",
                g.ws_lost,
            ),
            (
                "websocket_refused",
                "Connections refused because the server had its maximum of clients.",
                g.ws_refused,
            ),
        ] {
            single(enc, name, help, ConstCounter::new(v))?;
        }
        for (name, help, v) in [
            (
                "queue_depth",
                "Escalations waiting for a large-model worker.",
                g.queue_depth,
            ),
            (
                "websocket_clients",
                "Connected websocket clients.",
                g.ws_clients,
            ),
        ] {
            single(enc, name, help, ConstGauge::new(v as i64))?;
        }
        let fallbacks = g
            .fallbacks
            .iter()
            .map(|(r, n)| ([("reason", r.name())], ConstCounter::new(*n)));
        let help = "Escalations that fell back to the small model, by reason.";
        family(enc, "fallbacks", help, MetricType::Counter, fallbacks)?;
        let help = "Time per window in each stage.";
        let mut m =
            enc.encode_descriptor("stage_latency_seconds", help, None, MetricType::Histogram)?;
        for (stage, h) in &g.latency {
            let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(h.counts).collect();
            m.encode_family(&[("stage", *stage)])?
                .encode_histogram::<NoLabelSet>(h.sum, h.n, &buckets, None)?;
        }
        Ok(())
    }

    /// The message-bus (Kafka) sink's families.
    fn bus(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = &self.inner;
        for (name, help, v) in [
            (
                "bus_spooled",
                "Events appended to the message-bus spool.",
                g.bus.spooled,
            ),
            (
                "bus_delivered",
                "Events the message-bus broker acknowledged.",
                g.bus.delivered,
            ),
            (
                "bus_dropped",
                "Events dropped because the message-bus spool was full.",
                g.bus.dropped,
            ),
            (
                "bus_retries",
                "Producer rebuilds after a message-bus delivery failure.",
                g.bus.retries,
            ),
        ] {
            single(enc, name, help, ConstCounter::new(v))?;
        }
        for (name, help, v) in [
            (
                "bus_pending",
                "Events in the message-bus spool not yet acknowledged.",
                g.bus.pending,
            ),
            (
                "bus_spool_bytes",
                "Bytes in the message-bus spool.",
                g.bus.spool_bytes,
            ),
        ] {
            single(enc, name, help, ConstGauge::new(v as i64))?;
        }
        let h = &g.bus.latency;
        let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(h.counts).collect();
        let help =
            "Seconds from an event reaching the message-bus sink to the broker's acknowledgement.";
        enc.encode_descriptor("bus_delivery_seconds", help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(h.sum, h.n, &buckets, None)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Seconds since the process started.";
        single(
            &mut enc,
            "uptime_seconds",
            help,
            ConstGauge::new(self.uptime_s),
        )?;
        self.streams(&mut enc)?;
        self.totals(&mut enc)?;
        self.bus(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_and_histograms() {
        let m = Metrics::default();
        let mut e = crate::event::tests_support::event("cam \"1\"");
        e.stage = Some(Stage::UbmFallback);
        e.fallback_reason = Some(FallbackReason::QueueFull);
        e.latency_ms.total = 120.0;
        m.window(&e);
        let text = m.render();
        assert!(
            text.contains("sentistream_windows_total{stream=\"cam \\\"1\\\"\"} 1"),
            "{text}"
        );
        assert!(text.contains("sentistream_fallbacks_total{reason=\"queue_full\"} 1"));
        assert!(text.contains("sentistream_escalations_total 1"));
        assert!(
            text.contains(
                "sentistream_stage_latency_seconds_bucket{stage=\"total\",le=\"0.25\"} 1"
            )
        );
        assert!(
            text.contains("sentistream_stage_latency_seconds_bucket{stage=\"total\",le=\"0.1\"} 0")
        );
        assert_eq!(m.health()["status"], "ok");
    }
}
