#!/usr/bin/env bash
# Queue throughput: jobs/s of `design-render worker` on 64x64 jobs (built-in provider) at
# concurrency 1, 8 and 32, and of a Node BullMQ worker doing the bookkeeping only (lease + event).
# Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, db test), node.
# Usage: scripts/bench-queue.sh [jobs-per-run]   (prefers target/release/design-render)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
BIN=target/release/design-render
[ -x "$BIN" ] || BIN=target/debug/design-render
echo "binary: $BIN, jobs per run: $N"
npm ci --prefix tests/node --no-audit --no-fund >/dev/null
WORK=$(mktemp -d)
python3 - "$WORK/base.png" <<'PY'
import struct, sys, zlib
w = h = 64
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 4, y * 4, 128, 255)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
python3 -m http.server 18765 --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
HTTP=$!
trap 'kill $HTTP 2>/dev/null; rm -rf "$WORK"' EXIT
PSQL="psql -q -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1"

run() { # label concurrency worker-kind
  local label=$1 conc=$2 kind=$3 tag="bench$$_$1"
  local schema="$tag"
  $PSQL -c "CREATE SCHEMA \"$schema\"; SET search_path=\"$schema\";
    CREATE TYPE \"DesignStatus\" AS ENUM ('PENDING','PROCESSING','COMPLETED','FAILED');
    CREATE TABLE \"Design\" (\"id\" TEXT PRIMARY KEY, \"status\" \"DesignStatus\" NOT NULL DEFAULT 'PENDING',
      \"updatedAt\" TIMESTAMP(3) NOT NULL, \"tenantId\" TEXT);
    INSERT INTO \"Design\" (\"id\",\"tenantId\",\"updatedAt\") SELECT '${tag}_'||i, 'bench-'||(i % 1000), now() FROM generate_series(0,$N-1) i;"
  local pid
  if [ "$kind" = rust ]; then
    env -i PATH="$PATH" REDIS_URL=redis://127.0.0.1:6379 QUEUE_NAME="$tag" BULLMQ_PREFIX="$tag" \
      DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?schema=$schema" STORAGE_DIR="$WORK/storage" \
      ALLOW_PRIVATE_ASSET_HOSTS=127.0.0.1 PREVIEW_SIZE=64 WORKER_CONCURRENCY="$conc" \
      DEFAULT_TENANT_CONCURRENCY=2 RUST_LOG=error "$BIN" worker &
  else
    node tests/node/bench.mjs worker "{\"queue\":\"$tag\",\"prefix\":\"$tag\",\"concurrency\":$conc}" &
  fi
  pid=$!
  sleep 2 # let the worker connect before timing starts
  local result
  result=$(node tests/node/bench.mjs produce "{\"queue\":\"$tag\",\"prefix\":\"$tag\",\"count\":$N,\"baseUrl\":\"http://127.0.0.1:18765/base.png\",\"designPrefix\":\"${tag}_\"}")
  kill -TERM $pid; wait $pid || true
  echo "$label concurrency=$conc $result"
  $PSQL -c "DROP SCHEMA \"$schema\" CASCADE"
  redis-cli -h 127.0.0.1 --scan --pattern "$tag:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
}

for c in 1 8 32; do run "rust-c$c" "$c" rust; done
for c in 1 8 32; do run "node-c$c" "$c" node; done
