//! The SQL layer's one error type, and the SQLSTATE each error carries to a PostgreSQL client
//! (surface.md "Rules"). The codes live here so the wire front end and the embedded API agree.

use datafusion::error::DataFusionError;
use tally_engine::log_tree::ProofError;
use tally_engine::{Refusal, RefusalClass};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// UPDATE, DELETE, TRUNCATE, DROP, or a write to a read-only table (SQLSTATE 25006).
    #[error("the ledger is append-only: {0} is not allowed")]
    AppendOnly(String),
    /// Statements that would touch the server's files or register tables, or a write by a
    /// `reader` (SQLSTATE 42501).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// A row the ledger refuses; nothing of its statement was appended.
    #[error("row {row} of the {table} write: field {field} = {value:?}: {message}")]
    Refused {
        /// 1-based position of the row in its statement (or COPY, or transaction block).
        row: usize,
        table: &'static str,
        field: String,
        value: String,
        message: String,
        sqlstate: &'static str,
    },
    /// A statement or COPY over the batch limits of surface.md (SQLSTATE 54000).
    #[error("{0}: split it into smaller statements, or use streaming ingest (`tally ingest`)")]
    TooLarge(String),
    /// A statement whose expressions nest too deeply to process safely (SQLSTATE 54001).
    #[error("statement too complex: {0}")]
    TooComplex(String),
    /// COPY data that is not valid text/CSV for its options (SQLSTATE 22P04).
    #[error("COPY data, line {line}: {message}")]
    BadCopyData { line: usize, message: String },
    /// RELEASE or ROLLBACK TO a savepoint that is not set (SQLSTATE 3B001).
    #[error("savepoint \"{0}\" does not exist")]
    NoSavepoint(String),
    /// A parameter of a request that is not valid, e.g. a streaming producer's id (22023).
    #[error("{0}")]
    InvalidParameter(String),
    /// A write in a session that reads a past state (`SET tally.as_of_lsn`; SQLSTATE 25006,
    /// PostgreSQL's read-only transaction).
    #[error("cannot write while reading the past: {0}")]
    ReadingThePast(String),
    /// A streaming batch that is not its producer's next (SQLSTATE 55000).
    #[error("{0}")]
    OutOfOrder(String),
    /// Any statement but ROLLBACK in a transaction block that failed (SQLSTATE 25P02).
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedBlock,
    /// SAVEPOINT, RELEASE or ROLLBACK TO outside a block (SQLSTATE 25P01).
    #[error("{0} can only be used in transaction blocks")]
    NoBlock(&'static str),
    /// The statement was stopped by its time limit or a cancel request (SQLSTATE 57014).
    #[error("{0}")]
    Canceled(String),
    /// The server is shutting down (SQLSTATE 57P01).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A bug: something that cannot happen did (SQLSTATE XX000).
    #[error("internal error: {0}")]
    Internal(String),
    /// A scalar subquery gave more than one row (SQLSTATE 21000, as PostgreSQL).
    #[error("{0}")]
    CardinalityViolation(String),
    /// SQL we do not support (SQLSTATE 0A000).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The write could not be made durable; nothing of it was appended (SQLSTATE 58030).
    #[error("the write was not appended: {0}")]
    Write(String),
    /// The cluster has no leader that could take the write now; nothing of it was written, so
    /// it may be sent again (SQLSTATE 57P03).
    #[error("the cluster cannot serve this now (nothing was written; retry): {0}")]
    NoLeader(String),
    /// The write may or may not have been applied: the link to the leader broke while it
    /// was on its way (SQLSTATE 08007, PostgreSQL's "transaction resolution unknown").
    #[error("the write's outcome is unknown (it may have been applied): {0}")]
    Unknown(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Storage(#[from] tally_storage::StorageError),
}

impl QueryError {
    /// The PostgreSQL error code a client sees.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::AppendOnly(_) | QueryError::ReadingThePast(_) => "25006",
            QueryError::NotAllowed(_) => "42501",
            QueryError::Refused { sqlstate, .. } => sqlstate,
            QueryError::TooLarge(_) => "54000",
            QueryError::TooComplex(_) => "54001",
            QueryError::BadCopyData { .. } => "22P04",
            QueryError::NoSavepoint(_) => "3B001",
            QueryError::InvalidParameter(_) => "22023",
            QueryError::OutOfOrder(_) => "55000",
            QueryError::InFailedBlock => "25P02",
            QueryError::NoBlock(_) => "25P01",
            QueryError::Canceled(_) => "57014",
            QueryError::ShuttingDown => "57P01",
            QueryError::Internal(_) => "XX000",
            QueryError::CardinalityViolation(_) => "21000",
            QueryError::Unsupported(_) => "0A000",
            QueryError::Write(_) => "58030",
            QueryError::NoLeader(_) => "57P03",
            QueryError::Unknown(_) => "08007",
            QueryError::DataFusion(e) => match ours_in(e) {
                Some(ours) => ours.sqlstate(),
                None => datafusion_sqlstate(e),
            },
            QueryError::Arrow(_) => "22000",
            // Damage at rest: PostgreSQL's data_corrupted. Nothing is answered past it.
            QueryError::Storage(
                tally_storage::StorageError::Damaged { .. }
                | tally_storage::StorageError::Corrupt { .. }
                | tally_storage::StorageError::SealedChecksum { .. },
            ) => "XX001",
            // Sizes and lsns a client named that the log does not have.
            QueryError::Storage(
                tally_storage::StorageError::PastLastLsn { .. }
                | tally_storage::StorageError::Proof(
                    ProofError::IndexOutOfRange { .. }
                    | ProofError::SizeBeyondTree { .. }
                    | ProofError::OldAfterNew { .. },
                ),
            ) => "22023",
            QueryError::Storage(_) => "58030",
        }
    }

    /// A refusal by the engine, for a statement whose rows start at `first_row` (1-based).
    pub(crate) fn from_refusal(r: &Refusal, table: &'static str, first_row: usize) -> QueryError {
        let sqlstate = match r.rule.class() {
            RefusalClass::Duplicate => "23505",
            RefusalClass::UnknownReference => "23503",
            RefusalClass::Lineage => "23514",
            RefusalClass::Overflow => "22003",
            RefusalClass::InvalidValue => "22023",
        };
        let value = match r.entry {
            Some(entry) => format!("entry {} ({})", entry + 1, shown(&r.value)),
            None => shown(&r.value),
        };
        QueryError::Refused {
            row: first_row + r.index,
            table,
            field: r.field.to_string(),
            value,
            message: r.rule.to_string(),
            sqlstate,
        }
    }

    /// The message a client sees: ours when DataFusion carries one of ours (also inside a
    /// shared error that cannot be unwrapped), without DataFusion's wrapping.
    pub fn message(&self) -> String {
        match self {
            QueryError::DataFusion(e) => ours_in(e).map_or_else(|| e.to_string(), |o| o.message()),
            other => other.to_string(),
        }
    }

    /// Unwraps the DataFusion wrappers around one of ours (errors raised inside a sink travel
    /// through DataFusion as `External`).
    pub fn unwrap_external(self) -> QueryError {
        match self {
            QueryError::DataFusion(e) => match find_ours(e) {
                Ok(ours) => ours,
                Err(e) => QueryError::DataFusion(e),
            },
            other => other,
        }
    }
}

