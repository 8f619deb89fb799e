//! Runs one statement of a session: the one path every SQL front end takes (the wire protocol,
//! the embedded `Sql::query`). In surface.md's order: transaction control (what a failed block
//! still answers), the failed-block refusal, the role and append-only checks, then planning and
//! running; a write goes to the session's block or is appended (`transaction.rs`).
//!
//! A statement may be stopped (statement timeout, cancel) while it plans and runs, never once
//! its write has been handed to the ledger: the answer is then what happened to the write.
//! Statements whose expressions nest deeply are planned on a blocking thread, at most one per
//! core at a time (`HEAVY_DEPTH`), so they never hold up the threads that serve every client.

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use tally_engine::Ledger;

use crate::consistency::Consistency;
use crate::direct::Direct;
use crate::session::Output;
use crate::transaction::Session;
use crate::{Access, CopyIn, CopyOut, QueryError, Rows, Sql};

/// Statements whose expressions may nest deeper than this (`check_statement_text`) are planned
/// on a blocking thread, at most one per core at a time: DataFusion's planning time grows with
/// the square of the depth (1.4 s at the limit, release build, docs/benchmarks.md) and cannot
/// be interrupted, so it must not hold up the threads that serve every connection.
pub const HEAVY_DEPTH: usize = 64;

/// A statement's plan, kept by the extended protocol from Parse to each Execute.
#[derive(Debug, Clone)]
pub enum Planned {
    /// As planned from SQL; analyzed and optimized when it runs (a write's values are
    /// checked as written first).
    Logical(LogicalPlan),
    /// A query's plan, analyzed and optimized once (at Parse): each Execute only binds its
    /// parameters and runs it. `parameters` are the types planned from the SQL (the
    /// optimizer may fold a placeholder away; the client still sends it).
    Optimized { plan: LogicalPlan, parameters: ParameterTypes, direct: Option<Arc<Direct>> },
}

/// The placeholders of a plan (`$1`, …) and the type each was planned as, if known.
pub type ParameterTypes = std::collections::HashMap<String, Option<DataType>>;

impl Planned {
    /// The plan (its output schema is the same at either stage).
    pub fn plan(&self) -> &LogicalPlan {
        match self {
            Planned::Logical(p) | Planned::Optimized { plan: p, .. } => p,
        }
    }

    /// The statement's placeholders and their types, as planned from its SQL.
    pub fn parameter_types(&self) -> Result<ParameterTypes, QueryError> {
        match self {
            Planned::Logical(p) => Ok(p.get_parameter_types()?),
            Planned::Optimized { parameters, .. } => Ok(parameters.clone()),
        }
    }
}

/// One statement to run.
pub struct Request<'a> {
    pub statement: &'a Statement,
    /// Planned already (the extended protocol plans at Parse); else planned here.
    pub plan: Option<Planned>,
    /// Values for its placeholders (`$1`).
    pub params: Option<ParamValues>,
    /// Its text nests deeper than `HEAVY_DEPTH` (`Parsed::heavy`).
    pub heavy: bool,
}

impl<'a> Request<'a> {
    /// A statement as parsed, planned when run.
    pub fn new(statement: &'a Statement, heavy: bool) -> Request<'a> {
        Request { statement, plan: None, params: None, heavy }
    }
}

/// What a statement did.
pub enum Outcome {
    /// A query's rows, ready to run (lazily) against its own snapshot, or read already.
    Rows(Rows),
    /// A command done: its tag (`INSERT` with the rows written, `BEGIN`, `COMMIT`, …).
    Done(Done),
    /// `COPY … FROM STDIN`: the front end collects the data and calls `Sql::copy_in`.
    CopyIn(CopyIn),
    /// `COPY … TO STDOUT`: the rows to stream and their encoder.
    CopyOut(CopyOut),
    /// A setting of the client's session (SET, RESET, SHOW, DISCARD, DEALLOCATE): what the
    /// front end keeps per connection, so the front end applies it.
    Setting,
}

/// A command's completion, as PostgreSQL tags it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub tag: &'static str,
    /// Rows written, for INSERT and COPY.
    pub rows: Option<u64>,
}

impl Done {
    pub(crate) fn tag(tag: &'static str) -> Done {
        Done { tag, rows: None }
    }
}

/// Whether a statement sets or resets one of the settings the SQL session itself keeps
/// (`tally.read_consistency`, `tally.as_of_lsn`).
fn is_session_setting(statement: &Statement) -> bool {
    crate::consistency::of_setting(statement).is_some()
        || crate::as_of::of_setting(statement).is_some()
}

