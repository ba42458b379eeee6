//! Composite metrics: one value computed from a ScaledTarget's metrics, which then only feed
//! it (KEDA's `scalingModifiers`). The expression is written in CEL's syntax, the language of
//! the CRD's own validation rules, parsed by the `cel` crate's parser and evaluated here over numbers:
//! number literals, the metrics by name (a `-` in a name is written `_`), `+ - * /`, unary `-`,
//! comparisons, `&& || !`, `c ? a : b`, `min(..)` and `max(..)`. Everything else CEL has
//! (strings, lists, fields, macros, other functions) is refused when the formula is parsed,
//! with what was found, and types are checked then too: a formula parses only if it gives a
//! number for any input values.
//!
//! A formula has no value when an input it reads has none (never 0: the same rule as for any
//! metric, so fallback applies), nor when it comes out NaN or infinite (a division by zero).

use super::NoData;
use super::target::Reading;

/// A parsed formula over the metrics of one ScaledTarget, by index in `spec.metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Number(f64),
    Bool(bool),
    Input(usize),
    Negate(Box<Node>),
    Not(Box<Node>),
    Binary(Op, Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    Min(Vec<Node>),
    Max(Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    Number,
    Bool,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Number => "a number",
            Type::Bool => "true or false",
        }
    }
}

/// Why a formula does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormulaError {
    /// Not CEL syntax; at line and column (from 1) of the expression.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: isize,
        column: isize,
        message: String,
    },
    /// A name that is no metric of the ScaledTarget.
    #[error("unknown name {name:?}: the formula can read {known}")]
    UnknownName { name: String, known: String },
    /// CEL that a formula does not take.
    #[error(
        "{0} is not supported in a formula (numbers, metric names, + - * /, comparisons, && || !, ?: and min/max only)"
    )]
    Unsupported(String),
    /// A value of the wrong type.
    #[error("{0}")]
    Type(String),
}

/// Why a formula has no value at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoValue {
    /// Input `index` has no data.
    Input(usize, NoData),
    /// The result (or a step) is NaN or infinite, as after a division by zero.
    NotFinite,
}

impl NoValue {
    /// As a reading's reason: no data of its input, else a failed source.
    pub fn no_data(self) -> NoData {
        match self {
            NoValue::Input(_, e) => e,
            NoValue::NotFinite => NoData::SourceFailed,
        }
    }
}

/// The name a metric is written as in a formula: CEL identifiers hold no `-`.
pub fn identifier(metric: &str) -> String {
    metric.replace('-', "_")
}

impl Formula {
    /// Parses `expression` over the metrics named `metrics` (by their formula identifiers) and
    /// checks that it gives a number.
    pub fn parse(expression: &str, metrics: &[&str]) -> Result<Self, FormulaError> {
        let ast = cel::parser::Parser::new().parse(expression).map_err(|e| {
            let first = e.errors.first();
            FormulaError::Syntax {
                line: first.map_or(1, |f| f.pos.0),
                column: first.map_or(1, |f| f.pos.1),
                // ANTLR's "expecting {...}" lists CEL that a formula does not take.
                message: first.map_or_else(
                    || e.to_string(),
                    |f| {
                        let m = f.msg.trim_start_matches("Syntax error: ");
                        m.split(" expecting ").next().unwrap_or(m).to_string()
                    },
                ),
            }
        })?;
        let ids: Vec<String> = metrics.iter().map(|m| identifier(m)).collect();
        let root = convert(&ast, &ids)?;
        match type_of(&root)? {
            Type::Number => Ok(Formula { root }),
            Type::Bool => Err(FormulaError::Type(
                "the formula gives true or false: it must give a number (e.g. `a > 10 ? a : 0`)"
                    .into(),
            )),
        }
    }

    /// The formula's value on `readings` (index-aligned with the metrics it was parsed over).
    pub fn evaluate(&self, readings: &[Reading]) -> Result<f64, NoValue> {
        match eval(&self.root, readings)? {
            Value::Number(v) if v.is_finite() => Ok(v),
            Value::Number(_) => Err(NoValue::NotFinite),
            Value::Bool(_) => unreachable!("parse checked the formula gives a number"),
        }
    }

    /// [`Self::evaluate`] as a reading.
    pub fn reading(&self, readings: &[Reading]) -> Reading {
        self.evaluate(readings).map_err(NoValue::no_data)
    }
}

