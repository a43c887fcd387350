#!/usr/bin/env bash
# Post-processing of one 2048² render, design-render against libvips (sharp) on the same input
# files, interleaved: each round runs `design-render bench-postprocess` then `node bench.js`,
# each timing ITERATIONS renders after a warm-up; the summary gives min / median / max of every
# iteration of each side, the ratio of the medians, and each output's PNG size on both sides
# (sharp with its default settings: zlib level 6, no filtering), both for sharp's own outputs and
# for design-render's outputs encoded by sharp (the two encoders on the same pixels: the maps'
# pixels differ between the two pipelines, as sharp's Sobel works on 8-bit luminance).
# Usage: [ITERATIONS=5] scripts/bench-postprocess.sh [rounds]
# (builds the release binary with the `eval` feature first; set CARGO_TARGET_DIR to keep it
# apart from a debug tree)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
ITERATIONS=${ITERATIONS:-5}
cargo build --release --features eval --bin design-render
BIN=${CARGO_TARGET_DIR:-target}/release/design-render
npm ci --prefix benches/sharp --no-audit --no-fund >/dev/null
echo "rounds: $ROUNDS of $ITERATIONS iterations per side, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  "$BIN" bench-postprocess --iterations "$ITERATIONS" --dir target/bench-inputs >> "$LINES"
  node benches/sharp/bench.js --json --iterations "$ITERATIONS" >> "$LINES"
  echo "round $round done, load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$LINES" <<'PY'
import json, statistics, sys
sides = {}
for line in open(sys.argv[1]):
    record = json.loads(line)
    side = sides.setdefault(record["side"], dict(record, ms=[]))
    side["ms"] += record["ms"]
ours, theirs = sides["design-render"], sides["sharp"]
for name, side in (("design-render", ours), ("libvips/sharp", theirs)):
    ms = side["ms"]
    print(f"{name:14} all steps: median {statistics.median(ms):7.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)}, threads {side['threads']})")
print(f"ratio of medians: {statistics.median(ours['ms']) / statistics.median(theirs['ms']):.3f}")
print(f"{'output':10} {'design-render':>14} {'sharp, its pixels':>18} {'ratio':>6} {'sharp, our pixels':>18} {'ratio':>6}")
for name, size in theirs["bytes"].items():
    mine, same = ours["bytes"][name], theirs["reencoded"][name]
    print(f"{name:10} {mine:>14,} {size:>18,} {mine / size:6.3f} {same:>18,} {mine / same:6.3f}")
PY
