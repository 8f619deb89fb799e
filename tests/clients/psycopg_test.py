#!/usr/bin/env python3
"""End-to-end psycopg 3 client test for Tally's PostgreSQL wire front end.

Usage:  psycopg_test.py [PORT]
Env:    TALLY_PORT (default 5433) for the development-mode server (any user, no password),
        TALLY_HOST (127.0.0.1), TALLY_USER (tally), TALLY_DB (tally);
        TALLY_AUTH_PORT, optional: a server whose users file has writer wuser/wpass and reader
        ruser/rpass; the authentication checks run only when it is set.
Ids carry a per-run prefix, so the script can run against a ledger that already holds data
(including an earlier run of itself). Exit 0 with "ALL OK" when every check passes, 1 when
any failed (each failure printed as "FAIL ..."), 2 when the server cannot be reached.
"""
import datetime
import decimal
import hashlib
import os
import sys
import time

try:
    import psycopg
except ImportError:
    sys.exit("psycopg_test: psycopg 3 is not installed (pip install 'psycopg[binary]>=3.1')")

HOST = os.environ.get("TALLY_HOST", "127.0.0.1")
PORT = int(next((a for a in sys.argv[1:] if a.isdigit()), None) or os.environ.get("TALLY_PORT", "5433"))
USER = os.environ.get("TALLY_USER", "tally")
DB = os.environ.get("TALLY_DB", "tally")
AUTH_PORT = os.environ.get("TALLY_AUTH_PORT")
RUN = f"py{os.getpid()}x{int(time.time() * 1000) % 10**9}"  # id prefix of this run

failures = []
passed = 0


def check(what, cond, detail=""):
    global passed
    if cond:
        passed += 1
        print(f"ok   {what}")
    else:
        failures.append(what)
        print(f"FAIL {what} {detail}")
    return cond


def section(fn):
    """Run one group of checks; an unexpected exception fails the group, not the script."""
    print(f"-- {fn.__name__}")
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report and go on with the next group
        failures.append(f"{fn.__name__}: {type(e).__name__}")
        print(f"FAIL {fn.__name__}: unexpected {type(e).__name__}: "
              f"{getattr(e, 'sqlstate', None) or ''} {e}")
    return fn


def connect(port=PORT, user=USER, password=None, autocommit=True):
    kw = dict(host=HOST, port=int(port), user=user, dbname=DB, connect_timeout=10)
    if password is not None:
        kw["password"] = password
    return psycopg.connect(**kw, autocommit=autocommit)


def chash(name):
    return hashlib.sha256(f"psycopg-test:{RUN}:{name}".encode()).hexdigest()


def expect_error(conn, what, sqlstate, sql, params=None):
    """Run a statement that must fail with `sqlstate`."""
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        return check(f"{what} -> {sqlstate}", e.sqlstate == sqlstate,
                     f"(got SQLSTATE {e.sqlstate}: {str(e).strip()[:200]})")
    return check(f"{what} -> {sqlstate}", False, "(the statement succeeded)")


def scalar(conn, sql, params=None):
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


try:
    conn = connect()
except psycopg.Error as e:
    print(f"psycopg_test: cannot connect to {HOST}:{PORT} as {USER}: {e}", file=sys.stderr)
    sys.exit(2)

def weights(text):
    out = {}
    for e in (text or "").split(","):
        if e:
            c, _, w = e.rpartition(":")
            out[c] = int(w)
    return out


def policy_in_force():
    row = conn.execute("SELECT protocol_bps, model_bps, base_bps FROM policies ORDER BY lsn DESC LIMIT 1").fetchone()
    return tuple(row) if row else (1000, 2000, 1000)  # ledger.md's default split


DN = f"{RUN}-dn"
M_BASE, M_AD = f"{RUN}-base", f"{RUN}-adapter"


@section
def server_basics():
    check("SELECT version() answers", bool(scalar(conn, "SELECT version()")))
    check("server_version parameter", bool(conn.info.parameter_status("server_version")))
    check("epochs has one open epoch", scalar(conn, "SELECT count(*) FROM epochs WHERE status = 'open'") == 1)


