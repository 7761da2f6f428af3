//! End-to-end: the call desk and the sales-ops reports on the real binary,
//! with data of the tests' own and every figure checked exactly.

mod common;

use common::{Env, code, stderr, stdout};
use serde_json::Value;

const NOW: &str = "2026-11-20T12:00:00Z";

/// The shipped configuration, email written to files, a `news` template.
fn env() -> Env {
    let env = Env::new();
    let mut config = std::fs::read_to_string(env.path("relance.toml")).expect("config");
    config.push_str(
        "\n[channels.email.settings]\ntransport = \"file\"\ndir = \"mail\"\nfrom = \"Sales <sales@example.com>\"\n\n\
         [templates.news]\nchannel = \"email\"\nsubject = \"News\"\ntext = \"Hello {{first_name}}\"\n\n\
         [calls]\nsession_gap = \"30m\"\ncall_length = \"5m\"\n",
    );
    std::fs::write(env.path("relance.toml"), config).expect("config");
    env
}

fn call(contact: &str, at: &str, owner: &str, code: &str, extra: &str) -> String {
    format!(
        "{{\"contact\": \"{contact}\", \"type\": \"call\", \"at\": \"{at}\", \"channel\": \"phone\", \"props\": {{\"outcome\": \"{code}\", \"owner\": \"{owner}\"{extra}}}}}\n"
    )
}

/// A week of calls by ana, bob and carl (sessions: ana Mon 08:00–08:25
/// and 10:00–10:20; bob Tue 14:00–14:05, Tue 14:40, Thu 09:00–09:29; carl
/// Wed 16:00–16:04), a download and a do-not-contact.
fn week() -> Env {
    let env = env();
    let mut contacts = String::new();
    for (id, owner) in [
        ("c1", "ana"),
        ("c2", "ana"),
        ("c3", "ana"),
        ("c4", "ana"),
        ("c5", "bob"),
        ("c6", "bob"),
        ("c7", "bob"),
        ("c8", "bob"),
        ("c9", "carl"),
        ("c10", "carl"),
    ] {
        contacts.push_str(&format!(
            "{{\"id\": \"{id}\", \"first_name\": \"N{id}\", \"owner\": \"{owner}\", \"status\": \"prospect\"}}\n"
        ));
    }
    contacts.push_str("{\"id\": \"c11\", \"owner\": \"carl\", \"do_not_contact\": [\"phone\"]}\n");
    env.import_text("contacts", "contacts.jsonl", &contacts);
    let mut events = String::new();
    events += &call("c1", "2026-11-16T08:00:00Z", "ana", "NRP", "");
    events += &call(
        "c2",
        "2026-11-16T08:10:00Z",
        "ana",
        "PISTE",
        ", \"callback_at\": \"2026-11-19T09:00:00Z\"",
    );
    events += &call(
        "c3",
        "2026-11-16T08:25:00Z",
        "ana",
        "REFUS",
        ", \"reason\": \"no budget\"",
    );
    events += &call("c4", "2026-11-16T10:00:00Z", "ana", "RDV", "");
    events += &call("c5", "2026-11-16T10:20:00Z", "ana", "RAPP", "");
    events += &call("c6", "2026-11-17T14:00:00Z", "bob", "OCC", "");
    events += &call("c6", "2026-11-17T14:05:00Z", "bob", "NRP", "");
    events += &call("c7", "2026-11-17T14:40:00Z", "bob", "MAIL", "");
    events += &call(
        "c8",
        "2026-11-19T09:00:00Z",
        "bob",
        "REFUS COMM",
        ", \"reason\": \"hung up\"",
    );
    events += &call("c5", "2026-11-19T09:29:00Z", "bob", "RDV", "");
    for minute in 0..5 {
        events += &call(
            "c9",
            &format!("2026-11-18T16:0{minute}:00Z"),
            "carl",
            "NRP",
            "",
        );
    }
    events += "{\"contact\": \"c10\", \"type\": \"download\", \"at\": \"2026-11-17T11:00:00Z\"}\n";
    env.import_text("events", "events.jsonl", &events);
    let pass = env.json_at(NOW, &["rescore", "--json"]);
    assert_eq!(pass["examined"], 11);
    env
}

