//! A session's transaction state and where its writes go: outside a block each write is
//! appended at once, one atomic batch per statement; inside BEGIN … COMMIT each write is
//! checked when issued (against the ledger plus the block's earlier writes) and held until
//! COMMIT appends the whole block atomically. After an error inside a block, the block is
//! failed: it answers 25P02 until ROLLBACK, as PostgreSQL does (surface.md "Rules").
//!
//! Every front end (the wire protocol, the embedded `Sql::query`) keeps one `Session` per
//! client session and hands it to `Sql::execute`; none decides these rules itself.

use datafusion::sql::sqlparser::ast::Statement;
use tally_engine::{Event, Pending, MAX_BATCH_EVENTS};
use tally_storage::WriteError;

use crate::execute::Done;
use crate::{CopyIn, QueryError, Sql};

/// The SQL state of one client session.
#[derive(Debug, Default)]
pub struct Session {
    block: Option<Block>,
    /// A statement in the block failed: everything but ROLLBACK (or COMMIT, which then rolls
    /// back) answers 25P02.
    failed: bool,
    /// How fresh its reads are (`consistency.rs`).
    pub(crate) consistency: crate::consistency::Consistency,
    /// The lsn its ledger tables show the state at (`as_of.rs`); `None`: now.
    pub(crate) as_of: Option<u64>,
}

/// Where a session stands, as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Idle,
    InBlock,
    Failed,
}

impl Session {
    pub fn status(&self) -> Status {
        match (&self.block, self.failed) {
            (None, _) => Status::Idle,
            (Some(_), false) => Status::InBlock,
            (Some(_), true) => Status::Failed,
        }
    }

    /// Rows the open block holds, if one is open.
    pub fn block_rows(&self) -> Option<usize> {
        self.block.as_ref().map(Block::rows)
    }

    /// After an error inside a transaction block, the block answers 25P02 until it ends.
    pub fn fail(&mut self) {
        if self.block.is_some() {
            self.failed = true;
        }
    }

    /// Refuses any statement but transaction control in a failed block.
    pub(crate) fn usable(&self) -> Result<(), QueryError> {
        if self.failed {
            return Err(QueryError::InFailedBlock);
        }
        Ok(())
    }

    /// BEGIN, SAVEPOINT, RELEASE, ROLLBACK [TO]; `None` for any other statement (COMMIT is
    /// `Sql::commit`'s: it appends).
    pub(crate) fn control(&mut self, statement: &Statement) -> Option<Result<Done, QueryError>> {
        Some(match statement {
            Statement::StartTransaction { .. } => {
                if self.block.is_none() {
                    self.block = Some(Block::default());
                    self.failed = false;
                }
                Ok(Done::tag("BEGIN"))
            }
            Statement::Savepoint { name } => self.open_block("SAVEPOINT").map(|b| {
                b.savepoint(&name.value);
                Done::tag("SAVEPOINT")
            }),
            Statement::ReleaseSavepoint { name } => self
                .open_block("RELEASE SAVEPOINT")
                .and_then(|b| b.release(&name.value))
                .map(|()| Done::tag("RELEASE")),
            Statement::Rollback { savepoint: Some(name), .. } => {
                // Also what ends a failed state, as in PostgreSQL.
                let Some(block) = self.block.as_mut() else {
                    return Some(Err(QueryError::NoBlock("ROLLBACK TO SAVEPOINT")));
                };
                block.rollback_to(&name.value).map(|()| {
                    self.failed = false;
                    Done::tag("ROLLBACK")
                })
            }
            Statement::Rollback { savepoint: None, .. } => {
                self.block = None;
                self.failed = false;
                Ok(Done::tag("ROLLBACK"))
            }
            _ => return None,
        })
    }

    /// The open, not failed, block (for SAVEPOINT and RELEASE).
    fn open_block(&mut self, what: &'static str) -> Result<&mut Block, QueryError> {
        self.usable()?;
        self.block.as_mut().ok_or(QueryError::NoBlock(what))
    }
}

impl Sql {
    /// A statement's written events: added to the session's open block, or appended now as
    /// one atomic batch. Returns the rows written.
    pub(crate) async fn write(
        &self,
        session: &mut Session,
        table: &'static str,
        events: Vec<Event>,
    ) -> Result<u64, QueryError> {
        match session.block.as_mut() {
            Some(block) => self.add_to_block(block, table, events),
            None => self.append(table, events).await,
        }
    }

    /// COMMIT: appends the session's block atomically (validated again, against the ledger
    /// as it is now). A failed block is rolled back instead, as PostgreSQL does.
    pub(crate) async fn commit(&self, session: &mut Session) -> Result<Done, QueryError> {
        let failed = std::mem::take(&mut session.failed);
        match session.block.take() {
            Some(_) if failed => Ok(Done::tag("ROLLBACK")),
            Some(block) => self.append_block(block).await.map(|_| Done::tag("COMMIT")),
            None => Ok(Done::tag("COMMIT")),
        }
    }

    /// Parses a COPY's data and writes it as one statement (`write`). An error inside a block
    /// fails the block.
    pub async fn copy_in(
        &self,
        session: &mut Session,
        copy: &CopyIn,
        data: &[u8],
    ) -> Result<u64, QueryError> {
        let written = match copy.events(data) {
            Ok(events) => self.write(session, copy.table(), events).await,
            Err(e) => Err(e),
        };
        if written.is_err() {
            session.fail();
        }
        written
    }

