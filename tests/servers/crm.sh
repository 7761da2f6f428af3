#!/usr/bin/env bash
# Installs, migrates and starts django-crm (BottleCRM, from PyPI) for
# tests/plugins_crm.rs, on PostgreSQL 127.0.0.1:5432 (trust auth, user
# postgres) and Redis 127.0.0.1:6379. Idempotent. Writes target/crm/env
# (CRM_URL, CRM_TOKEN, CRM_BROKER_DOWN_URL) that the tests read.
#
# Two servers share the database: the normal one on $CRM_PORT, and one on
# $CRM_PORT+1 whose Celery broker is down (a closed loopback port), which
# is how a real deployment ends up answering 500 to writes it committed.
#
# Each checkout has its own database, Redis database, token and ports
# (derived from its path), and stops only the servers it started (their
# pid files, checked against their command line): two checkouts on one
# machine never break each other's runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
log() { echo "crm: $*" >&2; }

# What this checkout owns: a short hash of its path.
SLUG=$(printf %s "$ROOT" | sha256sum | cut -c1-8)
DB=relance_crm_$SLUG
REDIS_DB=$((5 + 0x${SLUG:0:4} % 10))
STATE=$ROOT/target/crm
VENV=$ROOT/target/venv-crm
mkdir -p "$STATE"

PY=""
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 python3.12; do
  if [ -x "$p" ] || command -v "$p" >/dev/null 2>&1; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  log "needs Python 3.12 (pyenv install 3.12)"; exit 1
fi
# `packaging` is needed by kombu's Redis transport but not pulled in by
# django-crm 1.35.0: without it every write that queues a Celery task
# answers 500 after committing.
if ! "$VENV/bin/python" -c 'import crm, packaging' 2>/dev/null; then
  log "pip install django-crm into $VENV"
  "$PY" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install -q "django-crm==1.35.0" packaging
fi

# Stops the servers this checkout started earlier: the pid in the file must
# still be a gunicorn writing that very pid file (a pid file copied from
# another checkout, or a recycled pid, names someone else's process).
stop_ours() { # pidname
  local file=$STATE/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--pid $file "; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$file"
}
stop_ours gunicorn
stop_ours gunicorn-broker-down

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Two free neighbouring ports: $CRM_PORT when set, else from this
# checkout's hash; busy ones (another checkout's CRM) are skipped.
PORT=${CRM_PORT:-$((18011 + 2 * (0x${SLUG:4:4} % 400)))}
for _ in $(seq 1 50); do
  if ! listening "$PORT" && ! listening "$((PORT + 1))"; then break; fi
  [ -n "${CRM_PORT:-}" ] && { log "port $PORT or $((PORT + 1)) is busy"; exit 1; }
  PORT=$((PORT + 2))
done

export DJANGO_SETTINGS_MODULE=crm.settings DBNAME=$DB DBHOST=127.0.0.1 DBPORT=5432
export DBUSER=postgres DBPASSWORD="" ENV_TYPE=dev DEBUG=False
export SECRET_KEY=relance-test-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz
export CELERY_BROKER_URL=redis://127.0.0.1:6379/$REDIS_DB CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/$REDIS_DB
export ALLOWED_HOSTS=127.0.0.1,localhost DOMAIN_NAME=http://127.0.0.1:$PORT
export RELANCE_TOKEN_NAME="relance tests $SLUG"

pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL is not running on 127.0.0.1:5432"; exit 1; }
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis is not running on 127.0.0.1:6379"; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
fi
# django-crm writes server.log and security_audit.log to its working folder.
cd "$STATE"
"$VENV/bin/python" -m django migrate --noinput >"$STATE/migrate.log" 2>&1 \
  || { log "migrate failed, see $STATE/migrate.log"; exit 1; }

TOKEN=$("$VENV/bin/python" "$ROOT/tests/servers/crm_bootstrap.py" 2>>"$STATE/bootstrap.log" | tail -1)
serve() { # port pidname
  "$VENV/bin/python" -m gunicorn crm.wsgi:application --bind "127.0.0.1:$1" --workers 2 \
    --timeout 90 --daemon --pid "$STATE/$2.pid" \
    --error-logfile "$STATE/$2.log" --access-logfile "$STATE/$2.access.log"
}
serve "$PORT" gunicorn
DOWN_PORT=$((PORT + 1))
CELERY_BROKER_URL=redis://127.0.0.1:1/0 CELERY_RESULT_BACKEND=redis://127.0.0.1:1/0 \
  serve "$DOWN_PORT" gunicorn-broker-down
for p in "$PORT" "$DOWN_PORT"; do
  for _ in $(seq 1 60); do
    if curl -fs -o /dev/null "http://127.0.0.1:$p/api/profile/" -H "Authorization: Bearer $TOKEN"; then break; fi
    sleep 0.5
  done
done
printf 'CRM_URL=http://127.0.0.1:%s\nCRM_TOKEN=%s\nCRM_BROKER_DOWN_URL=http://127.0.0.1:%s\n' \
  "$PORT" "$TOKEN" "$DOWN_PORT" >"$STATE/env"
log "django-crm on http://127.0.0.1:$PORT, broker down on :$DOWN_PORT (token in $STATE/env)"
