//! What PostgreSQL clients expect beyond the ledger's tables: PostgreSQL's catalog
//! (`pg_catalog`, for psql's `\d`, JDBC, psycopg and SQLAlchemy), the catalog functions
//! drivers call that DataFusion lacks, `version()`, and the parser's rewrites of PostgreSQL
//! spellings. Every front end shares them; none registers anything that reads files.

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    visit_relations, Expr, Query, SelectItem, SetExpr, Statement, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::{QueryError, Sql};

/// The PostgreSQL version Tally speaks as (`server_version`, `version()`): drivers choose
/// their catalog queries by it.
pub const POSTGRES_VERSION: &str = "16.6";

/// The parser every statement goes through: PostgreSQL's dialect plus the rewrites of
/// PostgreSQL-only spellings that drivers send (built once: its rule tables are fixed).
fn parser() -> &'static PostgresCompatibilityParser {
    static PARSER: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    PARSER.get_or_init(PostgresCompatibilityParser::new)
}

/// Parses `sql` with the catalog crate's rewrites, except one where it would answer wrongly:
/// its rule that makes every scalar subquery of a select list that it takes for correlated
/// (or that holds a `$1`) NULL, and puts `LIMIT 1` on the others. Subqueries that read the
/// ledger's tables are kept out of that rule's reach (in parentheses, which it does not look
/// into), so they are planned as written: correlated ones with `only_row` (`subquery.rs`).
/// Subqueries over the catalog alone (psql's `\d` asks for column defaults and collations
/// so) are left to the rule: the ledger's tables have no defaults, identities or collations
/// of their own, so NULL is what PostgreSQL would answer too. Statements the crate rewrites as
/// a whole (its list of known driver queries) are taken as it rewrites them.
pub(crate) fn parse(sql: &str) -> Result<Vec<Statement>, ParserError> {
    let full = parser().parse(sql)?;
    // Only a statement with a subquery or an oid cast can need it (a look at the text, which
    // is not copied: an INSERT's text may be hundreds of megabytes).
    let ours = occurrences(sql, "select") > 1 || occurrences(sql, "::reg") > 0;
    if !ours {
        return Ok(full);
    }
    let Ok(raw) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return Ok(full) };
    let rewritten: Vec<Statement> = raw.iter().cloned().map(|s| parser().rewrite(s)).collect();
    if rewritten != full {
        // The crate replaced the statement's tokens (a known driver query): keep its version.
        return Ok(full);
    }
    Ok(raw
        .into_iter()
        .map(|mut s| {
            let _ = s.visit(&mut BeforeRewrites);
            parser().rewrite(s)
        })
        .collect())
}

/// How many times `word` (lower-case ASCII) is in `text`, in any case.
fn occurrences(text: &str, word: &str) -> usize {
    let word = word.as_bytes();
    text.as_bytes().windows(word.len()).filter(|w| w.eq_ignore_ascii_case(word)).count()
}

/// Whether `query` reads a table that is not PostgreSQL's catalog.
fn reads_the_ledger(query: &Query) -> bool {
    let mut ledger = false;
    let _ = visit_relations(query, |name| {
        let parts: Vec<String> =
            name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_lowercase()).collect();
        let catalog = match parts.as_slice() {
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [table] => table.starts_with("pg_"),
            [] => true,
        };
        ledger |= !catalog;
        ControlFlow::<()>::Continue(())
    });
    ledger
}

/// What the statement needs before the crate's rewrites: each scalar subquery that is an item
/// of a select list and reads the ledger goes in parentheses, and a name cast to an oid type
/// (`'pg_catalog.array_in'::regproc`, `'public.balances'::regclass`) loses its schema, which
/// the crate's lookup by name does not expect (every object of the catalog is in
/// `pg_catalog`, every table of the ledger in `public`).
struct BeforeRewrites;

/// The oid types a name can be cast to.
const OID_NAME_TYPES: [&str; 6] =
    ["regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regoper"];

