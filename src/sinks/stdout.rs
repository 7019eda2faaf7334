//! JSON lines: one event per line, flushed per event so a consumer (or a crash) sees every
//! finished window.

use std::io::Write;

use crate::error::SinkError;
use crate::event::Output;
use crate::sinks::Sink;

/// Writes events as JSON lines to any writer (stdout, a file, a `Vec<u8>` in tests).
pub(crate) struct JsonlSink<W: Write> {
    out: W,
    target: String,
    line: Vec<u8>,
}

impl<W: Write> JsonlSink<W> {
    /// Wraps a writer; `target` names it in errors.
    pub fn new(out: W, target: impl Into<String>) -> Self {
        Self {
            out,
            target: target.into(),
            line: Vec::with_capacity(1024),
        }
    }

    /// Writes any output (window or stream notice) and flushes.
    pub(crate) fn write_output(&mut self, o: &Output) -> Result<(), SinkError> {
        self.line.clear();
        o.write_json(&mut self.line).map_err(|err| SinkError::Io {
            target: self.target.clone(),
            source: err.into(),
        })?;
        self.finish_line()
    }

    fn finish_line(&mut self) -> Result<(), SinkError> {
        self.line.push(b'\n');
        let io = |source| SinkError::Io {
            target: self.target.clone(),
            source,
        };
        self.out.write_all(&self.line).map_err(io)?;
        self.out.flush().map_err(|source| SinkError::Io {
            target: self.target.clone(),
            source,
        })
    }
}

impl<W: Write + Send> Sink for JsonlSink<W> {
    fn name(&self) -> String {
        self.target.clone()
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        self.write_output(out)
    }
    fn close(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io {
            target: self.target.clone(),
            source,
        })
    }
}
