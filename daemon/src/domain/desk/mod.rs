//! The call desk and the sales-ops reports (seeds 001–003): prospect
//! status, who to call today, caller lists, call KPIs per session, day or
//! week, duplicates, the score distribution and campaign effectiveness.
//!
//! Pure computations over plain data ([`kpis`], [`distribution`],
//! [`campaigns`], [`today`]) and the functions that feed them from what the
//! scoring pass maintains (`crate::pipeline::report`), so that the command line, the API
//! and a dashboard show the same figures.

pub mod campaigns;
pub mod config;
pub mod distribution;
pub mod keys;
pub mod kpis;
pub mod status;
pub mod today;

pub use config::DeskConfig;
pub use status::{DeskEvent, DeskKind, DeskRow, DeskRules, ProspectStatus, SetBy, StatusView};

/// A fingerprint of what the scoring pass hands the store for a contact's
/// desk row, call-queue entry and campaign figures. Kept with the score, it lets a pass that
/// finds the score unchanged skip the contact's write altogether: a rebuild
/// then rewrites only the contacts whose desk or campaigns changed.
///
/// The rules' fingerprint is folded in, so that a change of the desk rules
/// writes every contact again (what the store derives from a row, such as
/// the call queue, may depend on the rules and not only on the row).
///
/// FNV-1a, not the standard library's randomly keyed hasher: the mark must
/// be the same in the next process. A hasher that changed between versions
/// would only cost one more write per contact.
/// `hot_lead` is whether the contact is in the call queue, with its owner.
pub fn mark(
    seed: MarkSeed,
    row: Option<&DeskRow>,
    facts: &campaigns::CampaignFacts,
    hot_lead: Option<Option<&str>>,
) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = Fnv1a(seed.0);
    row.hash(&mut h);
    facts.hash(&mut h);
    hot_lead.hash(&mut h);
    // Stored as SQLite's signed integer.
    h.finish() as i64
}

/// The rules' part of [`mark`], computed once per pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkSeed(u64);

impl MarkSeed {
    pub fn new(rules: &DeskRules) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = Fnv1a(0xcbf2_9ce4_8422_2325);
        rules.fingerprint().hash(&mut h);
        Self(h.finish())
    }
}

struct Fnv1a(u64);

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Rounds a ratio to four decimals, so that JSON figures read exactly.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| (num / den * 10_000.0).round() / 10_000.0)
}