    /// Appends one statement's events as one atomic batch; returns the rows appended.
    async fn append(&self, table: &'static str, events: Vec<Event>) -> Result<u64, QueryError> {
        let n = events.len() as u64;
        if events.is_empty() {
            return Ok(0);
        }
        self.database().write_async(events).await.map_err(|e| write_error(e, &[(0, table)]))?;
        Ok(n)
    }

    /// Checks a statement's events inside a transaction block against the ledger plus the
    /// block's earlier writes, and adds them to the block.
    /// The check takes time linear in the statement, not in the block: the block keeps what
    /// its earlier writes add (`tally_engine::Pending`).
    fn add_to_block(
        &self,
        block: &mut Block,
        table: &'static str,
        events: Vec<Event>,
    ) -> Result<u64, QueryError> {
        let n = events.len() as u64;
        if block.events.len() + events.len() > MAX_BATCH_EVENTS {
            return Err(QueryError::TooLarge(format!(
                "this transaction block writes more than {MAX_BATCH_EVENTS} rows"
            )));
        }
        // Checked with the log's history, so a fingerprint collision with a past inference id
        // is told from a true duplicate here, as it is when the block is appended.
        self.database().read_checked(|l, history| {
            let pending = match &mut block.pending {
                Some(p) => p,
                // After ROLLBACK TO SAVEPOINT: rebuilt once from the writes that remain.
                None => {
                    let mut p = Pending::default();
                    l.validate_after_with_history(&mut p, &block.events, history).map_err(|r| {
                        QueryError::from_refusal(&r, "ledger", 1).renumber(&block.statements)
                    })?;
                    block.pending.insert(p)
                }
            };
            l.validate_after_with_history(pending, &events, history)
                .map_err(|r| QueryError::from_refusal(&r, table, 1))
        })?;
        block.statements.push((block.events.len(), table));
        block.events.extend(events);
        Ok(n)
    }

    async fn append_block(&self, block: Block) -> Result<u64, QueryError> {
        let n = block.events.len() as u64;
        if block.events.is_empty() {
            return Ok(0);
        }
        let written = self.database().write_async(block.events).await;
        written.map_err(|e| write_error(e, &block.statements))?;
        Ok(n)
    }
}

/// Writes held back by `BEGIN` until `COMMIT`.
#[derive(Debug, Default)]
struct Block {
    events: Vec<Event>,
    /// Where each statement's events start, and their table.
    statements: Vec<(usize, &'static str)>,
    /// Open savepoints, oldest first: name, and the block's lengths when it was set.
    savepoints: Vec<(String, usize, usize)>,
    /// What the writes so far add to the ledger, for checking the next statement; `None`
    /// until needed, and again after ROLLBACK TO SAVEPOINT.
    pending: Option<Pending>,
}

impl Block {
    fn rows(&self) -> usize {
        self.events.len()
    }

    /// `SAVEPOINT name`: marks the writes so far (a name may be reused; the newest wins).
    fn savepoint(&mut self, name: &str) {
        self.savepoints.push((name.to_owned(), self.events.len(), self.statements.len()));
    }

    /// `RELEASE SAVEPOINT name`: forgets it and every later savepoint, keeps the writes.
    fn release(&mut self, name: &str) -> Result<(), QueryError> {
        let at = self.find(name)?;
        self.savepoints.truncate(at);
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT name`: discards the writes made since; the savepoint stays.
    fn rollback_to(&mut self, name: &str) -> Result<(), QueryError> {
        let at = self.find(name)?;
        let (_, events, statements) = self.savepoints[at];
        self.events.truncate(events);
        self.statements.truncate(statements);
        self.pending = None;
        self.savepoints.truncate(at + 1);
        Ok(())
    }

    fn find(&self, name: &str) -> Result<usize, QueryError> {
        self.savepoints
            .iter()
            .rposition(|(n, _, _)| n == name)
            .ok_or_else(|| QueryError::NoSavepoint(name.to_owned()))
    }
}

impl QueryError {
    /// Re-numbers a refusal made against a whole block to name its statement's table and
    /// row. `statements` lists where each statement's events start.
    fn renumber(self, statements: &[(usize, &'static str)]) -> QueryError {
        match self {
            QueryError::Refused { row, field, value, message, sqlstate, .. } => {
                let index = row - 1;
                let (start, table) = statements
                    .iter()
                    .rev()
                    .find(|(s, _)| *s <= index)
                    .copied()
                    .unwrap_or((0, "ledger"));
                QueryError::Refused {
                    row: index - start + 1,
                    table,
                    field,
                    value,
                    message,
                    sqlstate,
                }
            }
            other => other,
        }
    }
}

pub(crate) fn write_error(e: WriteError, statements: &[(usize, &'static str)]) -> QueryError {
    match e {
        WriteError::Refused(r) => QueryError::from_refusal(&r, "ledger", 1).renumber(statements),
        WriteError::TooLarge { .. } => QueryError::TooLarge(e.to_string()),
        WriteError::NotLeader(why) => QueryError::NoLeader(why),
        WriteError::Raft(why) => QueryError::Unknown(why),
        other => QueryError::Write(other.to_string()),
    }
}
