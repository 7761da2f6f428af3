#!/usr/bin/env bash
# Installs, migrates and starts django-crm (BottleCRM, from PyPI) for
# tests/plugins_crm.rs, on PostgreSQL 127.0.0.1:5432 (trust auth, user
# postgres) and Redis 127.0.0.1:6379. Idempotent. Writes target/crm/env
# (CRM_URL, CRM_TOKEN) that the tests read.
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { echo "crm: $*" >&2; }

PORT=${CRM_PORT:-18011}
STATE=target/crm
VENV=target/venv-crm
mkdir -p "$STATE"

PY=""
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 python3.12; do
  if [ -x "$p" ] || command -v "$p" >/dev/null 2>&1; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  log "needs Python 3.12 (pyenv install 3.12)"; exit 1
fi
if ! "$VENV/bin/python" -c 'import crm' 2>/dev/null; then
  log "pip install django-crm into $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q "django-crm==1.35.0"
fi

export DJANGO_SETTINGS_MODULE=crm.settings DBNAME=relance_crm DBHOST=127.0.0.1 DBPORT=5432
export DBUSER=postgres DBPASSWORD="" ENV_TYPE=dev DEBUG=False
export SECRET_KEY=relance-test-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz
export CELERY_BROKER_URL=redis://127.0.0.1:6379/5 CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/5
export ALLOWED_HOSTS=127.0.0.1,localhost DOMAIN_NAME=http://127.0.0.1:$PORT

pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL is not running on 127.0.0.1:5432"; exit 1; }
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis is not running on 127.0.0.1:6379"; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='relance_crm'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE relance_crm"
fi
"$VENV/bin/django-admin" migrate --noinput >"$STATE/migrate.log" 2>&1 \
  || { log "migrate failed, see $STATE/migrate.log"; exit 1; }

# Restart the server we started earlier (by its pid file), if any.
if [ -f "$STATE/gunicorn.pid" ] && kill -0 "$(cat "$STATE/gunicorn.pid")" 2>/dev/null; then
  kill "$(cat "$STATE/gunicorn.pid")"; sleep 1
fi
TOKEN=$("$VENV/bin/python" tests/servers/crm_bootstrap.py 2>>"$STATE/bootstrap.log" | tail -1)
"$VENV/bin/gunicorn" crm.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 \
  --timeout 60 --daemon --pid "$STATE/gunicorn.pid" \
  --error-logfile "$STATE/gunicorn.log" --access-logfile "$STATE/access.log"
for _ in $(seq 1 60); do
  if curl -fs -o /dev/null "http://127.0.0.1:$PORT/schema/" -H "Authorization: Bearer $TOKEN"; then break; fi
  sleep 0.5
done
printf 'CRM_URL=http://127.0.0.1:%s\nCRM_TOKEN=%s\n' "$PORT" "$TOKEN" >"$STATE/env"
log "django-crm on http://127.0.0.1:$PORT (token in $STATE/env)"