fn convert(e: &cel::IdedExpr, ids: &[String]) -> Result<Node, FormulaError> {
    use cel::common::ast::operators as op;
    use cel::common::ast::{Expr, LiteralValue as Val};
    let unsupported = |what: &str| Err(FormulaError::Unsupported(what.to_string()));
    match &e.expr {
        Expr::Literal(Val::Int(v)) => Ok(Node::Number(*v.inner() as f64)),
        Expr::Literal(Val::UInt(v)) => Ok(Node::Number(*v.inner() as f64)),
        Expr::Literal(Val::Double(v)) => Ok(Node::Number(*v.inner())),
        Expr::Literal(Val::Boolean(b)) => Ok(Node::Bool(*b.inner())),
        Expr::Literal(Val::String(_)) => unsupported("a string"),
        Expr::Literal(Val::Bytes(_)) => unsupported("a bytes literal"),
        Expr::Literal(Val::Null) => unsupported("null"),
        Expr::Ident(name) => match ids.iter().position(|id| id == name) {
            Some(i) => Ok(Node::Input(i)),
            None => Err(FormulaError::UnknownName {
                name: name.clone(),
                known: if ids.is_empty() {
                    "no metric".into()
                } else {
                    ids.join(", ")
                },
            }),
        },
        Expr::Call(call) => {
            if call.target.is_some() {
                return unsupported(&format!("the method call .{}()", call.func_name));
            }
            let args = call
                .args
                .iter()
                .map(|a| convert(a, ids))
                .collect::<Result<Vec<_>, _>>()?;
            let mut args = args.into_iter();
            let mut next = || args.next().map(Box::new);
            let binary = |op, a: Option<Box<Node>>, b: Option<Box<Node>>| match (a, b) {
                (Some(a), Some(b)) => Ok(Node::Binary(op, a, b)),
                _ => Err(FormulaError::Unsupported(call.func_name.clone())),
            };
            match call.func_name.as_str() {
                op::ADD => binary(Op::Add, next(), next()),
                op::SUBSTRACT => binary(Op::Sub, next(), next()),
                op::MULTIPLY => binary(Op::Mul, next(), next()),
                op::DIVIDE => binary(Op::Div, next(), next()),
                op::LESS => binary(Op::Lt, next(), next()),
                op::LESS_EQUALS => binary(Op::Le, next(), next()),
                op::GREATER => binary(Op::Gt, next(), next()),
                op::GREATER_EQUALS => binary(Op::Ge, next(), next()),
                op::EQUALS => binary(Op::Eq, next(), next()),
                op::NOT_EQUALS => binary(Op::Ne, next(), next()),
                op::LOGICAL_AND => binary(Op::And, next(), next()),
                op::LOGICAL_OR => binary(Op::Or, next(), next()),
                op::NEGATE => next()
                    .map(Node::Negate)
                    .ok_or_else(|| FormulaError::Unsupported("-".into())),
                op::LOGICAL_NOT => next()
                    .map(Node::Not)
                    .ok_or_else(|| FormulaError::Unsupported("!".into())),
                op::CONDITIONAL => match (next(), next(), next()) {
                    (Some(c), Some(a), Some(b)) => Ok(Node::Conditional(c, a, b)),
                    _ => unsupported("?:"),
                },
                "min" | "max" if call.args.is_empty() => {
                    unsupported(&format!("{}() with no argument", call.func_name))
                }
                "min" => Ok(Node::Min(args_of(next))),
                "max" => Ok(Node::Max(args_of(next))),
                op::MODULO => unsupported("%"),
                op::IN => unsupported("in"),
                op::INDEX | op::OPT_INDEX => unsupported("indexing"),
                other => unsupported(&format!("the function {other}()")),
            }
        }
        Expr::Select(s) if s.test => unsupported("the macro has()"),
        Expr::Select(s) => unsupported(&format!("the field selection .{}", s.field)),
        Expr::List(_) => unsupported("a list"),
        Expr::Map(_) => unsupported("a map"),
        Expr::Struct(_) => unsupported("a message literal"),
        Expr::Comprehension(_) => unsupported("a macro (has, all, exists, map, filter)"),
        Expr::Unspecified => unsupported("an empty expression"),
    }
}

fn args_of(mut next: impl FnMut() -> Option<Box<Node>>) -> Vec<Node> {
    std::iter::from_fn(|| next().map(|b| *b)).collect()
}

