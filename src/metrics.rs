//! Process metrics in the Prometheus text exposition format (served at `/metrics`) and
//! the health summary (served at `/health`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::event::{Event, Stage, StatusEvent, StreamStatus};

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
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.n += 1;
    }
}

/// Per-stream figures.
#[derive(Debug, Clone)]
pub struct StreamFigures {
    /// State: running, interrupted or ended.
    pub state: StreamStatus,
    /// Windows emitted.
    pub windows: u64,
    /// Stream time of the last emitted window's end, seconds.
    pub media_s: f64,
    /// Wall seconds spent in ASR and features for this stream.
    pub busy_s: f64,
    /// How far the last event trailed the live edge (emission time minus the moment its
    /// utterance ended, on the stream's clock), seconds.
    pub lag_s: f64,
    /// The largest such lag so far, seconds.
    pub max_lag_s: f64,
    /// Wall clock origin: the instant stream time 0 corresponds to (live sources).
    origin: Option<Instant>,
    /// Decoded buffers dropped because analysis fell behind (live sources).
    pub dropped_audio: u64,
    /// Video frames dropped (live sources).
    pub dropped_video: u64,
    /// Interruptions (reconnects).
    pub interruptions: u64,
}

impl Default for StreamFigures {
    fn default() -> Self {
        Self {
            state: StreamStatus::Started,
            windows: 0,
            media_s: 0.0,
            busy_s: 0.0,
            lag_s: 0.0,
            max_lag_s: 0.0,
            origin: None,
            dropped_audio: 0,
            dropped_video: 0,
            interruptions: 0,
        }
    }
}

