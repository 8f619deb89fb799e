//! A record batch streamed into a write table (streaming ingest) and how its rows become
//! events: the same exact conversions and refusals as INSERT and COPY (`row.rs`), with the
//! batch's columns matched to the table's writable columns by name, in any order.
//!
//! Column types are those a client naturally sends: text (Utf8, LargeUtf8, Utf8View),
//! integers, decimals; `attributions` also as a list of `{contribution, score}` structs, read
//! straight into entries where its text form (`id:score,…`) would read the same, and checked
//! as that text otherwise (`row::Entries`), so both forms answer to the one grammar. A column
//! the table does not take is refused, never ignored.

use datafusion::arrow::array::{Array, AsArray, Float64Array, ListArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use tally_engine::{Event, MAX_BATCH_EVENTS};

use crate::provider::cell;
use crate::row::{self, Cell, Entries, MAX_WRITABLE};
use crate::QueryError;

/// The events `batch`'s rows stand for, as rows of `table` (a write table of surface.md).
/// Refusals name the row (1-based in the batch), its field and value.
pub fn events_from_batch(table: &str, batch: &RecordBatch) -> Result<Vec<Event>, QueryError> {
    table_events(table, batch).map(|(_, events)| events)
}

/// `events_from_batch`, with the table's name as the contract spells it.
pub(crate) fn table_events(
    table: &str,
    batch: &RecordBatch,
) -> Result<(&'static str, Vec<Event>), QueryError> {
    let (table, writable) = row::writable(table).ok_or_else(|| {
        let tables: Vec<&str> = row::WRITABLE.iter().map(|(t, _)| *t).collect();
        QueryError::NotAllowed(format!(
            "{table:?} is not a table that takes writes (those are {})",
            tables.join(", ")
        ))
    })?;
    if batch.num_rows() > MAX_BATCH_EVENTS {
        return Err(QueryError::TooLarge(format!(
            "this batch holds {} rows, more than {MAX_BATCH_EVENTS}",
            batch.num_rows()
        )));
    }
    let columns = columns_by_name(table, writable, batch)?;
    let lists: Vec<Option<ScoredList>> =
        columns.iter().map(|c| c.and_then(|a| scored_list(a.as_ref()))).collect();
    let mut events = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut cells = [Cell::Null; MAX_WRITABLE];
        for (k, slot) in cells.iter_mut().take(writable.len()).enumerate() {
            *slot = match (&lists[k], columns[k]) {
                (Some(list), Some(a)) if !a.is_null(r) => Cell::Entries(list.row(r)),
                (_, Some(a)) => cell(a.as_ref(), r),
                (_, None) => Cell::Null,
            };
        }
        let event = row::to_event(table, &cells[..writable.len()], r)
            .map_err(|e| e.refusal(table, r + 1))?;
        events.push(event);
    }
    Ok((table, events))
}

/// The batch's column for each writable column of `table` (in contract order), `None` where
/// the batch has none (a NULL in every row).
fn columns_by_name<'a>(
    table: &'static str,
    writable: &[&str],
    batch: &'a RecordBatch,
) -> Result<Vec<Option<&'a std::sync::Arc<dyn Array>>>, QueryError> {
    let schema = batch.schema();
    for field in schema.fields() {
        let name = field.name();
        if !writable.contains(&name.as_str()) {
            return Err(QueryError::Refused {
                row: 1,
                table,
                field: name.clone(),
                value: "(a column)".into(),
                message: format!(
                    "{table} takes the columns {}; {name:?} is not one of them",
                    writable.join(", ")
                ),
                sqlstate: "42703",
            });
        }
    }
    Ok(writable.iter().map(|w| schema.index_of(w).ok().map(|i| batch.column(i))).collect())
}

/// A `List<Struct<contribution: Utf8, score: Float64>>` column, by its parts.
struct ScoredList<'a> {
    list: &'a ListArray,
    ids: &'a StringArray,
    scores: &'a Float64Array,
}

impl<'a> ScoredList<'a> {
    /// Row `r`'s entries (the row must not be NULL).
    fn row(&self, r: usize) -> Entries<'a> {
        let offsets = self.list.value_offsets();
        let (from, to) = (offsets[r] as usize, offsets[r + 1] as usize);
        Entries { ids: self.ids, scores: self.scores, from, to }
    }
}