/// Whether a statement is a setting of the client's session (`Outcome::Setting`).
fn is_setting(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::Reset(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

impl Sql {
    /// Runs one statement of `session` for a client with `access`. `stop` resolves with the
    /// error to answer when the statement must stop (timeout, cancel); it is polled while the
    /// statement plans and runs, not once its write is handed to the ledger. An error inside
    /// a transaction block fails the block.
    pub async fn execute(
        &self,
        session: &mut Session,
        access: Access,
        request: Request<'_>,
        stop: impl Future<Output = QueryError> + Send,
    ) -> Result<Outcome, QueryError> {
        let result = self.execute_in(session, access, request, stop).await;
        if result.is_err() {
            session.fail();
        }
        result
    }

    async fn execute_in(
        &self,
        session: &mut Session,
        access: Access,
        request: Request<'_>,
        stop: impl Future<Output = QueryError> + Send,
    ) -> Result<Outcome, QueryError> {
        let statement = request.statement;
        tokio::pin!(stop);
        if let Statement::Commit { .. } = statement {
            return self.commit(session).await.map(Outcome::Done);
        }
        if let Some(done) = session.control(statement) {
            return done.map(Outcome::Done);
        }
        session.usable()?;
        if is_setting(statement) {
            if let Some(consistency) = crate::consistency::of_setting(statement) {
                session.consistency = consistency?;
            }
            if let Some(as_of) = crate::as_of::of_setting(statement) {
                session.as_of = self.as_of_lsn(as_of?)?;
            }
            return Ok(Outcome::Setting);
        }
        Sql::check(statement, access)?;
        if let (Some(lsn), Some(what)) = (session.as_of, crate::session::modifying(statement)) {
            return Err(QueryError::ReadingThePast(format!(
                "{what} while {} = {lsn}: RESET it to write",
                crate::as_of::AS_OF_LSN
            )));
        }
        if let Some(copy) = CopyIn::from_statement(statement) {
            return copy.map(Outcome::CopyIn);
        }
        // COPY … TO STDOUT runs as the query it stands for.
        let copy_out = crate::copy_out::query_of(statement).transpose()?;
        let request = match &copy_out {
            Some((query, _)) => {
                Sql::check(query, access)?;
                Request::new(query, request.heavy)
            }
            None => request,
        };
        if session.consistency == Consistency::Linearizable {
            tokio::select! {
                biased;
                done = self.database().linearize() => done.map_err(|e| {
                    QueryError::NoLeader(format!("no linearizable read now: {e}"))
                })?,
                stopped = &mut stop => return Err(stopped),
            }
        }
        let past = match session.as_of {
            None => None,
            Some(lsn) => tokio::select! {
                biased;
                past = self.past_states().at(self.database(), lsn) => Some(past?),
                stopped = &mut stop => return Err(stopped),
            },
        };
        let output = tokio::select! {
            biased;
            output = self.plan_and_run(request, past) => output?,
            stopped = &mut stop => return Err(stopped),
        };
        match (output, copy_out) {
            (Output::Rows(rows), Some((query, format))) => {
                Ok(Outcome::CopyOut(CopyOut::new(&query, rows, format)))
            }
            (Output::Write { .. }, Some(_)) => {
                Err(QueryError::Unsupported("COPY of a statement that writes".into()))
            }
            (Output::Rows(rows), None) => Ok(Outcome::Rows(rows)),
            (Output::Write { table, events }, None) => {
                let rows = self.write(session, table, events).await?;
                Ok(Outcome::Done(Done { tag: "INSERT", rows: Some(rows) }))
            }
        }
    }

    /// Plans (unless planned already), binds and runs one statement; a heavy one on a
    /// blocking thread (`HEAVY_DEPTH`).
    async fn plan_and_run(
        &self,
        request: Request<'_>,
        past: Option<Arc<Ledger>>,
    ) -> Result<Output, QueryError> {
        let Request { statement, plan, params, heavy } = request;
        if !heavy {
            return self.plan_bind_run(statement, plan, params, past).await;
        }
        let (this, statement) = (self.clone(), statement.clone());
        self.on_blocking_thread(
            async move { this.plan_bind_run(&statement, plan, params, past).await },
        )
        .await
    }

    async fn plan_bind_run(
        &self,
        statement: &Statement,
        plan: Option<Planned>,
        params: Option<ParamValues>,
        past: Option<Arc<Ledger>>,
    ) -> Result<Output, QueryError> {
        // Unprepared, a statement is planned as Parse plans it (a query once optimized, a
        // direct read's plan kept for the next time it comes).
        let planned = match plan {
            Some(p) => p,
            None => self.prepare(statement).await?,
        };
        let bind = |plan: LogicalPlan| match &params {
            Some(p) => plan.replace_params_with_values(p),
            None => Ok(plan),
        };
        if let Planned::Optimized { direct: Some(direct), .. } = &planned {
            if let Some(batch) = direct.read(self.database(), past.as_deref(), params.as_ref())? {
                return Ok(Output::Rows(Rows::read(batch)));
            }
        }
        let planned = match planned {
            Planned::Logical(plan) => Planned::Logical(bind(plan)?),
            Planned::Optimized { plan, parameters, direct } if params.is_some() => {
                Planned::Optimized { plan: self.rebind(bind(plan)?)?, parameters, direct }
            }
            optimized @ Planned::Optimized { .. } => optimized,
        };
        self.run(planned, past).await
    }

    /// The session's `tally.as_of_lsn` once `SET` to `as_of`: an lsn must be one the ledger
    /// has reached.
    fn as_of_lsn(&self, as_of: Option<u64>) -> Result<Option<u64>, QueryError> {
        let last = self.database().read(|l| l.last_lsn());
        match as_of {
            Some(lsn) if lsn > last => Err(QueryError::InvalidParameter(format!(
                "{}: lsn {lsn} is past the ledger's last lsn {last}",
                crate::as_of::AS_OF_LSN
            ))),
            other => Ok(other),
        }
    }

    /// Plans a statement for Parse, a heavy one (`HEAVY_DEPTH`) on a blocking thread; a query
    /// is optimized too, once, so that each Execute only binds and runs it.
    pub async fn plan_request(
        &self,
        statement: &Statement,
        heavy: bool,
    ) -> Result<Planned, QueryError> {
        if !heavy {
            return self.prepare(statement).await;
        }
        let (this, statement) = (self.clone(), statement.clone());
        self.on_blocking_thread(async move { this.prepare(&statement).await }).await
    }

    async fn prepare(&self, statement: &Statement) -> Result<Planned, QueryError> {
        if let Some(planned) = self.plans().get(statement) {
            return Ok(planned);
        }
        let plan = self.plan(statement).await?;
        let planned = match statement {
            Statement::Query(_) if binds_in_place(&plan)? => {
                let parameters = plan.get_parameter_types()?;
                let plan = self.optimize(&plan)?;
                let direct = self.direct(&plan).map(Arc::new);
                Planned::Optimized { plan, parameters, direct }
            }
            _ => Planned::Logical(plan),
        };
        self.plans().keep(statement, &planned);
        Ok(planned)
    }

    /// Runs `work` on a blocking thread, at most one per core at a time. If the caller stops
    /// waiting (timeout, cancel), the work still holds its permit until it ends, so abandoned
    /// work cannot pile up.
    async fn on_blocking_thread<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let permit = self.heavy_planning().clone().acquire_owned().await;
        let permit = permit.map_err(|_| QueryError::ShuttingDown)?;
        let handle = tokio::runtime::Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            handle.block_on(work)
        })
        .await;
        joined.map_err(|e| QueryError::Internal(format!("planning failed: {e}")))?
    }

    /// Runs SQL text for the embedded API, one statement after another in one session (so
    /// BEGIN … COMMIT works as on the wire, and `SET tally.as_of_lsn` holds for the statements
    /// after it), as a `writer`; returns the last statement's rows (a write returns one `count`
    /// row, any other command none).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let parsed = self.parse_kept(sql)?;
        let mut session = Session::default();
        let mut last = Vec::new();
        for statement in &parsed.statements {
            let request = Request::new(statement, parsed.heavy);
            let outcome =
                self.execute(&mut session, Access::Writer, request, std::future::pending());
            last = match outcome.await? {
                Outcome::Rows(rows) => {
                    let schema = crate::result_schema(statement, &rows.schema());
                    let batches = rows.collect().await?;
                    let named = batches
                        .into_iter()
                        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()));
                    named.collect::<Result<Vec<_>, _>>()?
                }
                Outcome::Done(Done { rows: Some(n), .. }) => count_batch(n)?,
                Outcome::Done(_) => Vec::new(),
                Outcome::CopyIn(_) => {
                    return Err(QueryError::Unsupported(
                        "COPY FROM STDIN needs data: use Sql::copy_in".into(),
                    ))
                }
                Outcome::CopyOut(_) => {
                    return Err(QueryError::Unsupported(
                        "COPY TO STDOUT is for the wire protocol: run the query".into(),
                    ))
                }
                // The session's own settings hold for its next statements; the rest are
                // the wire protocol's.
                Outcome::Setting if is_session_setting(statement) => Vec::new(),
                Outcome::Setting => {
                    return Err(QueryError::Unsupported(
                        "SET, SHOW and DISCARD are settings of a server session".into(),
                    ))
                }
            };
        }
        Ok(last)
    }

    /// `query` for callers without an async runtime.
    pub fn query_blocking(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        self.database().runtime().block_on(self.query(sql))
    }
}

/// Whether a plan may be optimized before its parameters are bound: its placeholders are all
/// in filters and projections, where a bound value needs only type coercion and
/// simplification (`Sql::rebind`). One elsewhere (`LIMIT $1`, a join key, an aggregate's
/// argument) may decide what the optimizer does (`LIMIT 0` is no rows at all): such a plan is
/// optimized once bound.
fn binds_in_place(plan: &LogicalPlan) -> Result<bool, QueryError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut in_place = true;
    plan.apply_with_subqueries(|node| {
        let placeholders = node.expressions().iter().any(|e| {
            e.exists(|e| Ok(matches!(e, datafusion::logical_expr::Expr::Placeholder(_))))
                .unwrap_or(true)
        });
        if placeholders && !matches!(node, LogicalPlan::Filter(_) | LogicalPlan::Projection(_)) {
            in_place = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(in_place)
}

fn count_batch(n: u64) -> Result<Vec<RecordBatch>, QueryError> {
    let schema = Arc::new(Schema::new(vec![Field::new("count", DataType::Int64, false)]));
    Ok(vec![RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![n as i64]))])?])
}
