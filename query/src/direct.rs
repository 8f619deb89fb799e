//! Direct reads: the queries most clients repeat — a row by its key, a table's rows in an
//! order, its first n — answered from the engine state without DataFusion's physical planning
//! and execution, which cost several times the read itself (docs/benchmarks.md). A plan is
//! taken here only when every node of it is one this module evaluates exactly as DataFusion
//! would: a scan of an engine table, filters that are key equalities (the keyed read is then
//! the filter), projections of plain columns, one sort on plain columns, one limit; or a
//! `count(*)` of a whole `events`, `inferences` or `attributions` table, answered from the
//! state's counters (a scan would read and decode the whole log for it). Anything else goes
//! the general way; so does a plan whose bound values this path cannot use (a NULL or
//! non-text key). This module never decides what a query means, only how a plan already
//! planned and optimized is evaluated.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{take, LexicographicalComparator, SortColumn, SortOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, FetchType, LogicalPlan, Operator, SkipType, Sort, TableScan,
};
use tally_storage::Database;

use crate::provider::text_value;
use crate::{tables, QueryError};

/// A plan answered directly.
#[derive(Debug)]
pub enum Direct {
    /// Rows of one engine table.
    Table(TableRead),
    /// The number of rows of a whole log table.
    Count(LogCount),
}

impl Direct {
    /// The direct form of an optimized plan, if it has one.
    pub(crate) fn compile(plan: &LogicalPlan) -> Option<Direct> {
        LogCount::compile(plan)
            .map(Direct::Count)
            .or_else(|| TableRead::compile(plan).map(Direct::Table))
    }

    /// Reads the answer under one read lock; `None` when the bound values do not fit this
    /// path (the general path then answers, errors included).
    pub(crate) fn read(
        &self,
        db: &Database,
        past: Option<&tally_engine::Ledger>,
        params: Option<&ParamValues>,
    ) -> Result<Option<RecordBatch>, QueryError> {
        match self {
            Direct::Table(read) => read.read(db, past, params),
            Direct::Count(count) => count.read(db, past).map(Some),
        }
    }
}

/// A plan that reads one engine table directly. Columns are numbered as the table's full
/// batch (`tables::build`) numbers them.
#[derive(Debug)]
pub struct TableRead {
    table: &'static str,
    /// The rows whose key column equals each of these (all must hold); `None`: every row.
    keys: Option<Vec<KeyValue>>,
    /// The sort, by table column, before the limit.
    order: Vec<(usize, SortOptions)>,
    /// Rows skipped, then rows kept (`None`: all), after the sort.
    skip: usize,
    fetch: Option<usize>,
    /// The answer's columns, by table column, and its schema (the plan's).
    columns: Vec<usize>,
    schema: SchemaRef,
}

/// A key a filter compares with: written in the SQL, or a placeholder bound at each Execute.
#[derive(Debug)]
enum KeyValue {
    Text(String),
    Placeholder(String),
}

/// What has been compiled of a plan so far, bottom up.
struct Shape {
    table: &'static str,
    /// The table's full schema.
    schema: SchemaRef,
    keys: Option<Vec<KeyValue>>,
    order: Vec<(usize, SortOptions)>,
    limit: Option<(usize, Option<usize>)>,
    /// The node's output columns, by table column.
    columns: Vec<usize>,
}

impl TableRead {
    fn compile(plan: &LogicalPlan) -> Option<TableRead> {
        let shape = shape(plan)?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let table = &shape.schema;
        // The answer's columns must be the table's own, type for type (no cast hides here).
        let same = shape.columns.len() == schema.fields().len()
            && shape.columns.iter().zip(schema.fields()).all(|(c, f)| {
                table.field(*c).data_type() == f.data_type()
                    && (f.is_nullable() || !table.field(*c).is_nullable())
            });
        if !same {
            return None;
        }
        let (skip, fetch) = shape.limit.unwrap_or((0, None));
        Some(TableRead {
            table: shape.table,
            keys: shape.keys,
            order: shape.order,
            skip,
            fetch,
            columns: shape.columns,
            schema,
        })
    }

