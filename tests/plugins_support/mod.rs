//! Shared by the `plugins_*` tests: building plugin shared libraries and
//! small helpers. The libraries are built with their `export` feature into
//! their own target folder, so that this works from a fresh clone while the
//! test's own `cargo test` holds the main target folder.
#![allow(dead_code)]

use relance::plugins::{Contact, DeliverRequest};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo")
}

static BUILD: Mutex<()> = Mutex::new(());

/// Builds `package` with `features` and copies its `.so` into `dir` as
/// `name`; returns the copy's path.
pub fn build_plugin(package: &str, features: &str, dir: &Path, name: &str) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let target = repo().join("target/plugins-so");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "--quiet", "-p", package, "--features"])
        .arg(format!("{package}/{features}"))
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
