use super::*;
use crate::core::model::{BusinessSignal, Company, Contact, Deal, Event, Status, Timestamp};
use crate::pipeline::config::Config;
use chrono::TimeZone;
use serde_json::json;
use std::path::Path;

fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 3, 2, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn days_ago(d: i64) -> Timestamp {
    now() - chrono::Duration::days(d)
}

fn shipped() -> Config {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    Config::load(&file).unwrap_or_else(|e| panic!("{e}"))
}

fn shipped_model() -> ScoringModel {
    ScoringModel::compile(&shipped().scoring).unwrap_or_else(|e| panic!("{e}"))
}

fn model(toml_text: &str) -> ScoringModel {
    let config: ScoringConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"));
    ScoringModel::compile(&config).unwrap_or_else(|e| panic!("{e}"))
}

fn contact(id: &str, title: &str, company: &str) -> Contact {
    let mut c = Contact {
        id: id.into(),
        status: Status::Prospect,
        company: Some(company.into()),
        ..Contact::default()
    };
    c.attributes.insert("title".into(), json!(title));
    c
}

fn company(id: &str, attrs: serde_json::Value) -> Company {
    let mut co = Company {
        id: id.into(),
        ..Company::default()
    };
    if let serde_json::Value::Object(map) = attrs {
        co.attributes.extend(map);
    }
    co
}

fn ev(kind: &str, at: Timestamp) -> Event {
    Event {
        id: None,
        contact: "c".into(),
        kind: kind.into(),
        at,
        channel: None,
        props: serde_json::Map::new(),
    }
}

fn visit(url: &str, at: Timestamp) -> Event {
    let mut e = ev("page_visit", at);
    e.props.insert("url".into(), json!(url));
    e
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| e.at);
    events
}

fn rules(card: &ScoreCard) -> Vec<(String, f64)> {
    card.contributions
        .iter()
        .map(|c| (c.rule.to_string(), c.points.as_f64()))
        .collect()
}

fn assert_sums(card: &ScoreCard) {
    let sum: Points = card.contributions.iter().map(|c| c.points).sum();
    assert_eq!(sum, card.score, "{card:#?}");
    assert_eq!(
        card.profile + card.behaviour + card.negative + card.inactivity,
        card.score
    );
}

#[test]
fn seed_prospects_land_in_their_bands_under_the_shipped_rules() {
    let m = shipped_model();
    let mut btp = company(
        "btp",
        json!({"headcount": 220, "sector": "construction", "foreign_subsidiaries": 3, "expatriates": 12}),
    );
    btp.name = Some("Bâtir SA".into());
    let martino = contact("martino", "Directeur RH", "btp");
    let mut click = ev("email_click", now() - chrono::Duration::hours(2));
    click.channel = Some("email".into());
    let martino_events = sorted(vec![
        ev("demo_request", days_ago(3)),
        ev("download", days_ago(5)),
        visit("https://payroll.example/pricing", days_ago(4)),
        visit(
            "https://payroll.example/blog/expatriates",
            now() - chrono::Duration::hours(6),
        ),
        click,
        ev("email_open", now() - chrono::Duration::hours(3)),
        ev("email_open", now() - chrono::Duration::hours(4)),
        ev("email_open", now() - chrono::Duration::hours(5)),
    ]);
    let card = m.score(&martino, Some(&btp), &martino_events, now());
    assert_eq!(card.score, Points(21_500), "{:#?}", rules(&card));
    assert_eq!(&*card.band, "hot");
    assert_eq!(card.profile, Points(12_000));
    assert_eq!(card.behaviour, Points(9_500));
    assert_sums(&card);

    let usine = company("usine", json!({"headcount": 80, "sector": "industry"}));
    let rajati = contact("rajati", "DRH", "usine");
    let rajati_events = sorted(vec![
        ev("trade_show_visit", days_ago(20)),
        ev("form_submit", days_ago(12)),
        ev("email_click", now() - chrono::Duration::hours(1)),
    ]);
    let card = m.score(&rajati, Some(&usine), &rajati_events, now());
    assert_eq!(card.score, Points(14_000), "{:#?}", rules(&card));
    assert_eq!(&*card.band, "warm");

    let beltrani = contact("beltrani", "Stagiaire comptabilité", "usine");
    let beltrani_events = sorted(vec![
        ev("download", days_ago(2)),
        visit("https://payroll.example/careers/dev", days_ago(1)),
        ev("email_open", now() - chrono::Duration::hours(1)),
        ev("email_open", now() - chrono::Duration::hours(2)),
        ev("email_open", now() - chrono::Duration::hours(3)),
        ev("email_open", now() - chrono::Duration::hours(4)),
        ev("email_open", now() - chrono::Duration::hours(5)),
    ]);
    let card = m.score(&beltrani, Some(&usine), &beltrani_events, now());
    assert_eq!(card.score, Points(3_000), "{:#?}", rules(&card));
    assert_eq!(&*card.band, "cold");
    let names = rules(&card);
    assert!(
        names.contains(&("no decision power".into(), -40.0)),
        "{names:?}"
    );
    assert!(names.contains(&("careers page".into(), -10.0)), "{names:?}");
    // The careers visit earns no generic page-visit points.
    assert!(!names.iter().any(|(n, _)| n == "page visit"), "{names:?}");
}