/// Calls, then calls and pitches per hour, appointment, call-back and
/// refusal rates.
type Figures = (
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn figures(p: &Value) -> Figures {
    (
        p["calls"].as_i64().expect("calls"),
        p["calls_per_hour"].as_f64(),
        p["pitches_per_hour"].as_f64(),
        p["appointment_rate"].as_f64(),
        p["callback_rate"].as_f64(),
        p["refusal_rate"].as_f64(),
    )
}

#[test]
fn a_week_of_calls_gives_known_kpis_per_session_day_and_week() {
    let env = week();
    let sessions = env.json_at(NOW, &["calls", "kpis", "--json"]);
    let periods = sessions["periods"].as_array().expect("periods");
    let got: Vec<(String, String, i64)> = periods
        .iter()
        .map(|p| {
            (
                p["owner"].as_str().expect("owner").to_string(),
                p["start"].as_str().expect("start").to_string(),
                p["calls"].as_i64().expect("calls"),
            )
        })
        .collect();
    let want = [
        ("ana", "2026-11-16T08:00:00Z", 3),
        ("ana", "2026-11-16T10:00:00Z", 2),
        ("bob", "2026-11-17T14:00:00Z", 2),
        ("bob", "2026-11-17T14:40:00Z", 1),
        ("carl", "2026-11-18T16:00:00Z", 5),
        ("bob", "2026-11-19T09:00:00Z", 2),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(o, s, n)| (o.to_string(), s.to_string(), *n))
            .collect::<Vec<_>>()
    );
    // ana, first session: 3 calls in 25 min + 5 min; PISTE and REFUS reached.
    assert_eq!(
        figures(&periods[0]),
        (3, Some(6.0), Some(4.0), Some(0.0), Some(0.0), Some(0.5))
    );
    assert_eq!(periods[0]["refusal_reasons"]["no budget"], 1);
    assert!(periods[0]["trend"].is_null());
    // ana, second session: RDV and RAPP in 20 min + 5 min.
    assert_eq!(
        figures(&periods[1]),
        (2, Some(4.8), Some(2.4), Some(1.0), Some(0.5), Some(0.0))
    );
    assert_eq!(periods[1]["trend"]["calls_per_hour"], -1.2);
    assert_eq!(periods[1]["trend"]["appointment_rate"], 1.0);
    // bob on Thursday: REFUS COMM then RDV 29 min later, one session of 34 min.
    assert_eq!(
        figures(&periods[5]),
        (
            2,
            Some(3.5294),
            Some(3.5294),
            Some(0.5),
            Some(0.0),
            Some(0.5)
        )
    );
    assert_eq!(periods[5]["trend"]["calls_per_hour"], -8.4706);
    assert_eq!(periods[5]["refusal_reasons"]["hung up"], 1);
    let total = &sessions["total"];
    assert_eq!(
        (
            total["calls"].as_i64(),
            total["sessions"].as_i64(),
            total["seconds"].as_i64()
        ),
        (Some(15), Some(6), Some(113 * 60))
    );

    let days = env.json_at(NOW, &["calls", "kpis", "--by", "day", "--json"]);
    let days = days["periods"].as_array().expect("days");
    let labels: Vec<&str> = days
        .iter()
        .map(|d| d["label"].as_str().expect("label"))
        .collect();
    assert_eq!(
        labels,
        ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19"]
    );
    assert_eq!(figures(&days[0]).1, Some(5.4545), "5 calls in 55 min");
    assert_eq!(figures(&days[1]).1, Some(12.0), "3 calls in 15 min");
    assert_eq!(days[1]["trend"]["calls_per_hour"], 6.5455);
    assert_eq!(figures(&days[2]).1, Some(33.3333), "5 calls in 9 min");

    let bob = env.json_at(
        NOW,
        &["calls", "kpis", "--by", "week", "--owner", "bob", "--json"],
    );
    let weeks = bob["periods"].as_array().expect("weeks");
    assert_eq!(weeks.len(), 1);
    assert_eq!(weeks[0]["label"], "2026-W47");
    assert_eq!(
        figures(&weeks[0]),
        (
            5,
            Some(6.1224),
            Some(3.6735),
            Some(0.3333),
            Some(0.0),
            Some(0.3333)
        )
    );

    let text = stdout(&env.run_at(NOW, &["calls", "kpis", "--by", "day"]));
    assert!(
        text.contains("2026-11-17") && text.contains("12.00 (+6."),
        "{text}"
    );
}