/// `array` as a scored list; `None` for a column of any other type.
fn scored_list(array: &dyn Array) -> Option<ScoredList<'_>> {
    let DataType::List(item) = array.data_type() else { return None };
    let DataType::Struct(fields) = item.data_type() else { return None };
    let id_at = fields.iter().position(|f| f.name() == "contribution")?;
    let score_at = fields.iter().position(|f| f.name() == "score")?;
    let list = array.as_list::<i32>();
    let items = list.values().as_struct();
    let ids = items.column(id_at).as_string_opt::<i32>()?;
    let scores = items.column(score_at).as_primitive_opt::<Float64Type>()?;
    Some(ScoredList { list, ids, scores })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Float64Builder, Int64Array, ListBuilder, StringArray, StringBuilder, StructBuilder,
    };
    use datafusion::arrow::datatypes::{Field, Fields, Schema};

    use super::*;

    fn attributions(rows: &[&[(&str, f64)]]) -> Arc<dyn Array> {
        let rows: Vec<Vec<(Option<String>, Option<f64>)>> = rows
            .iter()
            .map(|r| r.iter().map(|(id, s)| (Some(id.to_string()), Some(*s))).collect())
            .collect();
        nullable_attributions(&rows)
    }

    /// A list column whose entries may have a NULL id or score.
    fn nullable_attributions(rows: &[Vec<(Option<String>, Option<f64>)>]) -> Arc<dyn Array> {
        let fields = Fields::from(vec![
            Field::new("contribution", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]);
        let item = StructBuilder::new(
            fields.clone(),
            vec![Box::new(StringBuilder::new()), Box::new(Float64Builder::new())],
        );
        let mut list = ListBuilder::new(item).with_field(Arc::new(Field::new(
            "item",
            DataType::Struct(fields),
            true,
        )));
        for row in rows {
            let s = list.values();
            for (id, score) in row {
                s.field_builder::<StringBuilder>(0).unwrap().append_option(id.as_deref());
                s.field_builder::<Float64Builder>(1).unwrap().append_option(*score);
                s.append(true);
            }
            list.append(true);
        }
        Arc::new(list.finish())
    }

    fn batch(columns: Vec<(&str, Arc<dyn Array>)>) -> RecordBatch {
        let fields: Vec<Field> =
            columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    fn text(values: &[&str]) -> Arc<dyn Array> {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn columns_by_name_in_any_order_and_both_attribution_forms() {
        let nested = batch(vec![
            ("fee", Arc::new(Int64Array::from(vec![100, 7]))),
            ("attributions", attributions(&[&[("c:1", 0.25), ("c2", 1.0)], &[]])),
            ("consumer", text(&["u", "v"])),
            ("model", text(&["m", "m"])),
            ("inference", text(&["i1", "i2"])),
        ]);
        let flat = batch(vec![
            ("inference", text(&["i1", "i2"])),
            ("model", text(&["m", "m"])),
            ("consumer", text(&["u", "v"])),
            ("fee", text(&["100", "7"])),
            ("attributions", text(&["c:1:0.25,c2:1", ""])),
        ]);
        let a = events_from_batch("inferences", &nested).unwrap();
        assert_eq!(a, events_from_batch("inferences", &flat).unwrap());
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn refusals_name_the_row_field_and_column() {
        let bad_score = batch(vec![
            ("inference", text(&["i1", "i2"])),
            ("model", text(&["m", "m"])),
            ("consumer", text(&["u", "v"])),
            ("fee", text(&["1", "2"])),
            ("attributions", attributions(&[&[("c", 1.0)], &[("c", -0.5)]])),
        ]);
        let e = events_from_batch("inferences", &bad_score).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.to_string().contains("row 2") && e.to_string().contains("attributions"), "{e}");
        let extra = batch(vec![("datanet", text(&["d"])), ("colour", text(&["red"]))]);
        let e = events_from_batch("datanets", &extra).unwrap_err();
        assert_eq!(e.sqlstate(), "42703");
        assert!(e.to_string().contains("colour"), "{e}");
        let missing = batch(vec![("datanet", text(&["d"]))]);
        let e = events_from_batch("datanets", &missing).unwrap_err();
        assert_eq!(e.sqlstate(), "23502", "{e}");
        let e = events_from_batch("balances", &missing).unwrap_err();
        assert_eq!(e.sqlstate(), "42501", "{e}");
    }

    /// The contract's text form of entries, written independently of `row::Entries`.
    fn as_text(entries: &[(Option<String>, Option<f64>)]) -> String {
        let shown: Vec<String> = entries
            .iter()
            .map(|(id, score)| {
                format!(
                    "{}:{}",
                    id.as_deref().unwrap_or(""),
                    score.map_or(String::new(), |s| s.to_string())
                )
            })
            .collect();
        shown.join(",")
    }

    /// The same rows, attributions as a list column and as text: same events or same refusal.
    fn both_forms_agree(rows: &[Vec<(Option<String>, Option<f64>)>]) {
        let n = rows.len();
        let ids: Vec<String> = (0..n).map(|r| format!("i{r}")).collect();
        let common = |attributions| {
            batch(vec![
                ("inference", Arc::new(StringArray::from(ids.clone())) as Arc<dyn Array>),
                ("model", Arc::new(StringArray::from(vec!["m"; n]))),
                ("consumer", Arc::new(StringArray::from(vec!["u"; n]))),
                ("fee", Arc::new(Int64Array::from(vec![10; n]))),
                ("attributions", attributions),
            ])
        };
        let texts: Vec<String> = rows.iter().map(|r| as_text(r)).collect();
        let listed = events_from_batch("inferences", &common(nullable_attributions(rows)));
        let flat = events_from_batch("inferences", &common(Arc::new(StringArray::from(texts))));
        match (listed, flat) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("list form {a:?}, text form {b:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn list_and_text_attributions_are_one_grammar(
            rows in proptest::collection::vec(proptest::collection::vec(entry(), 0..6), 1..4)
        ) {
            both_forms_agree(&rows);
        }
    }

    fn entry() -> impl proptest::strategy::Strategy<Value = (Option<String>, Option<f64>)> {
        use proptest::prelude::*;
        let id = prop_oneof![
            4 => "c[0-9]{1,2}".prop_map(Some),
            1 => "[c:,]{0,3}".prop_map(Some),
            1 => Just(None),
        ];
        let score = prop_oneof![
            4 => (0.0f64..1e6).prop_map(Some),
            1 => proptest::num::f64::ANY.prop_map(Some),
            1 => prop::sample::select(vec![
                Some(0.0), Some(-0.0), Some(-1.5), Some(f64::NAN), Some(f64::INFINITY),
                Some(f64::MIN_POSITIVE / 4.0), Some(1e300), None,
            ]),
        ];
        (id, score)
    }

    #[test]
    fn lists_past_the_entry_limit_are_refused_as_their_text_is() {
        use tally_engine::settle::MAX_ENTRIES;
        let long: Vec<_> = (0..=MAX_ENTRIES).map(|k| (Some(format!("c{k}")), Some(1.0))).collect();
        both_forms_agree(&[long]);
    }
}
