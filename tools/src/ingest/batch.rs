//! Cutting rows into batches: Arrow record batches of at most `rows` rows and, unless one row
//! alone is bigger, at most `bytes` bytes of input. Each batch remembers the input line of each
//! of its rows, so that a refusal naming "row 17" of a batch can be reported as a file line.
//!
//! Pure and deterministic: the same rows and limits always give the same batches (which is
//! what lets a rerun with the same producer and seqs be exactly-once). Cutting by time
//! (`--linger`) is the caller's: it calls `flush`.

use std::sync::Arc;

use tally_client::arrow_array::builder::{Int64Builder, StringBuilder};
use tally_client::arrow_array::{ArrayRef, RecordBatch};
use tally_client::arrow_schema::SchemaRef;

use super::columns::{Kind, Table};
use super::parse::{Cell, Row};

/// Batch size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rows: usize,
    pub bytes: u64,
}

/// A batch ready to send.
#[derive(Debug)]
pub struct Built {
    pub batch: RecordBatch,
    /// The input line each row starts on.
    pub lines: Vec<u64>,
    /// Input bytes of its rows.
    pub bytes: u64,
}

impl Built {
    /// The input line of the 1-based `row`.
    pub fn line_of(&self, row: u64) -> Option<u64> {
        self.lines.get(usize::try_from(row.checked_sub(1)?).ok()?).copied()
    }

    /// First and last input line.
    pub fn line_range(&self) -> Option<(u64, u64)> {
        Some((*self.lines.first()?, *self.lines.last()?))
    }
}

enum Column {
    Text(StringBuilder),
    Int(Int64Builder),
}

/// Accumulates rows of one source into batches.
pub struct Batcher {
    schema: SchemaRef,
    columns: Vec<Column>,
    lines: Vec<u64>,
    bytes: u64,
    limits: Limits,
}

