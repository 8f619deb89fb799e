#!/usr/bin/env python3
"""Numbers check for Tally over the PostgreSQL wire protocol (psycopg 3).

Loads a deterministic workload into a FRESH ledger (5 datanets, 50 contributions, base
models and adapters with lineage-correct attributions, 5,000 inferences, two policy changes,
two revocations, one settlement closing the first epoch in the middle) through COPY and
INSERT, then checks every derived table two ways:
  * consistency: the tables agree with each other (conservation per inference and per epoch
    and role, balances = sum of rewards, settled/pending by epoch status, settlements.total =
    epochs.fees = sum of payouts, payouts_root = RFC 9162 root of the payouts table, ...);
  * reference: every number equals an independent implementation of settlement.md below.

Usage:
  numbers_check.py [PORT] [--phase all|load|check]
Env: TALLY_PORT (default 5433), TALLY_HOST (127.0.0.1), TALLY_USER (tally), TALLY_PASSWORD,
TALLY_DB (tally). `--phase load` then restarting the server then `--phase check` checks
that the numbers survive a restart (replay from the log). Exit 0 and "ALL OK" when every check
passes, 1 on failed checks, 2 when the server is unusable (not fresh, cannot connect, load refused).
"""
import hashlib
import json
import math
import os
import random
import sys
from collections import defaultdict

try:
    import psycopg
except ImportError:
    sys.exit("numbers_check: psycopg 3 is not installed (pip install 'psycopg[binary]>=3.1')")

SEED = 20261125
N_INF = 5000
PROTOCOL = "$protocol"
DEFAULT_POLICY = (1000, 2000, 1000)


# ---------------------------------------------------------------- workload

def content_hash(i):
    return hashlib.sha256(f"numbers-check-content-{i}".encode()).hexdigest()


def build_workload():
    """The workload as a list of batches: (kind, rows, how) in the order they are sent."""
    rng = random.Random(SEED)
    datanets = [(f"nc-dn-{i}", f"nc-owner-{i}") for i in range(5)]
    accounts = [f"nc-acct-{i}" for i in range(12)]
    contributions = []
    for i in range(50):
        dn = datanets[i % 5][0] if i < 5 else rng.choice(datanets)[0]
        contributions.append((f"nc-c-{i:02d}", dn, rng.choice(accounts), content_hash(i)))
    # (model, owner, base_model or None, datanets list)
    models = [
        ("nc-base-a", "nc-lab-a", None, ["nc-dn-0", "nc-dn-1"]),
        ("nc-base-b", "nc-acct-1", None, ["nc-dn-2"]),   # owner also a contributor
        ("nc-base-c", "nc-lab-b", None, []),             # no datanets
        ("nc-ad-a1", "nc-lab-b", "nc-base-a", ["nc-dn-3"]),
        ("nc-ad-b1", "nc-lab-a", "nc-base-b", ["nc-dn-4", "nc-dn-0"]),
        ("nc-ad-c1", "nc-acct-2", "nc-base-c", []),      # empty lineage: pool -> $protocol
        ("nc-ad-a2", "nc-lab-a", "nc-base-a", ["nc-dn-2"]),  # same owner as its base
    ]
    by_model = {m[0]: m for m in models}
    by_dn = defaultdict(list)
    for c in contributions:
        by_dn[c[1]].append(c[0])

    def lineage(model):
        _, _, base, dns = by_model[model]
        dns = list(dns) + (list(by_model[base][3]) if base else [])
        return [c for dn in dns for c in by_dn[dn]]

    def score(r):
        if r < 0.08:
            return "0"
        if r < 0.16:
            return rng.choice(["1", "2", "3", "7.", ".5", "0.25", "1e-3", "2E+2", "1.5e-9", "4.0E0"])
        if r < 0.24:
            return "0.5"  # ties
        return f"{rng.random() * 10:.4f}"

    inferences = []
    for i in range(N_INF):
        model = rng.choice(models)[0]
        r = rng.random()
        if r < 0.03:
            fee = 0
        elif r < 0.06:
            fee = 2 ** 40
        elif r < 0.5:
            fee = rng.randrange(1, 1000)
        else:
            fee = rng.randrange(1000, 10 ** 7)
        pool = lineage(model)
        if i % 97 == 0 and len(pool) >= 3:
            # x = 0.5 exactly: half away from zero gives weight 1, half-to-even would give 0
            picked = rng.sample(pool, 3)
            entries = [(picked[0], "2000000"), (picked[1], "1"), (picked[2], "3")]
        else:
            k = rng.randint(0, min(8, len(pool))) if pool else 0
            entries = [(c, score(rng.random())) for c in rng.sample(pool, k)]
        attrs = ",".join(f"{c}:{s}" for c, s in entries)
        inferences.append((f"nc-i-{i:05d}", model, f"nc-user-{rng.randrange(20)}", fee, attrs))

    models_rows = [(m, o, b, ",".join(d)) for m, o, b, d in models]
    batches = [
        ("datanets", datanets, "copy-text"),
        ("contributions", contributions, "copy-csv-header"),
        ("models", models_rows, "copy-csv"),
        ("inferences", inferences[0:1000], "copy-rows"),
        ("revocations", [("nc-c-03", "takedown")], "insert"),   # epoch 1, before it closes
        ("inferences", inferences[1000:1500], "copy-csv"),
        ("policies", [(1500, 2500, 500)], "insert"),
        ("inferences", inferences[1500:2500], "copy-rows"),
        ("settlements", [("OPEN",)], "insert"),                  # closes epoch 1
        ("inferences", inferences[2500:3500], "copy-csv"),
        ("policies", [(0, 3000, 0)], "insert"),
        ("inferences", inferences[3500:4000], "copy-rows"),
        ("revocations", [("nc-c-07", "spam")], "insert"),        # open epoch 2
        ("inferences", inferences[4000:5000], "copy-csv-header"),
    ]
    return batches


