#!/usr/bin/env bash
# The main job on the embedded store with the demo data, no external service:
# a fresh SQLite file, the demo imported, then what relance makes of it at the
# demo's reference instant.
set -euo pipefail
cd "$(dirname "$0")/../.."

NOW="${RELANCE_DEMO_NOW:-2026-11-20T12:00:00Z}"
export RELANCE_DB="${RELANCE_DB:-$PWD/target/demo/relance.db}"
mkdir -p "$(dirname "$RELANCE_DB")"
rm -f "$RELANCE_DB" "$RELANCE_DB-wal" "$RELANCE_DB-shm"

cargo build --release --quiet
relance() { ./target/release/relance --config config/relance.toml --now "$NOW" "$@"; }

relance check
relance import companies config/demo/companies.csv
relance import contacts config/demo/contacts.csv
relance import deals config/demo/deals.csv
relance import events config/demo/events.jsonl
echo
relance contacts show martino
