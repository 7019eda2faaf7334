//! Scoring a diarization against reference turns: diarization error rate (NIST style, no
//! collar, overlapped reference speech counted per speaker), the share of speech time
//! given to the right speaker, and the share of reference turns whose time mostly went
//! to the right speaker. Hypothesis speakers are mapped one-to-one onto reference
//! speakers so that the time they share is largest.
//!
//! Turns are read from RTTM (`SPEAKER file 1 start duration <NA> <NA> name ...`) or from
//! the call JSON our generators write (`{"turns": [{"speaker", "start", "end"}]}`).

use serde::Serialize;

/// Frame length of the scoring grid, seconds.
const STEP: f64 = 0.01;

/// A speaker turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Speaker label.
    pub speaker: String,
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
}

/// Reads RTTM `SPEAKER` lines; other lines are ignored.
pub fn read_rttm(text: &str) -> Result<Vec<Turn>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() != Some(&"SPEAKER") {
            continue;
        }
        let bad = || {
            format!(
                "line {}: expected `SPEAKER file channel start duration <NA> <NA> speaker`",
                n + 1
            )
        };
        if f.len() < 8 {
            return Err(bad());
        }
        let start: f64 = f[3].parse().map_err(|_| bad())?;
        let dur: f64 = f[4].parse().map_err(|_| bad())?;
        out.push(Turn {
            speaker: f[7].to_string(),
            start,
            end: start + dur,
        });
    }
    if out.is_empty() {
        return Err("no SPEAKER lines".into());
    }
    Ok(out)
}

/// Reads `{"turns": [{"speaker": ..., "start": ..., "end": ...}, ...]}`.
pub fn read_turns_json(text: &str) -> Result<Vec<Turn>, String> {
    #[derive(serde::Deserialize)]
    struct T {
        speaker: String,
        start: f64,
        end: f64,
    }
    #[derive(serde::Deserialize)]
    struct F {
        turns: Vec<T>,
    }
    let f: F = serde_json::from_str(text).map_err(|e| format!("not a turns file: {e}"))?;
    Ok(f.turns
        .into_iter()
        .map(|t| Turn {
            speaker: t.speaker,
            start: t.start,
            end: t.end,
        })
        .collect())
}

/// Writes turns as RTTM lines for `file`.
pub fn write_rttm(file: &str, turns: &[Turn]) -> String {
    turns
        .iter()
        .map(|t| {
            format!(
                "SPEAKER {file} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
                t.start,
                t.end - t.start,
                t.speaker
            )
        })
        .collect()
}

/// How a diarization compares with the reference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Score {
    /// Reference speech, seconds (overlaps counted per speaker).
    pub reference_s: f64,
    /// Reference speech with no hypothesis speaker, seconds.
    pub missed_s: f64,
    /// Hypothesis speech where the reference has none, seconds.
    pub false_alarm_s: f64,
    /// Speech given to the wrong speaker, seconds.
    pub confusion_s: f64,
    /// (missed + false alarm + confusion) / reference.
    pub der: f64,
    /// Of the single-speaker reference speech the hypothesis covers, the share given to
    /// the right speaker.
    pub attributed: f64,
    /// Reference turns whose covered time mostly went to the right speaker.
    pub turns_right: usize,
    /// Reference turns.
    pub turns: usize,
    /// Reference speakers, hypothesis speakers.
    pub speakers: (usize, usize),
    /// Hypothesis speaker -> reference speaker.
    pub mapping: Vec<(String, String)>,
}

fn labels(turns: &[Turn]) -> Vec<String> {
    let mut l: Vec<String> = Vec::new();
    for t in turns {
        if !l.contains(&t.speaker) {
            l.push(t.speaker.clone());
        }
    }
    l
}

/// Per frame, a bit set of the speakers (indices into `names`) talking.
fn grid(turns: &[Turn], names: &[String], frames: usize) -> Vec<u64> {
    let mut g = vec![0u64; frames];
    for t in turns {
        let k = names
            .iter()
            .position(|n| *n == t.speaker)
            .expect("label listed");
        let (a, b) = (
            (t.start / STEP).round() as usize,
            (t.end / STEP).round() as usize,
        );
        for f in g.iter_mut().take(b.min(frames)).skip(a) {
            *f |= 1 << k;
        }
    }
    g
}

/// The one-to-one mapping (hypothesis index -> reference index) with the most shared
/// frames: exhaustive for up to 8 hypothesis speakers, greedy beyond.
fn best_mapping(shared: &[Vec<usize>]) -> Vec<Option<usize>> {
    let (nh, nr) = (shared.len(), shared.first().map_or(0, Vec::len));
    fn search(
        h: usize,
        shared: &[Vec<usize>],
        used: &mut Vec<bool>,
        cur: &mut Vec<Option<usize>>,
        best: &mut (usize, Vec<Option<usize>>),
        total: usize,
    ) {
        if h == shared.len() {
            if total > best.0 || best.1.is_empty() {
                *best = (total, cur.clone());
            }
            return;
        }
        for r in 0..used.len() {
            if !used[r] {
                used[r] = true;
                cur.push(Some(r));
                search(h + 1, shared, used, cur, best, total + shared[h][r]);
                cur.pop();
                used[r] = false;
            }
        }
        cur.push(None);
        search(h + 1, shared, used, cur, best, total);
        cur.pop();
    }
    if nh <= 8 {
        let mut best = (0, Vec::new());
        search(
            0,
            shared,
            &mut vec![false; nr],
            &mut Vec::new(),
            &mut best,
            0,
        );
        return best.1;
    }
    super::registry::greedy_match(shared, 0)
}

