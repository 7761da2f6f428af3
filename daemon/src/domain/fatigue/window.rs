//! Send windows in the contact's local time.
//!
//! An instant is inside a window when its local wall-clock time (which is
//! always unique) falls on an allowed day within `[from, to)`. Openings
//! follow from that one rule, which settles DST edge cases deliberately:
//! - an opening time skipped by a jump forward opens when the jump ends
//!   (02:30 on a spring-forward night opens at 03:00 new time);
//! - an opening time that happens twice (fall back) opens at its first
//!   occurrence, and a window that closed in between reopens at the second.

use super::config::{Day, WindowConfig};
use chrono::offset::LocalResult;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};
use std::sync::atomic::{AtomicU64, Ordering};

/// One window, compiled: day mask and seconds of the local day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    days: u8,
    from: u32,
    to: u32,
}

impl Window {
    pub fn new(config: &WindowConfig) -> Self {
        Self {
            days: config.days.iter().fold(0, |m, d| m | d.bit()),
            from: config.from.seconds(),
            to: config.to.seconds(),
        }
    }

    /// Whether local wall-clock seconds since 1970-01-01T00:00 (a
    /// Thursday) fall inside: the weekday and the second of the day by
    /// integer arithmetic, no calendar.
    fn contains_local_secs(&self, local: i64) -> bool {
        let day = (local.div_euclid(86_400) + 3).rem_euclid(7);
        let t = local.rem_euclid(86_400);
        self.days & (1 << day) != 0 && i64::from(self.from) <= t && t < i64::from(self.to)
    }

    fn opens_on(&self, date: NaiveDate) -> bool {
        self.days & (1 << date.weekday().num_days_from_monday()) != 0
    }
}

/// The windows of one channel; none means always open.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    list: Vec<Window>,
    /// Tells these windows apart in the per-thread memo of next openings
    /// (each built set has its own; a clone shares its set's).
    id: u64,
}

impl PartialEq for Windows {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Eq for Windows {}

pub(crate) fn local(tz: Tz, t: i64) -> Option<NaiveDateTime> {
    let local = t.checked_add(i64::from(offset(tz, t)?))?;
    Some(DateTime::<Utc>::from_timestamp(local, 0)?.naive_utc())
}

/// The zone's offset from UTC at `t`, in seconds.
///
/// A planning pass or a claim batch asks about many contacts at one
/// instant in a handful of zones: each thread remembers the last offsets
/// and local openings (a local date and time to UTC) it computed (a small direct-mapped table, keyed by zone
/// and instant), so the time-zone database is searched once per zone and
/// instant instead of once per decision. The memo is exact: it keys on the
/// instant itself, never on a range.
pub(crate) fn offset(tz: Tz, t: i64) -> Option<i32> {
    memo::OFFSETS.with(|m| {
        memo::get_or(m, tz, 0, t, || {
            let utc = DateTime::<Utc>::from_timestamp(t, 0)?;
            Some(
                tz.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            )
        })
    })
}

/// The local days `[day - days + 1, day]` around `t`, `day` being `t`'s
/// local date: the date (days from the common era), the UTC instant the
/// first of them starts and the one the day after `day` starts. Remembered
/// per thread like [`offset`], keyed by the local date rather than the
/// instant: every instant of a local day finds the same answer.
pub(crate) fn local_days(tz: Tz, t: i64, days: u32) -> Option<(i32, i64, i64)> {
    let day = t.checked_add(i64::from(offset(tz, t)?))?.div_euclid(86_400);
    let (first, end) = memo::DAYS.with(|m| {
        memo::get_or(m, tz, u64::from(days), day, || {
            find_local_days(tz, day, days)
        })
    })?;
    let (day, start) = first?;
    Some((day, start, end?))
}

/// What [`local_days`] remembers: the first day (days from the common era)
/// with its UTC start, and the start of the day after the last.
type LocalDays = (Option<(i32, i64)>, Option<i64>);

/// [`local_days`] from the time-zone database, for the local date `day`
/// days after 1970-01-01.
fn find_local_days(tz: Tz, day: i64, days: u32) -> Option<LocalDays> {
    let day = DateTime::<Utc>::from_timestamp(day.checked_mul(86_400)?, 0)?.date_naive();
    let first = day
        .checked_sub_days(Days::new(u64::from(days.max(1) - 1)))
        .and_then(|d| day_start(tz, d));
    let end = day
        .checked_add_days(Days::new(1))
        .and_then(|d| day_start(tz, d));
    Some((first.map(|f| (day.num_days_from_ce(), f)), end))
}

mod memo {
    use chrono_tz::Tz;
    use std::cell::Cell;