fn type_of(n: &Node) -> Result<Type, FormulaError> {
    let want = |n: &Node, t: Type, context: &str| -> Result<(), FormulaError> {
        let got = type_of(n)?;
        if got == t {
            Ok(())
        } else {
            Err(FormulaError::Type(format!(
                "{context} takes {}, not {}",
                t.name(),
                got.name()
            )))
        }
    };
    Ok(match n {
        Node::Number(_) | Node::Input(_) => Type::Number,
        Node::Bool(_) => Type::Bool,
        Node::Negate(a) => {
            want(a, Type::Number, "unary -")?;
            Type::Number
        }
        Node::Not(a) => {
            want(a, Type::Bool, "!")?;
            Type::Bool
        }
        Node::Binary(op, a, b) => {
            let (operand, result, name) = match op {
                Op::Add => (Type::Number, Type::Number, "+"),
                Op::Sub => (Type::Number, Type::Number, "-"),
                Op::Mul => (Type::Number, Type::Number, "*"),
                Op::Div => (Type::Number, Type::Number, "/"),
                Op::Lt => (Type::Number, Type::Bool, "<"),
                Op::Le => (Type::Number, Type::Bool, "<="),
                Op::Gt => (Type::Number, Type::Bool, ">"),
                Op::Ge => (Type::Number, Type::Bool, ">="),
                Op::Eq | Op::Ne => {
                    let name = if *op == Op::Eq { "==" } else { "!=" };
                    want(
                        b,
                        type_of(a)?,
                        &format!("{name} with {} on its left", type_of(a)?.name()),
                    )?;
                    return Ok(Type::Bool);
                }
                Op::And => (Type::Bool, Type::Bool, "&&"),
                Op::Or => (Type::Bool, Type::Bool, "||"),
            };
            want(a, operand, name)?;
            want(b, operand, name)?;
            result
        }
        Node::Conditional(c, a, b) => {
            want(c, Type::Bool, "the condition of ?:")?;
            let t = type_of(a)?;
            want(b, t, "the two branches of ?: must agree: the second")?;
            t
        }
        Node::Min(args) | Node::Max(args) => {
            for a in args {
                want(a, Type::Number, "min and max")?;
            }
            Type::Number
        }
    })
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Number(f64),
    Bool(bool),
}

impl Value {
    fn number(self) -> f64 {
        match self {
            Value::Number(v) => v,
            Value::Bool(_) => unreachable!("type-checked"),
        }
    }
    fn bool(self) -> bool {
        match self {
            Value::Bool(b) => b,
            Value::Number(_) => unreachable!("type-checked"),
        }
    }
}

