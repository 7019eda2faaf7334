//! The online speaker registry: pure decisions over unit-length speaker embeddings.
//!
//! A live stream's speakers are learnt as it goes. For each window, [`Registry::label`]
//! clusters the stream's recent segments together with the window's ([`super::cluster`]:
//! relative, so it needs no similarity threshold that would hold for one kind of voice
//! and not another), keeps each earlier speaker's number on the cluster that holds most
//! of its segments, and opens a new speaker for a cluster of new segments only. Runs
//! shorter than [`MIN_RUN`] segments between longer ones take a neighbour's label (one
//! odd segment is noise, not a turn). A registry seeded with the speakers of a whole
//! recording ([`Registry::seeded`]) is fixed: each segment is the most similar of them.
//! Labels are 0-based, in order of first appearance.

/// A speaker change needs this many consecutive segments.
pub const MIN_RUN: usize = 2;

/// A new speaker needs this many segments of one window (3 s of speech at the default
/// 1.5 s segments every 0.5 s).
pub const NEW_SPEAKER_SEGMENTS: usize = 4;

/// One speaker: the sum of its embeddings (their mean's direction is what counts).
#[derive(Debug, Clone)]
struct Speaker {
    sum: Vec<f32>,
    norm: f32,
}

impl Speaker {
    fn new(e: &[f32]) -> Self {
        let mut s = Self {
            sum: vec![0.0; e.len()],
            norm: 0.0,
        };
        s.add(e);
        s
    }

    fn add(&mut self, e: &[f32]) {
        for (s, v) in self.sum.iter_mut().zip(e) {
            *s += v;
        }
        self.norm = self.sum.iter().map(|v| v * v).sum::<f32>().sqrt();
    }

    /// Cosine similarity of a unit vector with this speaker's mean.
    fn similarity(&self, e: &[f32]) -> f32 {
        let dot: f32 = self.sum.iter().zip(e).map(|(a, b)| a * b).sum();
        dot / self.norm.max(1e-12)
    }
}

/// Registry settings (from `[diarize]`).
#[derive(Debug, Clone, Copy)]
pub struct RegistryRules {
    /// Most speakers.
    pub limit: usize,
    /// Speakers given (0: estimate).
    pub given: usize,
}

/// The speakers of one stream.
#[derive(Debug, Clone)]
pub struct Registry {
    rules: RegistryRules,
    speakers: Vec<Speaker>,
    /// Seeded from a whole recording: no new speakers, no learning.
    fixed: bool,
    /// Recent segments and their labels (online re-clustering).
    history: Vec<Vec<f32>>,
    history_labels: Vec<usize>,
}

/// Segments kept for online re-clustering.
const HISTORY: usize = 400;

