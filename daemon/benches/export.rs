//! Writes the benchmarks' data set as plain files for the baselines
//! (`bench/baselines.sh`): the same companies, contacts and events the
//! rescore benchmark stores (same generator, same seed, same order), as
//! CSV for DuckDB, and the first 1,000,000 events with their contacts as
//! JSONL for `relance import`.
//!
//! Run: `cargo bench --bench export` (`RELANCE_BENCH_CONTACTS` to resize;
//! `RELANCE_BENCH_EXPORT` for the folder, `target/bench/baseline-N/` by
//! default). Files already written are kept.

#[path = "common/mod.rs"]
mod common;

use common::{Rng, companies, contact, events};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Events in the import file.
const IMPORT_EVENTS: usize = 1_000_000;

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let (contacts, now, _) = common::bench_store();
    let dir = std::env::var_os("RELANCE_BENCH_EXPORT").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../target/bench/baseline-{contacts}"))
        },
        Into::into,
    );
    std::fs::create_dir_all(&dir).expect("export dir");
    let done = dir.join("done");
    if done.exists() {
        println!("export: {} is up to date", dir.display());
        return;
    }
    let started = std::time::Instant::now();
    let file = |name: &str| {
        BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join(name)).expect("create"),
        )
    };

    let mut rng = Rng(0x5EED);
    let cos = companies(&mut rng, now);
    let mut out = file("companies.csv");
    writeln!(
        out,
        "idx,id,headcount,sector,foreign_subsidiaries,expatriates,international_at"
    )
    .expect("write");
    for (i, co) in cos.iter().enumerate() {
        let a = &co.attributes;
        let signal = co
            .signals
            .iter()
            .filter(|s| s.kind == "international")
            .map(|s| s.at.timestamp_micros())
            .max()
            .map_or(String::new(), |m| m.to_string());
        writeln!(
            out,
            "{i},{},{},{},{},{},{signal}",
            co.id,
            a["headcount"],
            a["sector"].as_str().unwrap_or_default(),
            a["foreign_subsidiaries"],
            a["expatriates"],
        )
        .expect("write");
    }
    out.flush().expect("flush");

    let mut contacts_csv = file("contacts.csv");
    let mut events_csv = file("events.csv");
    let mut contacts_jsonl = file("import-contacts.jsonl");
    let mut events_jsonl = file("import-events.jsonl");
    writeln!(contacts_csv, "idx,id,company,title,dnc").expect("write");
    writeln!(events_csv, "contact,at,type,url").expect("write");
    let mut buf = Vec::new();
    let (mut total, mut imported) = (0usize, 0usize);
    for i in 0..contacts {
        let c = contact(&mut rng, i);
        events(&mut rng, &c.id, now, &mut buf);
        // The store's rowids start at 1, in this order.
        let idx = i + 1;
        let company: usize = c
            .company
            .as_deref()
            .and_then(|id| id.strip_prefix("co"))
            .and_then(|n| n.parse().ok())
            .expect("generated company id");
        let title = c.attributes["title"].as_str().unwrap_or_default();
        writeln!(
            contacts_csv,
            "{idx},{},{company},{title},{}",
            c.id,
            !c.do_not_contact.is_empty()
        )
        .expect("write");
        for e in &buf {
            let url = e
                .props
                .get("url")
                .and_then(|u| u.as_str())
                .unwrap_or_default();
            writeln!(
                events_csv,
                "{idx},{},{},{url}",
                e.at.timestamp_micros(),
                e.kind
            )
            .expect("write");
        }
        total += buf.len();
        if imported < IMPORT_EVENTS {
            // The import's flat shape: unknown keys become attributes.
            let line = serde_json::json!({
                "id": c.id,
                "email": c.email,
                "status": "prospect",
                "title": title,
                "do_not_contact": c.do_not_contact,
            });
            serde_json::to_writer(&mut contacts_jsonl, &line).expect("json");
            writeln!(contacts_jsonl).expect("write");
            for e in buf.iter().take(IMPORT_EVENTS - imported) {
                serde_json::to_writer(&mut events_jsonl, e).expect("json");
                writeln!(events_jsonl).expect("write");
                imported += 1;
            }
        }
    }
    for mut f in [contacts_csv, events_csv, contacts_jsonl, events_jsonl] {
        f.flush().expect("flush");
    }
    std::fs::write(&done, format!("{contacts} {total} {imported}\n")).expect("mark");
    println!(
        "export: {contacts} contacts, {total} events ({imported} for the import) to {} in {:.0} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}