fn ids(list: &Value) -> Vec<String> {
    list["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn statuses_and_caller_lists_contain_exactly_the_expected_contacts() {
    let env = week();
    let shown = env.json_at(NOW, &["contacts", "show", "c5", "--json"]);
    assert_eq!(shown["prospect"]["status"], "GAGNÉ");
    assert_eq!(shown["prospect"]["since"], "2026-11-19T09:29:00Z");
    assert_eq!(shown["prospect"]["set_by"]["type"], "call");
    assert_eq!(shown["prospect"]["set_by"]["outcome"], "RDV");
    let text = stdout(&env.run_at(NOW, &["contacts", "show", "c2"]));
    assert!(
        text.contains("prospect      CHAUD since 2026-11-16T08:10:00+00:00 (call PISTE)"),
        "{text}"
    );
    let card = env.json_at(NOW, &["score", "c9", "--json"]);
    assert_eq!(card["prospect"]["status"], "ARRÊTÉ");
    assert_eq!(card["prospect"]["since"], "2026-11-18T16:04:00Z");

    let status = |s: &str| -> Vec<String> {
        env.json_at(NOW, &["contacts", "list", "--status", s, "--json"])
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(status("GAGNÉ"), ["c4", "c5"]);
    assert_eq!(status("chaud"), ["c2"]);
    assert_eq!(status("TIEDE"), ["c7"]);
    assert_eq!(status("PERDU"), ["c3"]);
    assert_eq!(status("ARRÊTÉ"), ["c9"]);
    assert_eq!(status("FROID"), ["c1", "c10", "c11", "c6", "c8"]);
    let bad = env.run_at(NOW, &["contacts", "list", "--status", "TEPID"]);
    assert_eq!(code(&bad), 2);
    assert!(
        stderr(&bad).contains("unknown prospect status `TEPID`"),
        "{}",
        stderr(&bad)
    );

    let lists = env.json_at(NOW, &["calls", "lists", "--json"]);
    assert_eq!(ids(&lists["never_called"]), ["c10"]);
    assert_eq!(lists["never_called"]["total"], 1);
    assert_eq!(ids(&lists["never_call_again"]), ["c11", "c3", "c9"]);
    assert_eq!(
        lists["never_call_again"]["contacts"][0]["do_not_call"],
        "do not contact on phone"
    );
    assert_eq!(ids(&lists["documented_not_called"]), ["c10", "c7"]);
    assert_eq!(ids(&lists["callback_overdue"]), ["c2"]);

    // Today: c2's call-back (agreed for Thursday) is due; nobody else.
    let today = env.json_at(NOW, &["calls", "today", "--json"]);
    assert_eq!(today["total"], 1);
    assert_eq!(today["more"], 0);
    let today = today["calls"].as_array().expect("today");
    assert_eq!(today.len(), 1);
    assert_eq!(today[0]["contact"]["id"], "c2");
    assert_eq!(today[0]["why"][0]["why"], "call_back");
    assert_eq!(today[0]["why"][0]["at"], "2026-11-19T09:00:00Z");
    assert_eq!(today[0]["contact"]["last_call_code"], "PISTE");
    let bob = env.json_at(NOW, &["calls", "today", "--owner", "bob", "--json"]);
    assert_eq!(bob["calls"].as_array().map(Vec::len), Some(0));
    assert_eq!(bob["total"], 0);
    // Before Thursday the call-back is not due yet.
    let monday = env.json_at("2026-11-16T12:00:00Z", &["calls", "today", "--json"]);
    assert_eq!(monday["calls"].as_array().map(Vec::len), Some(0));
    assert_eq!(monday["total"], 0);
}

type Flag = (i64, String, String, String);

/// The lines an import flagged: line, id, kind and key.
fn flags(report: &serde_json::Value) -> Vec<Flag> {
    report["duplicates"]
        .as_array()
        .expect("flagged")
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().expect(k).to_string();
            (
                d["line"].as_i64().expect("line"),
                s("id"),
                s("kind"),
                s("key"),
            )
        })
        .collect()
}

fn flag(line: i64, id: &str, kind: &str, key: &str) -> Flag {
    (line, id.into(), kind.into(), key.into())
}

