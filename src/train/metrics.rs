//! Regression metrics of the MMSA toolkit for CMU-MOSI / MOSEI (labels in [-3, 3]):
//! Has0-Acc2 / Has0-F1 (truth >= 0 vs pred >= 0), Non0-Acc2 / Non0-F1 (samples with
//! truth = 0 removed, positive vs not), Acc3/5/7 (clip to [-1,1], [-2,2], [-3,3], round
//! half to even, compare), MAE and Pearson correlation. F1 is sklearn's weighted F1 over
//! the two classes. For CH-SIMS (labels in [-1, 1]) MMSA computes another table
//! ([`SimsMetrics`]): both sides clipped to [-1, 1] and binned by fixed edges.

use serde::Serialize;

/// The full metric table for one set of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Binary accuracy, truth >= 0 vs pred >= 0.
    pub(crate) has0_acc2: f64,
    /// Weighted F1 of the same.
    pub(crate) has0_f1: f64,
    /// Binary accuracy with zero-labelled samples removed (> 0 vs not).
    pub(crate) non0_acc2: f64,
    /// Weighted F1 of the same.
    pub(crate) non0_f1: f64,
    /// 3-class accuracy.
    pub(crate) acc3: f64,
    /// 5-class accuracy.
    pub(crate) acc5: f64,
    /// 7-class accuracy.
    pub(crate) acc7: f64,
    /// Mean absolute error.
    pub(crate) mae: f64,
    /// Pearson correlation (0 when undefined).
    pub(crate) corr: f64,
    /// Number of samples.
    pub n: usize,
}

fn accuracy(pred: &[bool], truth: &[bool]) -> f64 {
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / pred.len() as f64
}

/// sklearn `f1_score(truth, pred, average="weighted")` for two classes.
pub(crate) fn weighted_f1(truth: &[bool], pred: &[bool]) -> f64 {
    let n = truth.len();
    if n == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for class in [false, true] {
        let tp = truth
            .iter()
            .zip(pred)
            .filter(|(t, p)| **t == class && **p == class)
            .count() as f64;
        let fp = truth
            .iter()
            .zip(pred)
            .filter(|(t, p)| **t != class && **p == class)
            .count() as f64;
        let fneg = truth
            .iter()
            .zip(pred)
            .filter(|(t, p)| **t == class && **p != class)
            .count() as f64;
        let support = truth.iter().filter(|t| **t == class).count() as f64;
        let f1 = if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        };
        total += f1 * support;
    }
    total / n as f64
}

fn multiclass_acc(pred: &[f32], truth: &[f32], lim: f32) -> f64 {
    let r = |x: f32| x.clamp(-lim, lim).round_ties_even();
    pred.iter()
        .zip(truth)
        .filter(|(p, t)| r(**p) == r(**t))
        .count() as f64
        / pred.len().max(1) as f64
}

/// Pearson correlation; 0 when either side is constant.
pub(crate) fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    if a.len() < 2 {
        return 0.0;
    }
    let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Computes the table from predictions and truths of equal length.
pub fn compute(pred: &[f32], truth: &[f32]) -> Metrics {
    assert_eq!(
        pred.len(),
        truth.len(),
        "predictions and truths must pair up"
    );
    let n = pred.len();
    let has0_t: Vec<bool> = truth.iter().map(|&t| t >= 0.0).collect();
    let has0_p: Vec<bool> = pred.iter().map(|&p| p >= 0.0).collect();
    let nz: Vec<usize> = (0..n).filter(|&i| truth[i] != 0.0).collect();
    let non0_t: Vec<bool> = nz.iter().map(|&i| truth[i] > 0.0).collect();
    let non0_p: Vec<bool> = nz.iter().map(|&i| pred[i] > 0.0).collect();
    let mae = pred
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t).abs() as f64)
        .sum::<f64>()
        / n.max(1) as f64;
    Metrics {
        has0_acc2: accuracy(&has0_p, &has0_t),
        has0_f1: weighted_f1(&has0_t, &has0_p),
        non0_acc2: accuracy(&non0_p, &non0_t),
        non0_f1: weighted_f1(&non0_t, &non0_p),
        acc3: multiclass_acc(pred, truth, 1.0),
        acc5: multiclass_acc(pred, truth, 2.0),
        acc7: multiclass_acc(pred, truth, 3.0),
        mae,
        corr: pearson(pred, truth),
        n,
    }
}

/// MMSA's CH-SIMS regression metrics: predictions and truths clipped to [-1, 1], then
/// binned into left-open intervals: Acc2 over {[-1, 0], (0, 1]}, Acc3 over edges -0.1,
/// 0.1, Acc5 over -0.7, -0.1, 0.1, 0.7; F1 is the weighted F1 of the Acc2 classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimsMetrics {
    /// Two classes: (0, 1] vs [-1, 0].
    pub(crate) acc2: f64,
    /// Three classes.
    pub(crate) acc3: f64,
    /// Five classes.
    pub(crate) acc5: f64,
    /// Weighted F1 of the two classes.
    pub(crate) f1: f64,
    /// Mean absolute error (clipped values).
    pub(crate) mae: f64,
    /// Pearson correlation (clipped values).
    pub(crate) corr: f64,
}

