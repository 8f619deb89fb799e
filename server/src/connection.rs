//! One client connection over the PostgreSQL protocol: the simple and extended query protocols
//! and COPY FROM STDIN, over the shared `Sql`. It only speaks: each statement goes to
//! `Sql::execute` with the connection's `tally_query::Session`, which decides what the
//! statement means (transaction blocks, the order of checks, where a write goes); this module
//! turns the outcome into protocol messages, keeps the connection's settings and the COPY
//! being received, and maps every error to its SQLSTATE.
//!
//! Statements run one at a time and each is answered before the next runs (also inside one
//! simple-protocol message), rows streamed as they are produced (`rows.rs`). A statement is
//! bounded by the server's statement time limit and the session's `statement_timeout`, and a
//! cancel request stops it (`interrupt.rs`) until its write, if any, is handed to the ledger.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
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
    Access, CopyIn, Outcome, Parsed, Planned, QueryError, Request, Session, Sql, Status,
    MAX_COPY_BYTES,
};

use crate::interrupt::Interrupt;
use crate::settings::{self, session_duration, STATEMENT_TIMEOUT_KEY};
use crate::startup::ACCESS_KEY;

/// Most parameters a statement may have: PostgreSQL's limit (a Bind counts them in 16 bits).
const MAX_PARAMETERS: usize = 65_535;
/// A COPY buffer up to this size is kept for the connection's next COPY (a loader COPYs again
/// and again, and a fresh buffer costs page faults); a larger one is freed.
const SPARE_COPY_BYTES: usize = 8 << 20;

/// What every connection shares.
pub(crate) struct Shared {
    pub sql: Sql,
    /// The most any statement may run, whatever the session asks for.
    pub max_statement_time: Duration,
}

/// A connection's state: its SQL session (transaction block; `tally_query::Session` decides
/// what it means) and the COPY it is receiving.
#[derive(Default)]
struct Wire {
    sql: Session,
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
    plan: Option<Planned>,
    /// The types of its parameters (`$1` first), as planned.
    parameters: Vec<Option<DataType>>,
    /// Its result's columns as PostgreSQL names them, for every Describe of it (none for a
    /// statement without rows).
    result: Option<SchemaRef>,
    heavy: bool,
}

/// One statement to run: as parsed, maybe already planned (extended protocol), with its
/// parameters and the format of its result columns.
struct Job<'a> {
    request: Request<'a>,
    format: &'a Format,
}

