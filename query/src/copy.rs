//! `COPY table [(columns)] FROM STDIN` in PostgreSQL's text and CSV formats (surface.md), parsed
//! straight into events: no generic casts, the same exact conversions as INSERT (`row.rs`).
//! The whole COPY is one atomic batch, so this module sees all of its data at once; it must
//! never append anything itself, and never accept more than `MAX_COPY_BYTES`.
//!
//! CSV is parsed here rather than by a CSV crate because PostgreSQL's NULL rule needs to know
//! whether a field was quoted (`""` is an empty string, an unquoted empty field is NULL).

use std::borrow::Cow;

use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use tally_engine::{Event, MAX_BATCH_EVENTS};

use crate::row::{self, Cell};
use crate::QueryError;

/// The most COPY data one statement may carry (surface.md: at least 256 MiB per batch).
pub const MAX_COPY_BYTES: usize = 256 << 20;

/// A parsed `COPY … FROM STDIN`: where the rows go and how they are written.
#[derive(Debug, Clone)]
pub struct CopyIn {
    table: &'static str,
    /// For each writable column (contract order), its position in a data row, if supplied.
    positions: Vec<Option<usize>>,
    /// Number of fields every data row has.
    width: usize,
    format: Format,
}

/// A COPY's format and its options (shared with `copy_out.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Format {
    pub(crate) csv: bool,
    pub(crate) header: bool,
    pub(crate) delimiter: u8,
    pub(crate) null: String,
    pub(crate) quote: u8,
    pub(crate) escape: u8,
}

impl CopyIn {
    /// Reads a COPY statement. `None` when `statement` is not a COPY; errors for COPY forms
    /// the ledger does not take (TO, from a file or program, BINARY, read-only tables).
    pub fn from_statement(statement: &Statement) -> Option<Result<CopyIn, QueryError>> {
        let Statement::Copy { source, to, target, options, legacy_options, .. } = statement else {
            return None;
        };
        if *to && matches!(target, CopyTarget::Stdout) {
            return None; // `copy_out.rs`
        }
        Some(Self::build(source, *to, target, options, legacy_options))
    }

