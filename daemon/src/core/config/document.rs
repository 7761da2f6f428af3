//! The spanned TOML document: where each key and value stands in the file,
//! and `${VAR}` interpolation on string values after parsing.

use super::path::{KeyPath, Seg};
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub type Span = Range<usize>;

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// Where a path points: the key's span (absent for array elements and the
/// root) and the value's span. Resolves the longest existing prefix, so a
/// missing key is reported at its parent table.
pub struct Located {
    pub key: Option<Span>,
    pub value: Span,
}

pub fn locate(root: &Spanned<DeTable<'_>>, path: &KeyPath) -> Located {
    let mut located = Located {
        key: None,
        value: root.span(),
    };
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for seg in &path.0 {
        let next = match seg {
            Seg::Key(k) => table
                .and_then(|t| t.iter().find(|(key, _)| key.get_ref() == k))
                .map(|(key, value)| (Some(key.span()), value)),
            Seg::Index(i) => array.and_then(|a| a.get(*i)).map(|v| (None, v)),
        };
        let Some((key, value)) = next else { break };
        located = Located {
            key,
            value: value.span(),
        };
        (table, array) = match value.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(a) => (None, Some(a)),
            _ => (None, None),
        };
    }
    located
}

/// The deepest path whose key or value span contains `span`: names the key
/// behind a deserialization error that only carries a span. Table spans do
/// not always cover their keys (`[a]` headers), so every node is visited.
pub fn path_at(root: &Spanned<DeTable<'_>>, span: &Span) -> KeyPath {
    fn contains(outer: &Span, inner: &Span) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }
    fn walk(value: &DeValue<'_>, span: &Span, path: &mut KeyPath, best: &mut KeyPath) {
        let mut visit =
            |seg: Seg, key: Option<Span>, v: &Spanned<DeValue<'_>>, best: &mut KeyPath| {
                path.0.push(seg);
                if (contains(&v.span(), span) || key.is_some_and(|k| contains(&k, span)))
                    && path.0.len() > best.0.len()
                {
                    *best = path.clone();
                }
                walk(v.get_ref(), span, path, best);
                path.0.pop();
            };
        match value {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    visit(Seg::Key(k.get_ref().to_string()), Some(k.span()), v, best);
                }
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    visit(Seg::Index(i), None, v, best);
                }
            }
            _ => {}
        }
    }
    let mut best = KeyPath::root();
    let mut path = KeyPath::root();
    for (k, v) in root.get_ref().iter() {
        path.0.push(Seg::Key(k.get_ref().to_string()));
        if (contains(&v.span(), span) || contains(&k.span(), span)) && best.0.is_empty() {
            best = path.clone();
        }
        walk(v.get_ref(), span, &mut path, &mut best);
        path.0.pop();
    }
    best
}

/// An interpolation that could not be done, at the string's span.
pub struct InterpolationError {
    pub span: Span,
    pub message: String,
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value; `$${`
/// stands for a literal `${`. Runs on parsed values, never on the raw text,
/// so a variable can never inject TOML syntax.
pub fn interpolate(
    table: &mut DeTable<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<InterpolationError>,
) {
    for (_, value) in table.iter_mut() {
        interpolate_value(value, lookup, errors);
    }
}

fn interpolate_value(
    value: &mut Spanned<DeValue<'_>>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<InterpolationError>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => match substitute(s, lookup) {
            Ok(out) => *s = out.into(),
            Err(message) => errors.push(InterpolationError { span, message }),
        },
        DeValue::Table(t) => interpolate(t, lookup, errors),
        DeValue::Array(a) => {
            for v in a.iter_mut() {
                interpolate_value(v, lookup, errors);
            }
        }
        _ => {}
    }
}

/// Expands one string. Public for tests and for values built outside TOML.
pub fn substitute(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| {
                "unterminated `${` in string (write `$${` for a literal)".to_string()
            })?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn substitutes_variables_defaults_and_escapes() {
        assert_eq!(
            substitute("a ${TOKEN} b", &env).as_deref(),
            Ok("a s3cret b")
        );
        assert_eq!(substitute("${MISSING:-dflt}", &env).as_deref(), Ok("dflt"));
        assert_eq!(substitute("${TOKEN:-dflt}", &env).as_deref(), Ok("s3cret"));
        assert_eq!(
            substitute("cost $5 and $${TOKEN}", &env).as_deref(),
            Ok("cost $5 and ${TOKEN}")
        );
        assert!(
            substitute("${MISSING}", &env)
                .unwrap_err()
                .contains("MISSING")
        );
        assert!(
            substitute("${TOKEN", &env)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(substitute("${A B}", &env).is_err());
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 10), (2, 4));
    }
}
