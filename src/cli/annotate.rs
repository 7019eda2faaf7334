//! `annotate`: one recorded file or URI, events on stdout (and files), a progress bar.

use super::Context;
use super::args::AnnotateArgs;
use crate::error::{Error, Result};
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
    if let Some(dir) = &a.out_dir {
        if a.report.is_some() || a.stream_id.is_some() {
            return Err(Error::Usage(
                "--report and --stream-id are for one call; a batch (--out-dir) writes ID.html per call and uses file names as ids".into(),
            ));
        }
        return super::batch::batch(a, &ctx, &overrides, dir);
    }
    let input = match &a.inputs[..] {
        [one] if std::path::Path::new(one).is_dir() => {
            return Err(Error::Usage(format!(
                "input {one} is a directory: to annotate each media file in it as a batch, add --out-dir DIR"
            )));
        }
        [one] if !one.contains(['*', '?']) || one.contains("://") => one,
        _ => {
            return Err(Error::Usage(format!(
                "{} inputs: several calls (or a pattern) are a batch; add --out-dir DIR",
                a.inputs.len()
            )));
        }
    };
    let sources = Sources {
        inputs: vec![input.clone()],
        ids: a.stream_id.iter().cloned().collect(),
        recorded: true,
        progress: !a.no_progress && a.channels.is_empty(),
        channels: a.channels.clone(),
        ..Sources::default()
    };
    let plan = Plan::new(ctx.cfg, ctx.models, &overrides, &sources)?;
    let mut specs = vec![SinkSpec::Stdout];
    for o in &a.outs {
        specs.push(SinkSpec::parse(&o.to_string_lossy())?);
    }
    if let Some(r) = &a.report {
        specs.push(SinkSpec::File(r.clone(), crate::sinks::files::Format::Html));
    }
    let (report, mut results, stopped) = super::execute(plan, &specs)?;
    if let Some(e) = results.drain(..).find_map(|r| r.error) {
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
