//! Pure utterance-window logic over per-frame speech probabilities: hysteresis, blip
//! removal, merging across short pauses, splitting long speech, padding. No I/O, no model.

use crate::config::SegmentConfig;

/// Seconds covered by one VAD probability (Silero: 512 samples at 16 kHz).
pub(crate) const VAD_FRAME_S: f64 = 512.0 / 16_000.0;

/// A span of stream time in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
}

impl Span {
    /// Length in seconds.
    pub fn len(&self) -> f64 {
        self.end - self.start
    }
    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Result of one pass over pending probabilities.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cut {
    /// Speech spans (unpadded) that are closed and can be emitted, in order.
    pub closed: Vec<Span>,
    /// Stream time up to which everything has been decided: later passes start here.
    pub committed: f64,
    /// Speech still going on at the end of the probabilities (start, end of the last
    /// speech frame so far), when there is some and more audio will come.
    pub open: Option<Span>,
}

/// Finds closed speech spans in `probs` (frame `i` covers `t0 + i * VAD_FRAME_S`).
///
/// A span is closed when it is followed by at least `merge_gap_s` of silence, when it
/// reaches `max_window_s` (it is then split at the quietest frame of its last third), or
/// when `last` says no more audio will come. Speech shorter than `min_speech_s` is dropped.
pub fn cut(probs: &[f32], t0: f64, cfg: &SegmentConfig, last: bool) -> Cut {
    let n = probs.len();
    let gap_frames = ((cfg.merge_gap_s as f64) / VAD_FRAME_S).ceil() as usize;
    let max_frames =
        ((cfg.max_window_s as f64 - 2.0 * cfg.padding_s as f64).max(1.0) / VAD_FRAME_S) as usize;
    let min_frames = ((cfg.min_speech_s as f64) / VAD_FRAME_S).ceil() as usize;
    let t = |i: usize| t0 + i as f64 * VAD_FRAME_S;

    let mut closed = Vec::new();
    let mut open_speech = None;
    let mut i = 0;
    // First frame not yet decided.
    let mut decided = 0;
    while i < n {
        if probs[i] < cfg.threshold {
            i += 1;
            if i - decided > gap_frames {
                decided = i - gap_frames;
            }
            continue;
        }
        // Speech from `start`; `end` is one past the last speech frame seen.
        let start = i;
        let mut end = i + 1;
        let mut j = i + 1;
        let mut open = true;
        while j < n {
            if probs[j] >= cfg.neg_threshold {
                end = j + 1;
            } else if j - end + 1 >= gap_frames {
                open = false;
                break;
            }
            if end - start >= max_frames {
                // Split at the quietest frame of the last third of the window.
                let from = start + max_frames * 2 / 3;
                let split = (from..end)
                    .min_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                    .filter(|&k| probs[k] < cfg.neg_threshold)
                    .unwrap_or(end);
                end = split;
                open = false;
                break;
            }
            j += 1;
        }
        if open && !last {
            // Speech still going on at the end of what we have: decide later.
            open_speech = Some(Span {
                start: t(start),
                end: t(end),
            });
            break;
        }
        if end - start >= min_frames {
            closed.push(Span {
                start: t(start),
                end: t(end),
            });
        }
        decided = end;
        i = end;
    }
    if last {
        decided = n;
    }
    Cut {
        closed,
        committed: t(decided),
        open: open_speech,
    }
}

/// Pads a speech span into a window, widening it to `min_window_s` and keeping it within
/// `[floor, ceil]` (the previous window's end and the end of available audio).
pub(crate) fn window_for(speech: Span, cfg: &SegmentConfig, floor: f64, ceil: f64) -> Span {
    let pad = cfg.padding_s as f64;
    let mut s = speech.start - pad;
    let mut e = speech.end + pad;
    let min = cfg.min_window_s as f64;
    if e - s < min {
        let grow = (min - (e - s)) / 2.0;
        s -= grow;
        e += grow;
    }
    Span {
        start: s.max(floor).max(0.0),
        end: e.min(ceil),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SegmentConfig {
        SegmentConfig {
            min_window_s: 0.0,
            padding_s: 0.0,
            ..SegmentConfig::default()
        }
    }

    /// Builds probabilities from (seconds, prob) runs.
    fn probs(runs: &[(f64, f32)]) -> Vec<f32> {
        runs.iter()
            .flat_map(|&(secs, p)| std::iter::repeat_n(p, (secs / VAD_FRAME_S).round() as usize))
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.05
    }

    #[test]
    fn silence_gives_no_window() {
        let c = cut(&probs(&[(10.0, 0.02)]), 0.0, &cfg(), true);
        assert!(c.closed.is_empty());
        assert!(close(c.committed, 10.0));
    }

    #[test]
    fn speech_closed_by_pause() {
        let p = probs(&[(1.0, 0.0), (2.0, 0.9), (1.0, 0.0)]);
        let c = cut(&p, 5.0, &cfg(), false);
        assert_eq!(c.closed.len(), 1);
        assert!(
            close(c.closed[0].start, 6.0) && close(c.closed[0].end, 8.0),
            "{c:?}"
        );
    }

    #[test]
    fn open_speech_waits_unless_last() {
        let p = probs(&[(1.0, 0.0), (2.0, 0.9)]);
        let c = cut(&p, 0.0, &cfg(), false);
        assert!(c.closed.is_empty());
        assert!(
            c.committed <= 1.0,
            "must not commit past the start of open speech: {c:?}"
        );
        let open = c.open.expect("open speech is reported");
        assert!(close(open.start, 1.0) && close(open.end, 3.0), "{open:?}");
        let c = cut(&p, 0.0, &cfg(), true);
        assert_eq!(c.closed.len(), 1);
        assert_eq!(c.open, None);
    }

    #[test]
    fn short_pause_merges_long_pause_splits() {
        let p = probs(&[
            (1.0, 0.9),
            (0.3, 0.0),
            (1.0, 0.9),
            (1.0, 0.0),
            (1.0, 0.9),
            (1.0, 0.0),
        ]);
        let c = cut(&p, 0.0, &cfg(), false);
        assert_eq!(c.closed.len(), 2, "{c:?}");
        assert!(close(c.closed[0].end, 2.3));
        assert!(close(c.closed[1].start, 3.3));
    }

    #[test]
    fn blips_are_dropped() {
        let p = probs(&[(1.0, 0.0), (0.1, 0.9), (1.0, 0.0)]);
        assert!(cut(&p, 0.0, &cfg(), true).closed.is_empty());
    }

    #[test]
    fn hysteresis_keeps_speech_between_thresholds() {
        let p = probs(&[(1.0, 0.9), (1.0, 0.4), (1.0, 0.0)]);
        let c = cut(&p, 0.0, &cfg(), false);
        assert!(close(c.closed[0].end, 2.0), "{c:?}");
    }

    #[test]
    fn long_speech_is_split_at_max_length_preferring_a_pause() {
        let mut c = cfg();
        c.max_window_s = 6.0;
        // 4.5 s speech, a 0.2 s dip (shorter than the merge gap), then 4 s speech.
        let p = probs(&[(4.5, 0.9), (0.2, 0.1), (4.0, 0.9), (1.0, 0.0)]);
        let out = cut(&p, 0.0, &c, false);
        assert_eq!(out.closed.len(), 2, "{out:?}");
        assert!(close(out.closed[0].end, 4.5), "split at the dip: {out:?}");
        assert!(out.closed.iter().all(|s| s.len() <= 6.0 + 1e-9));
        // Without a dip, it splits at the maximum.
        let p = probs(&[(14.0, 0.9), (1.0, 0.0)]);
        let out = cut(&p, 0.0, &c, false);
        assert_eq!(out.closed.len(), 3, "{out:?}");
        assert!(out.closed.iter().all(|s| s.len() <= 6.0 + 1e-9));
        assert!(close(out.closed[0].end, 6.0));
    }

    #[test]
    fn padding_and_minimum_length() {
        let c = SegmentConfig {
            padding_s: 0.2,
            min_window_s: 1.0,
            ..SegmentConfig::default()
        };
        let w = window_for(
            Span {
                start: 2.0,
                end: 2.4,
            },
            &c,
            0.0,
            100.0,
        );
        assert!(close(w.start, 1.7) && close(w.end, 2.7), "{w:?}");
        let w = window_for(
            Span {
                start: 2.0,
                end: 4.0,
            },
            &c,
            1.9,
            4.1,
        );
        assert!(close(w.start, 1.9) && close(w.end, 4.1), "{w:?}");
    }
}