/// Scales `e` to unit length in place (a zero vector stays zero).
pub fn normalize(e: &mut [f32]) {
    let n = e.iter().map(|v| v * v).sum::<f32>().sqrt();
    if n > 0.0 {
        e.iter_mut().for_each(|v| *v /= n);
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(rules: RegistryRules) -> Self {
        Self {
            rules,
            speakers: Vec::new(),
            fixed: false,
            history: Vec::new(),
            history_labels: Vec::new(),
        }
    }

    /// A fixed registry of known speakers (unit mean embeddings, in label order).
    pub fn seeded(rules: RegistryRules, centroids: &[Vec<f32>]) -> Self {
        Self {
            rules,
            speakers: centroids.iter().map(|c| Speaker::new(c)).collect(),
            fixed: true,
            history: Vec::new(),
            history_labels: Vec::new(),
        }
    }

    /// Seeded from a whole recording (labels only, no learning).
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Speakers met so far.
    pub fn len(&self) -> usize {
        self.speakers.len()
    }

    /// True before the first speaker.
    pub fn is_empty(&self) -> bool {
        self.speakers.is_empty()
    }

    /// Labels one window's segments (unit embeddings, in time order) and learns from
    /// them: the recent segments and these are clustered again, the clusters are mapped
    /// onto the speakers their earlier segments had (most shared segments first), and a
    /// cluster with no earlier segments is a new speaker (while under the limit).
    pub fn label(&mut self, embs: &[Vec<f32>]) -> Vec<usize> {
        if self.fixed {
            return self.nearest(embs);
        }
        let start = self.history.len();
        self.history.extend(embs.iter().cloned());
        let clusters = super::cluster::cluster(&self.history, self.rules.given, self.rules.limit);
        let k = clusters.iter().max().map_or(0, |m| m + 1);
        // Map clusters onto the speakers that their earlier segments were given.
        let mut overlap = vec![vec![0usize; self.speakers.len()]; k];
        for (c, &l) in clusters.iter().zip(&self.history_labels) {
            overlap[*c][l] += 1;
        }
        let mut map: Vec<usize> = greedy_match(&overlap, 1)
            .into_iter()
            .map(|m| m.unwrap_or(usize::MAX))
            .collect();
        let mut labels: Vec<usize> = Vec::with_capacity(embs.len());
        let mut next = self.speakers.len();
        let mut fresh = vec![0usize; k];
        clusters[start..].iter().for_each(|&c| fresh[c] += 1);
        for (i, e) in embs.iter().enumerate() {
            let c = clusters[start + i];
            if map[c] == usize::MAX {
                // A new speaker needs NEW_SPEAKER_SEGMENTS of its own (the first one
                // excepted): a short odd stretch is a known voice sounding different.
                let enough = fresh[c] >= NEW_SPEAKER_SEGMENTS || self.speakers.is_empty();
                map[c] = if next < self.rules.limit && enough {
                    next += 1;
                    next - 1
                } else {
                    self.nearest(std::slice::from_ref(e))[0]
                };
            }
            labels.push(map[c]);
        }
        let ones = vec![1.0; labels.len()];
        smooth(&mut labels, &ones);
        self.commit(embs, &mut labels, next.max(self.speakers.len()));
        self.history_labels.extend(labels.iter().copied());
        if self.history.len() > HISTORY {
            let drop = self.history.len() - HISTORY;
            self.history.drain(..drop);
            self.history_labels.drain(..drop);
        }
        labels
    }

    /// Each segment's most similar known speaker, smoothed (no learning).
    pub fn nearest(&self, embs: &[Vec<f32>]) -> Vec<usize> {
        let mut labels = Vec::with_capacity(embs.len());
        let mut sims = Vec::with_capacity(embs.len());
        for e in embs {
            let (i, sim) = self
                .speakers
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.similarity(e)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 0.0));
            labels.push(i);
            sims.push(sim);
        }
        smooth(&mut labels, &sims);
        labels
    }

    /// Adds the window's segments to their speakers; provisional speakers that kept
    /// segments become real (numbered in order of appearance), the others vanish.
    fn commit(&mut self, embs: &[Vec<f32>], labels: &mut [usize], provisional: usize) {
        let known = self.speakers.len();
        let mut renumber = vec![usize::MAX; provisional];
        let mut next = known;
        for l in labels.iter_mut().filter(|l| **l >= known) {
            if renumber[*l] == usize::MAX {
                renumber[*l] = next;
                next += 1;
            }
            *l = renumber[*l];
        }
        for (e, &l) in embs.iter().zip(labels.iter()) {
            match self.speakers.get_mut(l) {
                Some(s) => s.add(e),
                None => self.speakers.push(Speaker::new(e)),
            }
        }
    }
}

/// Replaces runs shorter than [`MIN_RUN`] with a neighbouring run's label (the longer
/// neighbour), shortest run first; among equally short runs, first the one whose speaker
/// has the fewest segments in the window, then the one that matched worst. A window that
/// is one short run keeps it.
pub fn smooth(labels: &mut [usize], sims: &[f32]) {
    loop {
        let runs = runs(labels);
        if runs.len() < 2 {
            return;
        }
        let count = |l: usize| labels.iter().filter(|&&x| x == l).count();
        let key = |r: &(usize, usize, usize)| {
            let fit: f32 = sims[r.1..r.2].iter().sum();
            (r.2 - r.1, count(r.0), fit)
        };
        let Some(k) = (0..runs.len())
            .filter(|&k| runs[k].2 - runs[k].1 < MIN_RUN)
            .min_by(|&a, &b| {
                let (ka, kb) = (key(&runs[a]), key(&runs[b]));
                (ka.0, ka.1).cmp(&(kb.0, kb.1)).then(ka.2.total_cmp(&kb.2))
            })
        else {
            return;
        };
        let len = |j: usize| runs[j].2 - runs[j].1;
        let to = match (k.checked_sub(1), runs.get(k + 1)) {
            (Some(p), Some(_)) if len(p) >= len(k + 1) => runs[p].0,
            (_, Some(n)) => n.0,
            (Some(p), None) => runs[p].0,
            (None, None) => return,
        };
        let (_, a, b) = runs[k];
        labels[a..b].fill(to);
    }
}

