//! `annotate` on many calls: expands files, folders and globs, annotates `--jobs` calls at
//! a time (one run per group, models loaded once per group), writes each call's outputs
//! into `--out-dir` plus `summary.csv` (one row per call) and `index.html`, skips calls
//! the table already lists as done (resumable), and carries on past a bad file (its
//! error goes in the table; the exit code is 1 at the end).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Context;
use super::args::AnnotateArgs;
use crate::error::{Error, Result};
use crate::plan::{Overrides, Plan, Sources};
use crate::sinks::SinkSpec;

/// Name of the batch table in the output folder.
pub(crate) const TABLE: &str = "summary.csv";
/// Extensions a folder's media files have.
const MEDIA: [&str; 14] = [
    "mp4", "mkv", "webm", "mov", "avi", "ts", "wav", "mp3", "m4a", "flac", "ogg", "opus", "aac",
    "wma",
];
/// Exit code after Ctrl-C / SIGTERM stopped the batch (128 + SIGINT).
const INTERRUPTED: i32 = 130;

/// One call of a batch.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    input: String,
}

/// One row of the table.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Row {
    call: String,
    input: String,
    status: String,
    error: String,
    duration_s: String,
    windows: String,
    speech_s: String,
    silence_share: String,
    mean_score: String,
    q1: String,
    q2: String,
    q3: String,
    q4: String,
    trend: String,
    trend_word: String,
    overlaps: String,
    most_negative_at_s: String,
}

fn num(v: &Value) -> String {
    v.as_f64().map_or(String::new(), |x| format!("{x:.3}"))
}

impl Row {
    fn ok(call: &Call, s: &Value) -> Self {
        let q = |i: usize| num(&s["quarters"][i]);
        let speakers = s["speakers"].as_array().cloned().unwrap_or_default();
        let (sum, n) = speakers.iter().fold((0.0, 0.0), |(a, n), sp| {
            let w = sp["windows"].as_f64().unwrap_or(0.0);
            (a + sp["mean_score"].as_f64().unwrap_or(0.0) * w, n + w)
        });
        Self {
            call: call.id.clone(),
            input: call.input.clone(),
            status: "ok".into(),
            error: String::new(),
            duration_s: num(&s["duration_s"]),
            windows: s["windows"].to_string(),
            speech_s: num(&s["speech_s"]),
            silence_share: num(&s["silence_share"]),
            mean_score: if n > 0.0 {
                format!("{:.3}", sum / n)
            } else {
                String::new()
            },
            q1: q(0),
            q2: q(1),
            q3: q(2),
            q4: q(3),
            trend: num(&s["trend"]),
            trend_word: s["trend_word"].as_str().unwrap_or("").into(),
            overlaps: s["overlaps"].to_string(),
            most_negative_at_s: num(&s["most_negative"][0]["start"]),
        }
    }

    fn error(call: &Call, e: &str) -> Self {
        Self {
            call: call.id.clone(),
            input: call.input.clone(),
            status: "error".into(),
            error: e.replace('\n', " "),
            ..Self::default()
        }
    }
}

/// Expands the command line's inputs into calls with unique ids (file stems; `-2`, `-3`
/// for repeats).
fn expand(inputs: &[String]) -> Result<Vec<Call>> {
    let mut files: Vec<String> = Vec::new();
    for i in inputs {
        let p = Path::new(i);
        if p.is_dir() {
            let mut found: Vec<String> = std::fs::read_dir(p)
                .map_err(|e| Error::Usage(format!("folder {i}: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| MEDIA.contains(&x.to_ascii_lowercase().as_str()))
                })
                .map(|f| f.display().to_string())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::Usage(format!(
                    "folder {i} has no media files ({})",
                    MEDIA.join(", ")
                )));
            }
            files.extend(found);
        } else if i.contains(['*', '?', '[']) && !i.contains("://") {
            let mut found: Vec<String> = glob::glob(i)
                .map_err(|e| Error::Usage(format!("pattern {i}: {e}")))?
                .filter_map(|p| p.ok().map(|p| p.display().to_string()))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::Usage(format!("pattern {i} matches no file")));
            }
            files.extend(found);
        } else {
            files.push(i.clone());
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    Ok(files
        .into_iter()
        .map(|input| {
            let stem = Path::new(input.split('?').next().unwrap_or(&input))
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| !s.is_empty())
                .unwrap_or("call")
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>();
            let n = seen.entry(stem.clone()).or_default();
            *n += 1;
            let id = if *n == 1 { stem } else { format!("{stem}-{n}") };
            Call { id, input }
        })
        .collect())
}

/// Rows of an earlier run's table (empty when there is none).
fn read_table(path: &Path) -> Result<Vec<Row>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).map_err(|e| {
        Error::Usage(format!(
            "{}: {e}; delete it to start the batch afresh",
            path.display()
        ))
    })?;
    r.deserialize()
        .collect::<std::result::Result<Vec<Row>, _>>()
        .map_err(|e| {
            Error::Usage(format!(
                "{}: {e}; delete it to start the batch afresh",
                path.display()
            ))
        })
}

