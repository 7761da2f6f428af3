//! What a contact would receive now from a template: the message the
//! dispatcher would hand to the channel's plugin, tracking links included.
//! Reads only.
//!
//! When the contact has a send of this template waiting in the outbox, the
//! preview is that send (same follow-up, same idempotency key, so the same
//! signed links); otherwise a send made up for the preview.

use crate::core::model::{Contact, FollowUpKind, Timestamp};
use crate::domain::outbox::{Payload, Row, State};
use crate::pipeline::config::Config;
use crate::ports::store::{Store, StoreError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no template `{0}` in the configuration")]
    UnknownTemplate(String),
    #[error("no contact `{0}`")]
    UnknownContact(String),
    #[error("template `{template}` cannot be rendered for contact `{contact}`: {reason}")]
    Render {
        template: String,
        contact: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A rendered message, as `relance template preview --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub template: String,
    pub contact: String,
    pub channel: String,
    /// The language variant rendered; null for the one without a language.
    pub language: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The follow-up the message belongs to (`preview` when made up).
    pub followup: String,
    pub idempotency_key: String,
    /// True when it is a send waiting in the outbox.
    pub pending: bool,
    /// The one-click unsubscribe URL the email carries, when tracked.
    pub unsubscribe_url: Option<String>,
}

/// Renders template `name` for contact `id` at `now`.
pub fn preview(
    config: &Config,
    store: &dyn Store,
    name: &str,
    id: &str,
    now: Timestamp,
) -> Result<Preview, PreviewError> {
    let Some(template) = config.templates.get(name) else {
        return Err(PreviewError::UnknownTemplate(name.to_string()));
    };
    let contact: Contact = store
        .contact(id)?
        .ok_or_else(|| PreviewError::UnknownContact(id.to_string()))?;
    let company = match &contact.company {
        Some(c) => store.company(c)?,
        None => None,
    };
    let score = store.stored_score(id)?;
    let pending = store
        .pending_of(id)?
        .into_iter()
        .find(|r| r.payload.template.as_deref() == Some(name));
    let from_outbox = pending.is_some();
    let row = pending.unwrap_or_else(|| Row {
        seq: 0,
        idem_key: format!("preview:{name}:{id}"),
        contact: id.to_string(),
        followup: "preview".into(),
        kind: FollowUpKind::Systematic,
        priority: 0,
        channel: template.channel.clone(),
        state: State::Planned,
        due_at: now,
        first_due: now,
        attempts: 0,
        lease_until: None,
        payload: Payload::template(name),
        last_error: None,
        updated_at: now,
    });
    let request = crate::pipeline::request::deliver_request(
        config,
        &row,
        &contact,
        company.as_ref(),
        score.as_ref(),
        now,
    )
    .map_err(|reason| PreviewError::Render {
        template: name.to_string(),
        contact: id.to_string(),
        reason,
    })?;
    let unsubscribe_url = request
        .vars
        .get("unsubscribe_url")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let m = request.message;
    Ok(Preview {
        template: name.to_string(),
        contact: id.to_string(),
        channel: row.channel,
        language: m.language,
        subject: m.subject,
        text: m.text,
        html: m.html,
        followup: row.followup,
        idempotency_key: row.idem_key,
        pending: from_outbox,
        unsubscribe_url,
    })
}
