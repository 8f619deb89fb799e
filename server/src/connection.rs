//! One client connection's SQL: the simple and extended query protocols and COPY FROM STDIN,
//! over the shared `Sql`. Owns the connection's session state (its open transaction block,
//! whether the block failed, a COPY in progress) and maps every error to its SQLSTATE.
//!
//! Statements run one at a time and each is answered before the next runs (also inside one
//! simple-protocol message), rows streamed as they are produced (`rows.rs`). A statement is
//! bounded by the server's statement time limit and the session's `statement_timeout`, and a
//! cancel request stops it (`interrupt.rs`) until its write, if any, is handed to the ledger.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use futures::{Sink, SinkExt};
use pgwire::api::copy::{send_copy_in_response, CopyHandler};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    send_execution_response, send_partial_query_response, send_query_response,
    send_ready_for_query, ExtendedQueryHandler, SimpleQueryHandler,
};
use pgwire::api::results::{CopyResponse, FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type, DEFAULT_NAME};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use tally_query::{
    check_statement_text, Access, Block, CopyIn, Output, QueryError, Sql, MAX_COPY_BYTES,
};

use crate::interrupt::Interrupt;
use crate::settings::{self, session_duration, STATEMENT_TIMEOUT_KEY};
use crate::startup::ACCESS_KEY;

/// Most parameters a statement may have: PostgreSQL's limit (a Bind counts them in 16 bits).
const MAX_PARAMETERS: usize = 65_535;
/// Statements whose expressions may nest deeper than this (`tally_query::check_statement_text`)
/// are planned on a blocking thread, at most one per core at a time: DataFusion's planning time
/// grows with the square of the depth (1.4 s at the limit, release build, docs/benchmarks.md)
/// and cannot be interrupted, so it must not hold up the threads that serve every connection.
const HEAVY_DEPTH: usize = 64;
/// A COPY buffer up to this size is kept for the connection's next COPY (a loader COPYs again
/// and again, and a fresh buffer costs page faults); a larger one is freed.
const SPARE_COPY_BYTES: usize = 8 << 20;

/// What every connection shares.
pub(crate) struct Shared {
    pub sql: Sql,
    pub parser: PostgresCompatibilityParser,
    /// The most any statement may run, whatever the session asks for.
    pub max_statement_time: Duration,
    /// Heavy statements planning at once (see `HEAVY_DEPTH`).
    pub heavy_planning: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Session {
    block: Option<Block>,
    /// A statement in the block failed: everything but COMMIT/ROLLBACK answers 25P02.
    failed: bool,
    copy: Option<CopyState>,
    /// The last COPY's buffer, kept for the next one when small (`SPARE_COPY_BYTES`).
    spare: Vec<u8>,
}

struct CopyState {
    copy: CopyIn,
    data: Vec<u8>,
    too_large: bool,
}

/// A statement as the extended protocol keeps it between Parse and Execute.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    statement: Statement,
    plan: Option<LogicalPlan>,
    heavy: bool,
}

/// One statement to run: as parsed, maybe already planned (extended protocol), with its
/// parameters and the format of its result columns.
struct Job<'a> {
    statement: &'a Statement,
    plan: Option<LogicalPlan>,
    params: Option<ParamValues>,
    format: &'a Format,
    /// Its text may nest deeper than `HEAVY_DEPTH`: planned on a blocking thread.
    heavy: bool,
}

impl<'a> Job<'a> {
    /// A statement of the simple protocol (text results, planned when run).
    fn simple(statement: &'a Statement, heavy: bool) -> Job<'a> {
        Job { statement, plan: None, params: None, format: &Format::UnifiedText, heavy }
    }
}

pub(crate) struct Connection {
    shared: Arc<Shared>,
    session: Mutex<Session>,
    parser: Arc<Parser>,
}

pub(crate) struct Parser {
    shared: Arc<Shared>,
}

pub(crate) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

fn in_failed_block() -> PgWireError {
    user_error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block".into(),
    )
}

fn outside_block(what: &str) -> PgWireError {
    user_error("25P01", format!("{what} can only be used in transaction blocks"))
}

pub(crate) fn query_error(e: QueryError) -> PgWireError {
    let e = e.unwrap_external();
    user_error(e.sqlstate(), e.message())
}

fn access<C: ClientInfo + ?Sized>(client: &C) -> Access {
    match client.metadata().get(ACCESS_KEY).map(String::as_str) {
        Some("writer") => Access::Writer,
        _ => Access::Reader,
    }
}

