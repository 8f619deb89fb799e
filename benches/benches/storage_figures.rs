//! Durable ingest through the embedded database, restart time, and bytes on disk.
//! `cargo bench -p tally-benches --bench storage_figures` (set TALLY_BENCH_DIR to put the
//! data directories on a particular disk; default: the system temp dir).
//! `--quick` skips the 10-million-event restart figure.

use std::time::{Duration, Instant};

use tally_benches::{ingest_workload, median};
use tally_engine::Event;
use tally_storage::{Database, Options};
use tally_workload::{Generator, Shape};

fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("TALLY_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Writes `events` in batches of `batch` with `in_flight` batches pipelined; returns events/s
/// and the sorted per-batch commit latencies (submit to durable-and-applied).
fn ingest(
    universe: &[Event],
    events: &[Event],
    batch: usize,
    in_flight: usize,
) -> (f64, Vec<Duration>) {
    let dir = temp_dir();
    let db = Database::open_with(
        dir.path(),
        Options { snapshot_every_events: u64::MAX, ..Options::default() },
    )
    .unwrap();
    db.write(universe.to_vec()).unwrap();
    let batches: Vec<Vec<Event>> = events.chunks(batch).map(|c| c.to_vec()).collect();
    let mut latencies = Vec::with_capacity(batches.len());
    let start = Instant::now();
    db.runtime().block_on(async {
        let mut pending = std::collections::VecDeque::new();
        for b in batches {
            let t = Instant::now();
            pending.push_back((t, db.submit(b).await.unwrap()));
            if pending.len() >= in_flight {
                let (t, p) = pending.pop_front().unwrap();
                db.finish(p).await.unwrap();
                latencies.push(t.elapsed());
            }
        }
        while let Some((t, p)) = pending.pop_front() {
            db.finish(p).await.unwrap();
            latencies.push(t.elapsed());
        }
    });
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    (events.len() as f64 / secs, latencies)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (universe, batches) = ingest_workload(1_048_576);
    let events: Vec<Event> = batches.into_iter().flatten().collect();
    println!(
        "durable ingest, inference events with 8 entries (fdatasync before every acknowledgement):"
    );
    println!("| batch | in flight | events | events/s | p50 commit | p99 commit |");
    println!("|---|---|---|---|---|---|");
    for (batch, in_flight, n) in [
        (1, 1, 2_000),
        (1, 64, 20_000),
        (100, 1, 100_000),
        (100, 16, 200_000),
        (8192, 1, 1_048_576),
        (8192, 4, 1_048_576),
    ] {
        let mut runs = Vec::new();
        let mut all = Vec::new();
        for _ in 0..3 {
            let (rate, lat) = ingest(&universe, &events[..n], batch, in_flight);
            runs.push(Duration::from_secs_f64(1.0 / rate));
            all.push(lat);
        }
        let rate = 1.0 / median(runs).as_secs_f64();
        let lat = all.swap_remove(1);
        println!(
            "| {batch} | {in_flight} | {n} | {:.0} | {:.2} ms | {:.2} ms |",
            rate,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    }

    // Bytes on disk per inference event.
    let dir = temp_dir();
    let db = Database::open_with(
        dir.path(),
        Options { snapshot_every_events: u64::MAX, ..Options::default() },
    )
    .unwrap();
    db.write(universe.clone()).unwrap();
    let before = db.log().with_log(|l| l.data_bytes());
    for chunk in events.chunks(8192) {
        db.write(chunk.to_vec()).unwrap();
    }
    let after = db.log().with_log(|l| l.data_bytes());
    println!(
        "log bytes per inference event (8 entries, string ids, record framing included): {:.1}",
        (after - before) as f64 / events.len() as f64
    );
    drop(db);
    drop(events);

    if quick {
        return;
    }
    // Restart with 10 million events in the log: a snapshot at 9 million, a 1-million tail.
    let dir = temp_dir();
    let options = Options { snapshot_every_events: u64::MAX, ..Options::default() };
    let db = Database::open_with(dir.path(), options.clone()).unwrap();
    let mut written = 0u64;
    let mut snapshotted = false;
    let build = Instant::now();
    db.runtime().block_on(async {
        let mut pending = std::collections::VecDeque::new();
        for batch in Generator::new(Shape::bench(tally_benches::SEED, 8_800_000)) {
            written += batch.len() as u64;
            pending.push_back(db.submit(batch).await.unwrap());
            if pending.len() >= 4 {
                db.finish(pending.pop_front().unwrap()).await.unwrap();
            }
            if !snapshotted && written >= 9_000_000 {
                while let Some(p) = pending.pop_front() {
                    db.finish(p).await.unwrap();
                }
                snapshotted = true;
            }
            if written >= 10_000_000 {
                break;
            }
        }
        while let Some(p) = pending.pop_front() {
            db.finish(p).await.unwrap();
        }
    });
    let _ = snapshotted;
    println!("built a {written}-event ledger in {:.1} s", build.elapsed().as_secs_f64());
    // The snapshot is taken at the end and the tail is produced by writing more after it.
    db.snapshot().unwrap();
    let tail: Vec<Vec<Event>> =
        Generator::new(Shape { seed: 99, ..Shape::bench(tally_benches::SEED, 1_000_000) })
            .skip(1)
            .map(|b| {
                b.into_iter()
                    .filter_map(|e| match e {
                        Event::Inference(mut i) => {
                            i.inference = format!("tail-{}", i.inference);
                            Some(Event::Inference(i))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .collect();
    let mut tail_events = 0;
    for b in tail {
        tail_events += b.len();
        db.write(b).unwrap();
    }
    let digest = db.read(|l| l.digest());
    let total = db.read(|l| l.last_lsn());
    drop(db); // no close: the tail stays only in the log
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let db = Database::open_with(dir.path(), options.clone()).unwrap();
        times.push(start.elapsed());
        assert_eq!(db.read(|l| l.digest()), digest);
        drop(db);
    }
    println!(
        "restart with {total} events in the log (snapshot + {tail_events}-event tail replayed): median {:.2} s of 3",
        median(times).as_secs_f64()
    );
}
