//! Ironic's root-device hint expressions (the oslo `specs_matcher` grammar), parsed and
//! evaluated without I/O.
//!
//! ```text
//! expression := [operator] value
//!             | "<or>" value ("<or>" value)*
//! operator   := "==" | "=" | "!=" | ">=" | "<=" | ">" | "<"          (numbers)
//!             | "s==" | "s!=" | "s>=" | "s<=" | "s>" | "s<" | "<in>"  (text)
//! ```
//!
//! As in Ironic, everything is compared lower-cased, values may be URL-quoted (`%20` for a
//! space), text defaults to `s==` and numbers to `==`, and the legacy `=` means `>=`. Where
//! Ironic would silently ignore part of an expression (`<in> a <in> b` tests only `a`) or fail
//! deep inside (`>= 5` on a model name), this parser refuses the expression with a message
//! saying why.

use std::fmt;

use thiserror::Error;

/// Whether a hint compares text or numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Number,
}

/// One parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(NumberOp, u64),
    Text(TextOp, String),
    /// `<in> x`: the value contains `x`.
    Contains(String),
    /// `<or> a <or> b`: the value equals one of them.
    AnyOf(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberOp {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

/// Why an expression is not usable.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExprError {
    #[error("the expression is empty")]
    Empty,
    #[error("operator {op} needs a value after it")]
    MissingValue { op: &'static str },
    #[error("operator {op} takes one value, got {count} ({values})")]
    TooManyValues {
        op: &'static str,
        count: usize,
        values: String,
    },
    #[error("operator {op} compares numbers, but this hint is text (use s==, s!=, <in> or <or>)")]
    NumericOperatorOnText { op: &'static str },
    #[error("operator {op} compares text, but this hint is a number (use ==, !=, >=, <=, > or <)")]
    TextOperatorOnNumber { op: &'static str },
    #[error("{value:?} is not a whole number of GiB greater than zero")]
    NotAPositiveInteger { value: String },
    #[error("operator {op} compares lists, and no disk property is a list")]
    Unsupported { op: &'static str },
}

/// Operators in the order the grammar tries them: longer spellings before their prefixes.
const OPERATORS: &[&str] = &[
    "<range-in>",
    "<all-in>",
    "<in>",
    "<or>",
    "s==",
    "s!=",
    "s<=",
    "s<",
    "s>=",
    "s>",
    "==",
    "=",
    "!=",
    ">=",
    "<=",
    ">",
    "<",
];

fn leading_operator(text: &str) -> Option<&'static str> {
    OPERATORS.iter().copied().find(|op| text.starts_with(op))
}

/// Parses one expression for a hint of the given kind.
pub fn parse(text: &str, kind: ValueKind) -> Result<Expr, ExprError> {
    let expression = text.trim().to_lowercase();
    if expression.is_empty() {
        return Err(ExprError::Empty);
    }
    let Some(op) = leading_operator(&expression) else {
        return plain(&expression, kind);
    };
    // Like Ironic, values are whatever lies between occurrences of the operator.
    let values: Vec<String> = expression
        .split(op)
        .map(unquote)
        .filter(|value| !value.is_empty())
        .collect();
    if values.is_empty() {
        return Err(ExprError::MissingValue { op });
    }
    if op == "<or>" {
        return match kind {
            ValueKind::Text => Ok(Expr::AnyOf(values)),
            ValueKind::Number => {
                // Ironic compares `<or>` as text even for sizes; numbers are compared as numbers here.
                let numbers = values
                    .iter()
                    .map(|value| positive_integer(value))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Expr::AnyOf(numbers.iter().map(|n| n.to_string()).collect()))
            }
        };
    }
    if op == "<all-in>" || op == "<range-in>" {
        return Err(ExprError::Unsupported { op });
    }
    let [value] = values.as_slice() else {
        return Err(ExprError::TooManyValues {
            op,
            count: values.len(),
            values: values.join(", "),
        });
    };
    let value = value.clone();
    match (kind, op) {
        (ValueKind::Text, "<in>") => Ok(Expr::Contains(value)),
        (ValueKind::Text, op) if op.starts_with('s') => Ok(Expr::Text(text_op(op), value)),
        (ValueKind::Text, op) => Err(ExprError::NumericOperatorOnText { op }),
        (ValueKind::Number, op) if op.starts_with('s') || op == "<in>" => {
            Err(ExprError::TextOperatorOnNumber { op })
        }
        (ValueKind::Number, op) => Ok(Expr::Number(number_op(op), positive_integer(&value)?)),
    }
}

fn plain(expression: &str, kind: ValueKind) -> Result<Expr, ExprError> {
    match kind {
        ValueKind::Text => match unquote(expression) {
            value if value.is_empty() => Err(ExprError::Empty),
            value => Ok(Expr::Text(TextOp::Eq, value)),
        },
        ValueKind::Number => Ok(Expr::Number(NumberOp::Eq, positive_integer(expression)?)),
    }
}

fn positive_integer(value: &str) -> Result<u64, ExprError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ExprError::NotAPositiveInteger {
            value: value.to_owned(),
        }),
    }
}