impl<'a> Job<'a> {
    /// A statement of the simple protocol (text results, planned when run).
    fn simple(statement: &'a Statement, heavy: bool) -> Job<'a> {
        Job { request: Request::new(statement, heavy), format: &Format::UnifiedText }
    }
}

pub(crate) struct Connection {
    shared: Arc<Shared>,
    wire: Mutex<Wire>,
    parser: Arc<Parser>,
}

pub(crate) struct Parser {
    shared: Arc<Shared>,
}

pub(crate) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
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

/// The statement's parameter types by position (`$1` first). Refused past `MAX_PARAMETERS`
/// before anything is sized by the highest `$N`.
fn ordered_parameter_types(plan: &Planned) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.parameter_types().map_err(query_error)?;
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
        Connection { shared, wire: Mutex::new(Wire::default()), parser }
    }

    fn wire(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.wire.lock().expect("a connection's state is never poisoned")
    }

    /// What ReadyForQuery reports: idle, in a block, or in a failed block.
    fn transaction_status(&self) -> TransactionStatus {
        match self.wire().sql.status() {
            Status::Idle => TransactionStatus::Idle,
            Status::InBlock => TransactionStatus::Transaction,
            Status::Failed => TransactionStatus::Error,
        }
    }

    /// After an error inside a transaction block, the block answers 25P02 until it ends.
    fn fail_block(&self) {
        self.wire().sql.fail();
    }

    fn statement_timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> Duration {
        let max = self.shared.max_statement_time;
        session_duration(client, STATEMENT_TIMEOUT_KEY, Some(max)).unwrap_or(max)
    }

    /// Runs one statement through `Sql::execute` (which decides what it means for the
    /// session) and turns its outcome into a response. A query's rows stream under the same
    /// time limit and cancel as its planning.
    async fn execute<C>(&self, client: &mut C, job: Job<'_>) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = job.request.statement;
        let mut interrupt = Interrupt::start(client, self.statement_timeout(client)).await;
        // The session leaves the lock while the statement runs (one statement at a time per
        // connection); if the connection drops mid-statement, it goes with it.
        let mut session = std::mem::take(&mut self.wire().sql);
        let stop = std::future::poll_fn(|cx| interrupt.poll_stopped(cx));
        let outcome = self.shared.sql.execute(&mut session, access(client), job.request, stop);
        let outcome = outcome.await;
        self.wire().sql = session;
        match outcome.map_err(query_error)? {
            Outcome::Rows(rows) => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                crate::rows::respond(statement, rows, job.format, options, interrupt).await
            }
            Outcome::Done(done) => {
                // PostgreSQL's INSERT tag carries an oid (always 0) before the row count.
                let tag = match done.tag {
                    "INSERT" => Tag::new("INSERT").with_oid(0),
                    other => Tag::new(other),
                };
                Ok(Response::Execution(match done.rows {
                    Some(n) => tag.with_rows(n as usize),
                    None => tag,
                }))
            }
            Outcome::CopyIn(copy) => Ok(self.start_copy(copy)),
            Outcome::CopyOut(copy) => crate::rows::copy_out(client, copy, interrupt).await,
            Outcome::Setting => {
                let result = self.setting(client, statement).await;
                if result.is_err() {
                    self.fail_block();
                }
                result
            }
        }
    }

    /// SET, RESET, SHOW, DISCARD, DEALLOCATE: the connection's own settings.
    async fn setting<C>(&self, client: &mut C, statement: &Statement) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match statement {
            Statement::ShowVariable { .. } | Statement::ShowStatus { .. } => {
                // Reads the session's metadata only.
                if let Some((name, value)) = settings::show_session_setting(client, statement) {
                    return crate::rows::one_text(name, &value);
                }
                let ctx = self.shared.sql.context();
                if let Some(r) = SetShowHook.handle_simple_query(statement, ctx, client).await {
                    return r;
                }
                Ok(Response::Execution(Tag::new("SHOW")))
            }
            Statement::Discard { .. } => Ok(Response::Execution(Tag::new("DISCARD ALL"))),
            Statement::Deallocate { .. } => Ok(Response::Execution(Tag::new("DEALLOCATE"))),
            _ => settings::apply(client, statement).await,
        }
    }

    fn start_copy(&self, copy: CopyIn) -> Response {
        let width = copy.width();
        let mut w = self.wire();
        let mut data = std::mem::take(&mut w.spare);
        data.clear();
        w.copy = Some(CopyState { copy, data, too_large: false });
        Response::CopyIn(CopyResponse::new(0, width, futures::stream::empty()))
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
        match self.shared.sql.parse_kept(&query.query) {
            Err(e) => {
                self.fail_block();
                let info = ErrorInfo::from(query_error(e));
                client.feed(PgWireBackendMessage::ErrorResponse(info.into())).await?;
            }
            Ok(parsed) if parsed.statements.is_empty() => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()))
                    .await?;
            }
            Ok(parsed) => self.run_statements(client, &parsed.statements, parsed.heavy).await?,
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
        let parsed = self.shared.sql.parse_kept(query).map_err(query_error)?;
        let mut responses = Vec::with_capacity(parsed.statements.len());
        for statement in &parsed.statements {
            match self.execute(client, Job::simple(statement, parsed.heavy)).await {
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
        let Parsed { mut statements, heavy } =
            self.shared.sql.parse_kept(sql).map_err(query_error)?;
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
            Some(Planned::Logical(p?))
        } else if plannable {
            // Refusals come first, as in the simple protocol.
            Sql::check(&statement, access(client)).map_err(query_error)?;
            let plan = self.shared.sql.plan_request(&statement, heavy).await;
            Some(plan.map_err(query_error)?)
        } else {
            None
        };
        let parameters = match &plan {
            Some(p) => ordered_parameter_types(p)?,
            None => Vec::new(),
        };
        let result = match plan.as_ref().map(Planned::plan) {
            Some(plan) if !matches!(plan, LogicalPlan::Dml(_) | LogicalPlan::Ddl(_)) => {
                Some(tally_query::result_schema(&statement, plan.schema().as_arrow()))
            }
            _ => None,
        };
        Ok(Some(Prepared { statement, plan, parameters, result, heavy }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        stmt.parameters
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
        match &stmt.result {
            Some(schema) => {
                arrow_schema_to_pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None)
            }
            None => Ok(vec![]),
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
            Some(_) => {
                let types = &prepared.parameters;
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
        // A setting's plan (from SetShowHook) is not run: `Sql::execute` hands settings back.
        let request = Request {
            statement: &prepared.statement,
            plan: prepared.plan.clone(),
            params,
            heavy: prepared.heavy,
        };
        let job = Job { request, format: &portal.result_column_format };
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
        let mut w = self.wire();
        if let Some(c) = w.copy.as_mut() {
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
        let (state, mut session) = {
            let mut w = self.wire();
            (w.copy.take(), std::mem::take(&mut w.sql))
        };
        let result = match &state {
            None => Err(QueryError::Unsupported("COPY data without a COPY statement".into())),
            Some(state) if state.too_large => {
                session.fail();
                let mib = MAX_COPY_BYTES >> 20;
                Err(QueryError::TooLarge(format!("this COPY carries more than {mib} MiB")))
            }
            Some(state) => self.shared.sql.copy_in(&mut session, &state.copy, &state.data).await,
        };
        {
            let mut w = self.wire();
            w.sql = session;
            if let Some(state) = state.filter(|s| s.data.capacity() <= SPARE_COPY_BYTES) {
                w.spare = state.data;
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
        let mut w = self.wire();
        w.copy = None;
        w.sql.fail();
        user_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}
