//! The ledger as it stood at a past lsn (time travel, `SET tally.as_of_lsn`): rebuilt from the
//! snapshot at or before that lsn, or from the start of the log, by replaying the events up to
//! it through the database's batch backend. A read: it never changes the live state, never
//! holds the state's lock while it replays, and streams the log in chunks so that its memory
//! is the rebuilt state's, not the log's.

use std::collections::VecDeque;

use tally_engine::{replay_onto, Ledger, LoggedEvent};

use crate::db::{Database, ScanCursor};
use crate::error::StorageError;
use crate::snapshot;

/// Events read from the log per chunk while replaying.
const PAST_CHUNK_EVENTS: usize = 65_536;

impl Database {
    /// The ledger right after lsn `lsn` (0: before the first event). Past the last lsn is an
    /// error that names it.
    pub fn ledger_at(&self, lsn: u64) -> Result<Ledger, StorageError> {
        let last = self.read(|l| l.last_lsn());
        if lsn > last {
            return Err(StorageError::PastLastLsn { lsn, last });
        }
        let base = match snapshot::load(&self.shared().snapshot_path()) {
            Ok(Some((_, state))) if state.ledger.last_lsn() <= lsn => state.ledger,
            // A snapshot past `lsn`, or one that cannot be read: the log alone is enough.
            _ => Ledger::new(),
        };
        let mut events = Events::new(self, base.last_lsn() + 1, lsn);
        let settler = self.options().settler.clone();
        let replayed = replay_onto(base, &mut events, settler.as_ref());
        if let Some(e) = events.failed {
            return Err(e);
        }
        replayed.map_err(|e| StorageError::Invalid(format!("replaying up to lsn {lsn}: {e}")))
    }
}

/// The log's events of lsns `from..=to`, read a chunk at a time. A read error ends the
/// iteration and is kept in `failed`.
struct Events<'a> {
    db: &'a Database,
    from: u64,
    to: u64,
    at: Option<ScanCursor>,
    buffered: VecDeque<LoggedEvent>,
    failed: Option<StorageError>,
}

impl<'a> Events<'a> {
    fn new(db: &'a Database, from: u64, to: u64) -> Events<'a> {
        let at = if from <= to { db.scan_start(from) } else { None };
        Events { db, from, to, at, buffered: VecDeque::new(), failed: None }
    }
}

impl Iterator for Events<'_> {
    type Item = LoggedEvent;

    fn next(&mut self) -> Option<LoggedEvent> {
        while self.buffered.is_empty() {
            let cursor = self.at.take()?;
            let buffered = &mut self.buffered;
            let read =
                self.db.scan_chunk(cursor, self.from, self.to, PAST_CHUNK_EVENTS, &mut |e| {
                    buffered.push_back(e)
                });
            match read {
                Ok(next) => self.at = next,
                Err(e) => {
                    self.failed = Some(e);
                    return None;
                }
            }
        }
        self.buffered.pop_front()
    }
}
