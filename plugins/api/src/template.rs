//! `{{field}}` templates, rendered by plugins with the contact's fields.
//!
//! Deliberately tiny: no logic, no escaping rules beyond HTML bodies, so a
//! sales-ops person can predict the output from the template alone.

use crate::message::DeliverRequest;
use serde_json::Value;
use std::borrow::Cow;

/// Renders `template`; unknown fields render as nothing. With `html`, field
/// values are escaped (the template text itself is trusted).
pub fn render(template: &str, request: &DeliverRequest, html: bool) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let value = field(request, after[..end].trim()).unwrap_or_default();
        if html {
            out.push_str(&escape_html(&value));
        } else {
            out.push_str(&value);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Which part of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Subject,
    Text,
    Html,
}

/// A part of the request's message, ready to send: as the host rendered it
/// (`message.rendered`), or rendered here from its `{{field}}` placeholders.
pub fn part(request: &DeliverRequest, part: Part) -> Option<String> {
    part_cow(request, part).map(Cow::into_owned)
}

/// [`part`], borrowed from the request when the host rendered it.
pub fn part_cow(request: &DeliverRequest, part: Part) -> Option<Cow<'_, str>> {
    let m = &request.message;
    let (text, html) = match part {
        Part::Subject => (m.subject.as_deref()?, false),
        Part::Text => (m.text.as_deref()?, false),
        Part::Html => (m.html.as_deref()?, true),
    };
    Some(if m.rendered {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(render(text, request, html))
    })
}

/// The value of one placeholder.
pub fn field(request: &DeliverRequest, name: &str) -> Option<String> {
    let c = &request.contact;
    let text = |v: &Option<String>| v.clone();
    match name {
        "id" | "contact.id" => Some(c.id.clone()),
        "email" => text(&c.email),
        "phone" => text(&c.phone),
        "first_name" => text(&c.first_name),
        "last_name" => text(&c.last_name),
        "owner" => text(&c.owner),
        "status" => text(&c.status),
        "company.id" => c.company.as_ref().map(|co| co.id.clone()),
        "company.name" => c.company.as_ref().and_then(|co| co.name.clone()),
        "score" => request.score.as_ref().map(|s| s.score.to_string()),
        "band" => request.score.as_ref().map(|s| s.band.clone()),
        _ => {
            if let Some(key) = name.strip_prefix("company.") {
                return c
                    .company
                    .as_ref()
                    .and_then(|co| co.attributes.get(key))
                    .map(plain);
            }
            request
                .vars
                .get(name)
                .or_else(|| c.attributes.get(name))
                .map(plain)
        }
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Company, Contact, DeliverRequest};

    #[test]
    fn renders_contact_and_company_fields() {
        let req = DeliverRequest {
            idempotency_key: "k".into(),
            now: chrono::DateTime::UNIX_EPOCH,
            attempt: 1,
            channel: "email".into(),
            action: Default::default(),
            contact: Contact {
                id: "c1".into(),
                first_name: Some("Ana <b>".into()),
                company: Some(Company {
                    id: "co".into(),
                    name: Some("Acme".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            message: Default::default(),
            score: None,
            vars: Default::default(),
        };
        assert_eq!(
            render("{{first_name}}, {{ company.name }}{{x}}!", &req, false),
            "Ana <b>, Acme!"
        );
        assert_eq!(
            render("<p>{{first_name}}</p>", &req, true),
            "<p>Ana &lt;b&gt;</p>"
        );
        assert_eq!(render("open {{ end", &req, false), "open {{ end");
    }
}