/// Strict in its inputs: every input the formula names must have a value, also in a branch
/// not taken, so that whether a formula has a value does not flip with the data.
fn eval(n: &Node, readings: &[Reading]) -> Result<Value, NoValue> {
    let num = |n: &Node| eval(n, readings).map(Value::number);
    Ok(match n {
        Node::Number(v) => Value::Number(*v),
        Node::Bool(b) => Value::Bool(*b),
        Node::Input(i) => match readings.get(*i) {
            Some(Ok(v)) if v.is_finite() => Value::Number(*v),
            Some(Ok(_)) => return Err(NoValue::Input(*i, NoData::SourceFailed)),
            Some(Err(e)) => return Err(NoValue::Input(*i, *e)),
            None => return Err(NoValue::Input(*i, NoData::Empty)),
        },
        Node::Negate(a) => Value::Number(-num(a)?),
        Node::Not(a) => Value::Bool(!eval(a, readings)?.bool()),
        Node::Binary(op, a, b) => {
            let (a, b) = (eval(a, readings)?, eval(b, readings)?);
            match op {
                Op::Add => Value::Number(a.number() + b.number()),
                Op::Sub => Value::Number(a.number() - b.number()),
                Op::Mul => Value::Number(a.number() * b.number()),
                Op::Div => Value::Number(a.number() / b.number()),
                Op::Lt => Value::Bool(a.number() < b.number()),
                Op::Le => Value::Bool(a.number() <= b.number()),
                Op::Gt => Value::Bool(a.number() > b.number()),
                Op::Ge => Value::Bool(a.number() >= b.number()),
                Op::Eq | Op::Ne => {
                    let equal = match (a, b) {
                        (Value::Number(x), Value::Number(y)) => x == y,
                        (Value::Bool(x), Value::Bool(y)) => x == y,
                        _ => unreachable!("type-checked"),
                    };
                    Value::Bool(equal == (*op == Op::Eq))
                }
                Op::And => Value::Bool(a.bool() && b.bool()),
                Op::Or => Value::Bool(a.bool() || b.bool()),
            }
        }
        Node::Conditional(c, a, b) => {
            let (c, a, b) = (eval(c, readings)?, eval(a, readings)?, eval(b, readings)?);
            if c.bool() { a } else { b }
        }
        Node::Min(args) | Node::Max(args) => {
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                values.push(num(a)?);
            }
            let pick = if matches!(n, Node::Min(_)) {
                f64::min
            } else {
                f64::max
            };
            let first = values[0];
            Value::Number(values[1..].iter().fold(first, |acc, &v| pick(acc, v)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: [&str; 3] = ["orders", "payments", "queue-depth"];

    fn value(expression: &str, readings: &[Reading]) -> Result<f64, NoValue> {
        Formula::parse(expression, &METRICS)
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
            .evaluate(readings)
    }

    #[test]
    fn arithmetic_comparisons_conditionals_and_min_max_over_the_metrics() {
        let r = [Ok(30.0), Ok(12.0), Ok(5.0)];
        assert_eq!(value("orders + payments", &r), Ok(42.0));
        assert_eq!(value("orders / payments * 2 - 1", &r), Ok(4.0));
        assert_eq!(value("-orders + 1.5", &r), Ok(-28.5));
        assert_eq!(value("max(orders, payments * 3, 7)", &r), Ok(36.0));
        assert_eq!(value("min(orders, payments)", &r), Ok(12.0));
        assert_eq!(value("min(queue_depth)", &r), Ok(5.0));
        // KEDA's documented "AND of two signals".
        assert_eq!(
            value("orders > 20 && payments > 10 ? orders : 0", &r),
            Ok(30.0)
        );
        assert_eq!(
            value("orders > 20 && payments > 20 ? orders : 0", &r),
            Ok(0.0)
        );
        assert_eq!(
            value("!(orders == 30) || payments != 12 ? 1 : 2", &r),
            Ok(2.0)
        );
        assert_eq!(value("orders >= 30 && payments <= 12 ? 1 : 2", &r), Ok(1.0));
    }

    #[test]
    fn no_input_no_value_and_a_division_by_zero_is_no_number() {
        let failed = [Ok(30.0), Err(NoData::SourceFailed), Ok(0.0)];
        assert_eq!(
            value("orders + payments", &failed),
            Err(NoValue::Input(1, NoData::SourceFailed))
        );
        // Strict also in the branch not taken: no value flipping with the data.
        assert_eq!(
            value("orders > 1 ? orders : payments", &failed),
            Err(NoValue::Input(1, NoData::SourceFailed))
        );
        assert_eq!(
            value("orders / queue_depth", &failed),
            Err(NoValue::NotFinite)
        );
        assert_eq!(
            value("queue_depth / queue_depth", &failed),
            Err(NoValue::NotFinite)
        );
        assert_eq!(
            value("orders", &[Ok(f64::NAN), Ok(1.0), Ok(1.0)]),
            Err(NoValue::Input(0, NoData::SourceFailed))
        );
        let f = Formula::parse("orders + 1", &METRICS).unwrap();
        assert_eq!(f.reading(&failed), Ok(31.0));
        assert_eq!(f.reading(&[Err(NoData::Stale)]), Err(NoData::Stale));
    }

    #[test]
    fn refusals_say_what_and_where() {
        let err = |e: &str| Formula::parse(e, &METRICS).unwrap_err();
        match err("orders +") {
            FormulaError::Syntax { line, column, .. } => assert_eq!((line, column), (1, 9)),
            other => panic!("{other:?}"),
        }
        match err("orders\n  * (payments") {
            FormulaError::Syntax { line, .. } => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err("order + 1").to_string(),
            "unknown name \"order\": the formula can read orders, payments, queue_depth"
        );
        // A metric name with `-` is written with `_`; as written it is a subtraction.
        assert!(
            matches!(err("queue-depth"), FormulaError::UnknownName { name, .. } if name == "queue")
        );
        for (expression, what) in [
            ("orders % 2", "%"),
            ("size(orders)", "the function size()"),
            ("orders.rate", "the field selection .rate"),
            ("'a' == 'a' ? 1 : 2", "a string"),
            ("[orders][0]", "a list"),
            ("has(orders.x) ? 1 : 0", "the macro has()"),
            ("[orders].all(x, x > 1) ? 1 : 0", "a macro"),
            ("max()", "max() with no argument"),
        ] {
            let e = err(expression).to_string();
            assert!(e.contains(what), "{expression}: {e}");
        }
        assert!(
            err("orders > 1")
                .to_string()
                .contains("gives true or false")
        );
        assert!(
            err("orders + (payments > 1)")
                .to_string()
                .contains("+ takes a number")
        );
        assert!(
            err("orders ? 1 : 2")
                .to_string()
                .contains("condition of ?:")
        );
        assert!(
            err("orders > 1 ? 1 : true")
                .to_string()
                .contains("branches")
        );
        assert!(err("!orders").to_string().contains("! takes true or false"));
    }
}
