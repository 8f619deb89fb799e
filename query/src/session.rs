//! SQL over the ledger for the embedded database. Each query gets its own DataFusion session
//! whose tables are copies of the engine state taken together under one short read lock: one
//! query sees one lsn everywhere, and no lock is held while it runs. Read-only so far (writes
//! through `insert_into` come with the SQL write path): statements that would change the ledger
//! are refused as append-only, and anything that reads or writes the server's files or
//! registers tables is refused outright.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use tally_storage::Database;

use crate::tables;

/// Memory one query may use (sorts, joins, aggregates); beyond it the query fails.
pub const QUERY_MEMORY_BYTES: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// UPDATE, DELETE, TRUNCATE, DROP, or a write to a read-only table (SQLSTATE 25006).
    #[error("the ledger is append-only: {0} is not allowed")]
    AppendOnly(String),
    /// Statements that would touch the server's files or register tables (SQLSTATE 42501).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Storage(#[from] tally_storage::StorageError),
}

/// SQL access to a database.
#[derive(Clone)]
pub struct Sql {
    db: Arc<Database>,
}

impl Sql {
    pub fn new(db: Arc<Database>) -> Sql {
        Sql { db }
    }

    /// Runs one statement and returns its rows.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        check_statements(sql)?;
        let wanted: Vec<&'static str> =
            tables::TABLES.iter().copied().filter(|t| mentions(sql, t)).collect();
        // The state tables and the lsn that the log tables stop at, taken together.
        let (built, pinned) = self.db.read(|l| {
            let built = wanted
                .iter()
                .map(|t| tables::build(t, l).expect("a known table").map(|b| (*t, b)))
                .collect::<Result<Vec<_>, _>>();
            (built, l.last_lsn())
        });
        let mut built = built?;
        if mentions(sql, "events") {
            built.push(("events", tables::events(&self.db, pinned)?));
        }
        let (want_inferences, want_attributions) =
            (mentions(sql, "inferences"), mentions(sql, "attributions"));
        if want_inferences || want_attributions {
            let (i, a) =
                tables::inference_tables(&self.db, pinned, want_inferences, want_attributions)?;
            built.extend(i.map(|b| ("inferences", b)));
            built.extend(a.map(|b| ("attributions", b)));
        }
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(QUERY_MEMORY_BYTES)))
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for (name, b) in built {
            ctx.register_table(name, Arc::new(MemTable::try_new(b.schema(), vec![vec![b]])?))?;
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await?;
        Ok(df.collect().await?)
    }

    /// `query` for callers without an async runtime.
    pub fn query_blocking(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        self.db.runtime().block_on(self.query(sql))
    }
}

/// Whether `sql` names `table` as a whole word (case-insensitive).
fn mentions(sql: &str, table: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    lower.match_indices(table).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let after = lower[at + table.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Refuses, before planning, what the ledger never allows.
fn check_statements(sql: &str) -> Result<(), QueryError> {
    let statements = DFParser::parse_sql(sql)?;
    for s in statements {
        match s {
            DfStatement::CreateExternalTable(_) => {
                return Err(QueryError::NotAllowed("CREATE EXTERNAL TABLE".into()))
            }
            DfStatement::CopyTo(_) => return Err(QueryError::NotAllowed("COPY ... TO".into())),
            DfStatement::Statement(s) => match *s {
                Statement::Update { .. } => return Err(QueryError::AppendOnly("UPDATE".into())),
                Statement::Delete(_) => return Err(QueryError::AppendOnly("DELETE".into())),
                Statement::Truncate { .. } => {
                    return Err(QueryError::AppendOnly("TRUNCATE".into()))
                }
                Statement::Drop { .. } => return Err(QueryError::AppendOnly("DROP".into())),
                Statement::Insert(_) => {
                    return Err(QueryError::AppendOnly("INSERT into a read-only table".into()))
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}
