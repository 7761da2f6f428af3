#!/usr/bin/env bash
# Installs and starts what the plugin tests talk to; idempotent, loopback only.
#  - python3-aiosmtpd (SMTP server) and postfix's smtp-sink (fault injection);
#    the tests start their own instances on free ports.
#  - target/venv-tools: the independent Standard Webhooks verifier.
#  - django-crm (BottleCRM) on PostgreSQL 127.0.0.1:5432 and Redis
#    127.0.0.1:6379, served on 127.0.0.1:$CRM_PORT; see crm.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { echo "setup: $*" >&2; }

need=()
command -v aiosmtpd >/dev/null || python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ] || need+=(postfix)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# postfix is only here for its smtp-sink binary: no mail daemon on port 25.
if command -v postfix >/dev/null && pgrep -x master >/dev/null 2>&1; then
  postfix stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now postfix >/dev/null 2>&1 || true
fi

# A Python for the test tools: pyenv's 3.12 when there, else the system one.
python_for_venv() {
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1 || [ -x "$p" ]; then echo "$p"; return; fi
  done
}
PY=$(python_for_venv)
mkdir -p target
if ! target/venv-tools/bin/python -c 'import standardwebhooks' 2>/dev/null; then
  log "venv target/venv-tools (standardwebhooks)"
  # --clear: a venv left half-made by an interrupted run is made again.
  "$PY" -m venv --clear target/venv-tools
  target/venv-tools/bin/python -m pip install -q standardwebhooks
fi

# The PostgreSQL store's tests (daemon/tests/store_contract.rs, postgres.rs)
# and the CRM need PostgreSQL on 127.0.0.1:5432 with trust authentication:
# started here when installed but stopped; the tests fail saying so otherwise.
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  log "starting PostgreSQL"
  { command -v pg_ctlcluster >/dev/null && pg_ctlcluster "$(ls /etc/postgresql | sort -V | tail -1)" main start; } \
    || service postgresql start || log "PostgreSQL could not be started"
fi

bash tests/servers/crm.sh || log "the CRM could not be started; tests/plugins_crm.rs will say why"
