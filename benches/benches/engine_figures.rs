//! Engine figures that criterion cannot take: re-settling after a revocation (each run needs a
//! fresh copy of a big ledger) and memory per open-epoch entry.
//! `cargo bench -p tally-benches --bench engine_figures`

use std::time::Instant;

use tally_benches::{ingest_workload, median, resident_bytes};
use tally_engine::{Event, Ledger, Revocation};

const INFERENCES: u64 = 1_000_000;
const RUNS: usize = 11;

fn main() {
    let rss_start = resident_bytes();
    let (universe, batches) = ingest_workload(INFERENCES);
    let rss_events = resident_bytes();
    let mut ledger = Ledger::new();
    ledger.apply(&universe, 1).unwrap();
    for batch in &batches {
        ledger.apply(batch, 2).unwrap();
    }
    let rss_ledger = resident_bytes();
    drop(batches);

    let m = ledger.memory();
    println!("open epoch: {} inferences, {} entries", m.open_inferences, m.open_entries);
    println!(
        "engine arrays per open entry: {:.2} bytes (per-entry arrays {:.2} + per-inference arrays {:.2})",
        m.bytes_per_open_entry(),
        m.open_entry_array_bytes as f64 / m.open_entries as f64,
        m.open_inference_array_bytes as f64 / m.open_entries as f64,
    );
    println!(
        "inference-id fingerprints and their lsns: {:.2} bytes per past inference",
        m.bytes_per_inference_id()
    );
    println!(
        "process RSS growth while loading the ledger / entries: {:.2} bytes (all state: names, rows, fingerprints, allocator)",
        (rss_ledger - rss_events) as f64 / m.open_entries as f64
    );
    println!(
        "process RSS / entries: {:.2} bytes (includes the {:.0} MB of generated events still held)",
        rss_ledger as f64 / m.open_entries as f64,
        (rss_events - rss_start) as f64 / 1e6
    );

    // The contribution whose entries touch the number of inferences nearest to 1%.
    let target = m.open_inferences as u64 / 100;
    let victim = ledger
        .contributions()
        .min_by_key(|c| c.inferences.abs_diff(target))
        .map(|c| (c.contribution.to_string(), c.inferences))
        .unwrap();
    let revoke = [Event::Revocation(Revocation {
        contribution: victim.0.clone().into(),
        reason: "bench".into(),
    })];
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let mut copy = ledger.clone();
        let start = Instant::now();
        copy.apply(&revoke, 3).unwrap();
        times.push(start.elapsed());
    }
    let t = median(times);
    println!(
        "re-settle after revoking {} ({} of {} open inferences, {:.2}%): median {:.3} ms over {RUNS} runs ({:.1} M inferences re-settled/s)",
        victim.0,
        victim.1,
        m.open_inferences,
        victim.1 as f64 * 100.0 / m.open_inferences as f64,
        t.as_secs_f64() * 1e3,
        victim.1 as f64 / t.as_secs_f64() / 1e6
    );
}