#[test]
fn inactivity_malus_separates_martin_from_nathalie() {
    let m = shipped_model();
    let acme = company(
        "acme",
        json!({"headcount": 220, "sector": "industry", "foreign_subsidiaries": 2, "expatriates": 4}),
    );
    let actions = |age: i64| {
        sorted(vec![
            ev("demo_request", days_ago(age)),
            ev("download", days_ago(age + 1)),
            ev("download", days_ago(age + 2)),
            visit("https://payroll.example/pricing", days_ago(age + 1)),
            visit("https://payroll.example/tarifs", days_ago(age + 2)),
        ])
    };
    let martin = m.score(
        &contact("martin", "DRH", "acme"),
        Some(&acme),
        &actions(8),
        now(),
    );
    let nathalie = m.score(
        &contact("nathalie", "DRH", "acme"),
        Some(&acme),
        &actions(95),
        now(),
    );
    assert_eq!(martin.score, Points(25_000), "{:#?}", rules(&martin));
    assert_eq!(nathalie.profile + nathalie.behaviour, Points(25_000));
    assert_eq!(nathalie.score, Points(23_500), "{:#?}", rules(&nathalie));
    let malus = nathalie.contributions.last().expect("a malus");
    assert_eq!((malus.kind, malus.months), (RuleKind::Inactivity, Some(3)));
    // The malus next grows when the fourth month is complete.
    assert_eq!(
        nathalie.next_change_at,
        Some(days_ago(95) + chrono::Duration::days(120))
    );
    assert_sums(&nathalie);
}

