#!/usr/bin/env python3
"""Streaming ingest into Tally with plain pyarrow.flight (no Tally SDK), exactly once.

A producer streams 20 numbered batches of inferences (8 attributions each). Its first
connection is killed (SIGKILL of the process) after 5 acknowledgements, with more batches
sent and unacknowledged; the producer reconnects, resends every batch from the last
acknowledged one on, and the ledger (read back over SQL with psycopg) must count every fee
exactly once. Also: a refused batch ends the stream naming its row, field and SQLSTATE, and
the batches before it stay; with users, a reader is refused and a writer authenticates with
`authenticate_basic_token`.

Usage: flight_ingest.py INGEST_PORT PG_PORT [READER:PASSWORD WRITER:PASSWORD]
Exit 0 and "ALL OK" when every check passed.
"""
import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pyarrow as pa
import pyarrow.flight as flight

BATCHES, ROWS, ENTRIES = 20, 50, 8
PRODUCER = "py-exactly-once"
failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def fee(seq, r):
    return 1_000 + seq * 100 + r


def batch(seq):
    """Batch `seq` of the stream: ROWS inferences, attributions as List<Struct>."""
    item = pa.struct([("contribution", pa.string()), ("score", pa.float64())])
    rows = range(ROWS)
    return pa.record_batch(
        {
            "inference": [f"fl-{seq}-{r}" for r in rows],
            "model": ["fl-model"] * ROWS,
            "consumer": [f"user-{r % 7}" for r in rows],
            "fee": pa.array([fee(seq, r) for r in rows], pa.int64()),
            "attributions": pa.array(
                [[{"contribution": f"fl-c{k}", "score": (k + 1) / 8} for k in range(ENTRIES)]
                 for _ in rows],
                pa.list_(item),
            ),
        }
    )


def put(client, options, seqs, on_ack=None, table="inferences", make=batch):
    """Streams batches `seqs`, reading acknowledgements concurrently; returns the acks."""
    first = make(seqs[0])
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), first.schema, options)
    acks = []
    window = 4

    def read_ack():
        buf = reader.read()
        if buf is None:  # the server ended the stream: close() raises its error
            writer.close()
            raise RuntimeError("the stream ended early without an error")
        acks.append(json.loads(buf.to_pybytes()))
        if on_ack:
            on_ack(acks[-1])

    for i, seq in enumerate(seqs):
        b = first if i == 0 else make(seq)
        writer.write_with_metadata(b, pa.py_buffer(json.dumps({"seq": seq}).encode()))
        while len(acks) < i + 1 - window:
            read_ack()
    writer.done_writing()
    while len(acks) < len(seqs):
        read_ack()
    writer.close()
    return acks


def options_for(header=None, producer=PRODUCER):
    headers = [(b"x-tally-producer", producer.encode())]
    if header:
        headers.append(header)
    return flight.FlightCallOptions(headers=headers)


def child(port):
    """The first connection: sends batches 1..12, reports each ack, waits to be killed."""
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    first = batch(1)
    writer, reader = client.do_put(
        flight.FlightDescriptor.for_path("inferences"), first.schema, options_for())
    for seq in range(1, 13):
        writer.write_with_metadata(first if seq == 1 else batch(seq),
                                   pa.py_buffer(json.dumps({"seq": seq}).encode()))
    for _ in range(5):
        ack = json.loads(reader.read().to_pybytes())
        print(f"acked {ack['seq']}", flush=True)
    time.sleep(60)


def setup(pg):
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("INSERT INTO datanets (datanet, owner) VALUES ('fl-dn', 'fl-owner')")
        for k in range(ENTRIES):
            conn.execute(
                "INSERT INTO contributions (contribution, datanet, contributor, content_hash) "
                "VALUES (%s, 'fl-dn', %s, %s)", (f"fl-c{k}", f"alice-{k}", f"{k + 1:064x}"))
        conn.execute("INSERT INTO models (model, owner, base_model, datanets) "
                     "VALUES ('fl-model', 'fl-owner', NULL, 'fl-dn')")


def totals(pg):
    with psycopg.connect(pg, autocommit=True) as conn:
        return conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(fee), 0) FROM inferences WHERE model = 'fl-model'"
        ).fetchone()


