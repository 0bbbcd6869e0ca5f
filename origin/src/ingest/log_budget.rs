//! Rate limits for log lines a remote peer can provoke.

use std::time::{Duration, Instant};

/// Lets at most `per_window` lines through per `window`; the first line of a
/// new window says how many were held back in the last one. Logging what an
/// unauthenticated peer sends must cost the operator a bounded number of lines.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last allowed one)` when a line may be
    /// logged now, `None` when it must be dropped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_lines_past_the_budget_and_reports_them() {
        let mut b = LogBudget::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(b.allow(t), Some(0));
        assert_eq!(b.allow(t), Some(0));
        for _ in 0..1000 {
            assert_eq!(b.allow(t + Duration::from_secs(5)), None);
        }
        assert_eq!(b.allow(t + Duration::from_secs(10)), Some(1000));
        assert_eq!(b.allow(t + Duration::from_secs(10)), Some(0));
    }
}
