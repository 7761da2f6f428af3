#!/usr/bin/env python3
"""relance's benchmark figures beside independent baselines, same data, same run.

Run through bench/baselines.sh, which installs what this needs (DuckDB in a
venv under target/, wrk from Debian's packages) and builds the benchmarks.
Each measure runs relance's figure, then the baseline's, one after the
other (`--rounds N` alternates them N times), and prints both with the
ratio relance / baseline and the load average at the time:

- full rescoring (`cargo bench --bench rescore`, the full rebuild) vs DuckDB
  over a native table computing the shipped rules' profile, behaviour and
  event negatives with caps, fade, half-life, unanswered solicitations,
  inactivity and band; the band counts of both are printed as a check;
- planning pass a day later (`cargo bench --bench plan`) vs DuckDB computing
  every contact's fatigue (costs, relief, decay, clamped at zero, in time
  order) and rolling cap counts a day later;
- `relance import events` of 1,000,000 JSONL events vs Python's sqlite3
  inserting the same rows into the same schema and indexes (WAL,
  synchronous=NORMAL, 50,000-row transactions);
- dispatch through the outbox to a loopback receiver
  (`cargo bench --bench dispatch`) vs `wrk -t1 -c4` against the same
  receiver, in the same process run (the bench starts wrk itself);
- stored bytes per event (SQLite's dbstat over the events table, its
  de-duplication keys, change feed and dictionaries, with their indexes)
  vs the DuckDB file holding the same events;
- the incremental rescoring pass after 1 % of the contacts received an
  event (`cargo bench --bench rescore` with RELANCE_BENCH_INCREMENTAL_ONLY)
  vs Python's sqlite3 doing the bare writes of as many changed scores on a
  copy of the same store (`writes`): each score's row, a snapshot, and the
  call-queue row of those in it, one transaction, relance's settings.

The data is the benchmarks' (1,000,000 contacts, about 20,000,000 events;
`--contacts` to resize), written once as CSV / JSONL by
`cargo bench --bench export`.
"""

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
# The benchmarks' reference instant: 2026-03-02T12:00:00Z.
NOW_US = 1772452800 * 1_000_000
DAY_US = 86_400 * 1_000_000

RESULTS = []
# The binary `relance import` runs (`--binary` to compare another build).
BINARY = TARGET / "release" / "relance"


def load():
    return os.getloadavg()[0]


def say(msg):
    print(msg, flush=True)


def bench(name, env=None, pattern=None):
    """Runs `cargo bench --bench NAME`, echoes its output, returns it."""
    cmd = ["cargo", "bench", "-q", "-p", "relance", "--bench", name]
    full_env = dict(os.environ, **(env or {}))
    started = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    for line in out.stdout.splitlines():
        say(f"    | {line}")
    say(f"    ({name}: {time.time() - started:.0f} s in all)")
    return out.stdout


def figure(text, regex, what):
    m = re.search(regex, text, re.M)
    if not m:
        sys.exit(f"no {what} in the benchmark's output")
    return float(m.group(1))


def record(measure, unit, relance, baseline, better, load_avg):
    ratio = relance / baseline if baseline else float("nan")
    RESULTS.append((measure, unit, relance, baseline, ratio, better, load_avg))
    say(
        f"  => {measure}: relance {relance:,.2f} {unit}, baseline {baseline:,.2f} {unit}, "
        f"ratio {ratio:.2f} ({better} is better), load {load_avg:.1f}"
    )


# ----------------------------------------------------------------- data


def export(contacts):
    env = {"RELANCE_BENCH_CONTACTS": str(contacts)}
    bench("export", env)
    return TARGET / "bench" / f"baseline-{contacts}"