/// Index of the left-open bin of `x` between `edges` (ascending inner edges).
fn sims_bin(x: f32, edges: &[f32]) -> usize {
    edges.iter().filter(|&&e| x > e).count()
}

/// The CH-SIMS table (see [`SimsMetrics`]).
pub fn compute_sims(pred: &[f32], truth: &[f32]) -> SimsMetrics {
    assert_eq!(
        pred.len(),
        truth.len(),
        "predictions and truths must pair up"
    );
    let p: Vec<f32> = pred.iter().map(|x| x.clamp(-1.0, 1.0)).collect();
    let t: Vec<f32> = truth.iter().map(|x| x.clamp(-1.0, 1.0)).collect();
    let acc = |edges: &[f32]| {
        p.iter()
            .zip(&t)
            .filter(|(a, b)| sims_bin(**a, edges) == sims_bin(**b, edges))
            .count() as f64
            / p.len().max(1) as f64
    };
    let pos_p: Vec<bool> = p.iter().map(|&x| x > 0.0).collect();
    let pos_t: Vec<bool> = t.iter().map(|&x| x > 0.0).collect();
    SimsMetrics {
        acc2: acc(&[0.0]),
        acc3: acc(&[-0.1, 0.1]),
        acc5: acc(&[-0.7, -0.1, 0.1, 0.7]),
        f1: weighted_f1(&pos_t, &pos_p),
        mae: p
            .iter()
            .zip(&t)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / p.len().max(1) as f64,
        corr: pearson(&p, &t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sims_table_by_hand() {
        // truth: -1.0  0.0  0.1  0.8  -0.4 ; pred: -0.2  0.05  0.12  1.4  0.0
        let truth = [-1.0, 0.0, 0.1, 0.8, -0.4];
        let pred = [-0.2, 0.05, 0.12, 1.4, 0.0];
        let m = compute_sims(&pred, &truth);
        // Acc2 (> 0): truth F F T T F ; pred F T T T F -> 4/5
        assert!((m.acc2 - 0.8).abs() < 1e-12);
        // Acc3 edges -0.1, 0.1: truth 0 1 1 2 0 ; pred 0 1 2 2 1 -> 3/5
        assert!((m.acc3 - 0.6).abs() < 1e-12);
        // Acc5 edges -0.7 -0.1 0.1 0.7: truth 0 2 2 4 1 ; pred 1 2 3 4 2 -> 2/5
        assert!((m.acc5 - 0.4).abs() < 1e-12);
        // MAE with pred 1.4 clipped to 1: (0.8 + 0.05 + 0.02 + 0.2 + 0.4) / 5 = 0.294
        assert!((m.mae - 0.294).abs() < 1e-6);
    }

    #[test]
    fn hand_computed_case() {
        // truth:  2.0  -1.0  0.0  0.6  -2.6
        // pred:   1.4   0.4 -0.2 -0.4  -3.0
        let truth = [2.0, -1.0, 0.0, 0.6, -2.6];
        let pred = [1.4, 0.4, -0.2, -0.4, -3.0];
        let m = compute(&pred, &truth);
        // has-0: truth >= 0: T F T T F ; pred >= 0: T T F F F -> correct: 1,0,0,0,1 = 2/5
        assert!((m.has0_acc2 - 0.4).abs() < 1e-12);
        // non-0 (drop index 2): truth > 0: T F T F ; pred > 0: T T F F -> 2/4
        assert!((m.non0_acc2 - 0.5).abs() < 1e-12);
        // acc7: round(clip3): truth 2,-1,0,1,-3 ; pred 1,0,-0,-0,-3 -> matches: idx2 (0==0), idx4 -> 2/5
        assert!((m.acc7 - 0.4).abs() < 1e-12);
        // acc3: clip1 then round: truth 1,-1,0,1,-1 ; pred 1,0,-0,-0,-1 -> idx0, idx2, idx4 = 3/5
        assert!((m.acc3 - 0.6).abs() < 1e-12);
        // acc5: clip2: truth 2,-1,0,1,-2 ; pred 1,0,-0,-0,-2 -> idx2, idx4 = 2/5
        assert!((m.acc5 - 0.4).abs() < 1e-12);
        // MAE = (0.6 + 1.4 + 0.2 + 1.0 + 0.4)/5 = 0.72
        assert!((m.mae - 0.72).abs() < 1e-6);
        assert_eq!(m.n, 5);
    }

    #[test]
    fn weighted_f1_matches_sklearn() {
        // sklearn: f1_score([1,1,0,0,1],[1,0,0,1,1],average='weighted') = 0.6
        let t = [true, true, false, false, true];
        let p = [true, false, false, true, true];
        // class 1: tp2 fp1 fn1 -> f1 = 4/6; support 3. class 0: tp1 fp1 fn1 -> 0.5; support 2.
        let want = (4.0 / 6.0 * 3.0 + 0.5 * 2.0) / 5.0;
        assert!((weighted_f1(&t, &p) - want).abs() < 1e-12);
        assert!((want - 0.6).abs() < 1e-12);
    }

    #[test]
    fn round_half_to_even_like_numpy() {
        // numpy.round(0.5) = 0, round(1.5) = 2, round(2.5) = 2
        assert_eq!(multiclass_acc(&[0.5, 1.5, 2.5], &[0.0, 2.0, 2.0], 3.0), 1.0);
    }

    #[test]
    fn pearson_cases() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}
