//! Numeric bounds a WHERE clause puts on columns, and the threshold
//! predicates rules compare them with (`amount > 10000`).
//!
//! The question a threshold rule asks is "may this statement read a row
//! beyond the threshold?", so every doubt resolves to "yes": a conjunct the
//! gateway cannot read simply does not narrow anything.

use std::collections::BTreeMap;
use std::fmt;

use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

use crate::facts::{Bound, ColumnBounds, Interval};

/// Bounds implied by one WHERE clause: the conjunction (top-level `AND`s) of
/// comparisons between a column and a numeric literal.
pub(crate) fn of_where(selection: Option<&Expr>) -> BTreeMap<String, Interval> {
    let mut bounds = BTreeMap::new();
    if let Some(expr) = selection {
        add_conjuncts(expr, &mut bounds);
    }
    bounds
}

fn add_conjuncts(expr: &Expr, bounds: &mut BTreeMap<String, Interval>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            add_conjuncts(left, bounds);
            add_conjuncts(right, bounds);
        }
        Expr::Nested(inner) => add_conjuncts(inner, bounds),
        Expr::BinaryOp { left, op, right } => {
            let (column, value, op) = match (column_of(left), number_of(right)) {
                (Some(column), Some(value)) => (column, value, op.clone()),
                _ => match (number_of(left), column_of(right), flip(op)) {
                    (Some(value), Some(column), Some(op)) => (column, value, op),
                    _ => return,
                },
            };
            let interval = match op {
                BinaryOperator::Gt => Interval::above(value, false),
                BinaryOperator::GtEq => Interval::above(value, true),
                BinaryOperator::Lt => Interval::below(value, false),
                BinaryOperator::LtEq => Interval::below(value, true),
                BinaryOperator::Eq => Interval::between(value, value),
                _ => return,
            };
            narrow(bounds, column, interval);
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => {
            if let (Some(column), Some(low), Some(high)) =
                (column_of(expr), number_of(low), number_of(high))
            {
                narrow(bounds, column, Interval::between(low, high));
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } => {
            let Some(column) = column_of(expr) else {
                return;
            };
            let values: Option<Vec<f64>> = list.iter().map(number_of).collect();
            if let Some(values) = values.filter(|v| !v.is_empty()) {
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                narrow(bounds, column, Interval::between(low, high));
            }
        }
        _ => {}
    }
}

fn narrow(bounds: &mut BTreeMap<String, Interval>, column: String, interval: Interval) {
    let entry = bounds.entry(column).or_default();
    *entry = entry.intersect(&interval);
}

/// `5 < amount` is `amount > 5`.
fn flip(op: &BinaryOperator) -> Option<BinaryOperator> {
    Some(match op {
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Eq => BinaryOperator::Eq,
        _ => return None,
    })
}

/// A bare column reference (`amount`, `p.amount`, `"amount"`). A cast or
/// function around the column could change the values compared, so it is
/// not a bound on the column.
fn column_of(expr: &Expr) -> Option<String> {
    let ident = match expr {
        Expr::Identifier(ident) => ident,
        Expr::CompoundIdentifier(idents) => idents.last()?,
        Expr::Nested(inner) => return column_of(inner),
        _ => return None,
    };
    Some(match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    })
}

