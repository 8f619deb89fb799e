//! The exact check behind the engine's inference-id fingerprints, answered from the log: the
//! ledger keeps each past inference's lsn beside its 64-bit fingerprint, and on a fingerprint
//! hit this module reads the event at that lsn back and says whether its id is the new one
//! (`tally_engine::InferenceHistory`). Owns the walk from an lsn to its event; reads only.
//!
//! Never answers "another id" for an event it could not read: a damaged or missing record, a
//! batch that no longer decodes, or an lsn whose event is not an inference is an `Err`, which
//! the engine turns into a refusal (`Rule::UnconfirmedInference`, SQLSTATE 23505), never into
//! an acceptance. No panic either way. The price: a hit replayed after the record it reads was
//! damaged (a tail replay after a snapshot) is refused although it was accepted the first
//! time; the damage itself is what the background check, `verify` and `salvage` deal with.
//! Not there yet: a node whose log starts after a snapshot install cannot read earlier
//! inferences (one-node groups never start a log that way).
//!
//! Cost per hit: a binary search in the `LsnIndex`, then the batches from its point at or
//! before the lsn up to the one that holds it (fewer than `lsn::BLOCK` events before that
//! batch), each checked in place with rkyv's `access` and none copied. Only fingerprint hits,
//! i.e. duplicates and true 64-bit collisions, pay it.
//!
//! Lock order: callers hold the state lock (`SmState`, read or write) and a read here takes the
//! log's lock for one walk; nothing takes the two the other way round.

use tally_engine::{ArchivedEvent, InferenceHistory};

use crate::error::{Result, StorageError};
use crate::log::Log;
use crate::lsn::LsnIndex;
use crate::payload;
use crate::raft::LogStore;
use crate::record::Kind;

/// Where the records come from.
#[derive(Clone, Copy)]
pub(crate) enum Records<'a> {
    /// The database's log, locked for each read.
    Store(&'a LogStore),
    /// A log the caller holds already.
    Log(&'a Log),
}

/// The ledger's past inferences as the log holds them: `lsns` must be the index of the state
/// being checked (the one whose fingerprints named the lsn).
pub struct LogHistory<'a> {
    lsns: &'a LsnIndex,
    records: Records<'a>,
}

impl<'a> LogHistory<'a> {
    /// Over the database's log (the state machine, `Database::read_checked`).
    pub fn new(lsns: &'a LsnIndex, log: &'a LogStore) -> Self {
        LogHistory { lsns, records: Records::Store(log) }
    }

    /// Over `records`: `Records::Log` for a log the caller has locked already (`verify`,
    /// which walks it).
    pub(crate) fn with(lsns: &'a LsnIndex, records: Records<'a>) -> Self {
        LogHistory { lsns, records }
    }

    /// The id of the inference at `lsn`, read from the log. `Err` when the event there cannot
    /// be read, or is not an inference (the index and the log disagree).
    pub fn inference_at(&self, lsn: u64) -> Result<String> {
        match self.records {
            Records::Store(store) => store.with_log(|log| inference_at(log, self.lsns, lsn)),
            Records::Log(log) => inference_at(log, self.lsns, lsn),
        }
    }
}

impl InferenceHistory for LogHistory<'_> {
    fn is_inference(&self, lsn: u64, inference: &str) -> std::result::Result<bool, String> {
        self.inference_at(lsn).map(|id| id == inference).map_err(|e| e.to_string())
    }
}

fn unreadable(lsn: u64, why: impl std::fmt::Display) -> StorageError {
    StorageError::Invalid(format!("ledger event at lsn {lsn}: {why}"))
}

/// Walks from the index point at or before `lsn`, counting the events of accepted batches as
/// the state machine gave them lsns, to the event at `lsn`.
fn inference_at(log: &Log, lsns: &LsnIndex, lsn: u64) -> Result<String> {
    if lsn == 0 || lsn > lsns.last_lsn() {
        return Err(unreadable(lsn, format!("beyond the ledger's last lsn {}", lsns.last_lsn())));
    }
    let point = lsns.locate(lsn).ok_or_else(|| unreadable(lsn, "not in the lsn index"))?;
    let mut first = point.first_lsn;
    for (n, record) in log.iter_from(point.index).enumerate() {
        let record = record?;
        let index = record.header.index;
        if n == 0 && index != point.index {
            return Err(unreadable(lsn, format!("log record {} is missing", point.index)));
        }
        if record.header.kind != Kind::Batch {
            continue;
        }
        let parts = match payload::parts(record.payload) {
            Ok(parts) => parts,
            Err(_) if lsns.is_refused(index, 0) => continue,
            Err(e) => return Err(unreadable(lsn, format!("log record {index}: {e}"))),
        };
        for (k, part) in parts.into_iter().enumerate() {
            let k = k as u32;
            if (index == point.index && k < point.part) || lsns.is_refused(index, k) {
                continue;
            }
            let batch = payload::access(part)
                .map_err(|e| unreadable(lsn, format!("log record {index} batch {k}: {e}")))?;
            let events = batch.events.len() as u64;
            if lsn - first < events {
                return match &batch.events[(lsn - first) as usize] {
                    ArchivedEvent::Inference(i) => Ok(i.inference.as_str().to_owned()),
                    _ => Err(unreadable(lsn, "not an inference (the lsn index and log disagree)")),
                };
            }
            first += events;
        }
    }
    Err(unreadable(lsn, "the log ends before it"))
}
