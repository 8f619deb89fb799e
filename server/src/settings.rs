//! A session's settings: `SET`, `RESET` and `SET TIME ZONE`, kept in the connection's metadata
//! (never in the DataFusion context, which every connection shares). Owns the parsing of
//! PostgreSQL's duration values (`statement_timeout`, `idle_session_timeout`) with PostgreSQL's
//! range, and the rule that no session may touch the server's `datafusion.*` settings, however
//! the name is quoted. SHOW is answered by datafusion-postgres's hook, which only reads.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Reset, Set, Statement, Value};
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::results::{Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;

use crate::connection::user_error;

/// Metadata key of the session's statement timeout in milliseconds (the key datafusion-postgres's
/// SHOW reads).
pub(crate) const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";
/// Metadata key of the session's idle timeout in milliseconds.
pub(crate) const IDLE_TIMEOUT_KEY: &str = "idle_session_timeout_ms";
/// PostgreSQL's largest value for a duration setting, in milliseconds (`INT_MAX`).
const MAX_DURATION_MS: u64 = i32::MAX as u64;
/// Longest value a session setting may hold (PostgreSQL truncates `application_name` to 63).
const MAX_SETTING_BYTES: usize = 1024;
/// Settings clients send that change how values are shown; kept and announced back.
const CLIENT_SETTINGS: [(&str, &str); 7] = [
    ("datestyle", "DateStyle"),
    ("intervalstyle", "IntervalStyle"),
    ("bytea_output", "bytea_output"),
    ("application_name", "application_name"),
    ("extra_float_digits", "extra_float_digits"),
    ("search_path", "search_path"),
    ("timezone", "TimeZone"),
];

/// The settings the SQL session keeps (`tally_query`: it has checked their values by the time
/// they get here), with what SHOW answers while they are not set. Kept in the connection's
/// metadata only so that SHOW can answer them.
const SESSION_SETTINGS: [(&str, &str); 2] =
    [("tally.as_of_lsn", "now"), ("tally.read_consistency", "local")];

/// The name and value SHOW answers when it asks for one of `SESSION_SETTINGS`.
pub(crate) fn show_session_setting<C: ClientInfo>(
    client: &C,
    statement: &Statement,
) -> Option<(&'static str, String)> {
    let Statement::ShowVariable { variable } = statement else { return None };
    let name: Vec<String> = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect();
    let (name, default) = SESSION_SETTINGS.iter().find(|(n, _)| *n == name.join("."))?;
    let value = client.metadata().get(*name).cloned();
    Some((name, value.unwrap_or_else(|| (*default).to_owned())))
}

/// Runs `SET …` or `RESET …` for this session.
pub(crate) async fn apply<C>(client: &mut C, statement: &Statement) -> PgWireResult<Response>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match statement {
        Statement::Set(Set::SingleAssignment { variable, values, .. }) => {
            let name = setting_name(variable)?;
            let value = match values.as_slice() {
                [v] => value_text(v),
                _ => values.iter().map(value_text).collect::<Vec<_>>().join(", "),
            };
            set(client, &name, &value).await?;
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => {
            set(client, "timezone", &value_text(value)).await?;
        }
        Statement::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_)) => {
            return Err(user_error(
                "0A000",
                "SET ROLE and SET SESSION AUTHORIZATION are not supported: a connection keeps \
                 the role of the user it authenticated as"
                    .into(),
            ));
        }
        Statement::Set(Set::ParenthesizedAssignments { variables, .. }) => {
            for v in variables {
                setting_name(v)?;
            }
        }
        Statement::Set(Set::MultipleAssignments { assignments }) => {
            for a in assignments {
                setting_name(&a.name)?;
            }
        }
        // SET NAMES, SET TRANSACTION, …: accepted; the ledger has one encoding (UTF-8) and
        // one isolation (every statement reads one snapshot).
        Statement::Set(_) => {}
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => {
                let ours = SESSION_SETTINGS.iter().map(|(name, _)| *name);
                for key in [STATEMENT_TIMEOUT_KEY, IDLE_TIMEOUT_KEY].into_iter().chain(ours) {
                    client.metadata_mut().remove(key);
                }
            }
            Reset::ConfigurationParameter(name) => {
                let name = setting_name(name)?;
                let ours = SESSION_SETTINGS.iter().find(|(n, _)| *n == name).map(|(n, _)| *n);
                if let Some(key) = duration_key(&name).or(ours) {
                    client.metadata_mut().remove(key);
                }
            }
        },
        _ => return Err(user_error("XX000", "not a SET or RESET statement".into())),
    }
    let tag = if matches!(statement, Statement::Reset(_)) { "RESET" } else { "SET" };
    Ok(Response::Execution(Tag::new(tag)))
}

