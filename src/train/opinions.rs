//! Earlier opinions for stage 3's training prompts (issue 11, item 7).
//!
//! Stage 3 shows the large model two earlier verdicts on a window, the small model's and
//! its own first pass, when they disagree and the cascade is unsure. Training it on made-up
//! opinions teaches it nothing about what real ones look like, so the prompts are built
//! from real ones: `eval --compare --opinions FILE` writes each clip's two verdicts, and
//! run on clips neither model was trained on (one fold of the training split, with models
//! trained on the other folds) they are out of fold, as served. `train mllm --opinions`
//! reads them and asks the second pass only on the cases stage 3 meets: polarities that
//! differ, with at least one model unsure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Error, Result};
use crate::routing::fusion::Verdict;
use crate::routing::uncertainty::polarity;

/// One model's verdict on a clip, as stage 3 is shown it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Opinion {
    /// Score, on the model's range.
    pub(crate) score: f32,
    /// Uncertainty in stage 3's unit (entropy of the class probabilities, nats).
    pub(crate) uncertainty: f32,
    /// Whether the cascade treats the model as unsure here: for the small model its gate
    /// above tau1 (escalated), for the large model its uncertainty above tau2.
    pub(crate) unsure: bool,
}

/// Both earlier verdicts on one clip, with its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClipOpinions {
    /// Clip id, `video_id/clip_id`.
    pub(crate) clip: String,
    /// The clip's label.
    pub(crate) label: f32,
    /// The small model's verdict.
    pub(crate) small: Opinion,
    /// The large model's first pass.
    pub(crate) large: Opinion,
}

impl ClipOpinions {
    /// Whether stage 3 meets a case like this: the two polarities differ and at least one
    /// of the models is unsure.
    pub(crate) fn worth_verifying(&self, band: f32) -> bool {
        polarity(self.small.score, band) != polarity(self.large.score, band)
            && (self.small.unsure || self.large.unsure)
    }

    /// The pair as a stage-3 prompt carries it (small first).
    pub(crate) fn verdicts(&self) -> (Verdict, Verdict) {
        let v = |o: &Opinion| Verdict {
            score: o.score,
            uncertainty: o.uncertainty,
        };
        (v(&self.small), v(&self.large))
    }
}

/// JSON lines, one clip each.
pub(crate) fn to_jsonl(opinions: &[ClipOpinions]) -> String {
    let mut text = String::new();
    for o in opinions {
        text.push_str(&serde_json::to_string(o).expect("an opinion serialises"));
        text.push('\n');
    }
    text
}

/// Reads opinion files (JSON lines of `eval --compare --opinions`), in order.
pub(crate) fn read(paths: &[PathBuf]) -> Result<Vec<ClipOpinions>> {
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "--opinions {}: {e}; give a file written by `eval --compare --opinions`",
                path.display()
            ))
        })?;
        out.extend(parse(path, &text)?);
    }
    Ok(out)
}

fn parse(path: &Path, text: &str) -> Result<Vec<ClipOpinions>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let o: ClipOpinions = serde_json::from_str(line).map_err(|e| DatasetError::Malformed {
            path: path.to_path_buf(),
            row: i + 1,
            reason: format!(
                "{e}; an opinions line is {{\"clip\", \"label\", \"small\": {{\"score\", \"uncertainty\", \"unsure\"}}, \"large\": {{...}}}}, as `eval --compare --opinions` writes it"
            ),
        })?;
        out.push(o);
    }
    Ok(out)
}

/// What matching opinions with a training split found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matched {
    /// Per training clip worth verifying: its index and the two earlier verdicts.
    pub(crate) prompts: Vec<(usize, (Verdict, Verdict))>,
    /// Training clips that have opinions.
    pub(crate) covered: usize,
}