/// A rebuild writes only the contacts whose score, desk row or campaign
/// figures changed: the same rules write nothing; new desk rules rewrite
/// every contact once (what the store derives may depend on them), and
/// the status they change is shown.
#[test]
fn a_rebuild_writes_only_the_contacts_whose_desk_changed() {
    let env = week();
    let again = env.json_at(NOW, &["rescore", "--full", "--json"]);
    assert_eq!(
        (again["full"].as_bool(), again["examined"].as_i64()),
        (Some(true), Some(11))
    );
    assert_eq!(again["written"], 0, "nothing changed since the first pass");
    assert_eq!(
        env.json_at(NOW, &["contacts", "show", "c7", "--json"])["prospect"]["status"],
        "TIÈDE"
    );

    // MAIL now leaves a prospect hot: c7's last call is a MAIL.
    let config = std::fs::read_to_string(env.path("relance.toml")).expect("config");
    let config = config.replacen(
        "[calls]\n",
        "[calls]\nhot = [\"PISTE\", \"MAIL\"]\nwarm = [\"RAPP\", \"PROJET\"]\n",
        1,
    );
    std::fs::write(env.path("relance.toml"), config).expect("config");
    let pass = env.json_at(NOW, &["rescore", "--json"]);
    assert_eq!(
        (
            pass["full"].as_bool(),
            pass["examined"].as_i64(),
            pass["changed"].as_i64(),
            pass["written"].as_i64()
        ),
        (Some(true), Some(11), Some(0), Some(11)),
        "the desk rules changed: a full pass that writes every contact once"
    );
    let shown = env.json_at(NOW, &["contacts", "show", "c7", "--json"]);
    assert_eq!(shown["prospect"]["status"], "CHAUD");
    assert_eq!(shown["prospect"]["since"], "2026-11-17T14:40:00Z");
    let after = env.json_at(NOW, &["rescore", "--full", "--json"]);
    assert_eq!(
        after["written"], 0,
        "the new rules are written: nothing left"
    );
}

