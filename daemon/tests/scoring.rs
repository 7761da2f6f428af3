//! End-to-end: scoring commands of the real binary on the demo data.

mod common;

use common::Env;
use serde_json::Value;

const NOW: &str = "2026-11-20T12:00:00Z";

fn points(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

#[test]
fn seed_personas_score_as_in_the_articles_and_explanations_add_up() {
    let demo = Env::demo();
    let pass = demo.json_at(NOW, &["rescore", "--json"]);
    assert_eq!(pass["full"], true, "the first pass rebuilds");
    assert_eq!(pass["examined"], 328);

    for (id, score, band) in [
        ("martino", 215.0, "hot"),
        ("rajati", 140.0, "warm"),
        ("beltrani", 30.0, "cold"),
        ("martin", 250.0, "hot"),
        ("nathalie", 235.0, "hot"),
    ] {
        let card = demo.json_at(NOW, &["score", id, "--json"]);
        assert_eq!(
            (
                card["contact"].as_str(),
                points(&card["score"]),
                card["band"].as_str()
            ),
            (Some(id), score, Some(band))
        );
        let split = points(&card["profile"]) + points(&card["behaviour"]);
        assert!(
            split >= score,
            "{id}: profile + behaviour before negatives and malus"
        );
    }
    let nathalie = demo.json_at(NOW, &["score", "nathalie", "--json"]);
    let malus = nathalie["contributions"]
        .as_array()
        .expect("contributions")
        .last()
        .expect("malus")
        .clone();
    assert_eq!(
        points(&malus["points"]),
        -15.0,
        "three months of inactivity at 5 points each"
    );

    // Every contact of the demo: the contributions sum exactly to the score.
    let cards = demo.json_at(NOW, &["score", "--all", "--json"]);
    let cards = cards.as_array().expect("array");
    assert_eq!(cards.len(), 328);
    for card in cards {
        let sum: f64 = card["contributions"]
            .as_array()
            .expect("contributions")
            .iter()
            .map(|c| points(&c["points"]))
            .collect::<Vec<_>>()
            .iter()
            .sum();
        assert!(
            (sum - points(&card["score"])).abs() < 1e-9,
            "{}: {sum} vs {}",
            card["contact"],
            card["score"]
        );
        assert!(
            card["contributions"]
                .as_array()
                .expect("array")
                .iter()
                .all(|c| c["rule"].is_string())
        );
    }
    let martino = cards
        .iter()
        .find(|c| c["contact"] == "martino")
        .expect("martino");
    assert_eq!(
        martino,
        &demo.json_at(NOW, &["score", "martino", "--json"]),
        "one card, one way"
    );
}

#[test]
fn passes_are_incremental_and_keep_the_film() {
    let demo = Env::demo();
    demo.json_at(NOW, &["rescore", "--json"]);
    let idle = demo.json_at(NOW, &["rescore", "--json"]);
    assert_eq!(
        (idle["full"].as_bool(), idle["examined"].as_i64()),
        (Some(false), Some(0))
    );

    // Beltrani books a demo and visits the pricing page: only Beltrani is rescored.
    let events = demo.write(
        "late.jsonl",
        "{\"contact\": \"beltrani\", \"type\": \"demo_request\", \"at\": \"2026-11-20T12:30:00Z\"}\n\
         {\"contact\": \"beltrani\", \"type\": \"trade_show_visit\", \"at\": \"2026-11-20T12:40:00Z\"}\n\
         {\"contact\": \"beltrani\", \"type\": \"page_visit\", \"at\": \"2026-11-20T12:45:00Z\", \"props\": {\"url\": \"https://payroll.example/pricing\"}}\n",
    );
    let out = demo.run_at(NOW, &["import", "events", events.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let later = "2026-11-20T13:00:00Z";
    let pass = demo.json_at(later, &["rescore", "--json"]);
    assert_eq!(
        (
            pass["full"].as_bool(),
            pass["examined"].as_i64(),
            pass["changed"].as_i64()
        ),
        (Some(false), Some(1), Some(1))
    );
    assert_eq!(
        pass["changes"], 2,
        "a band crossing and a jump of at least 50 points in 7 days"
    );

    let film = demo.json_at(later, &["score", "beltrani", "--history", "--json"]);
    let history = film["history"].as_array().expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0]["score"].as_f64(), history[1]["score"].as_f64()),
        (Some(30.0), Some(120.0)),
        "the film in points, like `score --json`"
    );
    assert_eq!(
        (history[0]["band"].as_str(), history[1]["band"].as_str()),
        (Some("cold"), Some("warm"))
    );
}

