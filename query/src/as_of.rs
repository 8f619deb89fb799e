//! Time travel: `SET tally.as_of_lsn = N` makes a session's ledger tables show the state right
//! after lsn N (`RESET tally.as_of_lsn`, or setting it to `'now'`, returns to now). `events` is the log itself and keeps
//! showing all of it (its `lsn` column already places every row in time); `inferences` and
//! `attributions` end at lsn N, with rewards as settled at N; `cluster` is always now.
//!
//! A past state is rebuilt by storage (`Database::ledger_at`: the snapshot at or before N, or
//! the log from its start, replayed through the batch backend), once per N, and kept for the
//! next statements. Each is a whole ledger in memory, so few are kept and one is built at a
//! time. Never: change the live state, or build while holding its lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Reset, Set, Statement, Value};
use tally_engine::Ledger;
use tally_storage::{Database, StorageError};

use crate::QueryError;

/// The setting's name.
pub const AS_OF_LSN: &str = "tally.as_of_lsn";
/// Past states kept, the most recently used first.
pub const MAX_PAST_STATES: usize = 2;

fn is_ours(name: &ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), |i| i.value.clone()))
        .collect();
    parts.join(".").eq_ignore_ascii_case(AS_OF_LSN)
}

/// What a SET or RESET statement asks of this setting, when it is about it: `Some(lsn)` to
/// read at `lsn`, `None` to read the live ledger.
pub(crate) fn of_setting(statement: &Statement) -> Option<Result<Option<u64>, QueryError>> {
    match statement {
        Statement::Set(Set::SingleAssignment { variable, values, .. }) if is_ours(variable) => {
            let text = match values.as_slice() {
                [Expr::Value(v)] => match &v.value {
                    Value::Number(n, _) => Some(n.to_string()),
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
                    _ => None,
                },
                [Expr::Identifier(i)] if i.value.eq_ignore_ascii_case("default") => {
                    return Some(Ok(None));
                }
                _ => None,
            };
            let text = text.as_deref().map(str::trim);
            if text.is_some_and(|t| t.eq_ignore_ascii_case("now")) {
                return Some(Ok(None));
            }
            Some(match text.map(str::parse::<u64>) {
                Some(Ok(lsn)) => Ok(Some(lsn)),
                _ => Err(QueryError::InvalidParameter(format!(
                    "{AS_OF_LSN} is an lsn (a whole number from 0 to the ledger's last lsn) or 'now'"
                ))),
            })
        }
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Some(Ok(None)),
            Reset::ConfigurationParameter(name) if is_ours(name) => Some(Ok(None)),
            Reset::ConfigurationParameter(_) => None,
        },
        _ => None,
    }
}

/// Runs `f` on the ledger a statement reads: `past`, or the live one.
pub(crate) fn read<R>(db: &Database, past: Option<&Ledger>, f: impl FnOnce(&Ledger) -> R) -> R {
    match past {
        Some(ledger) => f(ledger),
        None => db.read(f),
    }
}

/// The past states built so far, by lsn.
#[derive(Default)]
pub(crate) struct PastStates {
    kept: Mutex<VecDeque<(u64, Arc<Ledger>)>>,
    /// Held while one is built: two builds at once would hold two ledgers' memory.
    building: tokio::sync::Mutex<()>,
}

impl PastStates {
    /// The ledger right after `lsn`, built (on a blocking thread) unless kept.
    pub async fn at(&self, db: &Arc<Database>, lsn: u64) -> Result<Arc<Ledger>, QueryError> {
        if let Some(ledger) = self.kept(lsn) {
            return Ok(ledger);
        }
        let _building = self.building.lock().await;
        if let Some(ledger) = self.kept(lsn) {
            return Ok(ledger);
        }
        let db = db.clone();
        let built = tokio::task::spawn_blocking(move || db.ledger_at(lsn))
            .await
            .map_err(|e| QueryError::Internal(format!("rebuilding lsn {lsn} failed: {e}")))?;
        let ledger = Arc::new(built.map_err(|e| match e {
            StorageError::PastLastLsn { .. } => {
                QueryError::InvalidParameter(format!("{AS_OF_LSN}: {e}"))
            }
            other => QueryError::Storage(other),
        })?);
        let mut kept = self.kept.lock().expect("the past states are never poisoned");
        kept.push_front((lsn, ledger.clone()));
        kept.truncate(MAX_PAST_STATES);
        Ok(ledger)
    }

    fn kept(&self, lsn: u64) -> Option<Arc<Ledger>> {
        let mut kept = self.kept.lock().expect("the past states are never poisoned");
        let at = kept.iter().position(|(l, _)| *l == lsn)?;
        let found = kept.remove(at).expect("found");
        kept.push_front(found.clone());
        Some(found.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(sql: &str) -> Option<Result<Option<u64>, QueryError>> {
        let parsed = crate::Sql::parse(sql).unwrap();
        of_setting(&parsed.statements[0])
    }

    #[test]
    fn the_setting_takes_an_lsn_and_nothing_else() {
        assert!(matches!(setting("SET tally.as_of_lsn = 42"), Some(Ok(Some(42)))));
        assert!(matches!(setting("SET tally.as_of_lsn TO '7'"), Some(Ok(Some(7)))));
        assert!(matches!(setting("SET TALLY.AS_OF_LSN = 0"), Some(Ok(Some(0)))));
        assert!(matches!(setting("SET tally.as_of_lsn = DEFAULT"), Some(Ok(None))));
        assert!(matches!(setting("SET tally.as_of_lsn = 'now'"), Some(Ok(None))));
        assert!(matches!(setting("RESET tally.as_of_lsn"), Some(Ok(None))));
        assert!(matches!(setting("RESET ALL"), Some(Ok(None))));
        for bad in ["-1", "1.5", "'x'", "'18446744073709551616'"] {
            let sql = format!("SET tally.as_of_lsn = {bad}");
            match setting(&sql) {
                Some(Err(e)) => assert_eq!(e.sqlstate(), "22023", "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(setting("SET application_name = 'x'").is_none());
        assert!(setting("RESET statement_timeout").is_none());
    }
}
