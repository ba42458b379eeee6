//! Kubernetes label selectors as they arrive in `?labelSelector=`: the string form client-go's
//! `labels.Selector.String()` produces, parsed with the same grammar as `k8s.io/apimachinery`
//! `labels.Parse` (minus the numeric `gt`/`lt` operators, which no HPA sends):
//!
//! ```text
//! selector    = requirement ("," requirement)*      (empty selector: matches everything)
//! requirement = key | "!" key
//!             | key ("=" | "==" | "!=") value
//!             | key ("in" | "notin") "(" value ("," value)* ")"
//! ```
//! Keys are qualified names (`[prefix/]name`), values are label values (maybe empty); both are
//! validated so that a typo gives a 400 naming the position instead of a silent empty match.

use std::collections::BTreeMap;
use std::fmt;

/// A set of labels a selector can be matched against.
pub trait Labels {
    /// The value of `key`, if the label is set.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

/// Labels sorted by key: a map's worth of lookups in a few dozen bytes for the one or two labels
/// a served value carries (a map's first node holds room for eleven).
impl Labels for [(String, String)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self[i].1.as_str())
    }
}

/// A parsed label selector: all requirements must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One `key <op> values` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

/// What a requirement asks of the label `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `key=v` or `key==v`
    Equals(String),
    /// `key!=v`: also true when the label is absent.
    NotEquals(String),
    /// `key in (a,b)`
    In(Vec<String>),
    /// `key notin (a,b)`: also true when the label is absent.
    NotIn(Vec<String>),
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
}

/// Why a selector string was rejected: what, and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?}: {message} (at position {position})")]
pub struct SelectorError {
    pub input: String,
    pub position: usize,
    pub message: String,
}

