//! When a live source is reopened after a failure: waits that double from 0.5 s up to a
//! ceiling, and an optional limit on attempts in a row.

use std::time::Duration;

/// First wait before reopening, seconds.
const FIRST_WAIT_S: f64 = 0.5;

/// The reconnect policy of one stream and where it stands.
#[derive(Debug, Clone)]
pub(crate) struct Reconnect {
    /// Attempts in a row before giving up (0: never give up).
    max_attempts: u32,
    /// Longest wait, seconds.
    max_wait_s: f64,
    /// Failed attempts since media last flowed.
    attempt: u32,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Retry {
    /// Wait this long, then reopen.
    After(Duration),
    /// Out of attempts.
    GiveUp {
        /// Attempts made.
        attempts: u32,
    },
}

impl Reconnect {
    /// A policy from `source.reconnect_attempts` and `source.reconnect_max_s`.
    pub(crate) fn new(max_attempts: u32, max_wait_s: f32) -> Self {
        Self {
            max_attempts,
            max_wait_s: max_wait_s as f64,
            attempt: 0,
        }
    }

    /// Media flows: the next failure starts from the first wait again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since media last flowed.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the stream is between a failure and media flowing again.
    pub(crate) fn retrying(&self) -> bool {
        self.attempt > 0
    }

    /// Records a failure and says what to do.
    pub(crate) fn failed(&mut self) -> Retry {
        self.attempt += 1;
        if self.max_attempts > 0 && self.attempt > self.max_attempts {
            return Retry::GiveUp {
                attempts: self.max_attempts,
            };
        }
        let doubling = 2f64.powi(self.attempt.saturating_sub(1).min(10) as i32);
        Retry::After(Duration::from_secs_f64(
            (FIRST_WAIT_S * doubling).min(self.max_wait_s),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(r: &mut Reconnect, n: usize) -> Vec<Retry> {
        (0..n).map(|_| r.failed()).collect()
    }

    #[test]
    fn waits_double_up_to_the_ceiling() {
        let mut r = Reconnect::new(0, 3.0);
        let s = |x: f64| Retry::After(Duration::from_secs_f64(x));
        assert_eq!(
            waits(&mut r, 5),
            vec![s(0.5), s(1.0), s(2.0), s(3.0), s(3.0)]
        );
        assert!(r.retrying());
        r.reset();
        assert!(!r.retrying());
        assert_eq!(r.failed(), s(0.5));
    }

    #[test]
    fn gives_up_after_the_limit_in_a_row() {
        let mut r = Reconnect::new(2, 10.0);
        let w = waits(&mut r, 3);
        assert!(matches!(w[0], Retry::After(_)) && matches!(w[1], Retry::After(_)));
        assert_eq!(w[2], Retry::GiveUp { attempts: 2 });
    }
}
