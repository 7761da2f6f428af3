//! Literal values in conditions: text, number or boolean, as TOML gives them.

use super::Val;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A value compared with `eq` or `in`. Deserialized by hand (not an untagged
/// enum) so type errors keep their position in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Literal {
    /// Exact comparison; a number also matches a numeric string, so CSV
    /// imports compare like typed values.
    pub(super) fn matches(&self, v: Val<'_>) -> bool {
        match (self, v) {
            (Literal::Str(a), Val::Str(b)) => a == b,
            (Literal::Num(a), Val::Num(b)) => a == &b,
            (Literal::Num(a), Val::Str(b)) => b.trim().parse::<f64>().is_ok_and(|b| *a == b),
            (Literal::Bool(a), Val::Bool(b)) => *a == b,
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Literal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Literal, E> {
                Ok(Literal::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Literal, E> {
                Ok(Literal::Str(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Literal, E> {
                Ok(Literal::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Literal, E> {
                Ok(Literal::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Literal, E> {
                Ok(Literal::Num(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Literal, E> {
                Ok(Literal::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Literal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Literal::Str(v) => s.serialize_str(v),
            Literal::Num(v) => s.serialize_f64(*v),
            Literal::Bool(v) => s.serialize_bool(*v),
        }
    }
}
