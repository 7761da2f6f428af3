use super::*;
use crate::core::config::ConfigErrors;
use crate::pipeline::config::Config;
use relance_plugin_api::message::{Company, Contact, DeliverRequest, ScoreInfo};
use std::path::Path;

const CHANNELS: &str = "[channels.email]\nplugin = \"email\"\nevent = \"email_sent\"\n\n";

fn request(first_name: Option<&str>, language: Option<&str>) -> DeliverRequest {
    let mut attributes = serde_json::Map::new();
    if let Some(l) = language {
        attributes.insert("language".into(), l.into());
    }
    attributes.insert("title".into(), "DRH".into());
    attributes.insert("headcount".into(), 120.into());
    let mut vars = serde_json::Map::new();
    vars.insert("followup".into(), "welcome".into());
    vars.insert("kind".into(), "systematic".into());
    vars.insert(
        "occurrence".into(),
        serde_json::json!({"type": "step", "index": 0, "enrolled_at": "2026-11-20T12:00:00Z"}),
    );
    DeliverRequest {
        idempotency_key: "k".into(),
        now: chrono::DateTime::UNIX_EPOCH,
        attempt: 1,
        channel: "email".into(),
        action: Default::default(),
        contact: Contact {
            id: "c1".into(),
            email: Some("ana@example.com".into()),
            first_name: first_name.map(Into::into),
            company: Some(Company {
                id: "co".into(),
                name: Some("Acme".into()),
                attributes: serde_json::Map::from_iter([("sector".into(), "industry".into())]),
            }),
            attributes,
            ..Default::default()
        },
        message: Default::default(),
        score: Some(ScoreInfo {
            score: 215.0,
            band: "hot".into(),
        }),
        vars,
    }
}

fn load(dir: &Path, toml: &str) -> Result<Config, ConfigErrors> {
    let file = dir.join("relance.toml");
    std::fs::write(&file, toml).expect("write config");
    Config::load(&file)
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn render(config: &Config, name: &str, r: &DeliverRequest) -> Rendered {
    let ctx = context::build(r);
    config
        .compiled_templates
        .render(name, context::language(&r.contact), &ctx)
        .expect("renders")
}

#[test]
fn field_templates_render_as_before() {
    let dir = tempfile::tempdir().expect("tmp");
    // The shipped templates, and every placeholder `{{field}}` knew.
    let shipped = "{{first_name}}, how {{company.name}} can simplify payroll";
    let text = "Hello {{first_name}},\n\nHere is our guide to international payroll.\n";
    let fields = "{{id}} {{ contact.id }} {{email}} {{phone}}|{{last_name}}|{{status}} {{company.id}} {{company.sector}} {{score}} {{band}} {{title}} {{headcount}} {{kind}} {{followup}} {{nothing}}";
    let html = "<p>{{ first_name }} &amp; {{company.name}}</p>";
    let toml = format!(
        "{CHANNELS}[templates.t]\nchannel = \"email\"\nsubject = {shipped:?}\ntext = {:?}\nhtml = {html:?}\n",
        format!("{text}{fields}\n")
    );
    let config = load(dir.path(), &toml).unwrap_or_else(|e| panic!("{e}"));
    for first_name in [Some("Ana <b> & 'co'"), None] {
        let r = request(first_name, None);
        let out = render(&config, "t", &r);
        let old = |t: &str, html| relance_plugin_api::template::render(t, &r, html);
        assert_eq!(out.subject.as_deref(), Some(old(shipped, false).as_str()));
        assert_eq!(
            out.text.as_deref(),
            Some(old(&format!("{text}{fields}\n"), false).as_str())
        );
        assert_eq!(out.html.as_deref(), Some(old(html, true).as_str()));
    }
}

#[test]
fn each_contact_gets_its_language_and_missing_fields_fall_back() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "templates/welcome/fr/subject.txt",
        "{{ first_name | default(\"Madame, Monsieur\") }}, votre guide\n",
    );
    write(
        dir.path(),
        "templates/welcome/fr/text.txt",
        "Bonjour {{ first_name | default(\"Madame, Monsieur\") }},\n{% if band == \"hot\" %}\nAppelons-nous.\n{% endif %}\n{% include \"partials/footer.txt\" %}",
    );
    write(
        dir.path(),
        "templates/welcome/en/subject.txt",
        "{{ first_name | default(\"Hello\") }}, your guide\n",
    );
    write(
        dir.path(),
        "templates/welcome/en/text.txt",
        "Hello {{ first_name | default(\"there\") }} (step {{ followup.step }}, {{ followup.kind }}, {{ followup.reason }}), {{ company.name }} has {{ company.headcount | default(\"?\") }}.\n",
    );
    write(dir.path(), "templates/partials/footer.txt", "-- L'équipe\n");
    let toml = format!(
        "{CHANNELS}[templating]\ndir = \"templates\"\ndefault_language = \"en\"\n\n[templates.welcome]\nchannel = \"email\"\n"
    );
    let config = load(dir.path(), &toml).unwrap_or_else(|e| panic!("{e}"));

    let fr = render(&config, "welcome", &request(Some("Ana"), Some("fr-FR")));
    assert_eq!(fr.language, "fr");
    assert_eq!(fr.subject.as_deref(), Some("Ana, votre guide"));
    assert_eq!(
        fr.text.as_deref(),
        Some("Bonjour Ana,\nAppelons-nous.\n-- L'équipe\n")
    );
    let fr = render(&config, "welcome", &request(None, Some("FR")));
    assert_eq!(fr.subject.as_deref(), Some("Madame, Monsieur, votre guide"));

    // No French for a German contact or one without a language: English.
    for language in [Some("de"), None] {
        let en = render(&config, "welcome", &request(None, language));
        assert_eq!(en.language, "en");
        assert_eq!(en.subject.as_deref(), Some("Hello, your guide"));
        assert_eq!(
            en.text.as_deref(),
            Some("Hello there (step 1, systematic, welcome), Acme has ?.\n")
        );
    }
}

