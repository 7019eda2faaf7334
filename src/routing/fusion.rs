//! Stage 1-3 routing of U-ACS (paper Eq. 15-16) as pure functions.

use crate::routing::uncertainty::polarity;

/// Small epsilon in the uncertainty weights w = 1 / (u + eps).
pub(crate) const WEIGHT_EPS: f32 = 1e-6;

/// One model's verdict on a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Sentiment score.
    pub score: f32,
    /// Uncertainty (the model's gate value: entropy in nats, or a probability of error).
    pub uncertainty: f32,
}

impl Verdict {
    /// A verdict whose uncertainty is the entropy of its class probabilities: the unit in
    /// which stages 2 and 3 weigh the two models, whatever the small model's gate.
    pub(crate) fn by_entropy(score: f32, probs: &[f32; 3]) -> Self {
        Self {
            score,
            uncertainty: crate::routing::uncertainty::entropy(probs),
        }
    }
}

/// Stage 1: accept the small model or escalate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage1 {
    /// u_s <= tau1.
    Accept,
    /// u_s > tau1: ask the large model.
    Escalate,
}

/// Stage 1 decision.
pub(crate) fn stage1(small: Verdict, tau1: f32) -> Stage1 {
    if small.uncertainty <= tau1 {
        Stage1::Accept
    } else {
        Stage1::Escalate
    }
}

/// Stage 2/3 decision once the large model has answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stage2 {
    /// u_l <= tau2: the large model's answer is final.
    AcceptLarge,
    /// Both uncertain, same polarity: the uncertainty-weighted average.
    Fused(Verdict),
    /// Both uncertain, polarities differ: ask the large model again with both opinions.
    CrossVerify,
}

/// Stage 2/3 decision (band `b` defines polarity).
pub(crate) fn stage2(small: Verdict, large: Verdict, tau2: f32, band: f32) -> Stage2 {
    if large.uncertainty <= tau2 {
        return Stage2::AcceptLarge;
    }
    if polarity(small.score, band) == polarity(large.score, band) {
        Stage2::Fused(fuse(small, large))
    } else {
        Stage2::CrossVerify
    }
}

/// Uncertainty-weighted average (Eq. 15); the fused uncertainty is weighted the same way.
pub(crate) fn fuse(a: Verdict, b: Verdict) -> Verdict {
    let wa = 1.0 / (a.uncertainty + WEIGHT_EPS);
    let wb = 1.0 / (b.uncertainty + WEIGHT_EPS);
    Verdict {
        score: (wa * a.score + wb * b.score) / (wa + wb),
        uncertainty: (wa * a.uncertainty + wb * b.uncertainty) / (wa + wb),
    }
}

/// Class probabilities fused with the same weights as [`fuse`].
pub(crate) fn fuse_probs(a: &[f32; 3], ua: f32, b: &[f32; 3], ub: f32) -> [f32; 3] {
    let wa = 1.0 / (ua + WEIGHT_EPS);
    let wb = 1.0 / (ub + WEIGHT_EPS);
    std::array::from_fn(|k| (wa * a[k] + wb * b[k]) / (wa + wb))
}

/// Variants of the cascade for ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Full U-ACS: stage 2 acceptance, fusion, cross-verification.
    Full,
    /// Without stage 3: disagreeing uncertain opinions are fused too.
    NoCrossVerify,
    /// Without fusion: the large model's first answer is always final.
    LargeFinal,
}

/// Stage 2/3 under an ablation policy (pure): what to do once the large model answered.
pub(crate) fn decide(
    small: Verdict,
    large: Verdict,
    tau2: f32,
    band: f32,
    policy: Policy,
) -> Stage2 {
    match (policy, stage2(small, large, tau2, band)) {
        (Policy::LargeFinal, _) => Stage2::AcceptLarge,
        (Policy::NoCrossVerify, Stage2::CrossVerify) => Stage2::Fused(fuse(small, large)),
        (_, d) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(score: f32, uncertainty: f32) -> Verdict {
        Verdict { score, uncertainty }
    }

    #[test]
    fn stage1_table() {
        for (u, tau, want) in [
            (0.2, 0.5, Stage1::Accept),
            (0.5, 0.5, Stage1::Accept),
            (0.51, 0.5, Stage1::Escalate),
        ] {
            assert_eq!(stage1(v(1.0, u), tau), want, "u={u} tau={tau}");
        }
    }

    #[test]
    fn stage2_table() {
        let b = 0.1;
        // Confident large model: accepted whatever the small one said.
        assert_eq!(
            stage2(v(-2.0, 0.9), v(1.5, 0.2), 0.4, b),
            Stage2::AcceptLarge
        );
        // Both uncertain, both positive: fused, closer to the less uncertain one.
        match stage2(v(1.0, 0.9), v(2.0, 0.45), 0.4, b) {
            Stage2::Fused(f) => assert!(
                (f.score - (1.0 / 0.9 + 2.0 / 0.45) / (1.0 / 0.9 + 1.0 / 0.45)).abs() < 1e-4
            ),
            other => panic!("{other:?}"),
        }
        // Both uncertain, polarities differ (neutral vs negative too): cross-verify.
        assert_eq!(
            stage2(v(1.0, 0.9), v(-1.0, 0.8), 0.4, b),
            Stage2::CrossVerify
        );
        assert_eq!(
            stage2(v(0.05, 0.9), v(-1.0, 0.8), 0.4, b),
            Stage2::CrossVerify
        );
    }

    #[test]
    fn equal_uncertainty_fuses_to_the_mean() {
        let f = fuse(v(1.0, 0.5), v(3.0, 0.5));
        assert!((f.score - 2.0).abs() < 1e-6);
        // Zero uncertainty does not divide by zero.
        assert!(fuse(v(1.0, 0.0), v(3.0, 0.5)).score.is_finite());
    }

    #[test]
    fn ablation_policies_table() {
        let b = 0.1;
        let (s, l) = (v(1.0, 0.9), v(-1.0, 0.8));
        // (small, large, tau2, policy, expected)
        let cases = [
            (s, l, 0.4, Policy::Full, Stage2::CrossVerify),
            (s, l, 0.4, Policy::NoCrossVerify, Stage2::Fused(fuse(s, l))),
            (s, l, 0.4, Policy::LargeFinal, Stage2::AcceptLarge),
            (
                s,
                v(-1.0, 0.3),
                0.4,
                Policy::NoCrossVerify,
                Stage2::AcceptLarge,
            ),
            (
                s,
                v(2.0, 0.8),
                0.4,
                Policy::Full,
                Stage2::Fused(fuse(s, v(2.0, 0.8))),
            ),
            (s, v(2.0, 0.8), 0.4, Policy::LargeFinal, Stage2::AcceptLarge),
        ];
        for (i, (a, c, tau2, p, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(a, c, tau2, b, p), want, "case {i}");
        }
    }

    #[test]
    fn fused_probs_follow_the_weights() {
        let p = fuse_probs(&[1.0, 0.0, 0.0], 0.5, &[0.0, 0.0, 1.0], 0.5);
        assert_eq!(p, [0.5, 0.0, 0.5]);
        let q = fuse_probs(&[1.0, 0.0, 0.0], 0.1, &[0.0, 0.0, 1.0], 0.9);
        assert!(q[0] > 0.85 && (q.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
