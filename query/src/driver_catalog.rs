//! `pg_catalog`'s tables as drivers read them, where the catalog crate's differ from
//! PostgreSQL's: the array columns of `pg_index` (`indkey`, …: PostgreSQL's `int2vector` and
//! `oidvector`) and `pg_constraint` (`conkey`, …) are arrays, which drivers `unnest` and
//! subscript (SQLAlchemy's keys and indexes, pgjdbc's imported keys), not text; `pg_type`'s
//! `regproc` columns (`typinput`, …) are function oids, which drivers compare with
//! `'array_in'::regproc` (pgjdbc's type discovery), not names; `pg_class` has `reloptions`
//! (NULL: no table has storage options); `pg_settings` lists the server's fixed settings.
//! This schema provider answers those five tables and passes every other one through
//! unchanged.
//!
//! Never: change a row of the catalog crate's tables, or answer for any other table.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Int32Array, ListBuilder, PrimitiveBuilder,
    RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Int16Type, Int32Type, Schema, SchemaRef,
};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::Column;
use datafusion::datasource::{provider_as_source, MemTable, ViewTable};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{cast, col, lit, Expr, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::QueryError;

/// The array columns of `pg_index` (PostgreSQL's `int2vector` and `oidvector`, kept by the
/// catalog crate as `"1 2"`) and of `pg_constraint` (`int2[]` and `oid[]`, kept as
/// `"[1, 2]"`), and whether each holds `int2` (else `oid`, 32 bits).
const ARRAYS: [(&str, &str, bool); 11] = [
    ("pg_index", "indkey", true),
    ("pg_index", "indcollation", false),
    ("pg_index", "indclass", false),
    ("pg_index", "indoption", true),
    ("pg_constraint", "conkey", true),
    ("pg_constraint", "confkey", true),
    ("pg_constraint", "confdelsetcols", true),
    ("pg_constraint", "conpfeqop", false),
    ("pg_constraint", "conppeqop", false),
    ("pg_constraint", "conffeqop", false),
    ("pg_constraint", "conexclop", false),
];

/// The `regproc` columns of `pg_type` (a function's oid, which drivers compare with
/// `'array_in'::regproc`; the catalog crate keeps the function's name).
const REGPROCS: [&str; 8] = [
    "typsubscript",
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
];

/// The server's settings that never change while it runs: `pg_settings` lists them and
/// `current_setting` answers them (pgjdbc reads `max_index_keys` before listing keys).
pub(crate) const SERVER_SETTINGS: [(&str, &str); 10] = [
    ("server_version", crate::POSTGRES_VERSION),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("default_table_access_method", "heap"),
    ("max_identifier_length", "63"),
    ("max_index_keys", "32"),
    ("max_function_args", "100"),
    ("integer_datetimes", "on"),
    ("block_size", "8192"),
];

/// `pg_settings` with the columns of the catalog crate's, one row per `SERVER_SETTINGS`.
fn settings(schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let rows = SERVER_SETTINGS.len();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "name" => {
                Arc::new(StringArray::from_iter_values(SERVER_SETTINGS.map(|s| s.0))) as ArrayRef
            }
            "setting" => Arc::new(StringArray::from_iter_values(SERVER_SETTINGS.map(|s| s.1))),
            _ => new_null_array(f.data_type(), rows),
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// Puts `pg_index`, `pg_type`, `pg_class` and `pg_settings` as drivers read them in front of
/// catalog `catalog`'s `pg_catalog`.
pub(crate) async fn replace(ctx: &SessionContext, catalog: &str) -> Result<(), QueryError> {
    let missing = |what: &str| QueryError::Internal(format!("{what} is not registered"));
    let catalog = ctx.catalog(catalog).ok_or_else(|| missing("the catalog"))?;
    let inner = catalog.schema("pg_catalog").ok_or_else(|| missing("pg_catalog"))?;
    let table = |name: &'static str| {
        let inner = inner.clone();
        async move { inner.table(name).await?.ok_or_else(|| missing(name)) }
    };
    let arrays = |of: &'static str| {
        move |name: &str, column: &ArrayRef| match array_of(of, name) {
            Some(int2) => list_of(column, int2).map(Some),
            None => Ok(None),
        }
    };
    let pg_index = rebuild(ctx, table("pg_index").await?, arrays("pg_index")).await?;
    let pg_constraint =
        rebuild(ctx, table("pg_constraint").await?, arrays("pg_constraint")).await?;
    let procs = proc_oids(ctx, table("pg_proc").await?).await?;
    let pg_type = rebuild(ctx, table("pg_type").await?, |name, column| {
        if !REGPROCS.contains(&name) {
            return Ok(None);
        }
        let text = datafusion::arrow::compute::cast(column, &DataType::Utf8)?;
        let oids: Int32Array = text
            .as_string::<i32>()
            .iter()
            .map(|n| n.map(|n| procs.get(n).copied().unwrap_or(0)))
            .collect();
        Ok(Some(Arc::new(oids) as ArrayRef))
    })
    .await?;
    let pg_class = with_reloptions(table("pg_class").await?)?;
    let pg_settings = settings(table("pg_settings").await?.schema())?;
    let tables =
        WithDriverTables { inner, pg_index, pg_constraint, pg_type, pg_class, pg_settings };
    catalog.register_schema("pg_catalog", Arc::new(tables))?;
    Ok(())
}

