//! Scalar subqueries as PostgreSQL runs them: `(SELECT x FROM t WHERE t.k = o.k)` is the
//! value of its one row, NULL with no row, and an error (SQLSTATE 21000) with more. DataFusion
//! plans a correlated one only when it is aggregated (it cannot otherwise know that at most
//! one row comes back), and fails an uncorrelated one that finds no row on a non-nullable
//! column, so this analyzer rule puts the aggregate `only_row(x)` on top of every scalar
//! subquery that has none: the same answer for one row, NULL for none, and PostgreSQL's error
//! for two. Conditions on the outer row alone are moved out of the
//! subquery into a CASE around it, since DataFusion cannot decorrelate them. Drivers' catalog
//! queries (SQLAlchemy's `get_columns` over `pg_attrdef`) are written this way.
//!
//! Never: change a subquery that is already aggregated.

use std::mem::size_of_val;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions::core::expr_fn::{get_field, named_struct};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{conjunction, format_state_name, split_conjunction_owned};
use datafusion::logical_expr::{
    lit, when, Accumulator, AggregateUDF, AggregateUDFImpl, Expr, Filter, LogicalPlan,
    LogicalPlanBuilder, Projection, Signature, Subquery, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

use crate::QueryError;

/// The rule (registered in every `Sql` context).
#[derive(Debug, Default)]
pub(crate) struct ScalarSubqueryRows;

impl AnalyzerRule for ScalarSubqueryRows {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // The rewritten expressions keep their names: the nodes above refer to them.
            let names = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_up(|e| match e {
                    Expr::ScalarSubquery(s) if needs_one_row(&s) => {
                        Ok(Transformed::yes(as_one_row(s)?))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(match rewritten.transformed {
                    true => Transformed::yes(name.restore(rewritten.data)),
                    false => rewritten,
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tally_scalar_subquery_rows"
    }
}

/// A scalar subquery of one column that is not aggregated: correlated, DataFusion would
/// refuse to plan it; uncorrelated, it would fail on an empty answer (its column is taken for
/// non-nullable: `only_row` of no row is NULL) or answer with the first of several rows.
fn needs_one_row(s: &Subquery) -> bool {
    if s.subquery.schema().fields().len() != 1 {
        return false;
    }
    !matches!(innermost(&s.subquery), LogicalPlan::Aggregate(_))
        && !matches!(innermost(&s.subquery), LogicalPlan::Filter(f)
            if matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)))
}

/// The plan under the projections and aliases a subquery's answer passes through (what
/// DataFusion looks at to decide whether it is aggregated).
fn innermost(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::Projection(p) => innermost(&p.input),
        LogicalPlan::SubqueryAlias(a) => innermost(&a.input),
        other => other,
    }
}

/// The subquery `s` as `only_row` of its column. Conditions of its filter on the outer row
/// alone (`WHERE o.flag AND t.k = o.k`), which DataFusion cannot pull out of a subquery, are
/// taken out first: `(SELECT x … WHERE p AND q)` is `CASE WHEN p THEN (SELECT x … WHERE q)
/// END`, the same value (no row, when `p` is not true, is NULL either way).
fn as_one_row(s: Subquery) -> Result<Expr> {
    let (plan, outer) = hoist(Arc::unwrap_or_clone(s.subquery))?;
    let (plan, value_of) = lift_outer_value(plan)?;
    let outer_ref_columns = plan.all_out_ref_exprs();
    let s = Subquery { subquery: Arc::new(plan), outer_ref_columns, ..s };
    let row = Expr::ScalarSubquery(one_row(s)?);
    let value = match value_of {
        // No row is NULL, whatever the expression would make of NULL fields.
        Some(value) => when(row.clone().is_not_null(), value(row)?).end()?,
        None => row,
    };
    match conjunction(outer) {
        Some(condition) => when(as_outer_row(condition)?, value).end(),
        None => Ok(value),
    }
}

/// How the outer query computes a subquery's value from the row the subquery gives.
type ValueOf = Box<dyn FnOnce(Expr) -> Result<Expr>>;

/// A subquery whose value reads the outer row (`SELECT f(o.a, t.b) FROM t WHERE …`), which
/// DataFusion cannot decorrelate, gives the row of the columns it reads instead
/// (`named_struct('c0', t.b)`), and the value is computed from that row in the outer query
/// (`f(o.a, row.c0)`).
fn lift_outer_value(plan: LogicalPlan) -> Result<(LogicalPlan, Option<ValueOf>)> {
    let LogicalPlan::Projection(p) = &plan else { return Ok((plan, None)) };
    let [e] = p.expr.as_slice() else { return Ok((plan, None)) };
    let e = e.clone().unalias();
    let mut reads_outer = false;
    let mut columns = Vec::new();
    e.apply(|e| {
        match e {
            Expr::OuterReferenceColumn(..) => reads_outer = true,
            Expr::Column(c) if !columns.contains(c) => columns.push(c.clone()),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if !reads_outer {
        return Ok((plan, None));
    }
    let name = |i: usize| format!("c{i}");
    let mut fields = vec![lit("row"), lit(true)];
    for (i, c) in columns.iter().enumerate() {
        fields.extend([lit(name(i)), Expr::Column(c.clone())]);
    }
    let input = Arc::clone(&p.input);
    let row = named_struct(fields).alias("row");
    let plan = LogicalPlan::Projection(Projection::try_new(vec![row], input)?);
    let value: ValueOf = Box::new(move |row: Expr| {
        let computed = e.transform(|e| match e {
            Expr::OuterReferenceColumn(_, column) => Ok(Transformed::yes(Expr::Column(column))),
            Expr::Column(c) => {
                let i = columns.iter().position(|k| *k == c).expect("a column collected above");
                Ok(Transformed::yes(get_field(row.clone(), name(i))))
            }
            other => Ok(Transformed::no(other)),
        });
        computed.map(|t| t.data)
    });
    Ok((plan, Some(value)))
}

/// `plan` without the conditions of its filter (under its projections) that read only the
/// outer row, and those conditions.
fn hoist(plan: LogicalPlan) -> Result<(LogicalPlan, Vec<Expr>)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let (input, outer) = hoist(Arc::unwrap_or_clone(p.input))?;
            let plan = Projection::try_new(p.expr, Arc::new(input))?;
            Ok((LogicalPlan::Projection(plan), outer))
        }
        LogicalPlan::Filter(f) => {
            let (outer, inner): (Vec<Expr>, Vec<Expr>) =
                split_conjunction_owned(f.predicate).into_iter().partition(reads_outer_row_only);
            let plan = match conjunction(inner) {
                Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, f.input)?),
                None => Arc::unwrap_or_clone(f.input),
            };
            Ok((plan, outer))
        }
        other => Ok((other, Vec::new())),
    }
}

