//! `tally verify`: rebuild the ledger from the log alone, twice (event by event, and as a
//! deferred batch replay), and compare both with the live state (snapshot plus tail) and with
//! the ledger's invariants. Reads only.

use std::path::Path;

use tally_engine::{replay, BatchSettler, CpuSettler, LoggedEvent};

use crate::db::{Database, Opened, Options};
use crate::error::StorageError;
use crate::history::Records;
use crate::merkle_hex;
use crate::payload::{self, Outcome};
use crate::raft::{apply_part, SmState};
use crate::record::Kind;
use crate::tree::StateTree;

#[derive(Debug, Clone)]
pub struct Report {
    pub opened: Opened,
    pub sealed_segments_checked: usize,
    pub batches_accepted: u64,
    pub batches_refused: u64,
    pub events: u64,
    pub live_digest: String,
    pub replay_digest: String,
    pub batch_replay_digest: String,
    /// The log's Merkle tree as replayed: its size and root (hex).
    pub tree_size: u64,
    pub tree_root: String,
    /// The backend that divided the batch replay's pools (`cpu`, `gpu`).
    pub settler: String,
    /// Every difference found; empty means the ledger verified.
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Opens `dir` as its node would run it: a lone node's directory as the lone node (which
/// applies its whole log), a cluster node's offline (up to what it knew committed: its log's
/// tail may not be, and is not replayed either).
fn open(dir: &Path) -> Result<Database, StorageError> {
    let db = Database::open_offline(dir, Options::default())?;
    if db.voters().len() > 1 {
        return Ok(db);
    }
    drop(db);
    Database::open_with(dir, Options::default())
}

pub fn verify(dir: &Path) -> Result<Report, StorageError> {
    verify_with(dir, &CpuSettler)
}

/// `verify`, with the batch replay's pools divided by `settler` (`tally verify --settler`).
pub fn verify_with(dir: &Path, settler: &dyn BatchSettler) -> Result<Report, StorageError> {
    let db = open(dir)?;
    let mut problems = Vec::new();
    let sealed = match db.log().with_log(|l| l.verify_sealed()) {
        Ok(n) => n,
        Err(e) => {
            problems.push(e.to_string());
            0
        }
    };
    let (live_digest, audit) = db.read(|l| (l.digest(), l.audit()));
    if let Err(e) = audit {
        problems.push(format!("live state: {e}"));
    }
    let shared = db.shared().clone();
    // Pass 1: apply every batch of every entry in log order, as the state machine did;
    // record which were refused and compare with what the live state recorded.
    let mut replayed = SmState::empty();
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut refused_at: Vec<(u64, u32)> = Vec::new();
    // The replay's own lsn index (built as the state machine builds its one: inference-id
    // fingerprint hits are settled by reading the log through it, `history.rs`) and log tree.
    // Entries past the last applied one are not known committed (a cluster node's tail):
    // neither pass replays them.
    let last = shared.state.read().expect("state lock").last_applied.map(|l| l.index);
    let applied = |index: u64| last.is_some_and(|l| index <= l);
    db.log().with_log(|log| {
        let Some(first) = log.first_index() else { return };
        for r in log.iter_from(first) {
            if r.as_ref().is_ok_and(|r| !applied(r.header.index)) {
                break;
            }
            let r = match r {
                Ok(r) if r.header.kind == Kind::Batch => r,
                Ok(_) => continue,
                Err(e) => {
                    problems.push(e.to_string());
                    break;
                }
            };
            let parts = payload::parts(r.payload).unwrap_or_default();
            if parts.is_empty() {
                refused += 1;
                refused_at.push((r.header.index, 0));
                replayed.lsns.refused(r.header.index, 0);
            }
            let index = r.header.index;
            for (k, part) in parts.into_iter().enumerate() {
                let at = (index, k as u32);
                let records = Records::Log(log);
                match apply_part(&mut replayed, at, payload::decode(part), records) {
                    Outcome::Applied(_) => accepted += 1,
                    // Refused, malformed, or a producer's duplicate: no events.
                    _ => {
                        refused += 1;
                        refused_at.push(at);
                    }
                }
            }
        }
    });
    let SmState { ledger, producers, tree, .. } = replayed;
    let StateTree::Inline(tree) = tree else { unreachable!("a replay grows its tree inline") };
    let (tree_size, tree_root) = (tree.size(), merkle_hex(&tree.root()));
    match db.ledger_root() {
        Ok(live) if live == (tree.size(), tree.root()) => {}
        Ok((size, root)) => problems.push(format!(
            "the live log tree (size {size}, root {}) differs from a replay's (size {tree_size}, \
             root {tree_root})",
            merkle_hex(&root)
        )),
        Err(e) => problems.push(format!("live log tree: {e}")),
    }
    {
        let state = shared.state.read().expect("state lock");
        for &(i, k) in &refused_at {
            if !state.lsns.is_refused(i, k) {
                problems.push(format!("log index {i} batch {k}: refused on replay, accepted live"));
            }
        }
        if state.producers != producers {
            problems.push("the live producer table differs from a replay of the log".into());
        }
        if state.lsns.last_lsn() != ledger.last_lsn() {
            problems.push(format!(
                "live state ends at lsn {}, the replay at lsn {}",
                state.lsns.last_lsn(),
                ledger.last_lsn()
            ));
        }
    }
    let replay_digest = ledger.digest();
    let events = ledger.last_lsn();
    drop(ledger);
    // Pass 2: the accepted events alone, through the batch (deferred) replay.
    let batch = db.log().with_log(|log| {
        let Some(first) = log.first_index() else {
            return replay(Vec::<LoggedEvent>::new(), settler);
        };
        let refused_at = &refused_at;
        let mut lsn = 0u64;
        let mut ts = 0i64;
        let stream = log
            .iter_from(first)
            // Damage ends the walk; pass 1 reported it.
            .map_while(Result::ok)
            .take_while(|r| applied(r.header.index))
            .filter(|r| r.header.kind == Kind::Batch)
            .flat_map(|r| {
                let index = r.header.index;
                let parts = payload::parts(r.payload).unwrap_or_default();
                parts.into_iter().enumerate().filter_map(move |(k, part)| {
                    if refused_at.binary_search(&(index, k as u32)).is_ok() {
                        return None;
                    }
                    Some(payload::decode(part).expect("decoded in pass 1"))
                })
            })
            .flat_map(|b| {
                ts = ts.max(b.ts);
                let batch_ts = ts;
                b.events.into_iter().map(move |event| (batch_ts, event))
            })
            .map(|(ts, event)| {
                lsn += 1;
                LoggedEvent { lsn, ts, event }
            });
        replay(stream, settler)
    });
    let batch_replay_digest = match batch {
        Ok(l) => l.digest(),
        Err(e) => {
            problems.push(format!("batch replay: {e}"));
            [0; 32]
        }
    };
    if replay_digest != live_digest {
        problems.push("the live state differs from a replay of the log".into());
    }
    if batch_replay_digest != replay_digest {
        problems.push("the batch replay differs from the event-by-event replay".into());
    }
    let opened = db.recovery().clone();
    Ok(Report {
        opened,
        sealed_segments_checked: sealed,
        batches_accepted: accepted,
        batches_refused: refused,
        events,
        live_digest: merkle_hex(&live_digest),
        replay_digest: merkle_hex(&replay_digest),
        batch_replay_digest: merkle_hex(&batch_replay_digest),
        tree_size,
        tree_root,
        settler: settler.name().to_owned(),
        problems,
    })
}