    fn read(
        &self,
        db: &Database,
        past: Option<&tally_engine::Ledger>,
        params: Option<&ParamValues>,
    ) -> Result<Option<RecordBatch>, QueryError> {
        let keys = match &self.keys {
            None => None,
            Some(values) => match bound_keys(values, params) {
                Some(keys) => Some(keys),
                None => return Ok(None),
            },
        };
        // Without an order, the first skip + fetch rows are all the answer can hold.
        let first = match (self.order.is_empty(), self.fetch) {
            (true, Some(fetch)) => self.skip.saturating_add(fetch),
            _ => usize::MAX,
        };
        let batch = crate::as_of::read(db, past, |l| match &keys {
            Some(keys) => tables::build_keyed(self.table, l, keys),
            None => tables::build_first(self.table, l, first),
        });
        let batch = batch.expect("compiled for an engine table")?;
        let rows = self.rows(&batch)?;
        let columns = self
            .columns
            .iter()
            .map(|c| take_rows(batch.column(*c), rows.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }

    /// The rows of `batch` the answer holds, in its order; `None`: all, as they are.
    fn rows(&self, batch: &RecordBatch) -> Result<Option<UInt32Array>, QueryError> {
        let n = batch.num_rows();
        let end = self.fetch.map_or(n, |f| self.skip.saturating_add(f).min(n));
        if self.order.is_empty() {
            return Ok(
                (self.skip > 0 || end < n).then(|| (self.skip.min(end)..end).map(to_u32).collect())
            );
        }
        let sort: Vec<SortColumn> = self
            .order
            .iter()
            .map(|(c, options)| SortColumn {
                values: batch.column(*c).clone(),
                options: Some(*options),
            })
            .collect();
        let comparator = LexicographicalComparator::try_new(&sort)?;
        // Ties keep the table's order, so an answer never depends on the sort's luck.
        let order = |a: &usize, b: &usize| comparator.compare(*a, *b).then(a.cmp(b));
        let mut rows: Vec<usize> = (0..n).collect();
        if end < n {
            if end > 0 {
                rows.select_nth_unstable_by(end - 1, order);
            }
            rows.truncate(end);
        }
        rows.sort_unstable_by(order);
        Ok(Some(rows[self.skip.min(rows.len())..].iter().copied().map(to_u32).collect()))
    }
}

/// `SELECT count(*)` of a whole `events`, `inferences` or `attributions` table (no filter, no
/// limit): answered from the state's counters instead of reading and decoding the whole log.
/// Lsns are dense from 1, so `events` holds as many rows as the live ledger's last lsn (a past
/// state does not shorten the log); `inferences` one row per inference and `attributions` one
/// per entry accepted up to the statement's state (live or past), which the epochs and the
/// datanets count.
#[derive(Debug)]
pub struct LogCount {
    table: &'static str,
    schema: SchemaRef,
}

impl LogCount {
    fn compile(plan: &LogicalPlan) -> Option<LogCount> {
        let aggregate = match plan {
            LogicalPlan::Projection(p) => match (p.expr.as_slice(), p.input.as_ref()) {
                // A projection that only names the count, as `shape` reads projections.
                ([e], LogicalPlan::Aggregate(a))
                    if matches!(e.clone().unalias(), Expr::Column(_)) =>
                {
                    a
                }
                _ => return None,
            },
            LogicalPlan::Aggregate(a) => a,
            _ => return None,
        };
        let LogicalPlan::TableScan(scan) = aggregate.input.as_ref() else { return None };
        if !aggregate.group_expr.is_empty()
            || scan.table_name.schema().is_some_and(|s| s != "public")
            || !scan.filters.is_empty()
            || scan.fetch.is_some()
        {
            return None;
        }
        let table = ["events", "inferences", "attributions"]
            .into_iter()
            .find(|t| *t == scan.table_name.table())?;
        let ([count], [field]) = (aggregate.aggr_expr.as_slice(), plan.schema().fields().as_ref())
        else {
            return None;
        };
        if !counts_rows(count) || field.data_type() != &DataType::Int64 {
            return None;
        }
        Some(LogCount { table, schema: Arc::new(plan.schema().as_arrow().clone()) })
    }

    fn read(
        &self,
        db: &Database,
        past: Option<&tally_engine::Ledger>,
    ) -> Result<RecordBatch, QueryError> {
        // `events` is the log itself: a past state does not shorten it (as in `session.rs`).
        let rows = match self.table {
            "events" => db.read(|l| l.last_lsn()),
            "inferences" => crate::as_of::read(db, past, |l| l.inference_count()),
            _ => crate::as_of::read(db, past, |l| l.entry_count()),
        };
        let rows = i64::try_from(rows)
            .map_err(|_| QueryError::Internal(format!("{} rows in {}", rows, self.table)))?;
        Ok(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(Int64Array::from(vec![rows]))])?)
    }
}

