//! Criterion benchmarks of the engine: incremental apply (ingest) and full replay.
//! `cargo bench -p tally-benches --bench engine`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tally_benches::{ingest_workload, replay_workload};
use tally_engine::{replay, CpuSettler, Ledger};

/// Inferences applied per measured iteration.
const INGEST: u64 = 262_144;
/// Inferences in the replayed ledger (about 8 million entries).
const REPLAY: u64 = 1_000_000;

fn apply(c: &mut Criterion) {
    let (universe, batches) = ingest_workload(INGEST);
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(INGEST));
    group.sample_size(20);
    group.bench_function("inference_8_entries_batch_8192", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut ledger = Ledger::new();
                ledger.apply(&universe, 1).unwrap();
                let start = Instant::now();
                for batch in &batches {
                    ledger.apply(batch, 2).unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn full_replay(c: &mut Criterion) {
    let (log, live) = replay_workload(REPLAY);
    assert_eq!(replay(&log, &CpuSettler).unwrap().digest(), live.digest());
    drop(live);
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(REPLAY));
    group.sample_size(10);
    group.bench_function("1m_inferences_8m_entries_cpu", |b| {
        b.iter(|| replay(&log, &CpuSettler).unwrap())
    });
    group.finish();
}

criterion_group!(benches, apply, full_replay);
criterion_main!(benches);
