//! Speaker diarization of mono audio, online: who speaks in each utterance window, as
//! windows come from the segmenter and before they are transcribed.
//!
//! A window's speech is cut into overlapping segments (`diarize.segment_s` every
//! `diarize.hop_s`); each gets a CAM++ embedding ([`campp`], over a Kaldi filterbank,
//! [`fbank`]); the stream's speaker [`registry`] labels them. Where the label changes, the
//! window is split at the quietest 20 ms inside the two segments' overlap, so each piece
//! has one speaker, its own transcript and its own sentiment. Pieces are renumbered so
//! `seq` stays gapless.
//!
//! Live streams learn their speakers as they go (online registry). A recording can be
//! read twice instead ([`Diarizer::learn`]): a first pass embeds all its speech and
//! clusters it ([`cluster`]), so every window, the first one included, is labelled
//! against speakers known from the whole call.

pub mod campp;
pub mod cluster;
pub mod fbank;
pub mod registry;
pub mod score;

use std::sync::Arc;
use std::time::Instant;

use tch::Tensor;

use crate::config::{DiarizeConfig, SegmentConfig, SourceConfig};
use crate::error::Error;
use crate::segment::{self, OpenSpeech, Vad, Window};
use crate::source::{Input, SAMPLE_RATE};
use campp::{CamPlus, EMBED_DIM};
use fbank::{Fbank, N_BINS};
use registry::{Registry, RegistryRules};

/// Energy is compared over frames of this many samples (20 ms) to place a split.
const QUIET_FRAME: usize = 320;
/// Segments shorter than this (samples, 0.4 s) are not embedded: too little voice.
const MIN_SEGMENT: usize = 6400;
/// Speech shorter than this (samples, 0.2 s) is not embedded at all: the window keeps
/// the previous window's speaker.
const MIN_SPEECH: usize = 3200;
/// A short last turn ([`Diarizer::short_tail`]) follows a pause of at least this long
/// (seconds), lasts at least `TAIL_MIN_S` and at most `TAIL_MAX_S` (longer ones are
/// resolved by the segments), and the window holds at least `TAIL_MAX_S` before it.
const TAIL_PAUSE_S: f64 = 0.25;
const TAIL_MIN_S: f64 = 0.5;
const TAIL_MAX_S: f64 = 2.0;
/// Segments per CAM++ forward.
const MAX_BATCH: usize = 8;
/// The learning pass clusters at most this many segments (evenly spread).
const LEARN_MAX_SEGMENTS: usize = 3000;

/// `(start, end)` sample ranges of the segments covering `from..to`: `len` long every
/// `hop`, the last one ending at `to`; one segment when the span is shorter than `len`.
pub fn segments(from: usize, to: usize, len: usize, hop: usize) -> Vec<(usize, usize)> {
    if to <= from + len {
        return vec![(from, to)];
    }
    let mut out: Vec<(usize, usize)> = (0..)
        .map(|k| from + k * hop)
        .take_while(|s| s + len < to)
        .map(|s| (s, s + len))
        .collect();
    if out.last().is_some_and(|l| to - len - l.0 < hop / 2) {
        out.pop();
    }
    out.push((to - len, to));
    out
}

