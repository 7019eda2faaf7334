//! `calibrate`: recompute the small model's tau1 on the validation split.

use super::Context;
use super::args::CalibrateArgs;
use crate::error::Result;
use crate::models::ubm::Ubm;
use crate::train::dataset::Split;
use crate::train::trainer::{self, CalibrationRule};

/// Runs `calibrate` and saves the threshold with the model.
pub(super) fn calibrate(c: &CalibrateArgs, ctx: &Context) -> Result<i32> {
    let base = c.data.ubm_base(&ctx.models);
    let mut model = Ubm::load(&base)?;
    let enc = model.meta.encoder_spec(&base);
    let (_, valid) = super::dataset_split(&c.data.data, &c.data, Split::Valid, &enc, ctx)?;
    let rule = match (c.lambda, c.escalation_rate) {
        (_, Some(r)) => CalibrationRule::Rate(r),
        (l, None) => CalibrationRule::Lambda(l.unwrap_or(0.5)),
    };
    let cal = trainer::calibrate_model(&mut model, &valid, rule)?;
    model.save(&base)?;
    match cal {
        Some(cal) => {
            println!(
                "uncertainty on {} validation windows: correct mu {:.4} sigma {:.4} (n {}), wrong mu {:.4} sigma {:.4} (n {})",
                valid.feats.len(),
                cal.correct.mu,
                cal.correct.sigma,
                cal.correct.n,
                cal.wrong.mu,
                cal.wrong.sigma,
                cal.wrong.n
            );
            for l in [0.1f32, 0.3, 0.5, 0.7, 0.9] {
                println!("  tau({l}) = {:.4}", cal.tau(l));
            }
        }
        None => println!(
            "the {} validation windows are all classified alike: no Gaussian fits, tau1 from the rate only",
            valid.feats.len()
        ),
    }
    println!(
        "tau1 = {:.4} ({}) saved in {}",
        model.meta.tau1.unwrap_or(f32::NAN),
        model.meta.tau1_rule.clone().unwrap_or_default(),
        base.with_extension("json").display()
    );
    Ok(0)
}
