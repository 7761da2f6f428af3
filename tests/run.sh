#!/usr/bin/env bash
# Runs every test of relance on a fresh machine: installs what the tests
# need, then formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v python3 >/dev/null || need_apt+=(python3)
# The dashboard's tests (daemon/tests/ui.rs) drive Debian's chromium headless.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

bash tests/servers/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# --no-fail-fast: one failing test binary must not hide the others.
cargo test --workspace --locked --no-fail-fast
bash tests/schemathesis.sh
