#!/usr/bin/env bash
# `make bench-db`: installs pgBackRest from Debian if missing, then runs the
# database benchmark (bench/db_bench.py) and leaves its table in bench/out/db-results.md.
# Pass a smaller scale on a slow machine: make bench-db DB_BENCH_ARGS="--scale 20".
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pgbackrest >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest
fi
exec .venv/bin/python bench/db_bench.py "$@"
