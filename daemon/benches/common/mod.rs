//! Deterministic data shared by the benchmarks: companies, contacts and
//! their events, shaped like real traffic under the shipped rules.
#![allow(dead_code)]

use relance::core::model::{BusinessSignal, Company, Contact, Event, Status, Timestamp};

/// The tests' PostgreSQL helpers: statements and queries on a database.
#[path = "../../tests/common/pg.rs"]
pub mod pg;
use serde_json::json;

pub const COMPANIES: usize = 20_000;

/// SplitMix64: deterministic and dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
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

pub fn companies(rng: &mut Rng, now: Timestamp) -> Vec<Company> {
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

pub fn contact(rng: &mut Rng, i: usize) -> Contact {
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

pub fn events(rng: &mut Rng, contact: &str, now: Timestamp, out: &mut Vec<Event>) {
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
pub fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// User and system CPU time of the whole process (every thread, finished
/// ones included), from /proc; 10 ms resolution on usual kernels.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Busy CPU seconds of the whole machine since boot (every core; idle and
/// I/O wait left out), from /proc/stat: with a local database server the
/// process's own CPU leaves out the server's share of the work.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / 100.0)
}

/// Starts the peak resident memory again from the current one (Linux:
/// `5` in clear_refs), so that each phase reports its own peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The size of the generated store (`RELANCE_BENCH_CONTACTS`, a million by
/// default), the reference instant of the benchmarks, and where the store
/// shared by the rescore and plan benchmarks lives.
pub fn bench_store() -> (usize, Timestamp, std::path::PathBuf) {
    let contacts: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let now: Timestamp = "2026-03-02T12:00:00Z".parse().expect("valid instant");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    (contacts, now, dir.join(format!("rescore-{contacts}.db")))
}

/// The shipped configuration with its store at `db`.
pub fn shipped_config(db: &std::path::Path) -> relance::pipeline::config::Config {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let text = std::fs::read_to_string(&file).expect("shipped config");
    let db_name = db.display().to_string();
    relance::pipeline::config::Config::parse(&text, &file, &|n| {
        (n == "RELANCE_DB").then(|| db_name.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A pricing-page visit five minutes before `now` for `n` contacts drawn
/// from the `contacts` generated ones, with ids `{prefix}-{i}`.
pub fn pricing_visits(
    rng: &mut Rng,
    contacts: usize,
    n: usize,
    now: Timestamp,
    prefix: &str,
) -> Vec<relance::domain::ingest::Incoming> {
    (0..n)
        .map(|i| {
            let c = rng.below(contacts as u64) as usize;
            let mut props = serde_json::Map::new();
            props.insert("url".into(), "https://payroll.example/pricing".into());
            relance::domain::ingest::Incoming::Contact(Event {
                id: Some(format!("{prefix}-{i}")),
                contact: format!("c{c}"),
                kind: "page_visit".into(),
                at: now - chrono::Duration::minutes(5),
                channel: None,
                props,
            })
        })
        .collect()
}

/// Counts the events through a connection of its own with a small page
/// cache: reading the whole table through the store's would keep its cache
/// full, in the peak resident memory reported below.
pub fn count_events(db: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.pragma_update(None, "cache_size", -1024)
        .expect("cache size");
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count")
}

/// A benchmark's PostgreSQL mode: `RELANCE_BENCH_PG` names a server
/// (`postgres://postgres@127.0.0.1:5432`, trust authentication), on which
/// the benchmark creates its databases, named with
/// `RELANCE_BENCH_PG_PREFIX` (`relance_bench_` by default) and `name`.
#[derive(Debug, Clone)]
pub struct PgBench {
    pub server: String,
    prefix: String,
}

impl PgBench {
    /// The PostgreSQL mode, when `RELANCE_BENCH_PG` is set.
    pub fn from_env() -> Option<Self> {
        let server = std::env::var("RELANCE_BENCH_PG").ok()?;
        let prefix =
            std::env::var("RELANCE_BENCH_PG_PREFIX").unwrap_or_else(|_| "relance_bench_".into());
        Some(Self {
            server: server.trim_end_matches('/').to_string(),
            prefix,
        })
    }

    /// The server of the PostgreSQL benchmarks: `RELANCE_BENCH_PG`, else
    /// `RELANCE_TEST_PG`, else the local one.
    pub fn local() -> Self {
        Self::from_env().unwrap_or_else(|| Self {
            server: pg::server(),
            prefix: "relance_bench_".into(),
        })
    }

    /// The database `name` of this benchmark run.
    pub fn database(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.server)
    }

    /// Whether database `database` exists.
    pub fn exists(&self, database: &str) -> bool {
        !pg::column(
            &self.url("postgres"),
            &format!("SELECT datname::text FROM pg_database WHERE datname = '{database}'"),
        )
        .is_empty()
    }

    pub fn create(&self, database: &str) {
        pg::execute(
            &self.url("postgres"),
            &format!("CREATE DATABASE {database}"),
        );
    }

    pub fn drop_database(&self, database: &str) {
        pg::execute(
            &self.url("postgres"),
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        );
    }
}

/// Where the rescore and plan benchmarks run: the generated SQLite store,
/// or (`RELANCE_BENCH_PG`) the PostgreSQL database `rescore_N` holding a
/// copy of it.
#[derive(Debug, Clone)]
pub enum BenchDb {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl BenchDb {
    /// The store the benchmark measures, with `config` pointed at it. In
    /// PostgreSQL mode the database is created and the SQLite store `db`
    /// copied into it (`relance store copy`'s code, timed) when missing,
    /// if `copy` allows; else the run stops with a message.
    pub fn open(
        contacts: usize,
        db: &std::path::Path,
        config: &mut relance::pipeline::config::Config,
        copy: bool,
    ) -> (relance::ports::store::StoreHandle, Self) {
        let Some(pg) = PgBench::from_env() else {
            let store = relance::adapters::sqlite::open(config).expect("store");
            return (store, Self::Sqlite(db.to_path_buf()));
        };
        let name = pg.database(&format!("rescore_{contacts}"));
        let url = pg.url(&name);
        if !pg.exists(&name) {
            if !copy {
                eprintln!(
                    "database {name} is missing: run `RELANCE_BENCH_PG={} cargo bench --bench rescore` first",
                    pg.server
                );
                std::process::exit(2);
            }
            pg.create(&name);
            let cpu = process_cpu_secs();
            let started = std::time::Instant::now();
            let copied = relance::adapters::postgres::PgStore::open(&url, 4)
                .and_then(|s| s.copy_from_sqlite(db))
                .unwrap_or_else(|e| {
                    pg.drop_database(&name);
                    panic!("store copy: {e}")
                });
            let rows: u64 = copied.iter().map(|c| c.postgres).sum();
            println!(
                "copied {} into {name}: {rows} rows in {:.1} s, {:.1} s of CPU here (not measured below)",
                db.display(),
                started.elapsed().as_secs_f64(),
                process_cpu_secs().zip(cpu).map_or(0.0, |(b, a)| b - a)
            );
        }
        config.store.url = Some(url.clone());
        let store = relance::adapters::open_store(config).expect("store");
        (store, Self::Postgres(url))
    }

    /// Runs statements (`;`-separated), written for both backends.
    pub fn execute(&self, sql: &str) {
        match self {
            Self::Sqlite(path) => rusqlite::Connection::open(path)
                .and_then(|c| c.execute_batch(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Self::Postgres(url) => pg::execute(url, sql),
        }
    }

    /// On PostgreSQL, vacuums and analyzes `tables` (untimed), as
    /// autovacuum would in time: the rows an earlier run deleted must not
    /// stay as dead entries in the indexes the passes read. Nothing on
    /// SQLite, which reuses freed pages at once.
    pub fn settle(&self, tables: &[&str]) {
        if let Self::Postgres(url) = self {
            for t in tables {
                pg::execute(url, &format!("VACUUM (ANALYZE) {t}"));
            }
        }
    }

    /// Deletes the events numbered above `seq` (those a run appended).
    pub fn delete_events_after(&self, seq: i64) {
        self.execute(&match self {
            Self::Sqlite(_) => format!(
                "DELETE FROM events WHERE contact IN (SELECT contact FROM event_feed WHERE seq > {seq})
                   AND seq > {seq}"
            ),
            Self::Postgres(_) => format!("DELETE FROM events WHERE seq > {seq}"),
        });
    }

    pub fn count_events(&self) -> u64 {
        match self {
            Self::Sqlite(path) => count_events(path),
            Self::Postgres(url) => pg::column(url, "SELECT count(*)::text FROM events")
                .first()
                .and_then(|n| n.parse().ok())
                .expect("count"),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }
}
