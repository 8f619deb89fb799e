//! A row written to a table that takes writes, and how it becomes one event (surface.md:
//! "each row becomes one event"). Shared by INSERT (cells from Arrow arrays) and COPY (cells
//! from text). Values are converted only when exact: a fee of `1001.9` is refused, never
//! truncated; text is parsed by the contract's grammar, not by generic casts.

use datafusion::arrow::array::{Array, Float64Array, StringArray};
use tally_engine::settle::MAX_ENTRIES;
use tally_engine::{
    Contribution, Datanet, Event, Model, Policy, Revocation, ScoredInference, Settlement, Text,
};

use crate::error::shown;

/// One value of a written row, as the statement supplied it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Float(f64),
    /// A decimal `value / 10^scale`.
    Decimal {
        value: i128,
        scale: i8,
    },
    /// A value of a type no column takes (BOOLEAN, DATE, …), by its SQL type name.
    Other(&'static str),
    /// Scored entries as a list of `{contribution, score}` structs (streaming ingest).
    Entries(Entries<'a>),
}

/// One row of a `List<Struct<contribution: Utf8, score: Float64>>` column: entries
/// `from..to` of the list's item columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entries<'a> {
    pub ids: &'a StringArray,
    pub scores: &'a Float64Array,
    pub from: usize,
    pub to: usize,
}

impl Entries<'_> {
    /// The contract's text form, `id:score,…`: what a refusal shows, and how entries that
    /// `plain` does not take are checked, so both forms answer to the one grammar. A NULL id
    /// or score becomes an entry the grammar refuses, by position.
    fn text(&self) -> String {
        let mut text = String::new();
        for i in self.from..self.to {
            if i > self.from {
                text.push(',');
            }
            text.push_str(if self.ids.is_valid(i) { self.ids.value(i) } else { "" });
            text.push(':');
            if self.scores.is_valid(i) {
                // Display of an f64 is its shortest exact decimal, never an exponent, so the
                // text parses back to the very same score.
                text.push_str(&self.scores.value(i).to_string());
            }
        }
        text
    }

    /// The entries as the text grammar would read them, without the text: `None` where any
    /// entry is one the grammar might refuse (then `text` is checked instead). An id never
    /// holds a `,` here and its score is finite and not negative, so its text form splits
    /// back into this very id and score.
    fn plain(&self) -> Option<Vec<(Text, f64)>> {
        if self.to - self.from > MAX_ENTRIES {
            return None;
        }
        let mut out = Vec::with_capacity(self.to - self.from);
        for i in self.from..self.to {
            if self.ids.is_null(i) || self.scores.is_null(i) {
                return None;
            }
            let (id, score) = (self.ids.value(i), self.scores.value(i));
            if id.is_empty() || id.contains(',') || !score.is_finite() || score.is_sign_negative() {
                return None;
            }
            out.push((Text::from(id), score));
        }
        Some(out)
    }
}

/// Why one field of a row was refused.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub field: &'static str,
    pub value: String,
    pub message: String,
    pub sqlstate: &'static str,
}

impl FieldError {
    /// The refusal of row `row` (1-based) of a write to `table`.
    pub(crate) fn refusal(self, table: &'static str, row: usize) -> crate::QueryError {
        crate::QueryError::Refused {
            row,
            table,
            field: self.field.into(),
            value: self.value,
            message: self.message,
            sqlstate: self.sqlstate,
        }
    }
}

/// The tables that take writes, with their writable columns in contract order (the order COPY
/// without a column list expects). In every table these come first.
pub(crate) const WRITABLE: &[(&str, &[&str])] = &[
    ("datanets", &["datanet", "owner"]),
    ("contributions", &["contribution", "datanet", "contributor", "content_hash"]),
    ("models", &["model", "owner", "base_model", "datanets"]),
    ("inferences", &["inference", "model", "consumer", "fee", "attributions"]),
    ("revocations", &["contribution", "reason"]),
    ("policies", &["protocol_bps", "model_bps", "base_bps"]),
    ("settlements", &["epoch"]),
];

/// The most writable columns any table has.
pub(crate) const MAX_WRITABLE: usize = 5;

