//! One verdict: the score, the polarity and the class probabilities of an event agree.
//!
//! The models have two heads: a class distribution (whose entropy is the uncertainty the
//! cascade routes on) and a regression score. On borderline windows they can disagree
//! (score +0.43, so `positive` by the neutral band, while `neutral` has probability
//! 0.96). The rule, applied to every final verdict, whatever the stage:
//!
//! - the polarity is the most probable class (the distribution the uncertainty measures);
//! - the score keeps its value when it lies in that polarity's range, and is otherwise
//!   moved to the nearest point of the range: a positive verdict scores above the band, a
//!   negative one below minus the band, a neutral one in [0, band]. A neutral verdict is
//!   "not negative" (MMSA's Has0 convention counts a 0 label as non-negative), so its score
//!   never carries a negative sign: before, a window the class head called neutral at
//!   0.96 with a raw score of -0.05 was emitted at -0.05, counted negative by Has0-Acc2,
//!   and the polarity-risk gate escalated it as a likely error (validation, 278 windows:
//!   Has0-Acc2 of the emitted scores 0.824 -> 0.863 for the same model).
//!
//! So `polarity == argmax(probs) == polarity(score, band)` for every event. The models'
//! own opinions (`ubm`, `mllm` in the event) stay as they answered.

use crate::event::{Polarity, Sentiment};
use crate::routing::uncertainty::{argmax, polarity};

/// How far past the band a moved score lands (so `polarity(score)` is unambiguous).
const MARGIN: f32 = 0.01;

/// The coherent (score, polarity) of a verdict with class probabilities `probs`
/// (negative, neutral, positive) and neutral band `band`.
pub fn coherent(score: f32, probs: &[f32; 3], band: f32) -> (f32, Polarity) {
    let p = match argmax(probs) {
        0 => Polarity::Negative,
        1 => Polarity::Neutral,
        _ => Polarity::Positive,
    };
    let s = match p {
        Polarity::Negative => score.min(-band - MARGIN),
        Polarity::Neutral => score.clamp(0.0, band),
        Polarity::Positive => score.max(band + MARGIN),
    };
    debug_assert_eq!(polarity(s, band), p);
    (s, p)
}

/// Whether a verdict with class probabilities `probs` is emitted "not negative" (score at
/// or above 0, MMSA's Has0 sense): by the rule above, exactly when its class is not
/// negative, whatever its raw score.
pub(crate) fn not_negative(probs: &[f32; 3]) -> bool {
    argmax(probs) != 0
}

/// Whether the emitted verdict's polarity in MMSA's Has0 sense (negative, or not)
/// agrees with the label's.
pub(crate) fn has0_right(probs: &[f32; 3], label: f32) -> bool {
    not_negative(probs) == (label >= 0.0)
}

/// A final verdict with its score and polarity made coherent with its probabilities
/// (the models' own opinions, `small` and `large`, are kept as they are).
pub fn settle(s: &Sentiment, band: f32) -> Sentiment {
    let (score, polarity) = coherent(s.score, &s.probs, band);
    Sentiment {
        score,
        polarity,
        ..*s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_head_decides_and_the_score_follows_into_its_range() {
        // The case: +0.43 with neutral at 0.96 becomes neutral at the band.
        assert_eq!(
            coherent(0.43, &[0.01, 0.96, 0.03], 0.1),
            (0.1, Polarity::Neutral)
        );
        // Agreeing heads keep the score.
        assert_eq!(
            coherent(2.1, &[0.0, 0.1, 0.9], 0.1),
            (2.1, Polarity::Positive)
        );
        assert_eq!(
            coherent(0.05, &[0.2, 0.7, 0.1], 0.1),
            (0.05, Polarity::Neutral)
        );
        // A neutral verdict is never negative: a slightly negative score moves to 0.
        assert_eq!(
            coherent(-0.05, &[0.2, 0.7, 0.1], 0.1),
            (0.0, Polarity::Neutral)
        );
        assert_eq!(
            coherent(-1.4, &[0.3, 0.6, 0.1], 0.1),
            (0.0, Polarity::Neutral)
        );
        // A positive class with a negative score moves just past the band.
        let (s, p) = coherent(-0.6, &[0.1, 0.2, 0.7], 0.1);
        assert_eq!(p, Polarity::Positive);
        assert!((s - 0.11).abs() < 1e-6);
        assert_eq!(coherent(0.3, &[0.8, 0.1, 0.1], 0.1).1, Polarity::Negative);
        for probs in [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]] {
            for score in [-3.0, -0.11, -0.1, 0.0, 0.1, 0.11, 3.0] {
                let (s, p) = coherent(score, &probs, 0.1);
                assert_eq!(polarity(s, 0.1), p, "{score} {probs:?}");
                // The emitted sign is the class's: not_negative needs no score.
                assert_eq!(s >= 0.0, not_negative(&probs), "{score} {probs:?}");
            }
        }
    }
}
