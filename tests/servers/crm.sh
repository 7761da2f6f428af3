#!/usr/bin/env bash
# Installs, migrates and starts django-crm (BottleCRM) for tests/plugins_crm.rs.
set -euo pipefail
echo "crm: not set up yet" >&2