#[test]
fn recency_caps_and_next_change_follow_whole_days() {
    let m = model(
        r#"
[[behaviour]]
name = "clicks"
event = "email_click"
points = 10.0
fade_over = "10d"

[[behaviour]]
name = "opens"
event = "email_open"
points = 8.0
half_life = "2d"
max_count = 2

[[behaviour]]
name = "visits"
event = ["page_visit", "download"]
points = 3.0
counts_for = "7d"
"#,
    );
    let c = contact("c", "x", "none");
    let t0 = days_ago(4) - chrono::Duration::hours(5);
    let events = sorted(vec![
        ev("email_click", t0),
        ev("email_open", days_ago(10)),
        ev("email_open", days_ago(2)),
        ev("email_open", days_ago(0)),
        ev("download", days_ago(6)),
        ev("page_visit", days_ago(8)),
    ]);
    let card = m.score(&c, None, &events, now());
    // Click 4 whole days old of 10: 60 %. Opens: the two most recent, ages 0
    // and 2 days (weights 1 and 0.5). Visits: only the 6-day-old download.
    assert_eq!(
        rules(&card),
        vec![
            ("clicks".into(), 6.0),
            ("opens".into(), 12.0),
            ("visits".into(), 3.0)
        ]
    );
    let opens = &card.contributions[1];
    assert_eq!(
        opens.events.iter().map(|e| e.weight).collect::<Vec<_>>(),
        vec![0.5, 1.0]
    );
    assert_eq!(opens.decay, Some(Recency::HalfLifeDays(2.0)));
    // The click, 4 days and 5 hours old, turns 5 days old first.
    assert_eq!(card.next_change_at, Some(t0 + chrono::Duration::days(5)));
    // A day later the click's weight has moved one step.
    let later = m.score(&c, None, &events, t0 + chrono::Duration::days(5));
    assert_eq!(later.contributions[0].points, Points(500));
    // Long after everything has faded, nothing will change any more.
    let much_later = m.score(&c, None, &events, now() + chrono::Duration::days(60));
    assert_eq!(much_later.score, Points::ZERO);
    assert_eq!(much_later.next_change_at, None);
    // An event in the future counts from its instant.
    let mut future = events.clone();
    future.push(ev("download", now() + chrono::Duration::hours(3)));
    let card = m.score(&c, None, &future, now());
    assert_eq!(
        card.next_change_at,
        Some(now() + chrono::Duration::hours(3))
    );
}

#[test]
fn fractional_contributions_still_sum_to_the_score() {
    let m = model(
        r#"
[[behaviour]]
name = "thirds"
event = "email_open"
points = 1.0
fade_over = "3d"

[[behaviour]]
name = "sevenths"
event = "email_click"
points = 1.0
fade_over = "7d"
"#,
    );
    let c = contact("c", "x", "none");
    let events = sorted(
        (0..6)
            .flat_map(|d| {
                [
                    ev("email_open", days_ago(d % 3)),
                    ev("email_click", days_ago(d)),
                ]
            })
            .collect(),
    );
    let card = m.score(&c, None, &events, now());
    assert_eq!(card.contributions[0].points, Points(400)); // 2 × (1 + 2/3 + 1/3)
    assert_eq!(
        card.contributions[1].points,
        Points::from_f64(6.0 - 15.0 / 7.0)
    );
    assert_sums(&card);
    let value = serde_json::to_value(&card).expect("serializable");
    for key in [
        "contact",
        "score",
        "band",
        "profile",
        "behaviour",
        "contributions",
    ] {
        assert!(value.get(key).is_some(), "missing {key} in {value}");
    }
    assert_eq!(value["contributions"][0]["rule"], "thirds");
    assert_eq!(value["contributions"][0]["points"], 4.0);
    assert_eq!(value["score"], 7.86);
}

#[test]
fn negative_criteria_unanswered_and_do_not_contact() {
    let m = shipped_model();
    let mut c = contact("c", "Responsable paie", "none");
    let mut events: Vec<Event> = (0..5).map(|d| ev("email_sent", days_ago(12 - d))).collect();
    events.insert(0, ev("email_reply", days_ago(20)));
    // The last email is 8 days old, so the week to answer it has passed.
    // Four days earlier only two emails were a week old; the third would be
    // the next day.
    let early = m.score(&c, None, &events, days_ago(4));
    assert!(
        !rules(&early)
            .iter()
            .any(|(n, _)| n.starts_with("no answer"))
    );
    assert_eq!(early.next_change_at, Some(days_ago(3)));
    let card = m.score(&c, None, &events, now());
    let names = rules(&card);
    assert!(
        names.contains(&("no answer to the last 5 solicitations".into(), -15.0)),
        "{names:?}"
    );
    let unanswered = card
        .contributions
        .iter()
        .find(|c| c.points == Points(-1500));
    assert_eq!(unanswered.map(|c| c.events.len()), Some(5));
    // A click answers: the count starts again.
    events.push(ev("email_click", days_ago(1)));
    let card = m.score(&c, None, &events, now());
    assert!(!rules(&card).iter().any(|(n, _)| n.starts_with("no answer")));

    c.do_not_contact.insert("phone".into());
    let card = m.score(&c, None, &[], now());
    assert_eq!(rules(&card), vec![("do not contact".into(), -50.0)]);
    assert_eq!(&*card.band, "cold");
}

