//! Applies the ingest workload a few times, for a profiler. Not a benchmark.
use tally_benches::ingest_workload;
use tally_engine::Ledger;

fn main() {
    let (universe, batches) = ingest_workload(262_144);
    for _ in 0..6 {
        let mut ledger = Ledger::new();
        ledger.apply(&universe, 1).unwrap();
        let start = std::time::Instant::now();
        for batch in &batches {
            ledger.apply(batch, 2).unwrap();
        }
        eprintln!("{:?}", start.elapsed());
    }
}