def duck_load(data, path):
    """The events alone in their own DuckDB file (for its size), then the
    contacts and companies; not measured."""
    if path.exists():
        path.unlink()
    import duckdb  # only the measures over the whole data set need it

    db = duckdb.connect(str(path))
    started = time.time()
    db.execute(
        f"""CREATE TABLE events AS
            SELECT contact, "at" AS ts, type, url FROM read_csv('{data}/events.csv', header = true,
                columns = {{'contact': 'INTEGER', 'at': 'BIGINT', 'type': 'VARCHAR', 'url': 'VARCHAR'}})"""
    )
    db.execute("CHECKPOINT")
    events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    size = path.stat().st_size
    db.execute(
        f"""CREATE TABLE contacts AS SELECT * FROM read_csv('{data}/contacts.csv', header = true,
                columns = {{'idx': 'INTEGER', 'id': 'VARCHAR', 'company': 'INTEGER', 'title': 'VARCHAR', 'dnc': 'BOOLEAN'}})"""
    )
    db.execute(
        f"""CREATE TABLE companies AS SELECT * FROM read_csv('{data}/companies.csv', header = true,
                columns = {{'idx': 'INTEGER', 'id': 'VARCHAR', 'headcount': 'INTEGER', 'sector': 'VARCHAR',
                           'foreign_subsidiaries': 'INTEGER', 'expatriates': 'INTEGER', 'international_at': 'BIGINT'}})"""
    )
    db.execute("CHECKPOINT")
    say(f"  DuckDB: {events:,} events loaded in {time.time() - started:.0f} s (not measured), {size / events:.1f} bytes each")
    return db, events, size


# ---------------------------------------------------- rescoring baseline

# The shipped rules on events (config/relance.toml): type, regex on
# props.url (None: any), whether the regex must NOT match, points,
# max_count, recency ('counts' days, 'fade' days, 'half' days, None).
PRICING = r"(?i)/(pricing|tarifs?|tarification|prix)\b"
EVENT_RULES = [
    ("demo requested", "demo_request", None, False, 40.0, 1, "counts", 365),
    ("pricing page", "page_visit", PRICING, False, 20.0, 2, "counts", 365),
    ("online demo viewed", "page_visit", r"(?i)/demo\b", False, 15.0, 1, "counts", 365),
    ("white paper", "download", None, False, 25.0, 2, "counts", 365),
    ("trade show visit", "trade_show_visit", None, False, 30.0, 1, "counts", 365),
    ("phone meeting", "meeting", None, False, 30.0, 2, "counts", 365),
    ("inbound call", "inbound_call", None, False, 20.0, 2, "counts", 365),
    ("form", "form_submit", None, False, 15.0, 3, "counts", 365),
    ("webinar", "webinar_signup", None, False, 15.0, 2, "counts", 365),
    ("email click", "email_click", None, False, 5.0, 5, "fade", 90),
    ("email open", "email_open", None, False, 1.0, 10, "half", 30),
    (
        "page visit",
        "page_visit",
        r"(?i)/(pricing|tarifs?|tarification|prix|demo|careers|jobs|recrutement)\b",
        True,
        2.0,
        10,
        "fade",
        60,
    ),
    ("unsubscribed", "unsubscribe", None, False, -30.0, 1, None, 0),
    ("careers page", "page_visit", r"(?i)/(careers|jobs|recrutement)\b", False, -10.0, 3, "counts", 365),
    ("complaint", "complaint", None, False, -20.0, 2, "counts", 365),
]
ACTIVITY = ["inbound_call", "email_reply", "demo_request", "email_open", "email_click",
            "page_visit", "form_submit", "download", "webinar_signup", "trade_show_visit"]
SOLICITATION = ["email_sent", "sms_sent", "call"]
RESPONSE = ["inbound_call", "email_reply", "demo_request", "email_click", "form_submit"]
HR_DIRECTOR = (r"(?i)\bDRH\b|(directeur|directrice|director|head of|VP)"
               r".*(RH|HR|ressources humaines|human resources|people)")
NO_POWER = r"(?i)\b(intern|stagiaire|alternant|apprenti)"


def sql_list(items):
    return ", ".join("'" + i.replace("'", "''") + "'" for i in items)


def sql_str(s):
    return "NULL" if s is None else "'" + s.replace("'", "''") + "'"