COLUMNS = {
    "datanets": ("datanet", "owner"),
    "contributions": ("contribution", "datanet", "contributor", "content_hash"),
    "models": ("model", "owner", "base_model", "datanets"),
    "inferences": ("inference", "model", "consumer", "fee", "attributions"),
    "revocations": ("contribution", "reason"),
    "policies": ("protocol_bps", "model_bps", "base_bps"),
    "settlements": ("epoch",),
}
KIND = {"datanets": "datanet", "contributions": "contribution", "models": "model",
        "inferences": "inference", "revocations": "revocation", "policies": "policy",
        "settlements": "settlement"}


# ---------------------------------------------------------------- reference settlement.md

def weight_of(s, m):
    x = s / m * 1_000_000          # IEEE-754 double, in exactly this order
    f = math.floor(x)
    return int(f + 1 if x - f >= 0.5 else f)  # half away from zero (x >= 0)


def weights(entries):
    scores = [float(s) for _, s in entries]
    m = max(scores) if scores else 0.0
    if m == 0:
        return [(c, 0) for c, _ in entries]
    return [(c, weight_of(s, m)) for (c, _), s in zip(entries, scores)]


def parse_attrs(text):
    if not text:
        return []
    out = []
    for e in text.split(","):
        c, _, s = e.rpartition(":")
        out.append((c, s))
    return out