@section
def parameterized_inserts():
    cur = conn.cursor()
    # text-format parameters (%t), binary-format parameters (%b), automatic (%s)
    cur.execute("INSERT INTO datanets (datanet, owner) VALUES (%t, %t)", (DN, "alice"))
    check("INSERT with text parameters", cur.rowcount in (1, -1), f"rowcount={cur.rowcount}")
    cur.execute("INSERT INTO contributions (contribution, datanet, contributor, content_hash) "
                "VALUES (%b, %b, %b, %b)", (f"{RUN}-c1", DN, "x", chash("c1")))
    check("INSERT with binary parameters", cur.rowcount in (1, -1), f"rowcount={cur.rowcount}")
    # several rows in one statement (one atomic batch), automatic parameter format
    cur.execute("INSERT INTO contributions (contribution, datanet, contributor, content_hash) "
                "VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)",
                (f"{RUN}-c2", DN, "y", chash("c2"), f"{RUN}-c3", DN, "z", chash("c3")))
    check("multi-row INSERT", cur.rowcount in (2, -1), f"rowcount={cur.rowcount}")
    cur.executemany("INSERT INTO models (model, owner, base_model, datanets) VALUES (%s, %s, %s, %s)",
                    [(M_BASE, "ann", None, DN), (M_AD, "bob", M_BASE, "")])
    check("executemany INSERT (NULL base_model, empty datanets)",
          scalar(conn, "SELECT count(*) FROM models WHERE model = %s OR model = %s", (M_BASE, M_AD)) == 2)
    # fee as int (psycopg sends int2/int4/int8 by size) and scores as text
    cur.execute("INSERT INTO inferences (inference, model, consumer, fee, attributions) "
                "VALUES (%s, %s, %s, %s, %s)", (f"{RUN}-i1", M_AD, "u1", 1001, f"{RUN}-c1:0.9,{RUN}-c2:0.3"))
    cur.execute("INSERT INTO inferences (inference, model, consumer, fee, attributions) "
                "VALUES (%b, %b, %b, %b, %b)", (f"{RUN}-i2", M_BASE, "u1", 2**40, f"{RUN}-c3:1"))
    check("INSERT inferences (fee as small and as 2^40 int)",
          scalar(conn, "SELECT count(*) FROM inferences WHERE consumer = %s AND model IN (%s, %s)",
                 ("u1", M_BASE, M_AD)) == 2)


@section
def selects_text_and_binary():
    sql = ("SELECT contribution, datanet, contributor, content_hash, lsn, revoked, inferences, earned "
           "FROM contributions WHERE datanet = %s ORDER BY contribution")
    for binary in (False, True):
        fmt = "binary" if binary else "text"
        rows = conn.cursor(binary=binary).execute(sql, (DN,)).fetchall()
        check(f"{fmt}: three contributions", [r[0] for r in rows] == [f"{RUN}-c{i}" for i in (1, 2, 3)],
              f"got {[r[0] for r in rows]}")
        if rows:
            r = rows[0]
            check(f"{fmt}: TEXT/BIGINT/BOOLEAN types",
                  isinstance(r[3], str) and isinstance(r[4], int) and isinstance(r[5], bool)
                  and isinstance(r[6], int) and isinstance(r[7], int),
                  f"types {[type(v).__name__ for v in r]}")
            check(f"{fmt}: values", r[2] == "x" and r[3] == chash("c1") and r[5] is False and r[6] == 1,
                  f"row {r}")
        inf = conn.cursor(binary=binary).execute(
            "SELECT inference, fee, attributions, lsn, ts, epoch FROM inferences "
            "WHERE inference = %s", (f"{RUN}-i1",)).fetchone()
        ok = inf is not None and isinstance(inf[4], datetime.datetime)
        check(f"{fmt}: inference row with TIMESTAMP ts", ok, f"row {inf}")
        if ok:
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            ts = inf[4].astimezone(datetime.timezone.utc).replace(tzinfo=None) if inf[4].tzinfo else inf[4]
            check(f"{fmt}: ts is UTC now-ish", abs((now - ts).total_seconds()) < 3600, f"ts {inf[4]} now {now}")
            check(f"{fmt}: fee and stored weights",
                  inf[1] == 1001 and weights(inf[2]) == {f"{RUN}-c1": 1_000_000, f"{RUN}-c2": 333_333},
                  f"fee {inf[1]} attributions {inf[2]!r}")
    # settlement.md's worked example without the revoked entry: fee 1001 on an adapter, weights
    # 1_000_000 and 333_333; with the default policy 100 + 200 + 100 + pool 601 -> 451 and 150
    P, M, B = policy_in_force()
    pool = 1001 - 1001 * P // 10000 - 1001 * M // 10000 - 1001 * B // 10000
    s1, s2 = pool * 1_000_000 // 1_333_333, pool * 333_333 // 1_333_333
    want = {f"{RUN}-c1": s1 + pool - s1 - s2, f"{RUN}-c2": s2}
    rew = dict(conn.execute("SELECT contribution, reward FROM attributions WHERE inference = %s",
                            (f"{RUN}-i1",)).fetchall())
    check("attributions.reward of the worked example", rew == want, f"got {rew}, want {want}")
    # a numeric parameter compared with a BIGINT column, binary results
    n = conn.cursor(binary=True).execute(
        "SELECT count(*) FROM inferences WHERE fee >= %s AND model = %s", (2**40, M_BASE)).fetchone()[0]
    check("binary count(*) with int parameter", n == 1, f"got {n}")


