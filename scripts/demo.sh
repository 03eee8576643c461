#!/usr/bin/env bash
# The safehold demo (`make run`): a controller on the embedded defaults (SQLite
# catalog, local storage), one demo partition backed up every minute.
#
# Everything lives under ./demo/ (SAFEHOLD_DEMO_DIR). Ctrl-C stops the server.
# SAFEHOLD_DEMO_PORT picks the port (default 19080). With
# SAFEHOLD_DEMO_NONINTERACTIVE=1 the script takes one backup, restores it,
# and exits instead of serving in the foreground (the test suite runs it so).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${SAFEHOLD_BIN:-$PWD/.venv/bin/safehold}"
PY="${SAFEHOLD_PYTHON:-$PWD/.venv/bin/python}"
PORT="${SAFEHOLD_DEMO_PORT:-19080}"
URL="http://127.0.0.1:${PORT}"
mkdir -p "${SAFEHOLD_DEMO_DIR:-./demo}"
DEMO="$(cd "${SAFEHOLD_DEMO_DIR:-./demo}" && pwd)"
PARTITION="5afe4011-de40-4000-8000-000000000001"
POLICY="demo-every-minute"

# An admin token, kept in a file (never printed).
if [ ! -s "$DEMO/admin.token" ]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$DEMO/admin.token")
fi
(umask 077 && printf 'admin %s\n' "$(cat "$DEMO/admin.token")" >"$DEMO/tokens")

# The demo partition's data: a directory with a few files.
mkdir -p "$DEMO/orders" "$DEMO/backups"
if [ ! -e "$DEMO/orders/orders.csv" ]; then
    printf 'id,item,qty\n1,apple,3\n2,pear,5\n' >"$DEMO/orders/orders.csv"
    printf 'created by the safehold demo\n' >"$DEMO/orders/README"
fi
cat >"$DEMO/policy.json" <<JSON
{
  "Name": "$POLICY",
  "AutoRestoreOnDataLoss": false,
  "MaxIncrementalBackups": 5,
  "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1M"},
  "Storage": {"StorageKind": "FileShare", "Path": "$DEMO/backups", "FriendlyName": "demo"},
  "RetentionPolicy": {"RetentionPolicyType": "Basic", "RetentionDuration": "PT2H", "MinimumNumberOfBackups": 3}
}
JSON

"$BIN" serve --port "$PORT" --data-dir "$DEMO/data" --tokens-file "$DEMO/tokens" --tick-seconds 2 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" - "$URL" <<'PYEOF'
import sys, time, httpx
for _ in range(300):
    try:
        if httpx.get(sys.argv[1] + "/healthz", timeout=1).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.1)
sys.exit("the controller did not start")
PYEOF

export SAFEHOLD_URL="$URL"
AUTH=(--token-file "$DEMO/admin.token")
"$BIN" partition add "${AUTH[@]}" --application fabric:/Demo --service fabric:/Demo/Orders \
    --partition-id "$PARTITION" --source "dir:$DEMO/orders"
"$BIN" policy show "${AUTH[@]}" "$POLICY" >/dev/null 2>&1 || "$BIN" policy create "${AUTH[@]}" "$DEMO/policy.json"
"$BIN" policy enable "${AUTH[@]}" "$POLICY" --application fabric:/Demo

cat <<TXT

safehold is running at $URL  (OpenAPI: $URL/docs, $URL/openapi.json; metrics: $URL/metrics)
Demo partition $PARTITION backs up $DEMO/orders every minute into $DEMO/backups.
The admin token is in $DEMO/admin.token. Try, in another shell:

  export SAFEHOLD_URL=$URL
  T="--token-file $DEMO/admin.token"
  .venv/bin/safehold partition list \$T
  .venv/bin/safehold partition backup $PARTITION --wait \$T
  .venv/bin/safehold partition backups $PARTITION \$T
  echo oops > $DEMO/orders/orders.csv
  .venv/bin/safehold partition restore $PARTITION --latest --wait \$T
  .venv/bin/safehold policy suspend --application fabric:/Demo \$T
  curl -H "Authorization: Bearer \$(cat $DEMO/admin.token)" "$URL/Partitions/$PARTITION/\\\$/GetBackupProgress?api-version=6.4"

Press Ctrl-C to stop.
TXT

if [ "${SAFEHOLD_DEMO_NONINTERACTIVE:-0}" = "1" ]; then
    "$BIN" policy suspend "${AUTH[@]}" --application fabric:/Demo
    # The scheduler may have started the first periodic backup already: wait for it.
    for _ in $(seq 100); do
        "$BIN" partition backup "${AUTH[@]}" "$PARTITION" --wait && break
        sleep 0.2
    done
    "$BIN" partition backups "${AUTH[@]}" "$PARTITION"
    echo "changed" >"$DEMO/orders/orders.csv"
    "$BIN" partition restore "${AUTH[@]}" "$PARTITION" --latest --wait --yes
    grep -q apple "$DEMO/orders/orders.csv"
    echo "demo: backup and restore worked"
    exit 0
fi
wait "$SERVER"
