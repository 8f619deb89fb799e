//! The names PostgreSQL gives a query's result columns, which clients show and look columns up
//! by: an expression without an alias is named after what it is (`count(*)` is `count`,
//! `x::int` is `x`, `CASE …` is `case`) or `?column?` (`1`, `a + b`), where DataFusion would
//! name it by its text (`Int64(1)`, `t.a + t.b`). This is PostgreSQL's FigureColname
//! (parse_target.c) over the statement's select list. Columns, aliases and `*` keep the names
//! DataFusion gives them, which are PostgreSQL's already.
//!
//! Never: rename the plan's columns (PostgreSQL allows two columns of one name, DataFusion's
//! plans do not): only the schema the client is told is renamed.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Ident, Query, Select, SelectItem, SetExpr, Statement, Value,
};

/// PostgreSQL's name for a column it cannot name otherwise.
const UNNAMED: &str = "?column?";

/// `schema` (a query's result) with the names PostgreSQL would give its columns for
/// `statement`. When the select list cannot be matched to the columns one to one (several
/// `*`), the names stay as they are.
pub fn result_schema(statement: &Statement, schema: &Schema) -> SchemaRef {
    let renamed = select_of(statement).and_then(|s| names(s, schema.fields().len()));
    let Some(names) = renamed else { return Arc::new(schema.clone()) };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| match name {
            Some(name) => f.as_ref().clone().with_name(name),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The select whose list names the result: a query's, or the first branch of a set
/// operation (PostgreSQL takes the names of the first).
fn select_of(statement: &Statement) -> Option<&Select> {
    match statement {
        Statement::Query(q) => select_of_query(q),
        _ => None,
    }
}

fn select_of_query(query: &Query) -> Option<&Select> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::Select(s) => return Some(s),
            SetExpr::Query(q) => body = q.body.as_ref(),
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            _ => return None,
        }
    }
}

/// A new name for each of `fields` columns (`None`: keep DataFusion's).
fn names(select: &Select, fields: usize) -> Option<Vec<Option<String>>> {
    let items = &select.projection;
    let wildcards = items.iter().filter(|i| is_wildcard(i)).count();
    let expanded = match wildcards {
        0 if items.len() == fields => 0,
        1 if fields + 1 >= items.len() => fields + 1 - items.len(),
        _ => return None,
    };
    let mut out = Vec::with_capacity(fields);
    for item in items {
        match item {
            SelectItem::UnnamedExpr(e) if !is_column(e) => out.push(Some(figure(e))),
            _ if is_wildcard(item) => out.extend(std::iter::repeat_n(None, expanded)),
            _ => out.push(None),
        }
    }
    (out.len() == fields).then_some(out)
}

fn is_wildcard(item: &SelectItem) -> bool {
    matches!(item, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))
}

fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// FigureColname: the name PostgreSQL gives expression `e`.
fn figure(e: &Expr) -> String {
    named(e).unwrap_or_else(|| UNNAMED.into())
}

/// The name `e` carries, if any (`None`: `?column?`, unless an enclosing cast names it).
fn named(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(folded(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(folded),
        Expr::CompoundFieldAccess { root, .. } => named(root),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => named(inner),
        Expr::Cast { expr, data_type, .. } => named(expr).or_else(|| Some(type_name(data_type))),
        Expr::TypedString(t) => Some(type_name(&t.data_type)),
        Expr::Value(v) => match v.value {
            // PostgreSQL reads `true` as `'t'::bool`.
            Value::Boolean(_) => Some("bool".into()),
            _ => None,
        },
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(folded),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Tuple(_) => Some("row".into()),
        Expr::Interval(_) => Some("interval".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Subquery(q) => subquery_name(q),
        _ => None,
    }
}

/// A scalar subquery is named by its own (first) column.
fn subquery_name(q: &Query) -> Option<String> {
    match select_of_query(q)?.projection.first()? {
        SelectItem::UnnamedExpr(e) => named(e),
        SelectItem::ExprWithAlias { alias, .. } => Some(folded(alias)),
        _ => None,
    }
}

/// An identifier as PostgreSQL stores it: unquoted ones fold to lower case.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// A type as PostgreSQL's catalog names it (`integer` is `int4`).
fn type_name(t: &DataType) -> String {
    let text = t.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or_default().trim();
    let name = match base {
        "integer" | "int" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "double" | "float8" | "float" => "float8",
        "boolean" | "bool" => "bool",
        "character varying" | "varchar" => "varchar",
        "character" | "char" => "bpchar",
        "decimal" | "numeric" => "numeric",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        other => other,
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType as ArrowType;

    use super::*;

    /// The names the client sees for `sql`, whose result has `columns` columns.
    fn seen(sql: &str, columns: usize) -> Vec<String> {
        let statement = crate::Sql::parse(sql).unwrap().statements.remove(0);
        let fields: Vec<Field> =
            (0..columns).map(|i| Field::new(format!("df{i}"), ArrowType::Int64, true)).collect();
        let schema = result_schema(&statement, &Schema::new(fields));
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn unaliased_expressions_are_named_as_postgresql_names_them() {
        assert_eq!(seen("SELECT 1, 1 + 2, 'x'", 3), ["?column?", "?column?", "?column?"]);
        assert_eq!(seen("SELECT count(*), Upper(owner) FROM datanets", 2), ["count", "upper"]);
        assert_eq!(
            seen("SELECT fee::int, CAST(1 AS bigint), true FROM inferences", 3),
            ["fee", "int8", "bool"]
        );
        assert_eq!(
            seen("SELECT CASE WHEN true THEN 1 END, (SELECT max(fee) FROM inferences)", 2),
            ["case", "max"]
        );
        assert_eq!(
            seen("SELECT EXISTS (SELECT 1), ARRAY[1], \"Quoted\"(1)", 3),
            ["exists", "array", "Quoted"]
        );
    }

    #[test]
    fn columns_aliases_and_wildcards_keep_their_names() {
        assert_eq!(
            seen("SELECT account, earned AS e, 1 AS one FROM balances", 3),
            ["df0", "df1", "df2"]
        );
        assert_eq!(seen("SELECT *, 1 FROM balances", 5), ["df0", "df1", "df2", "df3", "?column?"]);
        // Two wildcards cannot be matched to the columns: nothing is renamed.
        assert_eq!(seen("SELECT *, 1, * FROM epochs", 3), ["df0", "df1", "df2"]);
        // A set operation is named by its first branch.
        assert_eq!(seen("SELECT 1 UNION ALL SELECT 2 AS two", 1), ["?column?"]);
        assert!(seen("INSERT INTO datanets VALUES ('a', 'b')", 1) == ["df0"]);
    }
}
