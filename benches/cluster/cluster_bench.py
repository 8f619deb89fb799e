#!/usr/bin/env python3
"""A 3-node `tally serve` cluster on loopback: failover time and replicated ingest.

  python3 benches/cluster/cluster_bench.py --tally target/release/tally failover --kills 20
  python3 benches/cluster/cluster_bench.py --tally target/release/tally ingest --inferences 200000

failover: a writer inserts one datanet at a time through a node that is not the leader; the
leader is SIGKILLed; measured is the time from the kill to the next acknowledged write (through
a surviving node), for each of --kills kills (the killed node is restarted and caught up in
between). Prints p50/p99/max.

ingest: the wire benchmark's workload (benches/wire) by COPY into a lone node, then into the
leader of a 3-node cluster, same rows, same run; prints rows/s of each and the ratio.
Every node shares this machine's cores and disk, so the ratio is a floor for 3 machines.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "wire"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ingest"))

import psycopg  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, tally, root, node_id, peers):
        self.tally, self.id, self.peers = tally, node_id, peers
        self.data = os.path.join(root, f"node{node_id}")
        self.port = free_port()
        self.proc = None

    def start(self):
        log = open(self.data + ".log", "a")
        args = [self.tally, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}",
                "--ingest", "off"]
        if self.peers:
            args += ["--node-id", str(self.id), "--peers", self.peers]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        for line in self.proc.stdout:
            if line.startswith("tally serving"):
                return
        raise RuntimeError(f"node {self.id} did not start")

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=tally dbname=tally"

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None


def start_cluster(tally, root, size=3):
    raft = [free_port() for _ in range(size)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(raft))
    nodes = [Node(tally, root, i + 1, peers) for i in range(size)]
    for n in nodes:
        n.start()
    return nodes


def query(node, sql):
    with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def leader(nodes, not_this=None, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        for n in nodes:
            if n.proc is None:
                continue
            try:
                rows = query(n, "SELECT node FROM cluster WHERE role = 'leader'")
            except psycopg.Error:
                continue
            if rows and rows[0][0] != not_this:
                return rows[0][0]
        time.sleep(0.05)
    raise RuntimeError("no leader")


def caught_up(nodes, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            lsns = {query(n, "SELECT max(lsn) FROM events")[0][0] for n in nodes}
            if len(lsns) == 1:
                return
        except psycopg.Error:
            pass
        time.sleep(0.1)
    raise RuntimeError("the nodes did not catch up")


def failover(args):
    root = tempfile.mkdtemp(prefix="tally-cluster-bench.")
    nodes = start_cluster(args.tally, root)
    times, n = [], 0
    try:
        for k in range(args.kills):
            lead = leader(nodes)
            writer = next(x for x in nodes if x.id != lead)
            conn = psycopg.connect(writer.dsn(), autocommit=True)
            conn.execute(f"INSERT INTO datanets VALUES ('f-{n}', 'o')")
            n += 1
            nodes[lead - 1].kill()
            killed = time.perf_counter()
            while True:
                try:
                    conn.execute(f"INSERT INTO datanets VALUES ('f-{n}', 'o')")
                    n += 1
                    break
                except psycopg.Error:
                    n += 1  # an unknown outcome: never reuse the id
                    if conn.closed:
                        conn = psycopg.connect(writer.dsn(), autocommit=True)
            times.append(time.perf_counter() - killed)
            conn.close()
            nodes[lead - 1].start()
            caught_up(nodes)
            print(f"kill {k + 1}: next acknowledged write after {times[-1]:.3f} s", file=sys.stderr)
    finally:
        for x in nodes:
            x.stop()
        shutil.rmtree(root, ignore_errors=True)
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    print(json.dumps({"bench": "failover", "kills": len(times), "p50_s": round(statistics.median(times), 3),
                      "p99_s": round(p99, 3), "max_s": round(times[-1], 3)}))


def applied_lsn(node):
    rows = query(node, "SELECT applied_lsn FROM cluster WHERE applied_lsn IS NOT NULL")
    return rows[0][0] if rows else 0


def watch_lag(nodes, leader, lags, stop):
    """Every 100 ms while the load runs: how many events each follower has applied fewer
    than the leader (each read right after the leader's)."""
    while not stop.is_set():
        try:
            lead = applied_lsn(leader)
            for n in nodes:
                if n is not leader:
                    lags.append(max(0, lead - applied_lsn(n)))
        except psycopg.Error:
            pass
        time.sleep(0.1)


def ingest(args):
    import wire_bench
    w = wire_bench.Workload(wire_bench.DEFAULT_SEED, args.inferences, args.chunk)
    stmt = wire_bench.COPY_INFERENCES.format(opts="(FORMAT csv)")
    result = {}
    for mode in ("lone", "cluster"):
        root = tempfile.mkdtemp(prefix="tally-cluster-bench.")
        if mode == "lone":
            nodes = [Node(args.tally, root, 1, None)]
            nodes[0].start()
            target = nodes[0]
        else:
            nodes = start_cluster(args.tally, root)
            target = nodes[leader(nodes) - 1]
        try:
            import ingest_bench
            ingest_bench.universe(target.dsn(), w)
            lags, stop = [], threading.Event()
            if mode == "cluster":
                watcher = threading.Thread(target=watch_lag, args=(nodes, target, lags, stop))
                watcher.start()
            with psycopg.connect(target.dsn(), autocommit=True) as conn:
                cur = conn.cursor()
                t0 = time.perf_counter()
                for data in w.chunks:
                    wire_bench.copy_in(cur, stmt, data)
                seconds = time.perf_counter() - t0
            if mode == "cluster":
                stop.set()
                watcher.join()
                caught_up(nodes)
                lags.sort()
                result["follower_lag_events_p50"] = lags[len(lags) // 2] if lags else None
                result["follower_lag_events_max"] = lags[-1] if lags else None
            result[mode] = round(args.inferences / seconds)
        finally:
            for x in nodes:
                x.stop()
            shutil.rmtree(root, ignore_errors=True)
    result["ratio"] = round(result["cluster"] / result["lone"], 3)
    print(json.dumps({"bench": "replicated COPY rows/s", "inferences": args.inferences, **result}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tally", required=True)
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("failover")
    f.add_argument("--kills", type=int, default=20)
    i = sub.add_parser("ingest")
    i.add_argument("--inferences", type=int, default=200_000)
    i.add_argument("--chunk", type=int, default=50_000)
    args = p.parse_args()
    {"failover": failover, "ingest": ingest}[args.what](args)


if __name__ == "__main__":
    main()
