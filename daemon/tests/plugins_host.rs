//! The plugin host against the real echo plugin, loaded as a shared library:
//! isolation (panic, hang, garbage, huge answers, full queue) and refusals
//! at load (wrong ABI, newer protocol, outside the folder, wrong sha256).
// Test harness helpers (outside #[test] fns) may unwrap too.
#![allow(clippy::unwrap_used)]

mod plugins_support;

use plugins_support::{build_plugin, request, sha256_hex};
use relance::adapters::plugins::{HostError, LoadError, PluginHost};
use relance::core::config::{ChannelConfig, Duration as CfgDuration, PluginFile, PluginsConfig};
use relance::ports::channels::{Delivery, DeliveryError};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The test host's call timeout and first restart wait, in seconds.
const CALL_TIMEOUT: i64 = 10;
const RESTART_BACKOFF: i64 = 5;

fn secs(n: i64) -> CfgDuration {
    CfgDuration(chrono::Duration::seconds(n))
}

fn channel(plugin: &str, settings: toml::Table) -> ChannelConfig {
    ChannelConfig {
        plugin: plugin.into(),
        event: "email_sent".into(),
        consent: Default::default(),
        settings,
        instances: 1,
    }
}

/// A plugin folder holding the echo plugin, and a host configured for it.
fn host_with_echo(dir: &Path, sha256: Option<String>) -> PluginHost {
    host_with_echo_config(dir, sha256, |_| {})
}

fn host_with_echo_config(
    dir: &Path,
    sha256: Option<String>,
    change: impl FnOnce(&mut PluginsConfig),
) -> PluginHost {
    let so = build_plugin("relance-plugin-echo", "export", dir, "libecho.so");
    let mut config = PluginsConfig {
        dir: dir.to_path_buf(),
        // Generous, so that a loaded machine (CI, with RUST_BACKTRACE=1)
        // never turns a slow answer into a timeout.
        call_timeout: secs(CALL_TIMEOUT),
        queue: 1,
        restart_backoff: secs(RESTART_BACKOFF),
        restart_backoff_max: secs(2 * RESTART_BACKOFF),
        max_response_bytes: 64 * 1024,
        ..Default::default()
    };
    change(&mut config);
    let sha = sha256.unwrap_or_else(|| sha256_hex(&so));
    config.load.insert(
        "echo".into(),
        PluginFile {
            file: "libecho.so".into(),
            sha256: Some(sha),
        },
    );
    PluginHost::new(config, &dir.join("relance.toml"), [])
}

async fn open(host: &PluginHost, name: &str) {
    host.open_channel(name, &channel("echo", toml::Table::new()))
        .await
        .expect("open channel");
}

async fn ok(host: &PluginHost, ch: &str, key: &str) -> serde_json::Value {
    match host.deliver(ch, request(key, json!({}))).await {
        Ok(Delivery::Ok { remote_id, data }) => {
            assert_eq!(remote_id.as_deref(), Some(key));
            data.expect("echo data")
        }
        other => panic!("expected ok, got {other:?}"),
    }
}

