//! The DataFusion face of every table of surface.md. A `LedgerTable` holds no data: a query's
//! data is the `Snapshot` its session carries (built for that query under one read lock, so
//! one query sees one lsn everywhere), and a write goes to the `Written` slot its session
//! carries, as events, for the caller to append. Nothing here appends to the ledger.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use tally_engine::{Event, MAX_BATCH_EVENTS};
use tally_storage::{Database, ScanCursor};

use crate::row::{self, Cell};
use crate::{tables, QueryError};

/// The rows of every table a query reads, taken together: the engine's tables as copies, the
/// log's tables as the stretch of the log to stream (everything up to the same lsn).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub tables: HashMap<&'static str, RecordBatch>,
    pub logs: HashMap<&'static str, LogStretch>,
    /// The past state the statement reads (`as_of.rs`); `None`: the live ledger.
    pub past: Option<Arc<tally_engine::Ledger>>,
}

/// A stretch of the log a statement reads: lsns `range`, never past the lsn its snapshot was
/// taken at (the log below it never changes).
#[derive(Clone)]
pub(crate) struct LogStretch {
    pub db: Arc<Database>,
    /// The past state the statement reads (`as_of.rs`), whose rewards `attributions` shows.
    pub past: Option<Arc<tally_engine::Ledger>>,
    pub range: LsnRange,
    /// Lsns read per chunk.
    pub chunk: u64,
}

impl fmt::Debug for LogStretch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsns {}..={} of {}", self.range.from, self.range.to, self.db.dir().display())
    }
}

/// Events read per chunk of a log scan by default (whole batches: a chunk ends at the first
/// batch boundary past this): bounds a scan's memory and how long it holds a worker.
pub const LOG_CHUNK_LSNS: u64 = 65_536;

/// One of the log's tables, streamed chunk by chunk (each read on a blocking thread).
#[derive(Debug)]
struct LogPartition {
    name: &'static str,
    schema: SchemaRef,
    stretch: LogStretch,
}

/// One chunk of a log table, and where the next chunk starts.
fn log_chunk(
    db: &Database,
    past: Option<&tally_engine::Ledger>,
    name: &'static str,
    stretch: tables::Stretch,
) -> Result<(RecordBatch, Option<ScanCursor>)> {
    match name {
        "events" => tables::events_stretch(db, stretch).map_err(ours),
        "inferences" | "attributions" => {
            let inferences = name == "inferences";
            let (i, a, next) =
                tables::inference_stretch(db, past, stretch, inferences, !inferences)
                    .map_err(ours)?;
            let batch =
                i.or(a).ok_or_else(|| DataFusionError::Internal(format!("{name}: no batch")))?;
            Ok((batch, next))
        }
        other => Err(DataFusionError::Internal(format!("{other} is not read from the log"))),
    }
}

/// Where a streamed log scan is.
enum Scan {
    Start,
    At(ScanCursor),
    Done,
}

