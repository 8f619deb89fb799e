//! A bound on what one call of a function may produce. DataFusion's memory pool counts what
//! sorts, joins and aggregates hold, but not the values scalar functions make, and some make
//! values far larger than their arguments: `repeat('x', 2000000000)` took 8 GB of the server's
//! memory in one call. The functions whose output can outgrow their input without bound are
//! wrapped here: before the call, an upper bound of the bytes it would produce for the batch
//! is computed from its arguments, and a call over `MAX_CALL_OUTPUT_BYTES` is refused (54000)
//! instead of run. Everything else about the function is the original's (delegated).
//!
//! Functions whose output is linear in their input (`concat`, `upper`, `encode`, …) are
//! bounded by the statement and batch limits already; aggregates by the memory pool.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::{cast, length};
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};
use datafusion::prelude::SessionContext;

use crate::QueryError;

/// The most one call of a bounded function may produce, over its whole batch.
pub const MAX_CALL_OUTPUT_BYTES: u64 = 256 << 20;
/// A generous size of one array element in the output of an array function.
const ELEMENT_BYTES: u64 = 16;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    /// `repeat(text, n)`: the text's bytes times n.
    Repeat,
    /// `lpad/rpad(text, n [, fill])`: n characters of up to 4 bytes, or the text.
    Pad,
    /// `replace(text, from, to)`: every occurrence of `from` (one per byte when empty) becomes `to`.
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: a match at every position at
    /// worst, each replaced by the replacement with every `\N` standing for the whole text.
    RegexpReplace,
    /// `array_repeat(x, n)`, `array_resize(a, n [, x])`: n elements.
    Elements { count_arg: usize },
    /// `range(start, stop [, step])`, `generate_series(…)` as scalar functions: one element
    /// per step.
    Range,
}

const BOUNDED: [(&str, Bound); 8] = [
    ("repeat", Bound::Repeat),
    ("lpad", Bound::Pad),
    ("rpad", Bound::Pad),
    ("replace", Bound::Replace),
    ("regexp_replace", Bound::RegexpReplace),
    ("array_repeat", Bound::Elements { count_arg: 1 }),
    ("array_resize", Bound::Elements { count_arg: 1 }),
    ("range", Bound::Range),
];

/// Replaces the functions of `BOUNDED` (and `generate_series`, `range`'s twin) in `ctx` with
/// bounded wrappers.
pub(crate) fn register(ctx: &SessionContext) -> Result<(), QueryError> {
    let state = ctx.state();
    let functions = state.scalar_functions();
    let named = BOUNDED.iter().chain(&[("generate_series", Bound::Range)]);
    for (name, bound) in named {
        let Some(inner) = functions.get(*name) else {
            return Err(QueryError::Unsupported(format!("the SQL engine lacks {name}")));
        };
        let wrapped = Bounded { inner: inner.inner().clone().into(), bound: *bound };
        ctx.register_udf(ScalarUDF::new_from_impl(wrapped));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    bound: Bound,
}

/// Each row's value of an argument as an array of the batch's length.
fn column(args: &ScalarFunctionArgs, k: usize) -> Result<Option<ArrayRef>> {
    args.args.get(k).map(|a| a.to_array(args.number_rows)).transpose()
}

/// Byte lengths of a text argument, per row (0 for NULL).
fn lengths(args: &ScalarFunctionArgs, k: usize) -> Result<Vec<u64>> {
    let Some(array) = column(args, k)? else { return Ok(vec![0; args.number_rows]) };
    if !matches!(array.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return Ok(vec![0; args.number_rows]);
    }
    let lens = cast::cast(&length::length(&array)?, &DataType::Int64)?;
    let lens = lens.as_primitive::<Int64Type>();
    Ok((0..lens.len())
        .map(|i| if lens.is_null(i) { 0 } else { lens.value(i).max(0) as u64 })
        .collect())
}

/// An integer argument, per row (0 for NULL or a value that is not an integer).
fn integers(args: &ScalarFunctionArgs, k: usize) -> Result<Vec<i64>> {
    let Some(array) = column(args, k)? else { return Ok(vec![0; args.number_rows]) };
    let Ok(ints) = cast::cast(&array, &DataType::Int64) else {
        return Ok(vec![0; args.number_rows]);
    };
    let ints = ints.as_primitive::<Int64Type>();
    Ok((0..ints.len()).map(|i| if ints.is_null(i) { 0 } else { ints.value(i) }).collect())
}

/// Occurrences of `\` in each row of a text argument (backreferences at most).
fn backslashes(args: &ScalarFunctionArgs, k: usize) -> Result<Vec<u64>> {
    let Some(array) = column(args, k)? else { return Ok(vec![0; args.number_rows]) };
    let count = |s: &str| s.bytes().filter(|b| *b == b'\\').count() as u64;
    Ok(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(|s| s.map_or(0, count)).collect(),
        DataType::LargeUtf8 => {
            array.as_string::<i64>().iter().map(|s| s.map_or(0, count)).collect()
        }
        DataType::Utf8View => array.as_string_view().iter().map(|s| s.map_or(0, count)).collect(),
        _ => vec![0; args.number_rows],
    })
}