class Reference:
    """Replays the workload's events in order and settles them per settlement.md."""

    def __init__(self, batches):
        self.lsn = 0
        self.kinds = {}
        self.datanets = {}        # id -> owner
        self.contribs = {}        # id -> (datanet, contributor, lsn)
        self.models = {}          # id -> (owner, base, datanets)
        self.infs = []            # dicts
        self.revoked = {}         # contribution -> lsn
        self.revocations = []
        self.policies = []        # (p, m, b, lsn)
        self.policy = DEFAULT_POLICY
        self.open_epoch = 1
        self.epoch_open_lsn = {1: 0}
        self.epoch_close_lsn = {}
        for table, rows, _ in batches:
            for row in rows:
                self.lsn += 1
                self.kinds[self.lsn] = KIND[table]
                self.apply(table, row)
        self.settle()

    def apply(self, table, row):
        lsn = self.lsn
        if table == "datanets":
            self.datanets[row[0]] = row[1]
        elif table == "contributions":
            self.contribs[row[0]] = (row[1], row[2], lsn)
        elif table == "models":
            self.models[row[0]] = (row[1], row[2], row[3])
        elif table == "inferences":
            inf, model, consumer, fee, attrs = row
            self.infs.append(dict(inference=inf, model=model, consumer=consumer, fee=fee,
                                  entries=weights(parse_attrs(attrs)), lsn=lsn,
                                  epoch=self.open_epoch, policy=self.policy))
        elif table == "revocations":
            self.revoked[row[0]] = lsn
            self.revocations.append((row[0], row[1], lsn))
        elif table == "policies":
            self.policy = tuple(row)
            self.policies.append((*row, lsn))
        elif table == "settlements":
            self.epoch_close_lsn[self.open_epoch] = lsn
            self.open_epoch += 1
            self.epoch_open_lsn[self.open_epoch] = lsn

    def valid(self, c, epoch):
        r = self.revoked.get(c)
        if r is None:
            return True
        close = self.epoch_close_lsn.get(epoch)
        return close is not None and r > close

    def settle(self):
        self.rewards = defaultdict(int)        # (epoch, account, role) -> amount
        self.entry_reward = {}                 # (inference, contribution) -> reward
        for inf in self.infs:
            fee, (P, M, B) = inf["fee"], inf["policy"]
            owner, base, _ = self.models[inf["model"]]
            protocol = fee * P // 10000
            if base:
                model_part, base_part = fee * M // 10000, fee * B // 10000
            else:
                model_part, base_part = fee * (M + B) // 10000, 0
            pool = fee - protocol - model_part - base_part
            e = inf["epoch"]
            self.rewards[(e, PROTOCOL, "protocol")] += protocol
            self.rewards[(e, owner, "model")] += model_part
            if base:
                self.rewards[(e, self.models[base][0], "base_model")] += base_part
            ok = [(i, c, w) for i, (c, w) in enumerate(inf["entries"]) if w > 0 and self.valid(c, e)]
            W = sum(w for _, _, w in ok)
            shares = {c: 0 for c, _ in inf["entries"]}
            if W == 0:
                self.rewards[(e, PROTOCOL, "protocol")] += pool
                inf["contrib_total"] = 0
            else:
                for _, c, w in ok:
                    shares[c] = pool * w // W
                dust = pool - sum(shares.values())
                top = max(w for _, _, w in ok)
                first_top = next(c for _, c, w in ok if w == top)
                shares[first_top] += dust
                for c, amt in shares.items():
                    self.rewards[(e, self.contribs[c][1], "contributor")] += amt
                inf["contrib_total"] = pool
            inf["shares"] = (protocol, model_part, base_part, pool)
            for c, amt in shares.items():
                self.entry_reward[(inf["inference"], c)] = amt
        self.rewards = {k: v for k, v in self.rewards.items() if v > 0}

    # derived tables -------------------------------------------------------
    def tables(self):
        t = {}
        t["rewards"] = dict(self.rewards)
        bal = defaultdict(lambda: [0, 0, 0])
        for (e, acct, _), amt in self.rewards.items():
            b = bal[acct]
            b[0] += amt
            b[1 if e in self.epoch_close_lsn else 2] += amt
        t["balances"] = {a: tuple(v) for a, v in bal.items()}
        pay = defaultdict(int)
        for (e, acct, _), amt in self.rewards.items():
            if e in self.epoch_close_lsn:
                pay[(e, acct)] += amt
        t["payouts"] = {k: v for k, v in pay.items() if v > 0}
        ep = {}
        for e in sorted(self.epoch_open_lsn):
            infs = [i for i in self.infs if i["epoch"] == e]
            closed = e in self.epoch_close_lsn
            ep[e] = ("closed" if closed else "open", self.epoch_open_lsn[e],
                     self.epoch_close_lsn.get(e), len(infs), sum(i["fee"] for i in infs))
        t["epochs"] = ep
        t["settlements"] = {e: (lsn, ep[e][4], merkle_root(
            [(a, amt) for (pe, a), amt in t["payouts"].items() if pe == e]))
            for e, lsn in self.epoch_close_lsn.items()}
        c_earned, c_infs = defaultdict(int), defaultdict(int)
        dn_attr = defaultdict(int)
        for inf in self.infs:
            for c, _ in inf["entries"]:
                c_earned[c] += self.entry_reward[(inf["inference"], c)]
                c_infs[c] += 1
                dn_attr[self.contribs[c][0]] += 1
        t["contributions"] = {c: (dn, who, lsn, c in self.revoked, self.revoked.get(c),
                                  c_infs[c], c_earned[c])
                              for c, (dn, who, lsn) in self.contribs.items()}
        dn_count, dn_earned = defaultdict(int), defaultdict(int)
        for c, (dn, _, _) in self.contribs.items():
            dn_count[dn] += 1
            dn_earned[dn] += c_earned[c]
        t["datanets"] = {d: (o, dn_count[d], dn_attr[d], dn_earned[d]) for d, o in self.datanets.items()}
        m_infs, m_fees = defaultdict(int), defaultdict(int)
        for inf in self.infs:
            m_infs[inf["model"]] += 1
            m_fees[inf["model"]] += inf["fee"]
        t["models"] = {m: (o, b, set(d.split(",")) if d else set(), m_infs[m], m_fees[m])
                       for m, (o, b, d) in self.models.items()}
        t["inferences"] = {i["inference"]: (i["model"], i["consumer"], i["fee"], dict(i["entries"]),
                                            i["lsn"], i["epoch"]) for i in self.infs}
        t["attributions"] = {(i["inference"], c): (i["lsn"], i["epoch"], self.contribs[c][1], w,
                                                   self.entry_reward[(i["inference"], c)])
                             for i in self.infs for c, w in i["entries"]}
        t["policies"] = {lsn: (p, m, b, 10000 - p - m - b) for p, m, b, lsn in self.policies}
        t["revocations"] = {c: (r, lsn) for c, r, lsn in self.revocations}
        t["events"] = dict(self.kinds)
        return t