impl PartitionStream for LogPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (name, stretch) = (self.name, self.stretch.clone());
        let stream = futures::stream::unfold(Scan::Start, move |scan| {
            let (db, past) = (stretch.db.clone(), stretch.past.clone());
            let LsnRange { from, to } = stretch.range;
            let max = usize::try_from(stretch.chunk).unwrap_or(usize::MAX);
            async move {
                let at = match scan {
                    Scan::Start => None,
                    Scan::At(cursor) => Some(cursor),
                    Scan::Done => return None,
                };
                if from > to {
                    return None;
                }
                let part = tables::Stretch { from, to, at, max };
                let chunk = tokio::task::spawn_blocking(move || {
                    log_chunk(&db, past.as_deref(), name, part)
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
                .and_then(|r| r);
                Some(match chunk {
                    Ok((batch, Some(next))) => (Ok(batch), Scan::At(next)),
                    Ok((batch, None)) => (Ok(batch), Scan::Done),
                    Err(e) => (Err(e), Scan::Done),
                })
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Where an INSERT's rows land as events, for the statement's caller to append.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub events: Mutex<Option<(&'static str, Vec<Event>)>>,
}

fn ours(e: QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[derive(Debug)]
pub(crate) struct LedgerTable {
    name: &'static str,
    schema: SchemaRef,
}

impl LedgerTable {
    pub fn new(name: &'static str, schema: SchemaRef) -> LedgerTable {
        LedgerTable { name, schema }
    }
}

#[async_trait]
impl TableProvider for LedgerTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// The log's tables take lsn bounds (`lsn >= 100`, `lsn BETWEEN …`): the statement's
    /// snapshot then reads only that stretch of the log, found through its lsn index. The
    /// keyed tables take key equalities (`account = 'a'`). Either may compare with a
    /// placeholder (`account = $1`): a prepared statement is optimized before it is bound, and
    /// its bound filter must sit in the scan too. DataFusion still applies the filter itself
    /// (Inexact), so a pushed filter is only ever a saving.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                let keyed = tables::key_column(self.name).is_some_and(|column| {
                    key_equals(&bound_as(f, ScalarValue::Utf8(Some(String::new()))), column)
                        .is_some()
                });
                let bound = || lsn_bound(&bound_as(f, ScalarValue::Int64(Some(1)))).is_some();
                if keyed || (is_log_table(self.name) && bound()) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = state.config().get_extension::<Snapshot>();
        if is_log_table(self.name) {
            // A plan built without a snapshot (only to describe a statement) scans nothing.
            let stretch = snapshot.as_ref().and_then(|s| s.logs.get(self.name).cloned());
            let Some(stretch) = stretch else {
                return Ok(MemorySourceConfig::try_new_exec(
                    &[vec![]],
                    self.schema.clone(),
                    projection.cloned(),
                )?);
            };
            let partition = LogPartition { name: self.name, schema: self.schema.clone(), stretch };
            return Ok(Arc::new(StreamingTableExec::try_new(
                self.schema.clone(),
                vec![Arc::new(partition)],
                projection,
                Vec::<LexOrdering>::new(),
                false,
                limit,
            )?));
        }
        let batch = snapshot
            .as_ref()
            .and_then(|s| s.tables.get(self.name).cloned())
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
        let partitions = split(batch);
        Ok(MemorySourceConfig::try_new_exec(
            &[partitions],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((table, writable)) = row::writable(self.name) else {
            return Err(ours(QueryError::AppendOnly(format!(
                "INSERT into the read-only table {}",
                self.name
            ))));
        };
        if op != InsertOp::Append {
            return Err(ours(QueryError::AppendOnly(format!("INSERT {op} into {table}"))));
        }
        let slot = state.config().get_extension::<Written>().ok_or_else(|| {
            DataFusionError::Internal("an INSERT ran without a place for its rows".into())
        })?;
        let sink = RowSink { table, writable, schema: input.schema(), slot };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Tables read from the log rather than from the engine state.
pub(crate) fn is_log_table(name: &str) -> bool {
    matches!(name, "events" | "inferences" | "attributions")
}

/// The text a filter `column = 'literal'` (either way round) asks for.
pub(crate) fn key_equals(e: &Expr, column: &str) -> Option<String> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = e else { return None };
    let text = |e: &Expr| match e {
        Expr::Literal(v, _) => text_value(v).map(str::to_owned),
        _ => None,
    };
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    if is_column(left) {
        text(right)
    } else if is_column(right) {
        text(left)
    } else {
        None
    }
}

/// `e` with each placeholder in it replaced by `value`: the shape it will have once bound.
fn bound_as(e: &Expr, value: ScalarValue) -> Expr {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let bound = e.clone().transform(|e| match e {
        Expr::Placeholder(_) => Ok(Transformed::yes(Expr::Literal(value.clone(), None))),
        other => Ok(Transformed::no(other)),
    });
    bound.map_or_else(|_| e.clone(), |t| t.data)
}

/// The text of a non-NULL text value, in any of Arrow's string types.
pub(crate) fn text_value(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s),
        _ => None,
    }
}

/// An inclusive lsn range, `[from, to]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LsnRange {
    pub from: u64,
    pub to: u64,
}

impl LsnRange {
    pub const ALL: LsnRange = LsnRange { from: 0, to: u64::MAX };

    pub fn intersect(self, o: LsnRange) -> LsnRange {
        LsnRange { from: self.from.max(o.from), to: self.to.min(o.to) }
    }

    /// The smallest range holding both.
    pub fn hull(self, o: LsnRange) -> LsnRange {
        LsnRange { from: self.from.min(o.from), to: self.to.max(o.to) }
    }
}

/// The lsn range a filter keeps, when it is a bound on the `lsn` column by a literal.
pub(crate) fn lsn_bound(e: &Expr) -> Option<LsnRange> {
    use datafusion::logical_expr::{Between, BinaryExpr, Operator};
    let literal = |e: &Expr| match e {
        Expr::Literal(v, _) => v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(Some(i)) => Some(i),
            _ => None,
        }),
        _ => None,
    };
    let is_lsn = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "lsn");
    // Lsns are ≥ 1; a bound below that keeps nothing or everything, as clamped here.
    let at_least = |i: i64| LsnRange { from: u64::try_from(i).unwrap_or(0), to: u64::MAX };
    let at_most = |i: i64| match u64::try_from(i) {
        Ok(v) => LsnRange { from: 0, to: v },
        Err(_) => LsnRange { from: 1, to: 0 },
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = if is_lsn(left) {
                (*op, literal(right)?)
            } else if is_lsn(right) {
                (op.swap()?, literal(left)?)
            } else if *op == Operator::And {
                return match (lsn_bound(left), lsn_bound(right)) {
                    (Some(a), Some(b)) => Some(a.intersect(b)),
                    (Some(a), None) | (None, Some(a)) => Some(a),
                    (None, None) => None,
                };
            } else {
                return None;
            };
            match op {
                Operator::Eq => Some(at_least(value).intersect(at_most(value))),
                Operator::Gt => Some(at_least(value.saturating_add(1))),
                Operator::GtEq => Some(at_least(value)),
                Operator::Lt => Some(at_most(value.saturating_sub(1))),
                Operator::LtEq => Some(at_most(value)),
                _ => None,
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) if is_lsn(expr) => {
            Some(at_least(literal(low)?).intersect(at_most(literal(high)?)))
        }
        _ => None,
    }
}

