#!/usr/bin/env bash
# The replication soak: rounds of faults (leader killed, follower killed, leader paused, leader
# or follower cut off by a network partition, leader killed during a COPY) under two concurrent
# writers on fresh 3-node clusters, each round checked by the history checker.
#   tests/soak.sh [MINUTES]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_SOAK_SECS=$(( ${1:-30} * 60 )) cargo test -p tally-tools --test e2e soak -- --ignored --nocapture