/// A numeric literal, possibly signed, parenthesized, cast or quoted
/// (`'10000'` compares as a number with a numeric column).
fn number_of(expr: &Expr) -> Option<f64> {
    let number = match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(text, _) | Value::SingleQuotedString(text) => {
                text.trim().parse::<f64>().ok()?
            }
            _ => return None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => -number_of(expr)?,
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => number_of(expr)?,
        Expr::Nested(inner) => number_of(inner)?,
        Expr::Cast { expr, .. } => number_of(expr)?,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

/// Statement-wide bounds from the bounds of each scope (query block with a
/// FROM clause, UPDATE, DELETE): a column is bounded only when every scope
/// bounds it, by the hull of their intervals. No scope → nothing bounded.
pub(crate) fn hull_of_scopes(
    scopes: Vec<BTreeMap<String, Interval>>,
) -> BTreeMap<String, Interval> {
    let mut scopes = scopes.into_iter();
    let Some(mut hull) = scopes.next() else {
        return BTreeMap::new();
    };
    for scope in scopes {
        hull = hull
            .into_iter()
            .filter_map(|(column, interval)| {
                scope
                    .get(&column)
                    .map(|other| (column, interval.hull(other)))
            })
            .collect();
    }
    hull
}

impl Interval {
    fn above(value: f64, inclusive: bool) -> Interval {
        Interval {
            lower: Some(Bound { value, inclusive }),
            upper: None,
        }
    }

    fn below(value: f64, inclusive: bool) -> Interval {
        Interval {
            lower: None,
            upper: Some(Bound { value, inclusive }),
        }
    }

    fn between(low: f64, high: f64) -> Interval {
        Interval {
            lower: Some(Bound {
                value: low,
                inclusive: true,
            }),
            upper: Some(Bound {
                value: high,
                inclusive: true,
            }),
        }
    }

    /// Values in both intervals.
    pub fn intersect(&self, other: &Interval) -> Interval {
        Interval {
            lower: tighter(self.lower, other.lower, |a, b| a > b),
            upper: tighter(self.upper, other.upper, |a, b| a < b),
        }
    }

    /// The smallest interval holding both.
    fn hull(&self, other: &Interval) -> Interval {
        Interval {
            lower: looser(self.lower, other.lower, |a, b| a < b),
            upper: looser(self.upper, other.upper, |a, b| a > b),
        }
    }

    /// Whether any value lies in the interval.
    pub fn is_empty(&self) -> bool {
        match (self.lower, self.upper) {
            (Some(lower), Some(upper)) => {
                lower.value > upper.value
                    || (lower.value == upper.value && !(lower.inclusive && upper.inclusive))
            }
            _ => false,
        }
    }
}

/// The stricter of two bounds on the same side; `beyond(a, b)` says `a` is stricter.
fn tighter(a: Option<Bound>, b: Option<Bound>, beyond: fn(f64, f64) -> bool) -> Option<Bound> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) if beyond(a.value, b.value) => Some(a),
        (Some(a), Some(b)) if beyond(b.value, a.value) => Some(b),
        (Some(a), Some(b)) => Some(Bound {
            value: a.value,
            inclusive: a.inclusive && b.inclusive,
        }),
    }
}

/// The looser of two bounds on the same side; an open side stays open.
fn looser(a: Option<Bound>, b: Option<Bound>, beyond: fn(f64, f64) -> bool) -> Option<Bound> {
    match (a, b) {
        (Some(a), Some(b)) if beyond(a.value, b.value) => Some(a),
        (Some(a), Some(b)) if beyond(b.value, a.value) => Some(b),
        (Some(a), Some(b)) => Some(Bound {
            value: a.value,
            inclusive: a.inclusive || b.inclusive,
        }),
        _ => None,
    }
}

/// A threshold predicate from a rule: `column op number` with op one of
/// `>`, `>=`, `<`, `<=`, `=`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Threshold {
    column: String,
    op: &'static str,
    interval: Interval,
}

impl Threshold {
    /// Parses `amount > 10000` (spaces optional, column case-insensitive).
    pub(crate) fn parse(text: &str) -> Result<Threshold, String> {
        let text = text.trim();
        let split = text.find(['<', '>', '=']).ok_or_else(|| {
            format!("{text:?} has no comparison; write it like \"amount > 10000\"")
        })?;
        let column = text[..split].trim();
        let rest = &text[split..];
        let (op, number) = ["<=", ">=", "<", ">", "="]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op).map(|number| (op, number.trim())))
            .ok_or_else(|| format!("{text:?}: unknown comparison"))?;
        let valid_column = !column.is_empty()
            && column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_column {
            return Err(format!("{text:?}: {column:?} is not a column name"));
        }
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("{text:?}: {number:?} is not a number"))?;
        let interval = match op {
            ">" => Interval::above(value, false),
            ">=" => Interval::above(value, true),
            "<" => Interval::below(value, false),
            "<=" => Interval::below(value, true),
            _ => Interval::between(value, value),
        };
        Ok(Threshold {
            column: column.to_lowercase(),
            op,
            interval,
        })
    }

    /// Whether a statement with these bounds may read a row satisfying the
    /// predicate.
    pub(crate) fn may_match(&self, bounds: &ColumnBounds) -> bool {
        !bounds
            .get(&self.column)
            .intersect(&self.interval)
            .is_empty()
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .interval
            .lower
            .or(self.interval.upper)
            .map(|b| b.value)
            .unwrap_or_default();
        write!(f, "{} {} {}", self.column, self.op, value)
    }
}