/// Matches opinions with the training clips (`ids`, `labels`) and keeps the cases worth
/// verifying. Errors when a clip is given twice, is not in the split, or carries another
/// label (opinions written from another dataset); training clips without opinions
/// (sentence windows, clips left out of the folds) simply get no stage-3 prompt.
pub(crate) fn match_train(
    opinions: &[ClipOpinions],
    ids: &[String],
    labels: &[f32],
    band: f32,
) -> Result<Matched> {
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut seen = vec![false; ids.len()];
    let mut prompts = Vec::new();
    for o in opinions {
        let Some(&i) = index.get(o.clip.as_str()) else {
            return Err(Error::Usage(format!(
                "--opinions: clip {} is not in the training split (or is cut by --limit); write the opinions with `eval --compare --opinions` on folds of this dataset's train split (scripts/make-opinions)",
                o.clip
            )));
        };
        if seen[i] {
            return Err(Error::Usage(format!(
                "--opinions: clip {} is given twice; give each fold's file once",
                o.clip
            )));
        }
        if (labels[i] - o.label).abs() > 1e-4 {
            return Err(Error::Usage(format!(
                "--opinions: clip {} has label {} there but {} in the dataset; the opinions were written from another dataset",
                o.clip, o.label, labels[i]
            )));
        }
        seen[i] = true;
        if o.worth_verifying(band) {
            prompts.push((i, o.verdicts()));
        }
    }
    Ok(Matched {
        prompts,
        covered: seen.iter().filter(|&&s| s).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(id: &str, label: f32, small: (f32, bool), large: (f32, bool)) -> ClipOpinions {
        let o = |(score, unsure): (f32, bool)| Opinion {
            score,
            uncertainty: if unsure { 0.9 } else { 0.2 },
            unsure,
        };
        ClipOpinions {
            clip: id.into(),
            label,
            small: o(small),
            large: o(large),
        }
    }

    #[test]
    fn only_disagreeing_cases_with_an_unsure_model_become_prompts() {
        let b = 0.1;
        // Disagree, small unsure: yes. Disagree, large unsure: yes.
        assert!(clip("a", 1.0, (-1.0, true), (1.0, false)).worth_verifying(b));
        assert!(clip("a", 1.0, (-1.0, false), (1.0, true)).worth_verifying(b));
        // Disagree, both sure: stage 3 never sees it (the large model is accepted).
        assert!(!clip("a", 1.0, (-1.0, false), (1.0, false)).worth_verifying(b));
        // Agree, both unsure: fused, not cross-verified. Neutral vs positive differ.
        assert!(!clip("a", 1.0, (0.8, true), (1.5, true)).worth_verifying(b));
        assert!(clip("a", 1.0, (0.0, true), (1.5, true)).worth_verifying(b));
    }

    #[test]
    fn a_file_round_trips_and_matches_the_split_by_clip_id() {
        let ops = vec![
            clip("v/1", 2.0, (-1.0, true), (1.0, false)),
            clip("v/2", -1.0, (-1.0, true), (-2.0, true)),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        std::fs::write(&path, to_jsonl(&ops)).unwrap();
        let back = read(std::slice::from_ref(&path)).unwrap();
        assert_eq!(back, ops);
        let ids: Vec<String> = ["v/0", "v/1", "v/2", "extra/3"].map(String::from).into();
        let m = match_train(&back, &ids, &[0.0, 2.0, -1.0, 1.0], 0.1).unwrap();
        assert_eq!(m.covered, 2);
        assert_eq!(m.prompts.len(), 1);
        assert_eq!(m.prompts[0].0, 1);
        assert_eq!(m.prompts[0].1.0.score, -1.0);
        assert_eq!(m.prompts[0].1.1.score, 1.0);
    }

    #[test]
    fn opinions_from_another_dataset_or_a_bad_line_are_refused_with_the_place() {
        let ids: Vec<String> = ["v/1"].map(String::from).into();
        let other = [clip("w/9", 1.0, (1.0, true), (1.0, true))];
        let e = match_train(&other, &ids, &[1.0], 0.1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("w/9") && e.contains("not in the training split"),
            "{e}"
        );
        let relabelled = [clip("v/1", -2.0, (1.0, true), (1.0, true))];
        let e = match_train(&relabelled, &ids, &[1.0], 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another dataset"), "{e}");
        let twice = vec![clip("v/1", 1.0, (1.0, true), (1.0, true)); 2];
        let e = match_train(&twice, &ids, &[1.0], 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse(Path::new("f.jsonl"), "\n{\"clip\": \"v/1\"}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.jsonl, row 2") && e.contains("eval --compare --opinions"),
            "{e}"
        );
        let e = read(&[PathBuf::from("/nonexistent/o.jsonl")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/o.jsonl"), "{e}");
    }
}
