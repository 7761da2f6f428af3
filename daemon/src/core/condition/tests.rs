use super::*;
use crate::core::model::{BusinessSignal, Status};
use chrono::TimeZone;
use serde_json::json;

fn at(day: u32) -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
        + chrono::Duration::days(i64::from(day))
}

fn cond(text: &str, scope: Scope) -> Condition {
    Condition::from_toml(text, scope).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn contact() -> Contact {
    let mut c = Contact {
        id: "c1".into(),
        status: Status::Prospect,
        tier: Some("target 2".into()),
        company: Some("acme".into()),
        ..Contact::default()
    };
    c.attributes.insert("title".into(), json!("Directrice RH"));
    c.attributes.insert("headcount".into(), json!("120"));
    c.do_not_contact.insert("sms".into());
    c
}

fn company() -> Company {
    let mut co = Company {
        id: "acme".into(),
        ..Company::default()
    };
    co.attributes.insert("headcount".into(), json!(250));
    co.attributes
        .insert("sector".into(), json!({ "main": "construction" }));
    co.attributes
        .insert("countries".into(), json!(["FR", "DE", "MA"]));
    co.signals.push(BusinessSignal {
        kind: "international".into(),
        at: at(10),
        props: serde_json::Map::new(),
    });
    co
}

fn event(kind: &str, day: u32, url: Option<&str>) -> Event {
    let mut props = serde_json::Map::new();
    if let Some(u) = url {
        props.insert("url".into(), json!(u));
    }
    Event {
        id: None,
        contact: "c1".into(),
        kind: kind.into(),
        at: at(day),
        channel: Some("web".into()),
        props,
    }
}

#[test]
fn profile_fields_ranges_sets_and_lists() {
    let (c, co) = (contact(), company());
    let s = Subject::new(&c, Some(&co), &[], at(20));
    let holds = |text: &str| cond(text, Scope::PROFILE).eval(&s, None);
    assert!(holds(
        r#"field = "company.attributes.headcount"
gte = 30
lte = 500"#
    ));
    assert!(!holds(
        r#"field = "company.attributes.headcount"
gt = 250"#
    ));
    // A numeric string from a CSV import compares as a number.
    assert!(holds(
        r#"field = "attributes.headcount"
lt = 121"#
    ));
    assert!(holds(
        r#"field = "company.attributes.sector.main"
in = ["industry", "construction"]"#
    ));
    assert!(holds(
        r#"field = "company.attributes.countries"
eq = "MA""#
    ));
    assert!(holds(
        r#"field = "attributes.title"
contains = "rh""#
    ));
    assert!(!holds(
        r#"field = "attributes.title"
regex = "(?i)stagiaire|intern""#
    ));
    assert!(holds(
        r#"field = "status"
eq = "prospect""#
    ));
    assert!(holds(
        r#"field = "do_not_contact"
eq = "sms""#
    ));
    assert!(!holds(
        r#"field = "do_not_contact"
eq = "email""#
    ));
    assert!(holds(
        r#"field = "attributes.missing"
exists = false"#
    ));
    assert!(!holds(
        r#"field = "attributes.missing"
exists = true"#
    ));
    assert!(holds(
        r#"field = "company.signals"
eq = "international""#
    ));
    assert!(holds(r#"not = { field = "tier", eq = "core" }"#));
    assert!(holds(
        r#"any = [ { field = "tier", eq = "core" }, { field = "tier", eq = "target 2" } ]"#
    ));
    assert!(!holds(
        r#"all = [ { field = "tier", eq = "core" }, { field = "tier", eq = "target 2" } ]"#
    ));
    // Without a company, company fields are missing rather than failing.
    let alone = Subject::new(&c, None, &[], at(20));
    assert!(
        !cond(
            r#"field = "company.attributes.headcount"
gte = 30"#,
            Scope::PROFILE
        )
        .eval(&alone, None)
    );
}

#[test]
fn relative_dates_flip_exactly_and_report_the_flip() {
    let c = contact();
    let co = company();
    let events = vec![event("call", 0, None), event("email_click", 300, None)];
    // "clicked an email, not called for over a year, in target 2".
    let rule = cond(
        r#"all = [
  { field = "last.email_click", within = "30d" },
  { field = "last.call", older_than = "365d" },
  { field = "tier", eq = "target 2" },
]"#,
        Scope::PROFILE,
    );
    let at_now = |now| Subject::new(&c, Some(&co), &events, now);
    assert!(!rule.eval(&at_now(at(310)), None), "called 310 days ago");
    assert!(!rule.eval(&at_now(at(364)), None));
    let mut next = None;
    rule.next_flip(&at_now(at(310)), None, &mut next);
    assert_eq!(
        next,
        Some(at(330)),
        "the click leaves the 30-day window first"
    );
    let mut next = None;
    rule.next_flip(&at_now(at(331)), None, &mut next);
    assert_eq!(next, Some(at(365)));
    // A click 370 days in, and the call is now more than a year old.
    let mut later = events.clone();
    later.push(event("email_click", 370, None));
    let s = Subject::new(&c, Some(&co), &later, at(371));
    assert!(rule.eval(&s, None));
    assert!(rule.is_time_dependent());
    // Events after now do not count as the last one.
    let s = Subject::new(&c, Some(&co), &later, at(369));
    assert!(!rule.eval(&s, None));
    // Company signals have dates too.
    let sig = cond(
        r#"field = "company.signal.international"
within = "90d""#,
        Scope::PROFILE,
    );
    assert!(sig.eval(&Subject::new(&c, Some(&co), &[], at(99)), None));
    assert!(!sig.eval(&Subject::new(&c, Some(&co), &[], at(100)), None));
}

#[test]
fn event_fields_read_the_event() {
    let c = contact();
    let s = Subject::new(&c, None, &[], at(5));
    let careers = cond(
        r#"all = [ { field = "event.type", eq = "page_visit" }, { field = "event.props.url", contains = "/careers" } ]"#,
        Scope::EVENT,
    );
    assert!(careers.eval(
        &s,
        Some(&event("page_visit", 1, Some("https://x.com/Careers/dev")))
    ));
    assert!(!careers.eval(
        &s,
        Some(&event("page_visit", 1, Some("https://x.com/pricing")))
    ));
    assert!(!careers.eval(&s, None));
}

fn problems(text: &str, scope: Scope) -> String {
    Condition::from_toml(text, scope).expect_err("invalid")
}

#[test]
fn mistakes_are_reported_with_their_key() {
    assert!(
        problems(
            r#"field = "event.type"
eq = "x""#,
            Scope::PROFILE
        )
        .contains("not about an event")
    );
    assert!(
        problems(
            r#"field = "deal.amount"
gt = 1"#,
            Scope::EVENT
        )
        .contains("only available in deal rules")
    );
    let e = problems(
        r#"field = "atributes.x"
eq = 1"#,
        Scope::PROFILE,
    );
    assert!(e.starts_with("field: unknown field `atributes.x`"), "{e}");
    assert!(problems(r#"field = "email""#, Scope::PROFILE).contains("needs an operator"));
    assert!(
        problems(
            r#"field = "email"
regex = "(""#,
            Scope::PROFILE
        )
        .starts_with("regex: invalid regular expression")
    );
    assert!(
        problems(
            r#"field = "email"
in = []"#,
            Scope::PROFILE
        )
        .starts_with("in:")
    );
    let e = problems(
        r#"all = [ { field = "email", exists = true }, { any = [ { eq = 3 } ] } ]"#,
        Scope::PROFILE,
    );
    assert!(e.starts_with("all[1].any[0]:"), "{e}");
    assert!(
        problems(
            r#"field = "email"
all = [ { field = "id", eq = "x" } ]"#,
            Scope::PROFILE
        )
        .contains("only one of")
    );
    assert!(
        problems(
            r#"field = "last.call"
older_than = "0d""#,
            Scope::PROFILE
        )
        .starts_with("older_than:")
    );
}

/// Seed 002: four visits to one product page in two days; the count holds
/// while the fourth is within the window and flips when the oldest leaves.
#[test]
fn a_windowed_count_holds_and_reports_when_its_oldest_event_leaves() {
    let c = contact();
    let mut events: Vec<Event> = [1, 2, 2, 3]
        .iter()
        .map(|&d| event("page_visit", d, Some("/produit/paie")))
        .collect();
    events.insert(1, event("page_visit", 2, Some("/blog")));
    let rule = cond(
        r#"count = "page_visit"
where = { field = "event.props.url", contains = "/produit" }
within = "2d"
gte = 3"#,
        Scope::PROFILE,
    );
    // At day 3: visits on days 2, 2, 3 are within two days (day 1 is not).
    let s = Subject::new(&c, None, &events, at(3));
    assert!(rule.eval(&s, None));
    let mut next = None;
    rule.next_flip(&s, None, &mut next);
    assert_eq!(next, Some(at(4)), "the visits of day 2 leave at day 4");
    assert!(!rule.eval(&Subject::new(&c, None, &events, at(4)), None));
    // Events after now do not count.
    assert!(!rule.eval(&Subject::new(&c, None, &events, at(1)), None));
    assert!(rule.is_time_dependent());
}

#[test]
fn counts_and_standing_fields_are_checked_at_load() {
    let err = |text: &str, scope| Condition::from_toml(text, scope).expect_err(text);
    assert!(err(r#"count = "page_visit""#, Scope::PROFILE).contains("within"));
    assert!(
        err(
            r#"count = "page_visit"
within = "2d""#,
            Scope::PROFILE
        )
        .contains("number to compare")
    );
    assert!(
        err(
            r#"field = "band"
eq = "cold""#,
            Scope::PROFILE
        )
        .contains("cannot read the score")
    );
    assert!(
        err(
            r#"field = "status"
where = { field = "event.type", eq = "x" }"#,
            Scope::PROFILE
        )
        .contains("goes with `count`")
    );
}

/// Seed 004: "clicked an email, cold prospect, not called for over a
/// year, target 2" reads as one trigger condition.
#[test]
fn the_seed_rule_reads_band_score_and_call_status() {
    let c = contact();
    let events = [event("call", 1, None), event("email_click", 400, None)];
    let rule = cond(
        r#"all = [
  { field = "band", eq = "cold" },
  { field = "score", lt = 100 },
  { field = "call.status", in = ["open", "won"] },
  { field = "status", eq = "prospect" },
  { field = "tier", eq = "target 2" },
  { field = "last.call", older_than = "365d" },
]"#,
        Scope::TRIGGER,
    );
    let standing = |band| Standing {
        band: Some(band),
        score: Some(30.0),
        call: Some("open"),
        prospect: Some("CHAUD"),
    };
    let s = Subject::new(&c, None, &events, at(400));
    assert!(rule.eval(&s.with_standing(standing("cold")), Some(&events[1])));
    assert!(!rule.eval(&s.with_standing(standing("warm")), Some(&events[1])));
    assert!(!rule.eval(&s, Some(&events[1])), "no score yet: no band");
}

/// Seed 003: follow-up rules read the prospect status the desk keeps;
/// scoring rules cannot.
#[test]
fn the_prospect_status_is_a_standing_field() {
    let c = contact();
    let rule = cond(
        "field = \"prospect.status\"\nin = [\"CHAUD\", \"TIÈDE\"]",
        Scope::SEGMENT,
    );
    let s = Subject::new(&c, None, &[], at(0));
    let hot = Standing {
        prospect: Some("CHAUD"),
        ..Standing::default()
    };
    let lost = Standing {
        prospect: Some("PERDU"),
        ..Standing::default()
    };
    assert!(rule.eval(&s.with_standing(hot), None));
    assert!(!rule.eval(&s.with_standing(lost), None));
    let refused = Condition::from_toml(
        "field = \"prospect.status\"\neq = \"CHAUD\"",
        Scope::PROFILE,
    )
    .expect_err("scoring rules cannot read it");
    assert!(refused.contains("follow-up rules"), "{refused}");
}