impl VisitorMut for BeforeRewrites {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Cast { expr: inner, data_type, .. } = expr {
            let type_name = data_type.to_string().to_ascii_lowercase();
            let type_name = type_name.rsplit('.').next().unwrap_or_default();
            if let (true, Expr::Value(v)) = (OID_NAME_TYPES.contains(&type_name), inner.as_mut()) {
                if let Value::SingleQuotedString(name) = &mut v.value {
                    if let Some((_, object)) = name.rsplit_once('.') {
                        *name = object.trim_matches('"').to_owned();
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item
                else {
                    continue;
                };
                if matches!(e, Expr::Subquery(q) if reads_the_ledger(q)) {
                    let subquery = std::mem::replace(e, Expr::Value(Value::Null.with_empty_span()));
                    *e = Expr::Nested(Box::new(subquery));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

impl Sql {
    /// Registers PostgreSQL's catalog and the functions drivers call, in the shared context.
    pub async fn add_postgres_catalog(&self) -> Result<(), QueryError> {
        setup_pg_catalog(self.context(), "tally", EmptyContextProvider).map_err(|e| *e)?;
        crate::driver_catalog::replace(self.context(), "tally").await?;
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
    let null_text = |name: &str, args: Vec<DataType>| {
        let null =
            Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))));
        create_udf(name, args, DataType::Utf8, Volatility::Stable, null)
    };
    sql.context()
        .register_udf(null_text("pg_get_serial_sequence", vec![DataType::Utf8, DataType::Utf8]));
    sql.context().register_udf(current_setting());
    sql.context().register_udf(crate::set_functions::expandarray_rows());
    // pg_get_indexdef(index, column, pretty): no index of pg_index is one of Tally's (its rows
    // are PostgreSQL's own catalog indexes, carried by the catalog crate), so there is no
    // definition to show: NULL, as PostgreSQL answers for an oid that is no index of its.
    let index_args = vec![DataType::Int64, DataType::Int64, DataType::Boolean];
    sql.context().register_udf(null_text("pg_get_indexdef", index_args));
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

/// `current_setting(name [, missing_ok])` for the server's fixed settings
/// (`driver_catalog::SERVER_SETTINGS`, also in `pg_settings`; SQLAlchemy's table reflection
/// asks for `default_table_access_method`). A function of the shared context cannot see a
/// connection's own SET values, so any other name is refused, naming SHOW, which answers for
/// the session.
fn current_setting() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{Signature, TypeSignature};
    let signature = Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Utf8]),
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
        ],
        Volatility::Stable,
    );
    let udf = datafusion::logical_expr::expr_fn::SimpleScalarUDF::new_with_signature(
        "current_setting",
        signature,
        DataType::Utf8,
        Arc::new(|args: &[ColumnarValue]| {
            let missing_ok = match args.get(1) {
                Some(ColumnarValue::Scalar(ScalarValue::Boolean(b))) => b.unwrap_or(false),
                Some(_) => {
                    return Err(datafusion::error::DataFusionError::NotImplemented(
                        "current_setting's missing_ok must be a constant".into(),
                    ))
                }
                None => false,
            };
            let lookup = |name: Option<&str>| -> datafusion::error::Result<Option<String>> {
                let Some(name) = name else { return Ok(None) };
                let known = crate::driver_catalog::SERVER_SETTINGS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name));
                match known {
                    Some((_, value)) => Ok(Some((*value).to_owned())),
                    None if missing_ok => Ok(None),
                    None => Err(datafusion::error::DataFusionError::External(Box::new(
                        QueryError::Unsupported(format!(
                            "current_setting({name:?}): only the server's fixed settings are \
                             answered here; SHOW {name} answers for this session"
                        )),
                    ))),
                }
            };
            match &args[0] {
                ColumnarValue::Scalar(ScalarValue::Utf8(name)) => {
                    Ok(ColumnarValue::Scalar(ScalarValue::Utf8(lookup(name.as_deref())?)))
                }
                ColumnarValue::Array(names) => {
                    let names = datafusion::arrow::array::AsArray::as_string::<i32>(names);
                    let values =
                        names.iter().map(lookup).collect::<datafusion::error::Result<Vec<_>>>()?;
                    Ok(ColumnarValue::Array(Arc::new(datafusion::arrow::array::StringArray::from(
                        values,
                    ))))
                }
                other => Err(datafusion::error::DataFusionError::Internal(format!(
                    "current_setting of {other:?}"
                ))),
            }
        }),
    );
    datafusion::logical_expr::ScalarUDF::from(udf)
}
