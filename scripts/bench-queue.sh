#!/usr/bin/env bash
# Fleet throughput on realistic jobs: jobs/s of one `design-render worker` against the spec's
# Node.js worker (BullMQ + sharp, benches/sharp/worker.mjs) on the same jobs, one machine.
# A job: a 1024² brick base and a 12% mask downloaded over HTTP, an OpenAI image edit answered at
# once with a 1024² image by a loopback mock, the composite, 2048² high-res, 512² preview,
# normal and roughness maps at 2048² as PNG on local storage (tmpfs), the Design row in
# PostgreSQL, the completed event on Redis.
# Kinds (KINDS, default "rust node"): `rust` with tracing and metrics off (no OTLP endpoint,
# ADMIN_ADDR=off); `rust-traced` with its admin server (metrics recorded) and every span exported
# over OTLP/HTTP to a collector stand-in (`tests/node/bench.mjs sink`), for the cost of
# observability; `node`. Each run prints the worker's CPU time per job (user + system of the
# whole process, from /proc, over the timed window; libvips' and the exporter's threads
# included) and its peak RSS. ROUNDS=n repeats the whole set n times, interleaved, for medians
# on a noisy machine. RAYON_NUM_THREADS is passed to the Rust worker when set.
# Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, db test), node.
# Usage: [KINDS="rust node"] [ROUNDS=1] scripts/bench-queue.sh [jobs-per-run] [concurrency…]
# (builds the release binary first; set CARGO_TARGET_DIR to keep it apart from a debug tree)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
shift || true
LEVELS=${*:-1 2 4}
cargo build --release --bin design-render --example bench_asset_server --example make_examples
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/design-render
echo "binary: $BIN, jobs per run: $N, concurrency: $LEVELS, load: $(cut -d' ' -f1-3 /proc/loadavg)"
npm ci --prefix tests/node --no-audit --no-fund >/dev/null
npm ci --prefix benches/sharp --no-audit --no-fund >/dev/null
WORK=$(mktemp -d)
# Assets go to tmpfs: the figure is about the workers, not about the host's disk.
STORE=$(mktemp -d -p /dev/shm)
"$TARGET/release/examples/make_examples" "$WORK" 1024
"$TARGET/release/examples/bench_asset_server" "$WORK" 18765 &
HTTP=$!
SINK=
trap 'kill $HTTP $SINK 2>/dev/null; rm -rf "$WORK" "$STORE"' EXIT
if [[ " ${KINDS:-} " == *" rust-traced "* ]]; then
  node tests/node/bench.mjs sink '{"port":18766}' > "$WORK/sink.json" &
  SINK=$!
fi
PG_URL="postgres://postgres@127.0.0.1:5432/test"
PSQL="psql -q -t -A -X -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1"
ASSETS=http://127.0.0.1:18765
OPTIONS='{"generateNormalMap":true,"generateRoughnessMap":true,"size":"2048x2048"}'

run() { # kind concurrency
  local kind=$1 conc=$2 tag="bench$$_${1//-/_}_$2"
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
      OPENAI_API_KEY=sk-bench OPENAI_BASE_URL="$ASSETS/v1" \
      ALLOW_PRIVATE_ASSET_HOSTS=127.0.0.1 WORKER_CONCURRENCY="$conc" \
      DEFAULT_TENANT_CONCURRENCY=2 RUST_LOG=error "$BIN" worker &
  else
    node benches/sharp/worker.mjs "{\"queue\":\"$tag\",\"prefix\":\"$tag\",\"concurrency\":$conc,\"databaseUrl\":\"$PG_URL\",\"schema\":\"$schema\",\"storageDir\":\"$STORE/$tag\",\"openaiBaseUrl\":\"$ASSETS/v1\"}" &
  fi
  pid=$!
  sleep 2 # let the worker connect before timing starts
  local cpu_before
  cpu_before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local result
  result=$(node tests/node/bench.mjs produce "{\"queue\":\"$tag\",\"prefix\":\"$tag\",\"count\":$N,\"baseUrl\":\"$ASSETS/base.png\",\"maskUrl\":\"$ASSETS/mask.png\",\"renderOptions\":$OPTIONS,\"designPrefix\":\"${tag}_\"}")
  awk -v before="$cpu_before" -v n="$N" -v hz="$(getconf CLK_TCK)" -v kind="$kind" -v conc="$conc" \
    '{ printf "%s concurrency=%s cpu per job: %.1f ms\n", kind, conc, ($14 + $15 - before) * 1e3 / hz / n }' \
    "/proc/$pid/stat"
  echo "$kind concurrency=$conc peak RSS: $(awk '/VmHWM/ {print $2 / 1024 " MB"}' "/proc/$pid/status")"
  kill -TERM $pid; wait $pid || true
  local done
  done=$($PSQL -c "SELECT count(*) FROM \"$schema\".\"Design\" WHERE \"status\" = 'COMPLETED'")
  echo "$kind concurrency=$conc completedRows=$done $result"
  if [ "$kind" = rust ] && [ "$conc" = 1 ]; then
    # Mean per-step times the pipeline recorded (ms). At concurrency 1 the rest of a job's
    # wall time is the per-job overhead: queue (fetch, lock, finish), tenant slot, both Design
    # row updates, event.
    local steps
    steps=$($PSQL -c "SELECT round(avg((t->>'downloadMs')::numeric), 1) || ' download, '
        || round(avg((t->>'decodeMs')::numeric), 1) || ' decode, '
        || round(avg((t->>'inpaintMs')::numeric), 1) || ' provider, '
        || round(avg((t->>'postprocessMs')::numeric), 1) || ' post-processing, '
        || round(avg((t->>'uploadMs')::numeric), 1) || ' storage; total '
        || round(avg((t->>'downloadMs')::numeric + (t->>'decodeMs')::numeric + (t->>'inpaintMs')::numeric
          + (t->>'postprocessMs')::numeric + (t->>'uploadMs')::numeric), 1)
      FROM (SELECT \"metadata\"->'timings' AS t FROM \"$schema\".\"Design\" WHERE \"status\" = 'COMPLETED') s")
    local seconds
    seconds=$(sed -E 's/.*"seconds":([0-9.]+).*/\1/' <<<"$result")
    echo "rust per job (ms): $steps; wall $(awk -v s="$seconds" -v n="$N" 'BEGIN { printf "%.1f", s * 1000 / n }')"
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
