//! SQL over the ledger: one `Sql` per database, shared by every connection and by the embedded
//! API. It owns the DataFusion context the tables are registered in (empty providers, see
//! `provider.rs`); each statement runs in its own session state carrying the data it reads,
//! copied under one short read lock, so no lock is held while a query runs and ingest is never
//! stalled by a long scan. A write's rows come back as events, which `execute.rs` appends or
//! adds to the session's transaction block (`transaction.rs`).
//!
//! Safety for a server: statements that read or write the server's files or register tables
//! are refused before planning, DDL is off, and every query has a bounded memory pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{
    DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, Projection, WriteOp,
};
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Query, SetExpr, Statement, TableObject};
use datafusion::sql::sqlparser::parser::ParserError;
use tally_engine::{Event, Ledger};
use tally_storage::Database;
use tokio::sync::Semaphore;

use crate::as_of::{self, PastStates};
use crate::complexity::check_statement_text;
use crate::copy::CopyIn;
use crate::direct::Direct;
use crate::execute::Planned;
use crate::parse_cache::ParseCache;
use crate::plan_cache::PlanCache;
use crate::provider::{lsn_bound, LedgerTable, LogStretch, LsnRange, Snapshot, Written};
use crate::{row, tables, QueryError, Rows};

/// Memory one query may use (sorts, joins, aggregates); beyond it the query fails.
pub const QUERY_MEMORY_BYTES: usize = 512 << 20;

/// What a connection may do (surface.md: `reader` runs SELECT only, `writer` also writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Reader,
    Writer,
}

