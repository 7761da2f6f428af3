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

/// Ranks the list; `bands` are the band names, highest first.
pub fn rank(list: &mut [ToCall], bands: &[String]) {
    let band_rank = |b: &Option<String>| {
        b.as_ref()
            .and_then(|b| bands.iter().position(|x| x == b))
            .unwrap_or(bands.len())
    };
    list.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| band_rank(&a.contact.band).cmp(&band_rank(&b.contact.band)))
            .then_with(|| {
                b.contact
                    .score
                    .unwrap_or(f64::MIN)
                    .total_cmp(&a.contact.score.unwrap_or(f64::MIN))
            })
            .then_with(|| {
                let cb = |t: &ToCall| t.contact.callback_at.unwrap_or(Timestamp::MAX_UTC);
                cb(a).cmp(&cb(b))
            })
            .then_with(|| a.contact.id.cmp(&b.contact.id))
    });
}
