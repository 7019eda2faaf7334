//! Call summaries: how a call (or a stretch of a live stream) went, from its windows.
//!
//! A [`Summarizer`] takes each finished window (times, score, speaker, text) as it leaves
//! and can produce a [`CallSummary`] at any moment: at the end of a file, and every
//! `sinks.summary_every_s` for live streams. Pure arithmetic on stream time; nothing here
//! knows about models or sinks.
//!
//! Definitions (stream time, seconds):
//! - talk time: a speaker's voiced seconds (else the union of its windows) plus short
//!   pauses between its windows that nobody else fills; speech: the union of all windows;
//!   silence share: 1 - speech / duration;
//! - a turn: a run of consecutive windows of one speaker;
//! - an overlap: a window that starts before another speaker's window has ended; an
//!   interruption: an overlap that starts a new turn (the other speaker was talking);
//! - quarters: the call cut into four equal spans; a quarter's sentiment is the mean score
//!   of the windows whose midpoint falls in it, weighted by window length;
//! - trend: last quarter with windows minus first quarter with windows.

use serde::Serialize;

/// Speaker label used when no speaker is known (no channels, no diarization).
pub const ALL: &str = "all";
/// Most negative moments listed.
const MOMENTS: usize = 3;
/// A trend within this of zero is "steady".
const STEADY: f32 = 0.25;

#[derive(Debug, Clone)]
struct Window {
    start: f64,
    end: f64,
    /// Voiced seconds inside the window (VAD), when known.
    voiced: Option<f64>,
    score: Option<f32>,
    speaker: String,
    text: String,
}

/// Collects a stream's windows.
#[derive(Debug, Clone, Default)]
pub struct Summarizer {
    windows: Vec<Window>,
    /// A pause shorter than this (seconds) between two windows of one speaker is talk,
    /// as a pause of that length inside a window is (`segment.talk_pause_s`), so talk
    /// time does not depend on where `segment.merge_gap_s` cuts the windows.
    talk_pause_s: f64,
}

/// One speaker's share of a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeakerSummary {
    /// Speaker label (`all` when speakers are not known).
    pub speaker: String,
    /// Seconds of speech.
    pub talk_s: f64,
    /// Share of the call's speech.
    pub talk_share: f64,
    /// Turns taken.
    pub turns: usize,
    /// Windows.
    pub windows: usize,
    /// Mean, lowest and highest score (windows with a score).
    pub mean_score: Option<f32>,
    /// Lowest score.
    pub min_score: Option<f32>,
    /// Highest score.
    pub max_score: Option<f32>,
    /// Mean score per quarter of the call.
    pub quarters: [Option<f32>; 4],
}

/// A moment worth a look.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moment {
    /// Window start, seconds.
    pub start: f64,
    /// Window end, seconds.
    pub end: f64,
    /// Speaker.
    pub speaker: String,
    /// Score.
    pub score: f32,
    /// What was said.
    pub text: String,
}

/// How a call went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    /// Stream time covered, seconds (0 to the end of the call or of the last window).
    pub duration_s: f64,
    /// Whether the call is over (false: a live stream's summary so far).
    pub complete: bool,
    /// Windows.
    pub windows: usize,
    /// Seconds with someone speaking.
    pub speech_s: f64,
    /// Share of the call without speech.
    pub silence_share: f64,
    /// Per speaker, in order of first appearance.
    pub speakers: Vec<SpeakerSummary>,
    /// Mean score per quarter of the call, all speakers.
    pub quarters: [Option<f32>; 4],
    /// Last quarter minus first quarter (with windows).
    pub trend: Option<f32>,
    /// `improved`, `worsened`, `steady`, or `unknown`.
    pub trend_word: &'static str,
    /// Windows starting while another speaker's window was running.
    pub overlaps: usize,
    /// Overlaps that took the turn from the other speaker.
    pub interruptions: usize,
    /// The most negative windows, most negative first.
    pub most_negative: Vec<Moment>,
}

/// Length of the union of intervals (sorted by start or not).
fn union_len(mut spans: Vec<(f64, f64)>) -> f64 {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut total, mut cur): (f64, Option<(f64, f64)>) = (0.0, None);
    for (s, e) in spans {
        match &mut cur {
            Some((_, ce)) if s <= *ce => *ce = ce.max(e),
            _ => {
                if let Some((cs, ce)) = cur {
                    total += ce - cs;
                }
                cur = Some((s, e));
            }
        }
    }
    total + cur.map_or(0.0, |(s, e)| e - s)
}

