//! Times the log tree's work per applied batch (`LogTree::push_batch`) against the engine's
//! `Ledger::apply` on the same batches, and its parts. Not a benchmark: a probe for optimising.
use std::time::Instant;

use tally_benches::ingest_workload;
use tally_engine::log_tree::{log_leaf_hash, LogTree};
use tally_engine::{json, Ledger};

fn main() {
    let (universe, batches) = ingest_workload(524_288);
    let events: Vec<_> = batches.iter().flatten().cloned().collect();
    for _ in 0..3 {
        let mut ledger = Ledger::new();
        let mut tree = LogTree::new();
        let applied = ledger.apply(&universe, 1).unwrap();
        tree.push_batch(&universe, applied);
        let (mut apply, mut grow) = (0.0, 0.0);
        for batch in &batches {
            let t = Instant::now();
            let applied = ledger.apply(batch, 2).unwrap();
            apply += t.elapsed().as_secs_f64();
            let t = Instant::now();
            tree.push_batch(batch, applied);
            grow += t.elapsed().as_secs_f64();
        }
        let per = |s: f64| s * 1e9 / events.len() as f64;
        let mut body = String::new();
        let t = Instant::now();
        let mut bytes = 0;
        for e in &events {
            body.clear();
            json::write_body(e, &mut body);
            bytes += body.len();
        }
        let json_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut x = 0u8;
        for (k, e) in events.iter().enumerate() {
            body.clear();
            json::write_body(e, &mut body);
            x ^= log_leaf_hash(k as u64, 7, body.as_bytes())[0];
        }
        let both_s = t.elapsed().as_secs_f64();
        let mut t2 = LogTree::new();
        let t = Instant::now();
        for k in 0..events.len() {
            t2.push([k as u8; 32]);
        }
        let push_s = t.elapsed().as_secs_f64();
        eprintln!(
            "apply {:.0} ns/event, tree {:.0}; one thread: json {:.0} ({} B avg), json+leaf sha {:.0}, push {:.0} [{x}]",
            per(apply), per(grow), per(json_s), bytes / events.len(), per(both_s), per(push_s)
        );
    }
}
