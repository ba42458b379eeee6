//! `spec.advanced.scalingModifiers` to `spec.formula`. KEDA's formula is expr-lang/expr over the
//! triggers' `name`s; ebb's is CEL syntax over the metrics' names (a `-` written `_`). The
//! translation goes token by token: trigger names become the formula identifiers of the metrics
//! they were imported as, `and`/`or`/`not` become `&&`/`||`/`!`, `float(..)` (a no-op on the
//! numbers a formula holds) its parentheses, comments a space; numbers, `+ - * /`, comparisons,
//! `?:`, `min` and `max` read the same in both. Anything else expr-lang has is refused by name,
//! and what comes out is always checked by [`Formula::parse`], the parser ebb itself uses.
//!
//! The facts are KEDA's (kedacore/keda `apis/keda/v1alpha1/scaledobject_webhook.go`
//! `ValidateAndCompileScalingModifiers`, `pkg/scaling/modifiers/formula.go`, `controllers/keda/
//! hpa.go`) and expr-lang's (`parser/lexer/state.go`, `parser/operator/operator.go`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Cx, Loss, external_target, model, quantity};
use crate::crd::{FormulaMetric, Metric, TargetType, from_milli, milli_value};
use crate::engine::formula::{Formula, identifier};

const FIELD: &str = "spec.advanced.scalingModifiers";
/// The CRD's bound on `formula.expression`.
const MAX_EXPRESSION: usize = 1024;
/// The formula's name, unless a metric has it (KEDA's composite metric is `composite-metric`).
const NAME: &str = "composite";

/// The formula of a ScaledObject whose `metrics` came from `triggers`; `carried[i]` is the
/// metric `triggers[i]` became, if any. `None` with a refusal when KEDA's formula cannot be
/// carried over as it scales.
pub(crate) fn convert(
    cx: &mut Cx,
    sm: &model::ScalingModifiers,
    triggers: &[model::Trigger],
    carried: &[Option<String>],
    metrics: &[Metric],
) -> Option<FormulaMetric> {
    let target = target(cx, sm);
    let activation = match sm.activation_target.as_deref() {
        None => Some(None),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Some(Some(v)),
            _ => {
                cx.refuse(
                    format!("{FIELD}.activationTarget"),
                    format!("{text:?} is not a number: KEDA fails on it at every poll, so the ScaledObject never becomes active"),
                );
                None
            }
        },
    };
    let Some(formula) = sm.formula.as_deref() else {
        cx.refuse(
            format!("{FIELD}.formula"),
            "missing: scalingModifiers needs a formula (KEDA refuses it too)",
        );
        return None;
    };
    let expression = expression(cx, formula, triggers, carried, metrics);
    // ebb refuses a formula over these at admission; the import never writes them, but a
    // formula must not be the first to meet one.
    if let Some(m) = metrics
        .iter()
        .find(|m| m.target.type_ == TargetType::DrainTime || m.slo.is_some())
    {
        cx.refuse(
            format!("{FIELD}.formula"),
            format!("metric {} has target type DrainTime or an slo, which a formula's input cannot have", m.name),
        );
        return None;
    }
    let (expression, target, activation) = (expression?, target?, activation?);
    if expression != formula {
        cx.report(
            format!("{FIELD}.formula"),
            Loss::Note,
            format!("{formula:?} is written in ebb's syntax as {expression:?}"),
        );
    }
    let name = std::iter::once(NAME.to_string())
        .chain((2..).map(|n| format!("{NAME}-{n}")))
        .find(|n| metrics.iter().all(|m| &m.name != n))
        .expect("an unbounded list of names");
    Some(FormulaMetric {
        name,
        expression,
        target,
        activation,
    })
}

