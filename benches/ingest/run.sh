#!/usr/bin/env bash
# Streaming ingest (Flight, attributions as text and as Arrow lists) vs COPY on the same rows,
# each into a fresh `tally serve`, one after the other, several rounds; prints each run's JSON
# line (docs/benchmarks.md).
#   TALLY_BIN=target/release/tally benches/ingest/run.sh [--inferences N] [--chunk N]
# ROUNDS (3) rounds; BENCH_DIR on a real disk (default: a new directory under /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
TALLY_BIN=${TALLY_BIN:?set TALLY_BIN, e.g. target/release/tally}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/tally-ingest-bench.XXXXXX)}
PG_PORT=${PG_PORT:-55433}
FLIGHT_PORT=${FLIGHT_PORT:-55434}
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$BENCH_DIR"; }
trap cleanup EXIT
for round in $(seq "${ROUNDS:-3}"); do
  for mode in copy flight-text flight-list; do
    rm -rf "$BENCH_DIR/data"
    "$TALLY_BIN" serve --data "$BENCH_DIR/data" --listen "127.0.0.1:$PG_PORT" \
      --ingest "127.0.0.1:$FLIGHT_PORT" >"$BENCH_DIR/serve.log" 2>&1 &
    PID=$!
    until grep -q "tally serving" "$BENCH_DIR/serve.log" 2>/dev/null; do sleep 0.2; done
    case $mode in
      copy) how=(--mode copy) ;;
      flight-*) how=(--mode flight --attributions "${mode#flight-}") ;;
    esac
    python3 benches/ingest/ingest_bench.py "${how[@]}" --pg "$PG_PORT" --flight "$FLIGHT_PORT" "$@"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  done
done
