//! Reading rows: CSV with a header line, or JSON lines, into typed cells with the input line
//! each row starts on (so that a refusal can be placed back in the file) and the input bytes
//! it took (for batching and progress).
//!
//! Conventions: a CSV field that is empty is NULL (as PostgreSQL's CSV COPY reads an unquoted
//! empty field); a JSON key that is absent or `null` is NULL. JSON arrays in `attributions`
//! and `datanets` become surface.md's text form, which represents every valid value (ids
//! cannot contain `,`, and an attribution splits at its last `:`), and JSON numbers keep their
//! exact text. A column the table does not take, a bigint that is not a whole number, or a
//! line that does not parse is an error naming the input and line; values are otherwise
//! passed as they are, for the server to judge.

use std::io::{BufRead, BufReader, Read};

use csv::ByteRecord;
use serde_json::{Map, Value};

use super::columns::{Format, Kind, Table};
use super::error::IngestError;

/// One value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
}

/// One row: its cells in the source's column order, where it starts and how big it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub bytes: u64,
    pub cells: Vec<Cell>,
}

type Input = Box<dyn Read + Send>;

/// Rows from one input.
pub struct Source {
    name: String,
    table: Table,
    columns: Vec<(&'static str, Kind)>,
    format: State,
}

enum State {
    Csv { reader: csv::Reader<Input>, record: ByteRecord, offset: u64 },
    Jsonl { reader: BufReader<Input>, line: u64, buf: Vec<u8> },
}

impl Source {
    /// Opens a source; a CSV header is read and checked here.
    pub fn open(
        name: &str,
        input: Input,
        format: Format,
        table: Table,
    ) -> Result<Source, IngestError> {
        let (columns, format) = match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(input);
                let columns = csv_columns(name, table, &mut reader)?;
                let offset = reader.position().byte();
                (columns, State::Csv { reader, record: ByteRecord::new(), offset })
            }
            Format::Jsonl => (
                table.columns.to_vec(),
                State::Jsonl { reader: BufReader::new(input), line: 0, buf: Vec::new() },
            ),
        };
        Ok(Source { name: name.to_string(), table, columns, format })
    }

    /// The columns every row has, in order.
    pub fn columns(&self) -> &[(&'static str, Kind)] {
        &self.columns
    }

    /// The next row, `None` at the end of the input.
    pub fn next_row(&mut self) -> Result<Option<Row>, IngestError> {
        match &mut self.format {
            State::Csv { reader, record, offset } => {
                next_csv(&self.name, &self.columns, reader, record, offset)
            }
            State::Jsonl { reader, line, buf } => {
                next_jsonl(&self.name, self.table, reader, line, buf)
            }
        }
    }
}

fn csv_columns(
    name: &str,
    table: Table,
    reader: &mut csv::Reader<Input>,
) -> Result<Vec<(&'static str, Kind)>, IngestError> {
    let header_error = |message: String| IngestError::Header { name: name.into(), message };
    let header = reader.byte_headers().map_err(|e| csv_error(name, e))?.clone();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(header_error(format!(
            "no header line: the first line must name the columns, e.g. {}",
            table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(",")
        )));
    }
    let mut columns: Vec<(&'static str, Kind)> = Vec::with_capacity(header.len());
    for raw in header.iter() {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_start_matches('\u{feff}').trim();
        let Some(column) = table.kind_of(text) else {
            return Err(header_error(format!(
                "unknown column {text:?} for table {}; its writable columns: {}",
                table.name,
                table.column_names()
            )));
        };
        if columns.contains(&column) {
            return Err(header_error(format!("column {:?} appears twice in the header", column.0)));
        }
        columns.push(column);
    }
    Ok(columns)
}