impl Bound {
    /// An upper bound of the bytes a call would produce for the whole batch (saturating).
    fn output_bytes(self, args: &ScalarFunctionArgs) -> Result<u64> {
        let rows = args.number_rows;
        let per_row: Vec<u64> = match self {
            Bound::Repeat => {
                let (text, n) = (lengths(args, 0)?, integers(args, 1)?);
                (0..rows).map(|i| text[i].saturating_mul(n[i].max(0) as u64)).collect()
            }
            Bound::Pad => {
                let (text, n) = (lengths(args, 0)?, integers(args, 1)?);
                (0..rows).map(|i| text[i].max((n[i].max(0) as u64).saturating_mul(4))).collect()
            }
            Bound::Replace => {
                let (text, from, to) = (lengths(args, 0)?, lengths(args, 1)?, lengths(args, 2)?);
                (0..rows)
                    .map(|i| {
                        let matches = text[i] / from[i].max(1) + 1;
                        text[i].saturating_add(matches.saturating_mul(to[i]))
                    })
                    .collect()
            }
            Bound::RegexpReplace => {
                let (text, rep, refs) =
                    (lengths(args, 0)?, lengths(args, 2)?, backslashes(args, 2)?);
                (0..rows)
                    .map(|i| {
                        let each = rep[i].saturating_add(refs[i].saturating_mul(text[i]));
                        text[i].saturating_add((text[i] + 1).saturating_mul(each))
                    })
                    .collect()
            }
            Bound::Elements { count_arg } => {
                let n = integers(args, count_arg)?;
                n.iter().map(|n| (n.max(&0).unsigned_abs()).saturating_mul(ELEMENT_BYTES)).collect()
            }
            Bound::Range => {
                let (a, b) = (integers(args, 0)?, integers(args, 1)?);
                let step = if args.args.len() > 2 { integers(args, 2)? } else { vec![1; rows] };
                (0..rows)
                    .map(|i| {
                        let span = (i128::from(b[i]) - i128::from(a[i])).unsigned_abs();
                        let steps = span / u128::from(step[i].unsigned_abs().max(1)) + 1;
                        u64::try_from(steps).unwrap_or(u64::MAX).saturating_mul(ELEMENT_BYTES)
                    })
                    .collect()
            }
        };
        Ok(per_row.into_iter().fold(0u64, u64::saturating_add))
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[allow(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.bound.output_bytes(&args)?;
        if bytes > MAX_CALL_OUTPUT_BYTES {
            let e = QueryError::TooLarge(format!(
                "{}() would produce up to {} MiB here, more than the {} MiB one call may",
                self.name(),
                bytes >> 20,
                MAX_CALL_OUTPUT_BYTES >> 20
            ));
            return Err(DataFusionError::External(Box::new(e)));
        }
        self.inner.invoke_with_args(args)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_what_the_functions_make() {
        let rows = 3;
        let args = |values: Vec<ScalarValue>| ScalarFunctionArgs {
            arg_fields: vec![],
            args: values.into_iter().map(ColumnarValue::Scalar).collect(),
            number_rows: rows,
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                "r",
                DataType::Utf8,
                true,
            )),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let text = |s: &str| ScalarValue::Utf8(Some(s.into()));
        let n = |v: i64| ScalarValue::Int64(Some(v));
        let repeat = args(vec![text("ab"), n(10)]);
        assert_eq!(Bound::Repeat.output_bytes(&repeat).unwrap(), 3 * 20);
        let huge = args(vec![text("x"), n(2_000_000_000)]);
        assert!(Bound::Repeat.output_bytes(&huge).unwrap() > MAX_CALL_OUTPUT_BYTES);
        let replace = args(vec![text("aaaa"), text("a"), text("bb")]);
        assert!(Bound::Replace.output_bytes(&replace).unwrap() >= 3 * 8);
        let range = args(vec![n(1), n(1_000_000_000_000)]);
        assert!(Bound::Range.output_bytes(&range).unwrap() > MAX_CALL_OUTPUT_BYTES);
        let negative = args(vec![text("x"), n(-5)]);
        assert_eq!(Bound::Repeat.output_bytes(&negative).unwrap(), 0);
    }
}
