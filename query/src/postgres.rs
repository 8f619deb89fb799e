//! What PostgreSQL clients expect beyond the ledger's tables: PostgreSQL's catalog
//! (`pg_catalog`, for psql's `\d`, JDBC, psycopg and SQLAlchemy), the catalog functions
//! drivers call that DataFusion lacks, `version()`, and the parser's rewrites of PostgreSQL
//! spellings. Every front end shares them; none registers anything that reads files.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::{QueryError, Sql};

/// The PostgreSQL version Tally speaks as (`server_version`, `version()`): drivers choose
/// their catalog queries by it.
pub const POSTGRES_VERSION: &str = "16.6";

/// The parser every statement goes through: PostgreSQL's dialect plus the rewrites of
/// PostgreSQL-only spellings that drivers send (built once: its rule tables are fixed).
pub(crate) fn parser() -> &'static PostgresCompatibilityParser {
    static PARSER: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    PARSER.get_or_init(PostgresCompatibilityParser::new)
}

impl Sql {
    /// Registers PostgreSQL's catalog and the functions drivers call, in the shared context.
    pub async fn add_postgres_catalog(&self) -> Result<(), QueryError> {
        setup_pg_catalog(self.context(), "tally", EmptyContextProvider).map_err(|e| *e)?;
        register_version(self);
        register_to_regtype(self).await?;
        register_catalog_functions(self);
        Ok(())
    }
}

/// `version()` answers like PostgreSQL's, which drivers parse, and says what it is.
fn register_version(sql: &Sql) {
    let text = format!(
        "PostgreSQL {} (Tally {}, an attribution ledger; SQL by Apache DataFusion)",
        POSTGRES_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let udf = create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    );
    sql.context().register_udf(udf);
}

/// `to_regtype(name)`: PostgreSQL's type lookup by name (NULL when unknown), which drivers use
/// to discover types (psycopg's `TypeInfo.fetch`, hence SQLAlchemy on connect). Answered from
/// the catalog's `pg_type`, read once.
async fn register_to_regtype(sql: &Sql) -> Result<(), QueryError> {
    let err = QueryError::DataFusion;
    let batches = sql
        .context()
        .sql("SELECT typname, oid FROM pg_catalog.pg_type")
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let Some(first) = batches.first() else {
        return Err(QueryError::Internal("pg_catalog.pg_type is empty".into()));
    };
    let oid_type = first.schema().field(1).data_type().clone();
    let mut oids = std::collections::HashMap::new();
    for b in &batches {
        for row in 0..b.num_rows() {
            let name = ScalarValue::try_from_array(b.column(0), row).map_err(err)?;
            let oid = ScalarValue::try_from_array(b.column(1), row).map_err(err)?;
            if let ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)) = name {
                oids.insert(n, oid);
            }
        }
    }
    // The SQL spellings drivers ask for, beside pg_type's own names.
    for (alias, name) in [
        ("integer", "int4"),
        ("int", "int4"),
        ("bigint", "int8"),
        ("smallint", "int2"),
        ("boolean", "bool"),
        ("double precision", "float8"),
        ("real", "float4"),
        ("character varying", "varchar"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"),
    ] {
        if let Some(oid) = oids.get(name).cloned() {
            oids.insert(alias.to_owned(), oid);
        }
    }
    let null = ScalarValue::try_from(&oid_type).map_err(err)?;
    let lookup = move |name: Option<&str>| -> ScalarValue {
        let Some(name) = name else { return null.clone() };
        let name = name.trim().trim_matches('"').to_ascii_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        oids.get(name).cloned().unwrap_or_else(|| null.clone())
    };
    let udf = create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        oid_type,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Scalar(v) => {
                let name = match v {
                    ScalarValue::Utf8(n) | ScalarValue::Utf8View(n) | ScalarValue::LargeUtf8(n) => {
                        n.as_deref()
                    }
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(lookup(name)))
            }
            ColumnarValue::Array(a) => {
                let values = (0..a.len())
                    .map(|i| match ScalarValue::try_from_array(a, i)? {
                        ScalarValue::Utf8(n)
                        | ScalarValue::Utf8View(n)
                        | ScalarValue::LargeUtf8(n) => Ok(lookup(n.as_deref())),
                        _ => Ok(lookup(None)),
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                Ok(ColumnarValue::Array(ScalarValue::iter_to_array(values)?))
            }
        }),
    );
    sql.context().register_udf(udf);
    Ok(())
}

/// Catalog functions drivers call that DataFusion lacks. Most have a fixed answer here: the
/// ledger's tables have no serial columns (`pg_get_serial_sequence` is NULL) and one collation
/// (always visible); `json_build_object` is real.
fn register_catalog_functions(sql: &Sql) {
    let null_text = create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    );
    sql.context().register_udf(null_text);
    for name in ["pg_collation_is_visible", "pg_type_is_visible"] {
        sql.context().register_udf(create_udf(
            name,
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Stable,
            Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
        ));
    }
    // json_build_object(k1, v1, …): SQLAlchemy's column reflection builds identity and
    // collation details with it.
    let json = datafusion::logical_expr::expr_fn::SimpleScalarUDF::new_with_signature(
        "json_build_object",
        datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                let mut object = String::from("{");
                for (i, pair) in args.chunks(2).enumerate() {
                    let value = |a: &ColumnarValue| match a {
                        ColumnarValue::Scalar(v) => Ok(v.clone()),
                        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, row),
                    };
                    if i > 0 {
                        object.push_str(", ");
                    }
                    object.push_str(&json_value(&value(&pair[0])?, true));
                    object.push_str(" : ");
                    let v = pair.get(1).map(value).transpose()?.unwrap_or(ScalarValue::Null);
                    object.push_str(&json_value(&v, false));
                }
                object.push('}');
                out.push(Some(object));
            }
            let array = datafusion::arrow::array::StringArray::from(out);
            Ok(if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            } else {
                ColumnarValue::Array(Arc::new(array))
            })
        }),
    );
    sql.context().register_udf(datafusion::logical_expr::ScalarUDF::from(json));
}

/// A value as JSON text: numbers and booleans bare, NULL as null, everything else a string.
fn json_value(v: &ScalarValue, key: bool) -> String {
    if v.is_null() {
        return "null".into();
    }
    let text = v.to_string();
    let bare = !key
        && matches!(
            v,
            ScalarValue::Boolean(_)
                | ScalarValue::Int8(_)
                | ScalarValue::Int16(_)
                | ScalarValue::Int32(_)
                | ScalarValue::Int64(_)
                | ScalarValue::UInt8(_)
                | ScalarValue::UInt16(_)
                | ScalarValue::UInt32(_)
                | ScalarValue::UInt64(_)
        );
    if bare {
        text
    } else {
        let mut quoted = String::with_capacity(text.len() + 2);
        quoted.push('"');
        for c in text.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    }
}