/// The setting's name, lower case, unquoted; `datafusion.*` is refused (42501): those settings
/// belong to the server's shared SQL engine.
fn setting_name(name: &ObjectName) -> PgWireResult<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), |i| i.value.clone()))
        .collect();
    let joined = parts.join(".").to_ascii_lowercase();
    if joined.starts_with("datafusion") {
        return Err(user_error(
            "42501",
            format!("{name} is a server setting and cannot be changed by a session"),
        ));
    }
    Ok(joined)
}

/// A SET value as text: string literals unquoted, anything else as written.
fn value_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn duration_key(name: &str) -> Option<&'static str> {
    match name {
        "statement_timeout" => Some(STATEMENT_TIMEOUT_KEY),
        "idle_session_timeout" => Some(IDLE_TIMEOUT_KEY),
        _ => None,
    }
}

async fn set<C>(client: &mut C, name: &str, value: &str) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if let Some(key) = duration_key(name) {
        let ms = parse_duration_ms(value).map_err(|why| {
            user_error("22023", format!("invalid value for parameter \"{name}\": {why}"))
        })?;
        match ms {
            0 => client.metadata_mut().remove(key),
            ms => client.metadata_mut().insert(key.into(), ms.to_string()),
        };
        return Ok(());
    }
    if let Some((name, default)) = SESSION_SETTINGS.iter().find(|(n, _)| *n == name) {
        let value = value.to_ascii_lowercase();
        if value == "default" || value == *default {
            client.metadata_mut().remove(*name);
        } else {
            client.metadata_mut().insert((*name).into(), value);
        }
        return Ok(());
    }
    let Some((_, shown)) = CLIENT_SETTINGS.iter().find(|(n, _)| *n == name) else {
        // Other settings (client_encoding, lock_timeout, …) have no effect here; accepted, as
        // drivers send them on connect.
        return Ok(());
    };
    if value.len() > MAX_SETTING_BYTES {
        return Err(user_error(
            "22023",
            format!("a value for \"{name}\" is at most {MAX_SETTING_BYTES} bytes"),
        ));
    }
    client.metadata_mut().insert(name.into(), value.into());
    client
        .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
            (*shown).into(),
            value.into(),
        )))
        .await?;
    Ok(())
}

/// A session duration in force: `key` from the session's metadata, never more than `max`.
pub(crate) fn session_duration<C: ClientInfo + ?Sized>(
    client: &C,
    key: &str,
    max: Option<Duration>,
) -> Option<Duration> {
    let asked = client.metadata().get(key).and_then(|s| s.parse::<u64>().ok());
    let asked = asked.filter(|ms| *ms > 0).map(Duration::from_millis);
    match (asked, max) {
        (Some(a), Some(m)) => Some(a.min(m)),
        (a, m) => a.or(m),
    }
}

/// PostgreSQL's duration syntax: a number with an optional unit (`us`, `ms`, `s`, `min`, `h`,
/// `d`; milliseconds when none), within 0 ..= 2147483647 ms. Never overflows.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let per_unit_ms: f64 = match unit {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => {
            return Err(format!(
                "{text:?}: valid units are \"us\", \"ms\", \"s\", \"min\", \"h\" and \"d\""
            ))
        }
    };
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| format!("{text:?} is not a duration"))?;
    let ms = (n * per_unit_ms).round();
    if ms > MAX_DURATION_MS as f64 {
        return Err(format!("{text} is outside the valid range (0 .. {MAX_DURATION_MS} ms)"));
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_postgresql_and_never_overflow() {
        assert_eq!(parse_duration_ms("300"), Ok(300));
        assert_eq!(parse_duration_ms("5000ms"), Ok(5000));
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("1.5 min"), Ok(90_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("2147483647"), Ok(2_147_483_647));
        assert!(parse_duration_ms("99999999999999999s").unwrap_err().contains("outside"));
        assert!(parse_duration_ms(&"9".repeat(400)).is_err());
        assert!(parse_duration_ms("-1").is_err());
        assert!(parse_duration_ms("5 fortnights").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