/// What running a planned statement gave.
pub(crate) enum Output {
    /// A query's rows, ready to run (lazily) against its own snapshot, or read already.
    Rows(Rows),
    /// A write's rows as events, not yet appended (`Sql::write` takes them).
    Write { table: &'static str, events: Vec<Event> },
}

/// SQL text parsed into statements.
#[derive(Clone)]
pub struct Parsed {
    pub statements: Vec<Statement>,
    /// Its expressions nest deeper than `HEAVY_DEPTH`: planned on a blocking thread.
    pub heavy: bool,
}

/// SQL access to a database.
#[derive(Clone)]
pub struct Sql {
    db: Arc<Database>,
    ctx: SessionContext,
    /// Lsns per chunk when the log's tables are streamed.
    log_chunk: u64,
    /// Heavy statements planning at once (`execute::HEAVY_DEPTH`): one per core.
    heavy_planning: Arc<Semaphore>,
    /// Simple reads skip DataFusion's execution (`direct.rs`); off only to compare.
    direct_reads: bool,
    /// Their plans, by statement (`plan_cache.rs`).
    plans: Arc<PlanCache>,
    /// Queries as parsed, by text (`parse_cache.rs`).
    pub(crate) parsed: Arc<ParseCache>,
    /// Past states sessions read (`as_of.rs`).
    past: Arc<PastStates>,
}

impl Sql {
    pub fn new(db: Arc<Database>) -> Result<Sql, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(QUERY_MEMORY_BYTES)))
            .build_arc()?;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("tally", "public");
        // Numeric literals keep every digit (as NUMERIC, like PostgreSQL's), so that a fee
        // of 1001.00000000000001 is seen as written and refused, not read as the double 1001.
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.add_analyzer_rule(Arc::new(crate::subquery::ScalarSubqueryRows));
        crate::value_limits::register(&ctx)?;
        // Schemas come from the builders themselves, so they cannot drift from the data.
        let empty = tally_engine::Ledger::new();
        for name in tables::TABLES {
            let batch = tables::build(name, &empty).expect("a known table")?;
            ctx.register_table(*name, Arc::new(LedgerTable::new(name, batch.schema())))?;
        }
        let cluster = tables::cluster(&db.cluster_status())?;
        ctx.register_table("cluster", Arc::new(LedgerTable::new("cluster", cluster.schema())))?;
        let events = tables::events(&db, 1, 0)?;
        ctx.register_table("events", Arc::new(LedgerTable::new("events", events.schema())))?;
        let (i, a) = tables::inference_tables(&db, 1, 0, true, true)?;
        for (name, b) in [("inferences", i), ("attributions", a)] {
            let schema = b.expect("asked for").schema();
            ctx.register_table(name, Arc::new(LedgerTable::new(name, schema)))?;
        }
        let running = Arc::new(Semaphore::new(crate::computed::MAX_COMPUTED_AT_ONCE));
        let simulate = (crate::simulate::SIMULATE_SETTLEMENT, crate::simulate::table as _);
        let functions: Vec<_> = std::iter::once(simulate).chain(crate::proofs::FUNCTIONS).collect();
        crate::computed::register(&ctx, &db, &running, &functions);
        let checkpoints = crate::computed::Computed {
            name: "checkpoints".into(),
            db: db.clone(),
            schema: crate::proofs::checkpoint_schema(),
            compute: crate::proofs::checkpoints_table(),
            running,
        };
        ctx.register_table("checkpoints", Arc::new(checkpoints))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let heavy_planning = Arc::new(Semaphore::new(cores));
        let log_chunk = crate::provider::LOG_CHUNK_LSNS;
        let plans = Arc::new(PlanCache::default());
        let parsed = Arc::new(ParseCache::default());
        let past = Arc::new(PastStates::default());
        Ok(Sql { db, ctx, log_chunk, heavy_planning, direct_reads: true, plans, parsed, past })
    }

    /// Reads the log's tables in chunks of `lsns` (default 65,536): smaller chunks use less
    /// memory per scan, larger ones less overhead.
    pub fn with_log_chunk(mut self, lsns: u64) -> Sql {
        self.log_chunk = lsns.max(1);
        self
    }

    /// Runs every query through DataFusion's execution, also those a direct read of the
    /// engine state answers (`direct.rs`): for tests and benchmarks that compare the two.
    pub fn without_direct_reads(mut self) -> Sql {
        self.direct_reads = false;
        self.plans = Arc::new(PlanCache::default());
        self
    }

    /// The direct form of an optimized plan, when this `Sql` reads directly and it has one.
    pub(crate) fn direct(&self, plan: &LogicalPlan) -> Option<Direct> {
        if self.direct_reads {
            Direct::compile(plan)
        } else {
            None
        }
    }

    /// The database underneath.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The shared DataFusion context (catalog name `tally`, schema `public`). The wire front
    /// end registers PostgreSQL's catalog here; nothing may register tables that read files.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub(crate) fn heavy_planning(&self) -> &Arc<Semaphore> {
        &self.heavy_planning
    }

    pub(crate) fn plans(&self) -> &PlanCache {
        &self.plans
    }

    pub(crate) fn past_states(&self) -> &PastStates {
        &self.past
    }

    /// Parses SQL text with PostgreSQL's dialect and the rewrites PostgreSQL clients need
    /// (`postgres.rs`), after checking its size and nesting (`complexity.rs`).
    pub fn parse(sql: &str) -> Result<Parsed, QueryError> {
        let depth = check_statement_text(sql)?;
        let mut statements = crate::postgres::parse(sql).map_err(|e| Sql::parse_error(sql, e))?;
        statements.iter_mut().for_each(crate::set_functions::rewrite);
        Ok(Parsed { statements, heavy: depth > crate::execute::HEAVY_DEPTH })
    }

    /// `parse`, answered from the queries parsed before when `sql` is one of them
    /// (`parse_cache.rs`): for text that clients send again and again.
    pub fn parse_kept(&self, sql: &str) -> Result<Parsed, QueryError> {
        if let Some(parsed) = self.parsed.get(sql) {
            return Ok(parsed);
        }
        let parsed = Sql::parse(sql)?;
        self.parsed.keep(sql, &parsed);
        Ok(parsed)
    }

    /// The error for SQL that PostgreSQL's grammar rejects. DataFusion's own statements that
    /// would reach the server's files (`CREATE EXTERNAL TABLE`) are named as not allowed.
    pub fn parse_error(sql: &str, e: ParserError) -> QueryError {
        if matches!(e, ParserError::RecursionLimitExceeded) {
            return QueryError::TooComplex("it nests more than 50 levels of parentheses".into());
        }
        if let Ok(statements) = DFParser::parse_sql(sql) {
            if statements.iter().any(|s| matches!(s, DfStatement::CreateExternalTable(_))) {
                return QueryError::NotAllowed(
                    "CREATE EXTERNAL TABLE would read the server's files".into(),
                );
            }
        }
        QueryError::DataFusion(datafusion::error::DataFusionError::SQL(Box::new(e), None))
    }

    /// Refuses what `access` or the ledger never allows, in surface.md's order: role first,
    /// then append-only, then statements that touch the server's files.
    pub fn check(statement: &Statement, access: Access) -> Result<(), QueryError> {
        if let (Some(what), Access::Reader) = (modifying(statement), access) {
            return Err(QueryError::NotAllowed(format!(
                "{what}: this user's role is reader, which may only read"
            )));
        }
        match statement {
            Statement::Explain { statement: inner, .. }
                if explain_analyzes(statement) && modifying(inner).is_some() =>
            {
                Err(QueryError::Unsupported(
                    "EXPLAIN ANALYZE of a write (it would not append anything; run the write)"
                        .into(),
                ))
            }
            Statement::Update { .. } => Err(QueryError::AppendOnly("UPDATE".into())),
            Statement::Delete(_) => Err(QueryError::AppendOnly("DELETE".into())),
            Statement::Truncate { .. } => Err(QueryError::AppendOnly("TRUNCATE".into())),
            Statement::Drop { .. } => Err(QueryError::AppendOnly("DROP".into())),
            Statement::Merge { .. } => Err(QueryError::AppendOnly("MERGE".into())),
            Statement::Insert(insert) => {
                let name = insert_table(insert);
                if row::writable(&name).is_none() && tables::is_table(&name) {
                    return Err(QueryError::AppendOnly(format!(
                        "INSERT into the read-only table {name}"
                    )));
                }
                if insert.on.is_some() || insert.returning.is_some() || insert.overwrite {
                    return Err(QueryError::Unsupported(
                        "INSERT with ON CONFLICT, RETURNING or OVERWRITE".into(),
                    ));
                }
                Ok(())
            }
            Statement::CreateTable(_)
            | Statement::CreateView { .. }
            | Statement::CreateIndex(_)
            | Statement::AlterTable { .. }
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateFunction(_) => {
                Err(QueryError::NotAllowed("DDL: the ledger's tables are fixed".into()))
            }
            Statement::Copy { .. } => match CopyIn::from_statement(statement) {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Plans one statement (already `check`ed). Placeholders may remain (`$1`), to be filled
    /// with `LogicalPlan::with_param_values` before `run`.
    pub async fn plan(&self, statement: &Statement) -> Result<LogicalPlan, QueryError> {
        let mut statement = statement.clone();
        if let Statement::Insert(insert) = &mut statement {
            // INSERT without a column list means the writable columns (surface.md).
            if insert.columns.is_empty() {
                if let Some((_, columns)) = row::writable(&insert_table(insert)) {
                    insert.columns =
                        columns.iter().map(|c| ObjectName::from(vec![Ident::new(*c)])).collect();
                }
            }
        }
        let state = self.ctx.state();
        let plan = state.statement_to_plan(DfStatement::Statement(Box::new(statement))).await?;
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Copy(_)) {
            return Err(QueryError::NotAllowed("DDL and COPY TO".into()));
        }
        Ok(plan)
    }

    /// What a plan optimized with placeholders needs once their values are bound: analysis
    /// again (type coercion above all: a value may come with another type than its
    /// placeholder was planned as) and expression simplification (a bound `LIMIT $1` must be
    /// a plain number again). The rest of the optimizer's work stands.
    pub(crate) fn rebind(&self, plan: LogicalPlan) -> Result<LogicalPlan, QueryError> {
        let state = self.ctx.state();
        let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {})?;
        let simplify = Optimizer::with_rules(vec![Arc::new(SimplifyExpressions::new())]);
        Ok(simplify.optimize(plan, &state, |_, _| {})?)
    }

    /// Analyzes and optimizes a plan (filters then sit in the scans they were pushed to).
    pub(crate) fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan, QueryError> {
        Ok(self.ctx.state().optimize(plan)?)
    }

    /// Runs a planned statement against a snapshot of the tables it reads.
    pub(crate) async fn run(
        &self,
        planned: Planned,
        past: Option<Arc<Ledger>>,
    ) -> Result<Output, QueryError> {
        // Optimized first, so that filters sit in the scans they were pushed down to.
        let plan = match planned {
            Planned::Logical(plan) => {
                let plan = self.optimize(&uncast_insert(plan)?)?;
                if let Some(direct) = self.direct(&plan) {
                    if let Some(batch) = direct.read(&self.db, past.as_deref(), None)? {
                        return Ok(Output::Rows(Rows::read(batch)));
                    }
                }
                plan
            }
            Planned::Optimized { plan, .. } => plan,
        };
        let names = reads_of(&plan)?;
        // Copying the engine's tables is CPU work. The tables with a row per contribution or
        // per account and epoch are copied off the async workers, unless only named keys
        // are read; the rest are small, and a hop to a blocking thread would cost more than
        // the copy (about 0.1 ms a statement).
        let large = ["contributions", "rewards", "payouts"]
            .iter()
            .any(|t| names.get(*t).is_some_and(|r| r.keys.is_none()));
        let snapshot = if large {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.snapshot(&names, past))
                .await
                .map_err(|e| QueryError::Write(format!("the snapshot task failed: {e}")))??
        } else {
            self.snapshot(&names, past)?
        };
        let snapshot = Arc::new(snapshot);
        let written = Arc::new(Written::default());
        // The plan is analyzed and optimized already: the state that turns it into a physical
        // plan does neither again (DataFusion would otherwise run every rule a second time).
        let mut state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_analyzer_rules(vec![])
            .with_optimizer_rules(vec![])
            .build();
        state.config_mut().set_extension(snapshot);
        state.config_mut().set_extension(written.clone());
        let is_insert =
            matches!(&plan, LogicalPlan::Dml(DmlStatement { op: WriteOp::Insert(_), .. }));
        let df = DataFrame::new(state, plan);
        if !is_insert {
            return Ok(Output::Rows(Rows::frame(df)));
        }
        df.collect().await.map_err(|e| QueryError::from(e).unwrap_external())?;
        let (table, events) = written
            .events
            .lock()
            .expect("the write slot is never poisoned")
            .take()
            .ok_or_else(|| QueryError::Unsupported("an INSERT that wrote nothing".into()))?;
        Ok(Output::Write { table, events })
    }

    /// The rows of the named tables, all at one lsn: the live ledger's, or `past`'s.
    fn snapshot(
        &self,
        names: &BTreeMap<String, Reads>,
        past: Option<Arc<Ledger>>,
    ) -> Result<Snapshot, QueryError> {
        let mut snapshot = Snapshot { past: past.clone(), ..Snapshot::default() };
        let wanted: Vec<(&'static str, Option<&BTreeSet<String>>)> = tables::TABLES
            .iter()
            .filter_map(|t| names.get(*t).map(|r| (*t, r.keys.as_ref())))
            .collect();
        let inference_keys = ["inferences", "attributions"]
            .iter()
            .filter_map(|t| names.get(*t).and_then(|r| r.keys.as_ref()))
            .flatten();
        let (built, pinned, at_inferences) = as_of::read(&self.db, past.as_deref(), |l| {
            let built = wanted
                .iter()
                .map(|(t, keys)| {
                    let batch = match keys {
                        Some(keys) => tables::build_keyed(t, l, keys),
                        None => tables::build(t, l),
                    };
                    batch.expect("a known table").map(|b| (*t, b))
                })
                .collect::<Result<Vec<_>, _>>();
            let lsns: BTreeSet<u64> = inference_keys.flat_map(|id| l.inference_lsns(id)).collect();
            (built, l.last_lsn(), lsns)
        });
        snapshot.tables.extend(built?);
        if names.contains_key("cluster") {
            snapshot.tables.insert("cluster", tables::cluster(&self.db.cluster_status())?);
        }
        for name in ["events", "inferences", "attributions"] {
            if let Some(Reads { lsns: r, keys }) = names.get(name) {
                // Named inferences are read where the fingerprint table says they are (the
                // scan's filter then keeps exactly those ids), not searched for in the log.
                let r = match keys {
                    Some(_) => r.intersect(at(&at_inferences)),
                    None => *r,
                };
                // `events` is the log itself: a past state does not shorten it.
                let (pinned, past) = match name {
                    "events" => (self.db.read(|l| l.last_lsn()), None),
                    _ => (pinned, past.clone()),
                };
                let range = LsnRange { from: r.from.max(1), to: r.to.min(pinned) };
                let chunk = self.log_chunk;
                let stretch = LogStretch { db: self.db.clone(), past, range, chunk };
                snapshot.logs.insert(name, stretch);
            }
        }
        Ok(snapshot)
    }
}

