//! One client connection's SQL: the simple and extended query protocols and COPY FROM STDIN,
//! over the shared `Sql`. Owns the connection's session state (its open transaction block,
//! whether the block failed, a COPY in progress) and maps every error to its SQLSTATE.
//! Statement time is bounded by the server's limit and by the session's statement_timeout.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::{deserialize_parameters, encode_dataframe};
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use futures::{Sink, SinkExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use tally_query::{Access, Block, CopyIn, Output, QueryError, Sql, MAX_COPY_BYTES};

use crate::startup::ACCESS_KEY;

/// Set by `SET statement_timeout` (datafusion-postgres's SET hook), in milliseconds.
const SESSION_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// What every connection shares.
pub(crate) struct Shared {
    pub sql: Sql,
    pub parser: PostgresCompatibilityParser,
    /// The most any statement may run, whatever the session asks for.
    pub max_statement_time: Duration,
}

#[derive(Default)]
struct Session {
    block: Option<Block>,
    /// A statement in the block failed: everything but COMMIT/ROLLBACK answers 25P02.
    failed: bool,
    copy: Option<CopyState>,
    /// The last COPY's buffer, kept for the next one: a connection that loads data COPYs again
    /// and again, and a fresh buffer of that size costs page faults on every statement.
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
}

pub(crate) struct Connection {
    shared: Arc<Shared>,
    session: Mutex<Session>,
    parser: Arc<Parser>,
}

pub(crate) struct Parser {
    shared: Arc<Shared>,
}

fn user_error(code: &str, message: String) -> PgWireError {
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

fn query_error(e: QueryError) -> PgWireError {
    let e = e.unwrap_external();
    user_error(e.sqlstate(), e.to_string())
}

fn access<C: ClientInfo + ?Sized>(client: &C) -> Access {
    match client.metadata().get(ACCESS_KEY).map(String::as_str) {
        Some("writer") => Access::Writer,
        _ => Access::Reader,
    }
}

fn ordered_parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(|e| query_error(e.into()))?;
    let mut ids: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(id, t)| id.trim_start_matches('$').parse::<usize>().ok().map(|n| (n, t)))
        .collect();
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

    fn timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> Duration {
        let asked = client
            .metadata()
            .get(SESSION_TIMEOUT_KEY)
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        asked.map_or(self.shared.max_statement_time, |a| a.min(self.shared.max_statement_time))
    }

    /// Runs one statement; on an error inside a transaction block, marks the block failed.
    async fn execute<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = self.execute_inner(client, statement, plan, params, format).await;
        if result.is_err() {
            let mut s = self.session();
            if s.block.is_some() {
                s.failed = true;
            }
        }
        result
    }

    async fn execute_inner<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Transaction control first: it is what a failed block still answers.
        match statement {
            Statement::StartTransaction { .. } => {
                let mut s = self.session();
                if s.block.is_none() {
                    s.block = Some(Block::default());
                    s.failed = false;
                }
                return Ok(Response::TransactionStart(Tag::new("BEGIN")));
            }
            Statement::Savepoint { name } => {
                let mut s = self.session();
                if s.failed {
                    return Err(in_failed_block());
                }
                let block = s.block.as_mut().ok_or_else(|| outside_block("SAVEPOINT"))?;
                block.savepoint(&name.value);
                return Ok(Response::Execution(Tag::new("SAVEPOINT")));
            }
            Statement::ReleaseSavepoint { name } => {
                let mut s = self.session();
                if s.failed {
                    return Err(in_failed_block());
                }
                let block = s.block.as_mut().ok_or_else(|| outside_block("RELEASE SAVEPOINT"))?;
                block.release(&name.value).map_err(query_error)?;
                return Ok(Response::Execution(Tag::new("RELEASE")));
            }
            Statement::Rollback { savepoint: Some(name), .. } => {
                // Also what ends a failed state, as in PostgreSQL.
                let mut s = self.session();
                let block =
                    s.block.as_mut().ok_or_else(|| outside_block("ROLLBACK TO SAVEPOINT"))?;
                block.rollback_to(&name.value).map_err(query_error)?;
                s.failed = false;
                return Ok(Response::Execution(Tag::new("ROLLBACK")));
            }
            Statement::Rollback { savepoint: None, .. } => {
                let mut s = self.session();
                s.block = None;
                s.failed = false;
                return Ok(Response::TransactionEnd(Tag::new("ROLLBACK")));
            }
            Statement::Commit { .. } => {
                let (block, failed) = {
                    let mut s = self.session();
                    (s.block.take(), std::mem::take(&mut s.failed))
                };
                return match block {
                    // PostgreSQL answers COMMIT of a failed block with ROLLBACK.
                    Some(_) if failed => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
                    Some(block) => {
                        self.shared.sql.commit(block).await.map_err(query_error)?;
                        Ok(Response::TransactionEnd(Tag::new("COMMIT")))
                    }
                    None => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
                };
            }
            _ => {}
        }
        if self.session().failed {
            return Err(in_failed_block());
        }
        match statement {
            Statement::Set(_) | Statement::ShowVariable { .. } | Statement::ShowStatus { .. } => {
                // The DataFusion context is shared by every connection: its settings are the
                // server's, not a session's.
                if let Statement::Set(Set::SingleAssignment { variable, .. }) = statement {
                    if variable.to_string().to_ascii_lowercase().starts_with("datafusion") {
                        return Err(user_error(
                            "42501",
                            format!(
                                "{variable} is a server setting and cannot be changed by a session"
                            ),
                        ));
                    }
                }
                let ctx = self.shared.sql.context();
                if let Some(r) = SetShowHook.handle_simple_query(statement, ctx, client).await {
                    return r;
                }
                return Ok(Response::Execution(Tag::new("SET")));
            }
            Statement::Discard { .. } => {
                return Ok(Response::Execution(Tag::new("DISCARD ALL")));
            }
            Statement::Deallocate { .. } => {
                return Ok(Response::Execution(Tag::new("DEALLOCATE")));
            }
            _ => {}
        }
        Sql::check(statement, access(client)).map_err(query_error)?;
        if let Some(copy) = CopyIn::from_statement(statement) {
            let copy = copy.map_err(query_error)?;
            let width = copy.width();
            let mut s = self.session();
            let mut data = std::mem::take(&mut s.spare);
            data.clear();
            s.copy = Some(CopyState { copy, data, too_large: false });
            return Ok(Response::CopyIn(CopyResponse::new(0, width, futures::stream::empty())));
        }
        let limit = self.timeout(client);
        let sql = &self.shared.sql;
        let run = async {
            let plan = match plan {
                Some(p) => p,
                None => sql.plan(statement).await?,
            };
            let plan = match params {
                Some(p) => plan.replace_params_with_values(&p)?,
                None => plan,
            };
            match sql.run(plan).await? {
                Output::Rows(df) => {
                    let schema = df.schema().inner().clone();
                    let batches =
                        df.collect().await.map_err(|e| QueryError::from(e).unwrap_external())?;
                    Ok(Ran::Rows(schema, batches))
                }
                Output::Write { table, events } => Ok(Ran::Write(table, events)),
            }
        };
        let ran = tokio::time::timeout(limit, run)
            .await
            .map_err(|_| {
                user_error("57014", "canceling statement due to statement timeout".into())
            })?
            .map_err(query_error)?;
        match ran {
            Ran::Rows(schema, batches) => {
                let table =
                    MemTable::try_new(schema, vec![batches]).map_err(|e| query_error(e.into()))?;
                let df =
                    sql.context().read_table(Arc::new(table)).map_err(|e| query_error(e.into()))?;
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                Ok(Response::Query(encode_dataframe(df, format, Some(options)).await?))
            }
            Ran::Write(table, events) => {
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
        }
    }
}

