#!/usr/bin/env bash
# Queue throughput: jobs/s of `design-render worker` on 64x64 jobs (built-in provider) at
# concurrency 1, 8 and 32, against a Node BullMQ worker doing the same bookkeeping (payload,
# tenant lease, two Design row updates, event) without the image work; plus the Rust worker's
# per-job overhead of queue + slot + database + event at concurrency 1.
# `rust` runs with tracing and metrics off (no OTLP endpoint, ADMIN_ADDR=off). KINDS may also name
# `rust-traced`: the Rust worker with its admin server (metrics recorded) exporting every span
# over OTLP/HTTP to a local collector stand-in (`bench.mjs sink`), for the cost of observability.
# Each Rust run also prints the worker's CPU time per job (user + system, from /proc, over the
# timed window; the exporter's thread included, the collector's CPU not). ROUNDS=n repeats the
# whole set n times, interleaved, for medians on a noisy machine. RAYON_NUM_THREADS is passed to
# the worker when set (rayon's idle spinning after each tiny job is most of the CPU-time noise).
# Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, db test), node.
# Usage: [KINDS="rust node"] [ROUNDS=1] scripts/bench-queue.sh [jobs-per-run] [concurrency…]
# (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
shift || true
LEVELS=${*:-1 8 32}
cargo build --release --bin design-render --example bench_asset_server
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/design-render
echo "binary: $BIN, jobs per run: $N, concurrency: $LEVELS, load: $(cut -d' ' -f1-3 /proc/loadavg)"
npm ci --prefix tests/node --no-audit --no-fund >/dev/null
WORK=$(mktemp -d)
# Assets go to tmpfs: the figure is about the worker, not about the host's disk (on this VM's
# ext4, inode allocation for the many small files cost more CPU than the whole job).
STORE=$(mktemp -d -p /dev/shm)
python3 - "$WORK/base.png" <<'PY'
import struct, sys, zlib
w = h = 64
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 4, y * 4, 128, 255)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
"$TARGET/release/examples/bench_asset_server" "$WORK/base.png" 18765 &
HTTP=$!
SINK=
trap 'kill $HTTP $SINK 2>/dev/null; rm -rf "$WORK" "$STORE"' EXIT
if [[ " ${KINDS:-} " == *" rust-traced "* ]]; then
  node tests/node/bench.mjs sink '{"port":18766}' > "$WORK/sink.json" &
  SINK=$!
fi
PG_URL="postgres://postgres@127.0.0.1:5432/test"
PSQL="psql -q -t -A -X -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1"