@section
def copy_from_stdin():
    cur = conn.cursor()
    rows = [(f"{RUN}-cp{i}", M_BASE, "u-copy", 100 + i, f"{RUN}-c{1 + i % 3}:1") for i in range(20)]
    with cur.copy("COPY inferences (inference, model, consumer, fee, attributions) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)
    got = conn.execute("SELECT inference, fee FROM inferences WHERE consumer = %s AND model = %s "
                       "ORDER BY inference", ("u-copy", M_BASE)).fetchall()
    want = sorted((r[0], r[3]) for r in rows)
    check("COPY text via write_row: 20 rows", got == want, f"got {got[:3]}... ({len(got)} rows), want {want[:3]}...")
    csv = "inference,model,consumer,fee,attributions\n" + "".join(
        f'{RUN}-csv{i},{M_BASE},u-csv,{7 * i},"{RUN}-c1:{i},{RUN}-c2:1.5"\n' for i in range(1, 11))
    with cur.copy("COPY inferences (inference, model, consumer, fee, attributions) "
                  "FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
        cp.write(csv[:37])      # a row split across CopyData messages
        cp.write(csv[37:])
    n = scalar(conn, "SELECT count(*) FROM inferences WHERE consumer = 'u-csv' AND model = %s", (M_BASE,))
    check("COPY CSV with HEADER: 10 rows", n == 10, f"got {n}")
    # a bad row (fee 1001.9) refuses the whole COPY: nothing of it is appended
    try:
        with cur.copy("COPY inferences (inference, model, consumer, fee, attributions) FROM STDIN") as cp:
            cp.write_row((f"{RUN}-bad1", M_BASE, "u-bad", 5, f"{RUN}-c1:1"))
            cp.write_row((f"{RUN}-bad2", M_BASE, "u-bad", "1001.9", f"{RUN}-c1:1"))
        check("COPY with a bad row -> 22023", False, "(COPY succeeded)")
    except psycopg.Error as e:
        check("COPY with a bad row -> 22023", e.sqlstate == "22023", f"(got {e.sqlstate}: {e})")
    n = scalar(conn, "SELECT count(*) FROM inferences WHERE consumer = 'u-bad'")
    check("refused COPY appended nothing", n == 0, f"got {n}")


@section
def copy_to_stdout():
    cur = conn.cursor()
    # COPY (query) TO STDOUT in text: rows as psycopg parses them back, one CopyData per row.
    with cur.copy("COPY (SELECT inference, fee FROM inferences WHERE consumer = 'u-csv' "
                  "ORDER BY inference) TO STDOUT") as cp:
        got = [tuple(r) for r in cp.rows()]
    want = [(f"{RUN}-csv{i}", str(7 * i)) for i in sorted(range(1, 11), key=lambda i: f"{RUN}-csv{i}")]
    check("COPY (SELECT …) TO STDOUT: the rows", got == want, f"got {got[:3]}, want {want[:3]}")
    check("COPY TO STDOUT's tag counts the rows", cur.rowcount == 10, f"rowcount={cur.rowcount}")
    # COPY table (columns) TO STDOUT as CSV with a header, as an export reads it.
    data = b""
    with cur.copy("COPY models (model, owner, base_model) TO STDOUT WITH (FORMAT csv, HEADER)") as cp:
        for chunk in cp:
            data += bytes(chunk)
    lines = data.decode().splitlines()
    n = scalar(conn, "SELECT count(*) FROM models")
    check("COPY models TO STDOUT CSV: header and every model", lines[0] == "model,owner,base_model"
          and len(lines) == n + 1, f"{lines[:3]} ({len(lines)} lines, {n} models)")
    # A reader may export; a file target stays refused.
    expect_error(conn, "COPY … TO a file", "42501", "COPY models TO '/tmp/models.csv'")


@section
def transactions():
    # explicit blocks on an autocommit connection
    with conn.transaction():
        conn.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (f"{DN}-commit", "tom"))
        # validated against the block's earlier writes: the datanet exists for this contribution
        conn.execute("INSERT INTO contributions (contribution, datanet, contributor, content_hash) "
                     "VALUES (%s, %s, %s, %s)", (f"{RUN}-tc1", f"{DN}-commit", "tom", chash("tc1")))
    n = scalar(conn, "SELECT contributions FROM datanets WHERE datanet = %s", (f"{DN}-commit",))
    check("committed block is visible", n == 1, f"contributions={n}")
    try:
        with conn.transaction():
            conn.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (f"{DN}-rollback", "tom"))
            raise psycopg.Rollback()
    except psycopg.Rollback:
        pass
    n = scalar(conn, "SELECT count(*) FROM datanets WHERE datanet = %s", (f"{DN}-rollback",))
    check("rolled-back block is not visible", n == 0, f"count={n}")

    # psycopg's default mode: implicit transactions, commit() / rollback()
    c2 = connect(autocommit=False)
    c2.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (f"{DN}-implicit-commit", "tom"))
    c2.commit()
    c2.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (f"{DN}-implicit-rollback", "tom"))
    c2.rollback()
    got = {r[0] for r in conn.execute("SELECT datanet FROM datanets WHERE datanet = %s OR datanet = %s",
                                      (f"{DN}-implicit-commit", f"{DN}-implicit-rollback")).fetchall()}
    check("implicit transaction: commit() visible, rollback() not", got == {f"{DN}-implicit-commit"}, f"got {got}")

    # an error inside a block: 25P02 for every statement until ROLLBACK
    c2.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (f"{DN}-aborted", "tom"))
    try:
        c2.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (DN, "dup"))
        check("duplicate inside a block -> 23505", False, "(succeeded)")
    except psycopg.Error as e:
        check("duplicate inside a block -> 23505", e.sqlstate == "23505", f"(got {e.sqlstate}: {e})")
    for what, sql in (("SELECT", "SELECT 1"),
                      ("INSERT", f"INSERT INTO datanets (datanet, owner) VALUES ('{DN}-aborted2', 'tom')")):
        try:
            c2.execute(sql)
            check(f"{what} after an error in the block -> 25P02", False, "(succeeded)")
        except psycopg.Error as e:
            check(f"{what} after an error in the block -> 25P02", e.sqlstate == "25P02", f"(got {e.sqlstate})")
    c2.rollback()
    check("after ROLLBACK the connection works", scalar(c2, "SELECT 1") == 1)
    c2.rollback()
    n = scalar(conn, "SELECT count(*) FROM datanets WHERE datanet IN (%s, %s)", (f"{DN}-aborted", f"{DN}-aborted2"))
    check("aborted block appended nothing", n == 0, f"count={n}")
    c2.close()


