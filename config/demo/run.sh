#!/usr/bin/env bash
# The main job on the embedded store, live: builds relance (a debug build:
# about 3 minutes the first time on two cores, with cargo's progress), then
# `relance demo` — a fresh SQLite store under target/demo/, the demo data
# imported with its instants moved to now, `relance run` with the API on
# 127.0.0.1 and a stream of events posted to it. Ctrl-C stops it.
# Arguments go to `relance demo` (e.g. --pace 1s, --for 60s, --listen).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v cargo >/dev/null; then
    echo "run.sh: cargo not found: install a Rust toolchain (https://rustup.rs)" >&2
    exit 2
fi
echo "Building relance (cargo build -p relance) ..." >&2
cargo build -p relance
exec ./target/debug/relance --config config/relance.toml demo "$@"