#[test]
fn scoring_mistakes_are_reported_with_line_and_column() {
    let text = r#"[scoring]
[[scoring.profile]]
name = "big"
points = 10
when = { field = "company.attributes.headcount", gte = "30" }

[[scoring.behaviour]]
name = "pricing"
points = 5
when = { field = "event.props.url", regex = "(" }

[[scoring.negative]]
name = "big"
points = 5
when = { field = "title", eq = "intern" }
"#;
    let errs = Config::parse(text, Path::new("r.toml"), &|_| None)
        .expect_err("invalid")
        .errors()
        .to_vec();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    // A quoted number is a type error from serde, reported first on its own.
    assert!(shown[0].starts_with("r.toml:5:"), "{shown:#?}");
    assert!(
        shown[0].contains("scoring.profile[0].when.gte"),
        "{shown:#?}"
    );

    let text = text.replace("gte = \"30\"", "gte = 30");
    let errs = Config::parse(&text, Path::new("r.toml"), &|_| None)
        .expect_err("invalid")
        .errors()
        .to_vec();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let expect = [
        (
            "r.toml:7:",
            "scoring.behaviour[0].event",
            "needs the `event`",
        ),
        (
            "r.toml:10:",
            "scoring.behaviour[0].when.regex",
            "invalid regular expression",
        ),
        ("r.toml:13:", "scoring.negative[0].name", "already used"),
        (
            "r.toml:14:",
            "scoring.negative[0].points",
            "negative points",
        ),
        (
            "r.toml:15:",
            "scoring.negative[0].when.field",
            "unknown field `title`",
        ),
    ];
    assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    for (line, (pos, key, msg)) in shown.iter().zip(expect) {
        assert!(
            line.starts_with(pos) && line.contains(key) && line.contains(msg),
            "{line} should be {pos} {key} {msg}"
        );
    }
}

#[test]
fn unknown_keys_inside_conditions_are_reported() {
    let text = "[[scoring.profile]]\nname = \"x\"\npoints = 1\nwhen = { field = \"tier\", equals = \"core\" }\n";
    let errs = Config::parse(text, Path::new("r.toml"), &|_| None)
        .expect_err("invalid")
        .errors()
        .to_vec();
    assert!(
        errs.iter()
            .any(|e| e.key == "scoring.profile[0].when.equals" && e.line == 4),
        "{errs:#?}"
    );
}

#[test]
fn relative_date_profile_rules_report_when_they_flip() {
    let m = shipped_model();
    let mut co = company("co", json!({}));
    co.signals.push(BusinessSignal {
        kind: "international".into(),
        at: days_ago(100),
        props: serde_json::Map::new(),
    });
    let c = contact("c", "x", "co");
    let card = m.score(&c, Some(&co), &[], now());
    assert_eq!(
        rules(&card),
        vec![("international development".into(), 10.0)]
    );
    assert_eq!(
        card.next_change_at,
        Some(days_ago(100) + chrono::Duration::days(180))
    );
    let after = m.score(
        &c,
        Some(&co),
        &[],
        days_ago(100) + chrono::Duration::days(180),
    );
    assert_eq!(after.score, Points::ZERO);
}

