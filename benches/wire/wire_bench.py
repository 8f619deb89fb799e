#!/usr/bin/env python3
"""Tally vs PostgreSQL over the PostgreSQL wire protocol.

Generates a deterministic, lineage-correct ledger workload (fixed seed), loads it into each
target given (`--tally`, `--postgres`, either may be omitted) with `COPY ... FROM STDIN (FORMAT
csv)` in chunks (one COPY = one atomic batch / one durable transaction), times the inference
COPY, then measures p50/p99 latency of three read queries, and prints a markdown table with the
ratios. See benches/wire/README.md and docs/benchmarks.md.

  pip install 'psycopg[binary]'
  python3 benches/wire/wire_bench.py --tally 127.0.0.1:5433 --postgres 127.0.0.1:55432

Only the standard library and psycopg 3 are used.
"""

import argparse
import bisect
import csv
import datetime
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shlex
import sys
import time

try:
    import psycopg
except ImportError:  # the generator and --verify work without it
    psycopg = None

DEFAULT_SEED = 20261125
FEE_MAX = 1 << 40
ID_RE = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
SCORE_RE = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")  # surface.md
MAX_ENTRIES = 1024

COPY_INFERENCES = "COPY inferences (inference, model, consumer, fee, attributions) FROM STDIN {opts}"
Q_POINT = "SELECT earned, settled, pending FROM balances WHERE account = %s"
Q_CONTRIBUTION = "SELECT datanet, contributor, earned FROM contributions WHERE contribution = %s"
Q_TOP = "SELECT account, earned FROM balances ORDER BY earned DESC LIMIT 100"
Q_DATANETS = "SELECT datanet, earned FROM datanets ORDER BY earned DESC"
QUERIES = [
    ("point", "balance lookup (`WHERE account = $1`, random accounts)", Q_POINT),
    ("contribution", "contribution lookup (`WHERE contribution = $1`, random contributions)", Q_CONTRIBUTION),
    ("top100", "top-100 earners (`ORDER BY earned DESC LIMIT 100`)", Q_TOP),
    ("datanets", "earnings per datanet (`ORDER BY earned DESC`)", Q_DATANETS),
]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Workload


def zipf_cdf(n, s):
    """Ranks 0..n-1 with P(k) proportional to 1/(k+1)^s, as a cumulative table."""
    total, cdf = 0.0, []
    for k in range(1, n + 1):
        total += k ** -s
        cdf.append(total)
    return [c / total for c in cdf]


