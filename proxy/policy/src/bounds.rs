//! Numeric bounds a WHERE clause puts on columns, and the threshold
//! predicates rules compare them with (`amount > 10000`). WHERE clauses are
//! read from PostgreSQL's own parse tree (see `crate::classify`).
//!
//! The question a threshold rule asks is "may this statement read a row
//! beyond the threshold?", so every doubt resolves to "yes": a conjunct the
//! gateway cannot read simply does not narrow anything.

use std::collections::BTreeMap;
use std::fmt;

use pg_query::protobuf::{AExprKind, BoolExprType};
use serde_json::Value;

use crate::facts::{Bound, Interval};

/// One comparison of a WHERE clause's top-level conjunction, as a bound on
/// a column: `p.amount < 500` is column `amount` of the FROM item `p`.
pub(crate) struct Conjunct {
    /// The name before the column (`p` in `p.amount`), if any.
    pub(crate) qualifier: Option<String>,
    pub(crate) column: String,
    pub(crate) interval: Interval,
}

/// The comparisons between a column and a numeric literal in the
/// conjunction (top-level `AND`s) of a WHERE clause (a parse-tree node).
/// Sets `beyond_range` when a number too large for `f64` (`1e999`) was
/// compared: whether it bounds anything depended on its value, which
/// statements of one shape do not share.
pub(crate) fn conjuncts(where_clause: &Value, beyond_range: &mut bool) -> Vec<Conjunct> {
    let mut out = Vec::new();
    add_conjuncts(where_clause, &mut out, beyond_range);
    out
}

fn tagged(value: &Value) -> Option<(&str, &Value)> {
    let node = value.as_object()?.get("node")?.as_object()?;
    if node.len() != 1 {
        return None;
    }
    node.iter().next().map(|(tag, body)| (tag.as_str(), body))
}

fn int(value: &Value, name: &str) -> i64 {
    value.get(name).and_then(Value::as_i64).unwrap_or(0)
}

fn items<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    value
        .get(name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The operator of an `A_Expr` (`<`, `=`, …); qualified operators
/// (`OPERATOR(pg_catalog.<)`) are not read as bounds.
fn operator(expr: &Value) -> Option<&str> {
    match items(expr, "name") {
        [single] => match tagged(single)? {
            ("String", s) => s.get("sval")?.as_str(),
            _ => None,
        },
        _ => None,
    }
}

fn add_conjuncts(expr: &Value, out: &mut Vec<Conjunct>, beyond_range: &mut bool) {
    let Some((tag, body)) = tagged(expr) else {
        return;
    };
    match tag {
        "BoolExpr" if int(body, "boolop") == BoolExprType::AndExpr as i64 => {
            for arg in items(body, "args") {
                add_conjuncts(arg, out, beyond_range);
            }
        }
        "AExpr" => {
            let kind = int(body, "kind");
            let (Some(left), Some(right)) = (body.get("lexpr"), body.get("rexpr")) else {
                return;
            };
            if kind == AExprKind::AexprOp as i64 {
                let Some(op) = operator(body) else {
                    return;
                };
                let (column, value, op) = match (column_of(left), number_of(right, beyond_range)) {
                    (Some(column), Some(value)) => (column, value, op),
                    _ => match (number_of(left, beyond_range), column_of(right), flip(op)) {
                        (Some(value), Some(column), Some(op)) => (column, value, op),
                        _ => return,
                    },
                };
                let interval = match op {
                    ">" => Interval::above(value, false),
                    ">=" => Interval::above(value, true),
                    "<" => Interval::below(value, false),
                    "<=" => Interval::below(value, true),
                    "=" => Interval::between(value, value),
                    _ => return,
                };
                out.push(conjunct(column, interval));
            } else if kind == AExprKind::AexprBetween as i64 {
                let Some(column) = column_of(left) else {
                    return;
                };
                let Some(("List", bounds)) = tagged(right) else {
                    return;
                };
                if let [low, high] = items(bounds, "items") {
                    if let (Some(low), Some(high)) =
                        (number_of(low, beyond_range), number_of(high, beyond_range))
                    {
                        out.push(conjunct(column, Interval::between(low, high)));
                    }
                }
            } else if kind == AExprKind::AexprIn as i64 && operator(body) == Some("=") {
                let Some(column) = column_of(left) else {
                    return;
                };
                let Some(("List", list)) = tagged(right) else {
                    return;
                };
                let values: Option<Vec<f64>> = items(list, "items")
                    .iter()
                    .map(|v| number_of(v, beyond_range))
                    .collect();
                if let Some(values) = values.filter(|v| !v.is_empty()) {
                    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    out.push(conjunct(column, Interval::between(low, high)));
                }
            }
        }
        _ => {}
    }
}

fn conjunct(column: Vec<String>, interval: Interval) -> Conjunct {
    let mut column = column;
    let name = column.pop().unwrap_or_default();
    Conjunct {
        qualifier: column.pop(),
        column: name,
        interval,
    }
}

/// Narrows `column`'s interval in `bounds` by `interval`.
pub(crate) fn narrow(bounds: &mut BTreeMap<String, Interval>, column: String, interval: Interval) {
    let entry = bounds.entry(column).or_default();
    *entry = entry.intersect(&interval);
}

/// `5 < amount` is `amount > 5`.
fn flip(op: &str) -> Option<&'static str> {
    Some(match op {
        ">" => "<",
        ">=" => "<=",
        "<" => ">",
        "<=" => ">=",
        "=" => "=",
        _ => return None,
    })
}

