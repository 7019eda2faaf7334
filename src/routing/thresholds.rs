//! Threshold calibration (paper Eq. 18-19): Gaussian fits of the uncertainty of correctly
//! and wrongly classified validation samples, tau(lambda) = (1 - lambda) mu_c + lambda mu_w;
//! and the operator's mode: the threshold that escalates a target share of windows.

use serde::{Deserialize, Serialize};

/// Mean and standard deviation of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Gaussian {
    /// Mean.
    pub(crate) mu: f32,
    /// Standard deviation (population).
    pub(crate) sigma: f32,
    /// Number of samples fitted.
    pub n: usize,
}

/// Fits a Gaussian; `None` for an empty sample.
pub fn fit(xs: &[f32]) -> Option<Gaussian> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mu = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / n;
    Some(Gaussian {
        mu: mu as f32,
        sigma: var.sqrt() as f32,
        n: xs.len(),
    })
}

/// Calibration of one model's uncertainty on a validation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Calibration {
    /// Uncertainty of correctly classified samples.
    pub correct: Gaussian,
    /// Uncertainty of wrongly classified samples.
    pub(crate) wrong: Gaussian,
}

impl Calibration {
    /// Fits from (uncertainty, was the prediction correct) pairs. Needs both kinds.
    pub fn fit(samples: &[(f32, bool)]) -> Option<Self> {
        let c: Vec<f32> = samples.iter().filter(|s| s.1).map(|s| s.0).collect();
        let w: Vec<f32> = samples.iter().filter(|s| !s.1).map(|s| s.0).collect();
        Some(Self {
            correct: fit(&c)?,
            wrong: fit(&w)?,
        })
    }

    /// tau(lambda) = (1 - lambda) mu_c + lambda mu_w, lambda clamped to [0, 1].
    pub fn tau(&self, lambda: f32) -> f32 {
        let l = lambda.clamp(0.0, 1.0);
        (1.0 - l) * self.correct.mu + l * self.wrong.mu
    }
}

/// Default tau2 for large models without a calibration (half of ln 3).
pub(crate) const UNCALIBRATED_TAU2: f32 = 0.55;

/// What a model stores about its threshold, and what the operator asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ThresholdSources {
    /// A fixed threshold set by the operator (wins over everything).
    pub fixed: Option<f32>,
    /// The operator's lambda, applied to `calibration` when there is one.
    pub lambda: Option<f32>,
    /// The model's stored calibration.
    pub(crate) calibration: Option<Calibration>,
    /// The threshold stored with the model.
    pub(crate) stored: Option<f32>,
}

impl ThresholdSources {
    /// The threshold: fixed, else tau(lambda) of the calibration, else the stored one;
    /// `None` when none of them is there.
    pub(crate) fn resolve(&self) -> Option<f32> {
        match (self.fixed, self.lambda, self.calibration) {
            (Some(t), _, _) => Some(t),
            (None, Some(l), Some(c)) => Some(c.tau(l)),
            _ => self.stored,
        }
    }
}

/// The threshold that escalates (u > tau) a share `rate` in [0, 1] of `uncertainties`:
/// the (1 - rate) quantile, with linear interpolation.
pub(crate) fn tau_for_rate(uncertainties: &[f32], rate: f32) -> Option<f32> {
    if uncertainties.is_empty() {
        return None;
    }
    let mut v = uncertainties.to_vec();
    v.sort_by(f32::total_cmp);
    let q = (1.0 - rate.clamp(0.0, 1.0)) as f64 * (v.len() - 1) as f64;
    let (lo, hi) = (q.floor() as usize, q.ceil() as usize);
    let frac = (q - lo as f64) as f32;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

/// Area under the ROC curve of `scores` for detecting `positives` (ties count half);
/// used to report how well uncertainty detects errors.
pub(crate) fn auroc(scores: &[f32], positives: &[bool]) -> Option<f32> {
    let pos: Vec<f32> = scores
        .iter()
        .zip(positives)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let neg: Vec<f32> = scores
        .iter()
        .zip(positives)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0f64;
    for &p in &pos {
        for &n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some((wins / (pos.len() * neg.len()) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_sources_in_order_of_precedence() {
        let g = |mu| Gaussian {
            mu,
            sigma: 0.1,
            n: 10,
        };
        let cal = Calibration {
            correct: g(0.2),
            wrong: g(0.8),
        };
        let all = ThresholdSources {
            fixed: Some(0.3),
            lambda: Some(0.5),
            calibration: Some(cal),
            stored: Some(0.9),
        };
        assert_eq!(all.resolve(), Some(0.3));
        let no_fixed = ThresholdSources { fixed: None, ..all };
        assert!((no_fixed.resolve().unwrap() - 0.5).abs() < 1e-6);
        let no_cal = ThresholdSources {
            calibration: None,
            ..no_fixed
        };
        assert_eq!(no_cal.resolve(), Some(0.9));
        let no_lambda = ThresholdSources {
            lambda: None,
            ..no_fixed
        };
        assert_eq!(no_lambda.resolve(), Some(0.9));
        assert_eq!(ThresholdSources::default().resolve(), None);
    }

    #[test]
    fn gaussian_fit_and_tau() {
        let g = fit(&[1.0, 2.0, 3.0]).unwrap();
        assert!((g.mu - 2.0).abs() < 1e-6 && (g.sigma - (2.0f32 / 3.0).sqrt()).abs() < 1e-6);
        let samples = [(0.2, true), (0.4, true), (0.9, false), (1.1, false)];
        let c = Calibration::fit(&samples).unwrap();
        assert!((c.correct.mu - 0.3).abs() < 1e-6 && (c.wrong.mu - 1.0).abs() < 1e-6);
        assert!((c.tau(0.0) - 0.3).abs() < 1e-6);
        assert!((c.tau(1.0) - 1.0).abs() < 1e-6);
        assert!((c.tau(0.5) - 0.65).abs() < 1e-6);
        assert!(
            Calibration::fit(&[(0.1, true)]).is_none(),
            "needs wrong samples too"
        );
    }

    #[test]
    fn synthetic_distributions_recover_their_means() {
        // Deterministic pseudo-normal samples around known means.
        let spread = |mu: f32, sigma: f32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| mu + sigma * ((i as f32 / n as f32) * 2.0 - 1.0) * 1.732)
                .collect()
        };
        let mut s: Vec<(f32, bool)> = spread(0.3, 0.1, 1000)
            .into_iter()
            .map(|u| (u, true))
            .collect();
        s.extend(spread(0.8, 0.15, 500).into_iter().map(|u| (u, false)));
        let c = Calibration::fit(&s).unwrap();
        assert!((c.correct.mu - 0.3).abs() < 0.01 && (c.correct.sigma - 0.1).abs() < 0.01);
        assert!((c.wrong.mu - 0.8).abs() < 0.01 && (c.wrong.sigma - 0.15).abs() < 0.01);
    }

    #[test]
    fn rate_quantile() {
        let u: Vec<f32> = (0..=100).map(|i| i as f32 / 100.0).collect();
        let t = tau_for_rate(&u, 0.2).unwrap();
        assert!((t - 0.8).abs() < 1e-6);
        let escalated = u.iter().filter(|&&x| x > t).count();
        assert_eq!(escalated, 20);
        assert_eq!(tau_for_rate(&[], 0.5), None);
    }

    #[test]
    fn auroc_cases() {
        assert_eq!(
            auroc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.1, 0.2, 0.9, 0.8], &[true, true, false, false]),
            Some(0.0)
        );
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.5], &[true]), None);
    }
}
