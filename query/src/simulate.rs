//! `simulate_settlement(epoch, protocol_bps, model_bps, base_bps)`: a table function that
//! settles one epoch (open or closed) again under another fee split and shows it beside what
//! was settled, as `(account, role, amount, actual, diff)`. Nothing is written.
//!
//! The arguments are checked when the statement is planned; the epoch is settled when it runs
//! (`Ledger::simulate`, through the database's batch backend), at the state the statement
//! reads (the live ledger, or `tally.as_of_lsn`'s). A closed epoch's inferences are read back
//! from its stretch of the log. Settling is CPU work over the whole epoch, so it runs on a
//! blocking thread, at most `MAX_SIMULATIONS` at a time.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use tally_engine::settle::Bps;
use tally_engine::{Event, Ledger, LoggedEvent, SimulateError};
use tally_storage::Database;
use tokio::sync::Semaphore;

use crate::provider::Snapshot;
use crate::QueryError;

/// The function's name in SQL.
pub const SIMULATE_SETTLEMENT: &str = "simulate_settlement";
/// Simulations running at once; more wait their turn.
pub const MAX_SIMULATIONS: usize = 2;

/// The table function, registered once per `Sql`.
pub(crate) struct SimulateSettlement {
    db: Arc<Database>,
    running: Arc<Semaphore>,
}

impl fmt::Debug for SimulateSettlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SIMULATE_SETTLEMENT} over {}", self.db.dir().display())
    }
}

impl SimulateSettlement {
    pub fn new(db: Arc<Database>) -> SimulateSettlement {
        SimulateSettlement { db, running: Arc::new(Semaphore::new(MAX_SIMULATIONS)) }
    }
}

impl TableFunctionImpl for SimulateSettlement {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [epoch, protocol, model, base] = arguments(args.exprs()).map_err(ours)?;
        let epoch = u64::try_from(epoch).ok().filter(|&e| e >= 1).ok_or_else(|| {
            ours(QueryError::InvalidParameter(format!(
                "{SIMULATE_SETTLEMENT}: epoch {epoch} does not exist (epochs start at 1)"
            )))
        })?;
        let bps = Bps::new(protocol, model, base).ok_or_else(|| {
            ours(QueryError::InvalidParameter(format!(
                "{SIMULATE_SETTLEMENT}: basis points ({protocol}, {model}, {base}) must each be \
                 from 0 to 10000 and add up to at most 10000"
            )))
        })?;
        Ok(Arc::new(Simulation { db: self.db.clone(), running: self.running.clone(), epoch, bps }))
    }
}

/// The four whole-number arguments, as written.
fn arguments(exprs: &[Expr]) -> Result<[i64; 4], QueryError> {
    let usage = || {
        QueryError::InvalidParameter(format!(
            "{SIMULATE_SETTLEMENT}(epoch, protocol_bps, model_bps, base_bps) takes four whole \
             numbers written in the statement"
        ))
    };
    let number = |e: &Expr| match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(n))) if !matches!(v, ScalarValue::Utf8(_)) => Some(n),
            _ => None,
        },
        Expr::Negative(inner) => match inner.as_ref() {
            Expr::Literal(ScalarValue::Int64(Some(n)), _) => n.checked_neg(),
            _ => None,
        },
        _ => None,
    };
    let numbers: Option<Vec<i64>> = exprs.iter().map(number).collect();
    numbers.and_then(|n| <[i64; 4]>::try_from(n).ok()).ok_or_else(usage)
}

fn ours(e: QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
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

/// One call's table: settled when scanned.
struct Simulation {
    db: Arc<Database>,
    running: Arc<Semaphore>,
    epoch: u64,
    bps: Bps,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SIMULATE_SETTLEMENT}({}, {:?})", self.epoch, self.bps)
    }
}

#[async_trait]
impl TableProvider for Simulation {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A plan built without a snapshot (only to describe a statement) settles nothing.
        let Some(snapshot) = state.config().get_extension::<Snapshot>() else {
            return Ok(MemorySourceConfig::try_new_exec(&[vec![]], schema(), projection.cloned())?);
        };
        let permit = self.running.clone().acquire_owned().await;
        let _permit = permit.map_err(|_| ours(QueryError::ShuttingDown))?;
        let (db, past) = (self.db.clone(), snapshot.past.clone());
        let (epoch, bps) = (self.epoch, self.bps);
        let batch = tokio::task::spawn_blocking(move || simulate(&db, past.as_deref(), epoch, bps))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(ours)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), projection.cloned())?)
    }
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
            SimulateError::UnknownEpoch(_) => {
                QueryError::InvalidParameter(format!("{SIMULATE_SETTLEMENT}: {e}"))
            }
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
