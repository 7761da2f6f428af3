//! The email plugin, loaded as a shared library, against real SMTP servers
//! on loopback: aiosmtpd (STARTTLS, implicit TLS, authentication) and
//! postfix's smtp-sink (4xx, 5xx and a disconnect right after DATA). Both
//! are installed by tests/servers/setup.sh; each test starts its own.
// Test harness helpers (outside #[test] fns) may unwrap too.
#![allow(clippy::unwrap_used)]

mod plugins_support;

use plugins_support::{aiosmtpd, free_port, request, smtp_sink};
use relance::adapters::plugins::PluginHost;
use relance::core::config::PluginsConfig;
use relance::ports::channels::Delivery;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A test CA and a server certificate it signed for 127.0.0.1 / localhost:
/// returns (CA certificate, server certificate, server key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=relance test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

fn host(dir: &Path) -> PluginHost {
    plugins_support::dynamic_host(dir, "email", 20)
}

async fn open(host: &PluginHost, name: &str, settings: serde_json::Value) {
    plugins_support::open_channel(host, name, "email", "email_sent", settings).await;
}

fn message(key: &str) -> relance::adapters::plugins::DeliverRequest {
    let mut r = request(key, json!({}));
    r.contact.company = Some(relance::adapters::plugins::Company {
        id: "acme".into(),
        name: Some("Acme & Fils".into()),
        ..Default::default()
    });
    r.message.subject = Some("{{first_name}}, how {{company.name}} can simplify payroll".into());
    r.message.text = Some("Hello {{first_name}},\nHere is our guide.\n".into());
    r.message.html = Some("<p>Hello {{first_name}} from {{company.name}}</p>".into());
    r
}

fn header(eml: &str, name: &str) -> Option<String> {
    // Unfold continuation lines first.
    let unfolded = eml.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
}