impl Selector {
    /// Parses a selector; the empty (or all-blank) string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).parse()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The value `key` must equal, when the selector pins it with `=`/`==` or a one-value `in`:
    /// lets the store answer the HPA's `ebb.dev/scaledtarget=<name>` by lookup instead of a scan.
    pub fn required_value(&self, key: &str) -> Option<&str> {
        self.requirements
            .iter()
            .filter(|r| r.key == key)
            .find_map(|r| match &r.op {
                Operator::Equals(v) => Some(v.as_str()),
                Operator::In(vs) if vs.len() == 1 => Some(vs[0].as_str()),
                _ => None,
            })
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl Requirement {
    fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::Equals(v) => value == Some(v.as_str()),
            Operator::NotEquals(v) => value != Some(v.as_str()),
            Operator::In(vs) => value.is_some_and(|l| vs.iter().any(|v| v == l)),
            Operator::NotIn(vs) => !value.is_some_and(|l| vs.iter().any(|v| v == l)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// The canonical string form, which parses back to the same selector.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let k = &r.key;
            match &r.op {
                Operator::Equals(v) => write!(f, "{k}={v}")?,
                Operator::NotEquals(v) => write!(f, "{k}!={v}")?,
                Operator::In(vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Operator::NotIn(vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Operator::Exists => write!(f, "{k}")?,
                Operator::DoesNotExist => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// A key, a value, or the words `in`/`notin` (which are only keywords after a key).
    Word(&'a str),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Comma,
    Open,
    Close,
    End,
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

/// Characters that may appear in a key or value word (anything else is an operator, a
/// separator, or an error).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, pos: 0 }
    }

    fn error(&self, position: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            position,
            message: message.into(),
        }
    }

    fn skip_blanks(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// The next token and where it starts, without consuming it.
    fn peek(&mut self) -> Result<(usize, Token<'a>, usize), SelectorError> {
        self.skip_blanks();
        let start = self.pos;
        let rest = &self.input[start..];
        let Some(c) = rest.chars().next() else {
            return Ok((start, Token::End, 0));
        };
        let (token, len) = match c {
            ',' => (Token::Comma, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '=' if rest.starts_with("==") => (Token::DoubleEq, 2),
            '=' => (Token::Eq, 1),
            '!' if rest.starts_with("!=") => (Token::NotEq, 2),
            '!' => (Token::Bang, 1),
            c if is_word_char(c) => {
                let len = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
                (Token::Word(&rest[..len]), len)
            }
            c => return Err(self.error(start, format!("unexpected character {c:?}"))),
        };
        Ok((start, token, len))
    }

    fn next(&mut self) -> Result<(usize, Token<'a>), SelectorError> {
        let (start, token, len) = self.peek()?;
        self.pos = start + len;
        Ok((start, token))
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek()?.1 == Token::End {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next()? {
                (_, Token::End) => break,
                (_, Token::Comma) => continue,
                (at, t) => {
                    return Err(self.error(at, format!("expected ',' or the end, found {t:?}")));
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (at, first) = self.next()?;
        if first == Token::Bang {
            let (at, key) = self.key()?;
            return match self.peek()?.1 {
                Token::Comma | Token::End => Ok(Requirement {
                    key,
                    op: Operator::DoesNotExist,
                }),
                _ => Err(self.error(at, "'!key' takes no operator or value")),
            };
        }
        let Token::Word(key) = first else {
            return Err(self.error(at, format!("expected a label key, found {first:?}")));
        };
        let key = validate_key(key).map_err(|m| self.error(at, m))?;
        let (op_at, op, _) = self.peek()?;
        let op = match op {
            Token::Comma | Token::End => Operator::Exists,
            Token::Eq | Token::DoubleEq | Token::NotEq => {
                self.next()?;
                let value = self.value()?;
                if op == Token::NotEq {
                    Operator::NotEquals(value)
                } else {
                    Operator::Equals(value)
                }
            }
            Token::Word(w @ ("in" | "notin")) => {
                self.next()?;
                let values = self.value_set()?;
                if w == "in" {
                    Operator::In(values)
                } else {
                    Operator::NotIn(values)
                }
            }
            t => {
                return Err(self.error(
                    op_at,
                    format!(
                        "expected an operator (=, ==, !=, in, notin) after {key:?}, found {t:?}"
                    ),
                ));
            }
        };
        Ok(Requirement { key, op })
    }

    fn key(&mut self) -> Result<(usize, String), SelectorError> {
        match self.next()? {
            (at, Token::Word(w)) => validate_key(w)
                .map(|k| (at, k))
                .map_err(|m| self.error(at, m)),
            (at, t) => Err(self.error(at, format!("expected a label key, found {t:?}"))),
        }
    }

    /// A value after `=`: may be empty (`key=` selects an empty label value).
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek()? {
            (at, Token::Word(w), _) => {
                self.next()?;
                validate_value(w).map_err(|m| self.error(at, m))
            }
            (_, Token::Comma | Token::End, _) => Ok(String::new()),
            (at, t, _) => Err(self.error(at, format!("expected a label value, found {t:?}"))),
        }
    }

    /// `(a, b, c)`; at least one value (an empty set can never match for `in`, and
    /// apimachinery rejects it too).
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next()? {
            (_, Token::Open) => {}
            (at, t) => return Err(self.error(at, format!("expected '(', found {t:?}"))),
        }
        let mut values = Vec::new();
        loop {
            let (at, token) = self.next()?;
            match token {
                Token::Word(w) => values.push(validate_value(w).map_err(|m| self.error(at, m))?),
                // `(a,,b)` or `(a,)` means an empty value, as in apimachinery.
                Token::Comma | Token::Close => {
                    values.push(String::new());
                    if token == Token::Close {
                        return Ok(values);
                    }
                    continue;
                }
                t => return Err(self.error(at, format!("expected a value or ')', found {t:?}"))),
            }
            match self.next()? {
                (_, Token::Comma) => {}
                (_, Token::Close) => return Ok(values),
                (at, t) => return Err(self.error(at, format!("expected ',' or ')', found {t:?}"))),
            }
        }
    }
}

/// Label keys: `[prefix/]name`, name at most 63 characters of `[A-Za-z0-9._-]` beginning and
/// ending alphanumeric, prefix a DNS subdomain of at most 253 characters.
fn validate_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "label key prefix {prefix:?} must be a lower-case DNS subdomain"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    validate_name_part(name).map_err(|m| format!("label key {key:?}: {m}"))?;
    Ok(key.to_string())
}

/// Label values: empty, or like a key's name part.
fn validate_value(value: &str) -> Result<String, String> {
    if !value.is_empty() {
        validate_name_part(value).map_err(|m| format!("label value {value:?}: {m}"))?;
    }
    Ok(value.to_string())
}

fn validate_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    if !bytes
        .iter()
        .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        || !bytes.first().is_some_and(alnum)
        || !bytes.last().is_some_and(alnum)
    {
        return Err(
            "must be alphanumerics, '-', '_' or '.', beginning and ending alphanumeric".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s =
            Selector::parse("ebb.dev/scaledtarget=orders, a==1,b!=2,c in (x, y),d notin (z),e,!f")
                .unwrap();
        let ops: Vec<_> = s
            .requirements()
            .iter()
            .map(|r| (r.key.as_str(), r.op.clone()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("ebb.dev/scaledtarget", Operator::Equals("orders".into())),
                ("a", Operator::Equals("1".into())),
                ("b", Operator::NotEquals("2".into())),
                ("c", Operator::In(vec!["x".into(), "y".into()])),
                ("d", Operator::NotIn(vec!["z".into()])),
                ("e", Operator::Exists),
                ("f", Operator::DoesNotExist),
            ]
        );
        assert_eq!(s.required_value("ebb.dev/scaledtarget"), Some("orders"));
        assert_eq!(s.required_value("b"), None);
    }

    #[test]
    fn matching_follows_apimachinery() {
        let map = labels(&[("app", "web"), ("tier", "front")]);
        let sorted: Vec<(String, String)> = map.clone().into_iter().collect();
        // Every case holds for the map and for the sorted slice the store keeps.
        let m = |s: &str| {
            let selector = Selector::parse(s).unwrap();
            let (a, b) = (selector.matches(&map), selector.matches(&sorted[..]));
            assert_eq!(a, b, "{s}: map and slice disagree");
            a
        };
        assert!(m(""));
        assert!(m("app=web"));
        assert!(!m("app=api"));
        assert!(m("app!=api"));
        assert!(m("missing!=x"), "!= holds when the label is absent");
        assert!(m("tier in (back,front)"));
        assert!(!m("missing in (x)"));
        assert!(
            m("missing notin (x)"),
            "notin holds when the label is absent"
        );
        assert!(!m("tier notin (front)"));
        assert!(m("app,!missing"));
        assert!(!m("!app"));
        assert!(!m("app=web,tier=back"));
    }

    #[test]
    fn empty_values_are_allowed_where_apimachinery_allows_them() {
        let l = labels(&[("a", "")]);
        assert!(Selector::parse("a=").unwrap().matches(&l));
        assert!(Selector::parse("a in (x,)").unwrap().matches(&l));
    }

    #[test]
    fn bad_selectors_say_where_and_why() {
        for (input, at, needle) in [
            ("app=web,", 8, "expected a label key"),
            ("app in web", 7, "expected '('"),
            ("app in (web", 11, "expected ',' or ')'"),
            ("app=we b", 7, "expected ',' or the end"),
            ("app>1", 3, "unexpected character"),
            ("-app=web", 0, "beginning and ending alphanumeric"),
            ("Bad_Prefix/app=x", 0, "DNS subdomain"),
            ("!app=x", 1, "takes no operator"),
            ("app=web-", 4, "label value"),
            ("=x", 0, "expected a label key"),
        ] {
            let e = Selector::parse(input).unwrap_err();
            assert_eq!(e.position, at, "{input}: {e}");
            assert!(e.to_string().contains(needle), "{input}: {e}");
        }
        let long = format!("a={}", "x".repeat(64));
        assert!(Selector::parse(&long).unwrap_err().message.contains("63"));
    }

    #[test]
    fn display_round_trips() {
        let s = Selector::parse("a = 1, b in (x,y) ,!c, d notin (z)").unwrap();
        assert_eq!(s.to_string(), "a=1,b in (x,y),!c,d notin (z)");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn word() -> impl Strategy<Value = String> {
            "[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?"
        }

        fn requirement() -> impl Strategy<Value = String> {
            let key = (proptest::option::of(Just("ebb.dev/")), word())
                .prop_map(|(p, k)| format!("{}{k}", p.unwrap_or("")));
            let values = proptest::collection::vec(word(), 1..4).prop_map(|v| v.join(" , "));
            (key, 0..7usize, word(), values).prop_map(|(k, op, v, vs)| match op {
                0 => format!("{k}={v}"),
                1 => format!("{k} == {v}"),
                2 => format!("{k}!={v}"),
                3 => format!("{k} in ( {vs} )"),
                4 => format!("{k} notin ({vs})"),
                5 => k,
                _ => format!("! {k}"),
            })
        }

        proptest! {
            /// Any selector in the grammar parses, and its printed form parses back to it.
            #[test]
            fn generated_selectors_parse_and_round_trip(
                parts in proptest::collection::vec(requirement(), 0..5),
            ) {
                let input = parts.join(", ");
                let selector = Selector::parse(&input).unwrap();
                prop_assert_eq!(selector.requirements().len(), parts.len());
                prop_assert_eq!(Selector::parse(&selector.to_string()).unwrap(), selector);
            }

            /// Arbitrary text never panics the parser; an error points inside the input.
            #[test]
            fn arbitrary_text_never_panics(input in "\\PC{0,40}") {
                if let Err(e) = Selector::parse(&input) {
                    prop_assert!(e.position <= input.len());
                }
            }
        }
    }
}
