//! Reading one configuration document: its syntax, `${VAR}` interpolation
//! and unknown sections first, then each section deserialized and checked
//! on its own, so that one bad section does not hide the problems of the
//! others. The whole configuration (`pipeline::config::Config`) is
//! assembled above, from sections that live with the layer they configure.

use super::document::{self, Span, line_col, locate, path_at};
use super::error::{ConfigError, ConfigErrors};
use super::path::{Issues, KeyPath, Seg, Validate};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A parsed document and the problems found in it so far.
#[derive(Debug)]
pub struct Document<'a> {
    root: Spanned<DeTable<'a>>,
    errors: Errors<'a>,
}

/// Where problems are collected, with what locates them.
#[derive(Debug)]
struct Errors<'a> {
    text: &'a str,
    file: &'a Path,
    list: Vec<ConfigError>,
}

impl<'a> Document<'a> {
    /// Parses `text` as if read from `file`, with `env` for `${VAR}`. Syntax
    /// errors end the reading; interpolation errors and top-level keys not
    /// in `sections` are recorded and the reading goes on.
    pub fn parse(
        text: &'a str,
        file: &'a Path,
        env: &dyn Fn(&str) -> Option<String>,
        sections: &[&str],
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Errors {
            text,
            file,
            list: Vec::new(),
        };
        let (mut root, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            errors.at_span(
                e.span().unwrap_or(0..0),
                String::new(),
                e.message().to_string(),
            );
        }
        if !errors.list.is_empty() {
            return Err(errors.finish());
        }
        let mut interpolation = Vec::new();
        document::interpolate(root.get_mut(), env, &mut interpolation);
        for e in interpolation {
            let key = path_at(&root, &e.span).to_string();
            errors.at_span(e.span, key, e.message);
        }
        for (key, _) in root.get_ref().iter() {
            if !sections.contains(&key.get_ref().as_ref()) {
                errors.at_span(
                    key.span(),
                    key.get_ref().to_string(),
                    format!("unknown section, expected one of: {}", sections.join(", ")),
                );
            }
        }
        Ok(Self { root, errors })
    }

    /// Deserializes one section (its default when absent), then lets it
    /// validate itself. `None` when it could not be read.
    pub fn section<T>(&mut self, name: &str) -> Option<T>
    where
        T: DeserializeOwned + Default + Validate,
    {
        let at = KeyPath::root().key(name);
        match self
            .root
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == name)
        {
            None => Some(T::default()),
            Some((_, value)) => self.errors.item(&self.root, value, at),
        }
    }

    /// A table of named items (`[channels.email]`, `[channels.crm]` …): each
    /// item is read on its own, so one bad item does not hide the others.
    pub fn named<T>(&mut self, name: &str) -> Option<BTreeMap<String, T>>
    where
        T: DeserializeOwned + Validate,
    {
        let at = KeyPath::root().key(name);
        let Some((_, value)) = self
            .root
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == name)
        else {
            return Some(BTreeMap::new());
        };
        let DeValue::Table(table) = value.get_ref() else {
            self.errors.at_span(
                value.span(),
                at.to_string(),
                format!("`{name}` must be a table of named entries"),
            );
            return None;
        };
        let mut items = Some(BTreeMap::new());
        for (key, value) in table.iter() {
            let item = self
                .errors
                .item(&self.root, value, at.key(key.get_ref().as_ref()));
            match (&mut items, item) {
                (Some(map), Some(item)) => {
                    map.insert(key.get_ref().to_string(), item);
                }
                _ => items = None,
            }
        }
        items
    }

    /// Records problems found by checks across sections, each at the key
    /// its path names.
    pub fn issues(&mut self, issues: Issues) {
        self.errors.issues(&self.root, issues);
    }

    /// Records a problem found elsewhere (a template file's line).
    pub fn push(&mut self, error: ConfigError) {
        self.errors.list.push(error);
    }

    pub fn is_clean(&self) -> bool {
        self.errors.list.is_empty()
    }

    /// Every problem recorded, in the order of the file.
    pub fn finish(self) -> ConfigErrors {
        self.errors.finish()
    }
}

impl Errors<'_> {
    fn at_span(&mut self, span: Span, key: String, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message,
        });
    }

    fn issues(&mut self, root: &Spanned<DeTable<'_>>, issues: Issues) {
        for (path, message) in issues.0 {
            let at = locate(root, &path);
            self.at_span(at.value, path.to_string(), message);
        }
    }

    /// Deserializes one value, collecting every unknown key and the first
    /// type error, then runs the value's own checks.
    fn item<T>(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        value: &Spanned<DeValue<'_>>,
        at: KeyPath,
    ) -> Option<T>
    where
        T: DeserializeOwned + Validate,
    {
        let mut unknown: Vec<KeyPath> = Vec::new();
        let deserializer = toml::de::ValueDeserializer::from(value.clone());
        let result: Result<T, _> = serde_ignored::deserialize(deserializer, |p| {
            unknown.push(at_path(&at, &p));
        });
        for path in unknown {
            let located = locate(root, &path);
            self.at_span(
                located.key.unwrap_or(located.value),
                path.to_string(),
                "unknown key".into(),
            );
        }
        match result {
            Ok(item) => {
                let mut issues = Issues::default();
                item.validate(&at, &mut issues);
                self.issues(root, issues);
                Some(item)
            }
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let key = path_at(root, &span).to_string();
                self.at_span(span, key, e.message().to_string());
                None
            }
        }
    }

    fn finish(mut self) -> ConfigErrors {
        self.list.sort_by_key(|e| (e.line, e.column));
        self.list.dedup();
        ConfigErrors::Invalid(self.list)
    }
}

fn at_path(base: &KeyPath, p: &serde_ignored::Path<'_>) -> KeyPath {
    fn push(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
        use serde_ignored::Path as P;
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                push(parent, out);
                out.push(Seg::Index(*index));
            }
            P::Map { parent, key } => {
                push(parent, out);
                out.push(Seg::Key(key.clone()));
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                push(parent, out);
            }
        }
    }
    let mut path = base.clone();
    push(p, &mut path.0);
    path
}
