//! Partial records: what one import line says about a contact, a company or
//! a deal, applied on top of what is stored.

use crate::core::model::{BusinessSignal, Company, Contact, Deal};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Contact,
    Company,
    Deal,
}

impl Kind {
    /// Typed fields; every other column or key is a free attribute.
    pub fn known_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &[
                "email",
                "phone",
                "first_name",
                "last_name",
                "company",
                "owner",
                "status",
                "tier",
                "timezone",
            ],
            Kind::Company => &["name"],
            Kind::Deal => &["name", "contact", "company", "amount", "stage"],
        }
    }

    /// Fields that hold numbers rather than text.
    pub fn is_numeric(self, field: &str) -> bool {
        self == Kind::Deal && field == "amount"
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Contact => "contact",
            Kind::Company => "company",
            Kind::Deal => "deal",
        }
    }
}

/// What one line says. Maps are merged key by key into the stored record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch {
    pub id: String,
    pub fields: Map<String, Value>,
    pub attributes: BTreeMap<String, Value>,
    pub consent: BTreeMap<String, bool>,
    pub do_not_contact: BTreeMap<String, bool>,
    pub signals: Vec<BusinessSignal>,
}

impl Patch {
    /// Applies the patch to `base` (or to an empty record with this id).
    /// Typed fields are checked here: the error names the field.
    pub fn apply<T: Record>(&self, base: Option<&T>) -> Result<T, String> {
        let mut value = match base {
            Some(b) => serde_json::to_value(b).map_err(|e| e.to_string())?,
            None => Value::Object(Map::new()),
        };
        let Value::Object(obj) = &mut value else {
            return Err("stored record is not an object".into());
        };
        obj.insert("id".into(), Value::String(self.id.clone()));
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone());
        }
        merge_map(
            obj,
            "attributes",
            self.attributes.iter().map(|(k, v)| (k.clone(), v.clone())),
        );
        merge_map(
            obj,
            "consent",
            self.consent
                .iter()
                .map(|(k, v)| (k.clone(), Value::Bool(*v))),
        );
        if !self.do_not_contact.is_empty() {
            let mut set: std::collections::BTreeSet<String> = obj
                .get("do_not_contact")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            for (channel, on) in &self.do_not_contact {
                if *on {
                    set.insert(channel.clone());
                } else {
                    set.remove(channel);
                }
            }
            obj.insert(
                "do_not_contact".into(),
                Value::Array(set.into_iter().map(Value::String).collect()),
            );
        }
        if !self.signals.is_empty() {
            let signals = obj
                .entry("signals")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = signals {
                for s in &self.signals {
                    let s = serde_json::to_value(s).map_err(|e| e.to_string())?;
                    if !list.contains(&s) {
                        list.push(s);
                    }
                }
            }
        }
        let record: T = super::typed(value)?;
        record.check()?;
        Ok(record)
    }
}

fn merge_map(
    obj: &mut Map<String, Value>,
    key: &str,
    entries: impl Iterator<Item = (String, Value)>,
) {
    let mut entries = entries.peekable();
    if entries.peek().is_none() {
        return;
    }
    let target = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(m) = target {
        for (k, v) in entries {
            if v.is_null() {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
    }
}

/// A stored record a patch applies to, with the checks serde cannot make.
pub trait Record: Serialize + DeserializeOwned + PartialEq {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Attributes accumulate over imports: the merged ones keep the limit too.
fn check_attributes(attributes: &crate::core::model::Attributes) -> Result<(), String> {
    crate::core::limits::check_entries("attributes", attributes.iter())
}

impl Record for Contact {
    fn check(&self) -> Result<(), String> {
        check_attributes(&self.attributes)?;
        if let Some(email) = &self.email {
            let ok = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
            });
            if !ok {
                return Err(format!("email: `{email}` is not an email address"));
            }
        }
        if let Some(phone) = &self.phone {
            let digits = phone.chars().filter(char::is_ascii_digit).count();
            if digits < 6
                || phone
                    .chars()
                    .any(|c| !(c.is_ascii_digit() || " +-.()".contains(c)))
            {
                return Err(format!("phone: `{phone}` is not a phone number"));
            }
        }
        Ok(())
    }
}

impl Record for Company {
    fn check(&self) -> Result<(), String> {
        check_attributes(&self.attributes)
    }
}

impl Record for Deal {
    fn check(&self) -> Result<(), String> {
        check_attributes(&self.attributes)?;
        match self.amount {
            Some(a) if !a.is_finite() || a < 0.0 => {
                Err(format!("amount: {a} is not a valid amount"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(fields: Value) -> Patch {
        let Value::Object(fields) = fields else {
            panic!()
        };
        Patch {
            id: "c1".into(),
            fields,
            ..Patch::default()
        }
    }

    #[test]
    fn applying_keeps_what_the_line_does_not_say() {
        let base: Contact = patch(json!({"email": "a@b.fr", "status": "prospect"}))
            .apply(None)
            .expect("valid");
        let mut p = patch(json!({"phone": "+33 1 23 45 67 89"}));
        p.attributes.insert("headcount".into(), json!(120));
        p.do_not_contact.insert("sms".into(), true);
        let merged: Contact = p.apply(Some(&base)).expect("valid");
        assert_eq!(merged.email.as_deref(), Some("a@b.fr"));
        assert_eq!(merged.status, crate::core::model::Status::Prospect);
        assert_eq!(merged.attributes["headcount"], json!(120));
        assert!(merged.do_not_contact.contains("sms"));
        let same: Contact = p.apply(Some(&merged)).expect("valid");
        assert_eq!(same, merged, "re-applying changes nothing");
    }

    #[test]
    fn attributes_merged_over_imports_keep_their_limit() {
        let mut base = Contact::default();
        for i in 0..3 {
            let mut p = patch(json!({}));
            p.attributes
                .insert(format!("a{i}"), json!("x".repeat(6_000)));
            match p.apply::<Contact>(Some(&base)) {
                Ok(merged) => base = merged,
                Err(e) => {
                    assert_eq!(i, 2);
                    assert!(e.starts_with("attributes: "), "{e}");
                    return;
                }
            }
        }
        panic!("the third patch goes over the limit");
    }

    #[test]
    fn bad_fields_are_named() {
        let e = patch(json!({"status": "lead"}))
            .apply::<Contact>(None)
            .unwrap_err();
        assert!(e.starts_with("status:"), "{e}");
        let e = patch(json!({"timezone": "Europe/Pariss"}))
            .apply::<Contact>(None)
            .unwrap_err();
        assert!(e.starts_with("timezone:"), "{e}");
        let e = patch(json!({"email": "not-an-email"}))
            .apply::<Contact>(None)
            .unwrap_err();
        assert!(e.starts_with("email:"), "{e}");
        let e = patch(json!({"amount": -3.0}))
            .apply::<Deal>(None)
            .unwrap_err();
        assert!(e.starts_with("amount:"), "{e}");
    }
}