class Workload:
    """The same shape as the engine's `tally-workload` demo ledger (40 datanets, 5,000
    contributors with Zipf-skewed contribution counts, 12 base models and 36 adapters, Zipf-skewed
    lineage-correct attributions), but generated here from Python's Mersenne Twister with a fixed
    seed, with 1..16 attribution entries per inference (uniform) and only these event kinds:
    datanets, contributions, models, inferences (no policy change, revocation or settlement, so
    every reward is in the open epoch 1 under the default policy)."""

    def __init__(self, seed, inferences, chunk, max_entries=16, datanets=40, contributors=5000,
                 max_contributions=200, base_models=12, adapters=36, consumers=300):
        self.seed, self.n, self.chunk = seed, inferences, chunk
        rng = random.Random(seed)
        self.datanets = [(f"dn-{d:03d}", f"org-{d % 10:02d}") for d in range(datanets)]
        count_cdf = zipf_cdf(max_contributions, 1.1)
        dn_cdf = zipf_cdf(datanets, 0.8)

        def z(cdf):
            return min(bisect.bisect_right(cdf, rng.random()), len(cdf) - 1)

        self.contributions = []  # (contribution, datanet, contributor, content_hash)
        by_dn = [[] for _ in range(datanets)]
        for u in range(contributors):
            for _ in range(z(count_cdf) + 1):
                cid = len(self.contributions)
                d = z(dn_cdf)
                h = hashlib.sha256(f"tally-wire-bench:{seed}:{cid}".encode()).hexdigest()
                self.contributions.append((f"c-{cid:07d}", f"dn-{d:03d}", f"user-{u:05d}", h))
                by_dn[d].append(cid)
        # Base models cover 2-5 datanet draws; adapters add 0-2 datanets outside their base's.
        self.models = []  # (model, owner, base_model or '', [datanet ids])
        lineages = []
        for b in range(base_models):
            own = []
            for _ in range(2 + rng.randrange(4)):
                d = z(dn_cdf)
                if d not in own:
                    own.append(d)
            self.models.append((f"base-{b:02d}", f"org-{b % 10:02d}", "", [f"dn-{d:03d}" for d in own]))
            lineages.append(own)
        for a in range(adapters):
            base = rng.randrange(base_models)
            own = []
            for _ in range(rng.randrange(3)):
                d = rng.randrange(datanets)
                if d not in own and d not in lineages[base]:
                    own.append(d)
            self.models.append((f"adapter-{a:02d}", f"dev-{a:03d}", self.models[base][0],
                                [f"dn-{d:03d}" for d in own]))
            lineages.append(own + lineages[base])
        # Each model gets a fixed popularity order over the contributions of its lineage.
        pools = []
        for lineage in lineages:
            pool = [c for d in lineage for c in by_dn[d]]
            rng.shuffle(pool)
            pools.append((pool, zipf_cdf(len(pool), 1.05)))
        model_cdf = zipf_cdf(len(self.models), 1.0)
        names = [c[0] for c in self.contributions]

        t0 = time.perf_counter()
        self.chunks = []  # CSV bytes, `chunk` rows each
        self.entries = 0
        rows = []
        rand, below = rng.random, rng.randrange
        for n in range(inferences):
            mi = z(model_cdf)
            pool, cdf = pools[mi]
            k = min(1 + below(max_entries), len(pool))
            chosen, seen = [], set()
            last = len(cdf) - 1
            while len(chosen) < k:
                i = bisect.bisect_right(cdf, rand())
                c = pool[i if i < last else last]
                if c not in seen:
                    seen.add(c)
                    chosen.append(c)
            parts = []
            for c in chosen:
                j = 1 + below(1_000_000)  # score j / 10^6, in three spellings of the same number
                r = below(64)
                if j == 1_000_000:
                    s = "1"
                elif r == 0:
                    s = f"{j}e-6"
                elif r == 1:
                    s = f".{j:06d}"
                else:
                    s = f"0.{j:06d}"
                parts.append(f"{names[c]}:{s}")
            self.entries += k
            fee = 1000 << below(10)  # log-uniform, about 1,000 .. 1,000,000 units
            fee += below(fee)
            rows.append(f'inf-{n:010d},{self.models[mi][0]},app-{below(consumers):03d},{fee},"{",".join(parts)}"\n')
            if len(rows) == chunk:
                self.chunks.append("".join(rows).encode())
                rows = []
        if rows:
            self.chunks.append("".join(rows).encode())
        self.gen_seconds = time.perf_counter() - t0

    def csv_datanets(self):
        return "".join(f"{d},{o}\n" for d, o in self.datanets).encode()

    def csv_contributions(self):
        return "".join(f"{c},{d},{u},{h}\n" for c, d, u, h in self.contributions).encode()

    def csv_contribution_chunks(self):
        """The contributions as CSV, `chunk` rows a piece (one COPY may hold at most 1,048,576
        rows in Tally)."""
        for at in range(0, len(self.contributions), self.chunk):
            part = self.contributions[at:at + self.chunk]
            yield "".join(f"{c},{d},{u},{h}\n" for c, d, u, h in part).encode()

    def csv_models(self):
        # An empty unquoted CSV field is NULL: no base model / an empty datanets list.
        return "".join(f'{m},{o},{b},"{",".join(ds)}"\n' if ds else f"{m},{o},{b},\n"
                       for m, o, b, ds in self.models).encode()

    def describe(self):
        bases = sum(1 for m in self.models if not m[2])
        return (f"seed {self.seed}: {len(self.datanets)} datanets, {len(self.contributions):,} "
                f"contributions from {len({c[2] for c in self.contributions}):,} contributors, "
                f"{bases} base models + {len(self.models) - bases} adapters, {self.n:,} inferences "
                f"with {self.entries:,} attribution entries (1-16 each, mean "
                f"{self.entries / max(self.n, 1):.2f}), {sum(map(len, self.chunks)) / 1e6:.1f} MB of CSV "
                f"(sha256 {self.digest()[:16]})")

    def digest(self):
        h = hashlib.sha256()
        for part in (self.csv_datanets(), self.csv_contributions(), self.csv_models(), *self.chunks):
            h.update(part)
        return h.hexdigest()


def verify(w):
    """Checks the CSV that goes over the wire against ledger.md / surface.md; returns problems."""
    bad = []

    def fail(msg):
        if len(bad) < 20:
            bad.append(msg)

    rows = lambda data: csv.reader(io.StringIO(data.decode()))
    datanets = set()
    for r in rows(w.csv_datanets()):
        if len(r) != 2 or not ID_RE.match(r[0]) or not ID_RE.match(r[1]) or r[0] in datanets:
            fail(f"datanet row {r}")
        datanets.add(r[0])
    dn_of, hashes = {}, set()
    for r in rows(w.csv_contributions()):
        c, d, u, h = r
        if not (ID_RE.match(c) and ID_RE.match(u)) or c in dn_of:
            fail(f"contribution id {r}")
        if d not in datanets:
            fail(f"contribution datanet {r}")
        if not HASH_RE.match(h) or h in hashes:
            fail(f"content_hash {r}")
        hashes.add(h)
        dn_of[c] = d
    lineage, base_of = {}, {}
    for r in rows(w.csv_models()):
        m, o, b, ds = r
        ds = [x for x in ds.split(",")] if ds else []
        if not (ID_RE.match(m) and ID_RE.match(o)) or m in lineage:
            fail(f"model id {r}")
        if len(set(ds)) != len(ds) or any(d not in datanets for d in ds):
            fail(f"model datanets {r}")
        if b:
            if b not in lineage or base_of.get(b):
                fail(f"base model {r}")  # must exist (earlier in the batch) and not be an adapter
            lineage[m] = set(ds) | lineage.get(b, set())
        else:
            lineage[m] = set(ds)
        base_of[m] = b
    seen_inf, n, entries = set(), 0, 0
    for chunk in w.chunks:
        for r in rows(chunk):
            n += 1
            if len(r) != 5:
                fail(f"inference columns {r}")
                continue
            i, m, consumer, fee, attrs = r
            if not (ID_RE.match(i) and ID_RE.match(consumer)) or i in seen_inf:
                fail(f"inference id {i}")
            seen_inf.add(i)
            if m not in lineage:
                fail(f"inference model {i} {m}")
                continue
            if not re.fullmatch(r"[0-9]+", fee) or not 0 <= int(fee) <= FEE_MAX:
                fail(f"fee {i} {fee}")
            es = attrs.split(",") if attrs else []
            if len(es) > MAX_ENTRIES:
                fail(f"{i}: {len(es)} entries")
            named, lin = set(), lineage[m]
            for e in es:
                c, sep, s = e.rpartition(":")  # split at the last ':'
                entries += 1
                if not sep or not SCORE_RE.match(s) or not math.isfinite(float(s)) or float(s) < 0:
                    fail(f"{i}: entry {e!r}")
                if c in named:
                    fail(f"{i}: {c} repeated")
                named.add(c)
                if c not in dn_of:
                    fail(f"{i}: unknown contribution {c}")
                elif dn_of[c] not in lin:
                    fail(f"{i}: {c} (datanet {dn_of[c]}) outside the lineage of {m}")
    if n != w.n or entries != w.entries:
        fail(f"row count {n} / entries {entries}, expected {w.n} / {w.entries}")
    return bad