/// Parses statement text, refusing text over the limits of `tally_query::complexity` first;
/// also says whether it is heavy to plan (`HEAVY_DEPTH`).
fn parse(shared: &Shared, text: &str) -> Result<(Vec<Statement>, bool), QueryError> {
    let depth = check_statement_text(text)?;
    let statements = shared.parser.parse(text).map_err(|e| Sql::parse_error(text, e))?;
    Ok((statements, depth > HEAVY_DEPTH))
}

/// Plans (unless planned already), binds and runs one statement.
async fn plan_and_run(
    sql: &Sql,
    statement: &Statement,
    plan: Option<LogicalPlan>,
    params: Option<ParamValues>,
) -> Result<Output, QueryError> {
    let plan = match plan {
        Some(p) => p,
        None => sql.plan(statement).await?,
    };
    let plan = match params {
        Some(p) => plan.replace_params_with_values(&p)?,
        None => plan,
    };
    sql.run(plan).await
}

/// Runs a heavy statement's planning on a blocking thread, at most one per core at a time
/// (`HEAVY_DEPTH`). If the caller stops waiting (timeout, cancel), the work still holds its
/// permit until it ends, so abandoned work cannot pile up.
async fn on_blocking_thread<T: Send + 'static>(
    shared: &Shared,
    work: impl std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
) -> PgWireResult<T> {
    let permit = shared.heavy_planning.clone().acquire_owned().await;
    let permit = permit.map_err(|_| user_error("57P01", "the server is shutting down".into()))?;
    let handle = tokio::runtime::Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        handle.block_on(work)
    })
    .await;
    joined.map_err(|e| user_error("XX000", format!("planning failed: {e}")))?.map_err(query_error)
}

/// The statement's parameter types by position (`$1` first). Refused past `MAX_PARAMETERS`
/// before anything is sized by the highest `$N`.
fn ordered_parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(|e| query_error(e.into()))?;
    let mut ids: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
    for (id, t) in types {
        let n = id.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX);
        if n == 0 || n > MAX_PARAMETERS {
            return Err(user_error(
                "54000",
                format!("parameter {id} is out of range: a statement has at most {MAX_PARAMETERS} parameters ($1 to ${MAX_PARAMETERS})"),
            ));
        }
        ids.push((n, t));
    }
    ids.sort_by_key(|(n, _)| *n);
    let count = ids.last().map_or(0, |(n, _)| *n);
    let mut out = vec![None; count];
    for (n, t) in ids {
        out[n - 1] = t;
    }
    Ok(out)
}

impl Connection {
    pub fn new(shared: Arc<Shared>) -> Connection {
        let parser = Arc::new(Parser { shared: shared.clone() });
        Connection { shared, session: Mutex::new(Session::default()), parser }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().expect("a session is never poisoned")
    }

    /// What ReadyForQuery reports: idle, in a block, or in a failed block.
    fn transaction_status(&self) -> TransactionStatus {
        let s = self.session();
        match (&s.block, s.failed) {
            (None, _) => TransactionStatus::Idle,
            (Some(_), false) => TransactionStatus::Transaction,
            (Some(_), true) => TransactionStatus::Error,
        }
    }

    /// After an error inside a transaction block, the block answers 25P02 until it ends.
    fn fail_block(&self) {
        let mut s = self.session();
        if s.block.is_some() {
            s.failed = true;
        }
    }

    fn statement_timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> Duration {
        let max = self.shared.max_statement_time;
        session_duration(client, STATEMENT_TIMEOUT_KEY, Some(max)).unwrap_or(max)
    }

    /// Runs one statement; on an error inside a transaction block, marks the block failed.
    async fn execute<C>(&self, client: &mut C, job: Job<'_>) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = self.execute_inner(client, job).await;
        if result.is_err() {
            self.fail_block();
        }
        result
    }

    async fn execute_inner<C>(&self, client: &mut C, job: Job<'_>) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = job.statement;
        // Transaction control first: it is what a failed block still answers.
        if let Some(response) = self.transaction_control(statement).await {
            return response;
        }
        if self.session().failed {
            return Err(in_failed_block());
        }
        if settings::is_setting(statement) {
            return settings::apply(client, statement).await;
        }
        match statement {
            Statement::ShowVariable { .. } | Statement::ShowStatus { .. } => {
                // Reads the session's metadata only.
                let ctx = self.shared.sql.context();
                if let Some(r) = SetShowHook.handle_simple_query(statement, ctx, client).await {
                    return r;
                }
                return Ok(Response::Execution(Tag::new("SHOW")));
            }
            Statement::Discard { .. } => return Ok(Response::Execution(Tag::new("DISCARD ALL"))),
            Statement::Deallocate { .. } => return Ok(Response::Execution(Tag::new("DEALLOCATE"))),
            _ => {}
        }
        Sql::check(statement, access(client)).map_err(query_error)?;
        if let Some(copy) = CopyIn::from_statement(statement) {
            return Ok(self.start_copy(copy.map_err(query_error)?));
        }
        self.run(client, job).await
    }