/// Whether `e` is `count(*)`: `count` of one non-NULL literal, not DISTINCT, no FILTER, no
/// ORDER BY (an ordered or filtered count is not the number of rows).
fn counts_rows(e: &Expr) -> bool {
    let Expr::AggregateFunction(f) = e else { return false };
    let p = &f.params;
    f.func.name() == "count"
        && !p.distinct
        && p.filter.is_none()
        && p.order_by.is_empty()
        && matches!(p.args.as_slice(), [Expr::Literal(v, _)] if !v.is_null())
}

fn to_u32(row: usize) -> u32 {
    u32::try_from(row).expect("an engine table has fewer than 2^32 rows")
}

fn take_rows(column: &ArrayRef, rows: Option<&UInt32Array>) -> Result<ArrayRef, QueryError> {
    Ok(match rows {
        Some(rows) => take(column.as_ref(), rows, None)?,
        None => column.clone(),
    })
}

/// The keys the filters ask for once bound: one key (all equal) or none (they differ);
/// `None` when a value is not text this path can look up.
fn bound_keys(values: &[KeyValue], params: Option<&ParamValues>) -> Option<BTreeSet<String>> {
    let mut keys: Option<String> = None;
    let mut differ = false;
    for v in values {
        let key = match v {
            KeyValue::Text(s) => s.clone(),
            KeyValue::Placeholder(id) => {
                let bound = params?.get_placeholders_with_values(id).ok()?.value;
                text_value(&bound)?.to_owned()
            }
        };
        match &keys {
            Some(k) if *k != key => differ = true,
            Some(_) => {}
            None => keys = Some(key),
        }
    }
    Some(if differ { BTreeSet::new() } else { keys.into_iter().collect() })
}

/// Compiles `plan` bottom up; `None` at the first node this path does not evaluate.
fn shape(plan: &LogicalPlan) -> Option<Shape> {
    match plan {
        LogicalPlan::TableScan(scan) => scan_shape(scan),
        LogicalPlan::Filter(filter) => {
            let mut s = shape(&filter.input)?;
            // A filter above a sort or a limit keeps fewer rows than a keyed read would.
            if !s.order.is_empty() || s.limit.is_some() {
                return None;
            }
            let column = tables::key_column(s.table)?;
            let keys = s.keys.get_or_insert_with(Vec::new);
            for conjunct in split_conjunction(&filter.predicate) {
                let (c, value) = key_of(conjunct)?;
                let index = filter.input.schema().index_of_column(c).ok()?;
                if s.schema.field(s.columns[index]).name() != column {
                    return None;
                }
                keys.push(value);
            }
            Some(s)
        }
        LogicalPlan::Projection(p) => {
            let mut s = shape(&p.input)?;
            let columns = p
                .expr
                .iter()
                .map(|e| column_index(e.clone().unalias(), &p.input).map(|i| s.columns[i]))
                .collect::<Option<Vec<_>>>()?;
            s.columns = columns;
            Some(s)
        }
        LogicalPlan::SubqueryAlias(a) => shape(&a.input),
        LogicalPlan::Sort(sort) => sort_shape(sort),
        LogicalPlan::Limit(limit) => {
            let mut s = shape(&limit.input)?;
            let SkipType::Literal(skip) = limit.get_skip_type().ok()? else { return None };
            let FetchType::Literal(fetch) = limit.get_fetch_type().ok()? else { return None };
            s.limit = Some(match s.limit {
                None => (skip, fetch),
                Some((s1, f1)) => {
                    let left = f1.map(|f| f.saturating_sub(skip));
                    let fetch = match (left, fetch) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    (s1.saturating_add(skip), fetch)
                }
            });
            Some(s)
        }
        _ => None,
    }
}

fn scan_shape(scan: &TableScan) -> Option<Shape> {
    // An engine table by its own name (not a catalog's table of the same name).
    if scan.table_name.schema().is_some_and(|s| s != "public") {
        return None;
    }
    let table = tables::TABLES.iter().copied().find(|t| *t == scan.table_name.table())?;
    let schema = scan.source.schema();
    let columns = scan.projection.clone().unwrap_or_else(|| (0..schema.fields().len()).collect());
    // The scan's filters are the filter above it, pushed down (Inexact): that node is the
    // one compiled; a scan that was told to filter alone is not taken.
    if !scan.filters.is_empty() && tables::key_column(table).is_none() {
        return None;
    }
    let limit = scan.fetch.map(|f| (0, Some(f)));
    if limit.is_some() && !scan.filters.is_empty() {
        return None;
    }
    Some(Shape { table, schema, keys: None, order: Vec::new(), limit, columns })
}

