#!/usr/bin/env bash
# Dashboard latency with a large queue: 100,000 jobs in the render queue's sets (by default
# 30,000 completed, 20,000 failed with error codes, 50,000 waiting in the paused queue, so the
# worker serving the dashboard processes none) and 100,000 Design rows, then timed GETs of
# each dashboard page with the bearer token, interleaved page by page.
# Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, db test), node, curl.
# Usage: [ROUNDS=30] scripts/bench-dashboard.sh [completed] [failed] [waiting]
# (builds the release binary first; set CARGO_TARGET_DIR to keep it apart from a debug tree)
set -euo pipefail
cd "$(dirname "$0")/.."
COMPLETED=${1:-30000}
FAILED=${2:-20000}
WAITING=${3:-50000}
ROUNDS=${ROUNDS:-30}
cargo build --release --bin design-render
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/design-render
npm ci --prefix tests/node --no-audit --no-fund >/dev/null
TAG="benchdash$$"
TOKEN="bench-dashboard-token-0123456789"
PSQL="psql -q -t -A -X -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1"
STORE=$(mktemp -d)
WORKER=
cleanup() {
  [ -n "$WORKER" ] && kill "$WORKER" 2>/dev/null
  $PSQL -c "SET client_min_messages=warning; DROP SCHEMA IF EXISTS \"$TAG\" CASCADE" || true
  redis-cli -h 127.0.0.1 --scan --pattern "$TAG:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 del >/dev/null
  rm -rf "$STORE"
}
trap cleanup EXIT
TOTAL=$((COMPLETED + FAILED + WAITING))
echo "jobs: $COMPLETED completed, $FAILED failed, $WAITING waiting; rows: $TOTAL; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# A Prisma-style table with one row per job: completed rows with timings, failed rows, pending rows.
$PSQL -c "CREATE SCHEMA \"$TAG\"; SET search_path=\"$TAG\";
  CREATE TYPE \"DesignStatus\" AS ENUM ('PENDING','PROCESSING','COMPLETED','FAILED');
  CREATE TABLE \"Design\" (\"id\" TEXT PRIMARY KEY, \"status\" \"DesignStatus\" NOT NULL DEFAULT 'PENDING',
    \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, \"updatedAt\" TIMESTAMP(3) NOT NULL,
    \"tenantId\" TEXT, \"metadata\" JSONB, \"compositeTextureUrl\" TEXT, \"previewUrl\" TEXT, \"highResUrl\" TEXT,
    \"costTokens\" INTEGER NOT NULL DEFAULT 0, \"costCents\" INTEGER NOT NULL DEFAULT 0);
  INSERT INTO \"Design\" SELECT 'bench-d-'||i,
      (CASE WHEN i < $COMPLETED THEN 'COMPLETED' WHEN i < $COMPLETED + $FAILED THEN 'FAILED' ELSE 'PENDING' END)::\"DesignStatus\",
      now(), now() - make_interval(secs => i), 'bench-'||(i % 100),
      CASE WHEN i < $COMPLETED THEN jsonb_build_object('provider','openai','jobId',i::text,
        'timings', jsonb_build_object('totalMs', 800 + i % 700)) END,
      'file:///nowhere/c.png', 'file:///nowhere/p.png', 'file:///nowhere/h.png', 4270, 14
    FROM generate_series(0, $TOTAL - 1) i;
  ANALYZE \"Design\";" >/dev/null
node tests/node/bench.mjs fill "{\"queue\":\"$TAG\",\"prefix\":\"$TAG\",\"completed\":$COMPLETED,\"failed\":$FAILED,\"waiting\":$WAITING}"
env -i PATH="$PATH" REDIS_URL=redis://127.0.0.1:6379 QUEUE_NAME="$TAG" BULLMQ_PREFIX="$TAG" \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?schema=$TAG" STORAGE_DIR="$STORE" \
  ADMIN_ADDR=127.0.0.1:18767 DASHBOARD_TOKEN="$TOKEN" RUST_LOG=warn "$BIN" worker &
WORKER=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:18767/healthz && break; sleep 0.1; done
PAGES="/dashboard /dashboard/failed /dashboard/renders /dashboard/tenants /dashboard/workers"
OUT=$(mktemp)
for round in $(seq 0 "$ROUNDS"); do
  for page in $PAGES; do
    seconds=$(curl -sf -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18767$page")
    # Round 0 warms the connections and caches; it is not counted.
    [ "$round" -gt 0 ] && echo "$page $seconds" >> "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    page, seconds = line.split()
    times.setdefault(page, []).append(float(seconds) * 1000)
for page, ms in times.items():
    print(f"{page:22} median {statistics.median(ms):7.1f} ms  min {min(ms):7.1f}  max {max(ms):7.1f}  (n={len(ms)})")
PY
rm -f "$OUT"
