#!/usr/bin/env python3
"""Streaming ingest (Arrow Flight DoPut) vs COPY over the PostgreSQL wire, on the same rows.

Loads the wire benchmark's deterministic workload (benches/wire/wire_bench.py `Workload`: 40
datanets, 5,000 contributors, 48 models, inferences with 1..16 lineage-correct entries) into an
EMPTY `tally serve`: the universe by COPY (not timed), then the inferences, timed, either by
COPY (one COPY per chunk, as wire_bench.py) or by one Flight DoPut stream of the same chunks
read as Arrow batches (one batch per chunk, `--window` batches in flight, each acknowledged once
durable). Prints one JSON line: mode, rows, seconds, rows/s.

  python3 benches/ingest/ingest_bench.py --mode flight --pg 5433 --flight 5434 --inferences 1000000
  python3 benches/ingest/ingest_bench.py --mode copy --pg 5433 --inferences 1000000

benches/ingest/run.sh runs both on fresh servers, one after the other, and prints the table.
"""
import argparse
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "wire"))
import wire_bench  # noqa: E402

import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.flight as flight  # noqa: E402

COLUMNS = ["inference", "model", "consumer", "fee", "attributions"]
TYPES = {"inference": pa.string(), "model": pa.string(), "consumer": pa.string(),
         "fee": pa.int64(), "attributions": pa.string()}


def universe(pg, w):
    with psycopg.connect(pg, autocommit=True) as conn:
        cur = conn.cursor()
        opts = "(FORMAT csv)"
        wire_bench.copy_in(cur, f"COPY datanets (datanet, owner) FROM STDIN {opts}", w.csv_datanets())
        wire_bench.copy_in(cur, "COPY contributions (contribution, datanet, contributor, "
                           f"content_hash) FROM STDIN {opts}", w.csv_contributions())
        wire_bench.copy_in(cur, f"COPY models (model, owner, base_model, datanets) FROM STDIN {opts}",
                           w.csv_models())


def by_copy(pg, w):
    with psycopg.connect(pg, autocommit=True) as conn:
        cur = conn.cursor()
        stmt = wire_bench.COPY_INFERENCES.format(opts="(FORMAT csv)")
        t0 = time.perf_counter()
        for data in w.chunks:
            wire_bench.copy_in(cur, stmt, data)
        return time.perf_counter() - t0


ENTRY = pa.struct([("contribution", pa.string()), ("score", pa.float64())])


def as_list(text):
    """`id:score,…` text as List<Struct<contribution, score>> (each entry split at its last
    `:`, as the contract's grammar splits it)."""
    entries = pc.split_pattern(text, ",")
    flat = pc.list_flatten(entries)
    parts = pc.split_pattern(flat, ":", max_splits=1, reverse=True)
    items = pa.StructArray.from_arrays(
        [pc.list_element(parts, 0), pc.cast(pc.list_element(parts, 1), pa.float64())],
        fields=list(ENTRY))
    return pa.ListArray.from_arrays(entries.offsets, items, type=pa.list_(ENTRY))


def batches(w, attributions):
    read = pacsv.ReadOptions(column_names=COLUMNS)
    convert = pacsv.ConvertOptions(column_types=TYPES, strings_can_be_null=False)
    out = []
    for data in w.chunks:
        table = pacsv.read_csv(io.BytesIO(data), read_options=read, convert_options=convert)
        b = table.combine_chunks().to_batches()[0]
        if attributions == "list":
            at = b.schema.get_field_index("attributions")
            b = b.set_column(at, "attributions", as_list(b.column(at)))
        out.append(b)
    return out


def by_flight(port, w, window, attributions):
    prepared = batches(w, attributions)
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    options = flight.FlightCallOptions(headers=[(b"x-tally-producer", b"bench")])
    t0 = time.perf_counter()
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("inferences"),
                                   prepared[0].schema, options)
    acked = 0
    for seq, b in enumerate(prepared, start=1):
        writer.write_with_metadata(b, pa.py_buffer(json.dumps({"seq": seq}).encode()))
        while seq - acked > window:
            reader.read()
            acked += 1
    writer.done_writing()
    while acked < len(prepared):
        reader.read()
        acked += 1
    writer.close()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["copy", "flight"], required=True)
    p.add_argument("--pg", type=int, default=5433, help="Tally's PostgreSQL port")
    p.add_argument("--flight", type=int, default=5434, help="Tally's Flight port")
    p.add_argument("--inferences", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=100_000, help="rows per COPY / per Flight batch")
    p.add_argument("--window", type=int, default=8, help="Flight batches in flight")
    p.add_argument("--attributions", choices=["text", "list"], default="text",
                   help="Flight: attributions as the contract's text or as List<Struct<contribution, score>>")
    p.add_argument("--seed", type=int, default=wire_bench.DEFAULT_SEED)
    a = p.parse_args()
    w = wire_bench.Workload(a.seed, a.inferences, a.chunk)
    pg = f"host=127.0.0.1 port={a.pg} user=tally dbname=tally"
    universe(pg, w)
    if a.mode == "copy":
        seconds = by_copy(pg, w)
    else:
        seconds = by_flight(a.flight, w, a.window, a.attributions)
    with psycopg.connect(pg, autocommit=True) as conn:
        n = conn.execute("SELECT COUNT(*) FROM inferences").fetchone()[0]
    if n != w.n:
        sys.exit(f"loaded {n} inferences, expected {w.n}")
    mode = a.mode if a.mode == "copy" else f"flight-{a.attributions}"
    print(json.dumps({"mode": mode, "rows": w.n, "chunk": a.chunk, "seconds": round(seconds, 3),
                      "rows_per_s": round(w.n / seconds)}))


if __name__ == "__main__":
    main()
