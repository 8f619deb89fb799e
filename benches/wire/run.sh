#!/usr/bin/env bash
# Tally vs PostgreSQL over the wire, on throwaway servers:
#   - a fresh PostgreSQL cluster (initdb; durable defaults: fsync on, synchronous_commit on) on
#     127.0.0.1:$PG_PORT (55432), data in $BENCH_DIR/pg;
#   - if TALLY_BIN is set, `tally serve` on an empty $BENCH_DIR/tally, 127.0.0.1:$TALLY_PORT (5433);
#   - benches/wire/wire_bench.py against both (extra arguments are passed on to it);
#   - both stopped and $BENCH_DIR removed at the end (KEEP=1 keeps it).
#
#   apt-get install -y postgresql && pip install 'psycopg[binary]'
#   TALLY_BIN=target/release/tally benches/wire/run.sh --inferences 1000000 --out /tmp/wire.md
#   TALLY_ARGS=--no-direct-reads …   # extra `tally serve` options (A/B of the read paths)
#
# BENCH_DIR defaults to a new directory under /var/tmp: keep it on a real disk (not tmpfs), the
# same one for both servers, or durability costs nothing and the comparison means nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_PORT=${PG_PORT:-55432}
TALLY_PORT=${TALLY_PORT:-5433}
TALLY_BIN=${TALLY_BIN:-}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/tally-wire-bench.XXXXXX)}
mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    PG_BIN=${PG_BIN:-$(dirname "$(command -v initdb)")}
fi
[[ -x $PG_BIN/initdb ]] || { echo "no initdb (apt-get install -y postgresql, or set PG_BIN)" >&2; exit 1; }
python3 -c 'import psycopg' 2>/dev/null || { echo "pip install 'psycopg[binary]'" >&2; exit 1; }

# PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user.
if [[ $(id -u) == 0 ]]; then
    as_pg() { runuser -u postgres -- "$@"; }
    PG_USER=postgres
else
    as_pg() { "$@"; }
    PG_USER=$(id -un)
fi

PGDATA=$BENCH_DIR/pg
TALLY_PID=
cleanup() {
    set +e
    if [[ -n $TALLY_PID ]]; then
        kill "$TALLY_PID" 2>/dev/null && wait "$TALLY_PID" 2>/dev/null
    fi
    [[ -f $PGDATA/postmaster.pid ]] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $BENCH_DIR" >&2; else rm -rf "$BENCH_DIR"; fi
}
trap cleanup EXIT

port_busy() { python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1', $1)) == 0 else 1)"; }
port_busy "$PG_PORT" && { echo "127.0.0.1:$PG_PORT is already in use: set PG_PORT" >&2; exit 1; }
[[ -n $TALLY_BIN ]] && port_busy "$TALLY_PORT" && { echo "127.0.0.1:$TALLY_PORT is already in use: set TALLY_PORT" >&2; exit 1; }

mkdir -p "$PGDATA" "$BENCH_DIR/pg-run"
[[ $(id -u) == 0 ]] && chown postgres: "$PGDATA" "$BENCH_DIR/pg-run"
# C collation: ids compare bytewise, as in Tally. Everything else is initdb's default
# (fsync, synchronous_commit, full_page_writes on; shared_buffers 128MB; max_wal_size 1GB).
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --locale=C >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$BENCH_DIR/pg-run/pg.log" -w \
    -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$BENCH_DIR/pg-run ${PG_OPTS:-}" \
    start >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" tally

TARGETS=(--postgres "127.0.0.1:$PG_PORT" --pg-user "$PG_USER")
if [[ -n $TALLY_BIN ]]; then
    # shellcheck disable=SC2086 # TALLY_ARGS: extra `tally serve` options, split on spaces
    "$TALLY_BIN" serve --data "$BENCH_DIR/tally" --listen "127.0.0.1:$TALLY_PORT" ${TALLY_ARGS:-} >"$BENCH_DIR/tally.log" 2>&1 &
    TALLY_PID=$!
    for _ in $(seq 1 120); do
        kill -0 "$TALLY_PID" 2>/dev/null || { cat "$BENCH_DIR/tally.log" >&2; echo "tally serve exited" >&2; exit 1; }
        if python3 -c "import psycopg,sys; psycopg.connect('host=127.0.0.1 port=$TALLY_PORT dbname=tally user=tally', connect_timeout=2).close()" 2>/dev/null; then
            break
        fi
        sleep 0.5
    done
    TARGETS=(--tally "127.0.0.1:$TALLY_PORT" "${TARGETS[@]}")
fi

python3 benches/wire/wire_bench.py "${TARGETS[@]}" "$@"
