//! Offline speaker clustering of a whole recording's segment embeddings: spectral
//! clustering of the cosine affinity matrix (each row pruned to its strongest entries,
//! symmetrised; unnormalised Laplacian), the number of speakers from the largest gap
//! between consecutive eigenvalues unless it is given, k-means on the leading
//! eigenvectors; clusters smaller than [`MIN_CLUSTER`] segments join the nearest large
//! one. Relative, not absolute: it separates voices whose embeddings are all alike (two
//! synthetic voices) as long as each is more like itself than like the others.

use tch::{Kind, Tensor};

/// Clusters with fewer segments are merged into the nearest larger one.
pub const MIN_CLUSTER: usize = 4;
/// Share of each affinity row kept (at least [`MIN_KEPT`] entries).
const KEEP_SHARE: f64 = 0.05;
const MIN_KEPT: usize = 6;
/// k-means restarts (deterministic seeds) and iterations.
const RESTARTS: u64 = 8;
const ITERATIONS: usize = 50;

/// Mean direction of each label's embeddings, unit length; `labels` in `0..k`.
pub fn centroids(embs: &[Vec<f32>], labels: &[usize], k: usize) -> Vec<Vec<f32>> {
    let dim = embs.first().map_or(0, Vec::len);
    let mut c = vec![vec![0.0f32; dim]; k];
    for (e, &l) in embs.iter().zip(labels) {
        for (a, b) in c[l].iter_mut().zip(e) {
            *a += b;
        }
    }
    c.iter_mut().for_each(|v| super::registry::normalize(v));
    c
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Labels `embs` (unit vectors) into speakers: `speakers` of them when given (> 0),
/// else an estimate in `1..=max_speakers`. Labels are numbered in order of first
/// appearance.
pub fn cluster(embs: &[Vec<f32>], speakers: usize, max_speakers: usize) -> Vec<usize> {
    let n = embs.len();
    if n == 0 {
        return Vec::new();
    }
    if n <= MIN_KEPT.max(speakers) || speakers == 1 || max_speakers == 1 {
        return if speakers > 1 && n >= speakers {
            // Too few segments for a spectral estimate: the nearest of `speakers` seeds.
            kmeans(embs, speakers, 0)
        } else {
            vec![0; n]
        };
    }
    let spectral = spectral_embedding(embs, speakers, max_speakers);
    let k = spectral.first().map_or(1, Vec::len);
    let mut labels = (0..RESTARTS)
        .map(|seed| {
            let l = kmeans(&spectral, k, seed);
            (inertia(&spectral, &l, k), l)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|x| x.1)
        .unwrap_or_else(|| vec![0; n]);
    merge_small(embs, &mut labels, k);
    renumber(&mut labels);
    labels
}

/// The leading eigenvectors of the pruned affinity's Laplacian, one row per segment.
fn spectral_embedding(embs: &[Vec<f32>], speakers: usize, max_speakers: usize) -> Vec<Vec<f32>> {
    let n = embs.len();
    let flat: Vec<f32> = embs.iter().flatten().copied().collect();
    let x = Tensor::from_slice(&flat).reshape([n as i64, -1]);
    let sim = x.matmul(&x.tr());
    let keep = ((KEEP_SHARE * n as f64).ceil() as usize)
        .max(MIN_KEPT)
        .min(n);
    let (top, idx) = sim.topk(keep as i64, 1, true, false);
    let pruned = sim.zeros_like().scatter(1, &idx, &top);
    let mut a = (&pruned + pruned.tr()) * 0.5;
    let _ = a.fill_diagonal_(0.0, false);
    let degree = a.sum_dim_intlist(Some([1i64].as_slice()), false, Kind::Float);
    let laplacian = degree.diag(0) - &a;
    let (values, vectors) = laplacian.to_kind(Kind::Double).linalg_eigh("L");
    let values: Vec<f64> = Vec::try_from(values).expect("f64 eigenvalues");
    let k = if speakers > 0 {
        speakers.min(n)
    } else {
        let top = (max_speakers + 1).min(n);
        (0..top - 1)
            .max_by(|&i, &j| (values[i + 1] - values[i]).total_cmp(&(values[j + 1] - values[j])))
            .map_or(1, |i| i + 1)
    };
    let lead = vectors
        .narrow(1, 0, k as i64)
        .to_kind(Kind::Float)
        .contiguous();
    let v: Vec<f32> = Vec::try_from(lead.flatten(0, -1)).expect("f32 vectors");
    v.chunks(k).map(<[f32]>::to_vec).collect()
}

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn inertia(x: &[Vec<f32>], labels: &[usize], k: usize) -> f32 {
    let c = means(x, labels, k);
    x.iter().zip(labels).map(|(p, &l)| dist2(p, &c[l])).sum()
}

fn means(x: &[Vec<f32>], labels: &[usize], k: usize) -> Vec<Vec<f32>> {
    let dim = x[0].len();
    let mut sum = vec![vec![0.0f32; dim]; k];
    let mut count = vec![0usize; k];
    for (p, &l) in x.iter().zip(labels) {
        count[l] += 1;
        sum[l].iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    for (s, &c) in sum.iter_mut().zip(&count) {
        s.iter_mut().for_each(|v| *v /= c.max(1) as f32);
    }
    sum
}

/// k-means with a deterministic farthest-point start (seeded first point).
fn kmeans(x: &[Vec<f32>], k: usize, seed: u64) -> Vec<usize> {
    let n = x.len();
    let first = (seed as usize * 7919) % n;
    let mut centres = vec![x[first].clone()];
    while centres.len() < k {
        let far = (0..n)
            .max_by(|&i, &j| {
                let d = |p: &[f32]| centres.iter().map(|c| dist2(p, c)).fold(f32::MAX, f32::min);
                d(&x[i]).total_cmp(&d(&x[j]))
            })
            .expect("points");
        centres.push(x[far].clone());
    }
    let mut labels = vec![0; n];
    for _ in 0..ITERATIONS {
        let next: Vec<usize> = x
            .iter()
            .map(|p| {
                (0..k)
                    .min_by(|&a, &b| dist2(p, &centres[a]).total_cmp(&dist2(p, &centres[b])))
                    .expect("k > 0")
            })
            .collect();
        let done = next == labels;
        labels = next;
        centres = means(x, &labels, k);
        if done {
            break;
        }
    }
    labels
}

/// Clusters under [`MIN_CLUSTER`] segments join the most similar large cluster (by
/// cosine to its centroid), segment by segment.
fn merge_small(embs: &[Vec<f32>], labels: &mut [usize], k: usize) {
    let count = |labels: &[usize], c: usize| labels.iter().filter(|&&l| l == c).count();
    let large: Vec<usize> = (0..k)
        .filter(|&c| count(labels, c) >= MIN_CLUSTER)
        .collect();
    if large.is_empty() || large.len() == k {
        return;
    }
    let cents = centroids(embs, labels, k);
    for (e, l) in embs.iter().zip(labels.iter_mut()) {
        if !large.contains(l) {
            *l = *large
                .iter()
                .max_by(|&&a, &&b| dot(e, &cents[a]).total_cmp(&dot(e, &cents[b])))
                .expect("a large cluster");
        }
    }
}

/// Renumbers labels in order of first appearance.
fn renumber(labels: &mut [usize]) {
    let mut map: Vec<(usize, usize)> = Vec::new();
    for l in labels.iter_mut() {
        let next = map.len();
        let to = match map.iter().find(|m| m.0 == *l) {
            Some(m) => m.1,
            None => {
                map.push((*l, next));
                next
            }
        };
        *l = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noisy unit vectors around `k` directions that are all alike (cosine ~0.8).
    fn voices(k: usize, per: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
        let dim = 16;
        let mut state = 12345u64;
        let mut rand = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let (mut x, mut truth) = (Vec::new(), Vec::new());
        for _ in 0..per {
            for s in 0..k {
                let mut v: Vec<f32> = (0..dim)
                    .map(|d| {
                        if d == 0 {
                            2.0
                        } else if d == s + 1 {
                            1.2
                        } else {
                            0.0
                        }
                    })
                    .collect();
                v.iter_mut().for_each(|a| *a += 0.35 * rand());
                super::super::registry::normalize(&mut v);
                x.push(v);
                truth.push(s);
            }
        }
        (x, truth)
    }

    fn agreement(a: &[usize], b: &[usize]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
    }

    #[test]
    fn similar_voices_are_separated_with_the_count_given_or_estimated() {
        for k in [2, 3] {
            let (x, truth) = voices(k, 20);
            let given = cluster(&x, k, 8);
            assert_eq!(agreement(&given, &truth), 1.0, "k = {k} given");
            let est = cluster(&x, 0, 8);
            assert_eq!(agreement(&est, &truth), 1.0, "k = {k} estimated");
        }
    }

    #[test]
    fn one_voice_stays_one_and_tiny_inputs_work() {
        let (x, _) = voices(1, 30);
        assert!(cluster(&x, 0, 8).iter().all(|&l| l == 0));
        assert_eq!(cluster(&x[..3], 0, 8), vec![0, 0, 0]);
        assert!(cluster(&[], 2, 8).is_empty());
    }
}
