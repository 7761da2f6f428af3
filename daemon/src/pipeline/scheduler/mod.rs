//! Cron schedules in IANA time zones, with stored ticks so that a restart
//! loses nothing.
//!
//! Planning is pure: given the last tick that ran and the current instant,
//! [`Schedule::plan`] says which ticks to run under the misfire policy. The
//! daemon stores the last tick and claims a schedule with a lease before
//! running it, so a job never overlaps itself, in one process or several.
//!
//! Local times stay right across DST changes because every occurrence is
//! computed in the schedule's zone from its wall-clock pattern: a tick that
//! falls in a spring-forward gap runs at the first valid instant after the
//! gap; a fixed-time tick in a fall-back overlap runs once, at its first
//! occurrence.

pub mod runner;

use crate::core::config::sections::{Job, Misfire, ScheduleConfig};
use crate::core::model::Timestamp;
use chrono::{Timelike, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// Missed ticks examined at most after a long downtime: enough for a year
/// of a 15-minute schedule, bounded so a per-second cron cannot stall us.
const MAX_TICKS_SCANNED: usize = 50_000;

#[derive(Debug, thiserror::Error)]
#[error("schedule `{name}`: invalid cron expression `{cron}`: {source}")]
pub struct ScheduleError {
    name: String,
    cron: String,
    #[source]
    source: croner::errors::CronError,
}

/// A compiled schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: String,
    pub job: Job,
    pub timezone: Tz,
    pub misfire: Misfire,
    pub catch_up_limit: u32,
    cron: croner::Cron,
}

/// What to run now, and when to wake up next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickPlan {
    /// Ticks to run, oldest first.
    pub run: Vec<Timestamp>,
    /// Due ticks that the misfire policy leaves out.
    pub skipped: usize,
    /// The tick to store as done once `run` has run (the latest due tick).
    pub last: Option<Timestamp>,
    /// The next tick after now.
    pub next: Option<Timestamp>,
}