enum Ran {
    Rows(datafusion::arrow::datatypes::SchemaRef, Vec<datafusion::arrow::array::RecordBatch>),
    Write(&'static str, Vec<tally_engine::Event>),
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match self.shared.parser.parse(query) {
            Ok(s) => s,
            Err(e) => {
                if self.session().block.is_some() {
                    self.session().failed = true;
                }
                return Err(query_error(Sql::parse_error(query, e)));
            }
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            match self.execute(client, statement, None, None, &Format::UnifiedText).await {
                Ok(r) => {
                    let copying = matches!(r, Response::CopyIn(_));
                    responses.push(r);
                    if copying {
                        break;
                    }
                }
                Err(e) => {
                    // Like PostgreSQL: the statements before the error stand, the rest are
                    // not run.
                    responses.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        Ok(responses)
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
        let mut statements =
            self.shared.parser.parse(sql).map_err(|e| query_error(Sql::parse_error(sql, e)))?;
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
            Some(self.shared.sql.plan(&statement).await.map_err(query_error)?)
        } else {
            None
        };
        Ok(Some(Prepared { statement, plan }))
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
        let is_show = matches!(
            prepared.statement,
            Statement::Set(_) | Statement::ShowVariable { .. } | Statement::ShowStatus { .. }
        );
        let plan = if is_show { None } else { prepared.plan.clone() };
        self.execute(client, &prepared.statement, plan, params, &portal.result_column_format).await
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
            if state.data.capacity() <= MAX_COPY_BYTES {
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