/// Longest part of a refused value an error message repeats.
const SHOWN_VALUE_BYTES: usize = 100;

/// A value as an error message shows it: whole when short, else its start and its length (a
/// refused 20 MB id is not sent back to the client).
pub(crate) fn shown(value: &str) -> String {
    if value.len() <= SHOWN_VALUE_BYTES {
        return value.to_owned();
    }
    let mut end = SHOWN_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
}

/// One of ours inside DataFusion's wrappers, found by reference.
fn ours_in(e: &DataFusionError) -> Option<&QueryError> {
    match e {
        DataFusionError::External(inner) => inner
            .downcast_ref::<QueryError>()
            .or_else(|| inner.downcast_ref::<DataFusionError>().and_then(ours_in)),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            ours_in(inner)
        }
        DataFusionError::Shared(inner) => ours_in(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(e) => e
                .downcast_ref::<QueryError>()
                .or_else(|| e.downcast_ref::<DataFusionError>().and_then(ours_in)),
            _ => None,
        },
        _ => None,
    }
}

fn find_ours(e: DataFusionError) -> Result<QueryError, DataFusionError> {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<QueryError>() {
            Ok(ours) => Ok(ours.unwrap_external()),
            // Operators that pass errors on may box a DataFusionError once more.
            Err(other) => match other.downcast::<DataFusionError>() {
                Ok(df) => find_ours(*df),
                Err(other) => Err(DataFusionError::External(other)),
            },
        },
        DataFusionError::ArrowError(inner, context) => match *inner {
            datafusion::arrow::error::ArrowError::ExternalError(e) => {
                match find_ours(DataFusionError::External(e)) {
                    Ok(ours) => Ok(ours),
                    Err(DataFusionError::External(e)) => Err(DataFusionError::ArrowError(
                        Box::new(datafusion::arrow::error::ArrowError::ExternalError(e)),
                        context,
                    )),
                    Err(other) => Err(other),
                }
            }
            other => Err(DataFusionError::ArrowError(Box::new(other), context)),
        },
        DataFusionError::Context(ctx, inner) => match find_ours(*inner) {
            Ok(ours) => Ok(ours),
            Err(inner) => Err(DataFusionError::Context(ctx, Box::new(inner))),
        },
        DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
            Ok(inner) => find_ours(inner),
            Err(shared) => Err(DataFusionError::Shared(shared)),
        },
        other => Err(other),
    }
}

fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::Plan(msg) if msg.contains("not found") => "42P01",
        DataFusionError::SchemaError(..) => "42703",
        DataFusionError::Plan(_) => "42804",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::Context(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::ArrowError(..) => "22000",
        DataFusionError::Execution(_) => "22000",
        _ => "XX000",
    }
}
