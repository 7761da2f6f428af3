//! The dashboard under `/ui/` (issue #19): pages rendered on the server
//! with minijinja, charts drawn as SVG (see [`svg`]), every figure read
//! from aggregates the store keeps (see [`crate::ports::store::ui`]).
//!
//! Access: a login with an API token opens a signed session cookie (see
//! [`session`]); every form carries a CSRF token; read-only sessions see
//! the pages but cannot erase or record. Every action is logged.

mod calls;
mod contact;
mod pages;
pub mod pressure;
pub mod session;
pub mod svg;

use super::ApiState;
use super::error::ApiError;
use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Deserialize;
use session::{COOKIE, PRE_COOKIE, Role, Session};
use std::sync::LazyLock;

/// What a page shows when it cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound { .. } => UiError::NotFound(e.to_string()),
            ApiError::BadRequest { .. } => UiError::BadRequest(e.to_string()),
            other => UiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::ports::store::StoreError> for UiError {
    fn from(e: crate::ports::store::StoreError) -> Self {
        UiError::Internal(e.to_string())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = match self {
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = render(
            "error.html",
            minijinja::context! {
                title => status.canonical_reason().unwrap_or("Error"),
                message => self.to_string(),
            },
        )
        .unwrap_or_else(|e| Html(svg::esc(&e.to_string())));
        (status, body).into_response()
    }
}

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_filter("urlencode", |s: String| percent(&s));
    for (name, text) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("error.html", include_str!("templates/error.html")),
        ("login.html", include_str!("templates/login.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("scores.html", include_str!("templates/scores.html")),
        ("contact.html", include_str!("templates/contact.html")),
        ("pressure.html", include_str!("templates/pressure.html")),
        (
            "pressure_list.html",
            include_str!("templates/pressure_list.html"),
        ),
        ("followups.html", include_str!("templates/followups.html")),
        ("calls.html", include_str!("templates/calls.html")),
    ] {
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "dashboard template does not compile");
        }
    }
    env
});

/// Renders a page template (HTML auto-escaped; charts are passed as
/// `svg|safe`, built from escaped parts).
pub(crate) fn render(name: &str, ctx: minijinja::Value) -> Result<Html<String>, UiError> {
    TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| UiError::Internal(format!("page {name}: {e}")))
}

/// What every page's layout needs: the role, the CSRF token of its forms
/// and which page is on.
pub(crate) fn chrome(state: &ApiState, session: &Session, page: &str) -> minijinja::Value {
    let config = state.config();
    minijinja::context! {
        role => session.role.as_str(),
        can_act => session.role == Role::Admin,
        csrf => session::csrf_token(&config, &session.nonce),
        page => page,
        now => state.clock.now().format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// Refuses a form whose CSRF token is not the session's.
pub(crate) fn check_csrf(
    state: &ApiState,
    session: &Session,
    presented: &str,
    action: &str,
) -> Result<(), UiError> {
    if session::csrf_ok(&state.config(), &session.nonce, presented) {
        Ok(())
    } else {
        tracing::warn!(
            action,
            role = session.role.as_str(),
            "dashboard form refused: bad or missing CSRF token"
        );
        Err(UiError::Forbidden(
            "the form's CSRF token is missing or wrong: reload the page".into(),
        ))
    }
}

/// Refuses an action to a read-only session.
pub(crate) fn check_admin(session: &Session, action: &str) -> Result<(), UiError> {
    if session.role == Role::Admin {
        Ok(())
    } else {
        tracing::warn!(action, "dashboard action refused to a read-only session");
        Err(UiError::Forbidden(format!(
            "a read-only session cannot {action}"
        )))
    }
}

/// The dashboard's routes.
pub fn router(state: ApiState) -> Router<ApiState> {
    let pages = Router::new()
        .route("/ui/", get(pages::overview))
        .route("/ui/scores", get(pages::scores))
        .route("/ui/scores/whatif", post(pages::what_if))
        .route("/ui/contact", get(contact::page))
        .route("/ui/contact/erase", post(contact::erase))
        .route("/ui/pressure", get(pressure::page))
        .route("/ui/pressure/contacts", get(pressure::contacts))
        .route("/ui/followups", get(pages::followups))
        .route("/ui/calls", get(calls::page))
        .route("/ui/calls/outcome", post(calls::outcome))
        .route("/ui/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_page).post(login))
        .merge(pages)
        .layer(axum::middleware::map_response(security_headers))
}

/// No framing, no sniffing, no caching of pages with personal data, and a
/// policy that lets pages run no script at all.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    response
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| session::read_cookie(v, name))
}

/// Middleware: a page or action needs a valid session; without one the
/// browser goes to the login, which brings it back here.
async fn require_session(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let config = state.config();
    let now = state.clock.now();
    let found =
        cookie_value(request.headers(), COOKIE).and_then(|v| session::verify(&config, v, now));
    match found {
        Some(s) => {
            request.extensions_mut().insert(s);
            next.run(request).await
        }
        None => {
            let back = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|_| request.method() == axum::http::Method::GET)
                .unwrap_or_else(|| "/ui/".into());
            let to = format!(
                "/ui/login?next={}",
                percent(&session::local_next(Some(&back)))
            );
            Redirect::to(&to).into_response()
        }
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub(crate) fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(
    State(state): State<ApiState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, UiError> {
    login_form(&state, q.next.as_deref(), None, StatusCode::OK)
}

fn login_form(
    state: &ApiState,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let config = state.config();
    let nonce = session::nonce(&config, state.clock.now());
    let page = render(
        "login.html",
        minijinja::context! {
            csrf => session::csrf_token(&config, &nonce),
            next => session::local_next(next),
            error => error,
        },
    )?;
    let mut response = (status, page).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::cookie(&config, PRE_COOKIE, &nonce, 3600)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    let config = state.config();
    let nonce = cookie_value(&headers, PRE_COOKIE).unwrap_or_default();
    if nonce.is_empty() || !session::csrf_ok(&config, nonce, &form.csrf) {
        tracing::warn!("dashboard login refused: bad or missing CSRF token");
        return Err(UiError::Forbidden(
            "the form's CSRF token is missing or wrong: reload the login page".into(),
        ));
    }
    let Some(role) = session::role_of(&config, form.token.trim()) else {
        tracing::warn!("dashboard login refused: unknown token");
        return login_form(
            &state,
            Some(&form.next),
            Some("This token opens no session."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let now = state.clock.now();
    let value = session::open(&config, form.token.trim(), role, now);
    let max_age = i64::from(config.api.ui.session_hours) * 3600;
    tracing::info!(role = role.as_str(), "dashboard session opened");
    let mut response = Redirect::to(&session::local_next(Some(&form.next))).into_response();
    for c in [
        session::cookie(&config, COOKIE, &value, max_age),
        session::cookie(&config, PRE_COOKIE, "", 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<ApiState>,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    check_csrf(&state, &session, &form.csrf, "log out")?;
    tracing::info!(role = session.role.as_str(), "dashboard session closed");
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::cookie(&state.config(), COOKIE, "", 0)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}
