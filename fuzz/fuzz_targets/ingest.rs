//! Any bytes as an API request body or an import file: parsed or refused
//! with a reason, never a panic, never a refusal without words.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relance::adapters::api::ingest::{Framing, split_items};
use relance::domain::ingest::{Format, IngestConfig, Kind, parse_event, parse_patch, read_event_lines, read_lines};

fuzz_target!(|data: &[u8]| {
    let range = IngestConfig::default().range(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000));
    for framing in [Framing::JsonArray, Framing::Ndjson] {
        let Ok(items) = split_items(data, framing, 10_000) else {
            continue;
        };
        for item in items {
            let Ok(value) = item else { continue };
            match parse_event(value.clone()) {
                Ok(incoming) => {
                    let _ = incoming.dedup_key();
                    if let Err(reason) = range.check_incoming(&incoming) {
                        assert!(reason.starts_with("at: "), "{reason}");
                    }
                }
                Err(reason) => assert!(!reason.is_empty()),
            }
            for kind in [Kind::Contact, Kind::Company, Kind::Deal] {
                if let Err(reason) = parse_patch(value.clone(), kind) {
                    assert!(!reason.is_empty());
                }
            }
        }
    }
    for format in [Format::Csv, Format::Jsonl] {
        if let Ok(lines) = read_lines(data, format, Kind::Contact) {
            for line in lines {
                if let Err(reason) = line.item {
                    assert!(!reason.is_empty());
                }
            }
        }
    }
    for line in read_event_lines(data) {
        if let Err(reason) = line.item {
            assert!(!reason.is_empty());
        }
    }
});
