#!/usr/bin/env bash
# Runs every fuzz target (the `fuzz_*` tests) long, in a release build: the CI run gives each a
# few seconds. Usage: tests/fuzz.sh [CASES]   (default 100000 cases per target; the wire
# target, one connection per case, runs CASES/100). A failure prints the smallest input
# proptest found: turn it into a regression test next to the target.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
run() { TALLY_FUZZ_CASES="$2" cargo test --release --locked -p "$1" "${@:3}" -- fuzz_ --nocapture; }
run tally-engine "$cases" --test ledger
run tally-storage "$cases" --test storage
run tally-query "$cases" --lib
run tally-tools "$((cases / 100))" --test e2e
