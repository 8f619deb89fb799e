//! The crate's one error type, and the line between the two kinds of failure that matter to a
//! producer: a **refusal** (the server looked at the batch or the request and said no: bad
//! data, a reader's write, an unknown table; resending the same bytes can only be refused
//! again) and a **transport** failure (the connection, the server's availability or a timeout;
//! resending with the same producer and seqs is safe and may succeed). Everything else is a
//! mistake of the caller's, found before anything is sent.

use std::path::PathBuf;

use tonic::Code;

/// A refusal, as the server worded it, with what could be read out of its message: the batch
/// seq, the 1-based row within that batch, the field and the SQLSTATE (the server's message
/// says `… batch 3 … row 17 … field fee … SQLSTATE 22023`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
    pub sqlstate: Option<String>,
    pub seq: Option<u64>,
    pub row: Option<u64>,
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (retryable).
    #[error(
        "cannot reach the Tally ingest endpoint at {addr}: {message}; check that `tally serve` \
         runs there and listens for ingest (default {default})",
        default = crate::DEFAULT_ADDR
    )]
    Unreachable { addr: String, message: String },
    /// The connection or the server failed mid-call (retryable: resend what is unacknowledged
    /// with the same producer and seqs).
    #[error(
        "the ingest connection failed ({code:?}): {message}; batches without an acknowledgement \
         may or may not be appended: resend them with the same producer and seq numbers"
    )]
    Transport { code: Code, message: String },
    /// The server refused the call or a batch (not retryable). Nothing of the refused batch was
    /// appended; batches acknowledged before it were.
    #[error("refused by the server: {}", .0.message)]
    Refused(Refusal),
    /// The server did not accept the credentials (not retryable).
    #[error(
        "authentication failed: {message}; check the user name and the password \
         (TALLY_PASSWORD), or run without a password against a server in development mode"
    )]
    Auth { message: String },
    #[error("bad server address {addr:?}: {message}; give host:port or http(s)://host:port")]
    Address { addr: String, message: String },
    #[error("cannot read the TLS CA certificate {}: {source}; give a PEM file", path.display())]
    TlsCa { path: PathBuf, source: std::io::Error },
    #[error(
        "invalid producer id {0:?}: use 1 to {max} characters from [A-Za-z0-9._:@/-]",
        max = crate::MAX_PRODUCER_BYTES
    )]
    Producer(String),
    #[error("{0:?} does not take writes; the tables that do: {tables}", tables = crate::WRITE_TABLES.join(", "))]
    Table(String),
    #[error("batch seq {seq} after {last}: seq numbers must be at least 1 and strictly increase per producer")]
    Sequence { seq: u64, last: u64 },
    #[error("batch {seq} does not have the stream's schema: open another stream (put) for it")]
    Schema { seq: u64 },
    #[error("cannot encode batch {seq} as Arrow IPC: {source}")]
    Encode { seq: u64, source: arrow_schema::ArrowError },
    #[error("unexpected answer from the server: {0}; is this a Tally ingest endpoint of the same version?")]
    Protocol(String),
}

impl ClientError {
    /// True when resending the unacknowledged batches (same producer, same seqs) on a new
    /// connection may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. } | ClientError::Transport { .. })
    }

    /// The refusal, when the server refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            ClientError::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// Classifies a gRPC status. Codes a server sends about the request itself are refusals;
    /// codes of connections, overload, deadlines and server crashes are transport failures
    /// (retrying them with the same seqs is always safe).
    pub fn from_status(status: tonic::Status) -> ClientError {
        let mut message = status.message().to_string();
        // A status made on this side from a transport error says little ("transport error");
        // its sources say what happened.
        let mut source = std::error::Error::source(&status);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        match status.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::NotFound
            | Code::Unimplemented => ClientError::Refused(Refusal::parse(status.code(), message)),
            Code::Unauthenticated => ClientError::Auth { message },
            code => ClientError::Transport { code, message },
        }
    }
}

impl Refusal {
    /// Reads the seq, row, field and SQLSTATE out of a refusal's message, where present.
    pub fn parse(code: Code, message: String) -> Refusal {
        let seq = number_after(&message, "seq").or_else(|| number_after(&message, "batch"));
        Refusal {
            code,
            sqlstate: sqlstate_in(&message),
            seq,
            row: number_after(&message, "row"),
            field: word_after(&message, "field"),
            message,
        }
    }
}

