#!/usr/bin/env bash
# relance's benchmark figures beside independent baselines on the same data,
# in one invocation (see bench/baselines.py for what is compared):
#
#   bench/baselines.sh [--contacts N] [--rounds N] [--only rescore,plan,import,dispatch,bytes]
#
# Installs what it needs when missing: wrk (Debian package, with apt-get) and
# DuckDB (PyPI, in a venv under target/baselines-venv); builds the release
# benchmarks and binary. The first run also writes the data set (CSV and
# JSONL under target/bench/baseline-N/) and, if the rescore benchmark has
# not run yet, its store: several minutes, not measured.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "installing wrk (apt-get)"
  apt-get update -qq && apt-get install -y -qq wrk
fi
venv=target/baselines-venv
if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  echo "installing DuckDB in $venv (pip)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb
fi
echo "building the release benchmarks and binary"
cargo build -q --release -p relance
cargo bench -q -p relance --no-run --bench export --bench rescore --bench plan --bench dispatch
exec "$venv/bin/python" bench/baselines.py "$@"
