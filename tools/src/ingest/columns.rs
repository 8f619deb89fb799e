//! What `tally ingest` knows of the tables it writes: each write table's writable columns and
//! how their values travel (surface.md), the input formats, and which table and format a file
//! name implies. Owns names and types only; it must never validate values beyond "is this a
//! whole number": the server is the one validator and names the SQLSTATE.

use std::path::Path;
use std::sync::Arc;

use tally_client::arrow_schema::{DataType, Field, Schema, SchemaRef};

/// How a column's values are read and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ids, owners, hashes, reasons: Utf8.
    Text,
    /// Amounts, bps, epochs: Int64.
    BigInt,
    /// `datanets`: Utf8 `id,id,…`; JSON may give an array of strings.
    List,
    /// `attributions`: Utf8 `id:score,…`; JSON may give an array of
    /// `{"contribution": …, "score": …}` objects (or `[id, score]` pairs).
    Attributions,
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::BigInt => DataType::Int64,
            Kind::Text | Kind::List | Kind::Attributions => DataType::Utf8,
        }
    }
}

/// The write tables and their writable columns in contract order (surface.md; the same list
/// as the SQL layer's `row::WRITABLE`, with types).
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    ("datanets", &[("datanet", Kind::Text), ("owner", Kind::Text)]),
    (
        "contributions",
        &[
            ("contribution", Kind::Text),
            ("datanet", Kind::Text),
            ("contributor", Kind::Text),
            ("content_hash", Kind::Text),
        ],
    ),
    (
        "models",
        &[
            ("model", Kind::Text),
            ("owner", Kind::Text),
            ("base_model", Kind::Text),
            ("datanets", Kind::List),
        ],
    ),
    (
        "inferences",
        &[
            ("inference", Kind::Text),
            ("model", Kind::Text),
            ("consumer", Kind::Text),
            ("fee", Kind::BigInt),
            ("attributions", Kind::Attributions),
        ],
    ),
    ("revocations", &[("contribution", Kind::Text), ("reason", Kind::Text)]),
    (
        "policies",
        &[("protocol_bps", Kind::BigInt), ("model_bps", Kind::BigInt), ("base_bps", Kind::BigInt)],
    ),
    ("settlements", &[("epoch", Kind::BigInt)]),
];

/// A write table's writable columns.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
}

impl Table {
    /// The write table called `name`.
    pub fn named(name: &str) -> Option<Table> {
        TABLES.iter().find(|(t, _)| *t == name).map(|(name, columns)| Table { name, columns })
    }

    /// The names of all write tables, for messages.
    pub fn all_names() -> String {
        TABLES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
    }

    /// The kind of a writable column (names compare case-insensitively, as SQL identifiers).
    pub fn kind_of(&self, column: &str) -> Option<(&'static str, Kind)> {
        self.columns.iter().copied().find(|(c, _)| c.eq_ignore_ascii_case(column))
    }

    /// The writable column names, for messages.
    pub fn column_names(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// The Arrow schema of a stream with these columns (all nullable: a missing value is NULL
    /// and the server says whether it may be).
    pub fn schema(columns: &[(&'static str, Kind)]) -> SchemaRef {
        let fields: Vec<Field> =
            columns.iter().map(|(name, kind)| Field::new(*name, kind.data_type(), true)).collect();
        Arc::new(Schema::new(fields))
    }
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV with a header line naming the columns.
    Csv,
    /// One JSON object per line (also `.ndjson`).
    Jsonl,
}

impl Format {
    /// The format a file name's extension implies.
    pub fn of_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// The table a file name implies: its stem (`inferences.csv` → `inferences`,
/// `inferences.2026-11.csv` → `inferences`: the part before the first dot).
pub fn table_of_path(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    name.split('.').next().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_imply_table_and_format() {
        let p = Path::new("/data/inferences.csv");
        assert_eq!((table_of_path(p), Format::of_path(p)), (Some("inferences"), Some(Format::Csv)));
        let p = Path::new("models.2026-11.NDJSON");
        assert_eq!((table_of_path(p), Format::of_path(p)), (Some("models"), Some(Format::Jsonl)));
        assert_eq!(Format::of_path(Path::new("x.json")), None);
        assert_eq!(table_of_path(Path::new(".hidden")), None);
    }

    #[test]
    fn tables_know_their_columns() {
        let t = Table::named("inferences").unwrap();
        assert_eq!(t.kind_of("FEE"), Some(("fee", Kind::BigInt)));
        assert_eq!(t.kind_of("attributions"), Some(("attributions", Kind::Attributions)));
        assert_eq!(t.kind_of("lsn"), None);
        assert!(Table::named("events").is_none() && Table::named("balances").is_none());
        for name in tally_client::WRITE_TABLES {
            assert!(Table::named(name).is_some(), "{name}");
        }
        let schema = Table::schema(t.columns);
        assert_eq!(schema.field(3).data_type(), &DataType::Int64);
    }
}
