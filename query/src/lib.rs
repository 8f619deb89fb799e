//! Tally's SQL layer: DataFusion tables with the names and columns of surface.md, backed by the
//! engine state and the log; the write path (INSERT, COPY FROM STDIN, transaction blocks) that
//! turns rows into events exactly; the session semantics every front end shares (transaction
//! blocks, the order of checks: `Sql::execute`); what PostgreSQL clients expect of the catalog
//! (`postgres.rs`); and the embedded database's `Sql::query`. No network here: the PostgreSQL
//! wire protocol and the Flight endpoint live in `server/`.

mod as_of;
mod batch;
mod column_names;
mod complexity;
mod computed;
mod consistency;
mod copy;
mod copy_out;
mod direct;
mod driver_catalog;
mod error;
mod execute;
mod ingest;
mod kept;
mod parse_cache;
mod plan_cache;
mod postgres;
mod proofs;
mod provider;
mod row;
mod rows;
mod session;
mod set_functions;
mod simulate;
mod subquery;
pub mod tables;
mod transaction;
mod value_limits;

pub use as_of::{AS_OF_LSN, MAX_PAST_STATES};
pub use batch::events_from_batch;
pub use column_names::result_schema;
pub use complexity::{check_statement_text, MAX_EXPRESSION_DEPTH, MAX_STATEMENT_BYTES};
pub use computed::MAX_COMPUTED_AT_ONCE;
pub use copy::{CopyIn, MAX_COPY_BYTES};
pub use copy_out::{CopyEncoder, CopyOut};
pub use error::QueryError;
pub use execute::{Done, Outcome, Planned, Request, HEAVY_DEPTH};
pub use ingest::{DryRun, PendingBatch, MAX_DRY_RUN_ROWS};
pub use postgres::POSTGRES_VERSION;
pub use rows::Rows;
pub use session::{Access, Parsed, Sql, QUERY_MEMORY_BYTES};
pub use simulate::SIMULATE_SETTLEMENT;
pub use transaction::{Session, Status};
pub use value_limits::MAX_CALL_OUTPUT_BYTES;

/// Cases of a fuzz target (the `fuzz_*` tests): `TALLY_FUZZ_CASES` (tests/fuzz.sh runs them
/// long), else `default`, a few seconds' worth for CI.
#[cfg(test)]
pub(crate) fn fuzz_config(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("TALLY_FUZZ_CASES").ok().and_then(|v| v.parse().ok());
    proptest::test_runner::Config {
        cases: cases.unwrap_or(default),
        failure_persistence: None,
        ..Default::default()
    }
}
