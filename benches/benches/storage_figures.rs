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
    // Restart with 10 million events in the log: a snapshot after 9 million, then a tail of
    // about a million events that only the log holds.
    let dir = temp_dir();
    let options = Options { snapshot_every_events: u64::MAX, ..Options::default() };
    let db = Database::open_with(dir.path(), options.clone()).unwrap();
    let mut generator = Generator::new(Shape::bench(tally_benches::SEED, 9_900_000));
    let build = Instant::now();
    let mut written = write_until(&db, &mut generator, 9_000_000);
    db.snapshot().unwrap();
    let snapshot_lsn = written;
    written = write_until(&db, &mut generator, u64::MAX);
    println!("built a {written}-event ledger in {:.1} s", build.elapsed().as_secs_f64());
    let digest = db.read(|l| l.digest());
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
        "restart with {written} events in the log (snapshot at lsn {snapshot_lsn}, {} events of tail replayed): median {:.2} s of 3",
        written - snapshot_lsn,
        median(times).as_secs_f64()
    );
}

/// Writes the generator's batches, four in flight, until `limit` events are in the ledger.
fn write_until(db: &Database, generator: &mut Generator, limit: u64) -> u64 {
    db.runtime().block_on(async {
        let mut pending = std::collections::VecDeque::new();
        let mut last = db.read(|l| l.last_lsn());
        let mut queued = last;
        while queued < limit {
            let Some(batch) = generator.next() else { break };
            queued += batch.len() as u64;
            pending.push_back(db.submit(batch).await.unwrap());
            if pending.len() >= 4 {
                last = db.finish(pending.pop_front().unwrap()).await.unwrap().last_lsn;
            }
        }
        while let Some(p) = pending.pop_front() {
            last = db.finish(p).await.unwrap().last_lsn;
        }
        last
    })
}
