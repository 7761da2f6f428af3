#!/usr/bin/env bash
# Schemathesis (property-based API testing) against the OpenAPI document of
# a real `relance run`: a fresh store, the API on a free loopback port, a
# generated token. Fails on any 5xx or any answer the document does not
# describe. Bounded: SCHEMATHESIS_MAX_EXAMPLES cases per operation (30) and
# SCHEMATHESIS_MAX_TIME seconds (120), under a hard timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "schemathesis.sh: $*" >&2; }

MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-30}
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-120}
VERSION=4.32.5
venv=target/venv-schemathesis
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  log "venv $venv (schemathesis $VERSION)"
  mkdir -p target
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install -q "schemathesis==$VERSION"
fi

cargo build -q -p relance --bin relance --locked
work=$(mktemp -d)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
secret=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
cat >"$work/relance.toml" <<EOF
[store]
path = "store.db"

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
settings = { url = "http://127.0.0.1:$(free_port)/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", allow_networks = ["127.0.0.0/8"] }

[templates.news]
channel = "hook"
text = "news"

[api]
enabled = true
listen = "127.0.0.1:$port"
tokens = ["$token"]
tracking_secret = "$secret"
public_url = "http://127.0.0.1:$port"
EOF

target/debug/relance --config "$work/relance.toml" run 2>"$work/run.log" &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  if python3 -c "import urllib.request as u; u.urlopen('$base/healthz', timeout=2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$work/run.log" >&2
    log "relance run exited"
    exit 1
  fi
  sleep 0.2
done

log "$MAX_EXAMPLES examples per operation, at most ${MAX_TIME}s, against $base"
status=0
# From the scratch folder: schemathesis keeps a cache where it runs.
st=$(pwd)/$venv/bin/schemathesis
(cd "$work" && timeout --kill-after=10 $((MAX_TIME + 120)) \
  "$st" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --request-timeout 30 \
  --workers 2 \
  --generation-database none \
  --no-color \
  --suppress-health-check all) || status=$?
if [ "$status" -ne 0 ]; then
  log "failed (exit $status); the daemon's log:"
  tail -n 50 "$work/run.log" >&2
fi
exit "$status"
