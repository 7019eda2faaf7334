//! Where events go: JSON lines on stdout, files for recorded calls (JSONL, WebVTT, SRT,
//! written incrementally), and a websocket server with a live page and metrics.

pub mod files;
pub mod stdout;
pub mod websocket;

pub use stdout::JsonlSink;

use crate::error::SinkError;
use crate::event::Output;

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
