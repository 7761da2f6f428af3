//! Key paths into the configuration document (`fatigue.levels[1].from`), used
//! to point every error at a file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root to a key or an array element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    #[must_use]
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }

    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// Semantic problems found by a section's `validate`, before spans are known.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<(KeyPath, String)>);

impl Issues {
    pub fn push(&mut self, at: KeyPath, message: impl Into<String>) {
        self.0.push((at, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Implemented by every configuration section (Vector-style): the section
/// checks itself; cross-section references are checked by `Config`.
pub trait Validate {
    fn validate(&self, at: &KeyPath, issues: &mut Issues);
}

/// `path` relative to the folder of `config_file` unless absolute.
pub fn resolve(config_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    config_file
        .parent()
        .map_or_else(|| path.to_path_buf(), |dir| dir.join(path))
}
