#!/usr/bin/env python3
"""The read queries of wire_bench.py driven by pgbench (PostgreSQL's own C client, libpq)
instead of psycopg, against a Tally and a PostgreSQL that already hold the same ledger (a
`KEEP=1 benches/wire/run.sh …` run's directories, served again). A C client adds a few
microseconds per round trip where Python adds tens, so the servers' own differences show.

  python3 benches/wire/pgbench_rounds.py --tally 127.0.0.1:5433 --postgres 127.0.0.1:55432

For each query and protocol mode (`-M prepared`: Parse once, then Bind/Execute; `extended`:
Parse, Bind, Execute every time, as libpq's PQexecParams and most drivers' unnamed statements;
`simple`: one Query message, as psql), rounds alternate Tally, PostgreSQL, Tally, …; each run is
one connection for `--seconds`, every transaction's latency logged (`pgbench --log`); the report
gives the median over the rounds of each run's p50 and p99. Keyed lookups use `--keys` scripts,
one fixed key each (drawn with a fixed seed from Tally's tables, the same on both servers),
which pgbench picks at random per transaction: pgbench's variables are numbers, and a key
built from one in SQL would no longer be a plain `key = $1` lookup. Throughput: the balance
lookup from `--concurrency` connections (`-c 16 -j 2`) for `--seconds`, transactions/s.
"""

import argparse
import glob
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

import psycopg

import wire_bench as wb

QUERIES = [
    ("point", "SELECT earned, settled, pending FROM balances WHERE account = '{}'", "account", "balances"),
    ("contribution", "SELECT datanet, contributor, earned FROM contributions WHERE contribution = '{}'",
     "contribution", "contributions"),
    ("top100", wb.Q_TOP, None, None),
    ("datanets", wb.Q_DATANETS, None, None),
]
MODES = ["prepared", "extended", "simple"]


def pgbench_binary():
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not candidates:
        sys.exit("pgbench not found (apt-get install postgresql-contrib, or put it on PATH)")
    return candidates[-1]


def scripts(dirname, name, query, keys):
    """The script files of one query: one per key, or one."""
    texts = [query.format(k.replace("'", "''")) for k in keys] if keys else [query]
    paths = []
    for i, text in enumerate(texts):
        path = os.path.join(dirname, f"{name}-{i}.sql")
        with open(path, "w") as f:
            f.write(text + ";\n")
        paths.append(path)
    return paths


def run(pgbench, target, env, files, mode, clients, seconds, logdir):
    """One pgbench run: (tps, [latency µs of every transaction]) ."""
    for old in glob.glob(os.path.join(logdir, "pgbench_log*")):
        os.remove(old)
    args = [pgbench, "-h", target["host"], "-p", str(target["port"]), "-U", target["user"], "-n",
            "-M", mode, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds)]
    for f in files:
        args += ["-f", f]
    if clients == 1:
        args += ["--log", "--log-prefix", os.path.join(logdir, "pgbench_log")]
    args.append(target["db"])
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pgbench failed ({' '.join(args)}):\n{out.stdout}\n{out.stderr}")
    tps = next(float(l.split()[2]) for l in out.stdout.splitlines() if l.startswith("tps ="))
    latencies = []
    for path in glob.glob(os.path.join(logdir, "pgbench_log*")):
        with open(path) as f:
            latencies += [int(line.split()[2]) for line in f]
    done = next(int(l.split()[-1].split("/")[0]) for l in out.stdout.splitlines()
                if l.startswith("number of transactions actually processed"))
    if clients == 1 and len(latencies) != done:
        sys.exit(f"pgbench logged {len(latencies)} of {done} transactions ({' '.join(args)})")
    return tps, latencies


def nearest_rank(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tally", required=True, help="HOST:PORT")
    ap.add_argument("--postgres", required=True, help="HOST:PORT")
    ap.add_argument("--pg-user", default="postgres")
    ap.add_argument("--pg-db", default="tally")
    ap.add_argument("--pg-schema", default="wire_bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=100, help="scripts (keys) per keyed lookup, at most 128")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args()
    if not 1 <= args.keys <= 128:
        sys.exit("--keys must be 1..128 (pgbench takes at most 128 scripts)")
    pgbench = pgbench_binary()

    def target(addr, user, db):
        host, port = addr.rsplit(":", 1)
        return {"host": host, "port": int(port), "user": user, "db": db}

    targets = [("Tally", target(args.tally, "tally", "tally"), dict(os.environ)),
               ("PostgreSQL", target(args.postgres, args.pg_user, args.pg_db),
                dict(os.environ, PGOPTIONS=f"-c search_path={args.pg_schema}"))]
    tally = psycopg.connect(wb.conninfo(args.tally, "tally", "tally"), autocommit=True)
    work = tempfile.mkdtemp(prefix="pgbench_rounds.")
    files = {}
    for name, query, column, table in QUERIES:
        keys = None
        if column:
            values = sorted(r[0] for r in tally.execute(f"SELECT {column} FROM {table}").fetchall())
            rng = random.Random(wb.DEFAULT_SEED + len(files) + 1)
            keys = [rng.choice(values) for _ in range(args.keys)]
        files[name] = scripts(work, name, query, keys)
    tally.close()

    modes = [m for m in args.modes.split(",") if m]
    got = {}  # (query, mode, server) -> [(p50, p99, tps)]
    for r in range(args.rounds):
        for name, _, _, _ in QUERIES:
            for mode in modes:
                for server, t, env in targets:
                    tps, lat = run(pgbench, t, env, files[name], mode, 1, args.seconds, work)
                    got.setdefault((name, mode, server), []).append(
                        (nearest_rank(lat, 0.5), nearest_rank(lat, 0.99), tps))
                    wb.log(f"round {r + 1}: {name} {mode} {server}: p50 {nearest_rank(lat, 0.5)} µs, {tps:.0f} tps")
        if args.concurrency > 0:
            for server, t, env in targets:
                tps, _ = run(pgbench, t, env, files["point"], "prepared", args.concurrency, args.seconds, work)
                got.setdefault(("throughput", "prepared", server), []).append((0, 0, tps))
                wb.log(f"round {r + 1}: throughput {server}: {tps:.0f} tps")
    shutil.rmtree(work)

    med = lambda xs: statistics.median(xs)
    lines = [f"pgbench ({pgbench}), medians of {args.rounds} rounds, {args.seconds} s per run; "
             "p50 / p99 in ms, one connection",
             "", "| query | mode | Tally | PostgreSQL | Tally ÷ PostgreSQL (p50) |", "|---|---|---|---|---|"]
    for name, _, _, _ in QUERIES:
        for mode in modes:
            t = got[(name, mode, "Tally")]
            p = got[(name, mode, "PostgreSQL")]
            tp50, tp99 = med([x[0] for x in t]), med([x[1] for x in t])
            pp50, pp99 = med([x[0] for x in p]), med([x[1] for x in p])
            lines.append(f"| {name} | {mode} | {tp50 / 1000:.3f} / {tp99 / 1000:.3f} | "
                         f"{pp50 / 1000:.3f} / {pp99 / 1000:.3f} | {tp50 / pp50:.2f} |")
    if args.concurrency > 0:
        t = med([x[2] for x in got[("throughput", "prepared", "Tally")]])
        p = med([x[2] for x in got[("throughput", "prepared", "PostgreSQL")]])
        lines.append(f"| balance lookups/s, {args.concurrency} connections | prepared | {t:,.0f} | {p:,.0f} | "
                     f"{t / p:.2f} (throughput ratio) |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
