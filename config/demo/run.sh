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

section() { printf '\n== %s\n' "$*"; }
section "Scores: a full pass, then an incremental one that has nothing to do"
relance rescore
relance rescore
section "Martino (seed: 215, hot) and Nathalie (250 less 3 months of inactivity)"
relance score martino
relance score nathalie
section "What if another company's threshold (125) applied?"
sed 's/^min = 150.0$/min = 125.0/' config/relance.toml > target/demo/threshold-125.toml
relance score --what-if target/demo/threshold-125.toml | tail -4
section "Deals, best first"
relance deals | head -6
section "P's fatigue (seed: 12), and what the guard says"
relance fatigue p
relance guard p --channel email --kind systematic
relance guard p --channel phone --kind opportunistic
section "Marketing pressure against customer value"
relance pressure