/// The stretch of lsns that holds `lsns` (empty when there are none).
fn at(lsns: &BTreeSet<u64>) -> LsnRange {
    match (lsns.first(), lsns.last()) {
        (Some(first), Some(last)) => LsnRange { from: *first, to: *last },
        _ => LsnRange { from: 1, to: 0 },
    }
}

/// The modifying statement `statement` is or carries, by name: itself, the statement an
/// EXPLAIN describes, or a data-modifying part of a query (`WITH x AS (INSERT …) …`,
/// `WITH … INSERT …`). Role is checked on this before anything else (surface.md).
pub(crate) fn modifying(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Insert(_) => Some("INSERT"),
        Statement::Update { .. } => Some("UPDATE"),
        Statement::Delete(_) => Some("DELETE"),
        Statement::Truncate { .. } => Some("TRUNCATE"),
        Statement::Drop { .. } => Some("DROP"),
        Statement::Merge { .. } => Some("MERGE"),
        Statement::Copy { to: false, .. } => Some("COPY FROM"),
        Statement::Explain { statement, .. } => modifying(statement),
        Statement::Query(q) => query_modifies(q),
        _ => None,
    }
}

fn query_modifies(q: &Query) -> Option<&'static str> {
    let ctes = q.with.iter().flat_map(|w| &w.cte_tables);
    ctes.into_iter().find_map(|c| query_modifies(&c.query)).or_else(|| set_modifies(&q.body))
}

