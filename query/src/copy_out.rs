//! `COPY table [(columns)] TO STDOUT` and `COPY (query) TO STDOUT`, in PostgreSQL's text and
//! CSV formats with its options (HEADER, DELIMITER, NULL, QUOTE, ESCAPE): how users move
//! ledger data out. The COPY is run as the query it stands for (same snapshot, limits and
//! read consistency as a SELECT), and its record batches are encoded here, one chunk of
//! lines per batch, as they stream: a COPY of the whole log costs one batch of memory.
//!
//! Never: write to a file or program (refused in `copy.rs`), or buffer the whole result.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget, Statement};

use crate::copy::Format;
use crate::{QueryError, Rows};

/// How timestamps are written (PostgreSQL's text output: a space, not a `T`).
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// A `COPY … TO STDOUT` whose query is planned and ready to stream.
pub struct CopyOut {
    /// The rows, in the order the query gives them.
    pub frame: Rows,
    /// Encodes the frame's batches into COPY data.
    pub encoder: CopyEncoder,
}

/// The query a `COPY … TO STDOUT` stands for and its format; `None` when `statement` is not
/// one (`copy.rs` answers every other COPY).
pub(crate) fn query_of(statement: &Statement) -> Option<Result<(Statement, Format), QueryError>> {
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::Stdout,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    let format = match Format::from_options(options, legacy_options) {
        Ok(f) => f,
        Err(e) => return Some(Err(e)),
    };
    let query = match source {
        CopySource::Query(q) => Statement::Query(q.clone()),
        CopySource::Table { table_name, columns } => {
            let list = if columns.is_empty() {
                "*".to_owned()
            } else {
                columns.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            let text = format!("SELECT {list} FROM {table_name}");
            match crate::Sql::parse(&text) {
                Ok(mut p) if p.statements.len() == 1 => p.statements.remove(0),
                Ok(_) => return Some(Err(QueryError::Internal(format!("COPY as {text}")))),
                Err(e) => return Some(Err(e)),
            }
        }
    };
    Some(Ok((query, format)))
}

impl CopyOut {
    pub(crate) fn new(query: &Statement, frame: Rows, format: Format) -> CopyOut {
        let schema = crate::result_schema(query, &frame.schema());
        CopyOut { frame, encoder: CopyEncoder { format, schema } }
    }
}

/// Turns a COPY's record batches into its lines.
pub struct CopyEncoder {
    format: Format,
    /// The columns as the client names them (for HEADER).
    schema: SchemaRef,
}

impl CopyEncoder {
    /// Columns per line (for the wire protocol's CopyOutResponse).
    pub fn columns(&self) -> usize {
        self.schema.fields().len()
    }

    /// The header line (with HEADER): the columns' names.
    pub fn header(&self) -> Option<Vec<u8>> {
        if !self.format.header {
            return None;
        }
        let mut out = Vec::new();
        for (i, field) in self.schema.fields().iter().enumerate() {
            if i > 0 {
                out.push(self.format.delimiter);
            }
            self.value(field.name(), &mut out);
        }
        out.push(b'\n');
        Some(out)
    }

    /// The lines of `batch`, one per row, in one buffer: the end of each line is in `ends`.
    pub fn encode(
        &self,
        batch: &RecordBatch,
        ends: &mut Vec<usize>,
    ) -> Result<Vec<u8>, QueryError> {
        ends.clear();
        let mut out = Vec::with_capacity(batch.get_array_memory_size().min(16 << 20));
        let options = FormatOptions::default().with_timestamp_format(Some(TIMESTAMP_FORMAT));
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            for (i, column) in batch.columns().iter().enumerate() {
                if i > 0 {
                    out.push(self.format.delimiter);
                }
                if column.is_null(row) {
                    out.extend_from_slice(self.format.null.as_bytes());
                    continue;
                }
                text.clear();
                if column.data_type() == &DataType::Boolean {
                    text.push(if column.as_boolean().value(row) { 't' } else { 'f' });
                } else {
                    use std::fmt::Write;
                    write!(text, "{}", formatters[i].value(row))
                        .map_err(|e| QueryError::Internal(format!("COPY TO: {e}")))?;
                }
                self.value(&text, &mut out);
            }
            out.push(b'\n');
            ends.push(out.len());
        }
        Ok(out)
    }

    /// One value that is not NULL, escaped (text) or quoted where needed (CSV).
    fn value(&self, text: &str, out: &mut Vec<u8>) {
        if self.format.csv {
            csv_value(&self.format, text, out);
        } else {
            text_value(self.format.delimiter, text, out);
        }
    }
}