impl Batcher {
    pub fn new(columns: &[(&'static str, Kind)], limits: Limits) -> Batcher {
        assert!(limits.rows >= 1 && limits.bytes >= 1, "batch limits must be positive");
        let mut batcher = Batcher {
            schema: Table::schema(columns),
            columns: Vec::new(),
            lines: Vec::new(),
            bytes: 0,
            limits,
        };
        batcher.columns = columns.iter().map(|(_, kind)| batcher.column(*kind)).collect();
        batcher
    }

    fn column(&self, kind: Kind) -> Column {
        let rows = self.limits.rows.min(INITIAL_ROWS_MAX);
        match kind {
            Kind::BigInt => Column::Int(Int64Builder::with_capacity(rows)),
            Kind::Text | Kind::List | Kind::Attributions => {
                Column::Text(StringBuilder::with_capacity(rows, rows * INITIAL_BYTES_PER_VALUE))
            }
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds a row; returns the batches it completed (the one before it, when it would not fit
    /// in bytes, and its own, when that is now full).
    pub fn push(&mut self, row: Row) -> Vec<Built> {
        let mut done = Vec::new();
        if !self.is_empty() && self.bytes.saturating_add(row.bytes) > self.limits.bytes {
            done.extend(self.flush());
        }
        for (column, cell) in self.columns.iter_mut().zip(row.cells) {
            match (column, cell) {
                (Column::Text(b), Cell::Text(s)) => b.append_value(s),
                (Column::Int(b), Cell::Int(i)) => b.append_value(i),
                (Column::Text(b), Cell::Null) => b.append_null(),
                (Column::Int(b), Cell::Null) => b.append_null(),
                (Column::Text(_), Cell::Int(_)) | (Column::Int(_), Cell::Text(_)) => {
                    unreachable!("the parser gives each column cells of its kind")
                }
            }
        }
        self.lines.push(row.line);
        self.bytes = self.bytes.saturating_add(row.bytes);
        if self.lines.len() >= self.limits.rows || self.bytes >= self.limits.bytes {
            done.extend(self.flush());
        }
        done
    }

    /// The rows so far as a batch, if any.
    pub fn flush(&mut self) -> Option<Built> {
        if self.is_empty() {
            return None;
        }
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| match c {
                Column::Text(b) => Arc::new(b.finish()) as ArrayRef,
                Column::Int(b) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("every column has one value per row, of the schema's type");
        let lines = std::mem::take(&mut self.lines);
        Some(Built { batch, lines, bytes: std::mem::take(&mut self.bytes) })
    }
}

/// Builders start with room for this many rows at most (they grow past it as needed).
const INITIAL_ROWS_MAX: usize = 16_384;
/// Text bytes reserved per value at first: ids are mostly short.
const INITIAL_BYTES_PER_VALUE: usize = 16;

#[cfg(test)]
mod tests {
    use super::super::columns::Format;
    use super::super::parse::tests::{rows, source};
    use super::*;
    use tally_client::arrow_array::{Array, Int64Array, StringArray};

    fn batches(text: &str, format: Format, table: &str, limits: Limits) -> Vec<Built> {
        let mut s = source(text, format, table).unwrap();
        let mut b = Batcher::new(s.columns(), limits);
        let mut out: Vec<Built> =
            rows(&mut s).unwrap().into_iter().flat_map(|r| b.push(r)).collect();
        out.extend(b.flush());
        out
    }

    #[test]
    fn csv_becomes_typed_record_batches_cut_by_rows() {
        let mut csv = String::from("inference,fee,attributions\n");
        for i in 0..25 {
            csv.push_str(&format!("inf-{i},{},\n", i * 10));
        }
        let out = batches(&csv, Format::Csv, "inferences", Limits { rows: 10, bytes: 1 << 20 });
        assert_eq!(out.iter().map(|b| b.batch.num_rows()).collect::<Vec<_>>(), vec![10, 10, 5]);
        let first = &out[0].batch;
        assert_eq!(first.schema().field(1).name(), "fee");
        let fees = first.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(fees.value(3), 30);
        let ids = first.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(ids.value(9), "inf-9");
        assert_eq!(first.column(2).null_count(), 10);
        // Rows map back to lines: row 1 of the second batch is line 12.
        assert_eq!(out[1].line_of(1), Some(12));
        assert_eq!(out[1].line_of(0), None);
        assert_eq!(out[2].line_range(), Some((22, 26)));
    }

    #[test]
    fn batches_are_cut_by_input_bytes() {
        // Each line "inf-N,1\n" (N < 10) is 8 bytes.
        let mut csv = String::from("inference,fee\n");
        for i in 0..9 {
            csv.push_str(&format!("inf-{i},1\n"));
        }
        let out = batches(&csv, Format::Csv, "inferences", Limits { rows: 100, bytes: 20 });
        // 8 + 8 fit in 20, a third would not.
        assert_eq!(out.iter().map(|b| b.batch.num_rows()).collect::<Vec<_>>(), vec![2, 2, 2, 2, 1]);
        assert!(out.iter().all(|b| b.bytes <= 20));
        // A row bigger than the limit goes alone.
        let out = batches(
            "datanet,owner\nd1,o1\nd2,o2\n",
            Format::Csv,
            "datanets",
            Limits { rows: 100, bytes: 2 },
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn jsonl_batches_carry_every_writable_column() {
        let jsonl = "{\"model\":\"m1\",\"owner\":\"o\"}\n{\"model\":\"m2\",\"owner\":\"o\",\"base_model\":\"m1\",\"datanets\":[\"d\"]}\n";
        let out = batches(jsonl, Format::Jsonl, "models", Limits { rows: 10, bytes: 1 << 20 });
        let batch = &out[0].batch;
        assert_eq!(batch.num_columns(), 4);
        let datanets = batch.column(3).as_any().downcast_ref::<StringArray>().unwrap();
        assert!(datanets.is_null(0));
        assert_eq!(datanets.value(1), "d");
    }

    #[test]
    fn cutting_is_deterministic() {
        let mut csv = String::from("inference,fee\n");
        for i in 0..1000 {
            csv.push_str(&format!("inf-{i},{i}\n"));
        }
        let limits = Limits { rows: 64, bytes: 300 };
        let a = batches(&csv, Format::Csv, "inferences", limits);
        let b = batches(&csv, Format::Csv, "inferences", limits);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.batch == y.batch && x.lines == y.lines));
    }
}
