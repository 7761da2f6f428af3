//! Scoring throughput under the shipped rules: 1,000,000 contacts with 20
//! events on average, generated deterministically in chunks so memory stays
//! bounded. Only the time spent in `ScoringModel::score` is counted.
//!
//! Run: `cargo bench --bench scoring` (`RELANCE_BENCH_CONTACTS` to resize,
//! `RELANCE_BENCH_THREADS=2` to score each chunk on two threads).

use relance::config::Config;
use relance::model::{BusinessSignal, Company, Contact, Event, Status, Timestamp};
use relance::scoring::ScoringModel;
use serde_json::json;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const CHUNK: usize = 10_000;
const COMPANIES: usize = 20_000;

/// SplitMix64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Event types weighted roughly like real traffic: opens and visits dominate.
const KINDS: &[&str] = &[
    "email_sent",
    "email_sent",
    "email_sent",
    "email_open",
    "email_open",
    "email_open",
    "email_click",
    "page_visit",
    "page_visit",
    "page_visit",
    "page_visit",
    "download",
    "form_submit",
    "call",
    "sms_sent",
    "webinar_signup",
    "demo_request",
    "inbound_call",
    "meeting",
    "unsubscribe",
];
const URLS: &[&str] = &[
    "https://payroll.example/",
    "https://payroll.example/pricing",
    "https://payroll.example/blog/expatriates",
    "https://payroll.example/blog/payslips",
    "https://payroll.example/demo",
    "https://payroll.example/careers/dev",
    "https://payroll.example/features/leave",
];
const TITLES: &[&str] = &[
    "DRH",
    "Directrice RH",
    "Responsable paie",
    "Comptable",
    "Stagiaire RH",
    "CEO",
    "Head of People",
];
const SECTORS: &[&str] = &["industry", "construction", "retail", "services", "BTP"];

fn companies(rng: &mut Rng, now: Timestamp) -> Vec<Company> {
    (0..COMPANIES)
        .map(|i| {
            let mut co = Company {
                id: format!("co{i}"),
                name: Some(format!("Company {i}")),
                ..Company::default()
            };
            co.attributes
                .insert("headcount".into(), json!(rng.below(2000) + 1));
            co.attributes
                .insert("sector".into(), json!(*rng.pick(SECTORS)));
            co.attributes
                .insert("foreign_subsidiaries".into(), json!(rng.below(4)));
            co.attributes
                .insert("expatriates".into(), json!(rng.below(3) * 5));
            if rng.below(5) == 0 {
                co.signals.push(BusinessSignal {
                    kind: "international".into(),
                    at: now - chrono::Duration::days(rng.below(365) as i64),
                    props: serde_json::Map::new(),
                });
            }
            co
        })
        .collect()
}

fn contact(rng: &mut Rng, i: usize) -> Contact {
    let mut c = Contact {
        id: format!("c{i}"),
        email: Some(format!("c{i}@example.com")),
        company: Some(format!("co{}", rng.below(COMPANIES as u64))),
        status: Status::Prospect,
        ..Contact::default()
    };
    c.attributes
        .insert("title".into(), json!(*rng.pick(TITLES)));
    if rng.below(50) == 0 {
        c.do_not_contact.insert("email".into());
    }
    c
}

fn events(rng: &mut Rng, contact: &str, now: Timestamp, out: &mut Vec<Event>) {
    out.clear();
    let n = rng.below(41) as usize; // 0..=40, 20 on average
    for _ in 0..n {
        let kind = *rng.pick(KINDS);
        let mut props = serde_json::Map::new();
        if kind == "page_visit" {
            props.insert("url".into(), json!(*rng.pick(URLS)));
        }
        out.push(Event {
            id: None,
            contact: contact.to_string(),
            kind: kind.to_string(),
            at: now - chrono::Duration::seconds(rng.below(400 * 86_400) as i64),
            channel: None,
            props,
        });
    }
    out.sort_by_key(|e| e.at);
}

/// CPU time of this thread in nanoseconds: the machine is shared, so wall
/// time alone overstates the cost when other work competes for the cores.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Scores a slice of contacts; returns the score checksum, the number of
/// hot contacts and the thread's CPU time.
fn score_part(
    model: &ScoringModel,
    companies: &[Company],
    contacts: &[Contact],
    events: &[Vec<Event>],
    now: Timestamp,
) -> (i64, usize, u64) {
    let cpu_start = thread_cpu_ns();
    let (mut checksum, mut hot) = (0i64, 0usize);
    for (c, evs) in contacts.iter().zip(events) {
        let company = c
            .company
            .as_deref()
            .and_then(|id| id.strip_prefix("co"))
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| &companies[n]);
        let card = model.score(c, company, evs, now);
        checksum += card.score.hundredths();
        hot += usize::from(&*card.band == "hot");
        black_box(&card);
    }
    let cpu = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    (checksum, hot, cpu)
}

fn main() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let model = ScoringModel::compile(&config.scoring).unwrap_or_else(|e| panic!("{e}"));
    let contacts: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let threads: usize = std::env::var("RELANCE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1);
    let now: Timestamp = "2026-03-02T12:00:00Z".parse().expect("valid instant");

    let mut rng = Rng(0x5EED);
    let companies = companies(&mut rng, now);
    let mut scoring = Duration::ZERO;
    let mut cpu_ns = 0u64;
    let mut total_events = 0usize;
    let mut checksum = 0i64;
    let mut hot = 0usize;
    let mut chunk_contacts = Vec::with_capacity(CHUNK);
    let mut chunk_events: Vec<Vec<Event>> = (0..CHUNK).map(|_| Vec::new()).collect();
    let wall = Instant::now();
    let mut done = 0;
    while done < contacts {
        let n = CHUNK.min(contacts - done);
        chunk_contacts.clear();
        for (k, evs) in chunk_events.iter_mut().take(n).enumerate() {
            let c = contact(&mut rng, done + k);
            events(&mut rng, &c.id, now, evs);
            total_events += evs.len();
            chunk_contacts.push(c);
        }
        let start = Instant::now();
        let per_thread = n.div_ceil(threads);
        let parts: Vec<(i64, usize, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk_contacts
                .chunks(per_thread)
                .zip(chunk_events[..n].chunks(per_thread))
                .map(|(cs, es)| scope.spawn(|| score_part(&model, &companies, cs, es, now)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("scoring thread panicked"))
                .collect()
        });
        scoring += start.elapsed();
        for (sum, h, cpu) in parts {
            checksum += sum;
            hot += h;
            cpu_ns += cpu;
        }
        done += n;
    }
    let secs = scoring.as_secs_f64();
    println!("relance scoring benchmark (shipped rules, {threads} scoring thread(s))");
    println!("  contacts          {contacts}");
    println!("  events            {total_events}");
    println!(
        "  scoring time      {secs:.2} s (generation excluded; wall {:.2} s)",
        wall.elapsed().as_secs_f64()
    );
    println!("  contacts/s        {:.0}", contacts as f64 / secs);
    println!("  events/s          {:.0}", total_events as f64 / secs);
    if cpu_ns > 0 {
        let cpu = cpu_ns as f64 / 1e9;
        println!("  scoring CPU time  {cpu:.2} s (all scoring threads)");
        println!("  events/CPU-s      {:.0}", total_events as f64 / cpu);
    }
    println!("  hot contacts      {hot}");
    println!("  score checksum    {checksum}");
    match peak_rss_kib() {
        Some(kib) => println!("  peak RSS          {:.1} MiB", kib as f64 / 1024.0),
        None => println!("  peak RSS          unavailable"),
    }
}