/// The writable columns of `table`, or `None` for a read-only table.
pub(crate) fn writable(table: &str) -> Option<(&'static str, &'static [&'static str])> {
    WRITABLE.iter().find(|(t, _)| *t == table).map(|(t, c)| (*t, *c))
}

fn describe(cell: Cell) -> String {
    match cell {
        Cell::Null => "NULL".into(),
        Cell::Text(s) => shown(s),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Decimal { value, scale } => decimal_text(value, scale),
        Cell::Other(t) => format!("a {t} value"),
        Cell::Entries(e) => shown(&e.text()),
    }
}

/// `value / 10^scale` as decimal text, by moving the point in the digits (no arithmetic that
/// could overflow, whatever the scale).
fn decimal_text(value: i128, scale: i8) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let digits = value.unsigned_abs().to_string();
    if scale <= 0 {
        let zeros = if value == 0 { 0 } else { usize::from(scale.unsigned_abs()) };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

fn bad(field: &'static str, cell: Cell, message: impl Into<String>) -> FieldError {
    FieldError { field, value: describe(cell), message: message.into(), sqlstate: "22023" }
}

fn missing(field: &'static str) -> FieldError {
    FieldError {
        field,
        value: "NULL".into(),
        message: "a value is required".into(),
        sqlstate: "23502",
    }
}

/// A required text field. Integers are accepted as their decimal text (exact); other types
/// are refused.
fn text(field: &'static str, cell: Cell) -> Result<Text, FieldError> {
    match cell {
        Cell::Null => Err(missing(field)),
        Cell::Text(s) => Ok(Text::from(s)),
        Cell::Int(i) => Ok(Text::from(i.to_string())),
        other => Err(bad(field, other, "expected TEXT")),
    }
}

/// An optional text field: NULL and the empty string mean "none".
fn optional_text(field: &'static str, cell: Cell) -> Result<Option<Text>, FieldError> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Text("") => Ok(None),
        other => text(field, other).map(Some),
    }
}

/// A required BIGINT field, converted only when exact.
fn int(field: &'static str, cell: Cell) -> Result<i64, FieldError> {
    // Beyond 2^53 a double no longer holds every integer: it may already have lost digits.
    const EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;
    match cell {
        Cell::Null => Err(missing(field)),
        Cell::Int(i) => Ok(i),
        Cell::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT_DOUBLE => {
            Ok(f as i64)
        }
        Cell::Float(_) => Err(bad(field, cell, "expected a whole number (BIGINT)")),
        Cell::Decimal { value, scale } => {
            let power = 10i128.checked_pow(u32::from(scale.unsigned_abs()));
            let exact = match (scale <= 0, power) {
                (true, Some(p)) => value.checked_mul(p),
                (true, None) => (value == 0).then_some(0),
                (false, Some(p)) => (value % p == 0).then_some(value / p),
                // 10^scale is beyond i128, so beyond |value|: whole only when zero.
                (false, None) => (value == 0).then_some(0),
            };
            exact
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| bad(field, cell, "expected a whole number (BIGINT)"))
        }
        Cell::Text(s) => {
            parse_int(s).ok_or_else(|| bad(field, cell, "expected a whole number (BIGINT)"))
        }
        Cell::Other(_) | Cell::Entries(_) => Err(bad(field, cell, "expected BIGINT")),
    }
}

/// `[+-]?[0-9]+` within i64; nothing else (no spaces, no fraction, no exponent).
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `id,id,…`; NULL and the empty string are the empty list.
fn id_list(field: &'static str, cell: Cell) -> Result<Vec<Text>, FieldError> {
    let s = match cell {
        Cell::Null => return Ok(Vec::new()),
        Cell::Text(s) => s,
        other => return Err(bad(field, other, "expected a comma-separated list (TEXT)")),
    };
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .enumerate()
        .map(|(i, id)| {
            if id.is_empty() {
                Err(bad(field, cell, format!("entry {} of the list is empty", i + 1)))
            } else {
                Ok(Text::from(id))
            }
        })
        .collect()
}

/// Whether `s` matches `^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$` (surface.md).
fn is_score(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i, i - start)
    };
    let (mut i, whole) = digits(0);
    let mut frac = 0;
    if i < b.len() && b[i] == b'.' {
        (i, frac) = digits(i + 1);
    }
    if whole == 0 && frac == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let (end, n) = digits(i);
        if n == 0 {
            return false;
        }
        i = end;
    }
    i == b.len()
}