#[test]
fn html_escapes_contact_fields() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "t/note/html.html",
        "<p>Bonjour {{ first_name }}</p>{{ \"<b>ok</b>\" | safe }}",
    );
    let toml = format!(
        "{CHANNELS}[templating]\ndir = \"t\"\n\n[templates.note]\nchannel = \"email\"\nsubject = \"{{{{ first_name }}}}\"\n"
    );
    let config = load(dir.path(), &toml).unwrap_or_else(|e| panic!("{e}"));
    let out = render(
        &config,
        "note",
        &request(Some("<script>alert(1)</script>"), None),
    );
    assert_eq!(
        out.html.as_deref(),
        Some("<p>Bonjour &lt;script&gt;alert(1)&lt;/script&gt;</p><b>ok</b>")
    );
    // A subject is not HTML.
    assert_eq!(out.subject.as_deref(), Some("<script>alert(1)</script>"));
}

#[test]
fn templates_that_read_files_or_urls_are_refused_at_load() {
    let dir = tempfile::tempdir().expect("tmp");
    for (source, refused) in [
        ("{% include \"/etc/passwd\" %}", "/etc/passwd"),
        (
            "Hi\n  {% include 'https://example.com/x.html' %}",
            "https://example.com/x.html",
        ),
        ("{% import \"../relance.toml\" as x %}", "../relance.toml"),
        ("{% extends \"base.html\" %}", "base.html"),
        ("{% include name %}", "literal path"),
    ] {
        write(dir.path(), "t/bad/text.txt", source);
        let toml = format!(
            "{CHANNELS}[templating]\ndir = \"t\"\n\n[templates.bad]\nchannel = \"email\"\n"
        );
        let errors = load(dir.path(), &toml).expect_err(source);
        let e = &errors.errors()[0];
        assert!(e.file.ends_with("t/bad/text.txt"), "{e}");
        assert!(e.message.contains(refused), "{e}");
        assert_eq!(e.key, "templates.bad");
        if source.starts_with("Hi") {
            assert_eq!((e.line, e.column), (2, 6), "{e}");
        }
    }
}

#[test]
fn template_errors_are_configuration_errors_with_their_place() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "t/bad/html.html",
        "<p>\n{% if x %}never closed</p>\n",
    );
    let toml = format!(
        "{CHANNELS}[templating]\ndir = \"t\"\n\n[templates.bad]\nchannel = \"email\"\n\n[templates.inline]\nchannel = \"email\"\ntext = \"ok\\n{{{{ first_name | }}}}\"\n\n[templates.typo]\nchannel = \"email\"\nsubject = \"{{{{ first_name | defualt(\\\"Madame\\\") }}}}{{% if score is not odd and band is hot %}}{{% endif %}}\"\n\n[templates.none]\nchannel = \"email\"\n"
    );
    let errors = load(dir.path(), &toml).expect_err("invalid");
    let text = errors.to_string();
    let errs = errors.errors();
    assert_eq!(errs.len(), 4, "{text}");
    let typo = errs
        .iter()
        .find(|e| e.key == "templates.typo.subject")
        .expect(&text);
    assert!(
        typo.message
            .ends_with("column 17 of the template: unknown filter `defualt`"),
        "{text}"
    );
    let file = errs
        .iter()
        .find(|e| e.file.ends_with("t/bad/html.html"))
        .expect(&text);
    assert_eq!(file.line, 2, "{text}");
    assert!(file.message.contains("syntax error"), "{text}");
    let inline = errs
        .iter()
        .find(|e| e.key == "templates.inline.text")
        .expect(&text);
    assert_eq!(inline.line, 13, "{text}");
    assert!(inline.message.starts_with("line 2, column"), "{text}");
    let none = errs
        .iter()
        .find(|e| e.key == "templates.none")
        .expect(&text);
    assert!(none.message.contains("at least one of"), "{text}");
}

#[test]
fn rendering_errors_are_reasons_and_runaway_loops_stop() {
    let dir = tempfile::tempdir().expect("tmp");
    let toml = format!(
        "{CHANNELS}[templates.loop]\nchannel = \"email\"\ntext = \"{{% for i in range(100000) %}}{{% for j in range(100000) %}}x{{% endfor %}}{{% endfor %}}\"\n\n[templates.div]\nchannel = \"email\"\ntext = \"{{{{ 1 // 0 }}}}\"\n"
    );
    let config = load(dir.path(), &toml).unwrap_or_else(|e| panic!("{e}"));
    let r = request(None, None);
    let ctx = context::build(&r);
    for name in ["loop", "div"] {
        let e = config
            .compiled_templates
            .render(name, None, &ctx)
            .expect_err(name);
        assert!(
            e.to_string()
                .starts_with(&format!("template {name}/text.txt")),
            "{e}"
        );
    }
}
