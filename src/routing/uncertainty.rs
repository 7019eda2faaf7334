//! Uncertainty of a class distribution and polarity of a score (paper Eq. 6, 8).

use serde::{Deserialize, Serialize};

use crate::event::Polarity;
use crate::routing::verdict::not_negative;

/// Natural log of 3: the entropy of a uniform 3-class distribution (the most uncertain).
pub const LN_3: f32 = 1.098_612_3;

/// Entropy `-sum p ln p` in nats (terms with p = 0 contribute 0).
pub fn entropy(probs: &[f32]) -> f32 {
    probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum()
}

/// Polarity of a score with neutral band `b`: negative if y < -b, neutral if |y| <= b,
/// positive if y > b.
pub fn polarity(score: f32, band: f32) -> Polarity {
    if score < -band {
        Polarity::Negative
    } else if score > band {
        Polarity::Positive
    } else {
        Polarity::Neutral
    }
}

/// What the small model's uncertainty (the stage-1 gate's u) measures.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// The paper's entropy of the class probabilities, in nats (0..ln 3).
    #[default]
    Entropy,
    /// The probability that the emitted verdict's polarity is wrong in the Has0 sense
    /// (negative vs not), from the class probabilities at `temperature` (fitted on
    /// validation): P(negative) when the verdict is emitted not negative (its class is
    /// neutral or positive, one-verdict rule), else 1 - P(negative).
    PolarityRisk {
        /// Temperature of the class probabilities.
        temperature: f32,
    },
}

impl Gate {
    /// u of a prediction with class probabilities `probs`.
    pub fn uncertainty(&self, probs: &[f32; 3]) -> f32 {
        match *self {
            Gate::Entropy => entropy(probs),
            Gate::PolarityRisk { temperature } => {
                let p = at_temperature(probs, temperature);
                if not_negative(probs) {
                    p[0]
                } else {
                    p[1] + p[2]
                }
            }
        }
    }

    /// Name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Gate::Entropy => "entropy, nats",
            Gate::PolarityRisk { .. } => "calibrated P(polarity wrong)",
        }
    }
}

/// Class probabilities at temperature `t` (from softmax outputs: log p are the logits up
/// to a constant).
pub fn at_temperature(p: &[f32; 3], t: f32) -> [f32; 3] {
    let l = p.map(|x| x.max(1e-12).ln() / t);
    let m = l.iter().copied().fold(f32::MIN, f32::max);
    let e = l.map(|x| (x - m).exp());
    let s: f32 = e.iter().sum();
    e.map(|x| x / s)
}

/// Index of the most probable class (ties: the first), e.g. of a 3-class distribution.
pub(crate) fn argmax(p: &[f32; 3]) -> usize {
    (0..3).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

/// Class index (0 negative, 1 neutral, 2 positive) of a score.
pub(crate) fn class_index(score: f32, band: f32) -> usize {
    match polarity(score, band) {
        Polarity::Negative => 0,
        Polarity::Neutral => 1,
        Polarity::Positive => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_picks_the_most_probable_class() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[0.2, 0.2, 0.6]), 2);
        assert_eq!(argmax(&[0.5, 0.2, 0.3]), 0);
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert!((entropy(&[1.0 / 3.0; 3]) - LN_3).abs() < 1e-6);
        assert_eq!(entropy(&[1.0, 0.0, 0.0]), 0.0);
        // -(0.5 ln 0.5) * 2 = ln 2
        assert!((entropy(&[0.5, 0.5, 0.0]) - std::f32::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn the_polarity_risk_gate_is_the_chance_that_the_emitted_sign_is_wrong() {
        let g = Gate::PolarityRisk { temperature: 1.0 };
        // Sure and positive: little risk; a negative verdict's risk is 1 - P(negative).
        assert!(g.uncertainty(&[0.02, 0.08, 0.9]) < 0.03);
        assert!((g.uncertainty(&[0.7, 0.2, 0.1]) - 0.3).abs() < 1e-5);
        // A neutral verdict is emitted as not negative (score in [0, band]), whatever
        // the sign of its raw score: its risk is P(negative).
        assert!((g.uncertainty(&[0.4, 0.5, 0.1]) - 0.4).abs() < 1e-5);
        // A positive verdict, whatever its raw score, is emitted positive too.
        assert!((g.uncertainty(&[0.3, 0.2, 0.5]) - 0.3).abs() < 1e-5);
        // Higher temperature: less sure.
        let hot = Gate::PolarityRisk { temperature: 3.0 };
        assert!(hot.uncertainty(&[0.02, 0.08, 0.9]) > 0.1);
        assert_eq!(Gate::Entropy.uncertainty(&[1.0, 0.0, 0.0]), 0.0);
        // Models saved before the gate was recorded read as entropy.
        let old: Gate = serde_json::from_str(r#"{"kind":"entropy"}"#).unwrap();
        assert_eq!(old, Gate::Entropy);
    }

    #[test]
    fn polarity_band() {
        let cases = [
            (-0.5, Polarity::Negative),
            (-0.1, Polarity::Neutral),
            (0.0, Polarity::Neutral),
            (0.1, Polarity::Neutral),
            (0.11, Polarity::Positive),
        ];
        for (y, want) in cases {
            assert_eq!(polarity(y, 0.1), want, "score {y}");
        }
        assert_eq!(class_index(2.0, 0.1), 2);
    }
}