def rescore_sql():
    # Each distinct pattern is a constant in its own column, matched once
    # per page visit: a pattern read from a column would be compiled again
    # for every row.
    patterns = sorted({p for (_, _, p, _, _, _, _, _) in EVENT_RULES if p is not None})
    rules = ",\n".join(
        f"({i}, {sql_str(t)}, {'NULL' if p is None else patterns.index(p)}, {str(neg).lower()}, "
        f"{pts}, {mx}, {sql_str(rec)}, {span})"
        for i, (_, t, p, neg, pts, mx, rec, span) in enumerate(EVENT_RULES)
    )
    matched = ",\n    ".join(
        f"type = 'page_visit' AND regexp_matches(coalesce(url, ''), {sql_str(p)}) AS m{k}"
        for k, p in enumerate(patterns)
    )
    pick = " ".join(f"WHEN {k} THEN ev.m{k}" for k in range(len(patterns)))
    n, d = NOW_US, DAY_US
    return f"""
CREATE OR REPLACE TABLE scores AS
WITH rules(rule, type, pattern, negate, points, max_count, recency, span) AS (VALUES {rules}),
ev AS (
  SELECT contact, type, ts, {n} - ts AS age, ({n} - ts) // {d} AS days,
    {matched}
  FROM events WHERE ts <= {n}
),
hits AS (
  SELECT contact, ts, rule, points, max_count, weight FROM (
    SELECT ev.contact, ev.ts, r.rule, r.points, r.max_count,
      CASE r.recency
        WHEN 'counts' THEN CASE WHEN ev.age < r.span * {d} THEN 1.0 ELSE 0.0 END
        WHEN 'fade' THEN greatest(1.0 - ev.days / r.span, 0.0)
        WHEN 'half' THEN CASE WHEN pow(0.5, ev.days / r.span) >= 1.0 / 1024 THEN pow(0.5, ev.days / r.span) ELSE 0.0 END
        ELSE 1.0 END AS weight
    FROM ev JOIN rules r ON ev.type = r.type
    WHERE r.pattern IS NULL OR ((CASE r.pattern {pick} END) <> r.negate)
  ) WHERE weight > 0
),
capped AS (
  SELECT contact, rule, points * weight AS p FROM hits
  QUALIFY row_number() OVER (PARTITION BY contact, rule ORDER BY ts DESC) <= max_count
),
behaviour AS (
  SELECT contact, sum(h) AS h FROM (
    SELECT contact, round(sum(p) * 100) AS h FROM capped GROUP BY contact, rule
  ) GROUP BY contact
),
answered AS (
  SELECT contact, max(ts) AS r FROM ev WHERE type IN ({sql_list(RESPONSE)}) GROUP BY contact
),
unanswered AS (
  SELECT e.contact, -1500 AS h FROM ev e LEFT JOIN answered a USING (contact)
  WHERE e.type IN ({sql_list(SOLICITATION)}) AND (a.r IS NULL OR e.ts > a.r) AND e.age >= 7 * {d}
  GROUP BY e.contact HAVING count(*) >= 5
),
inactivity AS (
  SELECT contact, -least(500 * months, 6000) AS h FROM (
    SELECT contact, ({n} - max(ts)) // (30 * {d}) AS months
    FROM ev WHERE type IN ({sql_list(ACTIVITY)}) GROUP BY contact
  ) WHERE months > 0
),
profile AS (
  SELECT c.idx AS contact,
    CASE WHEN regexp_matches(c.title, {sql_str(HR_DIRECTOR)}) THEN 4000 ELSE 0 END
    + CASE WHEN co.headcount > 30 AND co.headcount < 500 THEN 3000 ELSE 0 END
    + CASE WHEN co.sector IN ('industry', 'construction', 'industrie', 'BTP') THEN 2000 ELSE 0 END
    + CASE WHEN co.foreign_subsidiaries > 0 THEN 2000 ELSE 0 END
    + CASE WHEN co.expatriates > 0 THEN 1000 ELSE 0 END
    + CASE WHEN co.international_at <= {n} AND {n} < co.international_at + 180 * {d} THEN 1000 ELSE 0 END
    + CASE WHEN c.dnc THEN -5000 ELSE 0 END
    + CASE WHEN regexp_matches(c.title, {sql_str(NO_POWER)}) THEN -4000 ELSE 0 END AS h
  FROM contacts c LEFT JOIN companies co ON co.idx = c.company
),
total AS (
  SELECT contact, sum(h) AS h FROM (
    SELECT * FROM profile UNION ALL SELECT * FROM behaviour
    UNION ALL SELECT * FROM unanswered UNION ALL SELECT * FROM inactivity
  ) GROUP BY contact
)
SELECT contact, h / 100.0 AS score,
  CASE WHEN h >= 15000 THEN 'hot' WHEN h >= 10000 THEN 'warm' ELSE 'cold' END AS band
FROM total
"""


