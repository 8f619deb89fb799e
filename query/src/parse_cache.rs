//! Queries as parsed, kept by their SQL text: a client that sends the same query again without
//! preparing it (psql, most ORMs, libpq's `PQexecParams`, every driver's unnamed statements)
//! skips PostgreSQL's grammar and the compatibility rewrites (`postgres.rs`), which cost more
//! than a direct read itself.
//!
//! Parsing depends on the text alone, so a kept parse means the same whoever sends it; roles
//! and the append-only rules are checked on each statement after it is parsed, as before.
//! Only texts that are one query (a SELECT, WITH or VALUES) are kept: reads are what clients
//! repeat, and a write's text usually differs each time (its values). Never: keep a parse that
//! failed, or grow without bound.

use datafusion::sql::sqlparser::ast::Statement;

use crate::kept::Kept;
use crate::session::Parsed;

/// The most texts kept; when full, the cache starts again empty (as `plan_cache.rs`).
pub const MAX_PARSED_TEXTS: usize = 1024;
/// Texts longer than this are not kept: repeated queries are short, and with the count above
/// the cache holds at most 4 MiB of text (and its statements).
pub const MAX_PARSED_TEXT_BYTES: usize = 4096;

pub(crate) struct ParseCache {
    parsed: Kept<String, Parsed>,
}

impl Default for ParseCache {
    fn default() -> Self {
        ParseCache { parsed: Kept::new(MAX_PARSED_TEXTS) }
    }
}

impl ParseCache {
    /// The statements kept for `sql`, if any.
    pub fn get(&self, sql: &str) -> Option<Parsed> {
        if sql.len() > MAX_PARSED_TEXT_BYTES {
            return None;
        }
        self.parsed.get(sql)
    }

    /// Keeps `parsed` for `sql` if it is one query and the text short.
    pub fn keep(&self, sql: &str, parsed: &Parsed) {
        if sql.len() > MAX_PARSED_TEXT_BYTES {
            return;
        }
        if !matches!(parsed.statements.as_slice(), [Statement::Query(_)]) {
            return;
        }
        self.parsed.keep(sql.to_owned(), parsed.clone());
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.parsed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sql;

    #[test]
    fn a_repeated_query_is_parsed_once_and_nothing_else_is_kept() {
        let cache = ParseCache::default();
        let parse = |q: &str| {
            let parsed = cache.get(q).map_or_else(|| Sql::parse(q), Ok).unwrap();
            cache.keep(q, &parsed);
            parsed
        };
        let q = "SELECT earned FROM balances WHERE account = $1";
        let first = parse(q);
        assert_eq!(cache.len(), 1);
        let again = parse(q);
        assert_eq!(cache.len(), 1, "kept once");
        assert_eq!(first.statements, again.statements);
        assert_eq!(first.heavy, again.heavy);
        // Writes, several statements and settings are parsed each time.
        parse("INSERT INTO datanets (datanet, owner) VALUES ('d', 'o')");
        parse("SELECT 1; SELECT 2");
        parse("SET statement_timeout = 1000");
        assert_eq!(cache.len(), 1);
        // A long text is never kept, and the cache never holds more than its count.
        let long = format!("SELECT 1 AS \"{}\"", "x".repeat(MAX_PARSED_TEXT_BYTES));
        parse(&long);
        assert_eq!(cache.len(), 1);
        for i in 0..MAX_PARSED_TEXTS + 10 {
            parse(&format!("SELECT {i}"));
            assert!(cache.len() <= MAX_PARSED_TEXTS);
        }
    }

    #[test]
    fn a_text_that_fails_to_parse_fails_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = tally_storage::Database::open(dir.path()).unwrap();
        let sql = Sql::new(std::sync::Arc::new(db)).unwrap();
        for _ in 0..2 {
            assert!(sql.parse_kept("SELEC 1").is_err());
        }
        assert_eq!(sql.parsed.len(), 0);
    }
}
