//! Shared set-up for the benchmarks: the synthetic ledgers they run on, and small measuring
//! aids (medians, resident memory). Benchmarks only; nothing here is used by the product.

use std::time::Duration;

use tally_engine::{Event, Ledger, LoggedEvent};
use tally_workload::{Generator, Shape};

/// The benchmark seed (fixed, so every run measures the same ledger).
pub const SEED: u64 = Shape::DEFAULT_SEED;

/// Universe plus `inferences` inferences with exactly 8 entries, no epochs closed, no
/// revocations, no policy change: the ingest workload.
pub fn ingest_workload(inferences: u64) -> (Vec<Event>, Vec<Vec<Event>>) {
    let shape = Shape { closed_epochs: 0, revocations: 0, ..Shape::bench(SEED, inferences) };
    let mut batches = Generator::new(shape);
    let universe = batches.next().expect("universe");
    (
        universe,
        batches
            .map(|b| b.into_iter().filter(|e| matches!(e, Event::Inference(_))).collect())
            .collect(),
    )
}

/// The replay workload: `inferences` inferences with 8 entries, skewed popularity, 3 closed
/// epochs and an open one, 40 revocations, a policy change; as the log it would be.
pub fn replay_workload(inferences: u64) -> (Vec<LoggedEvent>, Ledger) {
    let mut ledger = Ledger::new();
    let mut log = Vec::new();
    for (k, batch) in Generator::new(Shape::bench(SEED, inferences)).enumerate() {
        let applied = ledger.apply(&batch, 1_000 + k as i64).expect("valid workload");
        log.extend(batch.into_iter().enumerate().map(|(i, event)| LoggedEvent {
            lsn: applied.first_lsn + i as u64,
            ts: applied.ts,
            event,
        }));
    }
    (log, ledger)
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Resident set size of this process, from /proc (Linux); 0 elsewhere.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}
