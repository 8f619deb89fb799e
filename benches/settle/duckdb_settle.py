#!/usr/bin/env python3
"""DuckDB settles the ledger that `settle_figures --export DIR` wrote, in SQL, exactly as
/work/shared/spec/settlement.md (§2-§4) says, and its per-(account, role) credits are checked
against Tally's to the unit.

Input (DIR, CSV with a header): inferences(inference, fee, model, protocol_bps, model_bps,
base_bps: the policy in force for it), entries(entry, inference, contribution, weight: entry
numbers in log order), contributions(contribution, name, contributor, revoked), models(model,
name, owner, base_owner: empty for a base model), tally_rewards(account, role, amount: the
ledger's open-epoch credits), tally_figures.txt (Tally's CPU batch-settle median).

Timed apart: the load (CSV into DuckDB tables, in memory) and the settlement query (from the
loaded tables to the credits per account and role). Medians of --runs runs each.

    python3 benches/settle/duckdb_settle.py --dir /tmp/tally-settle [--runs 5] [--threads N]
"""

import argparse
import csv
import os
import statistics
import sys
import time

import duckdb

LOAD = {
    "inferences": {"inference": "UINTEGER", "fee": "UBIGINT", "model": "UINTEGER",
                   "protocol_bps": "USMALLINT", "model_bps": "USMALLINT", "base_bps": "USMALLINT"},
    "entries": {"entry": "UINTEGER", "inference": "UINTEGER", "contribution": "UINTEGER",
                "weight": "UINTEGER"},
    "contributions": {"contribution": "UINTEGER", "name": "VARCHAR", "contributor": "VARCHAR",
                      "revoked": "UTINYINT"},
    "models": {"model": "UINTEGER", "name": "VARCHAR", "owner": "VARCHAR", "base_owner": "VARCHAR"},
}

# settlement.md, in SQL. `//` is integer division (rounds down on these non-negative integers);
# DuckDB's `/` would be a double. Products stay below 2^63: fee <= 2^40, bps <= 10^4,
# pool <= 2^40 and weight <= 10^6 < 2^20. The CTEs read more than once are MATERIALIZED, so
# each is computed once whatever the planner picks (on Machine A, DuckDB 2.0's own choice was as
# fast: 1.88 against 1.93 s, medians of 5 at 8 M entries).
SETTLE = """
WITH split AS MATERIALIZED (                     -- §2: the fee split, per inference
    SELECT i.inference, i.fee, m.owner, m.base_owner,
           i.fee * i.protocol_bps // 10000 AS protocol,
           CASE WHEN m.base_owner IS NULL THEN i.fee * (i.model_bps + i.base_bps) // 10000
                ELSE i.fee * i.model_bps // 10000 END AS model_part,
           CASE WHEN m.base_owner IS NULL THEN 0
                ELSE i.fee * i.base_bps // 10000 END AS base_part
    FROM inferences i JOIN models m ON m.model = i.model
),
pools AS (
    SELECT inference, fee - protocol - model_part - base_part AS pool FROM split
),
valid AS (                                       -- §3: weight > 0, contribution not revoked
    SELECT e.entry, e.inference, e.weight, c.contributor
    FROM entries e JOIN contributions c ON c.contribution = e.contribution
    WHERE e.weight > 0 AND c.revoked = 0
),
w AS MATERIALIZED (                              -- W, and the entry that takes the dust:
    SELECT inference,                            -- the largest weight, the first in the
           sum(weight) AS total,                 -- inference's order on a tie (weight*2^32 -
           arg_max(entry, weight::UBIGINT * 4294967296 - entry) AS top   -- entry ranks so)
    FROM valid GROUP BY inference
),
shares AS MATERIALIZED (
    SELECT v.inference, v.entry, v.contributor, p.pool,
           p.pool * v.weight // w.total AS share
    FROM valid v JOIN w ON w.inference = v.inference JOIN pools p ON p.inference = v.inference
),
dust AS (
    SELECT inference, any_value(pool) - sum(share) AS dust FROM shares GROUP BY inference
),
credits AS (                                     -- §4: every credit with its role
    SELECT '$protocol' AS account, 'protocol' AS role, protocol AS amount FROM split
    UNION ALL SELECT owner, 'model', model_part FROM split
    UNION ALL SELECT base_owner, 'base_model', base_part FROM split WHERE base_owner IS NOT NULL
    UNION ALL                                    -- a pool with no valid entry: to $protocol
    SELECT '$protocol', 'protocol', p.pool FROM pools p ANTI JOIN w ON w.inference = p.inference
    UNION ALL SELECT contributor, 'contributor', share FROM shares
    UNION ALL                                    -- the dust, to the top entry's contributor
    SELECT s.contributor, 'contributor', d.dust
    FROM w JOIN dust d ON d.inference = w.inference JOIN shares s ON s.entry = w.top
)
SELECT account, role, sum(amount)::UBIGINT AS amount
FROM credits GROUP BY account, role HAVING sum(amount) > 0
"""