    const SLOTS: usize = 256;

    /// One remembered answer: zone, tag (what is asked about, when it is
    /// not the zone alone), key, and the value (`None` cached too).
    #[derive(Clone, Copy)]
    pub(super) struct Slot<V: Copy> {
        tz: u16,
        tag: u64,
        key: i64,
        value: Option<V>,
        used: bool,
    }

    impl<V: Copy> Slot<V> {
        const EMPTY: Self = Self {
            tz: 0,
            tag: 0,
            key: 0,
            value: None,
            used: false,
        };
    }

    pub(super) type Table<V> = [Cell<Slot<V>>; SLOTS];

    thread_local! {
        pub(super) static OFFSETS: Table<i32> = const { [const { Cell::new(Slot::EMPTY) }; SLOTS] };
        pub(super) static OPENINGS: Table<(Option<i64>, Option<i64>)> =
            const { [const { Cell::new(Slot::EMPTY) }; SLOTS] };
        pub(super) static CLOSED: Table<(i64, i64)> = const { [const { Cell::new(Slot::EMPTY) }; SLOTS] };
        pub(super) static DAYS: Table<super::LocalDays> =
            const { [const { Cell::new(Slot::EMPTY) }; SLOTS] };
    }

    /// The zone's index in the database (a fieldless enum).
    fn zone(tz: Tz) -> u16 {
        tz as u16
    }

    /// The cell of zone `z`, tag and key, and what it holds for them.
    fn find<V: Copy>(
        table: &Table<V>,
        z: u16,
        tag: u64,
        key: i64,
    ) -> (&Cell<Slot<V>>, Option<Option<V>>) {
        let h = (key as u64 ^ u64::from(z).rotate_left(40) ^ tag.rotate_left(20))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let cell = &table[(h >> 56) as usize % SLOTS];
        let slot = cell.get();
        let held =
            (slot.used && slot.tz == z && slot.key == key && slot.tag == tag).then_some(slot.value);
        (cell, held)
    }

    fn put<V: Copy>(cell: &Cell<Slot<V>>, z: u16, tag: u64, key: i64, value: Option<V>) {
        cell.set(Slot {
            tz: z,
            tag,
            key,
            value,
            used: true,
        });
    }

    pub(super) fn get_or<V: Copy>(
        table: &Table<V>,
        tz: Tz,
        tag: u64,
        key: i64,
        compute: impl FnOnce() -> Option<V>,
    ) -> Option<V> {
        let z = zone(tz);
        let (cell, held) = find(table, z, tag, key);
        if let Some(value) = held {
            return value;
        }
        let value = compute();
        put(cell, z, tag, key, value);
        value
    }

    /// Closed stretches are kept per zone, windows and half day (UTC) of
    /// the instants looked up.
    const HALF_DAY: i64 = 43_200;

