//! JSON lines: one event per line, flushed per event so a consumer (or a crash) sees every
//! finished window.

use std::io::Write;

use crate::error::SinkError;
use crate::event::Event;

/// Writes events as JSON lines to any writer (stdout, a file, a `Vec<u8>` in tests).
pub struct JsonlSink<W: Write> {
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

    /// Writes one event and flushes.
    pub fn write(&mut self, e: &Event) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, e).map_err(|err| SinkError::Io {
            target: self.target.clone(),
            source: err.into(),
        })?;
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

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}
