//! `relance import contacts|companies|deals|events FILE`.
//!
//! Lines are validated one by one; good lines are written in batches, a bad
//! line writes nothing and is reported with its number and reason. Importing
//! the same file again changes nothing.

use super::{Failure, exit, open_store, output};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use relance::core::clock::Clock;
use relance::domain::ingest::{self, Format, Kind, Line, LineError};
use relance::pipeline::config::Config;
use relance::ports::store::desk::DuplicateGroup;
use relance::ports::store::{Append, Store, StoreError, Upsert};
use serde::Serialize;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum What {
    /// Contacts: CSV with a header row, or JSONL.
    Contacts(Args),
    /// Companies: CSV or JSONL (JSONL may carry `signals`).
    Companies(Args),
    /// Deals: CSV or JSONL.
    Deals(Args),
    /// Events: JSONL, one `{"id"?, "contact", "type", "at", "channel"?, "props"?}` a line.
    Events(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

/// What an import did, line by line.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub file: PathBuf,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: Vec<LineError>,
    /// Contacts accepted whose normalised email or phone another id has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Flagged>,
}

/// A contact accepted but flagged as a likely duplicate.
#[derive(Debug, Serialize)]
pub struct Flagged {
    pub line: u64,
    pub id: String,
    #[serde(flatten)]
    pub group: DuplicateGroup,
}

const BATCH: usize = 2_000;

pub fn run(config: &Config, clock: &Clock, what: &What) -> Result<u8, Failure> {
    let (args, kind) = match what {
        What::Contacts(a) => (a, Some(Kind::Contact)),
        What::Companies(a) => (a, Some(Kind::Company)),
        What::Deals(a) => (a, Some(Kind::Deal)),
        What::Events(a) => (a, None),
    };
    let (reader, format, progress) = open(&args.file)?;
    let store = open_store(config)?;
    let range = config.ingest.range(clock.now());
    let summary = load(&*store, kind, reader, format, &args.file, &range)?;
    progress.finish_and_clear();
    report(&summary, args.json)?;
    Ok(if summary.rejected.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// Writes the lines of one file: records of `kind`, or events when `kind`
/// is `None`. `relance demo` uses it too, on events it moved in time.
pub(super) fn load(
    store: &dyn Store,
    kind: Option<Kind>,
    reader: Box<dyn Read>,
    format: Format,
    file: &Path,
    range: &ingest::InstantRange,
) -> Result<Summary, Failure> {
    let mut summary = Summary {
        file: file.to_path_buf(),
        ..Summary::default()
    };
    match kind {
        Some(kind) => {
            let lines = ingest::read_lines(reader, format, kind)
                .map_err(|e| Failure::Input(format!("{}: {e}", file.display())))?
                .map(|mut line| {
                    line.item = line
                        .item
                        .and_then(|p| range.check_signals(&p.signals).map(|()| p));
                    line
                });
            // Contacts are checked for duplicates in their own transaction,
            // until the file proves large next to the store: from then on
            // it is a bulk load, checked once at its end (see `bulk`).
            let bulk = Bulk::new(store, kind)?;
            let write = |store: &dyn Store,
                         batch: &[ingest::Patch],
                         numbers: &[u64]|
             -> Result<_, StoreError> {
                match kind {
                    Kind::Contact if bulk.loading(store, batch, numbers)? => {
                        Ok((store.upsert_contacts(batch)?, Vec::new()))
                    }
                    Kind::Contact => {
                        let (written, found) = store.upsert_contacts_checked(batch)?;
                        let flagged = found
                            .into_iter()
                            .filter_map(|(id, g)| {
                                Some((batch.iter().position(|p| p.id == id)?, id, g))
                            })
                            .collect();
                        Ok((written, flagged))
                    }
                    Kind::Company => Ok((store.upsert_companies(batch)?, Vec::new())),
                    Kind::Deal => Ok((store.upsert_deals(batch)?, Vec::new())),
                }
            };
            let imported = import(lines, store, &mut summary, write, upsert_applied);
            bulk.end(store, imported, &mut summary)?;
        }
        None => {
            if format == Format::Csv && file.extension().is_some_and(|e| e == "csv") {
                return Err(Failure::Input(format!(
                    "{}: events are imported from JSONL, one JSON object a line",
                    file.display()
                )));
            }
            let lines = ingest::read_event_lines(reader).map(|mut line| {
                line.item = line.item.and_then(|i| range.check_incoming(&i).map(|()| i));
                line
            });
            import(
                lines,
                store,
                &mut summary,
                |s, b, _| Ok((s.append_events(b)?, Vec::new())),
                append_applied,
            )?;
        }
    }
    summary.rejected.sort_by_key(|r| r.line);
    summary.duplicates.sort_by_key(|d| d.line);
    Ok(summary)
}

enum Applied {
    Inserted,
    Updated,
    Unchanged,
    Rejected(String),
}

fn upsert_applied(u: Upsert) -> Applied {
    match u {
        Upsert::Inserted => Applied::Inserted,
        Upsert::Updated => Applied::Updated,
        Upsert::Unchanged => Applied::Unchanged,
        Upsert::Rejected(r) => Applied::Rejected(r),
    }
}

fn append_applied(a: Append) -> Applied {
    match a {
        Append::Inserted => Applied::Inserted,
        Append::Duplicate => Applied::Unchanged,
        Append::Rejected(r) => Applied::Rejected(r),
    }
}

type Written<O> = (Vec<O>, Vec<(usize, String, DuplicateGroup)>);

/// Contacts imported from this many lines on, and a quarter of the
/// contacts stored before, make a bulk load.
const BULK_FROM: u64 = 20_000;

/// Duplicate detection for a large file: past [`BULK_FROM`] lines the
/// store loads without its key indexes (`Records::begin_contact_load`) and
/// builds them once at the end, by sorting; the groups it then reads flag
/// every line of the file sharing a key, as the batch-by-batch check does.
struct Bulk {
    /// Lines written before the load turns to bulk.
    from: u64,
    written: std::cell::Cell<u64>,
    on: std::cell::Cell<bool>,
    /// Every contact line of the file: id → line.
    lines: std::cell::RefCell<std::collections::HashMap<String, u64>>,
}

impl Bulk {
    fn new(store: &dyn Store, kind: Kind) -> Result<Self, Failure> {
        let from = if kind == Kind::Contact {
            BULK_FROM.max(store.counts().map_err(anyhow::Error::from)?.contacts / 4)
        } else {
            u64::MAX
        };
        Ok(Self {
            from,
            written: Default::default(),
            on: Default::default(),
            lines: Default::default(),
        })
    }

    /// Whether `batch` is written as part of a bulk load (which it starts
    /// when the file has grown large).
    fn loading(
        &self,
        store: &dyn Store,
        batch: &[ingest::Patch],
        numbers: &[u64],
    ) -> Result<bool, StoreError> {
        let mut lines = self.lines.borrow_mut();
        for (p, n) in batch.iter().zip(numbers) {
            lines.insert(p.id.clone(), *n);
        }
        if !self.on.get() && self.written.get() >= self.from {
            store.begin_contact_load()?;
            self.on.set(true);
        }
        self.written.set(self.written.get() + batch.len() as u64);
        Ok(self.on.get())
    }

    /// Ends a bulk load, whatever the import gave: the key indexes are
    /// built and every line in a group is flagged (the flags of the lines
    /// checked before the load are replaced by these, which see the whole
    /// file).
    fn end(
        &self,
        store: &dyn Store,
        imported: Result<(), Failure>,
        summary: &mut Summary,
    ) -> Result<(), Failure> {
        if !self.on.get() {
            return imported;
        }
        let groups = store.end_contact_load().map_err(anyhow::Error::from);
        imported?;
        let lines = self.lines.borrow();
        summary.duplicates.clear();
        for group in groups? {
            for id in &group.contacts {
                if let Some(line) = lines.get(id) {
                    summary.duplicates.push(Flagged {
                        line: *line,
                        id: id.clone(),
                        group: group.clone(),
                    });
                }
            }
        }
        summary.duplicates.sort_by_key(|d| d.line);
        Ok(())
    }
}

fn import<T, O>(
    lines: impl Iterator<Item = Line<T>>,
    store: &dyn Store,
    summary: &mut Summary,
    // What each item did, and the duplicates found (position in the batch).
    write: impl Fn(&dyn Store, &[T], &[u64]) -> Result<Written<O>, StoreError>,
    outcome: impl Fn(O) -> Applied,
) -> Result<(), Failure> {
    let mut batch: Vec<T> = Vec::with_capacity(BATCH);
    let mut numbers: Vec<u64> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<T>,
                 numbers: &mut Vec<u64>,
                 summary: &mut Summary|
     -> Result<(), Failure> {
        if batch.is_empty() {
            return Ok(());
        }
        let (results, flagged) = write(store, batch, numbers).map_err(anyhow::Error::from)?;
        for (index, id, group) in flagged {
            summary.duplicates.push(Flagged {
                line: numbers.get(index).copied().unwrap_or_default(),
                id,
                group,
            });
        }
        for (line, result) in numbers.iter().zip(results) {
            match outcome(result) {
                Applied::Inserted => summary.inserted += 1,
                Applied::Updated => summary.updated += 1,
                Applied::Unchanged => summary.unchanged += 1,
                Applied::Rejected(reason) => summary.rejected.push(LineError {
                    line: *line,
                    reason,
                }),
            }
        }
        batch.clear();
        numbers.clear();
        Ok(())
    };
    for line in lines {
        match line.item {
            Ok(item) => {
                batch.push(item);
                numbers.push(line.number);
                if batch.len() == BATCH {
                    flush(&mut batch, &mut numbers, summary)?;
                }
            }
            Err(reason) => summary.rejected.push(LineError {
                line: line.number,
                reason,
            }),
        }
    }
    flush(&mut batch, &mut numbers, summary)
}

/// Opens the file behind a progress bar (drawn only on a terminal).
fn open(path: &Path) -> Result<(Box<dyn Read>, Format, ProgressBar), Failure> {
    let unreadable =
        |e: std::io::Error| Failure::Input(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut head = [0u8; 64];
    let n = file.read(&mut head).map_err(unreadable)?;
    let format = Format::detect(path, &head[..n]);
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}") {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    Ok((Box::new(progress.wrap_read(file)), format, progress))
}

fn report(summary: &Summary, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return output::json(summary);
    }
    println!(
        "{}: {} inserted, {} updated, {} unchanged, {} rejected",
        summary.file.display(),
        summary.inserted,
        summary.updated,
        summary.unchanged,
        summary.rejected.len()
    );
    for r in &summary.rejected {
        println!("  line {}: {}", r.line, r.reason);
    }
    for d in &summary.duplicates {
        let others: Vec<&str> = d
            .group
            .contacts
            .iter()
            .filter(|c| **c != d.id)
            .map(String::as_str)
            .collect();
        println!(
            "  line {}: `{}` accepted, likely the same person as {} (same {} {})",
            d.line,
            d.id,
            others.join(", "),
            d.group.kind,
            d.group.key
        );
    }
    Ok(())
}
