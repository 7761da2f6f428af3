//! Configuration errors: each names the file, the line, the column and what
//! was expected.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, empty for syntax errors outside any key.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with one configuration file, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigError>),
}

impl ConfigErrors {
    pub fn errors(&self) -> &[ConfigError] {
        match self {
            ConfigErrors::Read { .. } => &[],
            ConfigErrors::Invalid(v) => v,
        }
    }
}

fn render(errors: &[ConfigError]) -> String {
    let mut out = format!(
        "{} error{} in configuration:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    out
}
