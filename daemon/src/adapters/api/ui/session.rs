//! Dashboard sessions: a login with an API token sets a signed cookie
//! (HttpOnly, SameSite=Strict, Secure behind https) naming the role and
//! the token it came from; every form carries a CSRF token bound to the
//! session. The signing key is derived from `api.tracking_secret`, and a
//! session ends as soon as its token leaves the configuration.

use crate::adapters::api::auth::token_matches;
use crate::pipeline::config::Config;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const COOKIE: &str = "relance_ui";
/// Before login: the nonce the login form's CSRF token is bound to.
pub const PRE_COOKIE: &str = "relance_ui_login";

/// What a session may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every page and every action.
    Admin,
    /// Pages only: no erase, no outcome.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read_only",
        }
    }
}

/// The signed content of the session cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "r")]
    pub role: Role,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
    /// Random-looking per-session value the CSRF token derives from.
    #[serde(rename = "n")]
    pub nonce: String,
    /// Fingerprint of the token that opened the session.
    #[serde(rename = "t")]
    pub token: String,
}

fn key(config: &Config) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"relance-ui-session\0");
    h.update(config.api.tracking_secret.as_bytes());
    h.finalize().into()
}

fn mac(config: &Config, label: &str, data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut m = HmacSha256::new_from_slice(&key(config)).expect("HMAC accepts any key length");
    m.update(label.as_bytes());
    m.update(b"\0");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn fingerprint(config: &Config, token: &str) -> String {
    hex::encode(&mac(config, "token", token.as_bytes())[..12])
}

/// A fresh nonce: unpredictable without the key (it hashes the key, a
/// counter, randomness and the instant).
pub fn nonce(config: &Config, now: chrono::DateTime<chrono::Utc>) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState draws its keys from the operating system's randomness.
    let random =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), n);
    let seed = format!(
        "{n}:{random}:{}:{}",
        now.timestamp_micros(),
        std::process::id()
    );
    hex::encode(&mac(config, "nonce", seed.as_bytes())[..16])
}

/// The role a presented token opens, if any.
pub fn role_of(config: &Config, token: &str) -> Option<Role> {
    if token_matches(token, &config.api.tokens) {
        Some(Role::Admin)
    } else if token_matches(token, &config.api.ui.read_only_tokens) {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// A new session for `token` (already checked), as a cookie value.
pub fn open(
    config: &Config,
    token: &str,
    role: Role,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let session = Session {
        role,
        expires: now.timestamp() + i64::from(config.api.ui.session_hours) * 3600,
        nonce: nonce(config, now),
        token: fingerprint(config, token),
    };
    let json = serde_json::to_vec(&session).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(mac(config, "session", payload.as_bytes()));
    format!("{payload}.{sig}")
}

/// The session a cookie value holds, if its signature holds, it has not
/// expired and its token is still configured with the same role.
pub fn verify(config: &Config, value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Session> {
    let (payload, sig) = value.split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let expected = mac(config, "session", payload.as_bytes());
    if !bool::from(expected.ct_eq(&sig)) {
        return None;
    }
    let session: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    if session.expires <= now.timestamp() {
        return None;
    }
    let tokens = match session.role {
        Role::Admin => &config.api.tokens,
        Role::ReadOnly => &config.api.ui.read_only_tokens,
    };
    tokens
        .iter()
        .filter(|t| !t.is_empty())
        .any(|t| fingerprint(config, t) == session.token)
        .then_some(session)
}

/// The CSRF token of forms shown under `nonce` (the session's, or the
/// login cookie's).
pub fn csrf_token(config: &Config, nonce: &str) -> String {
    URL_SAFE_NO_PAD.encode(&mac(config, "csrf", nonce.as_bytes())[..24])
}

/// Whether `presented` is the CSRF token of `nonce`, compared in constant time.
pub fn csrf_ok(config: &Config, nonce: &str, presented: &str) -> bool {
    let expected = csrf_token(config, nonce);
    !presented.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A cookie header value: HttpOnly, SameSite=Strict, limited to `/ui/`.
pub fn cookie(config: &Config, name: &str, value: &str, max_age: i64) -> String {
    let secure = config.api.ui.secure_cookie || config.api.public_url.starts_with("https://");
    format!(
        "{name}={value}; Path=/ui/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` in a `Cookie` header.
pub fn read_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Where to go after login: only a path of the dashboard itself, never
/// another site (`//host`, `/\host`, a scheme) and nothing a header could
/// not carry.
pub fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace())
                && n.len() <= 2000 =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "[api]\ntokens = [\"admin-token-0123456789\"]\ntracking_secret = \"secret-secret-secret-0\"\n\n[api.ui]\nread_only_tokens = [\"reader-token-0123456789\"]\n";
        Config::parse(text, std::path::Path::new("t.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_session_holds_until_it_expires_or_its_token_goes() {
        let mut c = config();
        let role = role_of(&c, "reader-token-0123456789");
        assert_eq!(role, Some(Role::ReadOnly));
        assert_eq!(role_of(&c, "nope-nope-nope-nope-nope"), None);
        let v = open(&c, "admin-token-0123456789", Role::Admin, now());
        assert_eq!(verify(&c, &v, now()).map(|s| s.role), Some(Role::Admin));
        let late = now() + chrono::Duration::hours(13);
        assert!(verify(&c, &v, late).is_none(), "expired");
        let (payload, sig) = v.split_once('.').unwrap_or_default();
        let forged = format!("{payload}x.{sig}");
        assert!(verify(&c, &forged, now()).is_none(), "altered");
        c.api.tokens = vec!["another-token-0123456789".into()];
        assert!(verify(&c, &v, now()).is_none(), "token removed");
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_nonce() {
        let c = config();
        let t = csrf_token(&c, "n1");
        assert!(csrf_ok(&c, "n1", &t));
        assert!(!csrf_ok(&c, "n2", &t));
        assert!(!csrf_ok(&c, "n1", ""));
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_next(Some("/ui/contact?id=c1")), "/ui/contact?id=c1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/ui//evil.example",
            "/\\evil.example",
            "/ui/\\evil",
            "/other",
            "/ui/x\r\nSet-Cookie: a=b",
        ] {
            assert_eq!(local_next(Some(bad)), "/ui/", "{bad:?}");
        }
        assert_eq!(local_next(None), "/ui/");
    }
}
