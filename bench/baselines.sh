#!/usr/bin/env bash
# relance's benchmark figures beside independent baselines on the same data,
# in one invocation (see bench/baselines.py for what is compared):
#
#   bench/baselines.sh [--contacts N] [--rounds N] [--only rescore,plan,import,dispatch,bytes,guard,writes]
#
# `--only import,guard --contacts 50000` needs neither DuckDB nor the
# 20 M-event store: 50,000 contacts give the 1,000,000 events of the import.
#
# Installs what it needs when missing: wrk (Debian package, with apt-get) and
# DuckDB (PyPI, in a venv under target/baselines-venv); builds the release
# benchmarks and binary. The first run also writes the data set (CSV and
# JSONL under target/bench/baseline-N/) and, if the rescore benchmark has
# not run yet, its store: several minutes, not measured.
set -euo pipefail
cd "$(dirname "$0")/.."

# DuckDB only for the measures over the whole data set.
only="rescore,plan,import,dispatch,bytes,guard,writes"
prev=""
for a in "$@"; do
  case "$prev" in --only) only="$a" ;; esac
  case "$a" in --only=*) only="${a#--only=}" ;; esac
  prev="$a"
done
if [[ ",$only," == *,dispatch,* ]] && ! command -v wrk >/dev/null; then
  echo "installing wrk (apt-get)"
  apt-get update -qq && apt-get install -y -qq wrk
fi
python=python3
if [[ ",$only," =~ ,(rescore|plan|bytes), ]]; then
  venv=target/baselines-venv
  if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
    echo "installing DuckDB in $venv (pip)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q duckdb
  fi
  python="$venv/bin/python"
fi
echo "building the release benchmarks and binary"
cargo build -q --release -p relance
cargo bench -q -p relance --no-run --bench export --bench rescore --bench plan --bench dispatch --bench guard
exec "$python" bench/baselines.py "$@"
