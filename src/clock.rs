//! Wall-clock time for the edge, injectable: freshness (`Expires`, `Date`)
//! and token validity windows read [`Clock::now`], so tests set and move the
//! time instead of sleeping. Durations inside the process (ages, timeouts)
//! use tokio's clock, which tests pause with `tokio::time::pause`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// The system clock, or a manual one that only moves when told.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    // Held only to read or move the time.
    manual: Option<Arc<Mutex<SystemTime>>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock stopped at `start`; [`Clock::advance`] moves it.
    pub fn manual(start: SystemTime) -> Clock {
        Clock {
            manual: Some(Arc::new(Mutex::new(start))),
        }
    }

    pub fn now(&self) -> SystemTime {
        match &self.manual {
            Some(time) => *time.lock(),
            None => SystemTime::now(),
        }
    }

    /// Move a manual clock forward; the system clock ignores this.
    pub fn advance(&self, by: Duration) {
        if let Some(time) = &self.manual {
            let mut time = time.lock();
            *time += by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + Duration::from_secs(90));
        let shared = clock.clone();
        shared.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), start + Duration::from_secs(100));
    }
}
