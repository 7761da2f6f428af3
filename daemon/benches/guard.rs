//! Guard benchmark: 1,000,000 contact states in memory, decisions timed on
//! one thread. Run with `cargo bench --bench guard`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use relance::domain::fatigue::{
    ContactState, Fatigue, FatiguePoints, FollowUpKind, Proposal, Reach, Verdict,
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
        "contacts: {CONTACTS} ({} bytes of state each), built in {:.2?}",
        std::mem::size_of::<ContactState>(),
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
    match common::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: /proc/self/status unavailable"),
    }
}
