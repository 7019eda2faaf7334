//! Output sinks for events.

pub mod stdout;

pub use stdout::JsonlSink;