    /// The first open second after `t`, an instant outside every window of
    /// set `tag`, remembered as the closed stretch `[from, open)` it lies
    /// in: every second of it finds the same opening.
    pub(super) fn opening(
        table: &Table<(i64, i64)>,
        tz: Tz,
        tag: u64,
        t: i64,
        compute: impl FnOnce() -> Option<i64>,
    ) -> Option<i64> {
        let z = zone(tz);
        let key = t.div_euclid(HALF_DAY);
        let (cell, held) = find(table, z, tag, key);
        let stretch = held.flatten();
        if let Some((from, open)) = stretch
            && from <= t
            && t < open
        {
            return Some(open);
        }
        let open = compute()?;
        if open > t {
            let from = match stretch {
                Some((from, o)) if o == open => from.min(t),
                _ => t,
            };
            put(cell, z, tag, key, Some((from, open)));
        }
        Some(open)
    }
}

impl Windows {
    pub fn new(windows: impl IntoIterator<Item = Window>) -> Self {
        static SETS: AtomicU64 = AtomicU64::new(1);
        Self {
            list: windows.into_iter().collect(),
            id: SETS.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn contains(&self, tz: Tz, t: i64) -> bool {
        if self.list.is_empty() {
            return true;
        }
        offset(tz, t)
            .and_then(|off| t.checked_add(i64::from(off)))
            .is_some_and(|l| self.list.iter().any(|w| w.contains_local_secs(l)))
    }

    /// The first second `≥ t` inside a window; `None` if none within the
    /// next eight local days (cannot happen with a valid configuration).
    pub fn next_open(&self, tz: Tz, t: i64) -> Option<i64> {
        if self.contains(tz, t) {
            return Some(t);
        }
        self.next_open_closed(tz, t)
    }

    /// [`Windows::next_open`] for an instant `t` outside every window.
    /// Remembered per thread like [`offset`], as the closed stretch from
    /// `t` to the opening, keyed by these windows, the zone and the half
    /// day: every instant of the stretch opens at the same second (the first
    /// open one after it), so the contacts of a pass held by the window in
    /// one zone, and those a cap or fatigue holds until some instant of the
    /// same night, find it there. Exact: an instant is looked up only in a
    /// stretch found closed to its end.
    pub(crate) fn next_open_closed(&self, tz: Tz, t: i64) -> Option<i64> {
        memo::CLOSED.with(|m| memo::opening(m, tz, self.id, t, || self.search(tz, t)))
    }

    /// [`Windows::next_open`] from the time-zone database.
    #[cfg(test)]
    fn find_next_open(&self, tz: Tz, t: i64) -> Option<i64> {
        if self.contains(tz, t) {
            return Some(t);
        }
        self.search(tz, t)
    }

    /// The first opening after `t`, outside every window.
    fn search(&self, tz: Tz, t: i64) -> Option<i64> {
        let today = local(tz, t)?.date();
        for offset in 0..=8 {
            let date = today.checked_add_days(Days::new(offset))?;
            let best = self
                .list
                .iter()
                .filter(|w| w.opens_on(date))
                .flat_map(|w| openings(tz, date, w.from))
                .filter(|&c| c >= t && self.contains(tz, c))
                .min();
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// The first instant of local `date` (the end of the gap when midnight is
/// skipped by a DST jump).
pub(crate) fn day_start(tz: Tz, date: NaiveDate) -> Option<i64> {
    openings(tz, date, 0).next()
}

/// UTC instants at which local `date` + `from` happens: one normally, two
/// when the clock falls back over it, the end of the gap when it is skipped.
fn openings(tz: Tz, date: NaiveDate, from: u32) -> impl Iterator<Item = i64> {
    let key = i64::from(date.num_days_from_ce()) * 86_400 + i64::from(from);
    let (a, b) = memo::OPENINGS
        .with(|m| memo::get_or(m, tz, 0, key, || Some(find_openings(tz, date, from))))
        .unwrap_or_default();
    a.into_iter().chain(b)
}

/// [`openings`] from the time-zone database.
fn find_openings(tz: Tz, date: NaiveDate, from: u32) -> (Option<i64>, Option<i64>) {
    let naive = date.and_hms_opt(from / 3600, from / 60 % 60, from % 60);
    let (a, b) = match naive.map(|n| (n, tz.from_local_datetime(&n))) {
        Some((_, LocalResult::Single(x))) => (Some(x.timestamp()), None),
        Some((_, LocalResult::Ambiguous(x, y))) => (Some(x.timestamp()), Some(y.timestamp())),
        Some((n, LocalResult::None)) => (
            GapInfo::new(&n, &tz)
                .and_then(|g| g.end)
                .map(|e| e.timestamp()),
            None,
        ),
        None => (None, None),
    };
    (a, b)
}

/// A window built by hand (tests, tools) rather than from configuration;
/// `from` and `to` are seconds of the local day.
pub fn window(days: &[Day], from: u32, to: u32) -> Window {
    Window {
        days: days.iter().fold(0, |m, d| m | d.bit()),
        from,
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use chrono_tz::{America::New_York, Europe::Paris};

    const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).expect("valid").timestamp()
    }

    fn calls() -> Windows {
        Windows::new([window(&WEEKDAYS, 9 * 3600, 18 * 3600)])
    }

    #[test]
    fn opening_after_spring_forward_is_at_the_new_offset() {
        // Paris jumps to CEST on Sunday 2026-03-29; Monday 09:00 is 07:00Z.
        let sat_night = utc("2026-03-28T20:00:00Z");
        assert_eq!(
            calls().next_open(Paris, sat_night),
            Some(utc("2026-03-30T07:00:00Z"))
        );
        // Friday before: 09:00 CET is 08:00Z.
        assert_eq!(
            calls().next_open(Paris, utc("2026-03-27T06:00:00Z")),
            Some(utc("2026-03-27T08:00:00Z"))
        );
        // New York switched on 2026-03-08; on the Monday after, 09:00 EDT is 13:00Z.
        assert_eq!(
            calls().next_open(New_York, utc("2026-03-07T12:00:00Z")),
            Some(utc("2026-03-09T13:00:00Z"))
        );
        // The same UTC instant is open in Paris, closed in New York.
        let t = utc("2026-03-30T12:00:00Z");
        assert!(calls().contains(Paris, t));
        assert!(!calls().contains(New_York, t));
        assert_eq!(
            calls().next_open(New_York, t),
            Some(utc("2026-03-30T13:00:00Z"))
        );
    }

    #[test]
    fn closing_time_is_excluded_and_fall_back_shifts_utc() {
        let w = calls();
        assert!(!w.contains(Paris, utc("2026-10-23T16:00:00Z"))); // 18:00 CEST
        assert!(w.contains(Paris, utc("2026-10-23T15:59:59Z")));
        // After fall back on Sunday 2026-10-25, Monday 09:00 CET = 08:00Z.
        assert_eq!(
            w.next_open(Paris, utc("2026-10-23T16:00:00Z")),
            Some(utc("2026-10-26T08:00:00Z"))
        );
    }

    #[test]
    fn skipped_opening_time_opens_when_the_gap_ends() {
        // 02:30 does not exist in Paris on 2026-03-29: opens at 03:00 CEST = 01:00Z.
        let w = Windows::new([window(&Day::ALL, 2 * 3600 + 1800, 4 * 3600)]);
        assert_eq!(
            w.next_open(Paris, utc("2026-03-28T23:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn repeated_opening_time_opens_at_first_and_reopens_at_second() {
        // 02:00–02:45 on 2026-10-25 in Paris happens twice (CEST then CET).
        let w = Windows::new([window(&Day::ALL, 2 * 3600, 2 * 3600 + 2700)]);
        assert_eq!(
            w.next_open(Paris, utc("2026-10-24T22:00:00Z")),
            Some(utc("2026-10-25T00:00:00Z"))
        );
        // Closed at 02:45 CEST (00:45Z); reopens at 02:00 CET (01:00Z).
        assert_eq!(
            w.next_open(Paris, utc("2026-10-25T00:45:00Z")),
            Some(utc("2026-10-25T01:00:00Z"))
        );
    }

    #[test]
    fn remembered_offsets_days_and_openings_agree_with_the_database() {
        use chrono::Days;
        for tz in ZONES {
            // Twice (the second from the memo), against chrono-tz directly.
            for round in 0..2 {
                for t in over_a_year() {
                    let utc_t = DateTime::from_timestamp(t, 0).expect("in range");
                    let direct = tz.from_utc_datetime(&utc_t.naive_utc()).naive_local();
                    assert_eq!(local(tz, t), Some(direct), "{tz} {t} round {round}");
                    let day = direct.date();
                    let first = day_start_direct(tz, day);
                    let end = day_start_direct(tz, day + Days::new(1));
                    assert_eq!(
                        local_days(tz, t, 1),
                        Some((day.num_days_from_ce(), first, end)),
                        "{tz} {t}"
                    );
                    let week = day_start_direct(tz, day - Days::new(6));
                    assert_eq!(
                        local_days(tz, t, 7),
                        Some((day.num_days_from_ce(), week, end)),
                        "{tz} {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn remembered_next_openings_are_each_set_of_windows_own() {
        // Two sets asked about the same zones and instants, interleaved:
        // each finds its own opening, never the other's.
        let calls = calls();
        let evenings = Windows::new([window(&[Day::Sat, Day::Sun], 18 * 3600, 22 * 3600)]);
        assert_eq!(calls.clone().id, calls.id);
        for tz in ZONES {
            for round in 0..2 {
                for t in over_a_year() {
                    for w in [&calls, &evenings] {
                        assert_eq!(
                            w.next_open(tz, t),
                            w.find_next_open(tz, t),
                            "{tz} {t} round {round}"
                        );
                    }
                }
            }
        }
        let start = utc("2026-01-01T00:00:00Z");
        assert_ne!(
            calls.next_open(Paris, start),
            evenings.next_open(Paris, start)
        );
    }

    #[test]
    fn remembered_closed_stretches_open_where_the_database_says() {
        // Every 7 min 13 s over March 2026 (both DST changes), forwards
        // then backwards (a stretch found later is extended to earlier
        // instants), in each zone and for two sets of windows.
        let calls = calls();
        let evenings = Windows::new([window(&[Day::Sat, Day::Sun], 18 * 3600, 22 * 3600)]);
        let start = utc("2026-03-01T00:00:00Z");
        let forwards: Vec<i64> = (0..6_200).map(|k| start + k * 433).collect();
        for tz in ZONES {
            for t in forwards.iter().chain(forwards.iter().rev()) {
                for w in [&calls, &evenings] {
                    assert_eq!(w.next_open(tz, *t), w.find_next_open(tz, *t), "{tz} {t}");
                }
            }
        }
    }

    /// Zones with DST changes at midnight, of 30 minutes, or none.
    const ZONES: [Tz; 5] = [
        Paris,
        New_York,
        chrono_tz::Asia::Tokyo,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::America::Santiago,
    ];

    /// Every 4 h 23 min 37 s over 2026.
    fn over_a_year() -> impl Iterator<Item = i64> {
        let start = utc("2026-01-01T00:00:00Z");
        (0..2_000).map(move |k| start + k * 15_817)
    }

    /// The first instant of a local date, straight from chrono-tz.
    fn day_start_direct(tz: Tz, date: NaiveDate) -> i64 {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight");
        match tz.from_local_datetime(&midnight) {
            LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => x.timestamp(),
            LocalResult::None => GapInfo::new(&midnight, &tz)
                .and_then(|g| g.end)
                .expect("gap end")
                .timestamp(),
        }
    }

    #[test]
    fn empty_windows_are_always_open() {
        let t = Utc.timestamp_opt(0, 0).single().expect("valid").timestamp();
        assert_eq!(Windows::default().next_open(Paris, t), Some(t));
    }
}
