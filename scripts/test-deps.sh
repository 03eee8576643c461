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