def duck_rescore(db):
    started, cpu = time.time(), time.process_time()
    db.execute(rescore_sql())
    wall, cpu = time.time() - started, time.process_time() - cpu
    bands = dict(db.execute("SELECT band, count(*) FROM scores GROUP BY band ORDER BY band").fetchall())
    return wall, cpu, bands


# ----------------------------------------------------- planning baseline

COSTS = {"call": 5.0, "email_sent": 3.0, "sms_sent": 7.0}
RELIEF = {"inbound_call": 5.0, "email_reply": 3.0, "demo_request": 5.0}
SENDS = {"email_sent": "email", "sms_sent": "sms", "call_task": "phone"}
UNITS_PER_POINT = 1000 * 86_400  # relance's fatigue units; decay 1 point a day = 1000 units a second


def plan_sql():
    day_s = 86_400
    t = NOW_US // 1_000_000 + day_s  # a day later, in seconds
    t_us = t * 1_000_000
    week_us = t_us - 7 * day_s * 1_000_000
    days3_us = t_us - 3 * day_s * 1_000_000
    deltas = " ".join(
        f"WHEN '{k}' THEN {int(v * UNITS_PER_POINT)}" for k, v in COSTS.items()
    ) + " " + " ".join(f"WHEN '{k}' THEN {-int(v * UNITS_PER_POINT)}" for k, v in RELIEF.items())
    weighed = list(COSTS) + list(RELIEF)
    return f"""
CREATE OR REPLACE TABLE guard_state AS
WITH folded AS (
  SELECT contact, list_reduce(
      list_prepend({{'v': 0::BIGINT, 't': min(ts // 1000000)::BIGINT, 'd': 0::BIGINT}},
        list({{'v': 0::BIGINT, 't': (ts // 1000000)::BIGINT, 'd': CASE type {deltas} END}} ORDER BY ts)),
      lambda acc, x: {{'v': greatest(0, greatest(0, acc.v - 1000 * (x.t - acc.t)) + x.d), 't': x.t, 'd': 0::BIGINT}}
    ) AS s
  FROM events WHERE type IN ({sql_list(weighed)}) AND ts <= {t_us}
  GROUP BY contact
),
fatigue AS (
  SELECT contact, greatest(0, s.v - 1000 * ({t} - s.t)) AS units FROM folded
),
caps AS (
  SELECT contact,
    count(*) FILTER (WHERE type = 'email_sent' AND ts > {week_us}) AS email_7d,
    count(*) FILTER (WHERE type = 'call_task' AND ts > {days3_us}) AS phone_3d,
    count(*) FILTER (WHERE ts > {week_us}) AS all_7d
  FROM events WHERE type IN ({sql_list(SENDS)}) AND ts <= {t_us}
    AND ts > {week_us}
  GROUP BY contact
)
SELECT c.idx AS contact, coalesce(f.units, 0) AS units,
  CASE WHEN coalesce(f.units, 0) > {25 * UNITS_PER_POINT} THEN 'stop'
       WHEN coalesce(f.units, 0) >= {20 * UNITS_PER_POINT} THEN 'reduce' ELSE 'normal' END AS level,
  coalesce(k.email_7d, 0) >= 2 AS email_capped,
  coalesce(k.phone_3d, 0) >= 1 AS phone_capped,
  coalesce(k.all_7d, 0) >= 4 AS all_capped
FROM contacts c LEFT JOIN fatigue f ON f.contact = c.idx LEFT JOIN caps k ON k.contact = c.idx
"""


