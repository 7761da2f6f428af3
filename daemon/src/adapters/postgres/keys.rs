//! How a batch's contact keys are bound in a statement: as a range where
//! they follow one another, as a list otherwise.

use super::arrays::Param;
use tokio_postgres::types::Type;

/// How one batch's keys are bound. A full pass reads every contact in key
/// order, so its batches are mostly runs of consecutive keys: bound as a
/// range, every table is read over that key range through its index. Each
/// table of a read is filtered on its own contact column, so that
/// whichever join PostgreSQL picks, it reads no table beyond the batch
/// (with the key on one side only, it hashed whole tables per batch).
#[derive(Clone, Copy)]
pub(super) enum Bound<'k> {
    Range(i64, i64),
    List(&'k [i64]),
}

impl<'k> Bound<'k> {
    /// `keys` ascending and distinct: a range when each follows the one
    /// before.
    pub(super) fn of(keys: &'k [i64]) -> Self {
        let consecutive = keys.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]));
        match (keys.first(), keys.last()) {
            (Some(&first), Some(&last)) if consecutive => Self::Range(first, last),
            _ => Self::List(keys),
        }
    }

    /// `sql` with each `KEY(column)` replaced by the filter on `column`;
    /// the statement's own parameter is written `$N`, numbered after the
    /// bound's.
    pub(super) fn sql(&self, sql: &str) -> String {
        let (free, filter): (usize, fn(&str) -> String) = match self {
            Self::Range(..) => (3, |c| format!("{c} BETWEEN $1 AND $2")),
            Self::List(_) => (2, |c| format!("{c} = ANY($1)")),
        };
        let mut out = sql.replace("$N", &format!("${free}"));
        while let Some(at) = out.find("KEY(") {
            let Some(len) = out[at..].find(')') else {
                break;
            };
            let column = out[at + 4..at + len].to_string();
            out.replace_range(at..=at + len, &filter(&column));
        }
        out
    }

    pub(super) fn params<'a>(&'a self, range: &'a [i64; 2]) -> Vec<Param<'a>> {
        match self {
            Self::Range(..) => vec![(&range[0], Type::INT8), (&range[1], Type::INT8)],
            Self::List(keys) => vec![(keys, Type::INT8_ARRAY)],
        }
    }

    pub(super) fn ends(&self) -> [i64; 2] {
        match *self {
            Self::Range(first, last) => [first, last],
            Self::List(_) => [0, 0],
        }
    }

    /// The filter on `column`, written out: a binary COPY takes no
    /// parameters, and the keys are integers.
    pub(super) fn literal(&self, column: &str) -> String {
        match self {
            Self::Range(first, last) => format!("{column} BETWEEN {first} AND {last}"),
            Self::List(keys) => {
                let mut list = String::with_capacity(keys.len() * 8);
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        list.push(',');
                    }
                    list.push_str(&k.to_string());
                }
                format!("{column} = ANY('{{{list}}}'::bigint[])")
            }
        }
    }
}
