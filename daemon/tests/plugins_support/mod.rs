//! Shared by the `plugins_*` tests: building plugin shared libraries and
//! small helpers. The libraries are built with their `export` feature into
//! their own target folder, so that this works from a fresh clone while the
//! test's own `cargo test` holds the main target folder.
#![allow(dead_code)]

use relance::adapters::plugins::{Contact, DeliverRequest};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo")
}

static BUILD: Mutex<()> = Mutex::new(());

/// Builds `package` with `features` (none when empty) and copies its `.so`
/// into `dir` as `name`; returns the copy's path.
pub fn build_plugin(package: &str, features: &str, dir: &Path, name: &str) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let target = repo().join("target/plugins-so");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut build = Command::new(cargo);
    build
        .current_dir(repo())
        .args(["build", "--quiet", "-p", package]);
    if !features.is_empty() {
        build.arg("--features").arg(format!("{package}/{features}"));
    }
    let out = build
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "building {package} ({features}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target
        .join("debug")
        .join(format!("lib{}.so", package.replace('-', "_")));
    let dest = dir.join(name);
    std::fs::copy(&lib, &dest).expect("copy plugin");
    dest
}

pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// A delivery request at a fixed instant, as the outbox would build it.
pub fn request(key: &str, vars: serde_json::Value) -> DeliverRequest {
    DeliverRequest {
        idempotency_key: key.into(),
        now: "2026-11-20T12:00:00Z".parse().expect("instant"),
        attempt: 1,
        channel: "test".into(),
        action: Default::default(),
        contact: Contact {
            id: "martino".into(),
            email: Some("martino@example.com".into()),
            first_name: Some("Martino".into()),
            last_name: Some("Rossi".into()),
            ..Default::default()
        },
        message: Default::default(),
        score: None,
        vars: vars.as_object().cloned().unwrap_or_default(),
    }
}

/// A host that loads plugin `plugin` (crate `relance-plugin-PLUGIN`) as a
/// shared library from `dir`, the way a third-party plugin is loaded.
pub fn dynamic_host(
    dir: &Path,
    plugin: &str,
    call_timeout_secs: i64,
) -> relance::adapters::plugins::PluginHost {
    use relance::adapters::plugins::PluginHost;
    use relance::core::config::Duration;
    use relance::core::config::{PluginFile, PluginsConfig};
    let file = format!("lib{plugin}.so");
    build_plugin(&format!("relance-plugin-{plugin}"), "export", dir, &file);
    let mut config = PluginsConfig {
        dir: dir.to_path_buf(),
        call_timeout: Duration(chrono::Duration::seconds(call_timeout_secs)),
        ..Default::default()
    };
    config.load.insert(
        plugin.into(),
        PluginFile {
            file: file.into(),
            sha256: None,
        },
    );
    PluginHost::new(config, &dir.join("relance.toml"), [])
}

/// Opens channel `name` on `plugin`, recording `event` when it delivers.
pub async fn open_channel(
    host: &relance::adapters::plugins::PluginHost,
    name: &str,
    plugin: &str,
    event: &str,
    settings: serde_json::Value,
) {
    host.open_channel(
        name,
        &relance::core::config::ChannelConfig {
            plugin: plugin.into(),
            event: event.into(),
            consent: Default::default(),
            settings: serde_json::from_value(settings).expect("settings are a table"),
            instances: 1,
        },
    )
    .await
    .expect("channel opens");
}

/// A server process this test started; stopped when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server on {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// aiosmtpd with `args`; returns the server, its port and its mail folder.
pub fn aiosmtpd(dir: &Path, args: &[&str]) -> (Server, u16, PathBuf) {
    let port = free_port();
    let out = dir.join(format!("mail-{port}"));
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/servers/smtp_server.py"))
        .args(["--port", &port.to_string(), "--out"])
        .arg(&out)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with aiosmtpd: run `bash tests/servers/setup.sh`");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    (Server(child), port, out)
}

/// postfix's smtp-sink with fault `flags` (e.g. `-r .`).
pub fn smtp_sink(flags: &[&str]) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "postfix"])
        .args(flags)
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink: run `bash tests/servers/setup.sh`");
    let server = Server(child);
    wait_listening(port);
    (server, port)
}
