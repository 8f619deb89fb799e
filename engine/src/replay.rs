//! Full replay: rebuilds the state from the event sequence alone. Structure (names, rows,
//! fixed fee parts) is applied event by event; contributor pools are divided once per epoch by
//! a batch backend (CPU in parallel, or GPU) under the revocations in force at its close. The
//! result must equal the incrementally maintained state bit for bit (`Ledger::digest`).

use std::borrow::Borrow;

use crate::error::ReplayError;
use crate::event::{Event, LoggedEvent};
use crate::settle::BatchSettler;
use crate::state::{Ledger, Settling};

/// Events validated and applied together during replay.
const REPLAY_CHUNK: usize = 8192;

/// Rebuilds a ledger from its log. The events must be the whole log from lsn 1, in order.
/// Takes owned events or references.
pub fn replay<I>(events: I, settler: &dyn BatchSettler) -> Result<Ledger, ReplayError>
where
    I: IntoIterator,
    I::Item: Borrow<LoggedEvent>,
{
    replay_onto(Ledger::new(), events, settler)
}

/// Continues `ledger` (a snapshot's state, say) with the events that follow it, replayed as
/// `replay` does: the open epoch's pools are taken back and divided again once, at the next
/// settlement or at the end, by `settler`. The events must start at `ledger.last_lsn() + 1`.
pub fn replay_onto<I>(
    mut ledger: Ledger,
    events: I,
    settler: &dyn BatchSettler,
) -> Result<Ledger, ReplayError>
where
    I: IntoIterator,
    I::Item: Borrow<LoggedEvent>,
{
    ledger.defer();
    let mut chunk: Vec<I::Item> = Vec::with_capacity(REPLAY_CHUNK);
    let flush = |ledger: &mut Ledger, chunk: &mut Vec<I::Item>| {
        let refs: Vec<&LoggedEvent> = chunk.iter().map(Borrow::borrow).collect();
        let result = ledger.apply_logged_refs(&refs);
        chunk.clear();
        result
    };
    for item in events {
        if matches!(item.borrow().event, Event::Settlement(_)) {
            flush(&mut ledger, &mut chunk)?;
            ledger.settle_deferred(settler)?;
            ledger.apply_logged_refs(&[item.borrow()])?;
            ledger.settling = Settling::Deferred;
            continue;
        }
        chunk.push(item);
        if chunk.len() == REPLAY_CHUNK {
            flush(&mut ledger, &mut chunk)?;
        }
    }
    flush(&mut ledger, &mut chunk)?;
    ledger.settle_deferred(settler)?;
    Ok(ledger)
}
