#!/usr/bin/env python3
"""The query phase of wire_bench.py, again and again, against a Tally and a PostgreSQL that
already hold the same ledger (a `KEEP=1 benches/wire/run.sh …` run's directories, served
again): rounds alternate Tally, PostgreSQL, Tally, …, and the report gives each figure's median
over the rounds, so that a noisy machine's drift hits both servers alike.

  python3 benches/wire/rounds.py --tally 127.0.0.1:5433 --postgres 127.0.0.1:55432 --rounds 5

Keys: balances' accounts and contributions drawn with a fixed seed from Tally's tables (the same
sequence on both servers). See benches/wire/README.md.
"""

import argparse
import random
import statistics
import sys

import psycopg

import wire_bench as wb


def sample(conn, query, n, seed):
    cur = conn.cursor()
    cur.execute(query)
    values = sorted(r[0] for r in cur.fetchall())
    rng = random.Random(seed)
    return [rng.choice(values) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tally", required=True)
    ap.add_argument("--postgres", required=True)
    ap.add_argument("--pg-user", default="postgres")
    ap.add_argument("--pg-db", default="tally")
    ap.add_argument("--pg-schema", default="wire_bench")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()

    tinfo = wb.conninfo(args.tally, "tally", "tally")
    pinfo = wb.conninfo(args.postgres, args.pg_user, args.pg_db)
    setup = [f"SET search_path = {args.pg_schema}"]
    tally = psycopg.connect(tinfo, autocommit=True)
    pg = psycopg.connect(pinfo, autocommit=True)
    pg.execute(setup[0])
    n = args.warmup + args.reps
    keys = {"point": sample(tally, "SELECT account FROM balances", n, wb.DEFAULT_SEED + 1),
            "contribution": sample(tally, "SELECT contribution FROM contributions", n, wb.DEFAULT_SEED + 2)}
    got = {"Tally": [], "PostgreSQL": []}
    for r in range(args.rounds):
        for name, conn, info, pre in (("Tally", tally, tinfo, []), ("PostgreSQL", pg, pinfo, setup)):
            wb.log(f"round {r + 1}: {name} ...")
            queries, _ = wb.run_queries(conn, keys, args.warmup, args.reps, None)
            if args.concurrency > 0:
                queries["throughput"] = wb.throughput(info, pre, keys["point"], args.concurrency,
                                                      args.seconds, None)
            got[name].append(queries)

    def median(name, key, field):
        return statistics.median(q[key][field] for q in got[name])

    print(f"Medians of {args.rounds} alternating rounds; p50 / p99 in ms ({args.reps} runs after "
          f"{args.warmup} warm-up runs each), lookups/s from {args.concurrency} connections.\n")
    print("| what | Tally | PostgreSQL | Tally advantage |\n|---|---|---|---|")
    for key, label, _ in wb.QUERIES:
        t = [median("Tally", key, f) for f in ("p50_ms", "p99_ms")]
        p = [median("PostgreSQL", key, f) for f in ("p50_ms", "p99_ms")]
        print(f"| {label} | {t[0]:.3f} / {t[1]:.3f} | {p[0]:.3f} / {p[1]:.3f} | "
              f"{p[0] / t[0]:.2f}× / {p[1] / t[1]:.2f}× |")
    if args.concurrency > 0:
        t, p = median("Tally", "throughput", "qps"), median("PostgreSQL", "throughput", "qps")
        print(f"| balance lookups/s, {args.concurrency} connections | {t:,.0f} | {p:,.0f} | {t / p:.2f}× |")
    for name in got:
        spread = ", ".join(f"{q['point']['p50_ms']:.3f}" for q in got[name])
        print(f"\n{name}'s balance-lookup p50 per round: {spread}", file=sys.stderr)


if __name__ == "__main__":
    main()