    fn build(
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<CopyIn, QueryError> {
        if to {
            return Err(QueryError::NotAllowed(
                "COPY … TO a file or program would write the server's files; use TO STDOUT".into(),
            ));
        }
        if !matches!(target, CopyTarget::Stdin) {
            return Err(QueryError::NotAllowed(
                "COPY … FROM a file or program would read the server's files; use FROM STDIN"
                    .into(),
            ));
        }
        let CopySource::Table { table_name, columns } = source else {
            return Err(QueryError::Unsupported("COPY (query) FROM".into()));
        };
        let name = table_name.to_string().to_ascii_lowercase();
        let name = name.rsplit('.').next().unwrap_or(&name).trim_matches('"').to_owned();
        let Some((table, writable)) = row::writable(&name) else {
            return Err(if crate::tables::is_table(&name) {
                QueryError::AppendOnly(format!("COPY into the read-only table {name}"))
            } else {
                QueryError::DataFusion(datafusion::error::DataFusionError::Plan(format!(
                    "table '{name}' not found"
                )))
            });
        };
        let (positions, width) = if columns.is_empty() {
            ((0..writable.len()).map(Some).collect(), writable.len())
        } else {
            let names: Vec<String> = columns.iter().map(|c| c.value.to_ascii_lowercase()).collect();
            for (i, n) in names.iter().enumerate() {
                if !writable.contains(&n.as_str()) {
                    return Err(QueryError::Unsupported(format!(
                        "column {n} of {table} cannot be written (writable: {})",
                        writable.join(", ")
                    )));
                }
                if names[..i].contains(n) {
                    return Err(QueryError::Unsupported(format!("column {n} is listed twice")));
                }
            }
            let positions = writable.iter().map(|w| names.iter().position(|n| n == w)).collect();
            (positions, names.len())
        };
        Ok(CopyIn { table, positions, width, format: Format::from_options(options, legacy)? })
    }

    /// The table the rows go to.
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// Number of columns each data row carries (for the wire protocol's CopyInResponse).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the data is CSV (else PostgreSQL's text format).
    pub fn is_csv(&self) -> bool {
        self.format.csv
    }

    /// Parses all of a COPY's data into events, refusing the whole COPY at its first bad row.
    pub fn events(&self, data: &[u8]) -> Result<Vec<Event>, QueryError> {
        if data.len() > MAX_COPY_BYTES {
            return Err(QueryError::TooLarge(format!(
                "this COPY carries more than {} MiB",
                MAX_COPY_BYTES >> 20
            )));
        }
        let text = std::str::from_utf8(data).map_err(|e| QueryError::BadCopyData {
            line: 1 + data[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count(),
            message: "not valid UTF-8".into(),
        })?;
        // One row per line, nearly always: sizing the vector once avoids regrowing (and
        // re-faulting) hundreds of megabytes for a large COPY.
        let mut events = Vec::with_capacity(data.iter().filter(|b| **b == b'\n').count() + 1);
        let mut first = self.format.header;
        let mut fields: Vec<Option<Cow<str>>> = Vec::with_capacity(self.width);
        let mut reader = Reader { text, at: 0, line: 0 };
        while let Some(line) = reader.next_row(&self.format, &mut fields)? {
            if std::mem::take(&mut first) {
                continue;
            }
            if fields.len() != self.width {
                return Err(QueryError::BadCopyData {
                    line,
                    message: format!("expected {} fields, found {}", self.width, fields.len()),
                });
            }
            if events.len() == MAX_BATCH_EVENTS {
                return Err(QueryError::TooLarge(format!(
                    "this COPY holds more than {MAX_BATCH_EVENTS} rows"
                )));
            }
            let mut cells = [Cell::Null; row::MAX_WRITABLE];
            for (cell, p) in cells.iter_mut().zip(&self.positions) {
                if let Some(Some(v)) = p.map(|p| &fields[p]) {
                    *cell = Cell::Text(v);
                }
            }
            let index = events.len();
            let event = row::to_event(self.table, &cells[..self.positions.len()], index)
                .map_err(|e| e.refusal(self.table, index + 1))?;
            events.push(event);
        }
        Ok(events)
    }
}

impl Format {
    pub(crate) fn from_options(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Format, QueryError> {
        let mut csv = false;
        let (mut header, mut delimiter, mut null, mut quote, mut escape) =
            (false, None, None, None, None);
        let single_byte = |what: &str, c: char| {
            u8::try_from(c).ok().filter(|b| b.is_ascii() && *b != b'\n' && *b != b'\r').ok_or_else(
                || QueryError::Unsupported(format!("COPY {what} must be one ASCII character")),
            )
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "csv" => csv = true,
                    "text" => csv = false,
                    other => {
                        return Err(QueryError::Unsupported(format!(
                            "COPY format {other} (text and csv are supported)"
                        )))
                    }
                },
                CopyOption::Header(h) => header = *h,
                CopyOption::Delimiter(c) => delimiter = Some(single_byte("DELIMITER", *c)?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Quote(c) => quote = Some(single_byte("QUOTE", *c)?),
                CopyOption::Escape(c) => escape = Some(single_byte("ESCAPE", *c)?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                CopyOption::Freeze(_) => {}
                other => return Err(QueryError::Unsupported(format!("COPY option {other}"))),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(csv_options) => {
                    csv = true;
                    for c in csv_options {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => {
                                quote = Some(single_byte("QUOTE", *q)?)
                            }
                            CopyLegacyCsvOption::Escape(e) => {
                                escape = Some(single_byte("ESCAPE", *e)?)
                            }
                            other => {
                                return Err(QueryError::Unsupported(format!("COPY option {other}")))
                            }
                        }
                    }
                }
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(single_byte("DELIMITER", *c)?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Binary => {
                    return Err(QueryError::Unsupported(
                        "COPY BINARY (text and csv are supported)".into(),
                    ))
                }
                other => return Err(QueryError::Unsupported(format!("COPY option {other}"))),
            }
        }
        if !csv && (quote.is_some() || escape.is_some()) {
            return Err(QueryError::Unsupported("QUOTE and ESCAPE are CSV options".into()));
        }
        let quote = quote.unwrap_or(b'"');
        Ok(Format {
            csv,
            header,
            delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
            quote,
            escape: escape.unwrap_or(quote),
        })
    }
}

/// Walks COPY data row by row.
struct Reader<'a> {
    text: &'a str,
    at: usize,
    /// 1-based number of the last line started.
    line: usize,
}

impl<'a> Reader<'a> {
    /// Reads the next row into `fields`; returns its first line number, or `None` at the end
    /// (end of data or the `\.` end marker).
    fn next_row(
        &mut self,
        f: &Format,
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Result<Option<usize>, QueryError> {
        fields.clear();
        if self.at >= self.text.len() {
            return Ok(None);
        }
        self.line += 1;
        let line = self.line;
        let rest = &self.text[self.at..];
        if rest.starts_with("\\.\n") || rest.starts_with("\\.\r\n") || rest == "\\." {
            self.at = self.text.len();
            return Ok(None);
        }
        if f.csv {
            self.csv_row(f, fields)?;
        } else {
            self.text_row(f, fields)?;
        }
        Ok(Some(line))
    }

    fn end_of_line(&mut self, end: usize) -> usize {
        // Returns the row's content end, and moves past its line terminator.
        let bytes = self.text.as_bytes();
        let content_end = if end > self.at && bytes[end - 1] == b'\r' { end - 1 } else { end };
        self.at = (end + 1).min(self.text.len());
        content_end
    }

    fn text_row(
        &mut self,
        f: &Format,
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Result<(), QueryError> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let end = memchr_newline(bytes, start);
        let content_end = self.end_of_line(end);
        let row = &self.text[start..content_end];
        for field in row.split(f.delimiter as char) {
            if field == f.null {
                fields.push(None);
            } else if field.contains('\\') {
                fields
                    .push(Some(Cow::Owned(unescape_text(field).map_err(|message| {
                        QueryError::BadCopyData { line: self.line, message }
                    })?)));
            } else {
                fields.push(Some(Cow::Borrowed(field)));
            }
        }
        Ok(())
    }

    fn csv_row(
        &mut self,
        f: &Format,
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Result<(), QueryError> {
        let bytes = self.text.as_bytes();
        let mut i = self.at;
        loop {
            // One field starting at `i`.
            if i < bytes.len() && bytes[i] == f.quote {
                // Owned only once an escape is met: most quoted fields are borrowed whole.
                let mut unescaped: Option<String> = None;
                let mut run = i + 1;
                let mut j = i + 1;
                let value = loop {
                    if j >= bytes.len() {
                        return Err(QueryError::BadCopyData {
                            line: self.line,
                            message: "unterminated CSV quoted field".into(),
                        });
                    }
                    let b = bytes[j];
                    if b == f.escape
                        && f.escape != f.quote
                        && j + 1 < bytes.len()
                        && (bytes[j + 1] == f.quote || bytes[j + 1] == f.escape)
                    {
                        unescaped.get_or_insert_with(String::new).push_str(&self.text[run..j]);
                        run = j + 1;
                        j += 2;
                    } else if b == f.quote {
                        if f.escape == f.quote && j + 1 < bytes.len() && bytes[j + 1] == f.quote {
                            unescaped.get_or_insert_with(String::new).push_str(&self.text[run..=j]);
                            j += 2;
                            run = j;
                        } else {
                            let last = &self.text[run..j];
                            j += 1;
                            break match unescaped {
                                None => Cow::Borrowed(last),
                                Some(mut value) => {
                                    value.push_str(last);
                                    Cow::Owned(value)
                                }
                            };
                        }
                    } else {
                        if b == b'\n' {
                            self.line += 1;
                        }
                        j += 1;
                    }
                };
                // A quoted field is never NULL.
                fields.push(Some(value));
                i = j;
                if i >= bytes.len()
                    || bytes[i] == b'\n'
                    || (bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n'))
                {
                    self.at = if i < bytes.len() && bytes[i] == b'\r' { i + 2 } else { i + 1 };
                    return Ok(());
                }
                if bytes[i] != f.delimiter {
                    return Err(QueryError::BadCopyData {
                        line: self.line,
                        message: "extra data after a closing CSV quote".into(),
                    });
                }
                i += 1;
            } else {
                let mut j = i;
                while j < bytes.len() && bytes[j] != f.delimiter && bytes[j] != b'\n' {
                    j += 1;
                }
                let mut value_end = j;
                let at_line_end = j >= bytes.len() || bytes[j] == b'\n';
                if at_line_end && value_end > i && bytes[value_end - 1] == b'\r' {
                    value_end -= 1;
                }
                let value = &self.text[i..value_end];
                if value.as_bytes().contains(&f.quote) {
                    return Err(QueryError::BadCopyData {
                        line: self.line,
                        message: "a CSV quote inside an unquoted field".into(),
                    });
                }
                fields.push(if value == f.null { None } else { Some(Cow::Borrowed(value)) });
                if at_line_end {
                    self.at = j + 1;
                    return Ok(());
                }
                i = j + 1;
            }
        }
    }
}

fn memchr_newline(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |p| from + p)
}

/// PostgreSQL text-format backslash escapes.
fn unescape_text(field: &str) -> Result<String, String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{b}'),
            Some('x') => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && chars.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    v = v * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0);
                    n += 1;
                }
                if n == 0 {
                    out.push('x');
                } else {
                    out.push(byte_char(v)?);
                }
            }
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                let mut n = 1;
                while n < 3 && chars.peek().is_some_and(|c| ('0'..='7').contains(c)) {
                    v = v * 8 + chars.next().and_then(|c| c.to_digit(8)).unwrap_or(0);
                    n += 1;
                }
                out.push(byte_char(v)?);
            }
            Some(other) => out.push(other),
            None => return Err("a backslash at the end of a field".into()),
        }
    }
    Ok(out)
}