#[test]
fn band_crossings_and_jumps_become_change_records() {
    let m = shipped_model();
    let detector = ChangeDetector::new(&shipped().scoring.changes);
    let card = |score: i64| {
        let score = Points(score * 100);
        ScoreCard {
            contact: "c".into(),
            score,
            band: m.band(score).clone(),
            profile: score,
            behaviour: Points::ZERO,
            negative: Points::ZERO,
            inactivity: Points::ZERO,
            contributions: Vec::new(),
            next_change_at: None,
        }
    };
    let kinds = |changes: Vec<ScoreChange>| -> Vec<ChangeKind> {
        changes.into_iter().map(|c| c.kind).collect()
    };
    // 90 → 120: warm, but a jump of 30 is below the 50 configured.
    let history = [ScorePoint {
        at: days_ago(5),
        score: Points(6_000),
    }];
    let changes = detector.detect(&m, &card(90), days_ago(1), &[], &card(120), now());
    assert_eq!(kinds(changes.clone()), vec![ChangeKind::BandUp]);
    assert_eq!(
        (changes[0].from_band.as_str(), changes[0].to_band.as_str()),
        ("cold", "warm")
    );
    // 60 five days ago → 120: a jump of 60 within 7 days, reported once.
    let changes = detector.detect(&m, &card(100), days_ago(1), &history, &card(120), now());
    assert_eq!(kinds(changes.clone()), vec![ChangeKind::JumpUp]);
    assert_eq!(
        (changes[0].from_score, changes[0].since),
        (Points(6_000), days_ago(5))
    );
    let history2 = [
        history[0],
        ScorePoint {
            at: days_ago(1),
            score: Points(12_000),
        },
    ];
    let again = detector.detect(&m, &card(120), days_ago(1), &history2, &card(125), now());
    assert!(again.is_empty(), "{again:?}");
    // The same rise spread over three weeks is no jump.
    let old = [ScorePoint {
        at: days_ago(21),
        score: Points(6_000),
    }];
    assert!(
        detector
            .detect(&m, &card(100), days_ago(1), &old, &card(120), now())
            .is_empty()
    );
    // Falling from hot to cold.
    let down = detector.detect(&m, &card(160), days_ago(1), &[], &card(90), now());
    assert_eq!(
        kinds(down),
        vec![ChangeKind::BandDown, ChangeKind::JumpDown]
    );
}

#[test]
fn deals_follow_the_seed_rules_and_rank_best_first() {
    let config = shipped();
    let deals = DealModel::compile(&config.scoring.deals).unwrap_or_else(|e| panic!("{e}"));
    let target = company("t", json!({"headcount": 200, "sector": "BTP"}));
    let other = company("o", json!({"headcount": 5000, "sector": "retail"}));
    let deal = |id: &str, amount: f64, source: Option<&str>| {
        let mut d = Deal {
            id: id.into(),
            amount: Some(amount),
            ..Deal::default()
        };
        if let Some(s) = source {
            d.attributes.insert("source".into(), json!(s));
        }
        d
    };
    let stage = |deal: &str, stage: &str, at: Timestamp| {
        let mut e = ev("deal_stage", at);
        e.props.insert("deal".into(), json!(deal));
        e.props.insert("stage".into(), json!(stage));
        e
    };
    let (big, small, referred) = (
        deal("big", 50_000.0, None),
        deal("small", 10_000.0, None),
        deal("referred", 20_000.0, Some("customer")),
    );
    let c = contact("c", "DRH", "t");
    let events = vec![
        stage("big", "director_loves_proposal", days_ago(3)),
        stage("big", "purchasing_halves_budget", days_ago(1)),
        stage("small", "director_loves_proposal", days_ago(1)),
        stage("small", "unknown stage", days_ago(1)),
    ];
    let inputs = [
        DealInput {
            deal: &big,
            contact: Some(&c),
            company: Some(&target),
            events: &events,
        },
        DealInput {
            deal: &small,
            contact: Some(&c),
            company: Some(&target),
            events: &events,
        },
        DealInput {
            deal: &referred,
            contact: None,
            company: Some(&other),
            events: &[],
        },
    ];
    // Average 26 666: big is above, the others below.
    let ranked = deals.rank(&inputs, now());
    let scores: Vec<(&str, f64)> = ranked
        .iter()
        .map(|d| (d.deal.as_str(), d.score.as_f64()))
        .collect();
    // big: 10 segment + 10 above + 3 − 15; small: 10 − 5 + 3; referred: −5 + 5.
    assert_eq!(
        scores,
        vec![("big", 8.0), ("small", 8.0), ("referred", 0.0)]
    );
    assert_eq!(
        ranked[0]
            .contributions
            .iter()
            .map(|c| c.rule.as_str())
            .collect::<Vec<_>>(),
        vec![
            "priority segment",
            "amount above average",
            "stage: director_loves_proposal",
            "stage: purchasing_halves_budget"
        ]
    );
    // Before purchasing's request, big led clearly.
    let early = deals.rank(&inputs, days_ago(2));
    assert_eq!(
        (early[0].deal.as_str(), early[0].score),
        ("big", Points(2_300))
    );
}