def duck_plan(db):
    started, cpu = time.time(), time.process_time()
    db.execute(plan_sql())
    wall, cpu = time.time() - started, time.process_time() - cpu
    levels = dict(db.execute("SELECT level, count(*) FROM guard_state GROUP BY level ORDER BY level").fetchall())
    capped = db.execute(
        "SELECT count(*) FILTER (WHERE email_capped), count(*) FILTER (WHERE all_capped) FROM guard_state"
    ).fetchone()
    return wall, cpu, levels, capped


# ------------------------------------------------------- import baseline

# The tables `relance import events` writes (events and their dictionaries,
# producers' id keys, the change feed), in the order they are copied.
IMPORT_TABLES = [
    ("event_names", "id"),
    ("event_props", "id"),
    ("events", "seq"),
    ("event_ids", "key, contact"),
    ("event_feed", "contact"),
]


def relance_import(data, work):
    """Times `relance import events` into a fresh store holding the
    contacts, under /usr/bin/time when there; returns the wall time, the
    process CPU (None without /usr/bin/time), the events stored, the
    store's path and a copy of the store as it was before the events."""
    binary = BINARY
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    db = work / "relance.db"
    env = dict(os.environ, RELANCE_DB=str(db))
    base = [str(binary), "--config", str(ROOT / "config" / "relance.toml"), "--now", "2026-03-02T12:00:00Z"]
    subprocess.run(base + ["import", "contacts", str(data / "import-contacts.jsonl"), "--json"],
                   check=True, capture_output=True, env=env)
    before = work / "python.db"
    src = sqlite3.connect(db)
    dst = sqlite3.connect(before)
    src.backup(dst)
    dst.close()
    src.close()
    timed = ["/usr/bin/time", "-f", "CPU %U %S"] if Path("/usr/bin/time").exists() else []
    started = time.time()
    out = subprocess.run(timed + base + ["import", "events", str(data / "import-events.jsonl"), "--json"],
                         capture_output=True, text=True, env=env)
    secs = time.time() - started
    if out.returncode != 0:
        sys.exit(f"relance import events failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    cpu = None
    m = re.search(r"^CPU ([\d.]+) ([\d.]+)$", out.stderr, re.M)
    if m:
        cpu = float(m.group(1)) + float(m.group(2))
    for line in out.stderr.splitlines():
        if not line.startswith("CPU "):
            say(f"    | {line}")
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return secs, cpu, stored, db, before


def sqlite_import(relance_db, db):
    """Python's sqlite3 inserting the rows relance's import stored into the
    same tables, schema, indexes and contacts (`db`: relance's store as it
    was before the events), with relance's settings (WAL,
    synchronous=NORMAL, foreign keys on), events in relance's order (by
    number), 50,000 events per transaction and the other tables' rows with
    them in proportion. Only the inserts and commits are timed."""
    src = sqlite3.connect(relance_db)
    tables = []
    for table, order in IMPORT_TABLES:
        columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        rows = src.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()
        insert = (f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                  f"VALUES ({', '.join('?' * len(columns))})")
        tables.append((insert, rows))
    src.close()
    events = len(tables[2][1])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")
    batches = max(1, -(-events // 50_000))
    started = time.time()
    for b in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        for insert, rows in tables:
            n = len(rows)
            conn.executemany(insert, rows[n * b // batches:n * (b + 1) // batches])
        conn.execute("COMMIT")
    secs = time.time() - started
    conn.close()
    return secs, events


# ------------------------------------------------- incremental writes


def sqlite_score_writes(store, work, changed, round_no):
    """Python's sqlite3 writing `changed` scores at the density of the
    incremental pass (every hundredth contact: about 1 %) into a copy of
    relance's store (same schema, indexes and triggers), with relance's
    settings (WAL, synchronous=NORMAL, foreign keys on, a 16 MB cache):
    each score's row (score, next change, scoring instant), a snapshot, and
    the call-queue row of those in the queue, in one transaction. A first
    transaction of other contacts grows the log, which is then
    checkpointed, so that the timed one reuses it as relance's writer does.
    Only the timed transaction counts; returns its seconds and log frames."""
    copy = work / "writes.db"
    for suffix in ("", "-wal"):
        src = Path(f"{store}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{copy}{suffix}")
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -16384")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA journal_size_limit = -1")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def write(residue):
        keys = [k for (k,) in conn.execute(
            "SELECT contact FROM scores WHERE contact % 100 = ? ORDER BY contact LIMIT ?",
            (residue, changed))]
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS pick (contact INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM pick")
        conn.executemany("INSERT INTO pick VALUES (?)", [(k,) for k in keys])
        started = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE scores SET score = score + 1, next_change_at = next_change_at + 1,"
                     " scored_at = scored_at + 1 WHERE contact IN (SELECT contact FROM pick)")
        conn.execute("INSERT INTO score_snapshots (contact, at, score, band)"
                     " SELECT s.contact, s.scored_at, s.score, s.band FROM pick p"
                     " JOIN scores s ON s.contact = p.contact")
        conn.execute("UPDATE desk_queue SET score = score + 1 WHERE contact IN (SELECT contact FROM pick)")
        conn.execute("COMMIT")
        return time.time() - started, len(keys)

    # Other contacts each round: those written before have moved on.
    write((2 * round_no + 1) % 100)
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    secs, n = write((2 * round_no + 2) % 100)
    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return secs, n, frames


# --------------------------------------------------------- stored bytes


def relance_bytes(store):
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
        " AND tbl_name IN ('events', 'event_ids', 'event_feed', 'event_names', 'event_props')")]
    sizes = dict(conn.execute(
        f"SELECT name, sum(pgsize) FROM dbstat WHERE name IN ({sql_list(names)}) GROUP BY name"))
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return sum(sizes.values()), events, sizes


# ------------------------------------------------------------------ main


def main():
    global BINARY
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="relance / baseline alternations per measure")
    parser.add_argument("--only", default="rescore,plan,import,dispatch,bytes,guard,writes",
                        help="comma-separated subset of rescore,plan,import,dispatch,bytes,guard,writes")
    parser.add_argument("--binary", type=Path, default=BINARY,
                        help="the relance binary the import measure runs (default: target/release/relance)")
    args = parser.parse_args()
    BINARY = args.binary.resolve()
    only = set(args.only.split(","))
    env = {"RELANCE_BENCH_CONTACTS": str(args.contacts)}
    total = time.time()
    say(f"baselines: {args.contacts:,} contacts, {args.rounds} round(s); load {load():.1f}")

    data = export(args.contacts)
    store = TARGET / "bench" / f"rescore-{args.contacts}.db"
    work = Path(tempfile.mkdtemp(prefix="baselines-", dir=TARGET / "bench"))
    try:
        if not store.exists() and only & {"rescore", "plan", "bytes", "writes"}:
            say("generating the benchmarks' store (first rescore run, not measured)")
            bench("rescore", env)
        db = None
        if only & {"rescore", "plan", "bytes"}:
            db, events, duck_size = duck_load(data, work / "baseline.duckdb")

        if "bytes" in only:
            say("stored bytes per event")
            size, stored, sizes = relance_bytes(store)
            say(f"    relance: {stored:,} events, {size:,} bytes ({', '.join(f'{k} {v:,}' for k, v in sizes.items())})")
            say(f"    DuckDB: {events:,} events, {duck_size:,} bytes")
            record("stored bytes per event", "bytes", size / stored, duck_size / events, "lower", load())
        for r in range(args.rounds):
            if "rescore" in only:
                say(f"full rescoring, round {r + 1}")
                la = load()
                out = bench("rescore", env)
                ours = figure(out, r"^full rebuild\s+([\d.]+) s", "full rebuild time")
                la2 = load()
                wall, cpu, bands = duck_rescore(db)
                say(f"    DuckDB rescoring {wall:.2f} s wall, {cpu:.2f} s CPU; bands {bands}")
                record("full rescoring", "s", ours, wall, "lower", max(la, la2))
            if "import" in only:
                say(f"import of 1,000,000 JSONL events, round {r + 1}")
                la = load()
                secs, cpu, stored, relance_db, before = relance_import(data, work / "import")
                ours = stored / secs
                cpu_text = f", {cpu:.2f} s of process CPU" if cpu is not None else ""
                say(f"    relance import events: {stored:,} events in {secs:.2f} s{cpu_text}")
                la2 = load()
                psecs, rows = sqlite_import(relance_db, before)
                say(f"    Python sqlite3: {rows:,} events (and their dictionary, id and feed rows) in {psecs:.2f} s")
                record("import of 1 M JSONL events", "events/s", ours, rows / psecs, "higher", max(la, la2))
            if "dispatch" in only:
                say(f"dispatch to a loopback receiver, round {r + 1}")
                la = load()
                out = bench("dispatch", {"RELANCE_BENCH_WRK": "wrk"})
                ours = figure(out, r"^dispatch\s+[\d.]+ s\s+\(([\d.]+) sends/s", "dispatch rate")
                theirs = figure(out, r"^wrk -t1 -c4, mean\s+([\d.]+) requests/s", "wrk rate")
                record("dispatch to a loopback receiver", "sends/s", ours, theirs, "higher", max(la, load()))
            if "plan" in only:
                say(f"planning pass a day later, round {r + 1}")
                la = load()
                out = bench("plan", env)
                ours = figure(out, r"^full pass, a day later\s+([\d.]+) s", "planning time")
                la2 = load()
                wall, cpu, levels, capped = duck_plan(db)
                say(f"    DuckDB fatigue and caps {wall:.2f} s wall, {cpu:.2f} s CPU; levels {levels}, "
                    f"email capped {capped[0]:,}, all channels capped {capped[1]:,}")
                record("planning pass a day later", "s", ours, wall, "lower", max(la, la2))
            if "writes" in only:
                say(f"incremental rescoring after 1 % of the contacts received an event, round {r + 1}")
                la = load()
                out = bench("rescore", dict(env, RELANCE_BENCH_INCREMENTAL_ONLY="1"))
                ours = figure(out, r"^incremental pass\s+([\d.]+) s", "incremental pass time")
                changed = int(figure(out, r"^incremental pass\s+[\d.]+ s\s+\(\d+ contacts rescored, (\d+) changed", "changed scores"))
                la2 = load()
                secs, n, frames = sqlite_score_writes(store, work, changed, r)
                say(f"    Python sqlite3: {n:,} scores, their snapshots and queue rows written in {secs:.2f} s "
                    f"({frames:,} log frames)")
                record("incremental rescoring vs its writes alone", "s", ours, secs, "lower", max(la, la2))
            if "guard" in only:
                say(f"guard decisions, round {r + 1}")
                la = load()
                out = bench("guard")
                ours = figure(out, r"^per core:\s+([\d.]+) decisions per CPU-second", "guard rate")
                theirs = figure(out, r"^baseline per core:\s+([\d.]+) decisions per CPU-second", "baseline rate")
                record("guard decisions per CPU-second", "decisions/s", ours, theirs, "higher", max(la, load()))
        if db is not None:
            db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    say("")
    say(f"| measure | relance | baseline, same data, same run | ratio (relance / baseline) | load |")
    say("|---|---|---|---|---|")
    for measure, unit, ours, theirs, ratio, better, la in RESULTS:
        say(f"| {measure} | {ours:,.2f} {unit} | {theirs:,.2f} {unit} | {ratio:.2f} ({better} is better) | {la:.1f} |")
    say(f"\nbaselines: {time.time() - total:.0f} s in all")


if __name__ == "__main__":
    main()
