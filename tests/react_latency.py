#!/usr/bin/env python3
"""Reaction latency of `relance run`: events imported by another process
(`relance import events`) until their follow-up rows are planned in the
outbox. Prints the median, the 99th percentile and the maximum.

    python3 tests/react_latency.py [--binary target/release/relance] \
        [--events 1000] [--batch 10] [--gap 2.0] [--seed 14]

It runs the daemon on a scratch store with the shipped rules, no schedule
and no API: only the daemon's poll of the store's event numbers wakes it.
The events go in batches of `--batch` email clicks, each batch one import
process and one transaction, each event for its own contact; a batch
starts a random 0 to `--gap` seconds after the previous one ended, so
imports fall at every phase of the daemon's one-second poll.

A reader of its own polls the store every 5 ms and notes when each event
number and each outbox row number first became visible: an event's latency
runs from its commit (first seen) to its row's commit (first seen). The
planning instant the store records for the row (`updated_at`, the pass's
clock when it started) is reported too: it comes before the row's commit by
the length of the pass.
"""

import argparse
import bisect
import datetime
import os
import pathlib
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def config_text() -> str:
    text = (ROOT / "config/relance.toml").read_text()
    # Every channel a webhook to a closed loopback port (planning needs no
    # receiver); no schedule: only the daemon's reactions plan.
    hook = ('plugin = "webhook"\nsettings = { url = "http://127.0.0.1:9/hook", '
            'secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", allow_networks = ["127.0.0.0/8"] }')
    text = text.replace('plugin = "email"', hook).replace('plugin = "crm"', hook)
    text = text.replace('plugin = "webhook"\nevent = "sms_sent"', hook + '\nevent = "sms_sent"')
    kept, skip = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skip = line.startswith("[schedules.")
        if not skip:
            kept.append(line)
    return "\n".join(kept) + "\n"


class Watcher(threading.Thread):
    """Notes when each event number and outbox row number became visible."""

    def __init__(self, db: pathlib.Path):
        super().__init__(daemon=True)
        self.db = db
        self.events: list[tuple[int, float]] = []  # (max seq, first seen)
        self.rows: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.polls = 0

    def run(self) -> None:
        conn = sqlite3.connect(str(self.db), timeout=30)
        ev = row = 0
        while not self.stop.is_set():
            self.polls += 1
            e = conn.execute("SELECT coalesce(max(seq), 0) FROM event_feed").fetchone()[0]
            r = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
            now = time.time()
            if e > ev:
                ev = e
                self.events.append((e, now))
            if r > row:
                row = r
                self.rows.append((r, now))
            time.sleep(0.005)

    @staticmethod
    def seen(marks: list[tuple[int, float]], seq: int) -> float:
        i = bisect.bisect_left([m[0] for m in marks], seq)
        return marks[i][1]


def percentiles(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return (f"median {statistics.median(xs) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {xs[-1] * 1000:.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/release/relance"))
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--gap", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="relance-react-"))
    db = scratch / "store.db"
    (scratch / "relance.toml").write_text(config_text())
    env = dict(os.environ, RELANCE_DB=str(db))
    env.pop("RELANCE_CONFIG", None)
    base = [args.binary, "--config", str(scratch / "relance.toml")]
    contacts = scratch / "c.csv"
    contacts.write_text(
        "id,status,timezone\n" + "".join(f"c{i},suspect,UTC\n" for i in range(args.events))
    )
    subprocess.run(base + ["import", "contacts", str(contacts)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_path = scratch / "run.log"
    log = open(log_path, "w")
    daemon = subprocess.Popen(base + ["run"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    watcher = Watcher(db)
    started = time.monotonic()
    try:
        while "relance running" not in log_path.read_text():
            if time.monotonic() - started > 120 or daemon.poll() is not None:
                print(f"the daemon did not start: {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        watcher.start()
        watch_started = time.monotonic()
        for first in range(0, args.events, args.batch):
            time.sleep(rng.uniform(0, args.gap))
            at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
            stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            event = scratch / "e.jsonl"
            event.write_text("".join(
                f'{{"contact":"c{i}","type":"email_click","at":"{stamp}"}}\n'
                for i in range(first, min(first + args.batch, args.events))
            ))
            subprocess.run(base + ["import", "events", str(event)], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reader = sqlite3.connect(str(db), timeout=30)
        count = ("SELECT count(*) FROM outbox WHERE followup = 'email_click_call'")
        waited = time.monotonic()
        while reader.execute(count).fetchone()[0] < args.events:
            if time.monotonic() - waited > 120:
                print(f"not every event was planned within 120 s: {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        time.sleep(0.05)
    finally:
        watcher.stop.set()
        daemon.terminate()
        daemon.wait(timeout=60)
    elapsed = time.monotonic() - started
    watched = time.monotonic() - watch_started
    events = dict(reader.execute(
        # Event types are stored as ids: the view reads them as names.
        "SELECT c.id, e.seq FROM events_text e JOIN contacts c ON c.rowid = e.contact "
        "WHERE e.type = 'email_click'"
    ).fetchall())
    rows = reader.execute(
        "SELECT c.id, o.seq, o.updated_at FROM outbox o JOIN contacts c ON c.rowid = o.contact "
        "WHERE o.followup = 'email_click_call'"
    ).fetchall()
    to_row, to_recorded = [], []
    for contact, seq, updated_at in rows:
        committed = Watcher.seen(watcher.events, events[contact])
        to_row.append(Watcher.seen(watcher.rows, seq) - committed)
        to_recorded.append(updated_at / 1e6 - committed)
    passes = log_path.read_text().count("new events planned")
    print(f"{len(rows)} events in {-(-args.events // args.batch)} imports of up to {args.batch}, "
          f"{passes} reaction passes, {elapsed:.0f} s; the reader polled every "
          f"{watched / max(watcher.polls, 1) * 1000:.1f} ms on average")
    print(f"commit to row committed:           {percentiles(to_row)}")
    print(f"commit to planning instant stored: {percentiles(to_recorded)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