#[test]
fn customers_get_rfm_abc_and_value_tiers() {
    let config = shipped().scoring.customers;
    let purchase = |amount: f64, margin: f64, age: i64| {
        let mut e = ev("purchase", days_ago(age));
        e.props.insert("amount".into(), json!(amount));
        e.props.insert("margin".into(), json!(margin));
        e
    };
    // Ten customers: c0 buys most, most often, most recently; c9 least.
    let histories: Vec<(String, Vec<Event>)> = (0..10)
        .map(|i| {
            let events = (0..(10 - i))
                .map(|k| purchase(1000.0 - 50.0 * i as f64, 100.0, 5 + 30 * i + k))
                .collect();
            (format!("c{i}"), events)
        })
        .chain([
            ("loss".to_string(), vec![purchase(90_000.0, -5_000.0, 400)]),
            ("prospect".to_string(), vec![ev("email_open", days_ago(1))]),
        ])
        .collect();
    let scores = score_customers(
        &config,
        histories.iter().map(|(id, e)| (id.as_str(), e.as_slice())),
        now(),
    );
    assert_eq!(scores.len(), 11, "the prospect never bought");
    let by = |id: &str| scores.iter().find(|s| s.customer == id).expect("scored");
    let c0 = by("c0");
    assert_eq!(
        (c0.purchases, c0.revenue, c0.average_basket),
        (10, 10_000.0, 1000.0)
    );
    assert_eq!(c0.rfm.segment, RfmSegment::Champions);
    // Second largest basket of eleven still ranks in the top fifth.
    assert_eq!(
        (c0.rfm.recency, c0.rfm.frequency, c0.rfm.monetary),
        (5, 5, 5)
    );
    assert_eq!(c0.abc, Abc::A);
    assert_eq!(c0.value, ValueTier::VeryImportant);
    // The loss maker has the largest revenue but a negative margin.
    let loss = by("loss");
    assert_eq!((loss.abc, loss.value), (Abc::A, ValueTier::NegativeMargin));
    assert_eq!(
        (loss.rfm.recency, loss.rfm.frequency, loss.rfm.monetary),
        (1, 1, 5)
    );
    assert_eq!(loss.rfm.segment, RfmSegment::Lost);
    let c9 = by("c9");
    assert_eq!((c9.abc, c9.value), (Abc::C, ValueTier::Minor));
    assert_eq!(c9.rfm.segment, RfmSegment::Lost);
    assert_eq!(by("c5").abc, Abc::B);
    let counts = |abc| scores.iter().filter(|s| s.abc == abc).count();
    assert_eq!((counts(Abc::A), counts(Abc::B), counts(Abc::C)), (2, 7, 2));
}

#[test]
fn what_if_shows_band_moves_before_a_rule_change() {
    let current = shipped_model();
    let mut proposed_config = shipped().scoring;
    proposed_config.bands[0].min = Some(125.0); // "call everyone above 125"
    let proposed = ScoringModel::compile(&proposed_config).unwrap_or_else(|e| panic!("{e}"));
    let usine = company("usine", json!({"headcount": 80, "sector": "industry"}));
    let rajati = contact("rajati", "DRH", "usine");
    let rajati_events = sorted(vec![
        ev("trade_show_visit", days_ago(20)),
        ev("form_submit", days_ago(12)),
        ev("email_click", now() - chrono::Duration::hours(1)),
    ]);
    let beltrani = contact("beltrani", "Comptable", "usine");
    let result = what_if(
        &current,
        &proposed,
        [
            (&rajati, Some(&usine), rajati_events.as_slice()),
            (&beltrani, Some(&usine), &[][..]),
        ],
        now(),
    );
    assert_eq!(result.before["warm"], 1);
    assert_eq!(result.before["hot"], 0);
    assert_eq!(result.after["hot"], 1);
    assert_eq!(result.after["cold"], 1);
    assert_eq!(
        result.moves,
        vec![BandMove {
            contact: "rajati".into(),
            from: "warm".into(),
            to: "hot".into(),
            score_before: Points(14_000),
            score_after: Points(14_000),
        }]
    );
}

