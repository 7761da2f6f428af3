//! Standard Webhooks v1 signatures: `v1,` + base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")), the key being the base64 part of a
//! `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing key, its HMAC state keyed once (signing a payload then
/// hashes the payload alone); its `Debug` never shows the key.
#[derive(Clone)]
pub struct Secret(Hmac<Sha256>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret must start with `whsec_`")]
    Prefix,
    #[error("the secret after `whsec_` must be base64")]
    Base64,
    #[error("the secret must hold between 24 and 64 bytes")]
    Length,
}

impl Secret {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = STANDARD
            .decode(b64.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(b64))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| SecretError::Base64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&key)
            .map(Self)
            .map_err(|_| SecretError::Length)
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.sign_at(id, &timestamp.to_string(), body)
    }

    /// [`Secret::sign`] with the timestamp already written out, as the
    /// `webhook-timestamp` header carries it.
    pub fn sign_at(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let mut out = String::with_capacity(48);
        out.push_str("v1,");
        STANDARD.encode_string(mac.finalize().into_bytes(), &mut out);
        out
    }

    /// [`Secret::sign_at`] appended to `out`, as a request's header value
    /// is written: no allocation of its own.
    pub fn sign_into(&self, id: &[u8], timestamp: &[u8], body: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.0.clone();
        mac.update(id);
        mac.update(b".");
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        out.extend_from_slice(b"v1,");
        let start = out.len();
        // 32 bytes take 44 in padded base64.
        out.resize(start + 44, 0);
        let written = STANDARD
            .encode_slice(mac.finalize().into_bytes(), &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's test vector.
    #[test]
    fn matches_the_standard_webhooks_vector() {
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let mut out = b"x: ".to_vec();
        s.sign_into(
            b"msg_p5jXN8AQM9LWM0D4loKWxJek",
            b"1614265330",
            br#"{"test": 2432232314}"#,
            &mut out,
        );
        assert_eq!(out, b"x: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert_eq!(Secret::parse("abc").unwrap_err(), SecretError::Prefix);
        assert_eq!(Secret::parse("whsec_!!!").unwrap_err(), SecretError::Base64);
        assert_eq!(
            Secret::parse("whsec_YWJj").unwrap_err(),
            SecretError::Length
        );
        assert_eq!(
            format!(
                "{:?}",
                Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
            ),
            "Secret(..)"
        );
    }
}
