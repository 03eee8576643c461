#!/usr/bin/env bash
# Installs what the test suite needs beyond the venv: servers the storage
# conformance suite runs against. Idempotent; safe to run on every `make test`.
#   - Samba's smbd (Debian package), for the SMB backend tests
#   - Azurite (npm, pinned in package.json / package-lock.json), for Azure
# moto (S3) is a Python package in the dev extra, installed with the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v smbd >/dev/null 2>&1 && [ ! -x /usr/sbin/smbd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-deps: installing samba"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q samba
    else
        echo "test-deps: smbd is missing and cannot be installed here (needs root and apt-get);" \
             "the SMB tests will be skipped" >&2
    fi
fi

if [ ! -x node_modules/.bin/azurite-blob ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "test-deps: installing azurite"
        npm ci --no-audit --no-fund --loglevel=error
    else
        echo "test-deps: npm is missing; the Azure tests will be skipped" >&2
    fi
fi

# The operator console's browser tests: Debian's chromium and chromedriver, and
# the console's assets built from the npm packages (scripts/build-console.sh).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-deps: installing chromium and chromium-driver"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
    else
        echo "test-deps: chromium is missing and cannot be installed here; the console's" \
             "browser tests will be skipped" >&2
    fi
fi
bash scripts/build-console.sh

# systemd-analyze, to verify the units in deploy/systemd (Debian: systemd; no
# service is started). Without it, that test is skipped.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-deps: installing systemd (for systemd-analyze verify)"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd
    else
        echo "test-deps: systemd-analyze is missing; the unit verification test will be skipped" >&2
    fi
fi

# promtool (Debian: prometheus), to check deploy/prometheus/safehold-rules.yml
# (tests/drills/test_deploy.py; skipped without it). The service is not started.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-deps: installing prometheus (for promtool)"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
    else
        echo "test-deps: promtool is missing; the alerting rules test will be skipped" >&2
    fi
fi

# mariadb-backup (Debian), for the MariaDB source's physical backups
# (tests/db/test_mariadb.py; skipped without it). The machine's server is not touched.
if ! command -v mariadb-backup >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-deps: installing mariadb-backup"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mariadb-backup
    else
        echo "test-deps: mariadb-backup is missing; the MariaDB tests will be skipped" >&2
    fi
fi