/// KEDA's `target` (a number above 0, required with a formula) and `metricType`.
fn target(cx: &mut Cx, sm: &model::ScalingModifiers) -> Option<crate::crd::MetricTarget> {
    let type_ = match sm.metric_type.as_deref().unwrap_or("AverageValue") {
        "AverageValue" => Some(TargetType::AverageValue),
        "Value" => Some(TargetType::Value),
        other => {
            cx.refuse(
                format!("{FIELD}.metricType"),
                format!("{other}: the composite metric is an external metric, of type AverageValue or Value (KEDA refuses it too)"),
            );
            None
        }
    };
    let field = format!("{FIELD}.target");
    let Some(text) = sm.target.as_deref() else {
        cx.refuse(
            field,
            "missing: the formula's value is scaled against it (KEDA refuses a formula without one)",
        );
        return None;
    };
    let value = match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => v,
        _ => {
            cx.refuse(
                field,
                format!("{text:?}: must be a number above 0 (KEDA refuses it too)"),
            );
            return None;
        }
    };
    // KEDA's HPA holds `resource.NewMilliQuantity(int64(target*1000), resource.DecimalSI)`
    // (controllers/keda/hpa.go, getScaledObjectMetricSpecs): the float product truncated, so
    // "32.3" is 32299m there (32.3 * 1000 is 32299.999...). ebb's HPA is given the same.
    let product = value * 1000.0;
    if product >= i64::MAX as f64 {
        cx.refuse(
            field,
            format!("{value} is not a quantity ebb can hold (too large)"),
        );
        return None;
    }
    // `as` truncates toward zero, as Go's int64() does.
    let milli = product as i64;
    if milli < 1 {
        cx.refuse(
            field,
            format!("{text:?}: KEDA's HPA target is int64({value} * 1000) = 0 milli-units, which the API server refuses (an HPA target must be positive)"),
        );
        return None;
    }
    let quantity = match quantity(value) {
        Some(q) if milli_value(&q.0) == Ok(milli) => q,
        _ => {
            let written = Quantity(from_milli(milli));
            cx.report(
                field,
                Loss::Note,
                format!("{text:?}: KEDA's HPA target is int64({value} * 1000) = {milli} milli-units (the float product truncated): written as {}, so that ebb's HPA has the same target", written.0),
            );
            written
        }
    };
    Some(external_target(type_?, quantity))
}

/// KEDA's formula in ebb's syntax over the metrics' names, checked by ebb's parser.
fn expression(
    cx: &mut Cx,
    formula: &str,
    triggers: &[model::Trigger],
    carried: &[Option<String>],
    metrics: &[Metric],
) -> Option<String> {
    let field = format!("{FIELD}.formula");
    let mut resolve = |name: &str| -> Result<String, String> {
        let named: Vec<usize> = (0..triggers.len())
            .filter(|&i| triggers[i].name.as_deref() == Some(name))
            .collect();
        let &[i] = named.as_slice() else {
            return Err(if named.is_empty() {
                format!(
                    "no trigger is named {name:?}: a formula reads triggers by their name (KEDA refuses it too)"
                )
            } else {
                format!(
                    "{} triggers are named {name:?} (KEDA refuses duplicate names)",
                    named.len()
                )
            });
        };
        let type_ = &triggers[i].type_;
        if type_ == "cpu" || type_ == "memory" {
            return Err(format!(
                "trigger {name:?} is a {type_} trigger, which a formula cannot read (KEDA refuses it too)"
            ));
        }
        match &carried[i] {
            Some(metric) => Ok(identifier(metric)),
            None => Err(format!(
                "it reads trigger {name:?} (triggers[{i}], type {type_}), which is not carried over (see its line): the formula cannot be computed without it"
            )),
        }
    };
    let expression = match translate(formula, &mut resolve) {
        Ok(e) => e,
        Err(message) => {
            cx.refuse(field, message);
            return None;
        }
    };
    if expression.chars().count() > MAX_EXPRESSION {
        cx.refuse(
            field,
            format!("longer than {MAX_EXPRESSION} characters, ebb's bound on a formula"),
        );
        return None;
    }
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    if let Err(e) = Formula::parse(&expression, &names) {
        cx.refuse(
            field,
            format!("written as {expression:?}, it is not a formula ebb takes: {e}"),
        );
        return None;
    }
    Some(expression)
}

/// What a formula of ebb's holds, for the refusals.
const EBB_HAS: &str = "ebb's formula has numbers, trigger names, + - * /, comparisons, and/or/not, ?:, min() and max()";