# ----------------------------------------------------------------------------------------------
# Connections and loading


def conninfo(target, default_user, default_db, options=None):
    """HOST:PORT, or a full libpq conninfo / URI."""
    if "=" in target or "://" in target:
        return target
    host, _, port = target.rpartition(":")
    if not host:
        host, port = target, "5432"
    info = f"host={host} port={port} dbname={default_db} user={default_user}"
    if options:
        info += f" options='{options}'"
    return info


def copy_in(cur, stmt, data, block=1 << 20):
    with cur.copy(stmt) as cp:
        mv = memoryview(data)
        for i in range(0, len(mv), block):
            cp.write(mv[i:i + block])


def load(conn, w, copy_opts):
    """COPY the universe (not timed), then the inferences chunk by chunk (timed). Autocommit:
    each COPY is its own statement/transaction, acknowledged once durable."""
    cur = conn.cursor()
    copy_in(cur, f"COPY datanets (datanet, owner) FROM STDIN {copy_opts}", w.csv_datanets())
    for data in w.csv_contribution_chunks():
        copy_in(cur, f"COPY contributions (contribution, datanet, contributor, content_hash) FROM STDIN {copy_opts}",
                data)
    copy_in(cur, f"COPY models (model, owner, base_model, datanets) FROM STDIN {copy_opts}", w.csv_models())
    stmt = COPY_INFERENCES.format(opts=copy_opts)
    per_chunk = []
    t0 = time.perf_counter()
    for k, data in enumerate(w.chunks):
        t = time.perf_counter()
        copy_in(cur, stmt, data)
        dt = time.perf_counter() - t
        per_chunk.append(min(w.chunk, w.n - k * w.chunk) / dt)
    total = time.perf_counter() - t0
    return {"rows": w.n, "seconds": total, "rows_per_s": w.n / total,
            "chunk_rows_per_s": sorted(per_chunk)}


PG_SCHEMA = """
DROP TABLE IF EXISTS attributions, inferences, models, contributions, datanets, balances CASCADE;
CREATE TABLE datanets (
    datanet text PRIMARY KEY, owner text NOT NULL, earned bigint NOT NULL DEFAULT 0);
CREATE TABLE contributions (
    contribution text PRIMARY KEY, datanet text NOT NULL {fk_dn}, contributor text NOT NULL,
    content_hash text NOT NULL UNIQUE, earned bigint NOT NULL DEFAULT 0);
CREATE TABLE models (
    model text PRIMARY KEY, owner text NOT NULL, base_model text {fk_base}, datanets text);
CREATE TABLE inferences (
    inference text PRIMARY KEY, model text NOT NULL {fk_model}, consumer text NOT NULL,
    fee bigint NOT NULL CHECK (fee BETWEEN 0 AND 1099511627776), attributions text);
CREATE TABLE balances (
    account text PRIMARY KEY, earned bigint NOT NULL, settled bigint NOT NULL,
    pending bigint NOT NULL);
"""