fn next_csv(
    name: &str,
    columns: &[(&'static str, Kind)],
    reader: &mut csv::Reader<Input>,
    record: &mut ByteRecord,
    offset: &mut u64,
) -> Result<Option<Row>, IngestError> {
    if !reader.read_byte_record(record).map_err(|e| csv_error(name, e))? {
        return Ok(None);
    }
    let line = record.position().map_or(0, |p| p.line());
    let end = reader.position().byte();
    let bytes = end.saturating_sub(*offset);
    *offset = end;
    let mut cells = Vec::with_capacity(columns.len());
    for (field, (column, kind)) in record.iter().zip(columns) {
        let cell = csv_cell(*kind, field).map_err(|message| IngestError::Line {
            name: name.into(),
            line,
            message: format!("column {column}: {message}"),
        })?;
        cells.push(cell);
    }
    Ok(Some(Row { line, bytes, cells }))
}

fn csv_error(name: &str, e: csv::Error) -> IngestError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => IngestError::Read { name: name.into(), source },
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => IngestError::Line {
            name: name.into(),
            line,
            message: format!("{len} fields where the header has {expected_len}"),
        },
        other => IngestError::Line { name: name.into(), line, message: format!("{other:?}") },
    }
}

fn csv_cell(kind: Kind, field: &[u8]) -> Result<Cell, String> {
    if field.is_empty() {
        return Ok(Cell::Null);
    }
    let text = std::str::from_utf8(field).map_err(|_| "the value is not UTF-8".to_string())?;
    match kind {
        Kind::BigInt => whole_number(text),
        Kind::Text | Kind::List | Kind::Attributions => Ok(Cell::Text(text.to_string())),
    }
}

fn whole_number(text: &str) -> Result<Cell, String> {
    text.parse::<i64>()
        .map(Cell::Int)
        .map_err(|_| format!("{text:?} is not a whole number (this column is bigint)"))
}

