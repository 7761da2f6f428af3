//! The outbox: every planned send is a stored row, so nothing is lost
//! between planning and delivery, across crashes and restarts.
//!
//! States: `planned` → (`deferred`) → `claimed` (with a lease) → `sent` |
//! `retrying` | `dead` | `blocked` | `dropped`. A row claimed by a process
//! that died is claimed again when its lease expires, and is sent again with
//! the same idempotency key, so the receiver can de-duplicate.

pub mod config;

pub use config::OutboxConfig;

use crate::core::instant;
use crate::core::model::{FollowUpKind, Timestamp};
use crate::domain::fatigue::admit::Candidate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Planned,
    Deferred,
    Claimed,
    Sent,
    Retrying,
    Dead,
    Blocked,
    Dropped,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Planned,
        State::Deferred,
        State::Claimed,
        State::Sent,
        State::Retrying,
        State::Dead,
        State::Blocked,
        State::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Planned => "planned",
            State::Deferred => "deferred",
            State::Claimed => "claimed",
            State::Sent => "sent",
            State::Retrying => "retrying",
            State::Dead => "dead",
            State::Blocked => "blocked",
            State::Dropped => "dropped",
        }
    }

    /// Rows in these states are still to be delivered.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            State::Planned | State::Deferred | State::Claimed | State::Retrying
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown outbox state `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The idempotency key of a send: derived from what identifies it, so that
/// planning the same follow-up twice yields the same row, and every retry
/// carries the same key to the receiver.
pub fn idempotency_key(contact: &str, followup: &str, occurrence: &str) -> String {
    let mut h = Sha256::new();
    for part in [contact, followup, occurrence] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("rl_{}", hex::encode(&h.finalize()[..16]))
}

/// Which occurrence of a follow-up a send is (its origin: a sequence step,
/// a trigger's signal, a broadcast): its part of the outbox key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Occurrence {
    /// A nurture step, by index in the sequence.
    Step {
        index: usize,
        enrolled_at: Timestamp,
    },
    /// A trigger fired by an event (its id when it has one) or a score change.
    Signal {
        signal: String,
        at: Timestamp,
    },
    Broadcast {
        id: String,
        at: Timestamp,
    },
}

impl Occurrence {
    /// Stable across re-planning: never depends on the planning instant.
    pub fn key_part(&self) -> String {
        match self {
            Occurrence::Step { index, .. } => format!("step-{index}"),
            Occurrence::Signal { signal, .. } => signal.clone(),
            Occurrence::Broadcast { id, .. } => format!("broadcast:{id}"),
        }
    }

    pub fn at(&self) -> Timestamp {
        match self {
            Occurrence::Step {
                enrolled_at: at, ..
            }
            | Occurrence::Signal { at, .. }
            | Occurrence::Broadcast { at, .. } => *at,
        }
    }
}

/// What a send carries besides its row: the same for every channel, read
/// by the planner, the guard, the dispatcher and the task list. Stored as
/// JSON by the store only; every field may be missing in a stored row (rows
/// written by older versions, previews), and a field that does not read is
/// taken as missing rather than making the row unreadable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Triggers with `within`: the action must be done by then.
    #[serde(default, deserialize_with = "lenient")]
    pub deadline: Option<Timestamp>,
    /// Transactional (a confirmation, an unsubscribe acknowledgment): not a
    /// solicitation, so fatigue, caps and the budget let it pass.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "is_false"
    )]
    pub exempt: bool,
    #[serde(default, deserialize_with = "lenient")]
    pub occurrence: Option<Occurrence>,
    /// The contact's owner: call tasks go to them.
    #[serde(default, deserialize_with = "lenient")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub template: Option<String>,
}

impl Payload {
    /// A stored payload. Most are well formed and read straight; only one
    /// that is not takes the lenient reading, field by field through a
    /// JSON tree of it, which costs several times more (planning reads
    /// every row of every contact it plans).
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        /// [`Payload`] without the leniency: the same fields and defaults.
        #[derive(Deserialize)]
        struct Strict {
            #[serde(default, deserialize_with = "instant::deserialize_opt")]
            deadline: Option<Timestamp>,
            #[serde(default)]
            exempt: bool,
            #[serde(default)]
            occurrence: Option<FlatOccurrence>,
            #[serde(default)]
            owner: Option<String>,
            #[serde(default)]
            template: Option<String>,
        }
        let strict = serde_json::from_str::<Strict>(text).ok().and_then(|s| {
            let occurrence = match s.occurrence {
                Some(flat) => Some(flat.occurrence()?),
                None => None,
            };
            Some(Self {
                deadline: s.deadline,
                exempt: s.exempt,
                occurrence,
                owner: s.owner,
                template: s.template,
            })
        });
        match strict {
            Some(payload) => Ok(payload),
            None => serde_json::from_str(text),
        }
    }

    /// A payload naming only its template (previews, tests, benchmarks).
    pub fn template(name: &str) -> Self {
        Self {
            template: Some(name.to_string()),
            ..Self::default()
        }
    }
}

/// An [`Occurrence`] read as a plain struct: serde reads an internally
/// tagged enum through a buffered copy of the object, several times the
/// cost, and planning reads every row of every contact it plans. Read
/// only when every field has its shape; anything else takes the derived
/// (lenient) reading, so both read a stored row alike.
#[derive(Deserialize)]
struct FlatOccurrence {
    #[serde(rename = "type")]
    kind: String,
    index: Option<usize>,
    #[serde(default, deserialize_with = "instant::deserialize_opt")]
    enrolled_at: Option<Timestamp>,
    signal: Option<String>,
    id: Option<String>,
    #[serde(default, deserialize_with = "instant::deserialize_opt")]
    at: Option<Timestamp>,
}

impl FlatOccurrence {
    /// The occurrence, if the derived reading would have found the same.
    fn occurrence(self) -> Option<Occurrence> {
        match self.kind.as_str() {
            "step" => Some(Occurrence::Step {
                index: self.index?,
                enrolled_at: self.enrolled_at?,
            }),
            "signal" => Some(Occurrence::Signal {
                signal: self.signal?,
                at: self.at?,
            }),
            "broadcast" => Some(Occurrence::Broadcast {
                id: self.id?,
                at: self.at?,
            }),
            _ => None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A field of the wrong shape reads as its default.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// A send to plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewSend {
    pub idem_key: String,
    pub contact: String,
    pub followup: String,
    pub kind: FollowUpKind,
    pub priority: i32,
    pub channel: String,
    pub due_at: Timestamp,
    pub payload: Payload,
}

/// A stored outbox row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub seq: i64,
    pub idem_key: String,
    pub contact: String,
    pub followup: String,
    pub kind: FollowUpKind,
    pub priority: i32,
    pub channel: String,
    pub state: State,
    pub due_at: Timestamp,
    /// When the follow-up was first due: maximum deferral counts from here.
    pub first_due: Timestamp,
    pub attempts: u32,
    pub lease_until: Option<Timestamp>,
    pub payload: Payload,
    pub last_error: Option<String>,
    pub updated_at: Timestamp,
}

impl Row {
    /// What the guard weighs of this row at claim time.
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            channel: &self.channel,
            kind: self.kind,
            priority: self.priority,
            exempt: self.payload.exempt,
            first_due: self.first_due,
        }
    }
}

/// How a delivery attempt ended, as the channel classified it.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    Delivered,
    Retryable {
        error: String,
        retry_after: Option<chrono::Duration>,
    },
    Permanent {
        error: String,
    },
}

/// Where an attempt leaves the row.
#[derive(Clone, Debug, PartialEq)]
pub enum Settlement {
    Sent,
    Retry { at: Timestamp, error: String },
    Dead { error: String },
}

impl OutboxConfig {
    /// Exponential backoff with jitter, honouring the channel's retry-after
    /// up to `backoff_max`. Never panics, whatever the channel answered.
    /// The jitter is derived from the key and attempt, so it spreads retries
    /// of different rows without making one row's schedule unpredictable.
    pub fn settle(
        &self,
        row_key: &str,
        attempts: u32,
        outcome: Attempt,
        now: Timestamp,
    ) -> Settlement {
        match outcome {
            Attempt::Delivered => Settlement::Sent,
            Attempt::Permanent { error } => Settlement::Dead { error },
            Attempt::Retryable { error, retry_after } => {
                if attempts >= self.max_attempts {
                    return Settlement::Dead {
                        error: format!("{error} (gave up after {attempts} attempts)"),
                    };
                }
                let delay = self.backoff(row_key, attempts);
                // A remote side's wait is honoured up to `backoff_max`, so
                // an absurd Retry-After cannot park a row for centuries.
                let delay = retry_after.map_or(delay, |ra| delay.max(ra.min(self.backoff_max.0)));
                match now.checked_add_signed(delay) {
                    Some(at) => Settlement::Retry { at, error },
                    None => Settlement::Dead {
                        error: format!("{error} (no retry instant after {now} is representable)"),
                    },
                }
            }
        }
    }

    /// The delay before attempt `attempts + 1`.
    pub fn backoff(&self, row_key: &str, attempts: u32) -> chrono::Duration {
        let base = self.backoff_base.0.num_milliseconds().max(1);
        let max = self.backoff_max.0.num_milliseconds().max(base);
        let exp = base
            .saturating_mul(1_i64 << attempts.saturating_sub(1).min(30))
            .min(max);
        let mut h = Sha256::new();
        h.update(row_key.as_bytes());
        h.update(attempts.to_le_bytes());
        let digest = h.finalize();
        let r = u16::from_le_bytes([digest[0], digest[1]]) as i64; // 0..65535
        // ±20 %.
        let jitter = exp / 5 * (r - 32_768) / 32_768;
        chrono::Duration::milliseconds((exp + jitter).clamp(1, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
            .expect("valid")
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = idempotency_key("c1", "nurture", "step-2");
        assert_eq!(a, idempotency_key("c1", "nurture", "step-2"));
        assert_ne!(a, idempotency_key("c1", "nurture", "step-3"));
        assert_ne!(
            idempotency_key("c1", "ab", "c"),
            idempotency_key("c1", "a", "bc")
        );
    }

    #[test]
    fn backoff_grows_with_bounded_jitter_and_honours_retry_after() {
        let cfg = OutboxConfig::default();
        let base = cfg.backoff_base.0.num_milliseconds() as f64;
        for attempt in 1..=6u32 {
            let d = cfg.backoff("k", attempt).num_milliseconds() as f64;
            let exp = base * f64::from(1u32 << (attempt - 1));
            assert!(
                d >= exp * 0.8 - 1.0 && d <= exp * 1.2 + 1.0,
                "attempt {attempt}: {d} vs {exp}"
            );
        }
        assert!(cfg.backoff("k", 40) <= cfg.backoff_max.0);
        assert_eq!(
            cfg.backoff("k", 3),
            cfg.backoff("k", 3),
            "deterministic per row"
        );

        let long = chrono::Duration::hours(2);
        let s = cfg.settle(
            "k",
            1,
            Attempt::Retryable {
                error: "429".into(),
                retry_after: Some(long),
            },
            now(),
        );
        assert_eq!(
            s,
            Settlement::Retry {
                at: now() + long,
                error: "429".into()
            }
        );
        // Absurd waits are capped by backoff_max; the row still dies at max_attempts.
        for absurd in [
            chrono::Duration::seconds(250_000_000_000),
            chrono::Duration::MAX,
        ] {
            let s = cfg.settle(
                "k",
                1,
                Attempt::Retryable {
                    error: "429".into(),
                    retry_after: Some(absurd),
                },
                now(),
            );
            assert_eq!(
                s,
                Settlement::Retry {
                    at: now() + cfg.backoff_max.0,
                    error: "429".into()
                }
            );
        }
        let s = cfg.settle(
            "k",
            cfg.max_attempts,
            Attempt::Retryable {
                error: "429".into(),
                retry_after: Some(chrono::Duration::MAX),
            },
            now(),
        );
        assert!(matches!(s, Settlement::Dead { .. }), "{s:?}");
        let s = cfg.settle(
            "k",
            1,
            Attempt::Retryable {
                error: "503".into(),
                retry_after: None,
            },
            chrono::DateTime::<chrono::Utc>::MAX_UTC,
        );
        assert!(matches!(s, Settlement::Dead { .. }), "{s:?}");
        let s = cfg.settle(
            "k",
            cfg.max_attempts,
            Attempt::Retryable {
                error: "503".into(),
                retry_after: None,
            },
            now(),
        );
        assert!(matches!(s, Settlement::Dead { error } if error.contains("gave up")));
        let s = cfg.settle(
            "k",
            1,
            Attempt::Permanent {
                error: "550".into(),
            },
            now(),
        );
        assert_eq!(
            s,
            Settlement::Dead {
                error: "550".into()
            }
        );
    }

    /// The plain reading of an occurrence agrees with the derived one on
    /// every stored form, well formed or not.
    #[test]
    fn payloads_read_alike_through_the_plain_and_the_derived_readings() {
        let at = now();
        let occurrences = [
            Occurrence::Step {
                index: 2,
                enrolled_at: at,
            },
            Occurrence::Signal {
                signal: "e-1".into(),
                at,
            },
            Occurrence::Broadcast { id: "b".into(), at },
        ];
        for occurrence in occurrences {
            let payload = Payload {
                occurrence: Some(occurrence),
                owner: Some("ana".into()),
                ..Payload::template("t")
            };
            let text = serde_json::to_string(&payload).expect("json");
            assert_eq!(Payload::from_json(&text).expect("reads"), payload);
        }
        for text in [
            r#"{"occurrence":{"type":"step","index":1.5,"enrolled_at":"2026-11-02T10:00:00Z"}}"#,
            r#"{"occurrence":{"type":"step","index":1,"enrolled_at":"2026-11-02T10:00:00Z","at":"x"}}"#,
            r#"{"occurrence":{"type":"signal","signal":"s"},"template":"t"}"#,
            r#"{"occurrence":{"type":"nothing","at":"2026-11-02T10:00:00Z"}}"#,
            r#"{"occurrence":{"at":"2026-11-02T10:00:00Z","id":"b","type":"broadcast"}}"#,
            r#"{"occurrence":null,"owner":7}"#,
        ] {
            let derived: Payload = serde_json::from_str(text).expect("lenient");
            assert_eq!(Payload::from_json(text).expect("reads"), derived, "{text}");
        }
    }
}