# Stand-in for Tally's derived tables, computed by PostgreSQL itself from the loaded rows with the
# rules of settlement.md §1-3 under the default policy (protocol 1000, model 2000, base 1000 bps),
# which is what applies here: no policy, revocation or settlement events, so everything is
# pending in epoch 1. Used only when Tally is not a target (or with --derived sql).
PG_DERIVE = """
DROP TABLE IF EXISTS wb_entry_rewards, wb_inference_parts;
CREATE UNLOGGED TABLE wb_entry_rewards AS
SELECT s.contribution, s.share + CASE WHEN s.rk = 1 THEN s.pool - s.shares ELSE 0 END AS amount
FROM inferences i
JOIN models m ON m.model = i.model
CROSS JOIN LATERAL (
    SELECT r.contribution, r.rk, r.pool, r.share, (sum(r.share) OVER ())::bigint AS shares
    FROM (
        SELECT q.contribution, q.rk, p.pool,
               CASE WHEN q.wsum = 0 THEN 0 ELSE p.pool * q.w / q.wsum END AS share
        FROM (
            SELECT v.contribution, v.w, (sum(v.w) OVER ())::bigint AS wsum,  -- sum(bigint) is numeric
                   row_number() OVER (ORDER BY v.w DESC, v.ord) AS rk
            FROM (
                SELECT e.contribution, e.ord,
                       CASE WHEN e.mx = 0 THEN 0::bigint
                            ELSE (CASE WHEN x - floor(x) >= 0.5 THEN ceil(x) ELSE floor(x) END)::bigint
                       END AS w
                FROM (
                    SELECT a.contribution, a.ord, a.score, max(a.score) OVER () AS mx
                    FROM (
                        SELECT left(t.x, length(t.x) - length(split_part(t.x, ':', -1)) - 1) AS contribution,
                               split_part(t.x, ':', -1)::float8 AS score, t.ord
                        FROM string_to_table(i.attributions, ',') WITH ORDINALITY AS t(x, ord)
                    ) a
                ) e
                CROSS JOIN LATERAL (SELECT CASE WHEN e.mx = 0 THEN 0::float8
                                                ELSE e.score / e.mx * 1000000::float8 END AS x) xx
            ) v
            WHERE v.w > 0
        ) q
        CROSS JOIN LATERAL (
            SELECT i.fee - i.fee * 1000 / 10000
                   - CASE WHEN m.base_model IS NULL THEN i.fee * 3000 / 10000
                          ELSE i.fee * 2000 / 10000 + i.fee * 1000 / 10000 END AS pool) p
    ) r
) s
WHERE i.attributions <> '';

CREATE UNLOGGED TABLE wb_inference_parts AS
SELECT i.fee * 1000 / 10000 AS protocol, p.model_part, p.base_part,
       i.fee - i.fee * 1000 / 10000 - p.model_part - p.base_part AS pool,
       m.owner AS model_owner, b.owner AS base_owner
FROM inferences i JOIN models m ON m.model = i.model LEFT JOIN models b ON b.model = m.base_model
CROSS JOIN LATERAL (
    SELECT CASE WHEN m.base_model IS NULL THEN i.fee * 3000 / 10000 ELSE i.fee * 2000 / 10000 END AS model_part,
           CASE WHEN m.base_model IS NULL THEN 0 ELSE i.fee * 1000 / 10000 END AS base_part) p;

INSERT INTO {balances} (account, earned, settled, pending)
SELECT account, sum(amount), 0, sum(amount) FROM (
    SELECT c.contributor AS account, r.amount
    FROM (SELECT contribution, sum(amount) AS amount FROM wb_entry_rewards GROUP BY contribution) r
    JOIN contributions c USING (contribution)
  UNION ALL SELECT '$protocol', sum(protocol) FROM wb_inference_parts
  UNION ALL SELECT model_owner, sum(model_part) FROM wb_inference_parts GROUP BY model_owner
  UNION ALL SELECT base_owner, sum(base_part) FROM wb_inference_parts WHERE base_owner IS NOT NULL
            GROUP BY base_owner
  -- pools of inferences with no valid (weight > 0) entry go to $protocol: every other pool is
  -- paid out in full to entries, so these are all pools minus all entry rewards
  UNION ALL SELECT '$protocol', (SELECT sum(pool) FROM wb_inference_parts)
                                - (SELECT coalesce(sum(amount), 0) FROM wb_entry_rewards)
) x
GROUP BY account HAVING sum(amount) > 0;
"""

# --pg-normalized: each COPY into inferences also stores its entries as rows, as a ledger kept in
# PostgreSQL would to query them (and to refuse a repeated contribution): a statement-level
# trigger over the COPY's transition table, so the timed statement is still the one COPY.
PG_NORMALIZED = """
CREATE TABLE attributions (
    inference text NOT NULL, ord int NOT NULL, contribution text NOT NULL {fk_contribution},
    score float8 NOT NULL CHECK (score >= 0 AND score < 'Infinity'),
    PRIMARY KEY (inference, contribution));
CREATE OR REPLACE FUNCTION wb_explode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO attributions
    SELECT n.inference, t.ord, left(t.x, length(t.x) - length(split_part(t.x, ':', -1)) - 1),
           split_part(t.x, ':', -1)::float8
    FROM new_rows n, string_to_table(n.attributions, ',') WITH ORDINALITY AS t(x, ord)
    WHERE n.attributions <> '';
    RETURN NULL;
END $$;
CREATE TRIGGER wb_explode AFTER INSERT ON inferences REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION wb_explode();
"""


def pg_derive_sql(conn, balances="balances", datanet_earned=None):
    """Fills `balances` (and datanets.earned and contributions.earned, or the tables
    `datanet_earned` and `datanet_earned`_c) by SQL."""
    cur = conn.cursor()
    cur.execute("SET work_mem = '256MB'")
    cur.execute(PG_DERIVE.format(balances=balances))
    per_dn = """SELECT c.datanet, sum(r.amount) AS earned
                FROM wb_entry_rewards r JOIN contributions c USING (contribution) GROUP BY c.datanet"""
    if datanet_earned:
        cur.execute(f"DROP TABLE IF EXISTS {datanet_earned}")
        cur.execute(f"CREATE TABLE {datanet_earned} AS SELECT d.datanet, coalesce(x.earned, 0)::bigint AS earned "
                    f"FROM datanets d LEFT JOIN ({per_dn}) x USING (datanet)")
        cur.execute(f"DROP TABLE IF EXISTS {datanet_earned}_c")
        cur.execute(f"CREATE TABLE {datanet_earned}_c AS SELECT contribution, sum(amount)::bigint AS earned "
                    "FROM wb_entry_rewards GROUP BY contribution")
    else:
        cur.execute(f"UPDATE datanets d SET earned = x.earned FROM ({per_dn}) x WHERE x.datanet = d.datanet")
        cur.execute("""UPDATE contributions c SET earned = x.amount
                       FROM (SELECT contribution, sum(amount) AS amount FROM wb_entry_rewards
                             GROUP BY contribution) x
                       WHERE x.contribution = c.contribution""")
    cur.execute("DROP TABLE wb_entry_rewards, wb_inference_parts")
    cur.execute(f"ANALYZE {balances}")
    vacuum_updated(cur)


