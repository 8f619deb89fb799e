//! Full replay: rebuilds the state from the event sequence alone. Structure (names, rows,
//! fixed fee parts) is applied event by event; contributor pools are divided once per epoch by
//! a batch backend (CPU in parallel, or GPU) under the revocations in force at its close. The
//! result must equal the incrementally maintained state bit for bit (`Ledger::digest`).

use crate::error::ReplayError;
use crate::event::{Event, LoggedEvent};
use crate::settle::BatchSettler;
use crate::state::{Ledger, Settling};

/// Events validated and applied together during replay.
const REPLAY_CHUNK: usize = 8192;

/// Rebuilds a ledger from its log. The events must be the whole log from lsn 1, in order.
pub fn replay(
    events: impl IntoIterator<Item = LoggedEvent>,
    settler: &dyn BatchSettler,
) -> Result<Ledger, ReplayError> {
    let mut ledger = Ledger::new();
    ledger.settling = Settling::Deferred;
    let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
    for event in events {
        if matches!(event.event, Event::Settlement(_)) {
            ledger.apply_logged(&chunk)?;
            chunk.clear();
            ledger.settle_deferred(settler)?;
            ledger.apply_logged(std::slice::from_ref(&event))?;
            ledger.settling = Settling::Deferred;
            continue;
        }
        chunk.push(event);
        if chunk.len() == REPLAY_CHUNK {
            ledger.apply_logged(&chunk)?;
            chunk.clear();
        }
    }
    ledger.apply_logged(&chunk)?;
    ledger.settle_deferred(settler)?;
    Ok(ledger)
}