def merkle_root(payouts):
    """RFC 9162 Merkle tree hash over payouts sorted by account (bytewise), hex."""
    leaves = [a.encode() + b"\x00" + amt.to_bytes(8, "big")
              for a, amt in sorted(payouts, key=lambda p: p[0].encode())]

    def mth(ls):
        if not ls:
            return hashlib.sha256(b"").digest()
        if len(ls) == 1:
            return hashlib.sha256(b"\x00" + ls[0]).digest()
        k = 1
        while k * 2 < len(ls):
            k *= 2
        return hashlib.sha256(b"\x01" + mth(ls[:k]) + mth(ls[k:])).digest()

    return mth(leaves).hex()


# ---------------------------------------------------------------- wire

def conninfo(argv):
    port = next((a for a in argv if a.isdigit()), None) or os.environ.get("TALLY_PORT", "5433")
    kw = dict(host=os.environ.get("TALLY_HOST", "127.0.0.1"), port=int(port),
              user=os.environ.get("TALLY_USER", "tally"), dbname=os.environ.get("TALLY_DB", "tally"),
              connect_timeout=10)
    if os.environ.get("TALLY_PASSWORD"):
        kw["password"] = os.environ["TALLY_PASSWORD"]
    return kw


def csv_field(v):
    if v is None:
        return ""
    s = str(v)
    if any(ch in s for ch in ',"\n\r') or s == "":
        return '"' + s.replace('"', '""') + '"'
    return s