fn byte_char(v: u32) -> Result<char, String> {
    // Escapes name bytes; only ASCII bytes make a valid character on their own.
    if v < 0x80 && v != 0 {
        Ok(char::from(v as u8))
    } else {
        Err(format!("escape for byte {v:#x} does not make valid UTF-8 text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use proptest::prelude::*;

    fn copy(sql: &str) -> CopyIn {
        let s = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        CopyIn::from_statement(&s).unwrap().unwrap()
    }

    fn rows(c: &CopyIn, data: &str) -> Vec<Vec<Option<String>>> {
        let mut out = Vec::new();
        let mut reader = Reader { text: data, at: 0, line: 0 };
        let mut fields = Vec::new();
        while reader.next_row(&c.format, &mut fields).unwrap().is_some() {
            out.push(fields.iter().map(|f| f.as_ref().map(|s| s.to_string())).collect());
        }
        out
    }

    #[test]
    fn text_format_escapes_and_nulls() {
        let c = copy("COPY datanets FROM STDIN");
        let got = rows(&c, "a\\tb\t\\N\nc\\\\d\tx\\101\r\n\\.\nignored\n");
        assert_eq!(
            got,
            vec![vec![Some("a\tb".into()), None], vec![Some("c\\d".into()), Some("xA".into())]]
        );
    }

    #[test]
    fn csv_quotes_nulls_and_multiline_fields() {
        let c = copy("COPY datanets FROM STDIN WITH (FORMAT csv, HEADER)");
        let got = rows(&c, "datanet,owner\n\"a,\"\"b\"\"\",\n\"\",\"x\ny\"\r\nz,w");
        assert_eq!(
            got,
            vec![
                vec![Some("datanet".into()), Some("owner".into())],
                vec![Some("a,\"b\"".into()), None],
                vec![Some("".into()), Some("x\ny".into())],
                vec![Some("z".into()), Some("w".into())],
            ]
        );
        // An escape other than the quote: escaped quotes and escapes, and an escape before
        // anything else kept as it is; a field with none is borrowed, one with some is built.
        let escaped = copy("COPY datanets FROM STDIN WITH (FORMAT csv, ESCAPE '\\')");
        let got = rows(&escaped, "\"a\\\"b\\\\c\\d\",\"plain\"\n");
        assert_eq!(got, vec![vec![Some("a\"b\\c\\d".into()), Some("plain".into())]]);
        let legacy = copy("COPY datanets (owner, datanet) FROM STDIN CSV HEADER");
        assert!(legacy.format.csv && legacy.format.header);
        assert_eq!(legacy.positions, vec![Some(1), Some(0)]);
    }

    #[test]
    fn bad_rows_name_their_row_and_field() {
        let c = copy("COPY inferences FROM STDIN WITH (FORMAT csv)");
        let e = c.events(b"i1,m,c,10,a:1\ni2,m,c,1001.9,a:1\n").unwrap_err();
        match e {
            QueryError::Refused { row, field, sqlstate, .. } => {
                assert_eq!((row, field.as_str(), sqlstate), (2, "fee", "22023"))
            }
            other => panic!("{other:?}"),
        }
        let e = c.events(b"i1,m,c,10\n").unwrap_err();
        assert!(matches!(e, QueryError::BadCopyData { line: 1, .. }), "{e:?}");
        let e = c.events(b"i1,m,,10,a:1\n").unwrap_err();
        assert_eq!(e.sqlstate(), "23502");
    }

    /// A COPY statement with any table and options, within what the grammar takes.
    fn copy_statement() -> impl Strategy<Value = String> {
        let table = prop::sample::select(row::WRITABLE.iter().map(|(t, _)| *t).collect::<Vec<_>>());
        let char_option = prop::sample::select(vec![",", "|", ";", "\"", ":", "x"]);
        let null = prop::sample::select(vec!["", "\\N", "NULL", ","]);
        (table, any::<bool>(), any::<bool>(), char_option.clone(), char_option.clone(), char_option, null)
            .prop_map(|(t, csv, header, d, q, e, n)| {
                let q = if q == "'" { "''" } else { q };
                if csv {
                    format!("COPY {t} FROM STDIN WITH (FORMAT csv, HEADER {header}, DELIMITER '{d}', QUOTE '{q}', ESCAPE '{e}', NULL '{n}')")
                } else {
                    format!("COPY {t} FROM STDIN WITH (FORMAT text, DELIMITER '{d}', NULL '{n}')")
                }
            })
    }

    /// COPY data built from the pieces that matter to the parsers, and random text.
    fn copy_data() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            8 => prop::sample::select(vec![
                "dn-1", "c1:0.5", "a:b:1e3", "0", "1001.9", "-1", "\t", ",", "\t", "|", ";", "\"",
                "\"\"", "\\", "\\N", "\\.", "\\x4", "\\101", "\n", "\r\n", "\r", "é", "\u{0}",
                "NULL", "", "m-base", "1e309", ":",
            ]).prop_map(|p| p.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|ps| ps.concat())
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz_config(2000))]
        #[test]
        fn fuzz_copy_parser(statement in copy_statement(), data in copy_data()) {
            let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &statement).unwrap().remove(0);
            if let Some(Ok(copy)) = CopyIn::from_statement(&parsed) {
                if let Ok(events) = copy.events(&data) {
                    let lines = data.iter().filter(|b| **b == b'\n').count() + 1;
                    proptest::prop_assert!(events.len() <= lines);
                }
            }
        }
    }

    #[test]
    fn refused_forms() {
        let parse = |sql: &str| {
            let s = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
            CopyIn::from_statement(&s).unwrap().unwrap_err().sqlstate()
        };
        assert_eq!(parse("COPY datanets FROM '/etc/passwd'"), "42501");
        assert_eq!(parse("COPY balances FROM STDIN"), "25006");
        assert_eq!(parse("COPY datanets TO '/tmp/x'"), "42501");
    }
}
