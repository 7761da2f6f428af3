//! What the batch writes share: a batch goes to PostgreSQL as one array per
//! column, one statement per table (`unnest`), instead of a few
//! statements per contact (each a round trip or two).

use crate::ports::store::StoreError;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};

/// A parameter of a typed statement (`query_typed`, `execute_typed`): sent
/// with the statement in one message, no separate preparation.
pub(super) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// Runs a statement of arrays holding `rows` rows, or nothing when there
/// are none. Typed, so that statements can be pipelined (see `pipelined`):
/// each is sent in one message as it is first polled.
pub(super) async fn execute(
    tx: &Transaction<'_>,
    rows: usize,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    if rows == 0 {
        return Ok(0);
    }
    Ok(tx.execute_typed(sql, params).await?)
}

/// [`execute`] for a statement returning rows.
pub(super) async fn query(
    tx: &Transaction<'_>,
    rows: usize,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    Ok(tx.query_typed(sql, params).await?)
}

/// Splits `items` into runs of consecutive items in which no key comes
/// twice, in order. A run is written with one statement per table; a key
/// repeated in a batch is written again by a later run, after the first,
/// exactly as one write after the other would be (an array statement would
/// meet the same row twice).
pub(super) fn runs<T>(items: &[T], key: impl Fn(&T) -> i64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(key(item)) {
            out.push(&items[start..i]);
            seen.clear();
            seen.insert(key(item));
            start = i;
        }
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Entries of the decision log, a column each, written in their order
/// (so numbered as one insert after the other would number them).
#[derive(Default)]
pub(super) struct DecisionLog {
    contact: Vec<i64>,
    followup: Vec<String>,
    channel: Vec<String>,
    decision: Vec<&'static str>,
    until: Vec<Option<i64>>,
    reasons: Vec<String>,
}

impl DecisionLog {
    pub(super) fn push(
        &mut self,
        contact: i64,
        followup: &str,
        channel: &str,
        decision: &'static str,
        until: Option<i64>,
        reasons: String,
    ) {
        self.contact.push(contact);
        self.followup.push(followup.to_string());
        self.channel.push(channel.to_string());
        self.decision.push(decision);
        self.until.push(until);
        self.reasons.push(reasons);
    }

    /// Logs the entries at `now_us`, in one statement.
    pub(super) async fn write(&self, tx: &Transaction<'_>, now_us: i64) -> Result<u64, StoreError> {
        let params: [Param<'_>; 7] = [
            (&now_us, Type::INT8),
            (&self.contact, Type::INT8_ARRAY),
            (&self.followup, Type::TEXT_ARRAY),
            (&self.channel, Type::TEXT_ARRAY),
            (&self.decision, Type::TEXT_ARRAY),
            (&self.until, Type::INT8_ARRAY),
            (&self.reasons, Type::TEXT_ARRAY),
        ];
        execute(
            tx,
            self.contact.len(),
            "INSERT INTO decision_log (contact, at, followup, channel, decision, until, reasons)
             SELECT contact, $1, followup, channel, decision, until, reasons
             FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                         $7::text[]) AS d(contact, followup, channel, decision, until, reasons)",
            &params,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn a_repeated_key_starts_a_new_run() {
        let keys = [1, 2, 3, 2, 4, 1, 1];
        let split: Vec<Vec<i64>> = runs(&keys, |k| *k).iter().map(|r| r.to_vec()).collect();
        assert_eq!(split, vec![vec![1, 2, 3], vec![2, 4, 1], vec![1]]);
        assert!(runs(&[] as &[i64], |k| *k).is_empty());
        assert_eq!(runs(&[5, 6], |k| *k).len(), 1);
    }
}