fn set_modifies(s: &SetExpr) -> Option<&'static str> {
    match s {
        SetExpr::Insert(st) | SetExpr::Update(st) | SetExpr::Delete(st) | SetExpr::Merge(st) => {
            modifying(st)
        }
        SetExpr::Query(q) => query_modifies(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_modifies(left).or_else(|| set_modifies(right))
        }
        _ => None,
    }
}

/// Whether an EXPLAIN runs its statement (`EXPLAIN ANALYZE`, `EXPLAIN (ANALYZE) …`).
fn explain_analyzes(statement: &Statement) -> bool {
    let Statement::Explain { analyze, options, .. } = statement else { return false };
    *analyze
        || options.iter().flatten().any(|o| {
            o.name.value.eq_ignore_ascii_case("analyze")
                && !o.arg.as_ref().is_some_and(|a| {
                    let a = a.to_string().to_ascii_lowercase();
                    a == "false" || a == "off" || a == "0"
                })
        })
}

/// The tables an (optimized) plan reads: for the log's tables the lsn range it keeps, for a
/// keyed table the keys it asks for (`balances WHERE account = 'x'`).
fn reads_of(plan: &LogicalPlan) -> Result<BTreeMap<String, Reads>, QueryError> {
    let mut names: BTreeMap<String, Reads> = BTreeMap::new();
    plan.apply_with_subqueries(|p| {
        if let LogicalPlan::TableScan(scan) = p {
            let table = scan.table_name.table();
            let reads = Reads {
                lsns: scan
                    .filters
                    .iter()
                    .filter_map(lsn_bound)
                    .fold(LsnRange::ALL, LsnRange::intersect),
                keys: key_filter(table, &scan.filters),
            };
            names
                .entry(table.to_owned())
                .and_modify(|r| *r = r.clone().union(reads.clone()))
                .or_insert(reads);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(names)
}

/// What a statement reads of one table.
#[derive(Debug, Clone)]
struct Reads {
    /// The lsns it keeps (log tables).
    lsns: LsnRange,
    /// The keys it asks for, when every scan of the table names them (keyed tables).
    keys: Option<BTreeSet<String>>,
}

impl Reads {
    /// What two scans of the same table read together.
    fn union(self, o: Reads) -> Reads {
        let keys = match (self.keys, o.keys) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        Reads { lsns: self.lsns.hull(o.lsns), keys }
    }
}

/// The keys a scan's pushed-down filters ask for: `account = 'x'` on `balances`. `None`: all.
fn key_filter(table: &str, filters: &[Expr]) -> Option<BTreeSet<String>> {
    let column = tables::key_column(table)?;
    let mut keys: Option<BTreeSet<String>> = None;
    for f in filters {
        if let Some(k) = crate::provider::key_equals(f, column) {
            let k: BTreeSet<String> = [k].into();
            keys = Some(match keys {
                Some(prev) => prev.intersection(&k).cloned().collect(),
                None => k,
            });
        }
    }
    keys
}

fn insert_table(insert: &datafusion::sql::sqlparser::ast::Insert) -> String {
    match &insert.table {
        TableObject::TableName(name) => {
            let n = name.to_string().to_ascii_lowercase();
            n.rsplit('.').next().unwrap_or(&n).trim_matches('"').to_owned()
        }
        _ => String::new(),
    }
}

/// DataFusion casts an INSERT's values to the table's column types, and its casts may lose
/// data (1001.9 → 1001). The ledger must see the values as written, so the casts over the
/// inserted columns are removed and `row.rs` converts each value exactly, or refuses it.
fn uncast_insert(plan: LogicalPlan) -> Result<LogicalPlan, QueryError> {
    let LogicalPlan::Dml(mut dml) = plan else {
        return Ok(plan);
    };
    if !matches!(dml.op, WriteOp::Insert(_)) {
        return Ok(LogicalPlan::Dml(dml));
    }
    if let LogicalPlan::Projection(p) = dml.input.as_ref() {
        let exprs = p
            .expr
            .iter()
            .map(|e| match e {
                Expr::Alias(a) => uncast(*a.expr.clone()).alias(a.name.clone()),
                other => uncast(other.clone()),
            })
            .collect();
        // Values planned against the table's schema were cast to its types too: plan them
        // again from the values as written.
        let input = match p.input.as_ref() {
            LogicalPlan::Values(v) => {
                let rows = v
                    .values
                    .iter()
                    .map(|row| row.iter().map(|e| uncast(e.clone())).collect())
                    .collect();
                Arc::new(LogicalPlanBuilder::values(rows)?.build()?)
            }
            _ => p.input.clone(),
        };
        let projection = Projection::try_new(exprs, input)?;
        dml.input = Arc::new(LogicalPlan::Projection(projection));
    }
    Ok(LogicalPlan::Dml(dml))
}

fn uncast(e: Expr) -> Expr {
    match e {
        Expr::Cast(c) => *c.expr,
        Expr::TryCast(c) => *c.expr,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reads a statement's snapshot is built from, after optimization.
    fn reads(sql: &Sql, q: &str) -> BTreeMap<String, Reads> {
        let rt = sql.db.runtime();
        let statement = Sql::parse(q).unwrap().statements.remove(0);
        let plan = rt.block_on(sql.plan(&statement)).unwrap();
        reads_of(&sql.ctx.state().optimize(&plan).unwrap()).unwrap()
    }

    #[test]
    fn a_named_inference_is_read_at_its_lsn_only() {
        use datafusion::arrow::array::AsArray;
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        for batch in tally_workload::Generator::new(tally_workload::Shape::demo(2, 500)) {
            db.write(batch).unwrap();
        }
        let sql = Sql::new(db).unwrap();
        let found = sql.query_blocking("SELECT inference, lsn FROM inferences LIMIT 1").unwrap();
        let found = found.iter().find(|b| b.num_rows() > 0).expect("an inference");
        let id = found.column(0).as_string::<i32>().value(0).to_owned();
        let lsn = found.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let lsn = lsn.value(0) as u64;
        for table in ["attributions", "inferences"] {
            let q = format!("SELECT * FROM {table} WHERE inference = '{id}'");
            let snapshot = sql.snapshot(&reads(&sql, &q), None).unwrap();
            let range = snapshot.logs[table].range;
            assert_eq!((range.from, range.to), (lsn, lsn), "{table}");
        }
        let q = "SELECT * FROM attributions WHERE inference = 'never-written'";
        let range = sql.snapshot(&reads(&sql, q), None).unwrap().logs["attributions"].range;
        assert!(range.from > range.to, "nothing to read: {range:?}");
        let whole = sql.snapshot(&reads(&sql, "SELECT * FROM attributions"), None).unwrap();
        assert_eq!(whole.logs["attributions"].range.to, sql.db.read(|l| l.last_lsn()));
    }

    #[test]
    fn result_columns_are_named_like_postgresql() {
        let dir = tempfile::tempdir().unwrap();
        let sql = Sql::new(Arc::new(Database::open(dir.path()).unwrap())).unwrap();
        let names = |q: &str| {
            let b = sql.query_blocking(q).unwrap();
            b[0].schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>()
        };
        assert_eq!(names("SELECT count(*), max(lsn) FROM events"), ["count", "max"]);
        // PostgreSQL allows two columns of one name.
        assert_eq!(names("SELECT count(*), count(lsn) FROM events"), ["count", "count"]);
        assert_eq!(names("SELECT count(*) AS n, 1 + 1 FROM events"), ["n", "?column?"]);
    }

    #[test]
    fn filters_reach_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let sql = Sql::new(Arc::new(Database::open(dir.path()).unwrap())).unwrap();
        let r = reads(&sql, "SELECT earned FROM balances WHERE account = 'a' AND earned > 0");
        assert_eq!(r["balances"].keys, Some(["a".to_string()].into()));
        let r = reads(&sql, "SELECT earned FROM balances WHERE account = 'a' OR earned > 5");
        assert_eq!(r["balances"].keys, None, "an OR reads everything");
        let r = reads(&sql, "SELECT * FROM events WHERE lsn > 5 AND lsn <= 9 AND kind = 'model'");
        assert_eq!(r["events"].lsns, LsnRange { from: 6, to: 9 });
        let r = reads(
            &sql,
            "SELECT * FROM inferences i JOIN attributions a ON a.lsn = i.lsn WHERE i.lsn >= 100",
        );
        assert_eq!(r["inferences"].lsns.from, 100);
        // The optimizer carries the bound across the join's equality.
        assert_eq!(r["attributions"].lsns.from, 100);
        let r = reads(&sql, "SELECT * FROM events WHERE lsn < 3 OR lsn > 100");
        assert_eq!(r["events"].lsns, LsnRange::ALL, "an OR of bounds reads everything");
    }

    /// A prepared statement is optimized before its placeholders are bound: its key and lsn
    /// filters must still reach the scan, so that each Execute reads only what they name
    /// (before, a prepared contribution lookup copied every contribution: 25 ms a call).
    #[test]
    fn bound_filters_of_a_prepared_statement_reach_the_snapshot() {
        use datafusion::common::ParamValues;
        use datafusion::scalar::ScalarValue;
        let dir = tempfile::tempdir().unwrap();
        let sql = Sql::new(Arc::new(Database::open(dir.path()).unwrap())).unwrap();
        let rt = sql.db.runtime();
        let bound = |q: &str, value: ScalarValue| {
            let statement = Sql::parse(q).unwrap().statements.remove(0);
            let planned = rt.block_on(sql.plan_request(&statement, false)).unwrap();
            let Planned::Optimized { plan, .. } = planned else { panic!("not optimized: {q}") };
            let values = ParamValues::List(vec![value.into()]);
            let plan = plan.replace_params_with_values(&values).unwrap();
            reads_of(&sql.rebind(plan).unwrap()).unwrap()
        };
        let text = |s: &str| ScalarValue::Utf8(Some(s.into()));
        let q = "SELECT datanet, earned FROM contributions WHERE contribution = $1";
        assert_eq!(bound(q, text("c-1"))["contributions"].keys, Some(["c-1".into()].into()));
        let q = "SELECT earned + 1 FROM balances WHERE $1 = account";
        assert_eq!(bound(q, text("a"))["balances"].keys, Some(["a".into()].into()));
        let q = "SELECT earned FROM balances WHERE account = $1";
        assert_eq!(bound(q, ScalarValue::Utf8(None))["balances"].keys, None, "NULL: read all");
        let q = "SELECT kind FROM events WHERE lsn > $1";
        let lsns = bound(q, ScalarValue::Int64(Some(5)))["events"].lsns;
        assert_eq!(lsns, LsnRange { from: 6, to: u64::MAX });
    }
}