@section
def refusals():
    expect_error(conn, "UPDATE contributions", "25006",
                 "UPDATE contributions SET contributor = 'mallory' WHERE datanet = %s", (DN,))
    expect_error(conn, "DELETE FROM inferences", "25006", "DELETE FROM inferences WHERE model = %s", (M_BASE,))
    expect_error(conn, "INSERT INTO balances", "25006",
                 "INSERT INTO balances (account, earned, settled, pending) VALUES ('mallory', 1, 1, 0)")
    expect_error(conn, "duplicate datanet", "23505", "INSERT INTO datanets (datanet, owner) VALUES (%s, 'x')", (DN,))
    expect_error(conn, "unknown datanet", "23503",
                 "INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES (%s, %s, 'x', %s)",
                 (f"{RUN}-c9", f"{DN}-nowhere", chash("c9")))
    expect_error(conn, "missing content_hash", "23502",
                 "INSERT INTO contributions (contribution, datanet, contributor) VALUES (%s, %s, 'x')",
                 (f"{RUN}-c9", DN))
    expect_error(conn, "fee 1001.9 as a numeric parameter", "22023",
                 "INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES (%s, %s, 'u', %s, '')",
                 (f"{RUN}-i9a", M_BASE, decimal.Decimal("1001.9")))
    expect_error(conn, "score 'nan'", "22023",
                 "INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES (%s, %s, 'u', 1, %s)",
                 (f"{RUN}-i9b", M_BASE, f"{RUN}-c1:nan"))
    n = scalar(conn, "SELECT count(*) FROM contributions WHERE datanet = %s AND contributor = 'x'", (DN,))
    check("refusals changed nothing", n == 1, f"count={n}")