mod incremental_equals_full {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const KINDS: [&str; 9] = [
        "email_open",
        "email_click",
        "page_visit",
        "download",
        "demo_request",
        "email_sent",
        "unsubscribe",
        "webinar_signup",
        "call",
    ];
    /// Contacts 2 and 3 see few kinds, so that a lone time-dependent rule
    /// (a flip, an answer window) sets `next_change_at` on its own.
    const TIMED_ONLY: [&str; 2] = ["webinar_signup", "call"];
    const SOLICITED_ONLY: [&str; 3] = ["email_sent", "call", "email_reply"];
    const URLS: [&str; 4] = ["/pricing", "/careers", "/blog/x", "/demo"];

    fn model_under_test() -> ScoringModel {
        model(
            r#"
inactivity_malus_per_month = 5.0
inactivity_malus_max = 20.0
response_window = "2d"

[[profile]]
name = "target 2 not called for a while"
points = 7.5
when = { all = [ { field = "tier", eq = "target 2" }, { field = "last.call", older_than = "20d" } ] }

[[profile]]
name = "recent webinar"
points = 4.0
when = { field = "last.webinar_signup", within = "9d" }

[[profile]]
name = "two pricing visits in two days"
points = 6.0
when = { count = "page_visit", where = { field = "event.props.url", contains = "pricing" }, within = "2d", gte = 2 }

[[behaviour]]
name = "downloads while an open is recent"
event = "download"
when = { count = "email_open", within = "3d", gte = 1 }
points = 5.0

[[behaviour]]
name = "opens"
event = "email_open"
points = 1.0
half_life = "3d"
max_count = 4

[[behaviour]]
name = "clicks"
event = "email_click"
points = 3.0
fade_over = "11d"

[[behaviour]]
name = "pricing"
event = "page_visit"
when = { field = "event.props.url", contains = "pricing" }
points = 10.0
max_count = 2
counts_for = "15d"

[[behaviour]]
name = "recent visits after a call"
event = ["page_visit", "download"]
when = { field = "last.call", within = "5d" }
points = 2.0

[[behaviour]]
name = "demo"
event = "demo_request"
points = 20.0
max_count = 1

[[negative]]
name = "unsubscribed"
event = "unsubscribe"
points = -25.0
counts_for = "30d"

[[negative]]
name = "silent"
points = -6.0
unanswered = 2
"#,
        )
    }

    #[derive(Clone, Debug)]
    struct Raw {
        contact: usize,
        kind: usize,
        url: usize,
        /// Minutes after the start.
        at: i64,
    }

    fn start() -> Timestamp {
        now() - chrono::Duration::days(120)
    }

    fn raw_event() -> impl Strategy<Value = Raw> {
        (
            0usize..4,
            0usize..KINDS.len(),
            0usize..URLS.len(),
            0i64..(90 * 1440),
        )
            .prop_map(|(contact, kind, url, at)| Raw {
                contact,
                kind,
                url,
                at,
            })
    }