/// A function's oid by its name (the lowest, for a name several functions share), as
/// `regproc` input reads it; `-` (no function) is 0.
async fn proc_oids(
    ctx: &SessionContext,
    pg_proc: Arc<dyn TableProvider>,
) -> Result<HashMap<String, i32>> {
    let mut oids = HashMap::new();
    let frame = ctx.read_table(pg_proc)?.select_columns(&["proname", "oid"])?;
    for batch in frame.collect().await? {
        let names = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let ids = datafusion::arrow::compute::cast(batch.column(1), &DataType::Int32)?;
        let ids = ids.as_primitive::<Int32Type>();
        for (name, id) in names.as_string::<i32>().iter().zip(ids.iter()) {
            if let (Some(name), Some(id)) = (name, id) {
                let oid = oids.entry(name.to_owned()).or_insert(id);
                *oid = (*oid).min(id);
            }
        }
    }
    Ok(oids)
}

/// A static catalog table with some columns converted (`convert` answers `None` for a column
/// kept as it is), as a table of its own.
async fn rebuild(
    ctx: &SessionContext,
    table: Arc<dyn TableProvider>,
    convert: impl Fn(&str, &ArrayRef) -> Result<Option<ArrayRef>>,
) -> Result<Arc<dyn TableProvider>> {
    let old = table.schema();
    let mut schema: Option<SchemaRef> = None;
    let mut rows = Vec::new();
    for batch in ctx.read_table(table)?.collect().await? {
        let mut columns = Vec::with_capacity(batch.num_columns());
        let mut fields = Vec::with_capacity(batch.num_columns());
        for (column, field) in batch.columns().iter().zip(old.fields()) {
            let converted = convert(field.name(), column)?;
            let field = match &converted {
                Some(c) => Field::new(field.name(), c.data_type().clone(), field.is_nullable()),
                None => field.as_ref().clone(),
            };
            columns.push(converted.unwrap_or_else(|| column.clone()));
            fields.push(field);
        }
        let batch_schema = Arc::new(Schema::new_with_metadata(fields, old.metadata().clone()));
        rows.push(RecordBatch::try_new(schema.get_or_insert(batch_schema).clone(), columns)?);
    }
    let schema =
        schema.ok_or_else(|| DataFusionError::Internal("an empty catalog table".into()))?;
    Ok(Arc::new(MemTable::try_new(schema, vec![rows])?))
}

/// The catalog crate's `pg_class` (built afresh at each scan) with a `reloptions` column.
fn with_reloptions(pg_class: Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
    let columns: Vec<Expr> =
        pg_class.schema().fields().iter().map(|f| col(Column::new_unqualified(f.name()))).collect();
    let text_array = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    let reloptions = cast(lit(ScalarValue::Null), text_array).alias("reloptions");
    let plan = LogicalPlanBuilder::scan("pg_class", provider_as_source(pg_class), None)?
        .project(columns.into_iter().chain([reloptions]))?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// Whether column `name` of `table` is an array of `int2` (`Some(true)`) or `oid`.
fn array_of(table: &str, name: &str) -> Option<bool> {
    ARRAYS.iter().find(|(t, n, _)| *t == table && *n == name).map(|(_, _, int2)| *int2)
}

fn list_of(column: &ArrayRef, int2: bool) -> Result<ArrayRef> {
    let text = datafusion::arrow::compute::cast(column, &DataType::Utf8)?;
    if int2 {
        lists::<Int16Type>(text.as_string::<i32>())
    } else {
        lists::<Int32Type>(text.as_string::<i32>())
    }
}

/// Each text (`"1 2"`, `"[1, 2]"`, `"{1,2}"`, NULL) as a list of `T` (`[1, 2]`, NULL).
fn lists<T: ArrowPrimitiveType>(text: &StringArray) -> Result<ArrayRef>
where
    T::Native: std::str::FromStr,
{
    let mut list = ListBuilder::new(PrimitiveBuilder::<T>::new());
    for i in 0..text.len() {
        let row = (!text.is_null(i)).then(|| text.value(i));
        let elements = row.unwrap_or_default().trim_matches(|c| "[]{}".contains(c));
        for n in elements.split(|c: char| c == ',' || c.is_whitespace()).filter(|n| !n.is_empty()) {
            let value = n.parse().map_err(|_| {
                DataFusionError::Internal(format!("pg_index holds a vector element {n:?}"))
            })?;
            list.values().append_value(value);
        }
        list.append(row.is_some());
    }
    Ok(Arc::new(list.finish()))
}

/// The catalog crate's `pg_catalog`, with our `pg_index`, `pg_constraint`, `pg_type`,
/// `pg_class` and `pg_settings`.
#[derive(Debug)]
struct WithDriverTables {
    inner: Arc<dyn SchemaProvider>,
    pg_index: Arc<dyn TableProvider>,
    pg_constraint: Arc<dyn TableProvider>,
    pg_type: Arc<dyn TableProvider>,
    pg_class: Arc<dyn TableProvider>,
    pg_settings: Arc<dyn TableProvider>,
}

#[async_trait]
impl SchemaProvider for WithDriverTables {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let ours = match name.to_ascii_lowercase().as_str() {
            "pg_index" => Some(&self.pg_index),
            "pg_constraint" => Some(&self.pg_constraint),
            "pg_type" => Some(&self.pg_type),
            "pg_class" => Some(&self.pg_class),
            "pg_settings" => Some(&self.pg_settings),
            _ => None,
        };
        if let Some(table) = ours {
            return Ok(Some(table.clone()));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