def copy_out_rows(src, query):
    """Rows of `query` from a server: COPY (query) TO STDOUT if it takes it, else a SELECT."""
    cur = src.cursor()
    try:
        buf = bytearray()
        with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as cp:
            for data in cp:
                buf += data
        return bytes(buf), "COPY (SELECT ...) TO STDOUT"
    except psycopg.Error as e:
        log(f"COPY TO STDOUT refused by the source ({e.sqlstate}: {str(e).strip()[:120]}); using SELECT")
        if not src.autocommit:
            src.rollback()
        cur.execute(query)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(cur.fetchall())
        return out.getvalue().encode(), "SELECT"


def pg_copy_derived_from_tally(pg, tally):
    cur = pg.cursor()
    data, how = copy_out_rows(tally, "SELECT account, earned, settled, pending FROM balances")
    copy_in(cur, "COPY balances (account, earned, settled, pending) FROM STDIN (FORMAT csv)", data)
    dn, _ = copy_out_rows(tally, "SELECT datanet, earned FROM datanets")
    cur.execute("CREATE TEMP TABLE wb_dn (datanet text, earned bigint)")
    copy_in(cur, "COPY wb_dn FROM STDIN (FORMAT csv)", dn)
    cur.execute("UPDATE datanets d SET earned = x.earned FROM wb_dn x WHERE x.datanet = d.datanet")
    cur.execute("DROP TABLE wb_dn")
    ce, _ = copy_out_rows(tally, "SELECT contribution, earned FROM contributions")
    cur.execute("CREATE TEMP TABLE wb_ce (contribution text, earned bigint)")
    copy_in(cur, "COPY wb_ce FROM STDIN (FORMAT csv)", ce)
    cur.execute("""UPDATE contributions c SET earned = x.earned FROM wb_ce x
                   WHERE x.contribution = c.contribution AND x.earned <> 0""")
    cur.execute("DROP TABLE wb_ce")
    cur.execute("ANALYZE balances")
    vacuum_updated(cur)
    return how


def vacuum_updated(cur):
    """The tables whose rows were just updated, vacuumed (no dead row versions left for the
    lookups to step over) and analyzed."""
    cur.execute("VACUUM (ANALYZE) datanets")
    cur.execute("VACUUM (ANALYZE) contributions")


def cross_check(pg):
    """Compares Tally's balances/datanet earnings (copied into PG) with PG's own SQL settlement."""
    cur = pg.cursor()
    cur.execute("DROP TABLE IF EXISTS wb_balances_sql")
    cur.execute("CREATE TABLE wb_balances_sql (LIKE balances)")
    pg_derive_sql(pg, balances="wb_balances_sql", datanet_earned="wb_datanets_sql")
    cur.execute("""SELECT count(*) FROM balances b FULL JOIN wb_balances_sql s USING (account)
                   WHERE b.earned IS DISTINCT FROM s.earned OR b.settled IS DISTINCT FROM s.settled
                      OR b.pending IS DISTINCT FROM s.pending""")
    bal = cur.fetchone()[0]
    cur.execute("""SELECT count(*) FROM datanets d JOIN wb_datanets_sql s USING (datanet)
                   WHERE d.earned IS DISTINCT FROM s.earned""")
    dn = cur.fetchone()[0]
    cur.execute("""SELECT count(*) FROM contributions c LEFT JOIN wb_datanets_sql_c s USING (contribution)
                   WHERE c.earned <> coalesce(s.earned, 0)""")
    contributions = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM wb_balances_sql")
    n = cur.fetchone()[0]
    cur.execute("DROP TABLE wb_balances_sql, wb_datanets_sql, wb_datanets_sql_c")
    return {"balances_rows": n, "balances_mismatches": bal, "datanets_mismatches": dn,
            "contributions_mismatches": contributions}


# ----------------------------------------------------------------------------------------------
# Queries


def settle(seconds, name):
    if seconds > 0:
        log(f"{name}: waiting {seconds:g} s for the work the load left behind ...")
        time.sleep(seconds)


def pct(sorted_vals, p):
    return sorted_vals[max(0, math.ceil(p * len(sorted_vals)) - 1)]


def run_queries(conn, keys, warmup, reps, prepare):
    """p50/p99 of each query; `keys[query]` are the values of a keyed query's `$1`, in turn."""
    cur = conn.cursor()
    out, answers = {}, {}
    for key, _, q in QUERIES:
        times = []
        for r in range(warmup + reps):
            params = (keys[key][r % len(keys[key])],) if key in keys else None
            t = time.perf_counter()
            cur.execute(q, params, prepare=prepare)
            rows = cur.fetchall()
            dt = time.perf_counter() - t
            if r >= warmup:
                times.append(dt * 1000)
            if r == 0:
                answers[key] = [tuple(map(str, x)) for x in rows]
        times.sort()
        out[key] = {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "max_ms": times[-1], "n": len(times)}
    return out, answers