/// `id:score,id:score,…`, each entry split at its last `:`; NULL and '' are the empty list.
fn scores(field: &'static str, cell: Cell) -> Result<Vec<(Text, f64)>, FieldError> {
    let s = match cell {
        Cell::Null => return Ok(Vec::new()),
        Cell::Text(s) => s,
        Cell::Entries(e) => {
            return match e.plain() {
                Some(entries) => Ok(entries),
                None => scores(field, Cell::Text(&e.text())),
            }
        }
        other => return Err(bad(field, other, "expected `id:score,…` (TEXT)")),
    };
    if s.is_empty() {
        return Ok(Vec::new());
    }
    // Sized once (growing it from empty took three allocations for a typical inference); the
    // count stops at the limit, as the parse does.
    let commas = s.bytes().filter(|&b| b == b',').take(MAX_ENTRIES).count();
    let mut entries = Vec::with_capacity((commas + 1).min(MAX_ENTRIES));
    for (i, entry) in s.split(',').enumerate() {
        // Stop at the first entry past the limit: a list of millions of entries must cost no
        // more than the limit to refuse.
        if i == MAX_ENTRIES {
            return Err(bad(
                field,
                cell,
                format!("more than {MAX_ENTRIES} entries (an inference has at most {MAX_ENTRIES})"),
            ));
        }
        let entry_error =
            |what: &str| bad(field, cell, format!("entry {} ({:?}) {what}", i + 1, shown(entry)));
        let (id, score) = entry.rsplit_once(':').ok_or_else(|| entry_error("is not `id:score`"))?;
        if id.is_empty() {
            return Err(entry_error("has an empty id"));
        }
        if !is_score(score) {
            return Err(entry_error("has a score that is not a plain non-negative number"));
        }
        let value: f64 = score.parse().map_err(|_| entry_error("has a bad score"))?;
        if !value.is_finite() {
            return Err(entry_error("has a score too large to be finite"));
        }
        entries.push((Text::from(id), value));
    }
    Ok(entries)
}

