//! The plugin request of an outbox row: the contact, its score, the
//! follow-up, and the message rendered from its template with the
//! tracking links. The dispatcher sends it; a preview shows it.

use crate::core::model::{Company, Contact, Timestamp};
use crate::domain::outbox::Row;
use crate::domain::scoring::StoredScore;
use crate::pipeline::config::Config;
use relance_plugin_api::message::{self, Action, DeliverRequest};

/// The request for `row`; `Err` is why it cannot be sent (a template that
/// fails for this contact): a permanent failure.
pub fn deliver_request(
    config: &Config,
    row: &Row,
    contact: &Contact,
    company: Option<&Company>,
    score: Option<&StoredScore>,
    now: Timestamp,
) -> Result<DeliverRequest, String> {
    let call_task = config.followups.calls.channels.contains(&row.channel);
    let mut vars = serde_json::Map::new();
    vars.insert("followup".into(), row.followup.clone().into());
    vars.insert("kind".into(), row.kind.as_str().into());
    // The plugin interface speaks JSON: the payload's fields go as values.
    let p = &row.payload;
    let fields = [
        ("owner", p.owner.as_ref().map(|o| serde_json::json!(o))),
        ("deadline", p.deadline.map(|d| serde_json::json!(d))),
        (
            "occurrence",
            p.occurrence.as_ref().map(|o| serde_json::json!(o)),
        ),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            vars.insert(key.into(), v);
        }
    }
    // Emails carry signed open and click links and a one-click unsubscribe
    // URL when the API that answers them is on.
    let is_email = config
        .channels
        .get(&row.channel)
        .is_some_and(|c| c.plugin == "email");
    let tracked = is_email && config.api.enabled && !config.api.public_url.is_empty();
    if tracked {
        let unsubscribe = crate::core::links::unsubscribe_link(
            &config.api.public_url,
            &row.idem_key,
            &row.contact,
            &row.channel,
            &config.api.tracking_secret,
        );
        vars.insert("unsubscribe_url".into(), unsubscribe.into());
    }
    let mut request = DeliverRequest {
        idempotency_key: row.idem_key.clone(),
        now,
        attempt: row.attempts.max(1),
        channel: row.channel.clone(),
        action: if call_task {
            Action::CallTask
        } else {
            Action::Message
        },
        contact: plugin_contact(contact, company),
        message: message::Message::default(),
        score: score.map(|s| message::ScoreInfo {
            score: s.score as f64 / 100.0,
            band: s.band.clone(),
        }),
        vars,
    };
    let template = row.payload.template.as_deref();
    if let Some(name) = template.filter(|n| config.compiled_templates.contains(n)) {
        let ctx = crate::domain::templates::context::build(&request);
        let language = crate::domain::templates::context::language(&request.contact);
        let rendered = config
            .compiled_templates
            .render(name, language, &ctx)
            .map_err(|e| e.to_string())?;
        request.message = message::Message {
            template: Some(name.to_string()),
            rendered: true,
            language: (!rendered.language.is_empty()).then_some(rendered.language),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        if tracked {
            crate::core::links::decorate(
                &mut request.message,
                &config.api.public_url,
                &row.idem_key,
                &row.contact,
                &row.channel,
                &config.api.tracking_secret,
            );
        }
    }
    Ok(request)
}

/// The contact as plugins receive it.
pub fn plugin_contact(c: &Contact, company: Option<&Company>) -> message::Contact {
    let map = |a: &crate::core::model::Attributes| {
        a.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    message::Contact {
        id: c.id.clone(),
        email: c.email.clone(),
        phone: c.phone.clone(),
        first_name: c.first_name.clone(),
        last_name: c.last_name.clone(),
        owner: c.owner.clone(),
        status: Some(c.status.as_str().to_string()),
        company: company.map(|co| message::Company {
            id: co.id.clone(),
            name: co.name.clone(),
            attributes: map(&co.attributes),
        }),
        attributes: map(&c.attributes),
    }
}
