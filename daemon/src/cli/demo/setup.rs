//! Before the daemon starts: the demo's configuration (the shipped file
//! with `demo.toml` laid over it), a fresh store, and the demo data
//! imported with its instants moved to now.

use super::Args;
use crate::cli::{Failure, import, open_store};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use relance::core::clock::Clock;
use relance::domain::ingest::{Format, Kind};
use relance::pipeline::config::Config;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The default API address; another free port when it is taken.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What `prepare` made ready.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    /// The demo's store, shared by the daemon and the watcher.
    pub store: relance::ports::store::StoreHandle,
    pub listen: String,
    pub token: String,
    /// The live stream's lines (stream.jsonl), as written.
    pub stream: Vec<serde_json::Value>,
    /// Every contact id of the demo data, for the endless stream.
    pub contacts: Vec<String>,
    /// The contacts of each company: a company's signal touches them all.
    pub members: HashMap<String, Vec<String>>,
    /// Lines for the user: where things are.
    pub told: Vec<String>,
}

pub fn prepare(base: &Path, clock: &Clock, args: &Args) -> Result<Prepared, Failure> {
    let listen = listen(args.listen.as_deref())?;
    let data = &args.data;
    let dir = absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    // Without a configuration here, the shipped one beside the demo data:
    // `relance demo` from the repository's root just works.
    let beside = data.join("../relance.toml");
    let base = if !base.exists() && beside.exists() {
        beside.as_path()
    } else {
        base
    };
    let overlay_file = data.join("demo.toml");
    let mut overlay = read_table(&overlay_file)?;
    let (reference, personas) = reference(&mut overlay, &overlay_file)?;
    let mut table = read_table(base)?;
    lay_over(&mut table, overlay);

    let token = random_hex()?;
    let base_dir = absolute(base)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let outputs = settle_paths(&mut table, &dir, &base_dir, &listen, &token)?;

    // Fresh: no store, log or channel output of an earlier run.
    for name in [
        "relance.db",
        "relance.db-wal",
        "relance.db-shm",
        "relance.log",
    ] {
        remove(&dir.join(name))?;
    }
    for (_, path) in &outputs {
        remove(path)?;
    }
    let file = dir.join("relance.toml");
    let text = format!(
        "# Written by `relance demo` at each start: {} with {} laid over it.\n\n{}",
        base.display(),
        overlay_file.display(),
        toml::to_string(&table).context("writing the demo's configuration")?
    );
    write_private(&file, &text)?;
    let config = Config::load(&file)?;
    init_logs(&config, &dir.join("relance.log"))?;

    let now = clock.now();
    let offset = now - reference;
    let store = open_store(&config)?;
    let range = config.ingest.range(now);
    let mut counts = Vec::new();
    for (kind, name) in [
        (Kind::Company, "companies"),
        (Kind::Contact, "contacts"),
        (Kind::Deal, "deals"),
    ] {
        let path = data.join(format!("{name}.csv"));
        let reader = std::fs::File::open(&path)
            .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
        let summary = import::load(
            &*store,
            Some(kind),
            Box::new(reader),
            Format::Csv,
            &path,
            &range,
            &import::Progress::hidden(),
        )?;
        counts.push(imported(&summary, name));
    }
    let events = data.join("events.jsonl");
    let moved = move_instants(&read_text(&events)?, offset);
    let summary = import::load(
        &*store,
        None,
        Box::new(std::io::Cursor::new(moved.into_bytes())),
        Format::Jsonl,
        &events,
        &range,
        &import::Progress::hidden(),
    )?;
    counts.push(imported(&summary, "events"));

    // The first passes, before the daemon starts: the live stream then
    // meets scored contacts, and what the history calls for is sent at
    // once.
    let scored = relance::pipeline::rescore::rescore(&*store, &config, now, false)
        .context("scoring the demo data")?;
    let planned = relance::pipeline::plan::run(&*store, &config, now, false)
        .context("planning the demo data")?;
    let per_band = store.band_counts().map_err(anyhow::Error::from)?;
    let bands: Vec<String> = config
        .scoring
        .bands
        .iter()
        .map(|b| format!("{} {}", b.name, per_band.get(&b.name).copied().unwrap_or(0)))
        .collect();

    let mut shown = Vec::new();
    for id in &personas {
        if let Some(score) = store.stored_score(id).map_err(anyhow::Error::from)? {
            shown.push(format!("{id} {} ({})", score.score / 100, score.band));
        }
    }

    let stream_file = data.join("stream.jsonl");
    let stream = read_text(&stream_file)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Failure::Input(format!("{}:{}: {e}", stream_file.display(), i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut contacts = Vec::new();
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    store
        .for_each_contact(&mut |c| {
            if let Some(company) = &c.company {
                members
                    .entry(company.clone())
                    .or_default()
                    .push(c.id.clone());
            }
            contacts.push(c.id);
        })
        .map_err(anyhow::Error::from)?;

    let mut told = vec![
        format!("store      {} (fresh)", config.store_path().display()),
        format!(
            "imported   {}, their instants moved by {} so that the data's reference instant ({}) is now",
            counts.join(", "),
            span(offset),
            reference.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        format!(
            "scored     {} contacts ({}); planned {} follow-ups: {} to send now, {} deferred, {} blocked",
            scored.examined,
            bands.join(", "),
            planned.allowed + planned.deferred + planned.blocked,
            planned.allowed,
            planned.deferred,
            planned.blocked
        ),
        format!("personas   {}", shown.join(", ")),
        format!(
            "config     {} ({} with {} laid over it)",
            file.display(),
            base.display(),
            overlay_file.display()
        ),
        format!("daemon log {}", dir.join("relance.log").display()),
    ];
    for (channel, path) in &outputs {
        told.push(format!("{channel:<10} {}", path.display()));
    }
    Ok(Prepared {
        config,
        store,
        listen,
        token,
        stream,
        contacts,
        members,
        told,
    })
}

fn imported(s: &import::Summary, what: &str) -> String {
    for r in &s.rejected {
        eprintln!("{}: line {}: {}", s.file.display(), r.line, r.reason);
    }
    format!("{} {what}", s.inserted + s.updated + s.unchanged)
}

/// "11d 14h 42m" (or negative, for data dated in the future).
fn span(d: chrono::Duration) -> String {
    let sign = if d < chrono::Duration::zero() {
        "-"
    } else {
        "+"
    };
    let s = d.num_seconds().unsigned_abs();
    format!(
        "{sign}{}d {}h {}m",
        s / 86_400,
        s % 86_400 / 3_600,
        s % 3_600 / 60
    )
}

/// Every `at` of the JSONL moved by `offset`. A line that is not a JSON
/// object with an RFC 3339 `at` stays as it is: the import reports it.
fn move_instants(text: &str, offset: chrono::Duration) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let moved = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|mut v| {
                let at = v.get("at")?.as_str()?;
                let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc) + offset;
                v["at"] = at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into();
                Some(v.to_string())
            });
        out.push_str(moved.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Takes the `[demo]` table out of the overlay (it is not configuration):
/// the data's reference instant and the personas to show.
fn reference(
    overlay: &mut toml::Table,
    file: &Path,
) -> Result<(DateTime<Utc>, Vec<String>), Failure> {
    let missing = || {
        Failure::Input(format!(
            "{}: `[demo] reference` must give the data's reference instant (RFC 3339)",
            file.display()
        ))
    };
    let demo = overlay.remove("demo").ok_or_else(missing)?;
    let at = demo
        .get("reference")
        .and_then(toml::Value::as_str)
        .ok_or_else(missing)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Failure::Input(format!("{}: `[demo] reference`: {e}", file.display())))?;
    let personas = demo
        .get("personas")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok((at, personas))
}

/// Tables are merged key by key; any other value of the overlay replaces
/// the base's (an array too: `windows = []` removes every window).
fn lay_over(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => lay_over(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Points the store, the channels' relative `dir` / `path` settings and
/// the plugin folder at absolute places, and turns the API on. Returns
/// each channel's output path (inside `dir`).
fn settle_paths(
    table: &mut toml::Table,
    dir: &Path,
    base_dir: &Path,
    listen: &str,
    token: &str,
) -> Result<Vec<(String, PathBuf)>, Failure> {
    let section = |table: &mut toml::Table, name: &str| -> Result<toml::Table, Failure> {
        match table.remove(name) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t),
            Some(_) => Err(Failure::Input(format!("`{name}` must be a table"))),
        }
    };
    let mut store = section(table, "store")?;
    store.insert("path".into(), literal(&dir.join("relance.db")).into());
    table.insert("store".into(), store.into());

    let mut plugins = section(table, "plugins")?;
    if let Some(d) = plugins.get("dir").and_then(toml::Value::as_str)
        && !d.contains('$')
        && Path::new(d).is_relative()
    {
        let d = literal(&base_dir.join(d));
        plugins.insert("dir".into(), d.into());
    }
    table.insert("plugins".into(), plugins.into());

    let mut api = section(table, "api")?;
    api.insert("enabled".into(), true.into());
    api.insert("listen".into(), listen.into());
    api.insert(
        "tokens".into(),
        toml::Value::Array(vec![token.to_string().into()]),
    );
    api.insert("tracking_secret".into(), random_hex()?.into());
    api.insert("public_url".into(), format!("http://{listen}").into());
    table.insert("api".into(), api.into());

    let mut outputs = Vec::new();
    if let Some(toml::Value::Table(channels)) = table.get_mut("channels") {
        for (name, channel) in channels.iter_mut() {
            let Some(toml::Value::Table(settings)) = channel.get_mut("settings") else {
                continue;
            };
            for key in ["dir", "path"] {
                // Only plain names below the demo's folder, which is emptied
                // at each start: never `..`.
                if let Some(p) = settings.get(key).and_then(toml::Value::as_str)
                    && !p.contains('$')
                    && Path::new(p)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
                {
                    let path = dir.join(p);
                    settings.insert(key.into(), literal(&path).into());
                    outputs.push((name.clone(), path));
                }
            }
        }
    }
    Ok(outputs)
}

/// A path as a configuration string: `${` would be read as a variable.
fn literal(path: &Path) -> String {
    path.to_string_lossy().replace("${", "$${")
}

/// The API address: loopback only. Without `--listen`, the default port,
/// or a free one when another program holds it.
fn listen(asked: Option<&str>) -> Result<String, Failure> {
    if let Some(a) = asked {
        let addr: std::net::SocketAddr = a.parse().map_err(|e| {
            Failure::Input(format!(
                "--listen `{a}`: {e} (expected e.g. 127.0.0.1:8080)"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(Failure::Input(format!(
                "--listen `{a}`: the demo serves its API on loopback only (127.0.0.1 or ::1)"
            )));
        }
        return Ok(a.to_string());
    }
    if std::net::TcpListener::bind(DEFAULT_LISTEN).is_ok() {
        return Ok(DEFAULT_LISTEN.into());
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1")?;
    Ok(free.to_string())
}

/// 32 hex digits from the system's random source: the API token and the
/// tracking secret, new at each start.
fn random_hex() -> Result<String, Failure> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))
}

fn read_table(path: &Path) -> Result<toml::Table, Failure> {
    read_text(path)?
        .parse::<toml::Table>()
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    Ok(std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?)
}

fn remove(path: &Path) -> Result<(), Failure> {
    let done = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    Ok(done.with_context(|| format!("removing {}", path.display()))?)
}

/// The configuration holds the API token: readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The daemon's log goes to a file (the terminal shows the demo); its
/// warnings and errors also to the terminal.
fn init_logs(config: &Config, file: &Path) -> Result<(), Failure> {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::{
        EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt,
    };
    let log =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let filter = EnvFilter::try_from_env("RELANCE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let to_file = fmt::layer()
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .with_filter(filter);
    let to_terminal = fmt::layer()
        .with_ansi(crate::cli::colour(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::WARN);
    let _ = tracing_subscriber::registry()
        .with(to_file)
        .with(to_terminal)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_merges_tables_and_replaces_everything_else() {
        let mut base: toml::Table = "[a]\nx = 1\ny = [1, 2]\n[a.b]\nz = \"z\"\n[c]\nw = 1\n"
            .parse()
            .unwrap();
        let over: toml::Table = "[a]\ny = []\n[a.b]\nq = 2\n[d]\nv = 3\n".parse().unwrap();
        lay_over(&mut base, over);
        let expected: toml::Table =
            "[a]\nx = 1\ny = []\n[a.b]\nz = \"z\"\nq = 2\n[c]\nw = 1\n[d]\nv = 3\n"
                .parse()
                .unwrap();
        assert_eq!(base, expected);
    }

    #[test]
    fn instants_move_by_the_offset_and_unreadable_lines_stay_for_the_import_to_report() {
        let text = "{\"id\":\"e1\",\"contact\":\"p\",\"type\":\"call\",\"at\":\"2026-11-20T12:00:00Z\"}\n\
                    not json\n\
                    {\"contact\":\"p\",\"type\":\"call\",\"at\":\"yesterday\"}\n";
        let moved = move_instants(text, chrono::Duration::hours(36));
        let lines: Vec<&str> = moved.lines().collect();
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["at"], "2026-11-22T00:00:00Z");
        assert_eq!(first["id"], "e1");
        assert_eq!(lines[1], "not json");
        assert!(lines[2].contains("yesterday"));
    }

    #[test]
    fn the_api_stays_on_loopback() {
        assert!(listen(Some("127.0.0.1:9999")).is_ok());
        assert!(listen(Some("[::1]:9999")).is_ok());
        assert!(listen(Some("0.0.0.0:9999")).is_err());
        assert!(listen(Some("localhost")).is_err());
    }
}