#[test]
fn what_if_shows_band_moves_without_writing() {
    let demo = Env::demo();
    demo.json_at(NOW, &["rescore", "--json"]);
    let before = demo.json_at(NOW, &["rescore", "--json"]);
    let shipped =
        std::fs::read_to_string(common::repo().join("config/relance.toml")).expect("config");
    // Another company calls every contact above 125 (seed 001).
    let other = shipped.replacen(
        "name = \"hot\"\nmin = 150.0",
        "name = \"hot\"\nmin = 125.0",
        1,
    );
    assert_ne!(other, shipped, "the shipped hot threshold is 150");
    let other = demo.write("other.toml", &other);
    let diff = demo.json_at(
        NOW,
        &[
            "score",
            "--what-if",
            other.to_str().expect("utf-8"),
            "--json",
        ],
    );
    let moves = diff["moves"].as_array().expect("moves");
    let rajati = moves
        .iter()
        .find(|m| m["contact"] == "rajati")
        .expect("Rajati (140) becomes hot");
    assert_eq!(
        (rajati["from"].as_str(), rajati["to"].as_str()),
        (Some("warm"), Some("hot"))
    );
    assert!(
        moves
            .iter()
            .all(|m| m["from"] == "warm" && m["to"] == "hot")
    );
    let (hot_before, hot_after) = (
        diff["before"]["hot"].as_i64().expect("n"),
        diff["after"]["hot"].as_i64().expect("n"),
    );
    assert_eq!(hot_after - hot_before, moves.len() as i64);
    // Nothing was written: the next pass has nothing to do.
    let after = demo.json_at(NOW, &["rescore", "--json"]);
    assert_eq!(
        (after["examined"].as_i64(), &after["bands"]),
        (Some(0), &before["bands"])
    );
}

#[test]
fn deals_are_ranked_and_customers_scored() {
    let demo = Env::demo();
    let deals = demo.json_at(NOW, &["deals", "--json"]);
    let ranked = deals.as_array().expect("deals");
    let scores: Vec<f64> = ranked.iter().map(|d| points(&d["score"])).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    let bati = ranked
        .iter()
        .find(|d| d["deal"] == "deal-bati")
        .expect("deal-bati");
    let rules: Vec<&str> = bati["contributions"]
        .as_array()
        .expect("why")
        .iter()
        .map(|c| c["rule"].as_str().expect("rule"))
        .collect();
    assert!(
        rules.contains(&"stage: director_loves_proposal"),
        "{rules:?}"
    );
    let usine = ranked
        .iter()
        .find(|d| d["deal"] == "deal-usine")
        .expect("deal-usine");
    let halved = usine["contributions"]
        .as_array()
        .expect("why")
        .iter()
        .any(|c| c["rule"] == "stage: purchasing_halves_budget" && points(&c["points"]) == -15.0);
    assert!(halved);

    let customers = demo.json_at(NOW, &["customers", "--json"]);
    let customers = customers.as_array().expect("customers");
    assert!(!customers.is_empty());
    let abc: Vec<&str> = customers
        .iter()
        .map(|c| c["abc"].as_str().expect("abc"))
        .collect();
    for class in ["A", "B", "C"] {
        assert!(abc.contains(&class), "{class} in {abc:?}");
    }
    assert!(
        customers
            .iter()
            .all(|c| (1..=5).contains(&c["rfm"]["recency"].as_i64().expect("r")))
    );
}
