//! Streaming ingest's path into the ledger, for any streaming front end (Arrow Flight in
//! `server/`): a record batch becomes events by the same conversions as INSERT
//! (`batch.rs`), goes to `Database::submit_from` with its producer's id and number (exactly
//! once: `tally_storage::producers`), and comes back as its outcome with the same refusals and
//! SQLSTATEs as SQL. A dry run checks batches against the ledger plus the stream's earlier
//! batches and appends nothing.

use datafusion::arrow::array::RecordBatch;
use tally_engine::Pending;
use tally_storage::{Landed, Origin, PendingWrite, WriteError};

use crate::batch::table_events;
use crate::transaction::write_error;
use crate::{QueryError, Sql};

/// Rows one dry run may check: it holds what its batches would add (ids, references) in
/// memory, like a transaction block, so it is bounded.
pub const MAX_DRY_RUN_ROWS: u64 = 10_000_000;

/// A batch handed to the ledger, not yet known durable.
pub struct PendingBatch {
    table: &'static str,
    write: PendingWrite,
}

/// A dry run's state: what its earlier batches would have added.
#[derive(Default)]
pub struct DryRun {
    pending: Pending,
    rows: u64,
}

impl Sql {
    /// Converts `batch` (rows of `table`) to events and hands them to the ledger as one
    /// atomic batch from `origin`. Refusals that need no ledger state come back here; the
    /// rest from `finish_batch`.
    pub async fn submit_batch(
        &self,
        origin: Origin,
        table: &str,
        batch: &RecordBatch,
    ) -> Result<PendingBatch, QueryError> {
        let (table, events) = table_events(table, batch)?;
        let write = self
            .database()
            .submit_from(Some(origin), events)
            .await
            .map_err(|e| ingest_error(e, table))?;
        Ok(PendingBatch { table, write })
    }

    /// Waits for a submitted batch: applied (its lsns), a duplicate of its producer's (the
    /// original lsns when kept), or refused.
    pub async fn finish_batch(&self, pending: PendingBatch) -> Result<Landed, QueryError> {
        let landed = self.database().finish_from(pending.write).await;
        landed.map_err(|e| ingest_error(e, pending.table))
    }

    /// Checks `batch` as if appended after the dry run's earlier batches; appends nothing.
    /// Returns its rows.
    pub fn dry_run_batch(
        &self,
        dry: &mut DryRun,
        table: &str,
        batch: &RecordBatch,
    ) -> Result<u64, QueryError> {
        let (table, events) = table_events(table, batch)?;
        let rows = events.len() as u64;
        if dry.rows + rows > MAX_DRY_RUN_ROWS {
            return Err(QueryError::TooLarge(format!(
                "a dry run checks at most {MAX_DRY_RUN_ROWS} rows"
            )));
        }
        self.database()
            .read_checked(|l, h| l.validate_after_with_history(&mut dry.pending, &events, h))
            .map_err(|r| QueryError::from_refusal(&r, table, 1))?;
        dry.rows += rows;
        Ok(rows)
    }
}

fn ingest_error(e: WriteError, table: &'static str) -> QueryError {
    match e {
        WriteError::BadOrigin(why) => QueryError::InvalidParameter(why),
        e @ WriteError::OutOfOrder { .. } => QueryError::OutOfOrder(e.to_string()),
        other => write_error(other, &[(0, table)]),
    }
}
