//! Tally's SQL layer: DataFusion tables with the names and columns of surface.md, backed by the
//! engine state, and the embedded database's `sql()`. No network here: the PostgreSQL wire
//! protocol lives in `server/`.

mod session;
pub mod tables;

pub use session::{QueryError, Sql, QUERY_MEMORY_BYTES};