impl Schedule {
    pub fn new(name: &str, config: &ScheduleConfig) -> Result<Self, ScheduleError> {
        let cron = croner::Cron::from_str(&config.cron).map_err(|source| ScheduleError {
            name: name.to_string(),
            cron: config.cron.clone(),
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            job: config.job,
            timezone: config.timezone,
            misfire: config.misfire,
            catch_up_limit: config.catch_up_limit.unwrap_or(1),
            cron,
        })
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Ticks are whole seconds; croner would carry a fraction along.
        let t = t.with_nanosecond(0)?;
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.timezone), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Which ticks to run at `now`, given the last tick that ran. A tick is
    /// on time when `now` is within `grace` of it; older ones were missed
    /// (the daemon was down) and the misfire policy decides their fate. A
    /// schedule that never ran runs once at `now` (its first start does the
    /// work at once rather than waiting for the first tick, a week away for
    /// a weekly plan), then follows its cron; it does not replay history.
    pub fn plan(
        &self,
        last: Option<Timestamp>,
        now: Timestamp,
        grace: chrono::Duration,
    ) -> TickPlan {
        let Some(last) = last else {
            let first = now.with_nanosecond(0).unwrap_or(now);
            return TickPlan {
                run: vec![first],
                skipped: 0,
                last: Some(first),
                next: self.next_after(now),
            };
        };
        let mut due = Vec::new();
        let mut cursor = last;
        while let Some(t) = self.next_after(cursor) {
            if t > now {
                break;
            }
            due.push(t);
            cursor = t;
            if due.len() >= MAX_TICKS_SCANNED {
                // Jump ahead: what lies between is missed by any policy.
                cursor = now - grace - chrono::Duration::seconds(1);
                cursor = cursor.max(t);
            }
        }
        let latest = due.last().copied();
        let on_time = |t: &Timestamp| now - *t <= grace;
        let run: Vec<Timestamp> = match self.misfire {
            Misfire::Skip => latest.filter(on_time).into_iter().collect(),
            Misfire::RunOnce => latest.into_iter().collect(),
            Misfire::CatchUp => {
                let n = (self.catch_up_limit as usize).max(1);
                due[due.len().saturating_sub(n)..].to_vec()
            }
        };
        TickPlan {
            skipped: due.len() - run.len(),
            run,
            last: latest.or(Some(last)),
            next: self.next_after(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn schedule(cron: &str, tz: &str, misfire: Misfire, limit: Option<u32>) -> Schedule {
        let config = ScheduleConfig {
            job: Job::Plan,
            cron: cron.into(),
            timezone: tz.parse().expect("zone"),
            misfire,
            catch_up_limit: limit,
        };
        Schedule::new("t", &config).expect("valid")
    }

    const GRACE: chrono::Duration = chrono::Duration::seconds(60);

    #[test]
    fn tuesday_half_past_nine_in_paris_follows_summer_time() {
        let s = schedule("30 9 * * TUE", "Europe/Paris", Misfire::RunOnce, None);
        // Winter: UTC+1. Summer (from Sunday 2026-03-29): UTC+2.
        assert_eq!(
            s.next_after(at("2026-03-20T00:00:00Z")),
            Some(at("2026-03-24T08:30:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-03-25T00:00:00Z")),
            Some(at("2026-03-31T07:30:00Z"))
        );
        // Back to winter after Sunday 2026-10-25.
        assert_eq!(
            s.next_after(at("2026-10-21T00:00:00Z")),
            Some(at("2026-10-27T08:30:00Z"))
        );
    }

    #[test]
    fn same_local_time_in_two_zones_across_their_own_dst_changes() {
        let ny = schedule("0 9 * * *", "America/New_York", Misfire::RunOnce, None);
        // New York springs forward on 2026-03-08: 09:00 EST = 14:00Z, then EDT = 13:00Z.
        assert_eq!(
            ny.next_after(at("2026-03-07T00:00:00Z")),
            Some(at("2026-03-07T14:00:00Z"))
        );
        assert_eq!(
            ny.next_after(at("2026-03-08T00:00:00Z")),
            Some(at("2026-03-08T13:00:00Z"))
        );
        let paris = schedule("0 9 * * *", "Europe/Paris", Misfire::RunOnce, None);
        // Same UTC days: Paris is still on winter time until 2026-03-29.
        assert_eq!(
            paris.next_after(at("2026-03-08T00:00:00Z")),
            Some(at("2026-03-08T08:00:00Z"))
        );
    }

    #[test]
    fn ticks_in_a_dst_gap_run_once_after_it_and_overlaps_run_once() {
        let s = schedule("30 2 * * *", "Europe/Paris", Misfire::RunOnce, None);
        // 02:30 does not exist on 2026-03-29 in Paris: it runs at 03:00 local (01:00Z).
        assert_eq!(
            s.next_after(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
        // 02:30 happens twice on 2026-10-25: it runs once, at the first (00:30Z).
        let first = s.next_after(at("2026-10-24T12:00:00Z")).expect("tick");
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        assert_eq!(s.next_after(first), Some(at("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn ticks_are_whole_seconds() {
        let s = schedule("* * * * * *", "UTC", Misfire::RunOnce, None);
        assert_eq!(
            s.next_after(at("2026-05-04T08:00:10.695Z")),
            Some(at("2026-05-04T08:00:11Z"))
        );
    }

    #[test]
    fn misfire_policies_after_downtime() {
        // Hourly; last ran at 08:00Z; back up at 12:10:30Z: 09, 10, 11, 12 are due.
        let last = Some(at("2026-05-04T08:00:00Z"));
        let now = at("2026-05-04T12:10:30Z");
        let skip = schedule("0 * * * *", "UTC", Misfire::Skip, None).plan(last, now, GRACE);
        assert_eq!((skip.run.len(), skip.skipped), (0, 4));
        assert_eq!(skip.last, Some(at("2026-05-04T12:00:00Z")));
        assert_eq!(skip.next, Some(at("2026-05-04T13:00:00Z")));

        let once = schedule("0 * * * *", "UTC", Misfire::RunOnce, None).plan(last, now, GRACE);
        assert_eq!(once.run, vec![at("2026-05-04T12:00:00Z")]);
        assert_eq!(once.skipped, 3);

        let catch = schedule("0 * * * *", "UTC", Misfire::CatchUp, Some(3)).plan(last, now, GRACE);
        assert_eq!(
            catch.run,
            vec![
                at("2026-05-04T10:00:00Z"),
                at("2026-05-04T11:00:00Z"),
                at("2026-05-04T12:00:00Z")
            ]
        );
        assert_eq!(catch.skipped, 1);
    }

    #[test]
    fn on_time_ticks_run_under_every_policy_and_new_schedules_run_once_now() {
        let last = Some(at("2026-05-04T11:00:00Z"));
        let now = at("2026-05-04T12:00:20Z");
        for policy in [Misfire::Skip, Misfire::RunOnce, Misfire::CatchUp] {
            let plan = schedule("0 * * * *", "UTC", policy, Some(2)).plan(last, now, GRACE);
            assert_eq!(plan.run, vec![at("2026-05-04T12:00:00Z")], "{policy:?}");
        }
        // A schedule seen for the first time runs once, now, whatever its policy.
        for policy in [Misfire::Skip, Misfire::RunOnce, Misfire::CatchUp] {
            let fresh = schedule("0 * * * *", "UTC", policy, Some(5)).plan(None, now, GRACE);
            assert_eq!(fresh.run, vec![at("2026-05-04T12:00:20Z")], "{policy:?}");
            assert_eq!(fresh.last, Some(now));
            assert_eq!(fresh.next, Some(at("2026-05-04T13:00:00Z")));
        }
        let idle = schedule("0 * * * *", "UTC", Misfire::RunOnce, None).plan(Some(now), now, GRACE);
        assert!(idle.run.is_empty());
        assert_eq!(idle.last, Some(now));
    }
}
