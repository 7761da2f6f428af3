//! A rescoring pass: the one part of scoring that touches the store.
//!
//! Incremental by default: it rescores only contacts with new events, whose
//! time-dependent terms are due (`next_change_at`), or whose profile or
//! company changed. A full rebuild streams every contact with its history in
//! one sequential read; it runs when asked, on the first pass, and whenever
//! the scoring rules changed. Both give the same scores.

use super::changes::{ChangeDetector, ScorePoint};
use super::model::{ScoreCard, ScoringModel};
use super::points::Points;
use crate::config::Config;
use crate::model::{Company, Contact, Event, Timestamp};
use crate::store::{Records, ScoreStore, ScoreWrite, SqliteStore, StoreError, StoredChange};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

const LAST_SEQ: &str = "rescore.last_event_seq";
const RULES: &str = "rescore.rules";
/// Writes are flushed in transactions of this many contacts.
const FLUSH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("scoring rules: {0}")]
    Rules(#[from] super::model::ScoringError),
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PassReport {
    pub full: bool,
    /// Contacts scored.
    pub examined: usize,
    /// Contacts whose score or band changed (a snapshot each).
    pub changed: usize,
    /// Band crossings and jumps published.
    pub changes: usize,
}

/// Fingerprint of the rules: a change of rules forces a full rebuild.
pub fn rules_fingerprint(config: &Config) -> String {
    let text = serde_json::to_string(&config.scoring).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// Runs one pass at `now` over the store the configuration names.
pub fn rescore(config: &Config, now: Timestamp, force_full: bool) -> Result<PassReport, PassError> {
    let model = ScoringModel::compile(&config.scoring)?;
    let detector = ChangeDetector::new(&config.scoring.changes);
    let mut writer = SqliteStore::from_config(config)?;
    let fingerprint = rules_fingerprint(config);
    let last_seq = writer.meta(LAST_SEQ)?.and_then(|v| v.parse::<i64>().ok());
    let same_rules = writer.meta(RULES)?.as_deref() == Some(fingerprint.as_str());
    // Read before looking for work: anything committed later has a higher seq.
    let mark = writer.last_event_seq()?;
    let meta = [(LAST_SEQ, mark.to_string()), (RULES, fingerprint)];
    let mut pass = Pass {
        model: &model,
        detector: &detector,
        now,
        writes: Vec::new(),
        report: PassReport::default(),
    };
    match last_seq {
        Some(seq) if same_rules && !force_full => {
            for id in writer.rescore_candidates(now, seq)? {
                if let Some((contact, company, events)) = writer.scoring_input(&id)? {
                    pass.score(&writer, &contact, company.as_ref(), &events)?;
                }
                pass.flush(&mut writer, &[])?;
            }
        }
        _ => {
            pass.report.full = true;
            let reader = SqliteStore::from_config(config)?;
            let mut companies: HashMap<String, Option<Arc<Company>>> = HashMap::new();
            let mut failure: Option<StoreError> = None;
            reader.scan_histories(&mut |contact, events| {
                if failure.is_some() {
                    return;
                }
                let step = (|| {
                    let company = match &contact.company {
                        Some(id) => match companies.get(id) {
                            Some(c) => c.clone(),
                            None => {
                                let c = writer.company(id)?.map(Arc::new);
                                companies.insert(id.clone(), c.clone());
                                c
                            }
                        },
                        None => None,
                    };
                    pass.score(&writer, &contact, company.as_deref(), &events)?;
                    pass.flush(&mut writer, &[])
                })();
                if let Err(e) = step {
                    failure = Some(e);
                }
            })?;
            if let Some(e) = failure {
                return Err(e.into());
            }
        }
    }
    pass.finish(&mut writer, &meta)?;
    tracing::info!(
        full = pass.report.full,
        examined = pass.report.examined,
        changed = pass.report.changed,
        changes = pass.report.changes,
        "rescoring pass done"
    );
    Ok(pass.report)
}

struct Pass<'a> {
    model: &'a ScoringModel,
    detector: &'a ChangeDetector,
    now: Timestamp,
    writes: Vec<ScoreWrite>,
    report: PassReport,
}

impl Pass<'_> {
    fn score(
        &mut self,
        store: &SqliteStore,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.report.examined += 1;
        let card = self.model.score(contact, company, events, self.now);
        let previous = store.stored_score(&contact.id)?;
        let (snapshot, changes) = match &previous {
            None => (true, Vec::new()),
            Some(p) if p.score == card.score.0 && *p.band == *card.band => (false, Vec::new()),
            Some(p) => (true, self.changes(store, p, &card)?),
        };
        let unchanged = previous
            .as_ref()
            .is_some_and(|p| !snapshot && p.next_change_at == card.next_change_at);
        if snapshot {
            self.report.changed += 1;
        }
        self.report.changes += changes.len();
        if !unchanged {
            self.writes.push(ScoreWrite {
                contact: contact.id.clone(),
                score: card.score.0,
                band: card.band.to_string(),
                next_change_at: card.next_change_at,
                snapshot,
                changes,
            });
        }
        Ok(())
    }

    fn changes(
        &self,
        store: &SqliteStore,
        previous: &crate::store::StoredScore,
        card: &ScoreCard,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let history: Vec<ScorePoint> = store
            .score_history(&card.contact, Some(self.now - self.detector.window()))?
            .into_iter()
            .map(|s| ScorePoint {
                at: s.at,
                score: Points(s.score),
            })
            .collect();
        let before = ScoreCard {
            contact: card.contact.clone(),
            score: Points(previous.score),
            band: Arc::from(previous.band.as_str()),
            profile: Points::ZERO,
            behaviour: Points::ZERO,
            negative: Points::ZERO,
            inactivity: Points::ZERO,
            contributions: Vec::new(),
            next_change_at: None,
        };
        Ok(self
            .detector
            .detect(
                self.model,
                &before,
                previous.scored_at,
                &history,
                card,
                self.now,
            )
            .into_iter()
            .map(|c| StoredChange {
                seq: 0,
                contact: c.contact,
                at: c.at,
                kind: c.kind.as_str().to_string(),
                from_score: c.from_score.0,
                to_score: c.to_score.0,
                from_band: c.from_band,
                to_band: c.to_band,
                since: c.since,
            })
            .collect())
    }

    fn flush(
        &mut self,
        store: &mut SqliteStore,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        if self.writes.len() >= FLUSH || !meta.is_empty() {
            store.save_scores(&self.writes, self.now, meta)?;
            self.writes.clear();
        }
        Ok(())
    }

    fn finish(
        &mut self,
        store: &mut SqliteStore,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        store.save_scores(&self.writes, self.now, meta)?;
        self.writes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Format, Incoming, Kind, read_lines};
    use crate::store::ScoreStore;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    const KINDS: [&str; 10] = [
        "email_open",
        "email_click",
        "page_visit",
        "download",
        "demo_request",
        "email_sent",
        "call",
        "unsubscribe",
        "trade_show_visit",
        "email_reply",
    ];
    const URLS: [&str; 3] = [
        "https://x.example/pricing",
        "https://x.example/careers",
        "https://x.example/blog",
    ];

    fn config(dir: &Path) -> Config {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
        let text = std::fs::read_to_string(&file).expect("shipped config");
        let db = dir.join("s.db").display().to_string();
        Config::parse(&text, &file, &|name| {
            (name == "RELANCE_DB").then(|| db.clone())
        })
        .expect("valid")
    }

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
            .expect("valid")
            .with_timezone(&chrono::Utc)
    }

    fn seed(store: &mut SqliteStore) {
        let companies =
            "id,headcount,sector,foreign_subsidiaries\nbig,900,retail,0\nmid,120,industry,2\n";
        let contacts = "id,company,title\nc0,mid,DRH\nc1,mid,Stagiaire RH\nc2,big,DAF\nc3,mid,Directeur RH\nc4,,DRH\nc5,big,DRH\n";
        for (csv, kind) in [(companies, Kind::Company), (contacts, Kind::Contact)] {
            let batch: Vec<_> = read_lines(csv.as_bytes(), Format::Csv, kind)
                .expect("csv")
                .map(|l| l.item.expect("valid"))
                .collect();
            match kind {
                Kind::Company => store.upsert_companies(&batch).expect("companies"),
                _ => store.upsert_contacts(&batch).expect("contacts"),
            };
        }
    }

    fn event(contact: usize, kind: usize, minutes: i64, url: usize) -> Incoming {
        let mut props = serde_json::Map::new();
        if KINDS[kind] == "page_visit" {
            props.insert("url".into(), URLS[url].into());
        }
        Incoming::Contact(crate::model::Event {
            id: None,
            contact: format!("c{contact}"),
            kind: KINDS[kind].into(),
            at: t0() + chrono::Duration::minutes(minutes),
            channel: None,
            props,
        })
    }

    fn scores(config: &Config) -> BTreeMap<String, (i64, String, Option<Timestamp>)> {
        let store = SqliteStore::from_config(config).expect("store");
        (0..6)
            .filter_map(|i| store.stored_score(&format!("c{i}")).expect("read"))
            .map(|s| (s.contact, (s.score, s.band, s.next_change_at)))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

        #[test]
        fn incremental_passes_agree_with_a_full_rebuild(
            batches in prop::collection::vec(
                (prop::collection::vec((0..6usize, 0..10usize, 0..200_000i64, 0..3usize), 0..12), 1..400_000i64),
                1..6,
            ),
        ) {
            let a = tempfile::tempdir().expect("tmp");
            let b = tempfile::tempdir().expect("tmp");
            let (ca, cb) = (config(a.path()), config(b.path()));
            let mut sa = SqliteStore::from_config(&ca).expect("store");
            seed(&mut sa);
            let mut now = t0();
            let mut all = Vec::new();
            for (events, advance) in &batches {
                let batch: Vec<Incoming> = events.iter().map(|&(c, k, m, u)| event(c, k, m, u)).collect();
                sa.append_events(&batch).expect("append");
                all.extend(batch);
                now += chrono::Duration::minutes(*advance);
                rescore(&ca, now, false).expect("incremental pass");
            }
            let mut sb = SqliteStore::from_config(&cb).expect("store");
            seed(&mut sb);
            sb.append_events(&all).expect("append");
            let full = rescore(&cb, now, true).expect("full rebuild");
            prop_assert!(full.full);
            prop_assert_eq!(scores(&ca), scores(&cb));
        }
    }

    #[test]
    fn rule_changes_force_a_full_rebuild_and_profile_changes_are_rescored() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path());
        let mut store = SqliteStore::from_config(&cfg).expect("store");
        seed(&mut store);
        assert!(
            rescore(&cfg, t0(), false).expect("pass").full,
            "first pass rebuilds"
        );
        let again = rescore(&cfg, t0(), false).expect("pass");
        assert_eq!((again.full, again.examined), (false, 0));

        // c4 becomes an intern: only c4 is rescored, and it drops.
        let before = store
            .stored_score("c4")
            .expect("read")
            .expect("scored")
            .score;
        let patch: Vec<_> = read_lines(
            "id,title\nc4,Stagiaire\n".as_bytes(),
            Format::Csv,
            Kind::Contact,
        )
        .expect("csv")
        .map(|l| l.item.expect("valid"))
        .collect();
        store.upsert_contacts(&patch).expect("update");
        let pass = rescore(&cfg, t0(), false).expect("pass");
        assert_eq!((pass.full, pass.examined, pass.changed), (false, 1, 1));
        assert!(
            store
                .stored_score("c4")
                .expect("read")
                .expect("scored")
                .score
                < before
        );
        assert_eq!(store.score_history("c4", None).expect("film").len(), 2);

        let mut changed = cfg.clone();
        changed.scoring.bands[0].min = Some(140.0);
        assert!(
            rescore(&changed, t0(), false).expect("pass").full,
            "new rules rebuild everything"
        );
    }
}