def exactly_once(port, pg):
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(port)],
                            stdout=subprocess.PIPE, text=True)
    acked = 0
    for line in proc.stdout:
        acked = int(line.split()[1])
        if acked == 5:
            break
    time.sleep(0.5)  # let the server apply some of the batches sent after ack 5
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    check("the first connection was acknowledged up to batch 5 and killed", acked == 5)
    count, _ = totals(pg)
    check("batches past the last acknowledgement may have landed, none twice",
          5 * ROWS <= count <= 12 * ROWS and count % ROWS == 0, f"{count} rows")
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    acks = put(client, options_for(), list(range(6, BATCHES + 1)))
    dups = [a for a in acks if a["duplicate"]]
    check("resent batches that had landed are answered as duplicates",
          len(dups) == count // ROWS - 5, f"{len(dups)} duplicates, {count} rows before")
    check("every acknowledgement carries its rows and lsns",
          all(a["rows"] == ROWS and a["last_lsn"] - a["first_lsn"] + 1 == ROWS for a in acks),
          str(acks[:2]))
    again = put(client, options_for(), [BATCHES])
    check("a batch resent after its acknowledgement is a duplicate with its original lsns",
          again[0]["duplicate"] and again[0]["first_lsn"] == acks[-1]["first_lsn"], str(again))
    count, fees = totals(pg)
    expected = sum(fee(s, r) for s in range(1, BATCHES + 1) for r in range(ROWS))
    check("every fee counted exactly once", (count, fees) == (BATCHES * ROWS, expected),
          f"{count} rows, fees {fees}, expected {BATCHES * ROWS} and {expected}")


def refused_batch(port, pg):
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")

    def make(seq):
        b = batch(100 + seq)
        if seq == 3:
            fees = pa.array([5] * (ROWS - 1) + [-1], pa.int64())
            b = b.set_column(3, "fee", fees)
        return b

    before, _ = totals(pg)
    try:
        put(client, options_for(producer="py-refused"), [1, 2, 3, 4], make=make)
        check("a bad batch is refused", False, "the stream was accepted")
    except pa.ArrowException as e:
        text = str(e)
        check("the refusal names the batch, row, field and SQLSTATE",
              "batch seq 3" in text and f"row {ROWS}" in text and "fee" in text
              and "SQLSTATE 22023" in text, text)
    after, _ = totals(pg)
    check("the batches before it stay, nothing of it or after it", after == before + 2 * ROWS,
          f"{before} then {after}")


def roles(port, reader, writer):
    def client_as(cred):
        user, password = cred.split(":", 1)
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        header = client.authenticate_basic_token(user, password)
        return client, header

    client, header = client_as(reader)
    try:
        put(client, options_for(header, producer="py-reader"), [1], make=lambda s: batch(500 + s))
        check("a reader cannot write", False, "accepted")
    except pa.ArrowException as e:
        check("a reader cannot write", "42501" in str(e), str(e))
    client, header = client_as(writer)
    acks = put(client, options_for(header, producer="py-writer"), [1],
               make=lambda s: batch(600 + s))
    check("a writer authenticates and writes", acks[0]["rows"] == ROWS, str(acks))
    try:
        flight.FlightClient(f"grpc://127.0.0.1:{port}").authenticate_basic_token("nobody", "x")
        check("a wrong password is refused", False, "accepted")
    except pa.ArrowException as e:
        check("a wrong password is refused", "authentication failed" in str(e), str(e))


def main():
    if sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    port, pg_port = int(sys.argv[1]), int(sys.argv[2])
    creds = sys.argv[3:5]
    user = creds[1].split(":", 1) if creds else ("tally", "")
    pg = f"host=127.0.0.1 port={pg_port} user={user[0]} password={user[1]} dbname=tally"
    setup(pg)
    if creds:
        roles(port, creds[0], creds[1])
    else:
        exactly_once(port, pg)
        refused_batch(port, pg)
    if failures:
        print(f"{len(failures)} FAILED")
        sys.exit(1)
    print("ALL OK")


if __name__ == "__main__":
    main()
