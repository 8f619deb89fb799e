//! `simulate_settlement(epoch, protocol_bps, model_bps, base_bps)`: a table function that
//! settles one epoch (open or closed) again under another fee split and shows it beside what
//! was settled, as `(account, role, amount, actual, diff)`. Nothing is written.
//!
//! The arguments are checked when the statement is planned; the epoch is settled when it runs
//! (`Ledger::simulate`, through the database's batch backend), at the state the statement
//! reads (the live ledger, or `tally.as_of_lsn`'s), as a computed table (`computed.rs`). A
//! closed epoch's inferences are read back from its stretch of the log.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Expr;
use tally_engine::settle::Bps;
use tally_engine::{Event, Ledger, LoggedEvent, SimulateError};
use tally_storage::Database;

use crate::computed::{self, Compute};
use crate::QueryError;

/// The function's name in SQL.
pub const SIMULATE_SETTLEMENT: &str = "simulate_settlement";
const USAGE: &str = "simulate_settlement(epoch, protocol_bps, model_bps, base_bps)";

/// `computed::Make` for `simulate_settlement`.
pub(crate) fn table(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    let (epoch, bps) = arguments(exprs)?;
    Ok((schema(), Arc::new(move |db, past| simulate(db, past, epoch, bps))))
}

/// The epoch (≥ 1) and the split (each part 0–10000, at most 10000 together).
fn arguments(exprs: &[Expr]) -> Result<(u64, Bps), QueryError> {
    let [epoch, protocol, model, base] = computed::literals(exprs, USAGE)?;
    let epoch = computed::integer(&epoch, USAGE)?;
    let epoch = u64::try_from(epoch).ok().filter(|&e| e >= 1).ok_or_else(|| {
        QueryError::InvalidParameter(format!(
            "{USAGE}: epoch {epoch} does not exist (epochs start at 1)"
        ))
    })?;
    let [p, m, b] = [protocol, model, base].map(|v| computed::integer(&v, USAGE));
    let (p, m, b) = (p?, m?, b?);
    let bps = Bps::new(p, m, b).ok_or_else(|| {
        QueryError::InvalidParameter(format!(
            "{USAGE}: basis points ({p}, {m}, {b}) must each be from 0 to 10000 and add up to \
             at most 10000"
        ))
    })?;
    Ok((epoch, bps))
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("account", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
        Field::new("actual", DataType::Int64, false),
        Field::new("diff", DataType::Int64, false),
    ]))
}

/// Epoch `epoch` settled under `bps` at the state `past` (or the live one).
fn simulate(
    db: &Database,
    past: Option<&Ledger>,
    epoch: u64,
    bps: Bps,
) -> Result<RecordBatch, QueryError> {
    let lsns = crate::as_of::read(db, past, |l| l.closed_epoch_lsns(epoch));
    let mut inferences: Vec<LoggedEvent> = Vec::new();
    if let Some((opened, closed)) = lsns {
        db.scan_events(opened + 1, closed - 1, |e| {
            if matches!(e.event, Event::Inference(_)) {
                inferences.push(e);
            }
        })?;
    }
    let settler = db.options().settler.clone();
    crate::as_of::read(db, past, |l| {
        let rows = l.simulate(epoch, bps, &inferences, settler.as_ref()).map_err(|e| match e {
            SimulateError::UnknownEpoch(_) => QueryError::InvalidParameter(format!("{USAGE}: {e}")),
            other => QueryError::Internal(other.to_string()),
        })?;
        let int = |v: u64| i64::try_from(v).expect("a part of the fee total, within i64");
        let amount: Vec<i64> = rows.iter().map(|r| int(r.amount)).collect();
        let actual: Vec<i64> = rows.iter().map(|r| int(r.actual)).collect();
        let diff: Vec<i64> = amount.iter().zip(&actual).map(|(a, b)| a - b).collect();
        let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.account))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.role.as_str()))),
            Arc::new(Int64Array::from(amount)),
            Arc::new(Int64Array::from(actual)),
            Arc::new(Int64Array::from(diff)),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    })
}
