//! Guard benchmark: 1,000,000 contact states in memory, decisions timed on
//! one thread. Run with `cargo bench --bench guard`.
//!
//! Then the baseline (issue 17, `bench/baselines.sh --only guard`): the
//! allow test of the shipped rules over the same states, written by hand
//! as a flat loop over plain arrays with each zone's offset and local day
//! looked up once per pass, the way a minimal special-purpose program would
//! (no reasons, no earliest instant, the shipped configuration's figures
//! written in). Its allows must equal the guard's; its rate per
//! CPU-second is printed beside the guard's.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Utc};
use chrono::{Offset, TimeZone};
use chrono_tz::Tz;
use relance::domain::fatigue::{
    ContactState, Decision, Fatigue, FatiguePoints, FollowUpKind, Guard, Proposal, Reach, Verdict,
};
use relance::pipeline::config::Config;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;

const CONTACTS: usize = 1_000_000;
const PASSES: usize = 3;
const DAY: i64 = 86_400;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let guard = config.guard().unwrap_or_else(|e| panic!("{e}"));
    let channels: Vec<_> = ["email", "sms", "phone"]
        .iter()
        .map(|n| guard.channel(n).expect("shipped channel"))
        .collect();
    let zones: [Option<Tz>; 4] = [
        None,
        Some(chrono_tz::Europe::Paris),
        Some(chrono_tz::America::New_York),
        Some(chrono_tz::Asia::Tokyo),
    ];
    // Wednesday 2026-03-25 14:00Z: open in Paris and New York, night in Tokyo.
    let now = DateTime::parse_from_rfc3339("2026-03-25T14:00:00Z")
        .expect("valid")
        .timestamp();

    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let started = Instant::now();
    let mut states = Vec::with_capacity(CONTACTS);
    for _ in 0..CONTACTS {
        let start = now - 10 * DAY;
        let mut reach = Reach::default();
        if rng.below(2) == 0 {
            reach.set_consent(channels[1], true);
        }
        if rng.below(100) == 0 {
            reach.do_not_contact |= 1;
        }
        let mut s = ContactState {
            fatigue: Fatigue::new(
                FatiguePoints::from_milli(i64::try_from(rng.below(20_000)).expect("small")),
                at(start),
            ),
            reach,
            timezone: zones[usize::try_from(rng.below(4)).expect("small")],
            ..ContactState::default()
        };
        let sends = rng.below(5);
        let mut t = start;
        for _ in 0..sends {
            t += i64::try_from(rng.below(2 * DAY as u64)).expect("small");
            let ch = channels[usize::try_from(rng.below(3)).expect("small")];
            s.charge(&guard, ch, at(t)).expect("in order");
        }
        states.push(s);
    }
    let built = started.elapsed();

    let kinds = [
        FollowUpKind::Systematic,
        FollowUpKind::Event,
        FollowUpKind::Opportunistic,
    ];
    let proposals: Vec<Proposal> = (0..1024)
        .map(|_| {
            let mut p = Proposal::new(
                channels[usize::try_from(rng.below(3)).expect("small")],
                kinds[usize::try_from(rng.below(3)).expect("small")],
            );
            p.exempt = rng.below(50) == 0;
            p
        })
        .collect();

    let mut counts = [0u64; 3];
    let cpu_start = common::thread_cpu_ns();
    let started = Instant::now();
    for pass in 0..PASSES {
        let t = at(now + i64::try_from(pass).expect("small") * 3600);
        for (i, s) in states.iter().enumerate() {
            let d = guard.decide(&proposals[i % proposals.len()], black_box(s), t);
            counts[match d.decision {
                Verdict::Allow => 0,
                Verdict::Defer => 1,
                Verdict::Drop | Verdict::Block => 2,
            }] += 1;
            black_box(&d);
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_start
        .zip(common::thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a));
    let decisions = (CONTACTS * PASSES) as f64;

    // One more pass timing each decision (adds the clock's own cost) to
    // show what each verdict costs: defers compute window openings.
    let mut spent = [0u128; 3];
    let mut seen = [0u128; 3];
    let t = at(now);
    for (i, s) in states.iter().enumerate() {
        let one = Instant::now();
        let d = guard.decide(&proposals[i % proposals.len()], black_box(s), t);
        let ns = one.elapsed().as_nanos();
        let k = match d.decision {
            Verdict::Allow => 0,
            Verdict::Defer => 1,
            Verdict::Drop | Verdict::Block => 2,
        };
        spent[k] += ns;
        seen[k] += 1;
        black_box(&d);
    }

    println!(
        "contacts: {CONTACTS} ({} bytes of state each, {} bytes per decision), built in {:.2?}",
        std::mem::size_of::<ContactState>(),
        std::mem::size_of::<Decision>(),
        built
    );
    println!(
        "decisions: {} in {:.2?} on one thread = {:.0} decisions/s ({:.0} ns each)",
        CONTACTS * PASSES,
        elapsed,
        decisions / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / decisions
    );
    // Other work shares the cores: the thread's own CPU time gives the
    // rate per core.
    if let Some(ns) = cpu.filter(|&ns| ns > 0) {
        println!(
            "per core: {:.0} decisions per CPU-second ({:.0} ns of CPU each; load {})",
            decisions / (ns as f64 / 1e9),
            ns as f64 / decisions,
            std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                .unwrap_or_default()
        );
    }
    println!(
        "allow {} / defer {} / block {}",
        counts[0], counts[1], counts[2]
    );
    let avg = |k: usize| spent[k] as f64 / seen[k].max(1) as f64;
    println!(
        "per verdict (timed one by one): allow {:.0} ns, defer {:.0} ns, block {:.0} ns",
        avg(0),
        avg(1),
        avg(2)
    );
    baseline(&guard, &states, &proposals, now, counts[0]);
    if std::env::var_os("RELANCE_BENCH_CHECKSUM").is_some() {
        checksum(&guard, &states, &proposals, now);
    }

    match common::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: /proc/self/status unavailable"),
    }
}

