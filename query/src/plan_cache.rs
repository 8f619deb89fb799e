//! The plans of statements that direct reads answer (`direct.rs`), kept by statement: a query
//! that a client sends again unprepared (psql, most ORMs, a driver's first runs of a statement)
//! skips DataFusion's planning and optimization, which cost several times the read itself.
//!
//! Only such plans are kept, because only they mean the same whenever they run: a direct plan
//! reads engine tables (whose schemas never change) through plain columns, with no function
//! that planning could fold (`now()` is folded into the plan when it is optimized). Roles and
//! the append-only rules are checked on each statement before its plan is looked up here.
//! Never: keep a plan that is not direct, or grow without bound.

use datafusion::sql::sqlparser::ast::Statement;

use crate::execute::Planned;
use crate::kept::Kept;

/// The most plans kept; when full, the cache starts again empty (the statements a server
/// repeats are few, and each costs one planning to come back).
pub const MAX_CACHED_PLANS: usize = 1024;
/// Statements longer than this (as SQL text) are not kept: direct reads are short queries,
/// and the cache's memory stays bounded by the two limits.
pub const MAX_CACHED_STATEMENT_BYTES: usize = 4096;

pub(crate) struct PlanCache {
    plans: Kept<Statement, Planned>,
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache { plans: Kept::new(MAX_CACHED_PLANS) }
    }
}

impl PlanCache {
    /// The plan kept for `statement`, if any. Only queries are kept, so nothing else is
    /// hashed (an INSERT's statement may be megabytes of VALUES).
    pub fn get(&self, statement: &Statement) -> Option<Planned> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        self.plans.get(statement)
    }

    /// Keeps `planned` for `statement` if it is a direct read's plan and the statement short.
    pub fn keep(&self, statement: &Statement, planned: &Planned) {
        if !matches!(planned, Planned::Optimized { direct: Some(_), .. }) {
            return;
        }
        if statement.to_string().len() > MAX_CACHED_STATEMENT_BYTES {
            return;
        }
        self.plans.keep(statement.clone(), planned.clone());
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.plans.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::util::pretty::pretty_format_batches;
    use tally_storage::Database;

    use crate::Sql;

    #[test]
    fn a_repeated_direct_read_is_planned_once_and_reads_the_state_of_each_run() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let mut batches = tally_workload::Generator::new(tally_workload::Shape::demo(3, 300));
        db.write(batches.next().unwrap()).unwrap();
        let sql = Sql::new(db.clone()).unwrap();
        let general = sql.clone().without_direct_reads();
        let text = |sql: &Sql, q: &str| {
            pretty_format_batches(&sql.query_blocking(q).unwrap()).unwrap().to_string()
        };
        let top = "SELECT account, earned FROM balances ORDER BY earned DESC LIMIT 5";
        let before = text(&sql, top);
        assert_eq!(sql.plans().len(), 1);
        assert_eq!(before, text(&general, top));
        for batch in batches {
            db.write(batch).unwrap();
        }
        let after = text(&sql, top);
        assert_eq!(sql.plans().len(), 1, "planned once");
        assert_ne!(before, after, "the second run reads the state it runs against");
        assert_eq!(after, text(&general, top));
        // Plans that are not direct reads are never kept (`now()` is folded when planned).
        text(&sql, "SELECT count(*) FROM balances");
        text(&sql, "SELECT now()");
        assert_eq!(sql.plans().len(), 1);
        assert_eq!(general.plans().len(), 0, "without direct reads nothing is kept");
    }
}