    /// BEGIN, SAVEPOINT, RELEASE, ROLLBACK [TO] and COMMIT; `None` for any other statement.
    async fn transaction_control(&self, statement: &Statement) -> Option<PgWireResult<Response>> {
        if let Statement::Commit { .. } = statement {
            return Some(self.commit().await);
        }
        let mut s = self.session();
        let done = |tag: &str| Some(Ok(Response::Execution(Tag::new(tag))));
        match statement {
            Statement::StartTransaction { .. } => {
                if s.block.is_none() {
                    s.block = Some(Block::default());
                    s.failed = false;
                }
                Some(Ok(Response::TransactionStart(Tag::new("BEGIN"))))
            }
            Statement::Savepoint { name } => {
                if s.failed {
                    return Some(Err(in_failed_block()));
                }
                match s.block.as_mut() {
                    Some(block) => block.savepoint(&name.value),
                    None => return Some(Err(outside_block("SAVEPOINT"))),
                }
                done("SAVEPOINT")
            }
            Statement::ReleaseSavepoint { name } => {
                if s.failed {
                    return Some(Err(in_failed_block()));
                }
                let Some(block) = s.block.as_mut() else {
                    return Some(Err(outside_block("RELEASE SAVEPOINT")));
                };
                match block.release(&name.value) {
                    Ok(()) => done("RELEASE"),
                    Err(e) => Some(Err(query_error(e))),
                }
            }
            Statement::Rollback { savepoint: Some(name), .. } => {
                // Also what ends a failed state, as in PostgreSQL.
                let Some(block) = s.block.as_mut() else {
                    return Some(Err(outside_block("ROLLBACK TO SAVEPOINT")));
                };
                if let Err(e) = block.rollback_to(&name.value) {
                    return Some(Err(query_error(e)));
                }
                s.failed = false;
                done("ROLLBACK")
            }
            Statement::Rollback { savepoint: None, .. } => {
                s.block = None;
                s.failed = false;
                Some(Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))))
            }
            _ => None,
        }
    }

    /// COMMIT: appends the block atomically. Not interruptible.
    async fn commit(&self) -> PgWireResult<Response> {
        let (block, failed) = {
            let mut s = self.session();
            (s.block.take(), std::mem::take(&mut s.failed))
        };
        let end = |tag: &str| Ok(Response::TransactionEnd(Tag::new(tag)));
        match block {
            // PostgreSQL answers COMMIT of a failed block with ROLLBACK.
            Some(_) if failed => end("ROLLBACK"),
            Some(block) => {
                self.shared.sql.commit(block).await.map_err(query_error)?;
                end("COMMIT")
            }
            None => end("COMMIT"),
        }
    }

    fn start_copy(&self, copy: CopyIn) -> Response {
        let width = copy.width();
        let mut s = self.session();
        let mut data = std::mem::take(&mut s.spare);
        data.clear();
        s.copy = Some(CopyState { copy, data, too_large: false });
        Response::CopyIn(CopyResponse::new(0, width, futures::stream::empty()))
    }

    /// Plans and runs a query or a write. Until a write is handed to the ledger, the statement
    /// time limit and a cancel request stop it; a query's rows stream under the same limits.
    async fn run<C>(&self, client: &mut C, job: Job<'_>) -> PgWireResult<Response>
    where
        C: ClientInfo + Send + Sync,
    {
        let mut interrupt = Interrupt::start(client, self.statement_timeout(client)).await;
        let Job { statement, plan, params, format, heavy } = job;
        let output = if heavy {
            let (sql, statement) = (self.shared.sql.clone(), statement.clone());
            let work = async move { plan_and_run(&sql, &statement, plan, params).await };
            interrupt.run(on_blocking_thread(&self.shared, work)).await?
        } else {
            let work = plan_and_run(&self.shared.sql, statement, plan, params);
            interrupt.run(async { work.await.map_err(query_error) }).await?
        };
        match output {
            Output::Rows(df) => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                crate::rows::respond(df, format, options, interrupt).await
            }
            Output::Write { table, events } => self.write(table, events).await,
        }
    }

    /// Appends a statement's events, or adds them to the open block. Not interruptible: the
    /// answer is what happened to the write.
    async fn write(
        &self,
        table: &'static str,
        events: Vec<tally_engine::Event>,
    ) -> PgWireResult<Response> {
        let sql = &self.shared.sql;
        let block = self.session().block.take();
        let n = match block {
            Some(mut block) => {
                let r = sql.add_to_block(&mut block, table, events);
                self.session().block = Some(block);
                r
            }
            None => sql.append(table, events).await,
        }
        .map_err(query_error)?;
        Ok(Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(n as usize)))
    }

    /// Sends one statement's response: a simple-protocol query's rows, or what any statement
    /// answers without rows to stream (the extended protocol streams rows from its portal).
    /// True when it started a COPY.
    async fn send_response<C>(
        &self,
        client: &mut C,
        response: Response,
        extended: bool,
    ) -> PgWireResult<bool>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match response {
            Response::Query(rows) if !extended => send_query_response(client, rows, true).await?,
            Response::Execution(tag)
            | Response::TransactionStart(tag)
            | Response::TransactionEnd(tag) => send_execution_response(client, tag).await?,
            Response::EmptyQuery => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()))
                    .await?
            }
            Response::Error(e) => {
                client.feed(PgWireBackendMessage::ErrorResponse((*e).into())).await?
            }
            Response::CopyIn(copy) => {
                client.set_state(PgWireConnectionState::CopyInProgress(extended));
                send_copy_in_response(client, copy).await?;
                return Ok(true);
            }
            Response::Query(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                return Err(user_error("0A000", "COPY TO STDOUT is not supported".into()))
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// Each statement of the message runs and is answered before the next one runs; the
    /// first error ends the message (the statements before it stand), as in PostgreSQL.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        match parse(&self.shared, &query.query) {
            Err(e) => {
                self.fail_block();
                let info = ErrorInfo::from(query_error(e));
                client.feed(PgWireBackendMessage::ErrorResponse(info.into())).await?;
            }
            Ok((statements, _)) if statements.is_empty() => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()))
                    .await?;
            }
            Ok((statements, heavy)) => self.run_statements(client, &statements, heavy).await?,
        }
        if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            client.set_state(PgWireConnectionState::ReadyForQuery);
            let status = self.transaction_status();
            client.set_transaction_status(status);
            send_ready_for_query(client, status).await?;
        }
        Ok(())
    }

    /// pgwire's contract: runs every statement and returns their responses, unsent (the
    /// server answers through `on_query`, which sends each before running the next).
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (statements, heavy) = parse(&self.shared, query).map_err(query_error)?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            match self.execute(client, Job::simple(statement, heavy)).await {
                Ok(r) => {
                    let copying = matches!(r, Response::CopyIn(_));
                    responses.push(r);
                    if copying {
                        break;
                    }
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

impl Connection {
    /// The statements of one simple-protocol message, each answered before the next runs.
    async fn run_statements<C>(
        &self,
        client: &mut C,
        statements: &[Statement],
        heavy: bool,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        for statement in statements {
            let sent = match self.execute(client, Job::simple(statement, heavy)).await {
                Ok(response) => self.send_response(client, response, false).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(false) => {}
                // A COPY takes over the connection; like pgwire, the rest is not run.
                Ok(true) => return Ok(()),
                Err(PgWireError::IoError(e)) => return Err(PgWireError::IoError(e)),
                Err(e) => {
                    self.fail_block();
                    let info = ErrorInfo::from(e);
                    client.feed(PgWireBackendMessage::ErrorResponse(info.into())).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let (mut statements, heavy) = parse(&self.shared, sql).map_err(query_error)?;
        if statements.is_empty() {
            return Ok(None);
        }
        if statements.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let statement = statements.remove(0);
        let ctx = self.shared.sql.context();
        let plannable = matches!(statement, Statement::Query(_) | Statement::Insert(_));
        let plan = if let Some(p) =
            SetShowHook.handle_extended_parse_query(&statement, ctx, client).await
        {
            Some(p?)
        } else if plannable {
            // Refusals come first, as in the simple protocol.
            Sql::check(&statement, access(client)).map_err(query_error)?;
            let plan = if heavy {
                let (sql, statement) = (self.shared.sql.clone(), statement.clone());
                on_blocking_thread(&self.shared, async move { sql.plan(&statement).await }).await?
            } else {
                self.shared.sql.plan(&statement).await.map_err(query_error)?
            };
            ordered_parameter_types(&plan)?;
            Some(plan)
        } else {
            None
        };
        Ok(Some(Prepared { statement, plan, heavy }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some(plan) = &stmt.plan else {
            return Ok(vec![]);
        };
        ordered_parameter_types(plan)?
            .iter()
            .map(|t| match t {
                Some(t) => into_pg_type(t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.plan {
            Some(plan) if !matches!(plan, LogicalPlan::Dml(_) | LogicalPlan::Ddl(_)) => {
                arrow_schema_to_pg_fields(
                    plan.schema().as_arrow(),
                    format.unwrap_or(&Format::UnifiedText),
                    None,
                )
            }
            _ => Ok(vec![]),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// As pgwire's, except that rows are streamed from the statement to the client (pgwire
    /// collects a portal's rows before sending any when `max_rows` is 0), and a portal
    /// suspended by `max_rows` resumes its stream on the next Execute.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let state = portal.state();
        let started = !matches!(*state.lock().await, PortalExecutionState::Initial);
        if !started {
            match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), max_rows).await? {
                Response::Query(rows) => {
                    *state.lock().await = PortalExecutionState::Suspended(rows)
                }
                other => {
                    *state.lock().await = PortalExecutionState::Finished;
                    if !self.send_response(client, other, true).await? {
                        client.set_state(PgWireConnectionState::ReadyForQuery);
                        client.set_transaction_status(self.transaction_status());
                    }
                    return Ok(());
                }
            }
        }
        let mut portal_state = state.lock().await;
        let sent = match &mut *portal_state {
            PortalExecutionState::Suspended(rows) => {
                send_partial_query_response(client, rows, max_rows).await
            }
            _ => {
                let done = Tag::new("SELECT").with_rows(0);
                client.feed(PgWireBackendMessage::CommandComplete(done.into())).await?;
                Ok(false)
            }
        };
        if !matches!(sent, Ok(true)) {
            *portal_state = PortalExecutionState::Finished;
        }
        drop(portal_state);
        if let Err(e) = sent {
            self.fail_block();
            return Err(e);
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(self.transaction_status());
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let params = match &prepared.plan {
            Some(plan) => {
                let types = ordered_parameter_types(plan)?;
                // A parameter the client typed keeps the client's type: converting it to the
                // planned type here would be lossy (NUMERIC 1001.9 → BIGINT 1001); the
                // statement's own exact conversions (or comparisons) take it from there.
                let hints = &portal.statement.parameter_types;
                let refs: Vec<Option<&DataType>> = types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| match hints.get(i) {
                        Some(Some(hint)) if *hint != Type::UNKNOWN => None,
                        _ => t.as_ref(),
                    })
                    .collect();
                Some(deserialize_parameters(portal, &refs)?)
            }
            None => None,
        };
        let plan = if settings::is_setting(&prepared.statement)
            || matches!(
                prepared.statement,
                Statement::ShowVariable { .. } | Statement::ShowStatus { .. }
            ) {
            None
        } else {
            prepared.plan.clone()
        };
        let job = Job {
            statement: &prepared.statement,
            plan,
            params,
            format: &portal.result_column_format,
            heavy: prepared.heavy,
        };
        self.execute(client, job).await
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut s = self.session();
        if let Some(c) = s.copy.as_mut() {
            if c.data.len() + copy_data.data.len() > MAX_COPY_BYTES {
                // Keep reading to the end of the COPY, but hold nothing more.
                c.too_large = true;
                c.data = Vec::new();
            } else if !c.too_large {
                c.data.extend_from_slice(&copy_data.data);
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (state, mut block) = {
            let mut s = self.session();
            (s.copy.take(), s.block.take())
        };
        let Some(state) = state else {
            return Err(user_error("08P01", "COPY data without a COPY statement".into()));
        };
        let result = if state.too_large {
            Err(QueryError::TooLarge(format!(
                "this COPY carries more than {} MiB",
                MAX_COPY_BYTES >> 20
            )))
        } else {
            self.shared.sql.copy_in(&state.copy, &state.data, block.as_mut()).await
        };
        {
            let mut s = self.session();
            if state.data.capacity() <= SPARE_COPY_BYTES {
                s.spare = state.data;
            }
            let in_block = block.is_some();
            s.block = block;
            if result.is_err() && in_block {
                s.failed = true;
            }
        }
        let n = result.map_err(query_error)?;
        let tag = Tag::new("COPY").with_rows(n as usize);
        client.send(PgWireBackendMessage::CommandComplete(tag.into())).await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut s = self.session();
        s.copy = None;
        if s.block.is_some() {
            s.failed = true;
        }
        user_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}