run() { # kind concurrency
  local kind=$1 conc=$2 tag="bench$$_$1_$2"
  local schema="$tag"
  # A Prisma-style table with the render columns already present (both workers write them).
  $PSQL -c "CREATE SCHEMA \"$schema\"; SET search_path=\"$schema\";
    CREATE TYPE \"DesignStatus\" AS ENUM ('PENDING','PROCESSING','COMPLETED','FAILED');
    CREATE TABLE \"Design\" (\"id\" TEXT PRIMARY KEY, \"status\" \"DesignStatus\" NOT NULL DEFAULT 'PENDING',
      \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, \"updatedAt\" TIMESTAMP(3) NOT NULL,
      \"tenantId\" TEXT, \"metadata\" JSONB, \"compositeTextureUrl\" TEXT, \"previewUrl\" TEXT, \"highResUrl\" TEXT,
      \"costTokens\" INTEGER NOT NULL DEFAULT 0, \"costCents\" INTEGER NOT NULL DEFAULT 0);
    INSERT INTO \"Design\" (\"id\",\"tenantId\",\"updatedAt\") SELECT '${tag}_'||i, 'bench-'||(i % 1000), now() FROM generate_series(0,$N-1) i;" >/dev/null
  local pid
  local observed=(ADMIN_ADDR=off)
  if [ "$kind" = rust-traced ]; then
    # Every span exported (the default sampler), with a queue large enough that none is
    # dropped, and metrics recorded for the admin server.
    observed=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:18766 OTEL_BSP_MAX_QUEUE_SIZE=65536 ADMIN_ADDR=127.0.0.1:0)
  fi
  if [ "$kind" != node ]; then
    env -i PATH="$PATH" "${observed[@]}" ${RAYON_NUM_THREADS:+RAYON_NUM_THREADS=$RAYON_NUM_THREADS} REDIS_URL=redis://127.0.0.1:6379 QUEUE_NAME="$tag" BULLMQ_PREFIX="$tag" \
      DATABASE_URL="$PG_URL?schema=$schema" STORAGE_DIR="$STORE/$tag" \
      ALLOW_PRIVATE_ASSET_HOSTS=127.0.0.1 PREVIEW_SIZE=64 WORKER_CONCURRENCY="$conc" \
      DEFAULT_TENANT_CONCURRENCY=2 RUST_LOG=error "$BIN" worker &
  else
    node tests/node/bench.mjs worker "{\"queue\":\"$tag\",\"prefix\":\"$tag\",\"concurrency\":$conc,\"databaseUrl\":\"$PG_URL\",\"schema\":\"$schema\"}" &
  fi
  pid=$!
  sleep 2 # let the worker connect before timing starts
  local cpu_before=0
  if [ "$kind" != node ]; then cpu_before=$(awk '{print $14 + $15}' "/proc/$pid/stat"); fi
  local result
  result=$(node tests/node/bench.mjs produce "{\"queue\":\"$tag\",\"prefix\":\"$tag\",\"count\":$N,\"baseUrl\":\"http://127.0.0.1:18765/base.png\",\"designPrefix\":\"${tag}_\"}")
  if [ "$kind" != node ]; then
    awk -v before="$cpu_before" -v n="$N" -v hz="$(getconf CLK_TCK)" -v kind="$kind" -v conc="$conc" \
      '{ printf "%s concurrency=%s cpu per job: %.1f us\n", kind, conc, ($14 + $15 - before) * 1e6 / hz / n }' \
      "/proc/$pid/stat"
  fi
  kill -TERM $pid; wait $pid || true
  local done
  done=$($PSQL -c "SELECT count(*) FROM \"$schema\".\"Design\" WHERE \"status\" = 'COMPLETED'")
  echo "$kind concurrency=$conc completedRows=$done $result"
  if [ "$kind" = rust ] && [ "$conc" = 1 ]; then
    # Mean per-step times the pipeline recorded (ms): the image work is download, decode, fill,
    # post-processing and storage. At concurrency 1 the rest of a job's wall time is the
    # per-job overhead: queue (fetch, lock, finish), tenant slot, both Design row updates, event.
    local image
    image=$($PSQL -c "SELECT round(avg((t->>'downloadMs')::numeric + (t->>'decodeMs')::numeric
        + (t->>'inpaintMs')::numeric + (t->>'postprocessMs')::numeric + (t->>'uploadMs')::numeric), 3)
      FROM (SELECT \"metadata\"->'timings' AS t FROM \"$schema\".\"Design\" WHERE \"status\" = 'COMPLETED') s")
    local seconds
    seconds=$(sed -E 's/.*"seconds":([0-9.]+).*/\1/' <<<"$result")
    awk -v s="$seconds" -v n="$N" -v img="$image" 'BEGIN {
      wall = s * 1000 / n;
      printf "rust per job (ms): wall %.3f, image work %.3f, overhead %.3f\n", wall, img, wall - img }'
  fi
  rm -rf "${STORE:?}/$tag"
  $PSQL -c "SET client_min_messages=warning; DROP SCHEMA \"$schema\" CASCADE"
  redis-cli -h 127.0.0.1 --scan --pattern "$tag:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
}

for round in $(seq "${ROUNDS:-1}"); do
  for c in $LEVELS; do
    for kind in ${KINDS:-rust node}; do run "$kind" "$c"; done
  done
done
if [ -n "$SINK" ]; then
  kill -TERM "$SINK"; wait "$SINK" || true
  echo "collector stand-in received: $(cat "$WORK/sink.json")"
fi
