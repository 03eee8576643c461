#!/usr/bin/env bash
# `make bench`: installs restic and Borg from Debian if missing, then runs the
# engine benchmark (bench/bench.py: 3 interleaved rounds, medians and spreads) and
# leaves its table in bench/out/results.md. Arguments go to bench.py, e.g.
# `bash bench/run.sh --rounds 1 --steps "full restore" --tools safehold,restic`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup
fi
exec .venv/bin/python bench/bench.py "$@"