/// Builds the event a row of `table` stands for. `cells` holds the writable columns in
/// contract order; `index` is the row's position in its batch (for the engine's refusals).
pub(crate) fn to_event(table: &str, cells: &[Cell], index: usize) -> Result<Event, FieldError> {
    Ok(match table {
        "datanets" => Event::Datanet(Datanet {
            datanet: text("datanet", cells[0])?,
            owner: text("owner", cells[1])?,
        }),
        "contributions" => Event::Contribution(Contribution {
            contribution: text("contribution", cells[0])?,
            datanet: text("datanet", cells[1])?,
            contributor: text("contributor", cells[2])?,
            content_hash: text("content_hash", cells[3])?,
        }),
        "models" => Event::Model(Model {
            model: text("model", cells[0])?,
            owner: text("owner", cells[1])?,
            base_model: optional_text("base_model", cells[2])?,
            datanets: id_list("datanets", cells[3])?,
        }),
        "inferences" => {
            let scored = ScoredInference {
                inference: text("inference", cells[0])?,
                model: text("model", cells[1])?,
                consumer: text("consumer", cells[2])?,
                fee: int("fee", cells[3])?,
                scores: scores("attributions", cells[4])?,
            };
            scored.into_event(index).map_err(|r| FieldError {
                field: "attributions",
                value: r.value,
                message: r.rule.to_string(),
                sqlstate: "22023",
            })?
        }
        "revocations" => Event::Revocation(Revocation {
            contribution: text("contribution", cells[0])?,
            reason: text("reason", cells[1])?,
        }),
        "policies" => Event::Policy(Policy {
            protocol_bps: int("protocol_bps", cells[0])?,
            model_bps: int("model_bps", cells[1])?,
            base_bps: int("base_bps", cells[2])?,
        }),
        "settlements" => {
            let epoch = int("epoch", cells[0])?;
            let epoch = u64::try_from(epoch)
                .map_err(|_| bad("epoch", cells[0], "an epoch is not negative"))?;
            Event::Settlement(Settlement { epoch })
        }
        other => unreachable!("{other} takes no writes: callers check `writable` first"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A cell as a strategy can own it.
    #[derive(Debug, Clone)]
    enum Value {
        Null,
        Text(String),
        Int(i64),
        Float(f64),
        Decimal(i128, i8),
        Other,
    }

    impl Value {
        fn cell(&self) -> Cell<'_> {
            match self {
                Value::Null => Cell::Null,
                Value::Text(s) => Cell::Text(s),
                Value::Int(i) => Cell::Int(*i),
                Value::Float(f) => Cell::Float(*f),
                Value::Decimal(value, scale) => Cell::Decimal { value: *value, scale: *scale },
                Value::Other => Cell::Other("BOOLEAN"),
            }
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            prop::sample::select(vec![
                "",
                "a",
                "c1:0.5,c2:1",
                "a:b:1e3",
                ",",
                "d1,,d2",
                "1e309",
                "c:1,c:1",
                "x:-1",
                ":",
                "dn-a,dn-b",
                "12",
                "-0",
                "9223372036854775808",
                "0.0"
            ])
            .prop_map(String::from),
            "[a-z0-9:,.eE+-]{0,24}",
            any::<String>(),
        ];
        prop_oneof![
            1 => Just(Value::Null),
            4 => text.prop_map(Value::Text),
            2 => any::<i64>().prop_map(Value::Int),
            2 => any::<f64>().prop_map(Value::Float),
            2 => (any::<i128>(), any::<i8>()).prop_map(|(v, s)| Value::Decimal(v, s)),
            1 => Just(Value::Other),
        ]
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz_config(3000))]
        #[test]
        fn fuzz_row_to_event(table in 0..WRITABLE.len(), values in prop::collection::vec(value(), MAX_WRITABLE)) {
            let (table, columns) = WRITABLE[table];
            let cells: Vec<Cell> = values.iter().take(columns.len()).map(Value::cell).collect();
            if let Err(e) = to_event(table, &cells, 0) {
                prop_assert!(columns.contains(&e.field) && e.value.len() < 400, "{e:?}");
            }
        }
    }

    #[test]
    fn scores_follow_the_contract_grammar() {
        for ok in ["0", "1", "0.5", "1.", ".5", "1e3", "1E-3", "2.5e+2", "007"] {
            assert!(is_score(ok), "{ok}");
        }
        for no in ["", ".", "-1", "+1", " 1", "1 ", "nan", "inf", "1e", "1e+", "0x1", "1.2.3"] {
            assert!(!is_score(no), "{no}");
        }
    }

    #[test]
    fn attribution_ids_split_at_the_last_colon() {
        let got = scores("attributions", Cell::Text("a:b:0.5,c:1")).unwrap();
        assert_eq!(got, vec![(Text::from("a:b"), 0.5), (Text::from("c"), 1.0)]);
        assert!(scores("attributions", Cell::Text("a:0.5,")).is_err());
        assert!(scores("attributions", Cell::Text("a")).is_err());
        assert!(scores("attributions", Cell::Text(":1")).is_err());
        assert!(scores("attributions", Cell::Text("a:1e999")).is_err());
        assert!(scores("attributions", Cell::Null).unwrap().is_empty());
        assert!(scores("attributions", Cell::Text("")).unwrap().is_empty());
    }

    #[test]
    fn integers_convert_only_when_exact() {
        assert_eq!(int("fee", Cell::Int(5)).unwrap(), 5);
        assert_eq!(int("fee", Cell::Float(1001.0)).unwrap(), 1001);
        assert_eq!(int("fee", Cell::Text("-12")).unwrap(), -12);
        assert_eq!(int("fee", Cell::Decimal { value: 10010, scale: 1 }).unwrap(), 1001);
        for lossy in [
            Cell::Float(1001.9),
            Cell::Float(f64::NAN),
            Cell::Float(1e300),
            Cell::Decimal { value: 10019, scale: 1 },
            Cell::Text("1001.9"),
            Cell::Text(" 1"),
            Cell::Text("1e3"),
            Cell::Other("BOOLEAN"),
        ] {
            let e = int("fee", lossy).unwrap_err();
            assert_eq!(e.sqlstate, "22023", "{lossy:?}");
        }
        assert_eq!(int("fee", Cell::Null).unwrap_err().sqlstate, "23502");
        assert_eq!(
            int("fee", Cell::Decimal { value: 10019, scale: 1 }).unwrap_err().value,
            "1001.9"
        );
        // Scales whose powers of ten are beyond i128: refused or exact, never a panic.
        assert_eq!(
            int("fee", Cell::Decimal { value: 5, scale: -40 }).unwrap_err().value,
            "5".to_string() + &"0".repeat(40)
        );
        assert_eq!(int("fee", Cell::Decimal { value: 0, scale: -100 }).unwrap(), 0);
        assert_eq!(
            int("fee", Cell::Decimal { value: 7, scale: 100 }).unwrap_err().value.len(),
            102
        );
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(i128::MIN, 2), "-1701411834604692317316873037158841057.28");
    }

    #[test]
    fn lists_and_optional_fields() {
        assert_eq!(id_list("datanets", Cell::Text("a,b")).unwrap(), vec!["a", "b"]);
        assert!(id_list("datanets", Cell::Text("a,,b")).is_err());
        assert!(id_list("datanets", Cell::Null).unwrap().is_empty());
        assert_eq!(optional_text("base_model", Cell::Text("")).unwrap(), None);
        assert_eq!(text("owner", Cell::Int(42)).unwrap(), "42");
        assert!(text("owner", Cell::Float(4.2)).is_err());
    }
}