/// A bare column reference (`amount`, `p.amount`, `"amount"`), as its
/// name parts. A cast or function around the column could change the
/// values compared, so it is not a bound on the column.
fn column_of(expr: &Value) -> Option<Vec<String>> {
    let ("ColumnRef", column) = tagged(expr)? else {
        return None;
    };
    items(column, "fields")
        .iter()
        .map(|part| match tagged(part)? {
            ("String", s) => s.get("sval")?.as_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// A numeric literal, possibly signed, cast or quoted (`'10000'` compares
/// as a number with a numeric column).
fn number_of(expr: &Value, beyond_range: &mut bool) -> Option<f64> {
    let (tag, body) = tagged(expr)?;
    let number = match tag {
        "AConst" => {
            let value = body.get("val")?;
            if let Some(i) = value.get("Ival") {
                i.get("ival").and_then(Value::as_i64).unwrap_or(0) as f64
            } else if let Some(f) = value.get("Fval") {
                let number = f.get("fval")?.as_str()?.trim().parse::<f64>().ok()?;
                *beyond_range |= !number.is_finite();
                number
            } else if let Some(s) = value.get("Sval") {
                s.get("sval")?.as_str()?.trim().parse::<f64>().ok()?
            } else {
                return None;
            }
        }
        "TypeCast" => number_of(body.get("arg")?, beyond_range)?,
        "AExpr" if int(body, "kind") == AExprKind::AexprOp as i64 => {
            let left = body.get("lexpr").filter(|l| !l.is_null());
            match (operator(body)?, left) {
                ("-", None) => -number_of(body.get("rexpr")?, beyond_range)?,
                ("+", None) => number_of(body.get("rexpr")?, beyond_range)?,
                _ => return None,
            }
        }
        _ => return None,
    };
    number.is_finite().then_some(number)
}

/// Bounds of a relation read in two places: a column stays bounded only
/// when both bound it, by the hull of the two intervals.
pub(crate) fn hull(
    a: &BTreeMap<String, Interval>,
    b: &BTreeMap<String, Interval>,
) -> BTreeMap<String, Interval> {
    a.iter()
        .filter_map(|(column, interval)| {
            b.get(column)
                .map(|other| (column.clone(), interval.hull(other)))
        })
        .collect()
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
    pub(crate) fn hull(&self, other: &Interval) -> Interval {
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

    /// The column the predicate is about (lowercased).
    pub(crate) fn column(&self) -> &str {
        &self.column
    }

    /// Whether a relation whose column lies in `interval` may hold a row
    /// satisfying the predicate.
    pub(crate) fn may_match(&self, interval: &Interval) -> bool {
        !interval.intersect(&self.interval).is_empty()
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