/// A condition on the outer row's columns only (no column of the subquery's own tables, no
/// subquery of its own, nothing volatile).
fn reads_outer_row_only(e: &Expr) -> bool {
    let mut outer = false;
    let mut other = false;
    e.apply(|e| {
        match e {
            Expr::OuterReferenceColumn(..) => outer = true,
            Expr::Column(_) | Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                other = true
            }
            Expr::ScalarFunction(f) if f.func.signature().volatility == Volatility::Volatile => {
                other = true
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("a walk that cannot fail");
    outer && !other
}

/// A condition on outer references as the outer query reads it (its own columns).
fn as_outer_row(e: Expr) -> Result<Expr> {
    e.transform(|e| match e {
        Expr::OuterReferenceColumn(_, column) => Ok(Transformed::yes(Expr::Column(column))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// `s` with `only_row` of its one column on top, under the column's own name.
fn one_row(s: Subquery) -> Result<Subquery> {
    let field = s.subquery.schema().field(0).clone();
    let column = Expr::Column(s.subquery.schema().columns()[0].clone());
    let aggregate = Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(only_row()),
        vec![column],
        false,
        None,
        vec![],
        None,
    ))
    .alias(field.name());
    let plan = LogicalPlanBuilder::from(Arc::unwrap_or_clone(s.subquery))
        .aggregate(Vec::<Expr>::new(), vec![aggregate])?
        .build()?;
    Ok(Subquery { subquery: Arc::new(plan), ..s })
}

fn only_row() -> AggregateUDF {
    AggregateUDF::from(OnlyRow { signature: Signature::any(1, Volatility::Immutable) })
}

/// The aggregate: its input's one value (NULL for none); more than one row is an error.
#[derive(Debug, PartialEq, Eq, Hash)]
struct OnlyRow {
    signature: Signature,
}

impl AggregateUDFImpl for OnlyRow {
    fn name(&self) -> &str {
        "only_row"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let value = ScalarValue::try_from(args.return_field.data_type())?;
        Ok(Box::new(OnlyRowAccumulator { value, rows: 0 }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let value =
            args.return_field.as_ref().clone().with_name(format_state_name(args.name, "value"));
        let rows = Field::new(format_state_name(args.name, "rows"), DataType::UInt64, false);
        Ok(vec![Arc::new(value.with_nullable(true)), Arc::new(rows)])
    }
}

#[derive(Debug)]
struct OnlyRowAccumulator {
    value: ScalarValue,
    /// Rows seen (at most 1, else `take` failed).
    rows: u64,
}

impl OnlyRowAccumulator {
    fn take(&mut self, value: ScalarValue, rows: u64) -> Result<()> {
        self.rows += rows;
        if self.rows > 1 {
            let e = QueryError::CardinalityViolation(
                "more than one row returned by a subquery used as an expression".into(),
            );
            return Err(DataFusionError::External(Box::new(e)));
        }
        self.value = value;
        Ok(())
    }
}

impl Accumulator for OnlyRowAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let column = &values[0];
        for row in 0..column.len() {
            self.take(ScalarValue::try_from_array(column, row)?, 1)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let counts = states[1].as_primitive::<UInt64Type>();
        for row in 0..counts.len() {
            let rows = counts.value(row);
            if rows > 0 {
                self.take(ScalarValue::try_from_array(&states[0], row)?, rows)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::UInt64(Some(self.rows))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.value.size() - size_of_val(&self.value)
    }
}