/// Separators allowed between a keyword and its value: `row 3`, `row=3`, `row: 3`, `seq #3`.
const SEPARATORS: &[char] = &[' ', '=', ':', '#', '"', '`', '\''];
/// Most separator characters skipped after a keyword.
const MAX_SEPARATORS: usize = 3;

/// Byte offsets just past each whole-word occurrence of `keyword` (case-insensitive), with
/// up to `MAX_SEPARATORS` separators skipped.
fn values_after<'a>(text: &'a str, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let lower = text.to_ascii_lowercase();
    let starts: Vec<usize> = lower.match_indices(keyword).map(|(i, _)| i).collect();
    starts.into_iter().filter_map(move |i| {
        let before_ok = text[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let rest = &text[i + keyword.len()..];
        let value = rest.trim_start_matches(SEPARATORS);
        let skipped = rest.len() - value.len();
        (before_ok && (1..=MAX_SEPARATORS).contains(&skipped)).then_some(value)
    })
}

fn number_after(text: &str, keyword: &str) -> Option<u64> {
    values_after(text, keyword).find_map(|v| {
        let digits: &str = &v[..v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len())];
        digits.parse().ok()
    })
}

fn word_after(text: &str, keyword: &str) -> Option<String> {
    values_after(text, keyword).find_map(|v| {
        let end = v.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(v.len());
        (end > 0).then(|| v[..end].to_string())
    })
}

/// The five characters after `SQLSTATE `, when they look like one.
fn sqlstate_in(text: &str) -> Option<String> {
    values_after(text, "sqlstate").find_map(|v| {
        let code: String = v.chars().take(5).collect();
        (code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric())).then_some(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_batch_row_field_and_sqlstate() {
        let r = Refusal::parse(
            Code::InvalidArgument,
            "batch seq 3, row 17: field fee = \"1001.9\": not a whole number (SQLSTATE 22023)"
                .into(),
        );
        assert_eq!(r.seq, Some(3));
        assert_eq!(r.row, Some(17));
        assert_eq!(r.field.as_deref(), Some("fee"));
        assert_eq!(r.sqlstate.as_deref(), Some("22023"));
    }

    #[test]
    fn other_wordings_and_missing_parts() {
        let r = Refusal::parse(
            Code::InvalidArgument,
            "batch 12: row 4 of the inferences write: field model = \"m\": unknown (SQLSTATE 23503)"
                .into(),
        );
        assert_eq!((r.seq, r.row, r.field.as_deref()), (Some(12), Some(4), Some("model")));
        assert_eq!(r.sqlstate.as_deref(), Some("23503"));
        let r = Refusal::parse(Code::PermissionDenied, "not allowed for a reader: 42501".into());
        assert_eq!((r.seq, r.row, r.field, r.sqlstate), (None, None, None, None));
        // "rows" and "arrow" are not "row"; "sqlstate" needs five characters.
        let r = Refusal::parse(Code::InvalidArgument, "2 rows; arrow 9; SQLSTATE 22".into());
        assert_eq!((r.row, r.sqlstate), (None, None));
    }

    #[test]
    fn statuses_split_into_refusals_and_transport_failures() {
        for code in [Code::InvalidArgument, Code::FailedPrecondition, Code::PermissionDenied] {
            let e =
                ClientError::from_status(tonic::Status::new(code, "batch 1 row 1 SQLSTATE 22023"));
            assert!(!e.is_retryable() && e.refusal().is_some(), "{code:?}");
            assert_eq!(e.refusal().unwrap().sqlstate.as_deref(), Some("22023"));
        }
        for code in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Unknown,
            Code::Internal,
        ] {
            assert!(
                ClientError::from_status(tonic::Status::new(code, "x")).is_retryable(),
                "{code:?}"
            );
        }
        let e = ClientError::from_status(tonic::Status::unauthenticated("bad token"));
        assert!(matches!(e, ClientError::Auth { .. }) && !e.is_retryable());
    }
}