/// Length-weighted mean score per quarter of `[0, duration]`.
fn quarters<'a>(ws: impl Iterator<Item = &'a Window>, duration: f64) -> [Option<f32>; 4] {
    let mut sum = [0f64; 4];
    let mut weight = [0f64; 4];
    for w in ws {
        let Some(score) = w.score else { continue };
        let mid = (w.start + w.end) / 2.0;
        let q = if duration > 0.0 {
            ((mid / duration * 4.0).floor() as usize).min(3)
        } else {
            0
        };
        let len = (w.end - w.start).max(1e-3);
        sum[q] += score as f64 * len;
        weight[q] += len;
    }
    std::array::from_fn(|q| (weight[q] > 0.0).then(|| (sum[q] / weight[q]) as f32))
}

impl Summarizer {
    /// A summarizer counting pauses shorter than `talk_pause_s` between a speaker's
    /// windows as talk (0: never).
    pub fn new(talk_pause_s: f64) -> Self {
        Self {
            windows: Vec::new(),
            talk_pause_s,
        }
    }

    /// Adds a finished window (`speaker` `None`: unknown, counted as [`ALL`]).
    pub fn add(
        &mut self,
        start: f64,
        end: f64,
        voiced: Option<f64>,
        score: Option<f32>,
        speaker: Option<&str>,
        text: &str,
    ) {
        self.windows.push(Window {
            start,
            end: end.max(start),
            voiced,
            score,
            speaker: speaker.unwrap_or(ALL).to_string(),
            text: text.to_string(),
        });
    }

    /// The summary of `[0, duration_s]` (at least to the last window's end).
    pub fn summary(&self, duration_s: f64, complete: bool) -> CallSummary {
        let ws = &self.windows;
        let duration = ws.iter().map(|w| w.end).fold(duration_s.max(0.0), f64::max);
        let speech = union_len(ws.iter().map(|w| (w.start, w.end)).collect());
        let mut names: Vec<&str> = Vec::new();
        for w in ws {
            if !names.contains(&w.speaker.as_str()) {
                names.push(&w.speaker);
            }
        }
        let (overlaps, interruptions) = self.overlaps();
        let mut speakers: Vec<SpeakerSummary> = names
            .iter()
            .map(|name| self.speaker(name, duration))
            .collect();
        let all_talk: f64 = speakers.iter().map(|s| s.talk_s).sum();
        for s in &mut speakers {
            s.talk_share = if all_talk > 0.0 {
                s.talk_s / all_talk
            } else {
                0.0
            };
        }
        let q = quarters(ws.iter(), duration);
        let first = q.iter().flatten().next();
        let last = q.iter().flatten().last();
        let trend = first.zip(last).map(|(f, l)| l - f);
        let trend_word = match trend {
            None => "unknown",
            Some(t) if t > STEADY => "improved",
            Some(t) if t < -STEADY => "worsened",
            Some(_) => "steady",
        };
        let mut neg: Vec<&Window> = ws
            .iter()
            .filter(|w| w.score.is_some_and(|s| s < 0.0))
            .collect();
        neg.sort_by(|a, b| a.score.unwrap_or(0.0).total_cmp(&b.score.unwrap_or(0.0)));
        CallSummary {
            duration_s: duration,
            complete,
            windows: ws.len(),
            speech_s: speech,
            silence_share: if duration > 0.0 {
                (1.0 - speech / duration).max(0.0)
            } else {
                0.0
            },
            speakers,
            quarters: q,
            trend,
            trend_word,
            overlaps,
            interruptions,
            most_negative: neg
                .into_iter()
                .take(MOMENTS)
                .map(|w| Moment {
                    start: w.start,
                    end: w.end,
                    speaker: w.speaker.clone(),
                    score: w.score.unwrap_or(0.0),
                    text: w.text.clone(),
                })
                .collect(),
        }
    }