fn next_jsonl(
    name: &str,
    table: Table,
    reader: &mut BufReader<Input>,
    line: &mut u64,
    buf: &mut Vec<u8>,
) -> Result<Option<Row>, IngestError> {
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', buf)
            .map_err(|source| IngestError::Read { name: name.into(), source })?;
        if read == 0 {
            return Ok(None);
        }
        *line += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = |message: String| IngestError::Line { name: name.into(), line: *line, message };
        let value: Value = serde_json::from_slice(buf).map_err(|e| at(format!("not JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(at("expected a JSON object (one per line)".into()));
        };
        let cells = json_cells(table, &object).map_err(at)?;
        return Ok(Some(Row { line: *line, bytes: read as u64, cells }));
    }
}

/// Cells in the table's column order; absent keys are NULL.
fn json_cells(table: Table, object: &Map<String, Value>) -> Result<Vec<Cell>, String> {
    let mut cells = vec![Cell::Null; table.columns.len()];
    for (key, value) in object {
        let Some(index) = table.columns.iter().position(|(c, _)| c.eq_ignore_ascii_case(key))
        else {
            return Err(format!(
                "unknown column {key:?} for table {}; its writable columns: {}",
                table.name,
                table.column_names()
            ));
        };
        let (column, kind) = table.columns[index];
        cells[index] = json_cell(kind, value).map_err(|m| format!("column {column}: {m}"))?;
    }
    Ok(cells)
}

fn json_cell(kind: Kind, value: &Value) -> Result<Cell, String> {
    match (kind, value) {
        (_, Value::Null) => Ok(Cell::Null),
        (Kind::BigInt, Value::Number(n)) => n
            .as_i64()
            .map(Cell::Int)
            .ok_or_else(|| format!("{n} is not a whole number in bigint range")),
        (Kind::BigInt, Value::String(s)) => whole_number(s),
        (_, Value::String(s)) => Ok(Cell::Text(s.clone())),
        (Kind::Text, Value::Number(n)) => Ok(Cell::Text(n.to_string())),
        (Kind::List, Value::Array(items)) => list_text(items).map(Cell::Text),
        (Kind::Attributions, Value::Array(items)) => attributions_text(items).map(Cell::Text),
        (_, other) => Err(format!("unexpected {}", json_type(other))),
    }
}

/// `["dn-a", "dn-b"]` → `dn-a,dn-b`.
fn list_text(items: &[Value]) -> Result<String, String> {
    let ids = items
        .iter()
        .map(|item| match item {
            Value::String(id) => plain_id(id),
            other => Err(format!("a list entry is {}, not an id", json_type(other))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids.join(","))
}

/// `[{"contribution": "c1", "score": 0.9}, ["c2", 0.3]]` → `c1:0.9,c2:0.3`; scores keep the
/// exact text of their JSON numbers.
fn attributions_text(items: &[Value]) -> Result<String, String> {
    let mut text = String::new();
    for (i, item) in items.iter().enumerate() {
        let (id, score) = match item {
            Value::Object(entry) => attribution_entry(entry)?,
            Value::Array(pair) if pair.len() == 2 => (&pair[0], &pair[1]),
            other => {
                return Err(format!(
                    "attribution {} is {}; use {{\"contribution\": id, \"score\": number}}",
                    i + 1,
                    json_type(other)
                ))
            }
        };
        let (Value::String(id), Value::Number(score)) = (id, score) else {
            return Err(format!(
                "attribution {} needs a string contribution and a number score",
                i + 1
            ));
        };
        if i > 0 {
            text.push(',');
        }
        text.push_str(plain_id(id)?);
        text.push(':');
        text.push_str(&score.to_string());
    }
    Ok(text)
}

fn attribution_entry(entry: &Map<String, Value>) -> Result<(&Value, &Value), String> {
    if let Some(key) = entry.keys().find(|k| *k != "contribution" && *k != "score") {
        return Err(format!("unknown attribution key {key:?}; use contribution and score"));
    }
    match (entry.get("contribution"), entry.get("score")) {
        (Some(id), Some(score)) => Ok((id, score)),
        _ => Err("an attribution needs both contribution and score".into()),
    }
}

/// An id that can go into a comma-separated list unchanged.
fn plain_id(id: &str) -> Result<&str, String> {
    if id.contains(',') {
        return Err(format!("{id:?} contains ',', which no id may"));
    }
    Ok(id)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn source(text: &str, format: Format, table: &str) -> Result<Source, IngestError> {
        let input: Input = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        let name = match format {
            Format::Csv => format!("{table}.csv"),
            Format::Jsonl => format!("{table}.jsonl"),
        };
        Source::open(&name, input, format, Table::named(table).unwrap())
    }

    pub(crate) fn rows(s: &mut Source) -> Result<Vec<Row>, IngestError> {
        std::iter::from_fn(|| s.next_row().transpose()).collect()
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn csv_rows_follow_the_header_with_lines_and_bytes() {
        let csv = "fee,inference,model,consumer,attributions\n\
                   1000,inf-1,m,me,\"c1:0.9,c2:0.3\"\n\
                   ,inf-2,m,,\n\
                   5,\"inf\n3\",m,me,c1:1\n";
        let mut s = source(csv, Format::Csv, "inferences").unwrap();
        assert_eq!(s.columns()[0], ("fee", Kind::BigInt));
        let rows = rows(&mut s).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            Row {
                line: 2,
                bytes: 32,
                cells: vec![
                    Cell::Int(1000),
                    text("inf-1"),
                    text("m"),
                    text("me"),
                    text("c1:0.9,c2:0.3")
                ]
            }
        );
        assert_eq!(
            rows[1].cells,
            vec![Cell::Null, text("inf-2"), text("m"), Cell::Null, Cell::Null]
        );
        // A quoted newline: the row starts on line 4, the next would start on line 6.
        assert_eq!((rows[2].line, &rows[2].cells[1]), (4, &text("inf\n3")));
        assert_eq!(rows.iter().map(|r| r.bytes).sum::<u64>() as usize, csv.len() - 42);
    }

    #[test]
    fn csv_errors_name_the_file_and_line() {
        let bad_fee = "inference,fee\ninf-1,10\ninf-2,1001.9\n";
        let mut s = source(bad_fee, Format::Csv, "inferences").unwrap();
        let err = rows(&mut s).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("inferences.csv:3: column fee: \"1001.9\" is not a whole number"),
            "{err}"
        );
        let ragged = "inference,fee\ninf-1,10\ninf-2\n";
        let err = rows(&mut source(ragged, Format::Csv, "inferences").unwrap()).unwrap_err();
        assert!(
            err.to_string().starts_with("inferences.csv:3: 1 fields where the header has 2"),
            "{err}"
        );
    }

    #[test]
    fn csv_headers_must_name_writable_columns_once() {
        let unknown = source("inference,lsn\n", Format::Csv, "inferences").err().unwrap();
        assert_eq!(
            unknown.to_string(),
            "inferences.csv: unknown column \"lsn\" for table inferences; its writable columns: \
             inference, model, consumer, fee, attributions"
        );
        let twice = source("inference,INFERENCE\n", Format::Csv, "inferences").err().unwrap();
        assert!(twice.to_string().contains("appears twice"), "{twice}");
        let empty = source("", Format::Csv, "inferences").err().unwrap();
        assert!(empty.to_string().contains("no header line"), "{empty}");
        // A byte-order mark and spaces around names are tolerated.
        let s = source("\u{feff}datanet , owner\nd1,o1\n", Format::Csv, "datanets").unwrap();
        assert_eq!(s.columns().len(), 2);
    }

    #[test]
    fn jsonl_takes_nested_attributions_and_lists() {
        let jsonl = r#"{"inference":"inf-1","model":"m","consumer":"me","fee":1000,"attributions":[{"contribution":"c:1","score":0.9},{"contribution":"c2","score":3}]}

{"inference":"inf-2","model":"m","fee":"7","attributions":"c1:1e-3"}
{"inference":"inf-3","model":"m","fee":null,"attributions":[["c1",1.5e-7]]}
"#;
        let got = rows(&mut source(jsonl, Format::Jsonl, "inferences").unwrap()).unwrap();
        assert_eq!(
            got[0].cells,
            vec![text("inf-1"), text("m"), text("me"), Cell::Int(1000), text("c:1:0.9,c2:3")]
        );
        assert_eq!((got[1].line, got[1].cells[2].clone()), (3, Cell::Null));
        assert_eq!(got[1].cells[3], Cell::Int(7));
        assert_eq!(got[1].cells[4], text("c1:1e-3"));
        assert_eq!(got[2].cells[3], Cell::Null);
        assert_eq!(got[2].cells[4], text("c1:1.5e-7"));
        let models = r#"{"model":"a","owner":"o","datanets":["dn-a","dn-b"]}"#;
        let model = rows(&mut source(models, Format::Jsonl, "models").unwrap()).unwrap();
        assert_eq!(model[0].cells[3], text("dn-a,dn-b"));
    }

    #[test]
    fn jsonl_errors_name_the_file_and_line() {
        let cases = [
            ("{\"inference\":\"a\"}\n{\"lsn\":1}\n", "inferences.jsonl:2: unknown column \"lsn\""),
            ("{\"inference\":\"a\"}\n{oops\n", "inferences.jsonl:2: not JSON"),
            ("[1]\n", "inferences.jsonl:1: expected a JSON object"),
            ("{\"fee\":1.5}\n", "inferences.jsonl:1: column fee: 1.5 is not a whole number"),
            ("{\"fee\":true}\n", "inferences.jsonl:1: column fee: unexpected a boolean"),
            (
                "{\"attributions\":[{\"contribution\":\"c\",\"weight\":1}]}\n",
                "inferences.jsonl:1: column attributions: unknown attribution key \"weight\"",
            ),
            (
                "{\"attributions\":[{\"contribution\":\"a,b\",\"score\":1}]}\n",
                "inferences.jsonl:1: column attributions: \"a,b\" contains ','",
            ),
            (
                "{\"attributions\":[{\"contribution\":\"c\",\"score\":\"1\"}]}\n",
                "inferences.jsonl:1: column attributions: attribution 1 needs a string",
            ),
        ];
        for (input, expected) in cases {
            let err = rows(&mut source(input, Format::Jsonl, "inferences").unwrap()).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{input}: {err}");
        }
    }
}