    fn to_event(r: &Raw) -> Event {
        let kind = match r.contact {
            2 => TIMED_ONLY[r.kind % TIMED_ONLY.len()],
            3 => SOLICITED_ONLY[r.kind % SOLICITED_ONLY.len()],
            _ => KINDS[r.kind],
        };
        let mut e = ev(kind, start() + chrono::Duration::minutes(r.at));
        e.contact = format!("c{}", r.contact);
        if e.kind == "page_visit" {
            e.props.insert("url".into(), json!(URLS[r.url]));
        }
        e
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn incremental_passes_match_full_recomputation(
            batches in prop::collection::vec(
                (prop::collection::vec(raw_event(), 0..12), 1i64..(20 * 1440)),
                1..12,
            )
        ) {
            let m = model_under_test();
            let contacts: Vec<Contact> = (0..4)
                .map(|i| {
                    let mut c = contact(&format!("c{i}"), "x", "none");
                    c.tier = Some(if i % 2 == 0 { "target 2" } else { "core" }.into());
                    c
                })
                .collect();
            let mut history: BTreeMap<String, Vec<Event>> = BTreeMap::new();
            let mut rescorer = Rescorer::new();
            let mut pass_at = start();
            for (batch, gap) in batches {
                // Passes move forward by a random gap; events arrive late or
                // early relative to the pass, in any order.
                pass_at += chrono::Duration::minutes(gap);
                let mut touched = std::collections::BTreeSet::new();
                for r in &batch {
                    let e = to_event(r);
                    touched.insert(e.contact.clone());
                    let list = history.entry(e.contact.clone()).or_default();
                    let pos = list.partition_point(|x| x.at <= e.at);
                    list.insert(pos, e);
                }
                let mut due: std::collections::BTreeSet<String> =
                    rescorer.due(pass_at).into_iter().collect();
                due.extend(touched);
                for c in &contacts {
                    if due.contains(&c.id) || rescorer.get(&c.id).is_none() {
                        let events = history.get(&c.id).map_or(&[][..], Vec::as_slice);
                        rescorer.store(m.score(c, None, events, pass_at));
                    }
                }
                for c in &contacts {
                    let events = history.get(&c.id).map_or(&[][..], Vec::as_slice);
                    let full = m.score(c, None, events, pass_at);
                    prop_assert_eq!(rescorer.get(&c.id), Some(&full), "contact {} at {}", c.id, pass_at);
                    // What a pass stores: the same card but for its explanation.
                    let unexplained = m.score_unexplained(c, None, events, pass_at);
                    prop_assert!(unexplained.contributions.is_empty());
                    prop_assert_eq!(
                        unexplained,
                        ScoreCard { contributions: Vec::new(), ..full },
                        "contact {} at {}", c.id, pass_at
                    );
                }
            }
        }
    }
}

#[test]
fn a_company_signal_dated_later_counts_from_its_instant() {
    let m = shipped_model();
    let mut co = company("co", json!({}));
    let later = now() + chrono::Duration::days(2);
    co.signals.push(BusinessSignal {
        kind: "international".into(),
        at: later,
        props: serde_json::Map::new(),
    });
    let c = contact("c", "x", "co");
    let card = m.score(&c, Some(&co), &[], now());
    assert_eq!(card.score, Points::ZERO);
    assert_eq!(card.next_change_at, Some(later));
    assert_eq!(m.score(&c, Some(&co), &[], later).score, Points(1_000));
}

#[test]
fn deal_customer_and_change_settings_are_checked_at_load() {
    let text = r#"[scoring.changes]
jump_points = 0

[[scoring.deals.rules]]
name = "big"
points = 10
when = { field = "event.type", eq = "x" }

[scoring.customers]
abc_a_share = 0.7
abc_c_share = 0.5

[[scoring.profile]]
name = "deal in a profile"
points = 1
when = { field = "deal.amount", gt = 1000 }
"#;
    let errs = Config::parse(text, Path::new("r.toml"), &|_| None)
        .expect_err("invalid")
        .errors()
        .to_vec();
    let at: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        at,
        vec![
            (2, "scoring.changes.jump_points"),
            (7, "scoring.deals.rules[0].when.field"),
            (11, "scoring.customers.abc_c_share"),
            (16, "scoring.profile[0].when.field"),
        ],
        "{errs:#?}"
    );
}

#[test]
fn a_compiled_model_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let m = shipped_model();
    shareable(&m);
    let c = contact("c", "DRH", "none");
    let scores: Vec<Points> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| m.score(&c, None, &[], now()).score))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joined"))
            .collect()
    });
    assert_eq!(scores, vec![Points(4_000), Points(4_000)]);
}
