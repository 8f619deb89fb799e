#!/usr/bin/env python3
"""SQLAlchemy 2 (psycopg 3 driver) against Tally: connecting (the dialect's type discovery),
the inspector's table list and the reflection calls that work today, and a query through an
engine. Column, primary-key and index reflection are known gaps (docs/sql.md).

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
with engine.connect() as conn:
    version = conn.execute(sa.text("SELECT version()")).scalar()
    check("version() names PostgreSQL and Tally", version.startswith("PostgreSQL 16") and "Tally" in version, version)
    n = conn.execute(sa.text("SELECT count(*) AS n FROM datanets WHERE datanet = :d"), {"d": "none"}).scalar()
    check("a parameterized query", n == 0, n)
if failures:
    print("FAILED:", "; ".join(failures))
    sys.exit(1)
print("ALL OK")