fn mails(out: &Path) -> Vec<(String, serde_json::Value)> {
    let mut names: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let eml = std::fs::read_to_string(p).unwrap();
            let meta = std::fs::read_to_string(p.with_extension("json")).unwrap();
            (eml, serde_json::from_str(&meta).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_authentication_delivers_the_rendered_message() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let (_server, port, out) = aiosmtpd(
        dir.path(),
        &[
            "--starttls",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            "--auth",
            "relance:s3cret-pass",
        ],
    );
    let host = host(dir.path());
    open(
        &host,
        "email",
        json!({
            "host": "127.0.0.1", "allow_networks": ["127.0.0.1"], "port": port, "tls": "starttls",
            "ca_file": ca, "username": "relance", "password": "s3cret-pass",
            "from": "Ventes <ventes@example.com>",
            "unsubscribe_url": "https://example.com/unsubscribe?c={{id}}",
            "unsubscribe_mailto": "unsubscribe@example.com",
        }),
    )
    .await;

    let r = host
        .deliver("email", message("fu-martino-1"))
        .await
        .unwrap();
    let Delivery::Ok {
        remote_id: Some(id),
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    // A retry of the same follow-up: same Message-ID. (The pause lets the
    // pool park the connection, which happens in the background.)
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    host.deliver("email", message("fu-martino-1"))
        .await
        .unwrap();

    // relance's own signed one-click link, passed per message, wins.
    let mut tracked = message("fu-martino-2");
    tracked.vars.insert(
        "unsubscribe_url".into(),
        json!("https://t.example/u/abc.def"),
    );
    host.deliver("email", tracked).await.unwrap();

    let got = mails(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(
        header(&got[2].0, "List-Unsubscribe").unwrap(),
        "<https://t.example/u/abc.def>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
    );
    let (eml, meta) = &got[0];
    assert_eq!(meta["tls"], true);
    assert_eq!(meta["authenticated"], true);
    assert_eq!(meta["rcpt_tos"], json!(["martino@example.com"]));
    assert_eq!(header(eml, "Message-ID").unwrap(), id);
    assert_eq!(header(&got[1].0, "Message-ID").unwrap(), id);
    // Pooled: the retry went over the same SMTP connection.
    assert_eq!(meta["peer"], got[1].1["peer"]);
    assert_eq!(
        header(eml, "Subject").unwrap(),
        "Martino, how Acme & Fils can simplify payroll"
    );
    assert_eq!(
        header(eml, "List-Unsubscribe").unwrap(),
        "<https://example.com/unsubscribe?c=martino>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
    );
    assert_eq!(
        header(eml, "List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert!(
        header(eml, "Date")
            .unwrap()
            .contains("20 Nov 2026 12:00:00"),
        "{eml}"
    );
    assert!(
        header(eml, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    assert!(eml.contains("Hello Martino,"));
    assert!(
        eml.contains("<p>Hello Martino from Acme &amp; Fils</p>"),
        "{eml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_delivers_and_a_wrong_password_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let (_server, port, out) = aiosmtpd(
        dir.path(),
        &[
            "--smtps",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            "--auth",
            "relance:s3cret-pass",
        ],
    );
    let host = host(dir.path());
    let settings = |password: &str| {
        json!({
            "host": "127.0.0.1", "allow_networks": ["127.0.0.1"], "port": port, "tls": "implicit", "ca_file": ca,
            "username": "relance", "password": password, "from": "ventes@example.com",
        })
    };
    open(&host, "good", settings("s3cret-pass")).await;
    open(&host, "bad", settings("wrong")).await;
    let r = host.deliver("good", message("k1")).await.unwrap();
    assert!(matches!(r, Delivery::Ok { .. }), "{r:?}");
    assert_eq!(mails(&out)[0].1["tls"], true);
    match host.deliver("bad", message("k2")).await.unwrap() {
        Delivery::Permanent { reason, .. } => {
            assert!(reason.contains("535"), "{reason}");
            assert!(!reason.contains("wrong"), "no secret in reasons: {reason}");
        }
        other => panic!("{other:?}"),
    }
    // An untrusted certificate (no ca_file) never gets the password.
    open(
        &host,
        "untrusted",
        json!({"host": "127.0.0.1", "allow_networks": ["127.0.0.1"], "port": port, "tls": "implicit",
               "username": "relance", "password": "s3cret-pass", "from": "ventes@example.com"}),
    )
    .await;
    assert!(matches!(
        host.deliver("untrusted", message("k3")).await.unwrap(),
        Delivery::Retryable { .. }
    ));
    assert_eq!(mails(&out).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_faults_end_in_the_right_class() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    // (smtp-sink flags, expected class, a word of the reason)
    let cases: [(&[&str], &str, &str); 6] = [
        (&[], "ok", ""),
        (&["-r", "."], "retryable", "450"),
        (&["-f", "."], "permanent", "500"),
        (&["-q", "."], "retryable", ""),
        (&["-r", "RCPT"], "retryable", "450"),
        (&["-f", "MAIL"], "permanent", "500"),
    ];
    let mut servers = Vec::new();
    for (i, (flags, expected, word)) in cases.iter().enumerate() {
        let (server, port) = smtp_sink(flags);
        servers.push(server);
        let name = format!("sink{i}");
        open(
            &host,
            &name,
            json!({"host": "127.0.0.1", "allow_networks": ["127.0.0.1"], "port": port, "tls": "none", "from": "ventes@example.com", "timeout_secs": 5}),
        )
        .await;
        let r = host.deliver(&name, message("k")).await.unwrap();
        let (class, reason) = match &r {
            Delivery::Ok { .. } => ("ok", String::new()),
            Delivery::Retryable { reason, .. } => ("retryable", reason.clone()),
            Delivery::Permanent { reason, .. } => ("permanent", reason.clone()),
        };
        assert_eq!(class, *expected, "smtp-sink {flags:?}: {r:?}");
        assert!(reason.contains(word), "smtp-sink {flags:?}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_retryable_and_missing_addresses_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    open(
        &host,
        "email",
        json!({"host": "127.0.0.1", "allow_networks": ["127.0.0.1"], "port": free_port(), "tls": "none", "from": "ventes@example.com", "timeout_secs": 5}),
    )
    .await;
    assert!(matches!(
        host.deliver("email", message("k")).await.unwrap(),
        Delivery::Retryable { .. }
    ));
    let mut r = message("k");
    r.contact.email = None;
    assert!(matches!(
        host.deliver("email", r).await.unwrap(),
        Delivery::Permanent { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_transport_writes_each_follow_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let outbox = dir.path().join("outbox");
    open(
        &host,
        "demo",
        json!({"transport": "file", "dir": outbox, "from": "ventes@example.com"}),
    )
    .await;
    for _ in 0..2 {
        assert!(matches!(
            host.deliver("demo", message("fu-1")).await.unwrap(),
            Delivery::Ok { .. }
        ));
    }
    host.deliver("demo", message("fu-2")).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().collect();
    assert_eq!(files.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_email_plugin_works_without_any_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(
        PluginsConfig::default(),
        &dir.path().join("relance.toml"),
        relance::adapters::plugins::builtin_tables(),
    );
    let outbox = dir.path().join("outbox");
    open(
        &host,
        "email",
        json!({"transport": "file", "dir": outbox, "from": "ventes@example.com"}),
    )
    .await;
    let r = host.deliver("email", message("fu-demo")).await.unwrap();
    assert!(matches!(r, Delivery::Ok { .. }), "{r:?}");
    let eml = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let eml = std::fs::read_to_string(eml).unwrap();
    assert_eq!(
        header(&eml, "Message-ID").unwrap(),
        relance_plugin_email::message_id("fu-demo", "example.com")
    );
    for name in ["email", "webhook", "crm"] {
        assert_eq!(host.load(name).unwrap().name, name);
    }
}

/// The SSRF guard stands before the SMTP connection: an internal host in
/// any spelling is refused at start, and a name is checked once resolved,
/// at each send (a name that resolves to an internal address later is
/// refused then). The SMTP server on loopback never sees a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_internal_smtp_hosts_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, out) = aiosmtpd(dir.path(), &[]);
    let host = host(dir.path());
    for spelling in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "[::1]",
        "::ffff:127.0.0.1",
        "169.254.169.254",
    ] {
        let settings: toml::Table = serde_json::from_value(json!({
            "host": spelling, "port": port, "tls": "none", "from": "ventes@example.com"
        }))
        .unwrap();
        let e = host
            .open_channel(
                "literal",
                &relance::core::config::ChannelConfig {
                    plugin: "email".into(),
                    event: "email_sent".into(),
                    consent: Default::default(),
                    settings,
                    instances: 1,
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("SSRF guard"), "{spelling}: {e}");
    }
    // A name passes the start (DNS may be down then) and is refused at send.
    open(
        &host,
        "name",
        json!({"host": "localhost", "port": port, "tls": "none", "from": "ventes@example.com", "timeout_secs": 5}),
    )
    .await;
    match host.deliver("name", message("k")).await.unwrap() {
        Delivery::Permanent { reason, .. } => {
            assert!(
                reason.contains("SSRF guard") && reason.contains("loopback"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    let health = host
        .healthcheck("name", "2026-11-20T12:00:00Z".parse().unwrap())
        .await
        .unwrap();
    assert!(!health.healthy, "{health:?}");
    assert!(mails(&out).is_empty(), "nothing reached the SMTP server");
    // Allowed explicitly, the same address delivers, however spelt.
    open(
        &host,
        "allowed",
        json!({"host": "2130706433", "port": port, "tls": "none", "from": "ventes@example.com",
               "timeout_secs": 5, "allow_networks": ["127.0.0.0/8"]}),
    )
    .await;
    let r = host.deliver("allowed", message("k")).await.unwrap();
    assert!(matches!(r, Delivery::Ok { .. }), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internationalised_addresses_go_through_smtputf8_or_die_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let (_plain, plain_port, _) = aiosmtpd(dir.path(), &["--no-smtputf8"]);
    let (_utf8, utf8_port, out) = aiosmtpd(dir.path(), &[]);
    for (name, port) in [("plain", plain_port), ("utf8", utf8_port)] {
        open(
            &host,
            name,
            json!({"host": "127.0.0.1", "allow_networks": ["127.0.0.1"], "port": port, "tls": "none", "from": "ventes@example.com", "timeout_secs": 10}),
        )
        .await;
    }
    let to = "chloé.durand.1@example.org";
    let mut r = message("intl-1");
    r.contact.email = Some(to.into());

    // Offered: sent with SMTPUTF8, the address intact.
    let got = host.deliver("utf8", r.clone()).await.unwrap();
    assert!(matches!(got, Delivery::Ok { .. }), "{got:?}");
    let sent = mails(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1["rcpt_tos"], json!([to]));

    // Not offered: a permanent failure that says why, never a retry.
    match host.deliver("plain", r).await.unwrap() {
        Delivery::Permanent { reason, .. } => assert!(reason.contains("SMTPUTF8"), "{reason}"),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}
