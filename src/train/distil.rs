//! Distillation targets: the large model's verdict on unlabelled sentences, written in
//! `train --extra`'s format (`domain<TAB>grade<TAB>text`), so the small model can learn
//! from what the large model says about text nobody graded (`train label`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{DatasetError, ModelError, Result};
use crate::features::WindowFeatures;
use crate::models::mllm::{Mllm, Query};

/// What `train label` needs.
pub struct LabelOptions {
    /// Unlabelled sentences: one per line (or TSV rows whose last column is the text).
    pub input: PathBuf,
    /// The file to write.
    pub out: PathBuf,
    /// The large model's GGUF and adapter.
    pub gguf: PathBuf,
    /// The adapter base path.
    pub adapter: PathBuf,
    /// The `domain` column of every written row.
    pub domain: String,
    /// Scores within +-this are written as 0 (neutral).
    pub zero_band: f32,
    /// Sentences per forward pass.
    pub batch: usize,
}

/// What `train label` reports.
pub struct LabelReport {
    /// Rows written.
    pub written: usize,
    /// Input lines left out: empty, header, repeats.
    pub skipped: usize,
    /// Rows by the sign of the written grade: negative, zero, positive.
    pub by_class: [usize; 3],
    /// Seconds spent in the large model.
    pub seconds: f64,
}

/// The sentences of an unlabelled file, in order, repeats dropped; and how many lines
/// were left out. A line with tabs contributes its last column (so a `train --extra`
/// file can be relabelled); a first line whose text is `text` is a header.
pub(crate) fn read_unlabelled(path: &Path) -> Result<(Vec<String>, usize)> {
    let raw = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut seen = std::collections::HashSet::new();
    let (mut out, mut skipped) = (Vec::new(), 0);
    for (i, line) in raw.lines().enumerate() {
        let text = line.rsplit('\t').next().unwrap_or("").trim();
        if text.is_empty() || (i == 0 && text == "text") || !seen.insert(text.to_string()) {
            skipped += 1;
            continue;
        }
        out.push(text.to_string());
    }
    if out.is_empty() {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            row: 1,
            reason: "no sentences: give one sentence per line".into(),
        }
        .into());
    }
    Ok((out, skipped))
}

/// Labels every sentence with the large model (a text-only window, as `train --extra`
/// sentences are seen) and writes `domain<TAB>grade<TAB>text` rows, the grade being the
/// large model's score rounded to two decimals, 0 when that is within `zero_band`. Rows
/// go to `OUT.partial`, flushed batch by batch, which becomes `out` when all are written.
pub fn label(o: &LabelOptions) -> Result<LabelReport> {
    let (texts, skipped) = read_unlabelled(&o.input)?;
    if !(o.zero_band >= 0.0 && o.zero_band < 3.0) {
        return Err(crate::error::Error::Usage(format!(
            "--zero-band {}: give a score width in [0, 3), e.g. 0.5",
            o.zero_band
        )));
    }
    if o.domain.contains(['\t', '\n']) || o.domain.is_empty() {
        return Err(crate::error::Error::Usage(format!(
            "--domain {:?}: give a single word such as distilled",
            o.domain
        )));
    }
    let model = Mllm::load(&o.gguf, &o.adapter)?;
    // Written as OUT.partial and renamed at the end: an interrupted run keeps its rows
    // there, and a file at OUT is always complete.
    let partial = o.out.with_extension("partial");
    let io = |source| ModelError::Io {
        path: partial.clone(),
        source,
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
    writeln!(w, "domain\tgrade\ttext").map_err(io)?;
    let none = WindowFeatures::default();
    let clock = Instant::now();
    let mut report = LabelReport {
        written: 0,
        skipped,
        by_class: [0; 3],
        seconds: 0.0,
    };
    for chunk in texts.chunks(o.batch.max(1)) {
        let qs: Vec<Query> = chunk
            .iter()
            .map(|t| Query {
                text: t,
                features: &none,
                earlier: None,
            })
            .collect();
        for (t, a) in chunk.iter().zip(model.judge_batch(&qs)?) {
            let rounded = (a.score * 100.0).round() / 100.0;
            // Rounded first, so nothing within the band is written as +-0.50 (and -0.00,
            // within any band, is written as 0).
            let grade = if rounded.abs() <= o.zero_band {
                0.0
            } else {
                rounded
            };
            report.by_class[usize::from(grade >= 0.0) + usize::from(grade > 0.0)] += 1;
            writeln!(w, "{}\t{grade:.2}\t{t}", o.domain).map_err(io)?;
            report.written += 1;
        }
        w.flush().map_err(io)?;
        tracing::info!(done = report.written, of = texts.len(), "labelled");
    }
    drop(w);
    std::fs::rename(&partial, &o.out).map_err(|source| ModelError::Io {
        path: o.out.clone(),
        source,
    })?;
    report.seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_lines_keep_order_and_drop_headers_blanks_and_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.tsv");
        std::fs::write(
            &p,
            "domain\tgrade\ttext\nchat\t0\tHello there.\n\nHow are you?\nHello there.\n",
        )
        .unwrap();
        let (t, skipped) = read_unlabelled(&p).unwrap();
        assert_eq!(t, vec!["Hello there.", "How are you?"]);
        assert_eq!(skipped, 3);
        std::fs::write(&p, "\n\n").unwrap();
        let e = read_unlabelled(&p).unwrap_err().to_string();
        assert!(e.contains("no sentences"), "{e}");
    }
}
