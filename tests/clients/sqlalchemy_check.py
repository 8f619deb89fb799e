#!/usr/bin/env python3
"""SQLAlchemy 2 (psycopg 3 driver) and pandas against Tally: connecting (the dialect's type
discovery), the inspector's reflection of every table (columns, primary key, indexes, foreign
keys, checks), a table reflected and queried through SQLAlchemy Core, queries through an
engine, and pandas' read_sql / read_sql_table, as notebooks and BI scripts use them.

Usage: sqlalchemy_check.py PORT   (development-mode server). Prints ALL OK on success.
"""
import sys

import sqlalchemy as sa

port = int(sys.argv[1])
engine = sa.create_engine(f"postgresql+psycopg://tally@127.0.0.1:{port}/tally")
failures = []


def check(what, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f" {detail}"))
    if not cond:
        failures.append(what)


inspector = sa.inspect(engine)
tables = set(inspector.get_table_names())
expected = {"datanets", "contributions", "models", "inferences", "revocations", "policies",
            "settlements", "events", "attributions", "rewards", "balances", "payouts", "epochs"}
check("get_table_names lists every table", expected <= tables, sorted(tables))
check("get_foreign_keys", inspector.get_foreign_keys("contributions") == [])
check("get_check_constraints", inspector.get_check_constraints("contributions") == [])
for table in sorted(expected):
    try:
        columns = inspector.get_columns(table)
        check(f"get_columns({table})", len(columns) >= 2 and all(c["name"] for c in columns), columns)
        check(f"get_pk_constraint({table})", inspector.get_pk_constraint(table)["constrained_columns"] == [])
        check(f"get_indexes({table})", inspector.get_indexes(table) == [])
    except Exception as e:  # noqa: BLE001 - report every table's failure, not just the first
        check(f"reflecting {table}", False, repr(e)[:500])
balances = {c["name"]: c for c in inspector.get_columns("balances")}
check("balances' columns", list(balances) == ["account", "earned", "settled", "pending"], list(balances))
check("balances.earned is BIGINT", isinstance(balances["earned"]["type"], sa.BigInteger), balances["earned"])
check("balances.account is TEXT", isinstance(balances["account"]["type"], sa.Text), balances["account"])
table = sa.Table("balances", sa.MetaData(), autoload_with=engine)
with engine.connect() as conn:
    top = conn.execute(sa.select(table.c.account, table.c.earned).order_by(table.c.earned.desc()).limit(3)).all()
    check("a reflected table queried with SQLAlchemy Core", all(isinstance(r.earned, int) for r in top), top)
    unnamed = conn.execute(sa.text("SELECT 1, count(*), 'x'::text FROM datanets")).keys()
    check("unaliased columns are named as PostgreSQL names them", list(unnamed) == ["?column?", "count", "text"], list(unnamed))

import pandas as pd  # noqa: E402

frame = pd.read_sql("SELECT account, earned FROM balances ORDER BY earned DESC LIMIT 5", engine)
check("pandas read_sql", list(frame.columns) == ["account", "earned"] and len(frame) <= 5, frame)
datanets = pd.read_sql_table("datanets", engine)
check("pandas read_sql_table", "datanet" in datanets.columns and "earned" in datanets.columns, datanets.columns)
with engine.connect() as conn:
    version = conn.execute(sa.text("SELECT version()")).scalar()
    check("version() names PostgreSQL and Tally", version.startswith("PostgreSQL 16") and "Tally" in version, version)
    n = conn.execute(sa.text("SELECT count(*) AS n FROM datanets WHERE datanet = :d"), {"d": "none"}).scalar()
    check("a parameterized query", n == 0, n)
if failures:
    print("FAILED:", "; ".join(failures))
    sys.exit(1)
print("ALL OK")