def text_field(v):
    if v is None:
        return "\\N"
    return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def load(conn, batches):
    cur = conn.cursor()
    for table, rows, how in batches:
        cols = COLUMNS[table]
        collist = ", ".join(cols)
        try:
            if how == "insert":
                for row in rows:
                    if table == "settlements":
                        cur.execute("SELECT epoch FROM epochs WHERE status = 'open'")
                        (epoch,) = cur.fetchone()
                        row = (epoch,)
                    ph = ", ".join(["%s"] * len(cols))
                    cur.execute(f"INSERT INTO {table} ({collist}) VALUES ({ph})", row)
            elif how == "copy-rows":     # psycopg formats each row (text format)
                with cur.copy(f"COPY {table} ({collist}) FROM STDIN") as cp:
                    for row in rows:
                        cp.write_row(row)
            elif how == "copy-text":
                data = "".join("\t".join(text_field(v) for v in row) + "\n" for row in rows)
                with cur.copy(f"COPY {table} ({collist}) FROM STDIN") as cp:
                    cp.write(data)
            elif how in ("copy-csv", "copy-csv-header"):
                header = how == "copy-csv-header"
                data = (",".join(cols) + "\n") if header else ""
                data += "".join(",".join(csv_field(v) for v in row) + "\n" for row in rows)
                opts = "FORMAT csv, HEADER true" if header else "FORMAT csv"
                with cur.copy(f"COPY {table} ({collist}) FROM STDIN WITH ({opts})") as cp:
                    # send in pieces that split rows, as real clients do
                    for i in range(0, len(data), 8191):
                        cp.write(data[i:i + 8191])
            else:
                raise AssertionError(how)
        except psycopg.Error as e:
            print(f"numbers_check: LOAD REFUSED: {how} into {table} ({len(rows)} rows): "
                  f"SQLSTATE {e.sqlstate}: {e}", file=sys.stderr)
            sys.exit(2)
    print(f"loaded {sum(len(r) for _, r, _ in batches)} events in {len(batches)} batches")


# ---------------------------------------------------------------- checks