/// Writes the table whole (to a temporary name, then renamed).
fn write_table(path: &Path, rows: &[Row]) -> Result<()> {
    let tmp = path.with_extension("csv.tmp");
    let io = |e: csv::Error| Error::Usage(format!("{}: {e}", path.display()));
    let mut w = csv::Writer::from_path(&tmp).map_err(io)?;
    for r in rows {
        w.serialize(r).map_err(io)?;
    }
    w.flush()
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// The summary a finished call wrote, if it finished.
fn summary_of(dir: &Path, id: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{id}.summary.json"))).ok()?;
    let map: Value = serde_json::from_str(&text).ok()?;
    let s = map.get(id)?.clone();
    s["complete"].as_bool().unwrap_or(false).then_some(s)
}

/// Runs one group of calls as one run; returns each call's row.
fn run_group(
    a: &AnnotateArgs,
    ctx: &Context,
    o: &Overrides,
    dir: &Path,
    group: &[Call],
) -> Result<(Vec<Row>, bool)> {
    let sources = Sources {
        inputs: group.iter().map(|c| c.input.clone()).collect(),
        ids: group.iter().map(|c| c.id.clone()).collect(),
        recorded: true,
        progress: false,
        channels: a.channels.clone(),
        ..Sources::default()
    };
    let plan = Plan::new(ctx.cfg.clone(), ctx.models.clone(), o, &sources)?;
    let mut specs = Vec::new();
    for ext in ["jsonl", "summary.json", "html"] {
        specs.push(SinkSpec::parse(
            &dir.join(format!("{{stream}}.{ext}")).display().to_string(),
        )?);
    }
    for extra in &a.outs {
        specs.push(SinkSpec::parse(&extra.to_string_lossy())?);
    }
    let (_, results, stopped) = super::execute(plan, &specs)?;
    let rows = group
        .iter()
        .map(|c| {
            let err = results
                .iter()
                .filter(|r| {
                    r.id == c.id
                        || r.id
                            .strip_prefix(c.id.as_str())
                            .is_some_and(|s| s.starts_with(':'))
                })
                .find_map(|r| r.error.as_ref().map(|e| e.to_string()));
            match (err, summary_of(dir, &c.id)) {
                (Some(e), _) => Row::error(c, &e),
                (None, Some(s)) => Row::ok(c, &s),
                (None, None) if stopped => {
                    Row::error(c, "stopped by Ctrl-C / SIGTERM before the end")
                }
                (None, None) => Row::error(
                    c,
                    "finished without a summary (was sinks.summaries turned off?)",
                ),
            }
        })
        .collect();
    Ok((rows, stopped))
}

/// Runs a batch.
pub(super) fn batch(a: &AnnotateArgs, ctx: &Context, o: &Overrides, dir: &Path) -> Result<i32> {
    if a.jobs == 0 || a.jobs > 64 {
        return Err(Error::Usage(format!("--jobs {}: must be 1..=64", a.jobs)));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("--out-dir {}: {e}", dir.display())))?;
    let calls = expand(&a.inputs)?;
    let table = dir.join(TABLE);
    let before = read_table(&table)?;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut todo = Vec::new();
    for c in &calls {
        match before.iter().find(|r| r.call == c.id && r.status == "ok") {
            Some(r) if summary_of(dir, &c.id).is_some() => {
                rows.insert(c.id.clone(), r.clone());
            }
            _ => todo.push(c.clone()),
        }
    }
    eprintln!(
        "sentistream: {} calls, {} done earlier (skipped), {} to annotate, {} at a time, outputs in {}",
        calls.len(),
        calls.len() - todo.len(),
        todo.len(),
        a.jobs,
        dir.display()
    );
    let mut stopped = false;
    for (k, group) in todo.chunks(a.jobs).enumerate() {
        let (new, stop) = run_group(a, ctx, o, dir, group)?;
        for r in new {
            if r.status == "ok" {
                eprintln!(
                    "sentistream: [{}/{}] {} ok",
                    k * a.jobs + 1,
                    todo.len(),
                    r.call
                );
            } else {
                eprintln!("sentistream: {} ({}) failed: {}", r.call, r.input, r.error);
            }
            rows.insert(r.call.clone(), r);
        }
        let ordered: Vec<Row> = calls
            .iter()
            .filter_map(|c| rows.get(&c.id).cloned())
            .collect();
        write_table(&table, &ordered)?;
        if stop {
            stopped = true;
            break;
        }
    }
    let ordered: Vec<Row> = calls
        .iter()
        .filter_map(|c| rows.get(&c.id).cloned())
        .collect();
    write_index(dir, &calls, &ordered)?;
    let failed = ordered.iter().filter(|r| r.status != "ok").count();
    eprintln!(
        "sentistream: {} of {} calls ok, {failed} failed; table {}, index {}",
        ordered.len() - failed,
        calls.len(),
        table.display(),
        dir.join("index.html").display()
    );
    Ok(if stopped {
        INTERRUPTED
    } else if failed > 0 {
        1
    } else {
        0
    })
}

fn write_index(dir: &Path, calls: &[Call], rows: &[Row]) -> Result<()> {
    let entries: Vec<(String, Option<String>, std::result::Result<Value, String>)> = calls
        .iter()
        .filter_map(|c| {
            let r = rows.iter().find(|r| r.call == c.id)?;
            Some(match summary_of(dir, &c.id) {
                Some(s) if r.status == "ok" => {
                    (c.id.clone(), Some(format!("{}.html", c.id)), Ok(s))
                }
                _ => (c.id.clone(), None, Err(format!("{}: {}", c.input, r.error))),
            })
        })
        .collect();
    let html = crate::report::index_page("sentistream batch", &entries);
    let path: PathBuf = dir.join("index.html");
    std::fs::write(&path, html).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}