/// With `RELANCE_BENCH_CHECKSUM` set: one hash over every decision of the
/// timed passes, whole (verdict, `until`, the reasons as read), and over
/// the same proposals with a send of the same channel booked a day later,
/// so that two versions of the guard can be shown to decide alike.
fn checksum(guard: &Guard, states: &[ContactState], proposals: &[Proposal], now: i64) {
    use std::fmt::Write as _;
    use std::hash::{DefaultHasher, Hasher};
    struct Sink(DefaultHasher);
    impl std::fmt::Write for Sink {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut sink = Sink(DefaultHasher::new());
    for pass in 0..PASSES {
        let secs = now + i64::try_from(pass).expect("small") * 3600;
        for (i, s) in states.iter().enumerate() {
            let p = &proposals[i % proposals.len()];
            let d = guard.decide(p, s, at(secs));
            write!(sink, "{d:?}").expect("hashing");
            if i % 8 == 0 {
                let booked = [(p.channel, at(secs + DAY))];
                let d = guard.decide_booked(p, s, at(secs), &booked);
                write!(sink, "{d:?}").expect("hashing");
            }
        }
    }
    println!(
        "checksum of every decision, reasons included: {:016x}",
        sink.0.finish()
    );
}

/// The same states as plain arrays.
struct Flat {
    /// Fatigue units at the benchmark's `now`.
    units: Vec<i64>,
    reach: Vec<[u32; 3]>,
    /// Index in the zones of the pass; 0 is the default zone.
    zone: Vec<u8>,
    /// Recent sends: channel (call-task mark removed), instant in seconds.
    sends: Vec<[(u8, u32); 12]>,
    len: Vec<u8>,
}

fn baseline(guard: &Guard, states: &[ContactState], proposals: &[Proposal], now: i64, allows: u64) {
    let id = |n: &str| guard.channel(n).expect("shipped channel").0;
    let (email, sms, phone) = (id("email"), id("sms"), id("phone"));
    let zones: Vec<Tz> = vec![
        guard.default_timezone(),
        chrono_tz::Europe::Paris,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Tokyo,
    ];
    let decay = guard.decay();
    let per_second = decay.per_second();
    let mut flat = Flat {
        units: Vec::with_capacity(states.len()),
        reach: Vec::with_capacity(states.len()),
        zone: Vec::with_capacity(states.len()),
        sends: Vec::with_capacity(states.len()),
        len: Vec::with_capacity(states.len()),
    };
    for s in states {
        flat.units.push(s.fatigue.value_at(decay, at(now)).units());
        let r = s.reach;
        flat.reach
            .push([r.do_not_contact, r.consent_given, r.consent_refused]);
        let z = s.timezone.map_or(0, |tz| {
            zones.iter().skip(1).position(|z| *z == tz).expect("zone") + 1
        });
        flat.zone.push(u8::try_from(z).expect("few zones"));
        let mut sends = [(0u8, 0u32); 12];
        let mut n = 0;
        for (c, t) in s.sends.iter() {
            sends[n] = (c.0, u32::try_from(t.timestamp()).expect("2106"));
            n += 1;
        }
        flat.sends.push(sends);
        flat.len.push(u8::try_from(n).expect("12"));
    }
    let plain: Vec<(u8, u32, bool)> = proposals
        .iter()
        .map(|p| (p.channel.0, guard.priorities().of(p.kind), p.exempt))
        .collect();
    let stop = FatiguePoints::from_points(25).units();
    let reduce = FatiguePoints::from_points(20).units();
    const DAY: i64 = 86_400;

    let mut allowed = 0u64;
    let cpu_start = common::thread_cpu_ns();
    let started = Instant::now();
    for pass in 0..PASSES {
        let t = now + i64::try_from(pass).expect("small") * 3600;
        // Once per pass and zone: the local time and the local day's span.
        let local: Vec<(i64, i64, i64)> = zones
            .iter()
            .map(|tz| {
                let off = i64::from(
                    tz.offset_from_utc_datetime(&at(t).naive_utc())
                        .fix()
                        .local_minus_utc(),
                );
                let l = t + off;
                let midnight = l - l.rem_euclid(DAY);
                let start = tz
                    .from_local_datetime(&at(midnight).naive_utc())
                    .earliest()
                    .expect("midnight exists")
                    .timestamp();
                let end = tz
                    .from_local_datetime(&at(midnight + DAY).naive_utc())
                    .earliest()
                    .expect("midnight exists")
                    .timestamp();
                (l, start, end)
            })
            .collect();
        for i in 0..states.len() {
            let (ch, priority, exempt) = plain[i % plain.len()];
            let [dnc, given, refused] = flat.reach[i];
            let bit = 1u32 << ch;
            let consent = refused & bit == 0 && (ch != sms || given & bit != 0);
            if dnc & bit != 0 || !consent {
                continue;
            }
            let (l, day_start, day_end) = local[usize::from(flat.zone[i])];
            if !exempt {
                let units = (flat.units[i] - per_second * (t - now)).max(0);
                if units > stop || (units >= reduce && priority < 20) {
                    continue;
                }
                let (mut mail, mut call, mut all, mut today) = (0, 0, 0, 0);
                for &(c, s) in &flat.sends[i][..usize::from(flat.len[i])] {
                    let s = i64::from(s);
                    let week = s > t - 7 * DAY;
                    mail += u32::from(c == email && week);
                    call += u32::from(c == phone && s > t - 3 * DAY);
                    all += u32::from(week);
                    today += u32::from(day_start <= s && s < day_end);
                }
                if (ch == email && mail >= 2)
                    || (ch == phone && call >= 1)
                    || all >= 4
                    || today >= 1
                {
                    continue;
                }
            }
            let weekday = (l.div_euclid(DAY) + 3).rem_euclid(7);
            let minute = l.rem_euclid(DAY) / 60;
            let open = if ch == email {
                (8 * 60..20 * 60).contains(&minute)
            } else if ch == sms {
                weekday < 6 && (9 * 60..19 * 60).contains(&minute)
            } else {
                weekday < 5 && (9 * 60..18 * 60).contains(&minute)
            };
            allowed += u64::from(open);
        }
    }
    black_box(allowed);
    let elapsed = started.elapsed();
    let cpu = cpu_start
        .zip(common::thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a));
    let decisions = (states.len() * PASSES) as f64;
    println!(
        "baseline (flat loop, allow test only): {allowed} allows ({}), {:.2?} on one thread = {:.0} decisions/s",
        if allowed == allows {
            "the guard's"
        } else {
            "NOT the guard's"
        },
        elapsed,
        decisions / elapsed.as_secs_f64()
    );
    if let Some(ns) = cpu.filter(|&ns| ns > 0) {
        println!(
            "baseline per core: {:.0} decisions per CPU-second ({:.1} ns of CPU each)",
            decisions / (ns as f64 / 1e9),
            ns as f64 / decisions
        );
    }
}