/// expr-lang to ebb's CEL, token by token; `resolve` gives a trigger name's formula
/// identifier. `Err` names what has no counterpart. The result still has to pass
/// [`Formula::parse`]: expr-lang's grammar is not checked here beyond the tokens (a chained
/// comparison `1 < a < 3`, expr-lang's `1 < a && a < 3`, comes out as CEL's `(1 < a) < 3`,
/// which the type check refuses).
pub(crate) fn translate(
    formula: &str,
    resolve: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let unsupported = |what: &str| Err(format!("{what} has no counterpart: {EBB_HAS}"));
    let chars: Vec<char> = formula.chars().collect();
    // The output, token by token (whitespace a token of its own).
    let mut out: Vec<String> = Vec::new();
    // Whether the last token ends an operand: a `+` after none is unary, and dropped.
    let mut after_operand = false;
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        let start = i;
        i += 1;
        if c.is_whitespace() {
            out.push(if c == '\n' || c == '\t' { c } else { ' ' }.into());
            continue;
        }
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            out.push(" ".into());
            continue;
        }
        if c == '/' && next == Some('*') {
            let end = (i + 1..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                .ok_or("a /* comment is not closed (KEDA refuses it too)")?;
            i = end + 2;
            out.push(" ".into());
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let (text, end) = number(&chars, start)?;
            out.push(text);
            i = end;
            after_operand = true;
            continue;
        }
        // expr-lang's names: letters (any script), digits, `_` and `$`.
        if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let call = chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&'(');
            after_operand = false;
            match word.as_str() {
                "and" => out.push("&&".into()),
                "or" => out.push("||".into()),
                "not" => out.push("!".into()),
                "true" | "false" => {
                    out.push(word);
                    after_operand = true;
                }
                "nil" => return unsupported("nil"),
                "let" => return unsupported("let (a variable)"),
                "if" | "else" => return unsupported("if/else"),
                "in" | "matches" | "contains" | "startsWith" | "endsWith" => {
                    return unsupported(&format!("the operator {word}"));
                }
                "min" | "max" if call => out.push(word),
                // float() makes a number a float, and every value of ebb's formula is one.
                "float" if call => {}
                _ if call => return unsupported(&format!("the function {word}()")),
                _ => {
                    out.push(resolve(&word)?);
                    after_operand = true;
                }
            }
            continue;
        }
        match (c, next) {
            ('?', Some('?')) => return unsupported("?? (nil coalescing)"),
            ('?', Some('.')) => return unsupported("?. (optional chaining)"),
            ('*', Some('*')) => return unsupported("** (a power)"),
            ('.', Some('.')) => return unsupported(".. (a range)"),
            ('&', Some('&'))
            | ('|', Some('|'))
            | ('=', Some('='))
            | ('!', Some('='))
            | ('<', Some('='))
            | ('>', Some('=')) => {
                out.push([c, next.unwrap_or_default()].iter().collect());
                i += 1;
                after_operand = false;
            }
            // A unary + changes no number.
            ('+', _) if !after_operand => {}
            ('+' | '-' | '*' | '/' | '<' | '>' | '!' | '?' | ':' | '(' | ',', _) => {
                out.push(c.into());
                after_operand = false;
            }
            (')', _) => {
                out.push(c.into());
                after_operand = true;
            }
            ('^', _) => return unsupported("^ (a power)"),
            ('%', _) => return unsupported("% (modulo)"),
            ('.', _) => return unsupported(". (a field or a method)"),
            ('[' | ']', _) => return unsupported("[ ] (an array or an index)"),
            ('{' | '}', _) => return unsupported("{ } (a map or a predicate)"),
            ('#', _) => return unsupported("# (a predicate's element)"),
            ('|', _) => return unsupported("| (a pipe)"),
            (';', _) => return unsupported("; (a sequence)"),
            ('=', _) => return unsupported("= (an assignment)"),
            ('"' | '\'' | '`', _) => return unsupported("a string"),
            _ => return unsupported(&format!("the character {c:?}")),
        }
    }
    parenthesize_middles(&mut out);
    Ok(out.concat())
}

