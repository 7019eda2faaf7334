//! Uncertainty of a class distribution and polarity of a score (paper Eq. 6, 8).

use crate::event::Polarity;

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
