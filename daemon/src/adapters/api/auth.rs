//! Bearer-token authentication. Tokens come from `[api] tokens` (the
//! configuration in force, so a reload rotates them) and are compared in
//! constant time: both sides are hashed first, so neither the content nor
//! the length of a token leaks through timing.

use super::ApiState;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `presented` is one of `tokens`; every token is compared.
pub fn token_matches(presented: &str, tokens: &[String]) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let mut found = subtle::Choice::from(0);
    for t in tokens {
        if t.is_empty() {
            continue;
        }
        found |= Sha256::digest(t.as_bytes()).ct_eq(&presented);
    }
    found.into()
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is
/// case-insensitive (RFC 7235).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware: lets the request through with a valid bearer token.
pub async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let ok = presented.is_some_and(|p| token_matches(p, &state.config().api.tokens));
    if ok {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_match() {
        let tokens = vec!["first-token-0123456".to_string(), String::new()];
        assert!(token_matches("first-token-0123456", &tokens));
        assert!(!token_matches("first-token-012345", &tokens));
        assert!(!token_matches("", &tokens), "an empty token never matches");
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer(v), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer(v), None, "{v}");
        }
    }
}