impl StreamFigures {
    /// Real-time factor: processing time / media time.
    pub fn rtf(&self) -> f64 {
        if self.media_s > 0.0 {
            self.busy_s / self.media_s
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct Inner {
    streams: BTreeMap<String, StreamFigures>,
    stages: BTreeMap<(String, &'static str), u64>,
    escalations: u64,
    fallbacks: BTreeMap<String, u64>,
    latency: BTreeMap<&'static str, Histogram>,
    queue_depth: u64,
    ws_clients: u64,
    ws_lost: u64,
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

fn stage_name(s: Option<Stage>) -> &'static str {
    match s {
        Some(Stage::Ubm) => "ubm",
        Some(Stage::Mllm) => "mllm",
        Some(Stage::Fused) => "fused",
        Some(Stage::CrossVerified) => "cross_verified",
        Some(Stage::UbmFallback) => "ubm_fallback",
        None => "none",
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream's wall-clock origin for lag: stream time `t` was live at `now`.
    pub fn set_origin(&self, stream: &str, t: f64) {
        let mut g = self.lock();
        let f = g.streams.entry(stream.to_string()).or_default();
        f.origin = Instant::now().checked_sub(std::time::Duration::from_secs_f64(t.max(0.0)));
    }

    /// Records an emitted window.
    pub fn window(&self, e: &Event) {
        let mut g = self.lock();
        let f = g.streams.entry(e.stream.clone()).or_default();
        f.windows += 1;
        f.media_s = f.media_s.max(e.end);
        f.busy_s += (e.latency_ms.asr + e.latency_ms.features) / 1e3;
        let lag = f
            .origin
            .map(|o| (o.elapsed().as_secs_f64() - e.end).max(0.0));
        if let Some(l) = lag {
            f.lag_s = l;
            f.max_lag_s = f.max_lag_s.max(l);
        }
        let stage = stage_name(e.stage);
        *g.stages.entry((e.stream.clone(), stage)).or_default() += 1;
        if e.stage.is_some_and(|s| s != Stage::Ubm) {
            g.escalations += 1;
        }
        if let Some(r) = &e.fallback_reason {
            *g.fallbacks.entry(r.clone()).or_default() += 1;
        }
        if let Some(l) = lag {
            g.latency.entry("live_delay").or_default().observe(l);
        }
        let l = &e.latency_ms;
        for (k, v) in [
            ("asr", l.asr),
            ("features", l.features),
            ("ubm", l.ubm),
            ("queue", l.queue),
            ("mllm", l.mllm),
            ("total", l.total),
        ] {
            if (k == "queue" || k == "mllm") && e.stage.is_none_or(|s| s == Stage::Ubm) {
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
        if s.status == StreamStatus::Interrupted {
            f.interruptions += 1;
        }
    }

    /// Sets the dropped-buffer counters of a live stream.
    pub fn dropped(&self, stream: &str, audio: u64, video: u64) {
        let mut g = self.lock();
        let f = g.streams.entry(stream.to_string()).or_default();
        f.dropped_audio = audio;
        f.dropped_video = video;
    }

    /// Sets the large-model queue depth.
    pub fn queue_depth(&self, d: usize) {
        self.lock().queue_depth = d as u64;
    }

    /// Websocket client count and events lost to slow clients.
    pub fn ws(&self, clients: usize, lost_add: u64) {
        let mut g = self.lock();
        g.ws_clients = clients as u64;
        g.ws_lost += lost_add;
    }

    /// Snapshot of one stream.
    pub fn stream(&self, id: &str) -> Option<StreamFigures> {
        self.lock().streams.get(id).cloned()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut s = String::with_capacity(4096);
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(
                s,
                "# HELP sentistream_{name} {help}\n# TYPE sentistream_{name} {kind}"
            );
        };
        head(
            &mut s,
            "uptime_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        let _ = writeln!(
            s,
            "sentistream_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        head(
            &mut s,
            "windows_total",
            "counter",
            "Utterance windows emitted.",
        );
        for (id, f) in &g.streams {
            let _ = writeln!(
                s,
                "sentistream_windows_total{{stream=\"{}\"}} {}",
                esc(id),
                f.windows
            );
        }
        head(
            &mut s,
            "events_total",
            "counter",
            "Window events by final stage.",
        );
        for ((id, stage), n) in &g.stages {
            let _ = writeln!(
                s,
                "sentistream_events_total{{stream=\"{}\",stage=\"{stage}\"}} {n}",
                esc(id)
            );
        }
        head(
            &mut s,
            "escalations_total",
            "counter",
            "Windows escalated to the large model.",
        );
        let _ = writeln!(s, "sentistream_escalations_total {}", g.escalations);
        head(
            &mut s,
            "fallbacks_total",
            "counter",
            "Escalations that fell back to the small model, by reason.",
        );
        for (r, n) in &g.fallbacks {
            let _ = writeln!(
                s,
                "sentistream_fallbacks_total{{reason=\"{}\"}} {n}",
                esc(r)
            );
        }
        head(
            &mut s,
            "queue_depth",
            "gauge",
            "Escalations waiting for a large-model worker.",
        );
        let _ = writeln!(s, "sentistream_queue_depth {}", g.queue_depth);
        head(
            &mut s,
            "stage_latency_seconds",
            "histogram",
            "Time per window in each stage.",
        );
        for (stage, h) in &g.latency {
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    s,
                    "sentistream_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                s,
                "sentistream_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
                h.n
            );
            let _ = writeln!(
                s,
                "sentistream_stage_latency_seconds_sum{{stage=\"{stage}\"}} {:.6}",
                h.sum
            );
            let _ = writeln!(
                s,
                "sentistream_stage_latency_seconds_count{{stage=\"{stage}\"}} {}",
                h.n
            );
        }
        head(
            &mut s,
            "lag_seconds",
            "gauge",
            "How far the last event trailed the live edge of its stream.",
        );
        for (id, f) in &g.streams {
            let _ = writeln!(
                s,
                "sentistream_lag_seconds{{stream=\"{}\"}} {:.3}",
                esc(id),
                f.lag_s
            );
        }
        head(
            &mut s,
            "realtime_factor",
            "gauge",
            "ASR + feature time divided by media time, per stream.",
        );
        for (id, f) in &g.streams {
            let _ = writeln!(
                s,
                "sentistream_realtime_factor{{stream=\"{}\"}} {:.4}",
                esc(id),
                f.rtf()
            );
        }
        head(
            &mut s,
            "dropped_buffers_total",
            "counter",
            "Decoded buffers dropped because analysis fell behind a live source.",
        );
        for (id, f) in &g.streams {
            let _ = writeln!(
                s,
                "sentistream_dropped_buffers_total{{stream=\"{}\",kind=\"audio\"}} {}",
                esc(id),
                f.dropped_audio
            );
            let _ = writeln!(
                s,
                "sentistream_dropped_buffers_total{{stream=\"{}\",kind=\"video\"}} {}",
                esc(id),
                f.dropped_video
            );
        }
        head(
            &mut s,
            "interruptions_total",
            "counter",
            "Times a stream's source failed and was reconnected.",
        );
        for (id, f) in &g.streams {
            let _ = writeln!(
                s,
                "sentistream_interruptions_total{{stream=\"{}\"}} {}",
                esc(id),
                f.interruptions
            );
        }
        head(
            &mut s,
            "websocket_clients",
            "gauge",
            "Connected websocket clients.",
        );
        let _ = writeln!(s, "sentistream_websocket_clients {}", g.ws_clients);
        head(
            &mut s,
            "websocket_lost_total",
            "counter",
            "Events a slow websocket client lost (its oldest).",
        );
        let _ = writeln!(s, "sentistream_websocket_lost_total {}", g.ws_lost);
        s
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

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_and_histograms() {
        let m = Metrics::default();
        let mut e = crate::event::tests_support::event("cam \"1\"");
        e.stage = Some(Stage::UbmFallback);
        e.fallback_reason = Some("queue_full".into());
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