class Checker:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def eq(self, what, got, want, limit=5):
        """Compare two dicts (or values); print up to `limit` differing keys."""
        if got == want:
            self.passed += 1
            return True
        self.failed += 1
        if isinstance(got, dict) and isinstance(want, dict):
            keys = sorted(set(got) | set(want), key=repr)
            diffs = [k for k in keys if got.get(k, "<missing>") != want.get(k, "<missing>")]
            print(f"FAIL {what}: {len(diffs)} of {len(keys)} keys differ (got vs want):")
            for k in diffs[:limit]:
                print(f"    {k!r}: {got.get(k, '<missing>')!r} vs {want.get(k, '<missing>')!r}")
        else:
            print(f"FAIL {what}: got {got!r}, want {want!r}")
        return False

    def true(self, what, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {what} {detail}")
        return cond


def q(cur, sql):
    cur.execute(sql)
    return cur.fetchall()


def fetch(cur):
    """Read every table the checks need; returns a dict of lists of tuples."""
    t = {}
    t["datanets"] = q(cur, "SELECT datanet, owner, contributions, attributions, earned FROM datanets")
    t["contributions"] = q(cur, "SELECT contribution, datanet, contributor, content_hash, lsn, revoked,"
                                " revoked_lsn, inferences, earned FROM contributions")
    t["models"] = q(cur, "SELECT model, owner, base_model, datanets, lsn, inferences, fees FROM models")
    t["inferences"] = q(cur, "SELECT inference, model, consumer, fee, attributions, lsn, ts, epoch"
                             " FROM inferences")
    t["attributions"] = q(cur, "SELECT inference, lsn, epoch, contribution, contributor, weight, reward"
                               " FROM attributions")
    t["rewards"] = q(cur, "SELECT epoch, account, role, amount FROM rewards")
    t["balances"] = q(cur, "SELECT account, earned, settled, pending FROM balances")
    t["payouts"] = q(cur, "SELECT epoch, account, amount FROM payouts")
    t["epochs"] = q(cur, "SELECT epoch, status, opened_lsn, closed_lsn, inferences, fees FROM epochs")
    t["settlements"] = q(cur, "SELECT epoch, lsn, ts, total, payouts_root FROM settlements")
    t["policies"] = q(cur, "SELECT protocol_bps, model_bps, base_bps, lsn, contributors_bps FROM policies")
    t["revocations"] = q(cur, "SELECT contribution, reason, lsn, ts FROM revocations")
    t["events"] = q(cur, "SELECT lsn, ts, kind, body FROM events ORDER BY lsn")
    return t


def consistency(ck, t):
    """Checks that need no reference: the tables must agree with each other (settlement.md)."""
    epochs = {r[0]: r for r in t["epochs"]}
    closed = {e for e, r in epochs.items() if r[1] == "closed"}
    open_ = [e for e, r in epochs.items() if r[1] == "open"]
    ck.true("exactly one open epoch, the last", len(open_) == 1 and open_[0] == max(epochs),
            f"epochs={sorted(epochs.items())}")
    ck.true("epoch statuses are open/closed", all(r[1] in ("open", "closed") for r in t["epochs"]))

    infs = {r[0]: r for r in t["inferences"]}
    by_epoch_fees, by_epoch_n = defaultdict(int), defaultdict(int)
    for r in t["inferences"]:
        by_epoch_fees[r[7]] += r[3]
        by_epoch_n[r[7]] += 1
    ck.eq("epochs.fees == sum(inferences.fee) per epoch", {e: r[5] for e, r in epochs.items()},
          {e: by_epoch_fees.get(e, 0) for e in epochs})
    ck.eq("epochs.inferences == count(inferences) per epoch", {e: r[4] for e, r in epochs.items()},
          {e: by_epoch_n.get(e, 0) for e in epochs})
    rew_epoch = defaultdict(int)
    for e, _, _, amt in t["rewards"]:
        rew_epoch[e] += amt
    ck.eq("conservation per epoch: sum(rewards.amount) == epochs.fees",
          {e: rew_epoch.get(e, 0) for e in epochs}, {e: r[5] for e, r in epochs.items()})
    ck.true("rewards rows have amount > 0", all(r[3] > 0 for r in t["rewards"]))
    ck.true("rewards roles are known",
            all(r[2] in ("protocol", "model", "base_model", "contributor") for r in t["rewards"]),
            sorted({r[2] for r in t["rewards"]}))

    # per inference: fee split from the policy in force (policies table, by lsn) and the model
    pols = sorted((r[3], (r[0], r[1], r[2])) for r in t["policies"])
    models = {r[0]: r for r in t["models"]}
    contrib_sum = defaultdict(int)
    for r in t["attributions"]:
        contrib_sum[r[0]] += r[6]
    role_want = defaultdict(int)
    bad = []
    for inf, model, _, fee, _, lsn, _, epoch in t["inferences"]:
        P, M, B = DEFAULT_POLICY
        for plsn, p in pols:
            if plsn < lsn:
                P, M, B = p
        base = models[model][2]
        protocol = fee * P // 10000
        if base:
            mp, bp = fee * M // 10000, fee * B // 10000
        else:
            mp, bp = fee * (M + B) // 10000, 0
        pool = fee - protocol - mp - bp
        got = contrib_sum.get(inf, 0)
        if got not in (0, pool):
            bad.append((inf, fee, pool, got))
        role_want[(epoch, "protocol")] += protocol + (pool if got == 0 else 0)
        role_want[(epoch, "model")] += mp
        role_want[(epoch, "base_model")] += bp
        role_want[(epoch, "contributor")] += got
    ck.true("conservation per inference: sum(attributions.reward) is the pool or 0", not bad,
            f"{len(bad)} inferences, e.g. (inference, fee, pool, got) {bad[:3]}")
    role_got = defaultdict(int)
    for e, _, role, amt in t["rewards"]:
        role_got[(e, role)] += amt
    keys = set(role_got) | {k for k, v in role_want.items() if v}
    ck.eq("rewards per epoch and role == fee split of its inferences",
          {k: role_got.get(k, 0) for k in keys}, {k: role_want.get(k, 0) for k in keys})

    # balances
    want_bal = defaultdict(lambda: [0, 0, 0])
    for e, acct, _, amt in t["rewards"]:
        b = want_bal[acct]
        b[0] += amt
        b[1 if e in closed else 2] += amt
    ck.eq("balances (earned, settled, pending) == rewards by epoch status",
          {r[0]: (r[1], r[2], r[3]) for r in t["balances"]}, {a: tuple(v) for a, v in want_bal.items()})
    ck.true("balances: earned == settled + pending", all(r[1] == r[2] + r[3] for r in t["balances"]))

    # payouts and settlements
    want_pay = defaultdict(int)
    for e, acct, _, amt in t["rewards"]:
        if e in closed:
            want_pay[(e, acct)] += amt
    ck.eq("payouts == per-account rewards of closed epochs",
          {(r[0], r[1]): r[2] for r in t["payouts"]}, {k: v for k, v in want_pay.items() if v > 0})
    sets = {r[0]: r for r in t["settlements"]}
    ck.eq("settlements exist exactly for the closed epochs", set(sets), closed)
    ck.eq("settlements.total == epochs.fees", {e: r[3] for e, r in sets.items()},
          {e: epochs[e][5] for e in sets if e in epochs})
    pay_sum = defaultdict(int)
    for e, _, amt in t["payouts"]:
        pay_sum[e] += amt
    ck.eq("settlements.total == sum(payouts)", {e: r[3] for e, r in sets.items()},
          {e: pay_sum.get(e, 0) for e in sets})
    ck.eq("settlements.payouts_root == RFC 9162 root of the payouts table",
          {e: r[4] for e, r in sets.items()},
          {e: merkle_root([(r[1], r[2]) for r in t["payouts"] if r[0] == e]) for e in sets})
    ck.eq("settlements.lsn == epochs.closed_lsn", {e: r[1] for e, r in sets.items()},
          {e: epochs[e][3] for e in sets if e in epochs})

    # contributions / datanets / models derived columns
    c_earned, c_infs = defaultdict(int), defaultdict(set)
    for r in t["attributions"]:
        c_earned[r[3]] += r[6]
        c_infs[r[3]].add(r[0])
    ck.eq("contributions.earned == sum(attributions.reward)",
          {r[0]: r[8] for r in t["contributions"]}, {r[0]: c_earned.get(r[0], 0) for r in t["contributions"]})
    ck.eq("contributions.inferences == inferences naming it",
          {r[0]: r[7] for r in t["contributions"]}, {r[0]: len(c_infs.get(r[0], ())) for r in t["contributions"]})
    dn_earned = defaultdict(int)
    for r in t["contributions"]:
        dn_earned[r[1]] += r[8]
    ck.eq("datanets.earned == sum(contributions.earned)",
          {r[0]: r[4] for r in t["datanets"]}, {r[0]: dn_earned.get(r[0], 0) for r in t["datanets"]})
    m_n, m_f = defaultdict(int), defaultdict(int)
    for r in t["inferences"]:
        m_n[r[1]] += 1
        m_f[r[1]] += r[3]
    ck.eq("models.(inferences, fees) == its inferences",
          {r[0]: (r[5], r[6]) for r in t["models"]}, {r[0]: (m_n.get(r[0], 0), m_f.get(r[0], 0)) for r in t["models"]})
    contrib_earned_total = sum(r[3] for r in t["rewards"] if r[2] == "contributor")
    ck.eq("sum(contributor rewards) == sum(contributions.earned)", contrib_earned_total,
          sum(r[8] for r in t["contributions"]))
    ck.true("attributions rows belong to inferences", all(r[0] in infs for r in t["attributions"]))

    # events: dense lsns, non-decreasing ts, compact JSON bodies
    lsns = [r[0] for r in t["events"]]
    ck.eq("events.lsn is 1..N", lsns, list(range(1, len(lsns) + 1)))
    ts = [r[1] for r in t["events"]]
    ck.true("events.ts never decreases", all(a <= b for a, b in zip(ts, ts[1:])))
    bad_body = []
    for lsn, _, kind, body in t["events"]:
        try:
            obj = json.loads(body)
            if json.dumps(obj, separators=(",", ":"), ensure_ascii=False) != body:
                bad_body.append((lsn, "not compact", body[:80]))
        except ValueError as e:
            bad_body.append((lsn, str(e), body[:80]))
    ck.true("events.body is compact JSON", not bad_body, bad_body[:3])


def reference_checks(ck, t, ref):
    w = ref.tables()
    ck.eq("rewards", {(r[0], r[1], r[2]): r[3] for r in t["rewards"]}, w["rewards"])
    ck.eq("balances", {r[0]: (r[1], r[2], r[3]) for r in t["balances"]}, w["balances"])
    ck.eq("payouts", {(r[0], r[1]): r[2] for r in t["payouts"]}, w["payouts"])
    ck.eq("epochs", {r[0]: tuple(r[1:]) for r in t["epochs"]}, w["epochs"])
    ck.eq("settlements (lsn, total, payouts_root)",
          {r[0]: (r[1], r[3], r[4]) for r in t["settlements"]}, w["settlements"])
    ck.eq("contributions (datanet, contributor, lsn, revoked, revoked_lsn, inferences, earned)",
          {r[0]: (r[1], r[2], r[4], r[5], r[6], r[7], r[8]) for r in t["contributions"]},
          w["contributions"])
    ck.eq("contributions.content_hash", {r[0]: r[3] for r in t["contributions"]},
          {c: content_hash(int(c.split("-")[-1])) for c in w["contributions"]})
    ck.eq("datanets (owner, contributions, attributions, earned)",
          {r[0]: tuple(r[1:]) for r in t["datanets"]}, w["datanets"])
    ck.eq("models (owner, base_model, datanets, inferences, fees)",
          {r[0]: (r[1], r[2], set(r[3].split(",")) if r[3] else set(), r[5], r[6])
           for r in t["models"]}, w["models"])

    def attrs_dict(s):
        return {c: int(x) for c, x in parse_attrs(s)}

    ck.eq("inferences (model, consumer, fee, weights, lsn, epoch)",
          {r[0]: (r[1], r[2], r[3], attrs_dict(r[4]), r[5], r[7]) for r in t["inferences"]},
          w["inferences"])
    ck.eq("attributions (lsn, epoch, contributor, weight, reward)",
          {(r[0], r[3]): (r[1], r[2], r[4], r[5], r[6]) for r in t["attributions"]}, w["attributions"])
    ck.eq("policies", {r[3]: (r[0], r[1], r[2], r[4]) for r in t["policies"]}, w["policies"])
    ck.eq("revocations", {r[0]: (r[1], r[2]) for r in t["revocations"]}, w["revocations"])
    ck.eq("events (lsn -> kind)", {r[0]: r[2] for r in t["events"]}, w["events"])
    # inference events carry the stored weights as [contribution, weight] pairs
    bodies = {}
    for lsn, _, kind, body in t["events"]:
        if kind == "inference":
            try:
                o = json.loads(body)
                bodies[lsn] = (o.get("inference"), o.get("fee"), [tuple(p) for p in o.get("attributions", [])])
            except (ValueError, TypeError, AttributeError):
                bodies[lsn] = body
    ck.eq("events.body of inferences (inference, fee, attributions pairs)", bodies,
          {i["lsn"]: (i["inference"], i["fee"], [tuple(e) for e in i["entries"]]) for i in ref.infs})


def main():
    argv = sys.argv[1:]
    phase = "all"
    if "--phase" in argv:
        phase = argv[argv.index("--phase") + 1]
    batches = build_workload()
    ref = Reference(batches)
    try:
        conn = psycopg.connect(**conninfo(argv), autocommit=True)
    except psycopg.Error as e:
        sys.exit(f"numbers_check: cannot connect: {e}")
    cur = conn.cursor()
    ck = Checker()
    if phase in ("all", "load"):
        (n,) = q(cur, "SELECT count(*) FROM events")[0]
        if n != 0:
            print(f"numbers_check: the ledger is not fresh ({n} events): start the server on an "
                  "empty data directory", file=sys.stderr)
            sys.exit(2)
        # ledger.md: epoch 1 is open from the start, its opened_lsn is 0
        ck.eq("a fresh ledger's epochs", q(cur, "SELECT epoch, status, opened_lsn FROM epochs"),
              [(1, "open", 0)])
        load(conn, batches)
    if phase in ("all", "check"):
        t = fetch(cur)
        consistency(ck, t)
        reference_checks(ck, t, ref)
    print(f"numbers_check: {ck.passed} passed, {ck.failed} failed")
    if ck.failed:
        sys.exit(1)
    print("ALL OK")


if __name__ == "__main__":
    main()
