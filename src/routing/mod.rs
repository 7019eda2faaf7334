//! The U-ACS decisions as pure functions over numbers: uncertainty, thresholds, and the
//! stage 1-3 routing (DESIGN section 2). No I/O, no models: tested with tables of cases.

pub mod fusion;
pub(crate) mod thresholds;
pub mod uncertainty;
pub mod verdict;