fn sort_shape(sort: &Sort) -> Option<Shape> {
    let mut s = shape(&sort.input)?;
    if !s.order.is_empty() || s.limit.is_some() {
        return None;
    }
    s.order = sort
        .expr
        .iter()
        .map(|e| {
            let index = column_index(e.expr.clone(), &sort.input)?;
            let options = SortOptions { descending: !e.asc, nulls_first: e.nulls_first };
            Some((s.columns[index], options))
        })
        .collect::<Option<Vec<_>>>()?;
    s.limit = sort.fetch.map(|f| (0, Some(f)));
    Some(s)
}

/// The input column a plain column expression reads.
fn column_index(e: Expr, input: &LogicalPlan) -> Option<usize> {
    let Expr::Column(c) = e else { return None };
    input.schema().index_of_column(&c).ok()
}

/// `column = 'text'` or `column = $n`, either way round.
fn key_of(e: &Expr) -> Option<(&datafusion::common::Column, KeyValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = e else { return None };
    let value = |e: &Expr| match e {
        Expr::Literal(v, _) => text_value(v).map(|s| KeyValue::Text(s.to_owned())),
        Expr::Placeholder(p) => Some(KeyValue::Placeholder(p.id.clone())),
        _ => None,
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), other) | (other, Expr::Column(c)) => Some((c, value(other)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sql;

    #[test]
    fn only_plans_this_path_evaluates_exactly_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let sql = Sql::new(Arc::new(Database::open(dir.path()).unwrap())).unwrap();
        let rt = sql.database().runtime();
        let direct = |q: &str| {
            let statement = Sql::parse(q).unwrap().statements.remove(0);
            let plan = rt.block_on(sql.plan(&statement)).unwrap();
            Direct::compile(&sql.optimize(&plan).unwrap()).is_some()
        };
        for q in [
            "SELECT earned, settled, pending FROM balances WHERE account = 'a'",
            "SELECT earned FROM balances WHERE account = $1",
            "SELECT b.account AS who FROM balances b WHERE 'a' = b.account",
            "SELECT account, earned FROM balances ORDER BY earned DESC LIMIT 100",
            "SELECT datanet, earned FROM datanets ORDER BY earned DESC",
            "SELECT * FROM contributions WHERE contribution = 'c' AND contribution = $1",
            "SELECT * FROM models LIMIT 3 OFFSET 1",
            "SELECT * FROM epochs",
            "SELECT count(*) FROM inferences",
            "SELECT COUNT(1) AS n FROM events",
            "SELECT count(*) FROM attributions",
        ] {
            assert!(direct(q), "direct: {q}");
        }
        for q in [
            "SELECT earned + 1 FROM balances WHERE account = 'a'",
            "SELECT earned FROM balances WHERE earned > 5",
            "SELECT earned FROM balances WHERE account = 'a' OR account = 'b'",
            "SELECT earned FROM balances WHERE upper(account) = 'A'",
            "SELECT * FROM datanets WHERE datanet = 'd'",
            "SELECT count(*) FROM balances",
            "SELECT count(*) FROM inferences WHERE lsn > 5",
            "SELECT count(*) FROM inferences WHERE fee > 5",
            "SELECT count(*) FROM (SELECT * FROM events LIMIT 3) t",
            "SELECT count(DISTINCT model) FROM inferences",
            "SELECT count(model) FROM inferences",
            "SELECT count(NULL) FROM events",
            "SELECT count(*) FILTER (WHERE fee > 5) FROM inferences",
            "SELECT count(*), max(lsn) FROM events",
            "SELECT count(*) FROM inferences GROUP BY model",
            "SELECT count(*) + 1 FROM events",
            "SELECT b.account FROM balances b JOIN payouts p ON p.account = b.account",
            "SELECT * FROM (SELECT * FROM balances LIMIT 5) t WHERE account = 'a'",
            "SELECT * FROM events LIMIT 1",
            "SELECT * FROM inferences WHERE inference = 'i'",
            "SELECT * FROM cluster",
            "SELECT table_name FROM information_schema.tables",
            "SELECT CAST(earned AS double) FROM balances",
            "EXPLAIN SELECT * FROM balances",
        ] {
            assert!(!direct(q), "general: {q}");
        }
    }
}