#[test]
fn duplicates_are_found_by_email_case_and_phone_format_not_by_name() {
    let env = env();
    let file = env.write(
        "contacts.csv",
        "id,first_name,last_name,email,phone,company\n\
         u1,Anne,Martin,anne.martin@example.com,06 12 34 56 78,acme\n\
         u2,Anne,Martin, Anne.Martin@EXAMPLE.com ,,acme\n\
         u3,Paul,Durand,paul@example.com,+33 (0)6 12 34 56 78,beta\n\
         u4,Anne,Martin,anne@gamma.example,07 00 00 00 01,gamma\n\
         u5,Jean,Roux,jean@example.com,0033 1 40 00 00 00,delta\n",
    );
    let report = env.json_any(&[
        "import",
        "contacts",
        file.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(report["inserted"], 5, "accepted, all of them");
    assert_eq!(
        flags(&report),
        [
            flag(2, "u1", "email", "anne.martin@example.com"),
            flag(2, "u1", "phone", "+33612345678"),
            flag(3, "u2", "email", "anne.martin@example.com"),
            flag(4, "u3", "phone", "+33612345678"),
        ]
    );
    let groups = env.json(&["contacts", "duplicates", "--json"]);
    assert_eq!(
        groups,
        serde_json::json!([
            {"kind": "email", "key": "anne.martin@example.com", "contacts": ["u1", "u2"]},
            {"kind": "phone", "key": "+33612345678", "contacts": ["u1", "u3"]},
        ])
    );
    // A later import of the same person under a new id is flagged at once.
    let again = env.write("again.csv", "id,email\nu6,ANNE@GAMMA.EXAMPLE\n");
    let out = env.run(&["import", "contacts", again.to_str().expect("utf-8")]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains(
            "line 2: `u6` accepted, likely the same person as u4 (same email anne@gamma.example)"
        ),
        "{}",
        stdout(&out)
    );
    // Erasing one side removes the group.
    assert_eq!(code(&env.run(&["contacts", "erase", "u6"])), 0);
    assert_eq!(
        env.json(&["contacts", "duplicates", "--json"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_large_file_is_loaded_in_bulk_and_flags_every_line_sharing_a_key() {
    let env = env();
    // 30,000 contacts: past 20,000 lines the import is a bulk load. b25000
    // is b5 again (email in capitals), b29999 is b29998 (phone written
    // another way); b26000 has b100's name only.
    let mut csv = String::from("id,first_name,last_name,email,phone\n");
    for i in 0..30_000u32 {
        let (first, last) = if i == 26_000 {
            ("Name".to_string(), "100".to_string())
        } else {
            ("Name".to_string(), i.to_string())
        };
        let email = if i == 25_000 {
            "B5@EXAMPLE.ORG".to_string()
        } else {
            format!("b{i}@example.org")
        };
        let n = if i == 29_999 { 29_998 } else { i };
        let phone = if i == 29_999 {
            format!(
                "+33 7 {:02} {:02} {:02} {:02}",
                n / 1_000_000,
                n / 10_000 % 100,
                n / 100 % 100,
                n % 100
            )
        } else {
            format!(
                "07.{:02}.{:02}.{:02}.{:02}",
                n / 1_000_000,
                n / 10_000 % 100,
                n / 100 % 100,
                n % 100
            )
        };
        csv.push_str(&format!("b{i},{first},{last},{email},{phone}\n"));
    }
    let file = env.write("large.csv", &csv);
    let report = env.json_any(&[
        "import",
        "contacts",
        file.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(report["inserted"], 30_000);
    assert_eq!(
        flags(&report),
        [
            flag(7, "b5", "email", "b5@example.org"),
            flag(25_002, "b25000", "email", "b5@example.org"),
            flag(30_000, "b29998", "phone", "+33700029998"),
            flag(30_001, "b29999", "phone", "+33700029998"),
        ]
    );
    let groups = env.json(&["contacts", "duplicates", "--json"]);
    assert_eq!(
        groups,
        serde_json::json!([
            {"kind": "email", "key": "b5@example.org", "contacts": ["b25000", "b5"]},
            {"kind": "phone", "key": "+33700029998", "contacts": ["b29998", "b29999"]},
        ])
    );
    // The key indexes are back: a small file is checked batch by batch.
    let again = env.write("again.csv", "id,email\nu1, b7@Example.org\n");
    let out = env.run(&["import", "contacts", again.to_str().expect("utf-8")]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains(
            "line 2: `u1` accepted, likely the same person as b7 (same email b7@example.org)"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_broadcast_whose_clickers_are_known_gives_the_expected_shares() {
    broadcast_shares(&env());
}

/// The same figures from a PostgreSQL store (scratch database on the local
/// server), which keeps them its own way.
#[test]
fn a_broadcast_whose_clickers_are_known_gives_the_expected_shares_on_postgres() {
    let db = common::pg::Scratch::new("campaigns");
    let env = env();
    let text = std::fs::read_to_string(env.path("relance.toml")).expect("config");
    let from = "path = \"${RELANCE_DB:-../relance.db}\"";
    assert!(text.contains(from));
    env.write(
        "relance.toml",
        &text.replace(from, &format!("url = \"{}\"", db.url())),
    );
    broadcast_shares(&env);
}

fn broadcast_shares(env: &Env) {
    let mut contacts = String::from("id,first_name,email,status,tier\n");
    for i in 1..=6 {
        let tier = if i == 6 { "partner" } else { "core" };
        contacts += &format!("k{i},K{i},k{i}@example.com,prospect,{tier}\n");
    }
    env.import_text("contacts", "contacts.csv", &contacts);
    let sent_at = "2026-11-20T10:00:00Z";
    let out = env.run_at(
        sent_at,
        &[
            "broadcast",
            "create",
            "--id",
            "spring",
            "--name",
            "spring",
            "--segment",
            r#"{ field = "tier", eq = "core" }"#,
            "--channel",
            "email",
            "--template",
            "news",
            "--end",
            "2100-01-01T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run = env.json_at(sent_at, &["run", "--once", "--json"]);
    assert_eq!(run["dispatch"]["sent"], 5, "{run}");
    let rows = env.json(&["outbox", "--json"]);
    let key = |c: &str| -> String {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["contact"] == c)
            .and_then(|r| r["idem_key"].as_str())
            .expect("key")
            .to_string()
    };
    let reaction = |c: &str, kind: &str, at: &str| {
        format!(
            "{{\"contact\": \"{c}\", \"type\": \"{kind}\", \"at\": \"{at}\", \"props\": {{\"key\": \"{}\"}}}}\n",
            key(c)
        )
    };
    let mut events = String::new();
    for c in ["k1", "k2", "k3", "k4"] {
        events += &reaction(c, "email_open", "2026-11-20T11:00:00Z");
    }
    for c in ["k1", "k2", "k3"] {
        events += &reaction(c, "email_click", "2026-11-20T11:05:00Z");
    }
    events += &reaction("k5", "unsubscribe", "2026-11-21T08:00:00Z");
    // A click on another message counts for nothing here.
    events += "{\"contact\": \"k6\", \"type\": \"email_click\", \"at\": \"2026-11-20T11:05:00Z\", \"props\": {\"key\": \"other\"}}\n";
    // Conversions: k1 meets within the window, k2 buys within it, k4 too late.
    events += "{\"contact\": \"k1\", \"type\": \"meeting\", \"at\": \"2026-11-22T10:00:00Z\"}\n";
    events += "{\"contact\": \"k2\", \"type\": \"purchase\", \"at\": \"2026-11-25T10:00:00Z\", \"props\": {\"amount\": 100}}\n";
    events += "{\"contact\": \"k4\", \"type\": \"purchase\", \"at\": \"2026-12-10T10:00:00Z\", \"props\": {\"amount\": 100}}\n";
    let later = "2026-12-15T12:00:00Z";
    let file = env.write("events.jsonl", &events);
    let out = env.run_at(later, &["import", "events", file.to_str().expect("utf-8")]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    // k3 left the target after the send.
    env.import_text("contacts", "k3.csv", "id,tier\nk3,partner\n");
    env.json_at(later, &["rescore", "--json"]);
    let report = env.json_at(later, &["campaigns", "--json"]);
    let spring = report
        .as_array()
        .expect("campaigns")
        .iter()
        .find(|c| c["name"] == "spring")
        .expect("spring");
    assert_eq!(spring["kind"], "broadcast");
    assert_eq!(
        (
            spring["sent"].as_i64(),
            spring["opened"].as_i64(),
            spring["clicked"].as_i64(),
            spring["unsubscribed"].as_i64()
        ),
        (Some(5), Some(4), Some(3), Some(1))
    );
    assert_eq!(
        (
            spring["clicked_in_target"].as_i64(),
            spring["clicked_off_target"].as_i64(),
            spring["in_target_share"].as_f64()
        ),
        (Some(2), Some(1), Some(0.6667))
    );
    assert_eq!(
        spring["conversions"],
        serde_json::json!({"band_up": 0, "meeting": 1, "purchase": 1, "contacts": 2})
    );
    let text = stdout(&env.run_at(later, &["campaigns"]));
    assert!(text.contains("2 of 3 (66.7%)"), "{text}");
}

#[test]
fn the_score_distribution_counts_bands_and_percentiles_exactly() {
    let env = env();
    let mut contacts = String::from("id\n");
    let mut events = String::new();
    // d0 … d4 download the white paper 0 … 4 times.
    for i in 0..5 {
        contacts += &format!("d{i}\n");
        for n in 0..i {
            events += &format!(
                "{{\"contact\": \"d{i}\", \"type\": \"download\", \"at\": \"2026-11-1{n}T10:00:00Z\"}}\n"
            );
        }
    }
    env.import_text("contacts", "contacts.csv", &contacts);
    env.import_text("events", "events.jsonl", &events);
    env.json_at(NOW, &["rescore", "--json"]);
    let scores: Vec<f64> = (0..5)
        .map(|i| {
            env.json_at(NOW, &["score", &format!("d{i}"), "--json"])["score"]
                .as_f64()
                .expect("score")
        })
        .collect();
    let d = env.json_at(NOW, &["scores", "distribution", "--bins", "4", "--json"]);
    assert_eq!(d["contacts"], 5);
    assert_eq!(d["min"].as_f64(), Some(scores[0]));
    assert_eq!(d["max"].as_f64(), Some(scores[4]));
    let total: i64 = d["bins"]
        .as_array()
        .expect("bins")
        .iter()
        .map(|b| b["count"].as_i64().expect("n"))
        .sum();
    assert_eq!(total, 5);
    assert_eq!(d["percentiles"][2], serde_json::json!(["p50", scores[2]]));
    let bands: i64 = d["bands"]
        .as_array()
        .expect("bands")
        .iter()
        .map(|b| b["count"].as_i64().expect("n"))
        .sum();
    assert_eq!(bands, 5);
    let text = stdout(&env.run_at(NOW, &["scores", "distribution"]));
    assert!(text.contains("5 contacts; bands: hot"), "{text}");
}

#[test]
fn what_if_shows_the_distribution_before_and_after_and_the_largest_deltas() {
    let env = env();
    let mut events = String::new();
    for i in 0..5 {
        for n in 0..i {
            events += &format!(
                "{{\"contact\": \"w{i}\", \"type\": \"download\", \"at\": \"2026-11-1{n}T10:00:00Z\"}}\n"
            );
        }
    }
    env.import_text("contacts", "contacts.csv", "id\nw0\nw1\nw2\nw3\nw4\n");
    env.import_text("events", "events.jsonl", &events);
    // The white paper is worth 40 points instead of 25 (counted twice at most).
    let config = std::fs::read_to_string(env.path("relance.toml")).expect("config");
    let proposed = config.replacen(
        "event = \"download\"\npoints = 25.0",
        "event = \"download\"\npoints = 40.0",
        1,
    );
    assert_ne!(
        config, proposed,
        "the white paper rule is in the shipped configuration"
    );
    let other = env.write("proposed.toml", &proposed);
    let r = env.json_at(
        NOW,
        &[
            "score",
            "--what-if",
            other.to_str().expect("utf-8"),
            "--json",
        ],
    );
    let deltas: Vec<(String, f64)> = r["largest_deltas"]
        .as_array()
        .expect("deltas")
        .iter()
        .map(|d| {
            (
                d["contact"].as_str().expect("id").to_string(),
                d["delta"].as_f64().expect("delta"),
            )
        })
        .collect();
    assert_eq!(
        deltas,
        [
            ("w2".to_string(), 30.0),
            ("w3".to_string(), 30.0),
            ("w4".to_string(), 30.0),
            ("w1".to_string(), 15.0),
        ]
    );
    let before = &r["distribution"]["before"];
    let after = &r["distribution"]["after"];
    assert_eq!(
        (before["contacts"].as_i64(), after["contacts"].as_i64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        after["max"].as_f64().expect("max") - before["max"].as_f64().expect("max"),
        30.0
    );
    assert_eq!(before["min"], after["min"], "w0 downloaded nothing");
    let text = stdout(&env.run_at(NOW, &["score", "--what-if", other.to_str().expect("utf-8")]));
    assert!(text.contains("largest score changes:\n  w2: "), "{text}");
}

#[test]
fn bad_desk_settings_are_refused_with_their_position() {
    let env = Env::new();
    let mut config = std::fs::read_to_string(env.path("relance.toml")).expect("config");
    config.push_str("\n[calls]\nsession_gap = \"0s\"\ndefault_country = \"XX\"\nreachd = []\n");
    std::fs::write(env.path("relance.toml"), &config).expect("config");
    let line = config.lines().count();
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "relance.toml:{}:15: `calls.session_gap`: must be at least 1s",
            line - 2
        )),
        "{err}"
    );
    assert!(
        err.contains("`calls.default_country`: unknown country `XX`"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "relance.toml:{line}:1: `calls.reachd`: unknown key"
        )),
        "{err}"
    );
    let bad = Env::new().run(&["calls", "kpis", "--by", "month"]);
    assert_eq!(code(&bad), 2);
    assert!(
        stderr(&bad).contains("invalid value 'month'"),
        "{}",
        stderr(&bad)
    );
}

/// Hot leads h1–h5 (more downloads, higher score: h1 first), h6 hot but
/// called two days ago, call-backs due for k1 (yesterday) and k2 (this
/// morning, a download: scored above k1), k3's tomorrow; owners ana and bob.
fn desk_of_seven() -> Env {
    let env = env();
    let mut contacts = String::new();
    for (id, owner) in [
        ("h1", "ana"),
        ("h2", "bob"),
        ("h3", "ana"),
        ("h4", "bob"),
        ("h5", "ana"),
        ("h6", "ana"),
        ("k1", "ana"),
        ("k2", "bob"),
        ("k3", "ana"),
    ] {
        contacts.push_str(&format!(
            "{{\"id\": \"{id}\", \"email\": \"{id}@example.com\", \"status\": \"prospect\", \"title\": \"DRH\", \"timezone\": \"Europe/Paris\", \"owner\": \"{owner}\"}}\n"
        ));
    }
    env.import_text("contacts", "desk.jsonl", &contacts);
    let mut events = String::new();
    for (n, id) in ["h1", "h2", "h3", "h4", "h5", "h6"].iter().enumerate() {
        let extra = 4usize.saturating_sub(n);
        let kinds = [
            "demo_request",
            "download",
            "download",
            "trade_show_visit",
            "meeting",
        ];
        for (i, kind) in kinds
            .iter()
            .chain(std::iter::repeat_n(&"download", extra))
            .enumerate()
        {
            events.push_str(&format!(
                "{{\"contact\": \"{id}\", \"type\": \"{kind}\", \"at\": \"2026-11-19T{:02}:00:00Z\"}}\n",
                8 + i
            ));
        }
    }
    events += &call("h6", "2026-11-18T10:00:00Z", "ana", "NRP", "");
    events += "{\"contact\": \"k2\", \"type\": \"download\", \"at\": \"2026-11-19T08:00:00Z\"}\n";
    for (id, owner, at, back) in [
        ("k1", "ana", "2026-11-16T09:00:00Z", "2026-11-19T09:00:00Z"),
        ("k2", "bob", "2026-11-16T09:30:00Z", "2026-11-20T08:00:00Z"),
        ("k3", "ana", "2026-11-16T10:00:00Z", "2026-11-21T08:00:00Z"),
    ] {
        events += &call(
            id,
            at,
            owner,
            "RAPP",
            &format!(", \"callback_at\": \"{back}\""),
        );
    }
    env.import_text("events", "desk-events.jsonl", &events);
    env.json_at(NOW, &["rescore", "--json"]);
    env
}

fn today_ids(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["contact"]["id"].as_str().expect("id").to_string())
        .collect()
}

/// `calls today --limit N --offset K` pages through the same ranking the
/// whole list shows, with exact totals, for everyone and per owner.
#[test]
fn calls_today_pages_through_the_ranking_with_exact_totals() {
    let env = desk_of_seven();
    for id in ["h1", "h5", "h6"] {
        let card = env.json_at(NOW, &["score", id, "--json"]);
        assert_eq!(card["band"], "hot", "{id}: {card}");
    }
    let all = env.json_at(NOW, &["calls", "today", "--json"]);
    assert_eq!(
        today_ids(&all),
        ["h1", "h2", "h3", "h4", "h5", "k2", "k1"],
        "{all}"
    );
    assert_eq!(
        (&all["total"], &all["offset"], &all["more"]),
        (&7.into(), &0.into(), &0.into())
    );
    assert_eq!(all["calls"][0]["why"][0]["why"], "hot_lead");
    assert_eq!(all["calls"][5]["why"][0]["why"], "call_back");
    assert_eq!(all["calls"][6]["why"][0]["at"], "2026-11-19T09:00:00Z");

    for (owner, expected) in [
        (None, vec!["h1", "h2", "h3", "h4", "h5", "k2", "k1"]),
        (Some("ana"), vec!["h1", "h3", "h5", "k1"]),
        (Some("bob"), vec!["h2", "h4", "k2"]),
    ] {
        for limit in [1usize, 2, 3] {
            let mut seen = Vec::new();
            let mut offset = 0usize;
            loop {
                let (l, o) = (limit.to_string(), offset.to_string());
                let mut args = vec!["calls", "today", "--json", "--limit", &l, "--offset", &o];
                if let Some(owner) = owner {
                    args.extend(["--owner", owner]);
                }
                let page = env.json_at(NOW, &args);
                let ids = today_ids(&page);
                let shown = expected.len().saturating_sub(offset).min(limit);
                assert_eq!(ids.len(), shown, "{owner:?} {limit} {offset}: {page}");
                assert_eq!(page["total"], expected.len(), "{page}");
                assert_eq!(page["offset"], offset, "{page}");
                assert_eq!(
                    page["more"],
                    expected.len().saturating_sub(offset + shown),
                    "{page}"
                );
                if ids.is_empty() {
                    break;
                }
                seen.extend(ids);
                offset += limit;
            }
            assert_eq!(seen, expected, "{owner:?} by {limit}");
        }
    }

    // A new owner counts at once, before any scoring pass: k2 is ana's.
    env.import_text(
        "contacts",
        "k2.jsonl",
        "{\"id\": \"k2\", \"email\": \"k2@example.com\", \"status\": \"prospect\", \"title\": \"DRH\", \"timezone\": \"Europe/Paris\", \"owner\": \"ana\"}\n",
    );
    let ana = env.json_at(NOW, &["calls", "today", "--json", "--owner", "ana"]);
    assert_eq!(today_ids(&ana), ["h1", "h3", "h5", "k2", "k1"], "{ana}");
    let bob = env.json_at(NOW, &["calls", "today", "--json", "--owner", "bob"]);
    assert_eq!(today_ids(&bob), ["h2", "h4"], "{bob}");
    assert_eq!(bob["total"], 2);

    // k1 downloads twice: scored again, its call-back ranks above k2's.
    env.import_text(
        "events",
        "k1.jsonl",
        "{\"contact\": \"k1\", \"type\": \"download\", \"at\": \"2026-11-20T08:00:00Z\"}\n\
         {\"contact\": \"k1\", \"type\": \"download\", \"at\": \"2026-11-20T09:00:00Z\"}\n",
    );
    env.json_at(NOW, &["rescore", "--json"]);
    let all = env.json_at(NOW, &["calls", "today", "--json"]);
    assert_eq!(
        today_ids(&all),
        ["h1", "h2", "h3", "h4", "h5", "k1", "k2"],
        "{all}"
    );

    // Past the end: nothing, the total still exact; the text says where.
    let past = env.json_at(NOW, &["calls", "today", "--json", "--offset", "20"]);
    assert_eq!(today_ids(&past), Vec::<String>::new());
    assert_eq!((&past["total"], &past["more"]), (&7.into(), &0.into()));
    let text = stdout(&env.run_at(NOW, &["calls", "today", "--limit", "2", "--offset", "2"]));
    assert!(text.contains("7 contacts to call today"), "{text}");
    assert!(
        text.contains("shown: ranks 3 to 4; 3 more (--offset 4, --limit N)"),
        "{text}"
    );
    let text = stdout(&env.run_at(NOW, &["calls", "today", "--offset", "8"]));
    assert!(text.contains("none from rank 9 on"), "{text}");
    let bad = env.run_at(NOW, &["calls", "today", "--limit", "0"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("--limit"), "{}", stderr(&bad));
}
