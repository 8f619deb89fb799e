#!/usr/bin/env bash
# benches/settle/run.sh: Tally's CPU batch settlement against DuckDB's SQL settlement of the same
# ledger (docs/benchmarks.md, "Batch settlement: CPU, GPU, DuckDB").
#
#   benches/settle/run.sh [--inferences N] [--dir DIR] [--runs N]
#
# 1. `cargo bench -p tally-benches --bench settle_figures -- --parts settle,gpu,export`: builds
#    the ledger (Shape::bench, seed 20261125, 8 entries per inference, all in the open epoch),
#    times CpuSettler (and the GPU when one can be opened), checks the flat arrays against the
#    ledger's own credits, and exports the ledger and Tally's credits as CSV to DIR.
# 2. benches/settle/duckdb_settle.py: loads the CSV into DuckDB (in memory), settles it in SQL
#    as settlement.md says, checks every (account, role) credit against Tally's, and prints the
#    times and the ratio to Tally's CPU settle.
#
# Defaults: 1,000,000 inferences (8 M entries), DIR /tmp/tally-settle, 5 runs of each DuckDB
# step (11 of Tally's). --inferences 12500000 gives 100 M entries (about 7 GB for Tally, 3 GB of
# CSV, DuckDB's load a few minutes). Needs `pip install duckdb`. Exit status 1 on a mismatch.
set -euo pipefail
cd "$(dirname "$0")/../.."
INFERENCES=1000000
DIR=/tmp/tally-settle
RUNS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --inferences) INFERENCES=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: $0 [--inferences N] [--dir DIR] [--runs N]"; exit 2 ;;
  esac
done
rm -rf "$DIR"
cargo bench -p tally-benches --bench settle_figures -- \
  --inferences "$INFERENCES" --parts settle,gpu,export --export "$DIR"
python3 benches/settle/duckdb_settle.py --dir "$DIR" --runs "$RUNS"