@section
def authentication():
    if not AUTH_PORT:
        print("skip authentication (TALLY_AUTH_PORT not set)")
        return
    try:
        connect(AUTH_PORT, "wuser", "wrong-password").close()
        check("wrong password refused", False, "(connected)")
    except psycopg.OperationalError as e:
        # libpq reports the server's error; sqlstate is 28P01 where psycopg exposes it
        check("wrong password refused (OperationalError)", e.sqlstate in (None, "28P01"), f"(sqlstate {e.sqlstate}: {e})")
    try:
        connect(AUTH_PORT, "nobody-" + RUN, "x").close()
        check("unknown user refused", False, "(connected)")
    except psycopg.OperationalError:
        check("unknown user refused (OperationalError)", True)
    w = connect(AUTH_PORT, "wuser", "wpass")
    w.execute("INSERT INTO datanets (datanet, owner) VALUES (%s, %s)", (f"{DN}-auth", "wuser"))
    check("writer (SCRAM) can write", scalar(w, "SELECT count(*) FROM datanets WHERE datanet = %s", (f"{DN}-auth",)) == 1)
    r = connect(AUTH_PORT, "ruser", "rpass")
    check("reader (SCRAM) can read", scalar(r, "SELECT count(*) FROM datanets WHERE datanet = %s", (f"{DN}-auth",)) == 1)
    expect_error(r, "reader INSERT", "42501", "INSERT INTO datanets (datanet, owner) VALUES (%s, 'ruser')",
                 (f"{DN}-reader",))
    # role is checked before append-only
    expect_error(r, "reader UPDATE", "42501", "UPDATE datanets SET owner = 'ruser'")
    try:
        with r.cursor().copy("COPY datanets (datanet, owner) FROM STDIN") as cp:
            cp.write_row((f"{DN}-reader-copy", "ruser"))
        check("reader COPY -> 42501", False, "(succeeded)")
    except psycopg.Error as e:
        check("reader COPY -> 42501", e.sqlstate == "42501", f"(got {e.sqlstate})")
    n = scalar(w, "SELECT count(*) FROM datanets WHERE datanet IN (%s, %s)", (f"{DN}-reader", f"{DN}-reader-copy"))
    check("reader's writes appended nothing", n == 0, f"count={n}")
    w.close()
    r.close()


conn.close()
print(f"psycopg_test: {passed} passed, {len(failures)} failed")
if failures:
    print("FAILED: " + "; ".join(failures))
    sys.exit(1)
print("ALL OK")