/// A one-to-one matching of rows to columns by the largest counts first (pairs with a
/// count below `min` stay unmatched): `shared[row][col]` -> the column of each row.
pub fn greedy_match(shared: &[Vec<usize>], min: usize) -> Vec<Option<usize>> {
    let cols = shared.first().map_or(0, Vec::len);
    let mut pairs: Vec<(usize, usize, usize)> = (0..shared.len())
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| (shared[r][c], r, c))
        .filter(|p| p.0 >= min)
        .collect();
    pairs.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    let mut map = vec![None; shared.len()];
    let mut taken = vec![false; cols];
    for (_, r, c) in pairs {
        if map[r].is_none() && !taken[c] {
            map[r] = Some(c);
            taken[c] = true;
        }
    }
    map
}

/// `(label, first, end)` of each run of equal labels.
pub fn runs(labels: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.0 == l => r.2 = i + 1,
            _ => out.push((l, i, i + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(limit: usize) -> RegistryRules {
        RegistryRules { limit, given: 0 }
    }

    /// `n` noisy unit vectors around direction `axis` (the voices are alike: a shared
    /// component dominates every vector).
    fn voice(axis: usize, n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..12)
                    .map(|d| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let noise = ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.3;
                        noise
                            + if d == 0 {
                                2.0
                            } else if d == axis {
                                1.2
                            } else {
                                0.0
                            }
                    })
                    .collect();
                normalize(&mut v);
                v
            })
            .collect()
    }

    #[test]
    fn a_second_voice_opens_a_speaker_and_keeps_its_number() {
        let mut r = Registry::new(rules(8));
        assert_eq!(r.label(&voice(1, 8, 1)), vec![0; 8]);
        assert_eq!(r.label(&voice(2, 6, 2)), vec![1; 6]);
        let mut mixed = voice(1, 4, 3);
        mixed.extend(voice(2, 4, 4));
        assert_eq!(r.label(&mixed), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(r.label(&voice(2, 3, 5)), vec![1; 3]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_short_odd_stretch_does_not_open_a_speaker() {
        let mut r = Registry::new(rules(8));
        r.label(&voice(1, 8, 1));
        r.label(&voice(2, 8, 2));
        // Two segments of a third voice: too little to be a new speaker.
        let l = r.label(&voice(3, NEW_SPEAKER_SEGMENTS - 1, 3));
        assert!(l.iter().all(|&s| s < 2), "{l:?}");
        assert_eq!(r.len(), 2);
        // Enough of it is.
        assert_eq!(r.label(&voice(3, 6, 4)), vec![2; 6]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn the_limit_holds_and_a_seeded_registry_is_fixed() {
        let mut r = Registry::new(rules(2));
        for axis in 1..=3 {
            r.label(&voice(axis, 8, axis as u64));
        }
        assert_eq!(r.len(), 2);
        let c: Vec<Vec<f32>> = (1..=3).map(|a| voice(a, 1, 9)[0].clone()).collect();
        let mut fixed = Registry::seeded(rules(8), &c);
        assert_eq!(fixed.label(&voice(3, 4, 7)), vec![2; 4]);
        assert_eq!(fixed.len(), 3);
    }

    #[test]
    fn smoothing_prefers_the_longer_neighbour() {
        let mut l = vec![0, 0, 0, 1, 2, 2];
        smooth(&mut l, &[1.0; 6]);
        assert_eq!(l, vec![0, 0, 0, 0, 2, 2]);
        let mut l = vec![0, 1, 0, 0];
        smooth(&mut l, &[1.0; 4]);
        assert_eq!(l, vec![0; 4]);
        let mut l = vec![1];
        smooth(&mut l, &[1.0]);
        assert_eq!(l, vec![1]);
        assert_eq!(runs(&[3, 3, 1, 3]), vec![(3, 0, 2), (1, 2, 3), (3, 3, 4)]);
    }
}