def load(con, directory):
    for table, columns in LOAD.items():
        con.execute(f"DROP TABLE IF EXISTS {table}")
        path = os.path.join(directory, f"{table}.csv")
        con.execute(
            f"CREATE TABLE {table} AS SELECT * FROM read_csv(?, header = true, columns = ?)",
            [path, columns],
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/tmp/tally-settle")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    con = duckdb.connect()  # in memory
    con.execute(f"SET threads = {args.threads}")
    print(f"DuckDB {duckdb.__version__}, {args.threads} threads, in memory; data in {args.dir}")

    loads = []
    for _ in range(args.runs):
        started = time.perf_counter()
        load(con, args.dir)
        loads.append(time.perf_counter() - started)
    (inferences,) = con.execute("SELECT count(*) FROM inferences").fetchone()
    (entries,) = con.execute("SELECT count(*) FROM entries").fetchone()

    settles, rows = [], None
    for _ in range(args.runs):
        started = time.perf_counter()
        rows = con.execute(SETTLE).fetchall()
        settles.append(time.perf_counter() - started)

    # The cross-check: every (account, role) credit equal to Tally's, to the unit.
    duck = {(a, r): int(v) for a, r, v in rows}
    with open(os.path.join(args.dir, "tally_rewards.csv"), newline="") as f:
        tally = {(row["account"], row["role"]): int(row["amount"]) for row in csv.DictReader(f)}
    mismatched = sorted(k for k in duck.keys() | tally.keys() if duck.get(k) != tally.get(k))

    figures = {}
    with open(os.path.join(args.dir, "tally_figures.txt")) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            figures[key] = float(value)

    fmt = lambda xs: "/".join(f"{x:.2f}" for x in xs)
    load_s, settle_s = statistics.median(loads), statistics.median(settles)
    print(f"ledger: {inferences:,} inferences, {entries:,} entries")
    print(f"load (CSV -> tables): median {load_s:.2f} s (runs {fmt(loads)})")
    print(f"settle (the SQL query): median {settle_s:.2f} s (runs {fmt(settles)})")
    print(f"load + settle: {load_s + settle_s:.2f} s")
    print(f"cross-check: {len(duck)} (account, role) credits from DuckDB, {len(tally)} from Tally,"
          f" {len(mismatched)} mismatches")
    for key in mismatched[:10]:
        print(f"  {key}: DuckDB {duck.get(key)}, Tally {tally.get(key)}")
    if "cpu_settle_ms" in figures:
        cpu = figures["cpu_settle_ms"] / 1e3
        print(f"Tally CPU batch settle (BatchSettler::settle, median): {cpu * 1e3:.1f} ms")
        print(f"ratio: DuckDB settle / Tally CPU settle = {settle_s / cpu:.1f}x;"
              f" DuckDB load + settle / Tally CPU settle = {(load_s + settle_s) / cpu:.1f}x")
    sys.exit(1 if mismatched else 0)


if __name__ == "__main__":
    main()