/// Batches of at most this many rows, so that DataFusion can work on them in parallel.
const SCAN_BATCH_ROWS: usize = 65_536;

fn split(batch: RecordBatch) -> Vec<RecordBatch> {
    if batch.num_rows() <= SCAN_BATCH_ROWS {
        return vec![batch];
    }
    (0..batch.num_rows())
        .step_by(SCAN_BATCH_ROWS)
        .map(|at| batch.slice(at, SCAN_BATCH_ROWS.min(batch.num_rows() - at)))
        .collect()
}

/// Turns an INSERT's rows into events, exactly (`row.rs`); appends nothing.
struct RowSink {
    table: &'static str,
    writable: &'static [&'static str],
    schema: SchemaRef,
    slot: Arc<Written>,
}

impl fmt::Debug for RowSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowSink({})", self.table)
    }
}

impl DisplayAs for RowSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "append to the ledger: {}", self.table)
    }
}

#[async_trait]
impl DataSink for RowSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let mut events = Vec::new();
        while let Some(batch) = data.next().await {
            let batch = batch?;
            let columns = batch.columns();
            for r in 0..batch.num_rows() {
                let index = events.len();
                if index == MAX_BATCH_EVENTS {
                    return Err(ours(QueryError::TooLarge(format!(
                        "this statement writes more than {MAX_BATCH_EVENTS} rows"
                    ))));
                }
                let refused = |field: String, value: String, message: String, sqlstate| {
                    ours(QueryError::Refused {
                        row: index + 1,
                        table: self.table,
                        field,
                        value,
                        message,
                        sqlstate,
                    })
                };
                // Columns past the writable ones are the ledger's own (lsn, ts, …).
                for (c, field) in columns.iter().zip(self.schema.fields()).skip(self.writable.len())
                {
                    if c.data_type() != &DataType::Null && !c.is_null(r) {
                        return Err(refused(
                            field.name().clone(),
                            "(a value)".into(),
                            format!("{} is set by the ledger and cannot be written", field.name()),
                            "22023",
                        ));
                    }
                }
                let mut cells = [Cell::Null; row::MAX_WRITABLE];
                for (slot, c) in cells.iter_mut().zip(&columns[..self.writable.len()]) {
                    *slot = cell(c.as_ref(), r);
                }
                let event = row::to_event(self.table, &cells[..self.writable.len()], index)
                    .map_err(|e| refused(e.field.into(), e.value, e.message, e.sqlstate))?;
                events.push(event);
            }
        }
        let n = events.len() as u64;
        *self.slot.events.lock().expect("the write slot is never poisoned") =
            Some((self.table, events));
        Ok(n)
    }
}

/// Row `r` of `array` as a `Cell`, without any conversion.
pub(crate) fn cell(array: &dyn Array, r: usize) -> Cell<'_> {
    use datafusion::arrow::datatypes as t;
    if array.is_null(r) {
        return Cell::Null;
    }
    match array.data_type() {
        DataType::Null => Cell::Null,
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(r)),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(r)),
        DataType::Utf8View => Cell::Text(array.as_string_view().value(r)),
        DataType::Int8 => Cell::Int(array.as_primitive::<t::Int8Type>().value(r).into()),
        DataType::Int16 => Cell::Int(array.as_primitive::<t::Int16Type>().value(r).into()),
        DataType::Int32 => Cell::Int(array.as_primitive::<t::Int32Type>().value(r).into()),
        DataType::Int64 => Cell::Int(array.as_primitive::<t::Int64Type>().value(r)),
        DataType::UInt8 => Cell::Int(array.as_primitive::<t::UInt8Type>().value(r).into()),
        DataType::UInt16 => Cell::Int(array.as_primitive::<t::UInt16Type>().value(r).into()),
        DataType::UInt32 => Cell::Int(array.as_primitive::<t::UInt32Type>().value(r).into()),
        DataType::UInt64 => {
            let v = array.as_primitive::<t::UInt64Type>().value(r);
            i64::try_from(v).map_or(Cell::Decimal { value: i128::from(v), scale: 0 }, Cell::Int)
        }
        DataType::Float32 => Cell::Float(array.as_primitive::<t::Float32Type>().value(r).into()),
        DataType::Float64 => Cell::Float(array.as_primitive::<t::Float64Type>().value(r)),
        DataType::Decimal128(_, scale) => Cell::Decimal {
            value: array.as_primitive::<t::Decimal128Type>().value(r),
            scale: *scale,
        },
        DataType::Boolean => Cell::Other("BOOLEAN"),
        DataType::Date32 | DataType::Date64 => Cell::Other("DATE"),
        DataType::Timestamp(..) => Cell::Other("TIMESTAMP"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Cell::Other("BYTEA"),
        DataType::List(_) | DataType::LargeList(_) => Cell::Other("ARRAY"),
        _ => Cell::Other("unsupported type"),
    }
}
