//! Consecutive-result thresholds (Consul's `success_before_passing` and
//! `failures_before_critical`): a check changes state only after enough
//! results in a row agree, so one dropped packet does not flap DNS.

use crate::model::Status;

/// Counts consecutive results of one check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Records a probe's `result` and returns the check's new status, given
    /// its `current` one. Warning and critical both count as failures; the
    /// status becomes whichever the latest failure was.
    pub(super) fn record(
        &mut self,
        current: Status,
        result: Status,
        success_before_passing: u32,
        failures_before_critical: u32,
    ) -> Status {
        if result == Status::Passing {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= success_before_passing.max(1) {
                return Status::Passing;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= failures_before_critical.max(1) {
                return result;
            }
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Critical, Passing, Warning};

    fn run(start: Status, results: &[Status], sbp: u32, fbc: u32) -> Vec<Status> {
        let mut streak = Streak::default();
        let mut status = start;
        results
            .iter()
            .map(|&result| {
                status = streak.record(status, result, sbp, fbc);
                status
            })
            .collect()
    }

    #[test]
    fn single_results_switch_at_once_by_default() {
        assert_eq!(
            run(Critical, &[Passing, Critical, Warning, Passing], 1, 1),
            [Passing, Critical, Warning, Passing]
        );
    }

    #[test]
    fn thresholds_need_results_in_a_row() {
        assert_eq!(
            run(
                Passing,
                &[Critical, Critical, Passing, Critical, Critical, Critical],
                1,
                3
            ),
            [Passing, Passing, Passing, Passing, Passing, Critical]
        );
        assert_eq!(
            run(
                Critical,
                &[Passing, Passing, Critical, Passing, Passing],
                2,
                1
            ),
            [Critical, Passing, Critical, Critical, Passing]
        );
    }
}