fn text_op(op: &str) -> TextOp {
    match op {
        "s!=" => TextOp::Ne,
        "s>=" => TextOp::Ge,
        "s<=" => TextOp::Le,
        "s>" => TextOp::Gt,
        "s<" => TextOp::Lt,
        _ => TextOp::Eq,
    }
}

fn number_op(op: &str) -> NumberOp {
    match op {
        "!=" => NumberOp::Ne,
        // `=` is ">=" in oslo's grammar, kept for compatibility.
        ">=" | "=" => NumberOp::Ge,
        "<=" => NumberOp::Le,
        ">" => NumberOp::Gt,
        "<" => NumberOp::Lt,
        _ => NumberOp::Eq,
    }
}

/// Decodes `%XX` escapes (anything malformed stays as written), trims and lower-cases.
fn unquote(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Both sides of a comparison are trimmed, so a quoted space at either end means nothing.
    String::from_utf8_lossy(&out).trim().to_lowercase()
}

impl Expr {
    /// Whether a text value satisfies the expression.
    pub fn matches_text(&self, value: &str) -> bool {
        let value = value.trim().to_lowercase();
        match self {
            Expr::Text(op, expected) => {
                let ordering = value.as_str().cmp(expected.as_str());
                match op {
                    TextOp::Eq => ordering.is_eq(),
                    TextOp::Ne => ordering.is_ne(),
                    TextOp::Ge => ordering.is_ge(),
                    TextOp::Le => ordering.is_le(),
                    TextOp::Gt => ordering.is_gt(),
                    TextOp::Lt => ordering.is_lt(),
                }
            }
            Expr::Contains(needle) => value.contains(needle.as_str()),
            Expr::AnyOf(options) => options.contains(&value),
            Expr::Number(..) => false,
        }
    }

    /// Whether a number satisfies the expression.
    pub fn matches_number(&self, value: f64) -> bool {
        match self {
            Expr::Number(op, expected) => {
                let expected = *expected as f64;
                match op {
                    NumberOp::Eq => value == expected,
                    NumberOp::Ne => value != expected,
                    NumberOp::Ge => value >= expected,
                    NumberOp::Le => value <= expected,
                    NumberOp::Gt => value > expected,
                    NumberOp::Lt => value < expected,
                }
            }
            Expr::AnyOf(options) => options
                .iter()
                .any(|option| option.parse::<f64>().is_ok_and(|n| n == value)),
            Expr::Text(..) | Expr::Contains(_) => false,
        }
    }
}