/// Scores `hyp` against `reference`.
pub fn score(reference: &[Turn], hyp: &[Turn]) -> Score {
    let (rn, hn) = (labels(reference), labels(hyp));
    let end = reference
        .iter()
        .chain(hyp)
        .map(|t| t.end)
        .fold(0.0, f64::max);
    let frames = (end / STEP).ceil() as usize + 1;
    let (rg, hg) = (grid(reference, &rn, frames), grid(hyp, &hn, frames));
    let mut shared = vec![vec![0usize; rn.len()]; hn.len()];
    for (r, h) in rg.iter().zip(&hg) {
        for (hi, row) in shared.iter_mut().enumerate() {
            if h & (1 << hi) != 0 {
                for (ri, c) in row.iter_mut().enumerate() {
                    *c += usize::from(r & (1 << ri) != 0);
                }
            }
        }
    }
    let map = best_mapping(&shared);
    // Hypothesis bits translated into reference bits (unmapped speakers: no bit).
    let mapped = |h: u64| -> u64 {
        (0..hn.len())
            .filter(|&i| h & (1 << i) != 0)
            .filter_map(|i| map[i].map(|r| 1u64 << r))
            .fold(0, |a, b| a | b)
    };
    let (mut refc, mut miss, mut fa, mut conf, mut single, mut single_ok) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (&r, &h) in rg.iter().zip(&hg) {
        let (nr, nh) = (r.count_ones() as u64, h.count_ones() as u64);
        let correct = (r & mapped(h)).count_ones() as u64;
        refc += nr;
        miss += nr.saturating_sub(nh);
        fa += nh.saturating_sub(nr);
        conf += nr.min(nh) - correct.min(nr.min(nh));
        if nr == 1 && nh > 0 {
            single += 1;
            single_ok += u64::from(correct > 0);
        }
    }
    let turns_right = reference
        .iter()
        .filter(|t| {
            let k = rn.iter().position(|n| *n == t.speaker).expect("listed");
            let (a, b) = (
                (t.start / STEP).round() as usize,
                ((t.end / STEP).round() as usize).min(frames),
            );
            let (mut right, mut covered) = (0, 0);
            for &h in &hg[a.min(b)..b] {
                if h != 0 {
                    covered += 1;
                    right += usize::from(mapped(h) & (1 << k) != 0);
                }
            }
            covered > 0 && 2 * right > covered
        })
        .count();
    let s = |f: u64| f as f64 * STEP;
    Score {
        reference_s: s(refc),
        missed_s: s(miss),
        false_alarm_s: s(fa),
        confusion_s: s(conf),
        der: (miss + fa + conf) as f64 / refc.max(1) as f64,
        attributed: single_ok as f64 / single.max(1) as f64,
        turns_right,
        turns: reference.len(),
        speakers: (rn.len(), hn.len()),
        mapping: map
            .iter()
            .enumerate()
            .filter_map(|(h, r)| r.map(|r| (hn[h].clone(), rn[r].clone())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, a: f64, b: f64) -> Turn {
        Turn {
            speaker: s.into(),
            start: a,
            end: b,
        }
    }

    #[test]
    fn a_perfect_relabelled_hypothesis_scores_zero() {
        let r = [
            t("alice", 0.0, 2.0),
            t("bob", 2.5, 4.0),
            t("alice", 4.0, 5.0),
        ];
        let h = [t("S2", 0.0, 2.0), t("S1", 2.5, 4.0), t("S2", 4.0, 5.0)];
        let s = score(&r, &h);
        assert!(s.der.abs() < 1e-9, "{s:?}");
        assert_eq!((s.turns_right, s.turns), (3, 3));
        assert_eq!(s.attributed, 1.0);
        assert!(s.mapping.contains(&("S2".into(), "alice".into())));
    }

    #[test]
    fn errors_are_split_into_miss_false_alarm_and_confusion() {
        let r = [t("a", 0.0, 4.0), t("b", 4.0, 8.0)];
        // b's last second given to a; one second of a missed; 1 s of speech in silence.
        let h = [t("x", 1.0, 4.0), t("y", 4.0, 7.0), t("x", 7.0, 9.0)];
        let s = score(&r, &h);
        assert!((s.missed_s - 1.0).abs() < 0.02, "{s:?}");
        assert!((s.confusion_s - 1.0).abs() < 0.02, "{s:?}");
        assert!((s.false_alarm_s - 1.0).abs() < 0.02, "{s:?}");
        assert!((s.der - 3.0 / 8.0).abs() < 0.01);
        assert_eq!(s.turns_right, 2);
    }

    #[test]
    fn rttm_round_trip() {
        let turns = vec![t("S1", 0.5, 1.75), t("S2", 2.0, 3.0)];
        let text = write_rttm("call", &turns);
        assert_eq!(read_rttm(&text).unwrap(), turns);
        assert!(read_rttm("SPEAKER x 1 zero").is_err());
    }
}
