//! Tables computed when a statement runs: the table functions (`simulate_settlement`, the
//! proofs of `proofs.rs`) and the node-local `checkpoints` table. Each is a schema and a
//! function from the database (and the past state the statement reads, `as_of.rs`) to its
//! rows. Arguments are literals, checked when the statement is planned; the rows are computed
//! when it runs, on a blocking thread (the work can be a whole epoch's settlement or reading
//! log blocks back), at most `MAX_COMPUTED_AT_ONCE` at a time over the whole server.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use tally_engine::Ledger;
use tally_storage::Database;
use tokio::sync::Semaphore;

use crate::provider::Snapshot;
use crate::QueryError;

/// Computed tables running at once; more wait their turn.
pub const MAX_COMPUTED_AT_ONCE: usize = 2;

/// Computes a table's rows from the database and the past state a statement reads (if any).
pub(crate) type Compute =
    Arc<dyn Fn(&Database, Option<&Ledger>) -> Result<RecordBatch, QueryError> + Send + Sync>;

/// A table whose rows `compute` makes when a statement that reads it runs.
pub(crate) struct Computed {
    pub name: String,
    pub db: Arc<Database>,
    pub schema: SchemaRef,
    pub compute: Compute,
    pub running: Arc<Semaphore>,
}

impl fmt::Debug for Computed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "computed table {}", self.name)
    }
}

#[async_trait]
impl TableProvider for Computed {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        // A plan built without a snapshot (only to describe a statement) computes nothing.
        let Some(snapshot) = state.config().get_extension::<Snapshot>() else {
            let schema = self.schema.clone();
            return Ok(MemorySourceConfig::try_new_exec(&[vec![]], schema, projection.cloned())?);
        };
        let permit = self.running.clone().acquire_owned().await;
        let _permit = permit.map_err(|_| ours(QueryError::ShuttingDown))?;
        let (db, past, compute) = (self.db.clone(), snapshot.past.clone(), self.compute.clone());
        let batch = tokio::task::spawn_blocking(move || compute(&db, past.as_deref()))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(ours)?;
        let schema = self.schema.clone();
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?)
    }
}

pub(crate) fn ours(e: QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A table function's arguments: `N` literals, or an error showing `usage`.
pub(crate) fn literals<const N: usize>(
    exprs: &[Expr],
    usage: &str,
) -> Result<[ScalarValue; N], QueryError> {
    let value = |e: &Expr| match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Negative(inner) => match inner.as_ref() {
            Expr::Literal(v, _) => v.arithmetic_negate().ok(),
            _ => None,
        },
        _ => None,
    };
    let values: Option<Vec<ScalarValue>> = exprs.iter().map(value).collect();
    values.and_then(|v| <[ScalarValue; N]>::try_from(v).ok()).ok_or_else(|| {
        QueryError::InvalidParameter(format!("{usage}: arguments written in the statement"))
    })
}

/// A whole-number argument (not text, not a fraction).
pub(crate) fn integer(v: &ScalarValue, usage: &str) -> Result<i64, QueryError> {
    let whole =
        !matches!(v, ScalarValue::Utf8(_) | ScalarValue::Utf8View(_) | ScalarValue::LargeUtf8(_))
            && v.data_type().is_integer();
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) if whole => Ok(n),
        _ => Err(QueryError::InvalidParameter(format!("{usage}: {v} is not a whole number"))),
    }
}

/// A whole-number argument that is not negative.
pub(crate) fn count(v: &ScalarValue, usage: &str) -> Result<u64, QueryError> {
    let n = integer(v, usage)?;
    u64::try_from(n).map_err(|_| QueryError::InvalidParameter(format!("{usage}: {n} is negative")))
}

/// A text argument.
pub(crate) fn text(v: &ScalarValue, usage: &str) -> Result<String, QueryError> {
    crate::provider::text_value(v)
        .map(str::to_owned)
        .ok_or_else(|| QueryError::InvalidParameter(format!("{usage}: {v} is not text")))
}

/// Makes a computed table from a table function's arguments (checked here, at planning).
pub(crate) type Make = fn(&[Expr]) -> Result<(SchemaRef, Compute), QueryError>;

/// A table function whose table is computed when the statement runs.
pub(crate) struct Function {
    pub name: &'static str,
    pub db: Arc<Database>,
    pub running: Arc<Semaphore>,
    pub make: Make,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table function {}", self.name)
    }
}

impl TableFunctionImpl for Function {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (schema, compute) = (self.make)(args.exprs()).map_err(ours)?;
        let (name, db, running) = (self.name.to_owned(), self.db.clone(), self.running.clone());
        Ok(Arc::new(Computed { name, db, schema, compute, running }))
    }
}

/// Registers `functions` (name, maker) on `ctx`, sharing one limit on how many run at once.
pub(crate) fn register(
    ctx: &datafusion::prelude::SessionContext,
    db: &Arc<Database>,
    running: &Arc<Semaphore>,
    functions: &[(&'static str, Make)],
) {
    for &(name, make) in functions {
        let function = Function { name, db: db.clone(), running: running.clone(), make };
        ctx.register_udtf(name, Arc::new(function));
    }
}