    /// Talk time of one speaker's windows: their voiced seconds when every one has them
    /// (long pauses inside a window are not talk), else the union of the windows; plus
    /// each pause between two consecutive ones shorter than `talk_pause_s` in which no
    /// other speaker's window lies (so talk can exceed `speech_s`, the union of windows,
    /// by those pauses).
    fn talk(&self, name: &str, ws: &[&Window]) -> f64 {
        let spoken = match ws.iter().map(|w| w.voiced).sum::<Option<f64>>() {
            Some(v) => v,
            None => union_len(ws.iter().map(|w| (w.start, w.end)).collect()),
        };
        let mut spans: Vec<(f64, f64)> = ws.iter().map(|w| (w.start, w.end)).collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let someone_else = |a: f64, b: f64| {
            self.windows
                .iter()
                .any(|w| w.speaker != name && w.start < b && w.end > a)
        };
        let mut reach = f64::NEG_INFINITY;
        let mut bridged = 0.0;
        for (start, end) in spans {
            let gap = start - reach;
            // Times are rounded to milliseconds: a pause of exactly talk_pause_s is not talk.
            if gap > 0.0 && gap < self.talk_pause_s - 1e-6 && !someone_else(reach, start) {
                bridged += gap;
            }
            reach = reach.max(end);
        }
        spoken + bridged
    }

    /// One speaker's summary; `talk_share` is set by the caller, which knows all talk.
    fn speaker(&self, name: &str, duration: f64) -> SpeakerSummary {
        let mine: Vec<&Window> = self.windows.iter().filter(|w| w.speaker == name).collect();
        let scores: Vec<f32> = mine.iter().filter_map(|w| w.score).collect();
        let talk = self.talk(name, &mine);
        let mut order: Vec<&Window> = self.windows.iter().collect();
        order.sort_by(|a, b| a.start.total_cmp(&b.start));
        let turns = order
            .iter()
            .enumerate()
            .filter(|(i, w)| w.speaker == name && (*i == 0 || order[i - 1].speaker != name))
            .count();
        SpeakerSummary {
            speaker: name.to_string(),
            talk_s: talk,
            talk_share: 0.0,
            turns,
            windows: mine.len(),
            mean_score: (!scores.is_empty())
                .then(|| scores.iter().sum::<f32>() / scores.len() as f32),
            min_score: scores.iter().copied().reduce(f32::min),
            max_score: scores.iter().copied().reduce(f32::max),
            quarters: quarters(mine.into_iter(), duration),
        }
    }

