#!/usr/bin/env bash
# Installs what the test suite needs beyond the venv: servers the storage
# conformance suite runs against. Idempotent; safe to run on every `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
