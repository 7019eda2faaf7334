//! Which uncertainty predicts the small model's errors (issue 11, item 3): temperature
//! scaling of the class head fitted on a validation split, and a comparison of
//! estimators on a test split, each judged on the errors that matter to the cascade:
//! the *emitted* verdict's Has0 polarity (the class head decides it, `routing::verdict`)
//! against the label's. Pure arithmetic on predictions.
//!
//! Estimators: the paper's entropy of the class probabilities; entropy after temperature;
//! 1 - the largest calibrated probability; the calibrated probability that the emitted
//! Has0 polarity is wrong; and the two heads' disagreement (how far the regression score
//! had to move to agree with the class head).

use crate::models::ubm::Prediction;
use crate::routing::thresholds::auroc;
pub use crate::routing::uncertainty::at_temperature;
use crate::routing::uncertainty::{Gate, argmax, class_index, entropy};
use crate::routing::verdict::{coherent, has0_right};

/// Temperatures tried when fitting (0.25 .. 5.0).
const GRID: std::ops::RangeInclusive<u32> = 5..=100;
/// Bins of the expected calibration error.
const ECE_BINS: usize = 15;
/// Escalation shares at which the accepted windows' accuracy is reported.
pub const ESCALATE: [f64; 4] = [0.1, 0.2, 0.3, 0.5];

/// The temperature with the lowest negative log-likelihood of the 3-class labels.
pub(crate) fn fit_temperature(preds: &[Prediction], labels: &[f32], band: f32) -> f32 {
    let nll = |t: f32| -> f64 {
        preds
            .iter()
            .zip(labels)
            .map(|(p, &y)| {
                -(at_temperature(&p.probs, t)[class_index(y, band)].max(1e-12) as f64).ln()
            })
            .sum()
    };
    GRID.map(|k| k as f32 * 0.05)
        .min_by(|&a, &b| nll(a).total_cmp(&nll(b)))
        .unwrap_or(1.0)
}

/// Expected calibration error of the largest probability against 3-class correctness.
pub fn ece(probs: &[[f32; 3]], labels: &[f32], band: f32) -> f64 {
    let mut bins = vec![(0.0f64, 0.0f64, 0usize); ECE_BINS];
    for (p, &y) in probs.iter().zip(labels) {
        let k = argmax(p);
        let conf = p[k] as f64;
        let b = ((conf * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[b].0 += conf;
        bins[b].1 += f64::from(u8::from(k == class_index(y, band)));
        bins[b].2 += 1;
    }
    let n = probs.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.2 > 0)
        .map(|b| (b.0 - b.1).abs() / n)
        .sum()
}

/// One estimator's figures on a split.
#[derive(Debug, Clone)]
pub struct EstimatorRow {
    /// Name.
    pub name: &'static str,
    /// AUROC of the estimator for emitted-polarity (Has0) errors.
    pub auroc: Option<f32>,
    /// Has0-Acc2 of the windows accepted when the most uncertain share in [`ESCALATE`]
    /// is escalated.
    pub accepted: [f64; 4],
}

/// Compares the estimators at temperature `t` (fitted on validation).
pub(crate) fn compare(
    preds: &[Prediction],
    labels: &[f32],
    band: f32,
    t: f32,
) -> Vec<EstimatorRow> {
    let emitted: Vec<f32> = preds
        .iter()
        .map(|p| coherent(p.score, &p.probs, band).0)
        .collect();
    let wrong: Vec<bool> = preds
        .iter()
        .zip(labels)
        .map(|(p, &y)| !has0_right(&p.probs, y))
        .collect();
    let cal: Vec<[f32; 3]> = preds.iter().map(|p| at_temperature(&p.probs, t)).collect();
    let est: Vec<(&'static str, Vec<f32>)> = vec![
        (
            "entropy (paper)",
            preds.iter().map(|p| entropy(&p.probs)).collect(),
        ),
        (
            "entropy after temperature",
            cal.iter().map(|p| entropy(p)).collect(),
        ),
        (
            "1 - max calibrated probability",
            cal.iter().map(|p| 1.0 - p[argmax(p)]).collect(),
        ),
        (
            "P(emitted polarity wrong), calibrated",
            preds
                .iter()
                .map(|p| Gate::PolarityRisk { temperature: t }.uncertainty(&p.probs))
                .collect(),
        ),
        (
            "head disagreement |score - verdict|",
            preds
                .iter()
                .zip(&emitted)
                .map(|(p, &s)| (p.score - s).abs())
                .collect(),
        ),
    ];
    est.into_iter()
        .map(|(name, u)| {
            let mut order: Vec<usize> = (0..u.len()).collect();
            order.sort_by(|&a, &b| u[a].total_cmp(&u[b]));
            let accepted = ESCALATE.map(|share| {
                let keep = ((1.0 - share) * u.len() as f64).round() as usize;
                let ok = order[..keep].iter().filter(|&&i| !wrong[i]).count();
                ok as f64 / keep.max(1) as f64
            });
            EstimatorRow {
                name,
                auroc: auroc(&u, &wrong),
                accepted,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(probs: [f32; 3], score: f32) -> Prediction {
        Prediction {
            score,
            probs,
            uncertainty: entropy(&probs),
        }
    }

    #[test]
    fn temperature_keeps_the_argmax_and_flattens() {
        let p = [0.1, 0.2, 0.7];
        let hot = at_temperature(&p, 2.0);
        assert_eq!(argmax(&hot), 2);
        assert!(hot[2] < 0.7 && hot[0] > 0.1);
        let same = at_temperature(&p, 1.0);
        assert!((same[2] - 0.7).abs() < 1e-5);
    }

    #[test]
    fn an_overconfident_model_is_cooled_and_ece_drops() {
        // Always 95% sure, right 60% of the time.
        let preds: Vec<Prediction> = (0..100).map(|_| pred([0.025, 0.025, 0.95], 2.0)).collect();
        let labels: Vec<f32> = (0..100).map(|i| if i < 60 { 2.0 } else { -2.0 }).collect();
        let t = fit_temperature(&preds, &labels, 0.1);
        assert!(t > 1.5, "{t}");
        let raw: Vec<[f32; 3]> = preds.iter().map(|p| p.probs).collect();
        let cal: Vec<[f32; 3]> = preds.iter().map(|p| at_temperature(&p.probs, t)).collect();
        assert!(ece(&cal, &labels, 0.1) < ece(&raw, &labels, 0.1));
    }

    #[test]
    fn estimators_rank_errors() {
        // Sure windows are right, unsure ones wrong: every estimator separates them.
        let mut preds = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let sure = i % 2 == 0;
            preds.push(if sure {
                pred([0.02, 0.03, 0.95], 2.5)
            } else {
                pred([0.3, 0.3, 0.4], 0.5)
            });
            labels.push(if sure { 2.0 } else { -1.5 });
        }
        for row in compare(&preds, &labels, 0.1, 1.0) {
            if row.name.starts_with("head") {
                continue;
            }
            assert_eq!(row.auroc, Some(1.0), "{}", row.name);
            assert_eq!(row.accepted[3], 1.0, "{}", row.name);
        }
    }
}