/// CEL's `c ? a : b` takes no `?:` in `a` without parentheses (its grammar has `conditionalOr`
/// there), expr-lang's takes any expression: a `?:` in the middle of another gets them.
fn parenthesize_middles(tokens: &mut [String]) {
    let mut wrap = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token != "?" {
            continue;
        }
        // The `:` that closes this `?`: the first at the same depth with as many `?` as `:`
        // between them.
        let (mut depth, mut open) = (0i32, 0usize);
        let mut nested = false;
        for (j, t) in tokens.iter().enumerate().skip(i + 1) {
            match t.as_str() {
                "(" => depth += 1,
                ")" if depth == 0 => break,
                ")" => depth -= 1,
                "?" if depth == 0 => {
                    open += 1;
                    nested = true;
                }
                ":" if depth == 0 && open > 0 => open -= 1,
                ":" if depth == 0 => {
                    if nested {
                        wrap.push((i + 1, j));
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    let blank = |t: &String| t.trim().is_empty();
    for (from, to) in wrap {
        // Inside the blanks around the middle: `c ? (a ? b : d) : e`.
        let first = (from..to).find(|&k| !blank(&tokens[k]));
        let last = (from..to).rev().find(|&k| !blank(&tokens[k]));
        if let (Some(first), Some(last)) = (first, last) {
            tokens[first].insert(0, '(');
            tokens[last].push(')');
        }
    }
}

/// expr-lang's number at `start` (`1_000`, `0x1F`, `0o17`, `0b11`, `1.5`, `.5`, `1.`, `2e3`)
/// as CEL reads it: decimal integers, and floats with digits on both sides of the point.
/// Returns the text and where the number ends.
fn number(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let malformed = |end: usize| {
        let text: String = chars[start..end.min(chars.len())].iter().collect();
        format!("{text:?} is not a number (KEDA refuses it too)")
    };
    let run = |mut i: usize, digit: &dyn Fn(char) -> bool| {
        while i < chars.len() && (digit(chars[i]) || chars[i] == '_') {
            i += 1;
        }
        i
    };
    let at = |i: usize| chars.get(i).copied();
    let radix = match (at(start), at(start + 1)) {
        (Some('0'), Some('x' | 'X')) => 16,
        (Some('0'), Some('o' | 'O')) => 8,
        (Some('0'), Some('b' | 'B')) => 2,
        _ => 10,
    };
    let (text, end) = if radix != 10 {
        let end = run(start + 2, &|c| c.is_digit(radix));
        let digits: String = chars[start + 2..end]
            .iter()
            .filter(|&&c| c != '_')
            .collect();
        let v = i64::from_str_radix(&digits, radix).map_err(|_| malformed(end))?;
        (v.to_string(), end)
    } else {
        let mut end = run(start, &|c| c.is_ascii_digit());
        let mut float = false;
        // `1..3` is a range, not `1.` and `.3`.
        if at(end) == Some('.') && at(end + 1) != Some('.') {
            end = run(end + 1, &|c| c.is_ascii_digit());
            float = true;
        }
        let mantissa: String = chars[start..end].iter().filter(|&&c| c != '_').collect();
        let mut exponent = String::new();
        if matches!(at(end), Some('e' | 'E')) {
            let mut j = end + 1;
            if matches!(at(j), Some('+' | '-')) {
                j += 1;
            }
            let digits_end = run(j, &|c| c.is_ascii_digit());
            exponent = chars[end..digits_end]
                .iter()
                .filter(|&&c| c != '_')
                .collect();
            if !exponent.ends_with(|c: char| c.is_ascii_digit()) {
                return Err(malformed(digits_end + 1));
            }
            end = digits_end;
            float = true;
        }
        let text = if float {
            let mut m = mantissa;
            if m.starts_with('.') {
                m.insert(0, '0');
            }
            if m.ends_with('.') {
                m.push('0');
            }
            m + &exponent
        } else {
            mantissa
                .parse::<i64>()
                .map_err(|_| malformed(end))?
                .to_string()
        };
        if float && !text.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(malformed(end));
        }
        (text, end)
    };
    // Letters right after a number, or a second point (`1.5.3`); `..` is a range, refused as such.
    if at(end).is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$'))
        || (at(end) == Some('.') && at(end + 1) != Some('.'))
    {
        return Err(malformed(end + 1));
    }
    Ok((text, end))
}
