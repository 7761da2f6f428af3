//! `relance import contacts|companies|deals|events FILE`.
//!
//! Lines are validated one by one; good lines are written in batches, a bad
//! line writes nothing and is reported with its number and reason. Importing
//! the same file again changes nothing.
//!
//! Events go through the store's group-commit writer (the one the API's
//! appends share) in transactions of [`EVENT_BATCH`], parsed on a thread of
//! their own while the batch before is written. On a terminal a progress
//! bar shows the bytes read and the rate; otherwise one line on stderr
//! says, at the end, how many lines were read in how long.

use super::{Failure, exit, open_store, output};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use relance::core::clock::Clock;
use relance::domain::ingest::{self, Format, Incoming, Kind, Line, LineError};
use relance::pipeline::config::Config;
use relance::ports::store::desk::DuplicateGroup;
use relance::ports::store::{Append, Store, StoreError, Upsert};
use serde::Serialize;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// Events written per transaction: as many as the store's group commit
/// merges (`GROUP_MAX` of the SQLite store), so that an import commits as
/// seldom as the API under load.
const EVENT_BATCH: usize = 50_000;

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
    let summary = load(&*store, kind, reader, format, &args.file, &range, &progress)?;
    progress.finish(&summary);
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
    reader: Box<dyn Read + Send>,
    format: Format,
    file: &Path,
    range: &ingest::InstantRange,
    progress: &Progress,
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
            let imported = import(lines, store, &mut summary, write, upsert_applied, progress);
            bulk.end(store, imported, &mut summary)?;
        }
        None => {
            if format == Format::Csv && file.extension().is_some_and(|e| e == "csv") {
                return Err(Failure::Input(format!(
                    "{}: events are imported from JSONL, one JSON object a line",
                    file.display()
                )));
            }
            import_events(reader, range, store, &mut summary, progress)?;
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

/// Events: a thread reads and checks the lines into batches of
/// [`EVENT_BATCH`] while this one writes the batch before through the
/// store's appends (its group-commit writer).
fn import_events(
    reader: Box<dyn Read + Send>,
    range: &ingest::InstantRange,
    store: &dyn Store,
    summary: &mut Summary,
    progress: &Progress,
) -> Result<(), Failure> {
    type Batch = (Vec<Incoming>, Vec<u64>, Vec<LineError>);
    std::thread::scope(|scope| {
        // One batch parsed ahead of the writer, no more.
        let (sender, batches) = std::sync::mpsc::sync_channel::<Batch>(1);
        scope.spawn(move || {
            let mut batch: Batch = Default::default();
            for line in ingest::read_event_lines(reader) {
                match line.item.and_then(|i| range.check_incoming(&i).map(|()| i)) {
                    Ok(item) => {
                        batch.0.push(item);
                        batch.1.push(line.number);
                    }
                    Err(reason) => batch.2.push(LineError {
                        line: line.number,
                        reason,
                    }),
                }
                if batch.0.len() == EVENT_BATCH && sender.send(std::mem::take(&mut batch)).is_err()
                {
                    // The writer stopped on an error.
                    return;
                }
            }
            drop(sender.send(batch));
        });
        for (items, numbers, rejected) in batches {
            progress.lines(items.len() + rejected.len());
            summary.rejected.extend(rejected);
            if items.is_empty() {
                continue;
            }
            let results = store.append_events(&items).map_err(anyhow::Error::from)?;
            tally(summary, &numbers, results.into_iter().map(append_applied));
        }
        Ok(())
    })
}

/// Counts what each line did.
fn tally(summary: &mut Summary, numbers: &[u64], applied: impl Iterator<Item = Applied>) {
    for (line, result) in numbers.iter().zip(applied) {
        match result {
            Applied::Inserted => summary.inserted += 1,
            Applied::Updated => summary.updated += 1,
            Applied::Unchanged => summary.unchanged += 1,
            Applied::Rejected(reason) => summary.rejected.push(LineError {
                line: *line,
                reason,
            }),
        }
    }
}

fn import<T, O>(
    lines: impl Iterator<Item = Line<T>>,
    store: &dyn Store,
    summary: &mut Summary,
    // What each item did, and the duplicates found (position in the batch).
    write: impl Fn(&dyn Store, &[T], &[u64]) -> Result<Written<O>, StoreError>,
    outcome: impl Fn(O) -> Applied,
    progress: &Progress,
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
        progress.lines(batch.len());
        tally(summary, numbers, results.into_iter().map(&outcome));
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
            Err(reason) => {
                progress.lines(1);
                summary.rejected.push(LineError {
                    line: line.number,
                    reason,
                });
            }
        }
    }
    flush(&mut batch, &mut numbers, summary)
}

/// What an import shows while it runs: on a terminal, a bar of the bytes
/// read with the lines done and their rate; otherwise nothing until the
/// final line ([`Progress::finish`]).
#[derive(Debug)]
pub(super) struct Progress {
    bar: ProgressBar,
    terminal: bool,
    started: Instant,
    lines: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Shows nothing at all (`relance demo`'s imports).
    pub(super) fn hidden() -> Self {
        Self {
            bar: ProgressBar::hidden(),
            terminal: false,
            started: Instant::now(),
            lines: Default::default(),
        }
    }

    /// `n` more lines done.
    fn lines(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let done = self.lines.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.terminal {
            self.bar.set_message(format!(
                "{} lines, {}/s",
                thousands(done),
                thousands(rate(done, self.started.elapsed().as_secs_f64()))
            ));
        }
    }

    /// Clears the bar and prints the final line to stderr (the one thing
    /// shown off a terminal): `FILE: N lines in S s (R lines/s)`.
    fn finish(&self, summary: &Summary) {
        let secs = self.started.elapsed().as_secs_f64();
        let done =
            summary.inserted + summary.updated + summary.unchanged + summary.rejected.len() as u64;
        self.bar.finish_and_clear();
        let line = format!(
            "{}: {} lines in {secs:.1} s ({} lines/s)",
            summary.file.display(),
            thousands(done),
            thousands(rate(done, secs))
        );
        eprintln!("{line}");
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn rate(done: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (done as f64 / secs) as u64
    } else {
        0
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Opens the file behind a progress bar (drawn only on a terminal).
fn open(path: &Path) -> Result<(Box<dyn Read + Send>, Format, Progress), Failure> {
    let unreadable =
        |e: std::io::Error| Failure::Input(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut head = [0u8; 64];
    let n = file.read(&mut head).map_err(unreadable)?;
    let format = Format::detect(path, &head[..n]);
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let progress = Progress {
        bar: bar.clone(),
        terminal,
        started: Instant::now(),
        lines: Default::default(),
    };
    Ok((Box::new(bar.wrap_read(file)), format, progress))
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