/// Values are written back URL-quoted where parsing would otherwise change them: `%`, and
/// the characters every operator contains (`=`, `<`, `>`, `!`), so that a value never reads
/// back as an operator.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '=' => out.push_str("%3D"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '!' => out.push_str("%21"),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(op, value) => {
                let op = match op {
                    NumberOp::Eq => "==",
                    NumberOp::Ne => "!=",
                    NumberOp::Ge => ">=",
                    NumberOp::Le => "<=",
                    NumberOp::Gt => ">",
                    NumberOp::Lt => "<",
                };
                write!(f, "{op} {value}")
            }
            Expr::Text(op, value) => {
                let op = match op {
                    TextOp::Eq => "s==",
                    TextOp::Ne => "s!=",
                    TextOp::Ge => "s>=",
                    TextOp::Le => "s<=",
                    TextOp::Gt => "s>",
                    TextOp::Lt => "s<",
                };
                write!(f, "{op} {}", quote(value))
            }
            Expr::Contains(value) => write!(f, "<in> {}", quote(value)),
            Expr::AnyOf(values) => {
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "<or> {}", quote(value))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn text(s: &str) -> Expr {
        parse(s, ValueKind::Text).unwrap()
    }

    fn number(s: &str) -> Expr {
        parse(s, ValueKind::Number).unwrap()
    }

    #[test]
    fn text_defaults_to_case_insensitive_equality() {
        let e = text("Samsung SSD 860");
        assert_eq!(e, Expr::Text(TextOp::Eq, "samsung ssd 860".into()));
        assert!(e.matches_text("SAMSUNG SSD 860 "));
        assert!(!e.matches_text("samsung ssd 870"));
    }

    #[test]
    fn every_text_operator() {
        assert!(text("s== abc").matches_text("ABC"));
        assert!(text("s!= abc").matches_text("abd"));
        assert!(text("s< b").matches_text("a"));
        assert!(!text("s< b").matches_text("c"));
        assert!(text("s<= b").matches_text("b"));
        assert!(text("s> b").matches_text("c"));
        assert!(text("s>= b").matches_text("b"));
        assert!(text("<in> ACME").matches_text("the acme disk"));
        assert!(!text("<in> ACME").matches_text("the acne disk"));
        let any = text("<or> SN1 <or> sn2 <or> two words");
        assert_eq!(
            any,
            Expr::AnyOf(vec!["sn1".into(), "sn2".into(), "two words".into()])
        );
        assert!(any.matches_text("Two Words"));
        assert!(!any.matches_text("sn3"));
        // No white space is needed after an operator, as in pyparsing.
        assert!(text("<in>acme").matches_text("acme1"));
    }

    #[test]
    fn every_number_operator() {
        assert!(number("20").matches_number(20.0));
        assert!(!number("20").matches_number(20.5));
        assert!(number("== 20").matches_number(20.0));
        assert!(number("!= 20").matches_number(21.0));
        assert!(number(">= 20").matches_number(20.0));
        assert!(number("=20").matches_number(30.0), "legacy = means >=");
        assert!(number("<= 20").matches_number(19.9));
        assert!(number("> 20").matches_number(20.1));
        assert!(number("< 20").matches_number(19.0));
        assert!(number("<or> 10 <or> 20").matches_number(20.0));
        assert!(!number("<or> 10 <or> 20").matches_number(15.0));
    }

    #[test]
    fn values_are_url_unquoted() {
        assert!(text("s== foo%20bar").matches_text("foo bar"));
        assert!(text("s== 100%").matches_text("100%"));
    }

    #[test]
    fn refuses_what_ironic_would_mishandle() {
        assert_eq!(parse("  ", ValueKind::Text), Err(ExprError::Empty));
        assert_eq!(
            parse("<in>", ValueKind::Text),
            Err(ExprError::MissingValue { op: "<in>" })
        );
        assert!(matches!(
            parse("<in> a <in> b", ValueKind::Text),
            Err(ExprError::TooManyValues { count: 2, .. })
        ));
        assert!(matches!(
            parse(">= 5", ValueKind::Text),
            Err(ExprError::NumericOperatorOnText { op: ">=" })
        ));
        assert!(matches!(
            parse("s== 5", ValueKind::Number),
            Err(ExprError::TextOperatorOnNumber { op: "s==" })
        ));
        assert!(matches!(
            parse(">= -1", ValueKind::Number),
            Err(ExprError::NotAPositiveInteger { .. })
        ));
        assert!(matches!(
            parse("0", ValueKind::Number),
            Err(ExprError::NotAPositiveInteger { .. })
        ));
        assert!(matches!(
            parse("<all-in> a b", ValueKind::Text),
            Err(ExprError::Unsupported { .. })
        ));
    }

    #[test]
    fn values_spelling_operators_or_quoted_spaces_print_back_unchanged() {
        // Found by the fuzzer: a value containing an operator, and a quoted edge space.
        for source in ["\u{1b}S==", "%20%S", "a<or>b", "s== x%3Ds%3D%3Dy", "%20"] {
            for kind in [ValueKind::Text, ValueKind::Number] {
                if let Ok(parsed) = parse(source, kind) {
                    assert_eq!(
                        parse(&parsed.to_string(), kind).unwrap(),
                        parsed,
                        "{source:?}"
                    );
                }
            }
        }
        assert_eq!(parse("%20", ValueKind::Text), Err(ExprError::Empty));
        assert!(text("s== x%3Ds%3D%3Dy").matches_text("X=S==Y"));
    }

    #[test]
    fn displays_in_the_grammar_it_parses() {
        for source in ["s== abc", "<in> x", "<or> a <or> b", ">= 20", "== 7"] {
            let kind = if source.starts_with(['>', '=']) {
                ValueKind::Number
            } else {
                ValueKind::Text
            };
            let parsed = parse(source, kind).unwrap();
            assert_eq!(parse(&parsed.to_string(), kind).unwrap(), parsed);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_prints_back_what_it_parsed(input in ".{0,64}") {
            for kind in [ValueKind::Text, ValueKind::Number] {
                if let Ok(parsed) = parse(&input, kind) {
                    proptest::prop_assert_eq!(parse(&parsed.to_string(), kind), Ok(parsed));
                }
            }
        }

        #[test]
        fn values_that_spell_operators_survive_printing(value in "[a-z=<>!% \\x1b-]{1,12}") {
            for kind in [ValueKind::Text, ValueKind::Number] {
                if let Ok(parsed) = parse(&value, kind) {
                    proptest::prop_assert_eq!(parse(&parsed.to_string(), kind), Ok(parsed));
                }
            }
        }

        #[test]
        fn a_plain_value_matches_itself(value in "[a-zA-Z0-9_.:-]{1,24}") {
            proptest::prop_assume!(leading_operator(&value.to_lowercase()).is_none());
            proptest::prop_assert!(parse(&value, ValueKind::Text).unwrap().matches_text(&value));
        }
    }
}