/// The quietest `QUIET_FRAME` of `audio[from..to]`: its centre, as a sample index.
pub fn quietest(audio: &[f32], from: usize, to: usize) -> usize {
    let to = to.min(audio.len());
    if to <= from + QUIET_FRAME {
        return (from + to) / 2;
    }
    (from..=to - QUIET_FRAME)
        .step_by(QUIET_FRAME / 4)
        .map(|s| {
            (
                s,
                audio[s..s + QUIET_FRAME].iter().map(|v| v * v).sum::<f32>(),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or((from + to) / 2, |(s, _)| s + QUIET_FRAME / 2)
}

/// Audio with its voiced runs: `audio[0]` at stream time `start`.
struct Speech<'a> {
    audio: &'a [f32],
    start: f64,
    voiced: &'a [(f64, f64)],
}

impl Speech<'_> {
    /// Index into `audio` of stream time `t` (clamped).
    fn index(&self, t: f64) -> usize {
        segment::sample_index(self.start, self.audio.len(), t)
    }
}

/// A segment's embedding computed while its speech was still going on, keyed by the
/// stream time of its first sample (in samples).
struct Cached {
    at: i64,
    len: usize,
    emb: Vec<f32>,
}

/// Cached segments whose start is within this many samples match.
const CACHE_SLACK: i64 = 4;

/// One stream's diarizer.
pub struct Diarizer {
    net: Arc<CamPlus>,
    rules: RegistryRules,
    fbank: Fbank,
    registry: Registry,
    seg_len: usize,
    hop: usize,
    feats: Vec<f32>,
    batch: Vec<f32>,
    next_seq: u64,
    /// Speaker of the last window (for windows too short to embed).
    last_speaker: Option<u32>,
    /// Embeddings of the open speech's segments (live streams, [`Diarizer::watch`]).
    cache: Vec<Cached>,
    /// Segments embedded, and the time spent, for the benchmark and logs.
    pub segments_done: u64,
    /// Seconds spent embedding and labelling.
    pub busy_s: f64,
}

impl Diarizer {
    /// A diarizer for a new stream, sharing the loaded network.
    pub fn new(cfg: &DiarizeConfig, net: Arc<CamPlus>) -> Self {
        let rules = RegistryRules {
            limit: cfg.speaker_limit(),
            given: cfg.speakers as usize,
        };
        Self {
            net,
            rules,
            fbank: Fbank::new(),
            registry: Registry::new(rules),
            seg_len: (cfg.segment_s * SAMPLE_RATE as f32) as usize,
            hop: (cfg.hop_s * SAMPLE_RATE as f32) as usize,
            feats: Vec::new(),
            batch: Vec::new(),
            next_seq: 0,
            last_speaker: None,
            cache: Vec::new(),
            segments_done: 0,
            busy_s: 0.0,
        }
    }

    /// Speakers met so far.
    pub fn speakers(&self) -> usize {
        self.registry.len()
    }

    /// Labels `w` and appends it to `out`, split where the speaker changes.
    pub fn process(&mut self, w: Window, out: &mut impl Extend<Window>) {
        let t0 = Instant::now();
        let rate = SAMPLE_RATE as f64;
        let (from, to) = (w.sample_at(w.start), w.sample_at(w.end));
        let segs: Vec<(usize, usize)> = segments(from, to, self.seg_len, self.hop)
            .into_iter()
            .filter(|(a, b)| b - a >= MIN_SEGMENT.min(to - from))
            .collect();
        let labels = if segs.is_empty() || to - from < MIN_SPEECH {
            Vec::new()
        } else {
            let embs = self.embed_cached(&w.audio, w.audio_start, &segs);
            let labels = self.registry.label(&embs);
            tracing::debug!("window {:.2}-{:.2} s: labels {labels:?}", w.start, w.end);
            labels
        };
        let end = key(w.end);
        self.cache.retain(|c| c.at >= end);
        self.busy_s += t0.elapsed().as_secs_f64();
        // Split points (sample indices) where the label changes.
        let mut cuts = Vec::new();
        for (i, pair) in labels.windows(2).enumerate() {
            if pair[0] != pair[1] {
                let (next_start, prev_end) = (segs[i + 1].0, segs[i].1);
                cuts.push(if next_start < prev_end {
                    quietest(&w.audio, next_start, prev_end)
                } else {
                    (prev_end + next_start) / 2
                });
            }
        }
        let mut piece_labels: Vec<u32> = registry::runs(&labels)
            .into_iter()
            .map(|r| r.0 as u32 + 1)
            .collect();
        if let Some((cut, speaker)) = self.short_tail(&w, &labels)
            && cuts.last().is_none_or(|&c| cut > c)
        {
            cuts.push(cut);
            piece_labels.push(speaker as u32 + 1);
        }
        self.settle_cuts(&w, &mut cuts, &piece_labels);
        if cuts.is_empty() {
            let speaker = labels.first().map(|&l| l as u32 + 1).or(self.last_speaker);
            self.last_speaker = speaker;
            out.extend(std::iter::once(Window {
                seq: self.take_seq(),
                speaker,
                ..w
            }));
            return;
        }
        self.last_speaker = piece_labels.last().copied();
        let mut run_labels = piece_labels.into_iter();
        let time = |i: usize| w.audio_start + i as f64 / rate;
        let mut piece_from = 0;
        let mut speech_from = w.start;
        let bounds: Vec<usize> = cuts.iter().copied().chain([w.audio.len()]).collect();
        for (k, &cut) in bounds.iter().enumerate() {
            let last = k + 1 == bounds.len();
            let speech_to = if last { w.end } else { time(cut) };
            let voiced = w
                .voiced
                .iter()
                .map(|&(a, b)| (a.max(speech_from), b.min(speech_to)))
                .filter(|(a, b)| b > a)
                .collect();
            out.extend(std::iter::once(Window {
                seq: self.take_seq(),
                start: speech_from,
                end: speech_to,
                audio_start: time(piece_from),
                audio: w.audio[piece_from..cut].to_vec(),
                speaker: run_labels.next(),
                voiced,
            }));
            piece_from = cut;
            speech_from = speech_to;
        }
    }

    /// Moves cuts placed inside the segments' overlap to the pause that really ends the
    /// turn ([`Diarizer::settled`]).
    fn settle_cuts(&mut self, w: &Window, cuts: &mut [usize], piece_labels: &[u32]) {
        let time = |i: usize| w.audio_start + i as f64 / SAMPLE_RATE as f64;
        let speech = Speech {
            audio: &w.audio,
            start: w.audio_start,
            voiced: &w.voiced,
        };
        for k in 0..cuts.len() {
            let until = cuts.get(k + 1).map_or(w.end, |&c| time(c));
            let before = piece_labels[k] as usize - 1;
            if piece_labels[k + 1] as usize - 1 != before
                && let Some(t) = self.settled(&speech, time(cuts[k]), until - TAIL_MAX_S, before)
            {
                cuts[k] = w.sample_at(t);
            }
        }
    }

    /// Where a cut at stream time `at` between speaker `before` and another belongs:
    /// when the speech after it, up to its first pause of at least [`TAIL_PAUSE_S`],
    /// lasts [`TAIL_MIN_S`]..[`TAIL_MAX_S`], the pause ends by `latest`, and that speech
    /// embedded alone is closest to `before` (the end of a turn: "..., thank you."), the
    /// middle of that pause.
    fn settled(&mut self, sp: &Speech, at: f64, latest: f64, before: usize) -> Option<f64> {
        let (gap_from, gap_to) = sp
            .voiced
            .windows(2)
            .map(|p| (p[0].1, p[1].0))
            .find(|(a, b)| *a > at && b - a >= TAIL_PAUSE_S)?;
        if !(TAIL_MIN_S..=TAIL_MAX_S).contains(&(gap_from - at)) || gap_to > latest {
            return None;
        }
        let speaker = self.speaker_of(sp.audio, (sp.index(at), sp.index(gap_from)));
        (speaker == before).then_some((gap_from + gap_to) / 2.0)
    }

    /// The known speaker closest to `audio[seg.0..seg.1]` embedded alone.
    fn speaker_of(&mut self, audio: &[f32], seg: (usize, usize)) -> usize {
        let t0 = Instant::now();
        let emb = self.embed(audio, &[seg]);
        self.busy_s += t0.elapsed().as_secs_f64();
        self.registry.nearest(&emb)[0]
    }

    /// A short last turn after a pause, too short for the segment grid to resolve (a
    /// quick "Thursday is fine." closing the other speaker's window): the stretch after
    /// the window's last pause of at least [`TAIL_PAUSE_S`], when it lasts
    /// [`TAIL_MIN_S`]..[`TAIL_MAX_S`], is embedded alone; if another known speaker is
    /// closest to it, the window is cut in the middle of that pause. Returns the cut
    /// (sample index) and the tail's speaker.
    fn short_tail(&mut self, w: &Window, labels: &[usize]) -> Option<(usize, usize)> {
        let &last = labels.last()?;
        if self.registry.len() < 2 {
            return None;
        }
        let (gap_from, gap_to) = w
            .voiced
            .windows(2)
            .rev()
            .map(|p| (p[0].1, p[1].0))
            .find(|(a, b)| b - a >= TAIL_PAUSE_S)?;
        let tail = w.end - gap_to;
        if !(TAIL_MIN_S..=TAIL_MAX_S).contains(&tail) || gap_from - w.start < TAIL_MAX_S {
            return None;
        }
        let speaker = self.speaker_of(&w.audio, (w.sample_at(gap_to), w.sample_at(w.end)));
        (speaker != last).then(|| (w.sample_at((gap_from + gap_to) / 2.0), speaker))
    }

    /// Looks at the speech still going on in a live stream (`open`: its span and audio,
    /// from [`crate::segment::Segmenter::open_speech`]): embeds its segments as they
    /// complete, so a window's embeddings are mostly done when it closes, and returns
    /// the stream time at which to end the window when the speaker has changed inside it
    /// (the new speaker holding the last [`registry::MIN_RUN`] segments): the first piece
    /// then goes out without waiting for the pause after the second. Recordings labelled
    /// against a learnt registry are never cut early (they have no latency to save).
    pub fn watch(&mut self, open: Option<OpenSpeech<'_>>) -> Option<f64> {
        let open = open?;
        let (span, audio) = (open.span, open.audio);
        if self.registry.is_fixed() || audio.len() < self.seg_len {
            return None;
        }
        let n = (audio.len() - self.seg_len) / self.hop + 1;
        let segs: Vec<(usize, usize)> = (0..n)
            .map(|k| (k * self.hop, k * self.hop + self.seg_len))
            .collect();
        if self
            .find(key(span.start) + segs[n - 1].0 as i64, self.seg_len)
            .is_some()
        {
            return None;
        }
        let t0 = Instant::now();
        let embs = self.embed_cached(audio, span.start, &segs);
        let mut cut = None;
        if n > registry::MIN_RUN && !self.registry.is_empty() {
            // Each segment's closest known speaker (no clustering, no learning: cheap
            // enough for every new segment); a new speaker waits for the window's end.
            let labels = self.registry.nearest(&embs);
            let runs = registry::runs(&labels);
            if let Some(&(_, first, last)) = runs.get(1)
                && last - first >= registry::MIN_RUN
            {
                let (next_start, prev_end) = (segs[first].0, segs[first - 1].1);
                let at =
                    span.start + quietest(audio, next_start, prev_end) as f64 / SAMPLE_RATE as f64;
                let voiced = open.voiced();
                let speech = Speech {
                    audio,
                    start: span.start,
                    voiced: &voiced,
                };
                // The new voice keeps some speech after a moved cut.
                let latest = span.end - self.hop as f64 / SAMPLE_RATE as f64;
                cut = Some(self.settled(&speech, at, latest, runs[0].0).unwrap_or(at));
                tracing::debug!(
                    "speaker change in open speech from {:.2} s: labels {labels:?}, cut at {:.2} s",
                    span.start,
                    cut.unwrap_or_default()
                );
            }
        }
        self.busy_s += t0.elapsed().as_secs_f64();
        cut
    }

    fn find(&self, at: i64, len: usize) -> Option<&Cached> {
        self.cache
            .iter()
            .find(|c| c.len == len && (c.at - at).abs() <= CACHE_SLACK)
    }

    /// Embeddings of `audio`'s segments (`audio[0]` at stream time `start`), reusing
    /// those [`Diarizer::watch`] computed and caching the new ones (live streams).
    fn embed_cached(
        &mut self,
        audio: &[f32],
        start: f64,
        segs: &[(usize, usize)],
    ) -> Vec<Vec<f32>> {
        let at = |s: &(usize, usize)| key(start) + s.0 as i64;
        let missing: Vec<(usize, usize)> = segs
            .iter()
            .filter(|s| self.find(at(s), s.1 - s.0).is_none())
            .copied()
            .collect();
        let fresh = self.embed(audio, &missing);
        let keep = !self.registry.is_fixed();
        let mut fresh = missing.iter().zip(fresh);
        let mut out = Vec::with_capacity(segs.len());
        for s in segs {
            match self.find(at(s), s.1 - s.0) {
                Some(c) => out.push(c.emb.clone()),
                None => {
                    let (m, e) = fresh.next().expect("an embedding per missing segment");
                    debug_assert_eq!(m, s);
                    if keep {
                        self.cache.push(Cached {
                            at: at(s),
                            len: s.1 - s.0,
                            emb: e.clone(),
                        });
                    }
                    out.push(e);
                }
            }
        }
        out
    }

    /// The learning pass of a recording: decodes `input` to its end, cuts it with the VAD,
    /// embeds its speech in half-overlapping segments and clusters them; afterwards every
    /// window is labelled against those speakers. Returns the number of speakers.
    pub(crate) fn learn(
        &mut self,
        input: &Input,
        source: &SourceConfig,
        segment_cfg: &SegmentConfig,
        vad: Vad,
    ) -> Result<usize, Error> {
        let t0 = Instant::now();
        let mut embs = Vec::new();
        let hop = self.seg_len / 2;
        segment::cut_input(input, source, segment_cfg, vad, &mut |w| {
            self.learn_window(&w, hop, &mut embs)
        })?;
        if embs.len() > LEARN_MAX_SEGMENTS {
            let step = embs.len() as f64 / LEARN_MAX_SEGMENTS as f64;
            embs = (0..LEARN_MAX_SEGMENTS)
                .map(|i| std::mem::take(&mut embs[(i as f64 * step) as usize]))
                .collect();
        }
        let labels = cluster::cluster(&embs, self.rules.given, self.rules.limit);
        let k = labels.iter().max().map_or(0, |m| m + 1);
        if k > 0 {
            self.registry = Registry::seeded(self.rules, &cluster::centroids(&embs, &labels, k));
        }
        self.busy_s += t0.elapsed().as_secs_f64();
        tracing::info!(
            "diarization learning pass: {} segments, {k} speaker(s), {:.1} s",
            embs.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(k)
    }

    fn learn_window(&mut self, w: &Window, hop: usize, embs: &mut Vec<Vec<f32>>) {
        let segs: Vec<(usize, usize)> =
            segments(w.sample_at(w.start), w.sample_at(w.end), self.seg_len, hop)
                .into_iter()
                .filter(|(a, b)| b - a >= MIN_SEGMENT)
                .collect();
        if !segs.is_empty() {
            embs.extend(self.embed(&w.audio, &segs));
        }
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Unit-length embeddings of `audio`'s segments (one batch per segment length).
    fn embed(&mut self, audio: &[f32], segs: &[(usize, usize)]) -> Vec<Vec<f32>> {
        let mut out = vec![Vec::new(); segs.len()];
        let mut lens: Vec<usize> = segs.iter().map(|s| s.1 - s.0).collect();
        lens.sort_unstable();
        lens.dedup();
        for len in lens {
            let same: Vec<usize> = (0..segs.len())
                .filter(|&i| segs[i].1 - segs[i].0 == len)
                .collect();
            // Small batches: CAM++'s dense blocks keep every layer's output, so memory
            // grows with the batch while speed does not.
            for idx in same.chunks(MAX_BATCH) {
                self.batch.clear();
                for &i in idx {
                    self.fbank
                        .compute(&audio[segs[i].0..segs[i].1], &mut self.feats);
                    self.batch.extend_from_slice(&self.feats);
                }
                let frames = (self.batch.len() / N_BINS / idx.len()) as i64;
                let x = Tensor::from_slice(&self.batch).reshape([
                    idx.len() as i64,
                    frames,
                    N_BINS as i64,
                ]);
                let e = self.net.embed(&x);
                let flat: Vec<f32> =
                    Vec::<f32>::try_from(e.flatten(0, -1)).expect("f32 embeddings");
                for (j, &i) in idx.iter().enumerate() {
                    let mut v = flat[j * EMBED_DIM..(j + 1) * EMBED_DIM].to_vec();
                    registry::normalize(&mut v);
                    out[i] = v;
                }
            }
            self.segments_done += same.len() as u64;
        }
        out
    }
}

/// Stream time `t` in samples (cache keys).
fn key(t: f64) -> i64 {
    (t * SAMPLE_RATE as f64).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_span() {
        assert_eq!(segments(0, 100, 150, 50), vec![(0, 100)]);
        assert_eq!(
            segments(0, 300, 150, 50),
            vec![(0, 150), (50, 200), (100, 250), (150, 300)]
        );
        // The tail segment ends at the span's end; a start too close to it is dropped.
        assert_eq!(segments(10, 230, 150, 50), vec![(10, 160), (80, 230)]);
    }

    #[test]
    fn the_quietest_frame_is_found() {
        let mut a = vec![0.5f32; 16000];
        a[9000..9400].fill(0.0);
        let q = quietest(&a, 8000, 12000);
        assert!((9000..9400).contains(&q), "{q}");
    }
}
