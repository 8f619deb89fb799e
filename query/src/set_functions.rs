//! PostgreSQL's set-returning functions and composite field access that drivers' catalog
//! queries use, spelled as DataFusion plans them. DataFusion's only set-returning function is
//! `unnest`, whose calls in one select list are zipped as PostgreSQL zips set-returning
//! functions, so:
//! - `generate_subscripts(a, 1)` (the subscripts of a one-dimensional array; SQLAlchemy's
//!   index and primary-key queries) is `unnest(range(1, cardinality(a) + 1))`; any other
//!   dimension has none (the catalog's arrays are one-dimensional);
//! - `information_schema._pg_expandarray(a)` (each element with its subscript, as `(x, n)`;
//!   pgjdbc's primary keys and indexes) is `unnest(_pg_expandarray_rows(a))`, a list of such
//!   structs;
//! - `(composite).field` is `get_field(composite, 'field')`, which DataFusion's parser does
//!   not spell with a dot on an expression.
//!
//! Never: rewrite a call whose arguments are not the plain ones described here.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, ListArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, AccessExpr, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Rewrites the spellings above in `statement`.
pub(crate) fn rewrite(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        let text = match expr {
            Expr::Function(_) => {
                match (call_of(expr, "generate_subscripts"), call_of(expr, "_pg_expandarray")) {
                    (Some([array, dim]), _) => Some(format!(
                    "unnest(range(1, CASE WHEN {dim} = 1 THEN CAST(cardinality({array}) AS BIGINT) \
                     + 1 ELSE 1 END))"
                )),
                    (_, Some([array])) => Some(format!("unnest(_pg_expandarray_rows({array}))")),
                    _ => None,
                }
            }
            Expr::CompoundFieldAccess { root, access_chain } => match access_chain.as_slice() {
                [AccessExpr::Dot(Expr::Identifier(field))] if !is_column(root) => Some(format!(
                    "get_field({root}, '{}')",
                    field.value.to_lowercase().replace('\'', "''")
                )),
                _ => None,
            },
            _ => None,
        };
        if let Some(text) = text {
            let parsed = Parser::new(&PostgreSqlDialect {}).try_with_sql(&text);
            if let Ok(replacement) = parsed.and_then(|mut p| p.parse_expr()) {
                *expr = replacement;
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_))
}

/// The arguments of a call to `name` (any schema), when all are plain expressions.
fn call_of<'a, const N: usize>(expr: &'a Expr, name: &str) -> Option<[&'a Expr; N]> {
    let Expr::Function(f) = expr else { return None };
    let called = f.name.0.last()?.as_ident()?;
    if !called.value.eq_ignore_ascii_case(name) {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else { return None };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<_>>()?;
    args.try_into().ok()
}

/// `_pg_expandarray_rows(a)`: the elements of list `a` with their subscripts, as a list of
/// `{x, n}` structs (what `unnest` turns into `_pg_expandarray`'s rows).
pub(crate) fn expandarray_rows() -> ScalarUDF {
    ScalarUDF::from(ExpandArrayRows { signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArrayRows {
    signature: Signature,
}

fn row_fields(element: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("x", element.clone(), true),
        Field::new("n", DataType::Int32, false),
    ])
}

impl ScalarUDFImpl for ExpandArrayRows {
    fn name(&self) -> &str {
        "_pg_expandarray_rows"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let DataType::List(element) = &args[0] else {
            return exec_err!("_pg_expandarray takes an array, not {}", args[0]);
        };
        let row = DataType::Struct(row_fields(element.data_type()));
        Ok(DataType::List(Arc::new(Field::new("item", row, true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let lists = args.args[0].to_array(rows)?;
        let Some(lists) = lists.as_list_opt::<i32>() else {
            return exec_err!("_pg_expandarray takes an array");
        };
        // Each element keeps its place; its subscript counts from 1 within its own list.
        let offsets = lists.offsets();
        let subscripts: Int32Array = (0..lists.len())
            .flat_map(|i| {
                let len = offsets[i + 1] - offsets[i];
                1..=len
            })
            .collect();
        let start = offsets[0] as usize;
        let values = lists.values().slice(start, offsets[lists.len()] as usize - start);
        let fields = row_fields(values.data_type());
        let columns: Vec<ArrayRef> = vec![values, Arc::new(subscripts)];
        let structs = StructArray::try_new(fields.clone(), columns, None)?;
        let shifted = OffsetBuffer::new(offsets.iter().map(|o| o - offsets[0]).collect());
        let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
        let list = ListArray::try_new(item, shifted, Arc::new(structs), lists.nulls().cloned())?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}
