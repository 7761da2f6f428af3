#!/usr/bin/env python3
"""Reaction latency of `relance run`: events imported by another process
(`relance import events`, one event per import) until the follow-up row is
planned in the outbox. Prints the median and the 99th percentile.

    python3 tests/react_latency.py [--binary target/release/relance] [--events 1000]

It runs the daemon on a scratch store with the shipped rules, no schedule
and no API: only the daemon's poll of the store's event numbers wakes it.
Times are measured from the end of each import (its commit) to the moment
the row is visible to a reader, polled every 10 ms.
"""

import argparse
import datetime
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/release/relance"))
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="relance-react-"))
    db = scratch / "store.db"
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
    text = "\n".join(kept) + "\n"
    (scratch / "relance.toml").write_text(text)
    env = dict(os.environ, RELANCE_DB=str(db))
    env.pop("RELANCE_CONFIG", None)
    base = [args.binary, "--config", str(scratch / "relance.toml")]
    contacts = scratch / "c.csv"
    contacts.write_text(
        "id,status,timezone\n" + "".join(f"c{i},suspect,UTC\n" for i in range(args.events))
    )
    subprocess.run(base + ["import", "contacts", str(contacts)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(scratch / "run.log", "w")
    daemon = subprocess.Popen(base + ["run"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    latencies = []
    try:
        reader = sqlite3.connect(str(db), timeout=30)
        for i in range(args.events):
            at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
            event = scratch / "e.jsonl"
            event.write_text(
                f'{{"contact":"c{i}","type":"email_click","at":"{at.strftime("%Y-%m-%dT%H:%M:%SZ")}"}}\n'
            )
            subprocess.run(base + ["import", "events", str(event)], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            committed = time.monotonic()
            while True:
                row = reader.execute(
                    "SELECT 1 FROM outbox o JOIN contacts c ON c.rowid = o.contact "
                    "WHERE c.id = ? AND o.followup = 'email_click_call'",
                    (f"c{i}",),
                ).fetchone()
                if row:
                    break
                if time.monotonic() - committed > 60:
                    print(f"event {i} not planned within 60 s", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            latencies.append(time.monotonic() - committed)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"{len(latencies)} events: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
