//! A session's read consistency (`SET tally.read_consistency = 'local' | 'linearizable'`): a
//! read is served by the node the client is connected to, from what that node has applied
//! (`local`, the default), or after it has caught up with the leader's read index
//! (`linearizable`: it sees every write acknowledged anywhere before it started). The session
//! decides; the wire layer only keeps the setting's text for SHOW.

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Reset, Set, Statement, Value};

use crate::QueryError;

/// The setting's name.
pub const READ_CONSISTENCY: &str = "tally.read_consistency";

/// How fresh a session's reads are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// What this node has applied.
    #[default]
    Local,
    /// What the cluster had committed when the statement started.
    Linearizable,
}

fn is_ours(name: &ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), |i| i.value.clone()))
        .collect();
    parts.join(".").eq_ignore_ascii_case(READ_CONSISTENCY)
}

/// The consistency a SET or RESET statement asks for, when it is about this setting.
pub(crate) fn of_setting(statement: &Statement) -> Option<Result<Consistency, QueryError>> {
    match statement {
        Statement::Set(Set::SingleAssignment { variable, values, .. }) if is_ours(variable) => {
            let value = match values.as_slice() {
                [Expr::Value(v)] => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
                    _ => None,
                },
                [Expr::Identifier(i)] => Some(i.value.clone()),
                _ => None,
            };
            Some(match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("local") => Ok(Consistency::Local),
                Some("linearizable") => Ok(Consistency::Linearizable),
                _ => Err(QueryError::InvalidParameter(format!(
                    "{READ_CONSISTENCY} is 'local' or 'linearizable'"
                ))),
            })
        }
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Some(Ok(Consistency::Local)),
            Reset::ConfigurationParameter(name) if is_ours(name) => Some(Ok(Consistency::Local)),
            Reset::ConfigurationParameter(_) => None,
        },
        _ => None,
    }
}