/// PostgreSQL's text format: backslash escapes for the backslash, the delimiter and the
/// control characters that would break a line.
fn text_value(delimiter: u8, text: &str, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0b => out.extend_from_slice(b"\\v"),
            b if b == delimiter => out.extend_from_slice(&[b'\\', b]),
            b => out.push(b),
        }
    }
}

/// CSV as PostgreSQL writes it: a value is quoted when it holds the delimiter, the quote, a
/// line break, or reads as the NULL string (an empty string is `""`, NULL is empty); inside
/// quotes, the quote and the escape character are escaped.
fn csv_value(format: &Format, text: &str, out: &mut Vec<u8>) {
    let needs_quotes = text == format.null
        || text == "\\."
        || text
            .bytes()
            .any(|b| b == format.delimiter || b == format.quote || b == b'\n' || b == b'\r');
    if !needs_quotes {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(format.quote);
    for &b in text.as_bytes() {
        if b == format.quote || b == format.escape {
            out.push(format.escape);
        }
        out.push(b);
    }
    out.push(format.quote);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn encoder(options: &str) -> CopyEncoder {
        let sql = format!("COPY datanets TO STDOUT {options}");
        let statement = crate::Sql::parse(&sql).unwrap().statements.remove(0);
        let (_, format) = query_of(&statement).unwrap().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        CopyEncoder { format, schema }
    }

    fn batch() -> RecordBatch {
        let names = StringArray::from(vec![Some("a\tb\\c"), Some(""), None, Some("x,\"y\"\nz")]);
        let n = Int64Array::from(vec![Some(1), None, Some(-3), Some(4)]);
        let ok = BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]);
        let schema = encoder("").schema;
        RecordBatch::try_new(schema, vec![Arc::new(names), Arc::new(n), Arc::new(ok)]).unwrap()
    }

    /// The lines of `batch()` as `encoder` writes them, each one checked to end a line.
    fn lines(encoder: &CopyEncoder) -> String {
        let mut ends = Vec::new();
        let out = encoder.encode(&batch(), &mut ends).unwrap();
        assert_eq!(ends.len(), 4);
        assert!(ends.iter().all(|e| out[e - 1] == b'\n') && *ends.last().unwrap() == out.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_format_escapes_as_postgresql_does() {
        let expected = "a\\tb\\\\c\t1\tt\n\t\\N\tf\n\\N\t-3\t\\N\nx,\"y\"\\nz\t4\tt\n";
        assert_eq!(lines(&encoder("")), expected);
        assert_eq!(encoder("").header(), None);
    }

    #[test]
    fn csv_quotes_what_needs_it_and_tells_empty_from_null() {
        let e = encoder("WITH (FORMAT csv, HEADER)");
        let expected = "a\tb\\c,1,t\n\"\",,f\n,-3,\n\"x,\"\"y\"\"\nz\",4,t\n";
        assert_eq!(lines(&e), expected);
        assert_eq!(e.header().unwrap(), b"name,n,ok\n");
        let other = encoder("(FORMAT csv, HEADER true, DELIMITER ';')");
        assert_eq!(other.header().unwrap(), b"name;n;ok\n");
    }

    #[test]
    fn copy_to_stdout_stands_for_a_query_and_other_copies_are_not_it() {
        let parse = |s: &str| crate::Sql::parse(s).unwrap().statements.remove(0);
        let (q, _) =
            query_of(&parse("COPY balances (account, earned) TO STDOUT")).unwrap().unwrap();
        assert_eq!(q.to_string(), "SELECT account, earned FROM balances");
        let (q, _) = query_of(&parse("COPY (SELECT 1) TO STDOUT")).unwrap().unwrap();
        assert_eq!(q.to_string(), "SELECT 1");
        assert!(query_of(&parse("COPY datanets FROM STDIN")).is_none());
        assert!(query_of(&parse("COPY datanets TO '/etc/passwd'")).is_none());
        assert!(query_of(&parse("COPY datanets TO STDOUT (FORMAT binary)")).unwrap().is_err());
    }
}
