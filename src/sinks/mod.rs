//! Where events go: JSON lines on stdout, files for recorded calls (JSONL, WebVTT, SRT,
//! written incrementally), and a websocket server with a live page and metrics.

pub mod files;
pub mod kafka;
pub mod stdout;
pub mod websocket;

pub(crate) use stdout::JsonlSink;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::SinksConfig;
use crate::error::SinkError;
use crate::event::Output;
use crate::metrics::Metrics;
use files::{FileSink, Format};
use kafka::KafkaSink;
pub use kafka::KafkaTarget;
use websocket::WsServer;

/// Where events go, as given on the command line (`--sink`, `--out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinkSpec {
    /// JSON lines on stdout.
    Stdout,
    /// The websocket server (live page, /metrics, /health) on `ADDR:PORT`.
    Websocket(String),
    /// A file (`{stream}` in the path: one per stream), in the format its extension names.
    File(PathBuf, Format),
    /// A Kafka topic (`kafka://HOST:PORT[,HOST:PORT]/TOPIC`).
    Kafka(KafkaTarget),
}

impl SinkSpec {
    /// Parses `stdout`, `ws://ADDR:PORT`, `kafka://HOST:PORT/TOPIC`, or
    /// `[file:]PATH.jsonl|.vtt|.srt`.
    pub fn parse(spec: &str) -> Result<Self, SinkError> {
        if spec == "stdout" {
            return Ok(Self::Stdout);
        }
        if let Some(addr) = spec.strip_prefix("ws://") {
            return Ok(Self::Websocket(addr.trim_end_matches('/').to_string()));
        }
        if let Some(rest) = spec.strip_prefix("kafka://") {
            return KafkaTarget::parse(rest)
                .map(Self::Kafka)
                .map_err(|reason| SinkError::Spec {
                    spec: spec.into(),
                    reason,
                });
        }
        let path = PathBuf::from(spec.strip_prefix("file:").unwrap_or(spec));
        match Format::from_path(&path) {
            Some(f) => Ok(Self::File(path, f)),
            None => Err(SinkError::Spec {
                spec: spec.into(),
                reason: "unknown output; use stdout, ws://ADDR:PORT, kafka://HOST:PORT/TOPIC, or a .jsonl, .summary.json, .html, .vtt or .srt file name".into(),
            }),
        }
    }

    /// Opens the sink; a websocket server starts listening here (and says where).
    pub fn open(
        &self,
        cfg: &SinksConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            Self::Stdout => Box::new(JsonlSink::new(std::io::stdout(), "stdout")),
            Self::Websocket(addr) => {
                let server = WsServer::start(addr, cfg, metrics.clone())?;
                eprintln!(
                    "sentistream: live page http://{0}/  websocket ws://{0}/ws  metrics http://{0}/metrics  health http://{0}/health",
                    server.addr
                );
                Box::new(server)
            }
            Self::File(path, format) => Box::new(FileSink::new(path, *format)?),
            Self::Kafka(t) => Box::new(KafkaSink::open(t, &cfg.kafka, metrics.clone())?),
        })
    }
}

/// Opens every sink, in order, behind one [`Fanout`].
pub(crate) fn open_all(
    specs: &[SinkSpec],
    cfg: &SinksConfig,
    metrics: &Arc<Metrics>,
) -> Result<Fanout, SinkError> {
    let mut out = Fanout::default();
    for s in specs {
        out.push(s.open(cfg, metrics)?);
    }
    Ok(out)
}

/// An output. Sinks are called from one thread in event order; a sink that fails is
/// reported and dropped, the others keep receiving.
pub trait Sink: Send {
    /// Name for errors and logs.
    fn name(&self) -> String;
    /// Takes one event or stream notice.
    fn write(&mut self, out: &Output) -> Result<(), SinkError>;
    /// Finishes (closes files, says goodbye to clients).
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Several sinks behind one; the first error of each sink is kept and that sink dropped.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Box<dyn Sink>>,
    /// Errors of dropped sinks.
    pub errors: Vec<SinkError>,
}

impl Fanout {
    /// Adds a sink.
    pub fn push(&mut self, s: Box<dyn Sink>) {
        self.sinks.push(s);
    }
    /// Number of live sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }
    /// Whether there are no live sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
    /// Writes to every sink.
    pub fn write(&mut self, out: &Output) {
        let mut i = 0;
        while i < self.sinks.len() {
            match self.sinks[i].write(out) {
                Ok(()) => i += 1,
                Err(e) => {
                    tracing::error!("output {} failed and is closed: {e}", self.sinks[i].name());
                    let mut s = self.sinks.remove(i);
                    let _ = s.close();
                    self.errors.push(e);
                }
            }
        }
    }
    /// Closes every sink.
    pub fn close(&mut self) {
        for mut s in self.sinks.drain(..) {
            if let Err(e) = s.close() {
                self.errors.push(e);
            }
        }
    }
}