/// Waits (bounded) until `ch` delivers again after its restart backoff.
async fn recovers(host: &PluginHost, ch: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match host.deliver(ch, request("again", json!({}))).await {
            Ok(Delivery::Ok { .. }) => return,
            Err(DeliveryError::Unavailable { .. }) => {
                assert!(std::time::Instant::now() < deadline, "{ch} never recovered");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("{ch} after its backoff: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_through_the_shared_library_and_classifies_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_echo(dir.path(), None);
    let mut settings = toml::Table::new();
    settings.insert("greeting".into(), "bonjour".into());
    host.open_channel("a", &channel("echo", settings))
        .await
        .unwrap();

    let data = ok(&host, "a", "key-1").await;
    assert_eq!(data["settings"]["greeting"], "bonjour");
    assert_eq!(data["contact"], "martino");
    assert_eq!(data["now"], "2026-11-20T12:00:00Z");

    let r = host
        .deliver(
            "a",
            request("k", json!({"fault": "retryable", "retry_after": 7})),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        Delivery::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            reason: "echo: retryable requested".into()
        }
    );
    let r = host
        .deliver("a", request("k", json!({"fault": "permanent"})))
        .await
        .unwrap();
    assert!(matches!(r, Delivery::Permanent { .. }), "{r:?}");

    let m = host.describe("a").await.unwrap();
    assert_eq!(m.name, "echo");
    let h = host
        .healthcheck("a", "2026-11-20T12:00:00Z".parse().unwrap())
        .await
        .unwrap();
    assert!(h.healthy);

    let e = host
        .deliver("nope", request("k", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::UnknownChannel { .. }) && !e.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_is_restarted_and_other_channels_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_echo(dir.path(), None);
    open(&host, "a").await;
    open(&host, "b").await;

    let e = host
        .deliver("a", request("boom", json!({"fault": "panic"})))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("panic"), "{e}");
    let st = host.status("a").unwrap();
    assert!(!st.healthy && st.restarts == 1, "{st:?}");

    // The other channel and the daemon go on.
    ok(&host, "b", "b-1").await;
    // During the backoff the channel says so, with a wait.
    let e = host
        .deliver("a", request("k", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeliveryError::Unavailable { .. }) && e.retry_after().is_some(),
        "{e}"
    );
    // After the backoff a fresh instance serves the channel.
    recovers(&host, "a").await;
    assert!(host.status("a").unwrap().healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_are_cancelled_and_hung_plugins_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_echo(dir.path(), None);
    open(&host, "slow").await;
    open(&host, "hung").await;
    open(&host, "other").await;

    // Honours cancel: a timeout, but the instance stays.
    let e = host
        .deliver(
            "slow",
            request("s", json!({"fault": "sleep", "sleep_ms": 30_000})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeliveryError::Timeout { hung: false, .. }) && e.is_transient(),
        "{e}"
    );
    ok(&host, "slow", "s-2").await;

    // Ignores cancel: abandoned on its thread, channel unhealthy, restarted.
    let e = host
        .deliver(
            "hung",
            request("h", json!({"fault": "ignore_cancel", "sleep_ms": 30_000})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeliveryError::Timeout { hung: true, .. }),
        "{e}"
    );
    assert!(!host.status("hung").unwrap().healthy);
    ok(&host, "other", "o-1").await;
    recovers(&host, "hung").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_huge_answers_are_faults_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_echo(dir.path(), None);
    open(&host, "g").await;
    open(&host, "h").await;
    let e = host
        .deliver("g", request("g", json!({"fault": "invalid_json"})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeliveryError::PluginFault { .. }) && e.to_string().contains("unreadable"),
        "{e}"
    );
    let e = host
        .deliver(
            "h",
            request("h", json!({"fault": "huge", "size": 10_000_000})),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    open(&host, "c").await;
    ok(&host, "c", "c-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_defers_instead_of_piling_up() {
    let dir = tempfile::tempdir().unwrap();
    let host = std::sync::Arc::new(host_with_echo(dir.path(), None));
    open(&host, "q").await;
    let slow = |h: std::sync::Arc<PluginHost>, k: &'static str| async move {
        h.deliver(
            "q",
            request(k, json!({"fault": "sleep", "sleep_ms": 4_000})),
        )
        .await
    };
    // One call running for 4 s, one waiting in the queue of 1: the third
    // is refused. The pauses only need to be shorter than the 4 s.
    let first = tokio::spawn(slow(host.clone(), "1"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = tokio::spawn(slow(host.clone(), "2"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let e = host
        .deliver("q", request("3", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeliveryError::QueueFull { bound: 1, .. }) && e.is_transient(),
        "{e}"
    );
    assert!(matches!(first.await.unwrap(), Ok(Delivery::Ok { .. })));
    assert!(matches!(second.await.unwrap(), Ok(Delivery::Ok { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_waiting_in_the_queue_is_not_counted_in_the_call_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Eight calls of 1 s each on one instance: the last waits 7 s in the
    // queue, far beyond the 3 s timeout, yet no call is slow itself.
    let host = std::sync::Arc::new(host_with_echo_config(dir.path(), None, |c| {
        c.call_timeout = secs(3);
        c.queue = 8;
    }));
    open(&host, "q").await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let h = host.clone();
            tokio::spawn(async move {
                let r = request(
                    &format!("k{i}"),
                    json!({"fault": "sleep", "sleep_ms": 1_000}),
                );
                h.deliver("q", r).await
            })
        })
        .collect();
    for call in calls {
        let got = call.await.unwrap();
        assert!(matches!(got, Ok(Delivery::Ok { .. })), "{got:?}");
    }
    let st = host.status("q").unwrap();
    assert!(st.healthy && st.restarts == 0, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_plugin_refuses_stop_the_channel_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_echo(dir.path(), None);
    let mut settings = toml::Table::new();
    settings.insert("fail_create".into(), true.into());
    let e = host
        .open_channel("bad", &channel("echo", settings))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Create { .. }) && e.to_string().contains("fail_create is set"),
        "{e}"
    );
}

fn refused(config: PluginsConfig, dir: &Path) -> LoadError {
    PluginHost::new(config, &dir.join("relance.toml"), [])
        .load("echo")
        .expect_err("refused")
}

fn config_for(dir: &Path, file: &str, sha256: Option<String>) -> PluginsConfig {
    let mut c = PluginsConfig {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    c.load.insert(
        "echo".into(),
        PluginFile {
            file: file.into(),
            sha256,
        },
    );
    c
}

#[test]
fn wrong_abi_newer_protocol_outside_folder_and_wrong_sha_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();

    let wrong = build_plugin("relance-plugin-echo", "wrong-abi", &dir, "libwrong.so");
    let e = refused(config_for(&dir, "libwrong.so", None), &dir);
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Table { .. }), "{msg}");
    assert!(
        msg.contains("plugin `echo`")
            && msg.contains("built for plugin ABI 2")
            && msg.contains("ABI 1"),
        "{msg}"
    );
    drop(wrong);

    build_plugin(
        "relance-plugin-echo",
        "future-protocol",
        &dir,
        "libfuture.so",
    );
    let msg = refused(config_for(&dir, "libfuture.so", None), &dir).to_string();
    assert!(msg.contains("protocol 2.0, newer than"), "{msg}");

    // A library outside the folder, reached through a symbolic link inside it.
    let outside = build_plugin("relance-plugin-echo", "export", root.path(), "libecho.so");
    std::os::unix::fs::symlink(&outside, dir.join("liblink.so")).unwrap();
    let e = refused(config_for(&dir, "liblink.so", None), &dir);
    let msg = e.to_string();
    assert!(matches!(e, LoadError::OutsideDir { .. }), "{msg}");
    assert!(msg.contains("outside the plugin directory"), "{msg}");

    // The right library with the wrong pin.
    std::fs::copy(&outside, dir.join("libecho.so")).unwrap();
    let pin = "0".repeat(64);
    let e = refused(config_for(&dir, "libecho.so", Some(pin.clone())), &dir);
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Sha256 { .. }), "{msg}");
    assert!(
        msg.contains(&pin) && msg.contains(&sha256_hex(&outside)),
        "{msg}"
    );

    // With the right pin it loads.
    let host = PluginHost::new(
        config_for(&dir, "libecho.so", Some(sha256_hex(&outside))),
        &dir.join("relance.toml"),
        [],
    );
    assert_eq!(host.load("echo").unwrap().name, "echo");

    // A plugin neither built in nor listed.
    let msg = PluginHost::new(PluginsConfig::default(), &dir.join("x.toml"), [])
        .load("sms")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such plugin"), "{msg}");
}

#[test]
fn a_library_without_the_entry_symbol_says_how_to_build_a_loadable_one() {
    let dir = tempfile::tempdir().unwrap();
    // What cargo leaves in target/ for a plugin crate: no `export` feature.
    build_plugin("relance-plugin-echo", "", dir.path(), "libplain.so");
    let load = |name: &str| {
        let mut config = config_for(dir.path(), "libplain.so", None);
        let spec = config.load.remove("echo").unwrap();
        config.load.insert(name.into(), spec);
        PluginHost::new(
            config,
            &dir.path().join("relance.toml"),
            relance::adapters::plugins::builtin_tables(),
        )
        .load(name)
        .expect_err("no entry symbol")
    };
    // Under a built-in plugin's name: says it is built in, and how to build it.
    let e = load("email");
    let msg = e.to_string();
    assert!(matches!(e, LoadError::NoEntry { .. }), "{msg}");
    assert!(
        msg.contains("relance_plugin_entry")
            && msg.contains("built into relance")
            && msg.contains("remove [plugins.load.email]")
            && msg.contains("cargo build -p relance-plugin-email --features export"),
        "{msg}"
    );
    // A third-party plugin: points at the `export` feature.
    let msg = load("acme").to_string();
    assert!(
        msg.contains("relance_plugin_entry") && msg.contains("`export` feature"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_plugin_goes_through_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(
        PluginsConfig::default(),
        &dir.path().join("relance.toml"),
        [relance_plugin_echo::plugin_table()],
    );
    open(&host, "linked").await;
    ok(&host, "linked", "l-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panics_while_starting_leaves_its_channel_unhealthy_not_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_echo(dir.path(), None);
    let mut settings = toml::Table::new();
    settings.insert("panic_create".into(), true.into());
    host.open_channel("broken", &channel("echo", settings))
        .await
        .expect("a panicking create is retried later, not fatal");
    let st = host.status("broken").unwrap();
    assert!(!st.healthy, "{st:?}");
    assert!(st.last_error.unwrap().contains("panic_create is set"));
    let e = host
        .deliver("broken", request("k", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeliveryError::Unavailable { .. }) && e.is_transient(),
        "{e}"
    );
    open(&host, "fine").await;
    ok(&host, "fine", "f-1").await;
}
