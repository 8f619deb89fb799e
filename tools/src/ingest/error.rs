//! `tally ingest`'s one error type, and the exit code each error means (documented in `--help`
//! and docs/ingest.md): 1 bad data (a line we cannot read, or a batch the server refused:
//! nothing of that batch was appended, batches before it were), 2 usage and file errors
//! (flags, files, headers, credentials), 3 the server could not be reached or the retries ran
//! out.

use std::process::ExitCode;

use tally_client::ClientError;

/// Exit status: every row acknowledged.
pub const EXIT_OK: u8 = 0;
/// Exit status: bad data (a line, or a server refusal).
pub const EXIT_BAD_DATA: u8 = 1;
/// Exit status: usage, file or credential errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the server could not be reached, or the retries ran out.
pub const EXIT_UNREACHABLE: u8 = 3;

/// A batch the server refused, placed back in its input.
#[derive(Debug)]
pub struct Refused {
    /// The input the batch came from (`inferences.csv`, `<stdin>`).
    pub name: String,
    /// The input line of the refused row, when the server named the row.
    pub line: Option<u64>,
    pub seq: Option<u64>,
    /// First and last input line of the refused batch.
    pub lines: Option<(u64, u64)>,
    /// The server's message (it names the row, the field and the SQLSTATE).
    pub message: String,
    /// Batches acknowledged before the refusal (they stay appended).
    pub acknowledged: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {name}: {source}")]
    Read { name: String, source: std::io::Error },
    #[error("{name}: {message}")]
    Header { name: String, message: String },
    #[error("{name}:{line}: {message}; nothing from this line's batch on was sent")]
    Line { name: String, line: u64, message: String },
    #[error("{}", describe_refusal(.0))]
    Refused(Box<Refused>),
    #[error("gave up after {} in a row without progress: {last}", super::progress::count(u64::from(*attempts), "attempt", "attempts"))]
    Exhausted { attempts: u32, last: ClientError },
    #[error(transparent)]
    Client(ClientError),
}

impl IngestError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            IngestError::Line { .. } | IngestError::Refused(_) => EXIT_BAD_DATA,
            IngestError::Usage(_) | IngestError::Read { .. } | IngestError::Header { .. } => {
                EXIT_USAGE
            }
            IngestError::Exhausted { .. } => EXIT_UNREACHABLE,
            IngestError::Client(e) => match e {
                ClientError::Refused(_) => EXIT_BAD_DATA,
                ClientError::Unreachable { .. }
                | ClientError::Transport { .. }
                | ClientError::Protocol(_) => EXIT_UNREACHABLE,
                _ => EXIT_USAGE,
            },
        })
    }
}

fn describe_refusal(r: &Refused) -> String {
    let place = match r.line {
        Some(line) => format!("{}:{line}", r.name),
        None => r.name.clone(),
    };
    let mut text = format!("{place}: refused by the server: {}", r.message);
    if let Some(seq) = r.seq {
        text.push_str(&format!("; nothing of batch {seq}"));
        if let Some((first, last)) = r.lines {
            match first == last {
                true => text.push_str(&format!(" (line {first})")),
                false => text.push_str(&format!(" (lines {first}-{last})")),
            }
        }
        text.push_str(" was appended");
    }
    if r.acknowledged > 0 {
        let batches = super::progress::count(r.acknowledged, "batch", "batches");
        text.push_str(&format!(
            "; the {batches} acknowledged before it {} appended",
            if r.acknowledged == 1 { "stays" } else { "stay" }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_line_and_what_was_appended() {
        let e = IngestError::Refused(Box::new(Refused {
            name: "inferences.csv".into(),
            line: Some(17),
            seq: Some(2),
            lines: Some((11, 20)),
            message: "batch 2, row 7: field fee: bad (SQLSTATE 22023)".into(),
            acknowledged: 1,
        }));
        assert_eq!(
            e.to_string(),
            "inferences.csv:17: refused by the server: batch 2, row 7: field fee: bad (SQLSTATE \
             22023); nothing of batch 2 (lines 11-20) was appended; the 1 batch acknowledged \
             before it stays appended"
        );
        assert_eq!(e.exit_code(), ExitCode::from(EXIT_BAD_DATA));
    }

    #[test]
    fn exit_codes() {
        let usage = IngestError::Usage("x".into());
        assert_eq!(usage.exit_code(), ExitCode::from(EXIT_USAGE));
        let gone = IngestError::Exhausted {
            attempts: 10,
            last: ClientError::Unreachable { addr: "a".into(), message: "m".into() },
        };
        assert_eq!(gone.exit_code(), ExitCode::from(EXIT_UNREACHABLE));
        let auth = IngestError::Client(ClientError::Auth { message: "no".into() });
        assert_eq!(auth.exit_code(), ExitCode::from(EXIT_USAGE));
    }
}
