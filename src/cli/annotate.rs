//! `annotate`: one recorded file or URI, events on stdout (and files), a progress bar.

use super::Context;
use super::args::AnnotateArgs;
use crate::error::Result;
use crate::plan::{Plan, Sources};
use crate::sinks::SinkSpec;

/// Exit code after Ctrl-C / SIGTERM stopped `annotate` early (128 + SIGINT).
const INTERRUPTED: i32 = 130;

/// Runs `annotate`. On a decoding error part-way, the windows found so far are still
/// emitted before the error is returned; Ctrl-C / SIGTERM finishes the window in hand,
/// closes the outputs valid and exits 130.
pub(super) fn annotate(a: &AnnotateArgs, ctx: Context) -> Result<i32> {
    let mut overrides = a.m.overrides();
    overrides.full_audio_ctx = a.full_audio_ctx;
    let sources = Sources {
        inputs: vec![a.input.clone()],
        ids: a.stream_id.iter().cloned().collect(),
        recorded: true,
        progress: !a.no_progress,
        ..Sources::default()
    };
    let plan = Plan::new(ctx.cfg, ctx.models, &overrides, &sources)?;
    let mut specs = vec![SinkSpec::Stdout];
    for o in &a.outs {
        specs.push(SinkSpec::parse(&o.to_string_lossy())?);
    }
    let (report, mut results, stopped) = super::execute(plan, &specs)?;
    if let Some(e) = results.pop().and_then(|r| r.error) {
        return Err(e);
    }
    if a.stats {
        eprintln!("{}", report.summary());
    } else {
        tracing::info!("{}", report.summary());
    }
    // Stopped early: what was found is written, but the file was not annotated whole.
    Ok(if stopped { INTERRUPTED } else { 0 })
}
