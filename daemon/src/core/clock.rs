//! The one source of time. Every component asks a [`Clock`] so that `--now`
//! (and tests) can pin the instant at which time-based rules are evaluated.

use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A shared handle on "now".
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    /// Wall-clock time, for the daemon.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A frozen instant, for `--now` and tests.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Source::Fixed(at)))
    }

    /// The clock named by an optional `--now`.
    pub fn from_option(now: Option<DateTime<Utc>>) -> Self {
        now.map_or_else(Self::system, Self::fixed)
    }

    pub fn now(&self) -> DateTime<Utc> {
        match *self.0 {
            // The single place where relance reads the wall clock.
            #[allow(clippy::disallowed_methods)]
            Source::System => Utc::now(),
            Source::Fixed(at) => at,
        }
    }

    pub fn is_fixed(&self) -> bool {
        matches!(*self.0, Source::Fixed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_does_not_move() {
        let at = DateTime::parse_from_rfc3339("2026-03-29T01:30:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let clock = Clock::fixed(at);
        assert_eq!(clock.now(), at);
        assert_eq!(clock.clone().now(), at);
        assert!(clock.is_fixed());
    }
}
