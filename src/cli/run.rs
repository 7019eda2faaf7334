//! `run`: one or more sources in one process until they end or Ctrl-C / SIGTERM.

use super::Context;
use super::args::RunArgs;
use crate::app::{RunReport, StreamResult};
use crate::error::{Error, Result};
use crate::plan::{Plan, Sources};
use crate::sinks::SinkSpec;

/// Runs `run`; exit code 1 when any stream failed (each failure is printed with its
/// stream id).
pub(super) fn run(r: &RunArgs, ctx: Context) -> Result<i32> {
    let sources = Sources {
        inputs: r.sources.clone(),
        ids: r.ids.clone(),
        live: r.live,
        notices: ctx.cfg.sinks.notices,
        ..Sources::default()
    };
    let specs = if r.sinks.is_empty() {
        &ctx.cfg.sinks.outputs
    } else {
        &r.sinks
    }
    .iter()
    .map(|s| SinkSpec::parse(s))
    .collect::<Result<Vec<_>, _>>()?;
    let plan = Plan::new(ctx.cfg, ctx.models, &r.m.overrides(), &sources)?;
    let (report, results, _) = super::execute(plan, &specs)?;
    let (figures, errors) = outcome(&report, &results);
    for line in &figures {
        if r.stats {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if r.stats {
        eprintln!("{}", report.summary());
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// Per-stream figure lines, and one `error: stream ID: ...` line per stream that failed
/// or crashed (any makes the exit code 1).
fn outcome(report: &RunReport, results: &[StreamResult]) -> (Vec<String>, Vec<String>) {
    let figures = report
        .streams
        .iter()
        .map(|(id, f)| RunReport::stream_line(id, f))
        .collect();
    let errors = results
        .iter()
        .filter_map(|r| {
            Some(match r.error.as_ref()? {
                // Its message names the stream already.
                e @ Error::StreamPanicked { .. } => format!("error: {e}"),
                e => format!("error: stream {}: {e}", r.id),
            })
        })
        .collect();
    (figures, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crashed_stream_fails_the_run_and_is_named() {
        let report = RunReport {
            streams: vec![
                ("cam1".into(), Default::default()),
                ("cam2".into(), Default::default()),
            ],
            ..RunReport::default()
        };
        let ok = StreamResult {
            id: "cam1".into(),
            error: None,
        };
        let crashed = StreamResult {
            id: "cam2".into(),
            error: Some(Error::StreamPanicked {
                stream: "cam2".into(),
                reason: "index out of bounds".into(),
            }),
        };
        let (figures, errors) = outcome(&report, &[ok, crashed]);
        assert_eq!(figures.len(), 2);
        assert_eq!(errors.len(), 1, "one failure: exit code 1");
        assert!(
            errors[0].starts_with("error: stream cam2: its thread crashed (index out of bounds)"),
            "{}",
            errors[0]
        );
    }
}
