//! Who to call today: call tasks due today, call-backs due and hot leads
//! not called lately, one line per contact with every reason, ranked by
//! priority (highest first), band (highest first), score (highest first)
//! and call-back date (earliest first).

use super::StatusView;
use crate::core::model::Timestamp;
use serde::Serialize;

/// A contact as a caller list shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Brief {
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub owner: Option<String>,
    pub band: Option<String>,
    /// In points.
    pub score: Option<f64>,
    pub status: StatusView,
    pub calls: u32,
    pub last_call_at: Option<Timestamp>,
    pub last_call_code: Option<String>,
    pub callback_at: Option<Timestamp>,
    pub documentation_at: Option<Timestamp>,
    pub do_not_call: Option<String>,
}

/// Why a contact is on today's list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Why {
    /// A call task a follow-up planned (its name and due instant).
    Trigger {
        followup: String,
        task: String,
        due: Timestamp,
    },
    /// A call-back date agreed on a previous call.
    CallBack { at: Timestamp },
    /// A contact in a hot band not called lately.
    HotLead { band: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToCall {
    pub contact: Brief,
    pub priority: u32,
    pub why: Vec<Why>,
}

/// What a contact is ranked by: priority (highest first), band (highest
/// first; `bands` are the band names, highest first, an unknown band
/// last), score (highest first, none last), call-back date (earliest
/// first, none last), then id.
#[derive(Clone, Copy, Debug)]
pub struct RankKey<'a> {
    pub priority: u32,
    pub band: Option<&'a str>,
    /// In points.
    pub score: Option<f64>,
    pub callback_at: Option<Timestamp>,
    pub id: &'a str,
}

impl RankKey<'_> {
    /// `Less` when `self` comes first.
    pub fn cmp(&self, other: &RankKey<'_>, bands: &[String]) -> std::cmp::Ordering {
        let band_rank = |b: Option<&str>| {
            b.and_then(|b| bands.iter().position(|x| x == b))
                .unwrap_or(bands.len())
        };
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| band_rank(self.band).cmp(&band_rank(other.band)))
            .then_with(|| {
                other
                    .score
                    .unwrap_or(f64::MIN)
                    .total_cmp(&self.score.unwrap_or(f64::MIN))
            })
            .then_with(|| {
                let cb = |t: Option<Timestamp>| t.unwrap_or(Timestamp::MAX_UTC);
                cb(self.callback_at).cmp(&cb(other.callback_at))
            })
            .then_with(|| self.id.cmp(other.id))
    }
}