    /// (overlaps, interruptions) over windows in start order.
    fn overlaps(&self) -> (usize, usize) {
        let mut order: Vec<&Window> = self.windows.iter().collect();
        order.sort_by(|a, b| a.start.total_cmp(&b.start));
        let (mut overlaps, mut interruptions) = (0, 0);
        // The latest end of each speaker's windows so far: O(windows x speakers).
        let mut ends: Vec<(&str, f64)> = Vec::new();
        for (i, w) in order.iter().enumerate() {
            let running = ends
                .iter()
                .any(|(sp, end)| *sp != w.speaker && *end > w.start);
            match ends.iter_mut().find(|(sp, _)| *sp == w.speaker) {
                Some((_, end)) => *end = end.max(w.end),
                None => ends.push((&w.speaker, w.end)),
            }
            if running {
                overlaps += 1;
                if i > 0 && order[i - 1].speaker != w.speaker {
                    interruptions += 1;
                }
            }
        }
        (overlaps, interruptions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Summarizer {
        let mut s = Summarizer::default();
        // agent 0-4 (+1), customer 5-9 (-2), agent 8.5-12 (+0.5, interrupts),
        // customer 20-24 (+1), agent 30-40 (+2).
        s.add(
            0.0,
            4.0,
            None,
            Some(1.0),
            Some("agent"),
            "Hello, how can I help?",
        );
        s.add(
            5.0,
            9.0,
            None,
            Some(-2.0),
            Some("customer"),
            "It is broken again.",
        );
        s.add(8.5, 12.0, None, Some(0.5), Some("agent"), "Let me check.");
        s.add(
            20.0,
            24.0,
            None,
            Some(1.0),
            Some("customer"),
            "Oh, that works.",
        );
        s.add(
            30.0,
            40.0,
            None,
            Some(2.0),
            Some("agent"),
            "Great, have a nice day.",
        );
        s
    }

    #[test]
    fn talk_time_turns_overlaps_and_trend() {
        let c = call().summary(40.0, true);
        assert_eq!(c.windows, 5);
        assert!((c.speech_s - 25.0).abs() < 1e-9, "{}", c.speech_s);
        assert!((c.silence_share - 15.0 / 40.0).abs() < 1e-9);
        let agent = &c.speakers[0];
        assert_eq!(agent.speaker, "agent");
        assert!((agent.talk_s - 17.5).abs() < 1e-9);
        assert_eq!((agent.turns, agent.windows), (3, 3));
        assert_eq!(c.speakers[1].turns, 2);
        assert_eq!((agent.min_score, agent.max_score), (Some(0.5), Some(2.0)));
        assert_eq!((c.overlaps, c.interruptions), (1, 1));
        // Quarters of 10 s: q0 = (1*4 + -2*4)/8 = -0.5 (midpoints 2, 7); q1 = 0.5 (10.25);
        // q2 = 1.0 (22); q3 = 2.0 (35).
        assert_eq!(c.quarters, [Some(-0.5), Some(0.5), Some(1.0), Some(2.0)]);
        assert_eq!(c.trend, Some(2.5));
        assert_eq!(c.trend_word, "improved");
        assert_eq!(c.most_negative.len(), 1);
        assert_eq!(c.most_negative[0].text, "It is broken again.");
        assert_eq!(c.speakers[1].quarters, [Some(-2.0), None, Some(1.0), None]);
    }

    #[test]
    fn without_speakers_or_windows() {
        let mut s = Summarizer::default();
        let empty = s.summary(30.0, false);
        assert_eq!(
            (empty.windows, empty.speech_s, empty.silence_share),
            (0, 0.0, 1.0)
        );
        assert_eq!(empty.trend_word, "unknown");
        s.add(1.0, 2.0, None, None, None, "");
        s.add(1.5, 3.0, None, Some(-1.0), None, "no");
        let c = s.summary(0.0, true);
        assert_eq!(c.duration_s, 3.0, "at least to the last window's end");
        assert_eq!(c.speakers.len(), 1);
        assert_eq!(c.speakers[0].speaker, ALL);
        assert_eq!(
            (c.overlaps, c.speakers[0].turns),
            (0, 1),
            "one speaker never overlaps"
        );
        assert_eq!(c.speakers[0].mean_score, Some(-1.0));
    }

    #[test]
    fn short_pauses_between_a_speakers_windows_are_talk() {
        let build = |mut s: Summarizer| {
            s.add(0.0, 2.0, Some(2.0), Some(0.0), Some("a"), "one");
            s.add(2.3, 4.0, Some(1.7), Some(0.0), Some("a"), "two");
            s.add(4.5, 5.0, Some(0.5), Some(0.0), Some("a"), "three");
            s.add(5.2, 6.0, Some(0.8), Some(0.0), Some("b"), "four");
            s.summary(6.0, true)
        };
        // 0.3 s between "one" and "two" is talk; 0.5 s before "three" is not, nor is
        // the 0.2 s between two speakers.
        let with = build(Summarizer::new(0.4));
        let a = &with.speakers[0];
        assert!((a.talk_s - 4.5).abs() < 1e-9, "{}", a.talk_s);
        assert!((a.talk_share - 4.5 / 5.3).abs() < 1e-9);
        assert_eq!(a.turns, 1);
        let without = build(Summarizer::default());
        assert!((without.speakers[0].talk_s - 4.2).abs() < 1e-9);
        // A short reply of another speaker inside the pause: the pause is not a's talk;
        // nor is a pause of exactly talk_pause_s (2.4 - 2.0 in floating point).
        let mut s = Summarizer::new(0.4);
        s.add(0.0, 2.0, Some(2.0), None, Some("a"), "one");
        s.add(2.05, 2.25, Some(0.2), None, Some("b"), "yeah");
        s.add(2.3, 4.0, Some(1.7), None, Some("a"), "two");
        s.add(4.4, 5.0, Some(0.6), None, Some("a"), "three");
        let sum = s.summary(5.0, true);
        assert!(
            (sum.speakers[0].talk_s - 4.3).abs() < 1e-9,
            "{:?}",
            sum.speakers[0]
        );
    }
}