def _throughput_worker(info, setup, keys, seconds, prepare, start, results):
    """One client of `throughput`: warms up, waits for the others, then looks balances up for
    `seconds`; puts (lookups done, their latencies in ms)."""
    conn = psycopg.connect(info, autocommit=True)
    cur = conn.cursor()
    for stmt in setup:
        cur.execute(stmt)
    for k in keys[:20]:
        cur.execute(Q_POINT, (k,), prepare=prepare)
        cur.fetchall()
    start.wait()
    n, times = 0, []
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        if t >= end:
            break
        cur.execute(Q_POINT, (keys[n % len(keys)],), prepare=prepare)
        cur.fetchall()
        times.append((time.perf_counter() - t) * 1000)
        n += 1
    conn.close()
    results.put((n, times))


def throughput(info, setup, keys, clients, seconds, prepare):
    """Balance lookups per second from `clients` connections at once (one process each, so the
    client's interpreter lock does not serialise them), and the latency each saw meanwhile."""
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(clients), ctx.Queue()
    rng = random.Random(DEFAULT_SEED + 3)
    procs = []
    for _ in range(clients):
        mine = keys[:]
        rng.shuffle(mine)
        proc = ctx.Process(target=_throughput_worker,
                           args=(info, setup, mine, seconds, prepare, start, results))
        proc.start()
        procs.append(proc)
    got = [results.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join()
    times = sorted(t for _, ts in got for t in ts)
    return {"clients": clients, "seconds": seconds, "qps": sum(n for n, _ in got) / seconds,
            "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}


# ----------------------------------------------------------------------------------------------
# Report


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
        mem = f"{int(mem) / 2**20:.1f} GiB"
    except Exception:
        mem = "?"
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release(),
            "python": platform.python_version(),
            "psycopg": psycopg.__version__ if psycopg else "-",
            "loadavg_start": os.getloadavg()}


def fmt_rate(x):
    return f"{x:,.0f}" if x is not None else "—"


def fmt_ms(x):
    return f"{x:.3f}" if x is not None else "—"


def report(args, w, mach, res):
    T, P = res.get("tally", {}), res.get("postgres", {})
    lines = [f"## Wire benchmark ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", ""]
    lines.append(f"Command: `python3 benches/wire/wire_bench.py {shlex.join(sys.argv[1:])}`")
    lines.append(f"Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem']} RAM, Linux {mach['kernel']}, "
                 f"Python {mach['python']}, psycopg {mach['psycopg']}; load average at start "
                 f"{mach['loadavg_start'][0]:.2f}, at end {os.getloadavg()[0]:.2f}.")
    lines.append(f"Workload: {w.describe()}; COPY (FORMAT csv), {w.chunk:,} rows per COPY statement.")
    if args.settle > 0:
        lines.append(f"Each target's queries began {args.settle:g} s after its load ended (`--settle`).")
    for name, r in (("Tally", T), ("PostgreSQL", P)):
        if r.get("server"):
            lines.append(f"{name}: {r['server']}")
    if P.get("schema"):
        lines.append(f"PostgreSQL schema: {P['schema']} (see PG_SCHEMA in wire_bench.py); autocommit, one "
                     "transaction per COPY.")
    if P.get("settings"):
        lines.append("PostgreSQL settings: " + ", ".join(f"{k}={v}" for k, v in P["settings"].items()))
    if P.get("derived"):
        lines.append(f"PostgreSQL's `balances` and `datanets.earned`: {P['derived']}")
    lines.append("")

    def ratio(t, p, higher_better):
        if t is None or p is None or t == 0 or p == 0:
            return "—"
        return f"{(t / p) if higher_better else (p / t):.2f}×"

    lines.append("| what | Tally | PostgreSQL | Tally advantage |")
    lines.append("|---|---|---|---|")
    ti, pi = T.get("ingest"), P.get("ingest")
    tr, pr = (ti or {}).get("rows_per_s"), (pi or {}).get("rows_per_s")
    lines.append(f"| COPY inferences, rows/s ({w.n:,} rows, whole run) | {fmt_rate(tr)} | {fmt_rate(pr)} | "
                 f"{ratio(tr, pr, True)} (target ≥ 3×) |")
    for key, label, _ in QUERIES:
        for p in ("p50_ms", "p99_ms"):
            tv = T.get("queries", {}).get(key, {}).get(p)
            pv = P.get("queries", {}).get(key, {}).get(p)
            lines.append(f"| {label}, {p[:3]} ms | {fmt_ms(tv)} | {fmt_ms(pv)} | {ratio(tv, pv, False)} |")
    tt, pt = T.get("throughput"), P.get("throughput")
    if tt or pt:
        clients = (tt or pt)["clients"]
        tq, pq = (tt or {}).get("qps"), (pt or {}).get("qps")
        lines.append(f"| balance lookup from {clients} connections at once, lookups/s | {fmt_rate(tq)} | "
                     f"{fmt_rate(pq)} | {ratio(tq, pq, True)} |")
        for p in ("p50_ms", "p99_ms"):
            tv, pv = (tt or {}).get(p), (pt or {}).get(p)
            lines.append(f"| … its latency meanwhile, {p[:3]} ms | {fmt_ms(tv)} | {fmt_ms(pv)} | "
                         f"{ratio(tv, pv, False)} |")
    lines.append("")
    lines.append("Tally advantage: Tally ÷ PostgreSQL for rows/s, PostgreSQL ÷ Tally for latency "
                 f"(> 1× means Tally is better). Latency: {args.reps} timed runs of each query after "
                 f"{args.warmup} warm-up runs, one connection, execute + fetch all rows, client-side wall time. "
                 f"Throughput: {args.concurrency} client processes, one connection each, balance lookups "
                 f"(prepared as for latency) for {args.seconds:g} s after 20 warm-up lookups each.")
    for name, r in (("Tally", T), ("PostgreSQL", P)):
        if r.get("ingest"):
            c = r["ingest"]["chunk_rows_per_s"]
            lines.append(f"- {name} per-COPY rows/s: min {fmt_rate(c[0])}, median {fmt_rate(pct(c, 0.5))}, "
                         f"max {fmt_rate(c[-1])}; whole load {r['ingest']['seconds']:.1f} s.")
        for e in r.get("errors", []):
            lines.append(f"- {name} error: {e}")
    if res.get("answers_equal") is not None:
        lines.append(f"- First answer of every query (the same keys on both) identical on both targets: "
                     f"{res['answers_equal']}.")
    if res.get("cross_check"):
        cc = res["cross_check"]
        lines.append(f"- Cross-check of Tally's balances against PostgreSQL's SQL settlement: "
                     f"{cc['balances_rows']:,} accounts, {cc['balances_mismatches']} balance mismatches, "
                     f"{cc['datanets_mismatches']} datanet mismatches, {cc['contributions_mismatches']} "
                     "contribution mismatches.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tally", help="Tally's wire address HOST:PORT (or a libpq conninfo/URI)")
    ap.add_argument("--postgres", help="PostgreSQL HOST:PORT (or a libpq conninfo/URI)")
    ap.add_argument("--tally-user", default="tally")
    ap.add_argument("--pg-user", default=os.environ.get("PGUSER", "postgres"))
    ap.add_argument("--pg-db", default="tally")
    ap.add_argument("--pg-schema", default="wire_bench",
                    help="schema the PostgreSQL tables are (re)created in (dropped first)")
    ap.add_argument("--pg-fk", action="store_true",
                    help="also declare foreign keys (contribution->datanet, model->base, inference->model)")
    ap.add_argument("--pg-normalized", action="store_true",
                    help="also store each inference's entries as rows of attributions (PK inference, "
                         "contribution), filled by a statement trigger during the same COPY")
    ap.add_argument("--inferences", type=int, default=1_000_000)
    ap.add_argument("--contributors", type=int, default=5000,
                    help="contributors (accounts; their contributions grow with them: about 28 each)")
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per COPY statement")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--copy-options", default="(FORMAT csv)")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="connections of the balance-lookup throughput run (0: no such run)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the throughput run")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait after a target's load before its queries (work a load "
                         "leaves behind, such as autovacuum or a snapshot, then runs alone)")
    ap.add_argument("--no-prepare", action="store_true",
                    help="never use named prepared statements (psycopg prepares after 5 runs by default)")
    ap.add_argument("--derived", choices=["auto", "copy", "sql"], default="auto",
                    help="PostgreSQL's balances/datanets.earned: copied from Tally (auto when --tally "
                         "is given) or computed by SQL in PostgreSQL (stand-in)")
    ap.add_argument("--cross-check", action="store_true",
                    help="with both targets: also settle by SQL in PostgreSQL and compare with Tally's numbers")
    ap.add_argument("--reuse-tally", action="store_true",
                    help="Tally already holds this workload: skip its load, only run the queries")
    ap.add_argument("--verify", action="store_true", help="check the generated CSV against the ledger rules")
    ap.add_argument("--verify-only", action="store_true", help="generate, verify, print stats, exit")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    if not (args.tally or args.postgres or args.verify_only):
        ap.error("give --tally and/or --postgres (or --verify-only)")
    if (args.tally or args.postgres) and psycopg is None:
        ap.error("pip install 'psycopg[binary]'")

    mach = machine()
    log(f"generating the workload ({args.inferences:,} inferences, seed {args.seed}) ...")
    w = Workload(args.seed, args.inferences, args.chunk, contributors=args.contributors)
    log(f"{w.describe()}; generated in {w.gen_seconds:.1f} s")
    if args.verify or args.verify_only:
        t = time.perf_counter()
        bad = verify(w)
        log(f"verify: {'OK' if not bad else 'FAILED'} ({time.perf_counter() - t:.1f} s)")
        for b in bad:
            log(f"  {b}")
        if bad:
            sys.exit(1)
        if args.verify_only:
            return
    prepare = False if args.no_prepare else None
    res = {"tally": {"errors": []}, "postgres": {"errors": []}}
    tally = pg = None

    # Accounts for the point lookups: the same seeded sample on every target.
    def accounts_from(conn):
        cur = conn.cursor()
        cur.execute("SELECT account FROM balances")
        accts = sorted(r[0] for r in cur.fetchall())
        rng = random.Random(args.seed + 1)
        return [rng.choice(accts) for _ in range(args.warmup + args.reps)] if accts else None

    rng = random.Random(args.seed + 2)
    contributions = [rng.choice(w.contributions)[0] for _ in range(args.warmup + args.reps)]
    keys = {"contribution": contributions}
    accounts = None
    if args.tally:
        T = res["tally"]
        try:
            tally = psycopg.connect(conninfo(args.tally, args.tally_user, "tally"), autocommit=True)
            cur = tally.cursor()
            try:
                cur.execute("SELECT version()")
                T["server"] = cur.fetchone()[0]
            except psycopg.Error as e:
                T["server"] = f"(version() failed: {e.sqlstate})"
            cur.execute("SELECT count(*) FROM inferences")
            have = cur.fetchone()[0]
            if have and not args.reuse_tally:
                raise SystemExit(f"Tally already holds {have} inferences: give it an empty data directory "
                                 "(or --reuse-tally to only run the queries)")
            if not args.reuse_tally:
                log("Tally: loading ...")
                T["ingest"] = load(tally, w, args.copy_options)
                log(f"Tally: {T['ingest']['rows_per_s']:,.0f} rows/s")
            settle(args.settle, "Tally")
            accounts = accounts_from(tally)
            keys["point"] = accounts
            log("Tally: queries ...")
            T["queries"], T["answers"] = run_queries(tally, keys, args.warmup, args.reps, prepare)
            if args.concurrency > 0:
                log(f"Tally: throughput, {args.concurrency} connections ...")
                info = conninfo(args.tally, args.tally_user, "tally")
                T["throughput"] = throughput(info, [], accounts, args.concurrency, args.seconds, prepare)
        except psycopg.Error as e:
            T["errors"].append(f"{type(e).__name__} {e.sqlstate}: {str(e).strip()}")
            log(f"Tally failed: {T['errors'][-1]}")
            if tally is not None and not tally.closed and tally.info.transaction_status != 0:
                tally.rollback()

    if args.postgres:
        P = res["postgres"]
        try:
            pginfo = conninfo(args.postgres, args.pg_user, args.pg_db)
            pg = psycopg.connect(pginfo, autocommit=True)
            cur = pg.cursor()
            cur.execute("SELECT version()")
            P["server"] = cur.fetchone()[0]
            P["settings"] = {}
            for s in ("fsync", "synchronous_commit", "full_page_writes", "wal_level", "wal_sync_method",
                      "shared_buffers", "max_wal_size", "data_checksums", "lc_collate"):
                cur.execute(f"SHOW {s}")
                P["settings"][s] = cur.fetchone()[0]
            if P["settings"]["fsync"] != "on" or P["settings"]["synchronous_commit"] != "on":
                log("WARNING: PostgreSQL is not durable (fsync / synchronous_commit off)")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {args.pg_schema}")
            cur.execute(f"SET search_path = {args.pg_schema}")
            fk = args.pg_fk
            cur.execute(PG_SCHEMA.format(
                fk_dn="REFERENCES datanets" if fk else "", fk_base="REFERENCES models" if fk else "",
                fk_model="REFERENCES models" if fk else ""))
            if args.pg_normalized:
                cur.execute(PG_NORMALIZED.format(fk_contribution="REFERENCES contributions" if fk else ""))
            P["schema"] = ("primary keys" + (", foreign keys" if fk else "")
                           + (", entries normalized into attributions rows by trigger" if args.pg_normalized else ""))
            cur.execute("CHECKPOINT")
            log("PostgreSQL: loading ...")
            P["ingest"] = load(pg, w, args.copy_options)
            log(f"PostgreSQL: {P['ingest']['rows_per_s']:,.0f} rows/s")
            cur.execute("ANALYZE")
            use_copy = args.derived == "copy" or (args.derived == "auto" and tally is not None
                                                  and not res["tally"]["errors"])
            t = time.perf_counter()
            if use_copy:
                how = pg_copy_derived_from_tally(pg, tally)
                P["derived"] = f"copied from Tally over the wire ({how}), so both serve identical numbers."
            else:
                log("PostgreSQL: settling by SQL (stand-in for Tally's derived tables) ...")
                pg_derive_sql(pg)
                cur.execute("SELECT count(*), sum(earned) FROM balances")
                n_acc, total = cur.fetchone()
                cur.execute("SELECT sum(fee) FROM inferences")
                fees = cur.fetchone()[0]
                P["derived"] = (f"**stand-in**: computed by SQL inside PostgreSQL after the load (settlement.md "
                                f"§1-3, default policy; not timed, {time.perf_counter() - t:.0f} s), not Tally's "
                                f"output; {n_acc:,} accounts, sum of balances {'=' if total == fees else '≠'} "
                                f"sum of fees ({total:,} / {fees:,}).")
            if args.cross_check and tally is not None and use_copy:
                log("PostgreSQL: cross-check with SQL settlement ...")
                res["cross_check"] = cross_check(pg)
            settle(args.settle, "PostgreSQL")
            if accounts is None:
                accounts = accounts_from(pg)
                keys["point"] = accounts
            log("PostgreSQL: queries ...")
            P["queries"], P["answers"] = run_queries(pg, keys, args.warmup, args.reps, prepare)
            if args.concurrency > 0:
                log(f"PostgreSQL: throughput, {args.concurrency} connections ...")
                setup = [f"SET search_path = {args.pg_schema}"]
                P["throughput"] = throughput(pginfo, setup, accounts, args.concurrency, args.seconds, prepare)
        except psycopg.Error as e:
            P["errors"].append(f"{type(e).__name__} {e.sqlstate}: {str(e).strip()}")
            log(f"PostgreSQL failed: {P['errors'][-1]}")

    ta, pa = res["tally"].get("answers"), res["postgres"].get("answers")
    if ta and pa:
        # ties in `earned` may come back in either order
        res["answers_equal"] = all(sorted(ta[k]) == sorted(pa.get(k, [])) for k in ta)
    md = report(args, w, mach, res)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if args.json:
        for r in (res["tally"], res["postgres"]):
            r.pop("answers", None)
        with open(args.json, "w") as f:
            json.dump({"machine": mach, "workload": w.describe(), "results": res}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
