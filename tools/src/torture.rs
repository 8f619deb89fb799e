//! `tally torture`: a fault-testing aid. Writes numbered batches to a data directory until it
//! is killed, printing `ack K FIRST_LSN LAST_LSN` once batch K is durable and applied. Batch K
//! starts with datanet `tb-K`, so after a crash anyone can see which batches are in the ledger;
//! a restarted writer continues after the last batch present. The crash tests kill it at random
//! moments and check that every acknowledged batch is there exactly once and none is half there.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use tally_engine::{
    Contribution, Datanet, Event, Ledger, Model, Policy, Revocation, ScoredInference, Settlement,
};
use tally_storage::{Database, Options};

pub const INFERENCES_PER_BATCH: usize = 50;
const CONTRIBUTIONS: usize = 100;
/// Batches submitted before the oldest is waited for.
const IN_FLIGHT: usize = 3;

/// Batches present in a ledger written by `torture` (they are always a prefix 0..n).
pub fn batches_present(l: &Ledger) -> u64 {
    l.datanets().filter(|d| d.datanet.starts_with("tb-")).count() as u64
}

fn batch(k: u64) -> Vec<Event> {
    let dn = |id: String| Event::Datanet(Datanet { datanet: id.into(), owner: "owner".into() });
    let mut events = vec![dn(format!("tb-{k}"))];
    if k == 0 {
        for c in 0..CONTRIBUTIONS {
            events.push(Event::Contribution(Contribution {
                contribution: format!("c-{c}").into(),
                datanet: "tb-0".into(),
                contributor: format!("u-{}", c % 17).into(),
                content_hash: format!("{c:064x}").into(),
            }));
        }
        events.push(Event::Model(Model {
            model: "base".into(),
            owner: "ann".into(),
            base_model: None,
            datanets: vec!["tb-0".into()],
        }));
        events.push(Event::Model(Model {
            model: "adapter".into(),
            owner: "bob".into(),
            base_model: Some("base".into()),
            datanets: vec![],
        }));
        return events;
    }
    for j in 0..INFERENCES_PER_BATCH as u64 {
        let pick = |n: u64| format!("c-{}", (k * 31 + j * 7 + n * 13) % CONTRIBUTIONS as u64);
        let scores = (0..3).map(|n| (pick(n).into(), ((k + j + n) % 5) as f64 * 0.25)).collect();
        let inference = ScoredInference {
            inference: format!("i-{k}-{j}").into(),
            model: if j % 2 == 0 { "base" } else { "adapter" }.into(),
            consumer: "app".into(),
            fee: (1_000 + k * 37 + j) as i64,
            scores,
        };
        events.push(inference.into_event(events.len()).expect("valid scores"));
    }
    if k.is_multiple_of(7) && k / 7 < CONTRIBUTIONS as u64 {
        events.push(Event::Revocation(Revocation {
            contribution: format!("c-{}", k / 7).into(),
            reason: "torture".into(),
        }));
    }
    if k.is_multiple_of(11) {
        events.push(Event::Policy(Policy {
            protocol_bps: (k % 3 * 500) as i64,
            model_bps: 2000,
            base_bps: 1000,
        }));
    }
    if k.is_multiple_of(13) {
        events.push(Event::Settlement(Settlement { epoch: k / 13 }));
    }
    events
}

pub fn run(data: &Path, limit: Option<u64>) -> super::Result<ExitCode> {
    let options =
        Options { segment_bytes: 1 << 20, snapshot_every_events: 2_000, ..Options::default() };
    let db = Database::open_with(data, options)?;
    let first = db.read(batches_present);
    let end = limit.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    db.runtime().block_on(async {
        let mut pending = std::collections::VecDeque::new();
        for k in first..end {
            pending.push_back((k, db.submit(batch(k)).await?));
            if pending.len() >= IN_FLIGHT || k + 1 == end {
                while let Some((k, p)) = pending.pop_front() {
                    let a = db.finish(p).await?;
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "ack {k} {} {}", a.first_lsn, a.last_lsn);
                    let _ = out.flush();
                    if pending.len() < IN_FLIGHT - 1 {
                        break;
                    }
                }
            }
        }
        while let Some((k, p)) = pending.pop_front() {
            let a = db.finish(p).await?;
            println!("ack {k} {} {}", a.first_lsn, a.last_lsn);
        }
        Ok::<(), tally_storage::WriteError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
