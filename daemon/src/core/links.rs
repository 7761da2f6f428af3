//! Signed tracking links: the open pixel, click redirects and the one-click
//! unsubscribe of emails relance sends.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256)`. The
//! claims carry the outbox idempotency key, the contact, the channel, what
//! the link does and, for clicks, the target URL: the redirect goes only to
//! the URL recorded for that message, and the signature makes every field
//! tamper-proof, so there is no open redirect and no forged unsubscribe.
//!
//! Pure (a secret and a message in, signed links out): the dispatcher signs
//! with it, and the API's tracking endpoints verify with it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use relance_plugin_api::message::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

type HmacSha256 = Hmac<Sha256>;

/// What a tracking link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    #[serde(rename = "o")]
    Open,
    #[serde(rename = "c")]
    Click,
    #[serde(rename = "u")]
    Unsubscribe,
}

/// The signed content of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "p")]
    pub purpose: Purpose,
    /// The outbox idempotency key of the message.
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "c")]
    pub contact: String,
    #[serde(rename = "ch")]
    pub channel: String,
    /// Click target.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed tracking token")]
    Malformed,
    #[error("tracking token signature does not match")]
    BadSignature,
    #[error("tracking token is not for this kind of link")]
    WrongPurpose,
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length")
}

/// Signs `claims` with `secret`.
pub fn sign(claims: &Claims, secret: &str) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// Checks the signature (in constant time) and the purpose, then returns
/// the claims.
pub fn verify(token: &str, secret: &str, purpose: Purpose) -> Result<Claims, TokenError> {
    let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.purpose != purpose {
        return Err(TokenError::WrongPurpose);
    }
    if purpose == Purpose::Click && !claims.url.as_deref().is_some_and(is_http_url) {
        return Err(TokenError::Malformed);
    }
    Ok(claims)
}

/// The id of the event a token records: the same link followed twice is
/// one event (the second is a duplicate).
pub fn event_id(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("track:{}", hex::encode(&digest[..16]))
}

/// An http(s) URL that can go in a `Location` header: no spaces, no
/// control characters (a CR or LF would end the header).
fn is_http_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

static HREF: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    regex::Regex::new(r#"href\s*=\s*"(https?://[^"]+)""#).expect("valid regex")
});

/// The signed one-click unsubscribe URL of a message.
pub fn unsubscribe_link(
    base_url: &str,
    key: &str,
    contact: &str,
    channel: &str,
    secret: &str,
) -> String {
    let claims = Claims {
        purpose: Purpose::Unsubscribe,
        key: key.to_string(),
        contact: contact.to_string(),
        channel: channel.to_string(),
        url: None,
    };
    format!(
        "{}/u/{}",
        base_url.trim_end_matches('/'),
        sign(&claims, secret)
    )
}

/// Makes an outgoing email trackable: every `href="http(s)://…"` link of
/// the html part becomes a signed click link, an open pixel is appended,
/// and the one-click unsubscribe URL is returned (give it to the email
/// plugin as `vars.unsubscribe_url`). Links holding `{{placeholders}}` are
/// left as they are: they are rendered by the plugin, after signing.
pub fn decorate(
    message: &mut Message,
    base_url: &str,
    key: &str,
    contact: &str,
    channel: &str,
    secret: &str,
) -> String {
    let base = base_url.trim_end_matches('/');
    let claims = |purpose, url: Option<String>| Claims {
        purpose,
        key: key.to_string(),
        contact: contact.to_string(),
        channel: channel.to_string(),
        url,
    };
    if let Some(html) = &message.html {
        let linked = HREF.replace_all(html, |c: &regex::Captures<'_>| {
            let raw = &c[1];
            // Placeholders are the plugin's to render; our own links (the
            // unsubscribe URL a template shows) stay as they are.
            if raw.contains("{{") || raw.starts_with(&format!("{base}/")) {
                return c[0].to_string();
            }
            let target = raw.replace("&amp;", "&");
            if !is_http_url(&target) {
                // A click on it could never be redirected: left as written.
                tracing::warn!(
                    contact,
                    key,
                    "link with spaces or control characters left untracked"
                );
                return c[0].to_string();
            }
            let token = sign(&claims(Purpose::Click, Some(target)), secret);
            format!("href=\"{base}/t/c/{token}\"")
        });
        let token = sign(&claims(Purpose::Open, None), secret);
        let pixel = format!(
            "<img src=\"{base}/t/o/{token}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">"
        );
        let mut html = linked.into_owned();
        match html.rfind("</body>") {
            Some(at) => html.insert_str(at, &pixel),
            None => html.push_str(&pixel),
        }
        message.html = Some(html);
    }
    unsubscribe_link(base_url, key, contact, channel, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";

    fn claims(purpose: Purpose) -> Claims {
        Claims {
            purpose,
            key: "k1".into(),
            contact: "c1".into(),
            channel: "email".into(),
            url: (purpose == Purpose::Click).then(|| "https://example.com/a?b=1&c=2".into()),
        }
    }

    #[test]
    fn tokens_verify_and_reject_tampering() {
        let t = sign(&claims(Purpose::Click), SECRET);
        assert_eq!(
            verify(&t, SECRET, Purpose::Click),
            Ok(claims(Purpose::Click))
        );
        assert_eq!(
            verify(&t, "another secret of enough length", Purpose::Click),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&t, SECRET, Purpose::Unsubscribe),
            Err(TokenError::WrongPurpose)
        );
        // Another payload under the same signature.
        let (_, sig) = t.split_once('.').expect("dot");
        let mut evil = claims(Purpose::Click);
        evil.url = Some("https://evil.example".into());
        let (payload, _) = sign(&evil, "guess")
            .split_once('.')
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .expect("dot");
        assert_eq!(
            verify(&format!("{payload}.{sig}"), SECRET, Purpose::Click),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify("garbage", SECRET, Purpose::Open),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn urls_that_cannot_be_a_location_are_neither_signed_nor_accepted() {
        let mut m = Message {
            html: Some("<a href=\"https://example.com/a\r\nSet-Cookie: x=1\">x</a>".into()),
            ..Message::default()
        };
        decorate(&mut m, "https://t.example", "k1", "c1", "email", SECRET);
        let html = m.html.expect("html");
        assert!(!html.contains("/t/c/"), "{html}");
        let mut evil = claims(Purpose::Click);
        evil.url = Some("https://example.com/\r\nSet-Cookie: x=1".into());
        assert_eq!(
            verify(&sign(&evil, SECRET), SECRET, Purpose::Click),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn decorate_signs_links_and_adds_a_pixel() {
        let mut m = Message {
            html: Some(
                "<body><a href=\"https://example.com/x?a=1&amp;b=2\">x</a> <a href=\"https://example.com/{{id}}\">y</a> <a href=\"mailto:a@b\">m</a></body>".into(),
            ),
            ..Message::default()
        };
        let unsub = decorate(&mut m, "https://t.example/", "k1", "c1", "email", SECRET);
        let html = m.html.expect("html");
        assert!(unsub.starts_with("https://t.example/u/"));
        assert!(html.contains("href=\"https://t.example/t/c/"));
        assert!(html.contains("https://example.com/{{id}}"), "{html}");
        assert!(html.contains("mailto:a@b"));
        assert!(html.contains("<img src=\"https://t.example/t/o/"));
        assert!(html.ends_with("</body>"));
        let token = html
            .split("/t/c/")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("click token");
        let c = verify(token, SECRET, Purpose::Click).expect("valid");
        assert_eq!(c.url.as_deref(), Some("https://example.com/x?a=1&b=2"));
    }
}
