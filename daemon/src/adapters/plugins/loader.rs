//! Loading a plugin's shared library: only from the plugin folder, only with
//! the pinned content, only with a table this relance understands.
#![allow(unsafe_code)]

use crate::core::config::PluginFile;
use relance_plugin_api::Manifest;
use relance_plugin_api::abi::{ENTRY_SYMBOL, EntryFn};
use relance_plugin_api::host::{Table, TableError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Why a plugin was refused at load. Every variant names the plugin and
/// the file, and says which check failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "plugin `{plugin}`: no such plugin (not built in, and no [plugins.load.{plugin}] entry)"
    )]
    Unknown { plugin: String },
    #[error("plugin `{plugin}`: the plugin directory {dir} is unusable: {source}")]
    Dir {
        plugin: String,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: cannot read {file}: {source}")]
    Read {
        plugin: String,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: refused: {file} is outside the plugin directory {dir}")]
    OutsideDir {
        plugin: String,
        file: PathBuf,
        dir: PathBuf,
    },
    #[error(
        "plugin `{plugin}`: refused: {file} has sha256 {found}, but the configuration pins {expected}"
    )]
    Sha256 {
        plugin: String,
        file: PathBuf,
        expected: String,
        found: String,
    },
    #[error("plugin `{plugin}`: cannot load {file} as a shared library: {source}")]
    Open {
        plugin: String,
        file: PathBuf,
        source: libloading::Error,
    },
    #[error(
        "plugin `{plugin}`: {file} is not a loadable relance plugin: it exports no `{ENTRY_SYMBOL}` symbol{}",
        if *.builtin {
            " (this plugin is built into relance: remove [plugins.load.PLUGIN] to use it; \
             the .so files cargo leaves in target/ are not loadable, a loadable copy is \
             built with `cargo build -p relance-plugin-PLUGIN --features export`)"
                .replace("PLUGIN", plugin)
        } else {
            " (a plugin library is built with its `export` feature; see docs/plugins.md)".to_owned()
        }
    )]
    NoEntry {
        plugin: String,
        file: PathBuf,
        /// A plugin relance also has built in (email, webhook, crm).
        builtin: bool,
    },
    #[error("plugin `{plugin}`: refused: {file}: {source}")]
    Table {
        plugin: String,
        file: PathBuf,
        source: TableError,
    },
    #[error("plugin `{plugin}`: refused: {file} calls itself `{found}`")]
    Name {
        plugin: String,
        file: PathBuf,
        found: String,
    },
}

/// Loads `spec` from `dir` for the plugin `name`. The library is never
/// unloaded: its code may still run on an abandoned (hung) thread.
pub fn load(dir: &Path, name: &str, spec: &PluginFile) -> Result<(Table, Manifest), LoadError> {
    let dir = dir.canonicalize().map_err(|source| LoadError::Dir {
        plugin: name.into(),
        dir: dir.to_path_buf(),
        source,
    })?;
    let joined = dir.join(&spec.file);
    // Canonicalizing resolves `..` and symbolic links, so a link inside the
    // folder that points outside it is refused too.
    let file = joined.canonicalize().map_err(|source| LoadError::Read {
        plugin: name.into(),
        file: joined.clone(),
        source,
    })?;
    if !file.starts_with(&dir) || file.parent() != Some(dir.as_path()) {
        return Err(LoadError::OutsideDir {
            plugin: name.into(),
            file,
            dir,
        });
    }
    if let Some(expected) = &spec.sha256 {
        let bytes = std::fs::read(&file).map_err(|source| LoadError::Read {
            plugin: name.into(),
            file: file.clone(),
            source,
        })?;
        let found = hex::encode(Sha256::digest(&bytes));
        if !found.eq_ignore_ascii_case(expected) {
            return Err(LoadError::Sha256 {
                plugin: name.into(),
                file,
                expected: expected.to_ascii_lowercase(),
                found,
            });
        }
    }
    // SAFETY: loading runs the library's initializers. The file is the one
    // the operator put in the plugin folder, with the pinned content.
    let library = unsafe { libloading::Library::new(&file) }.map_err(|source| LoadError::Open {
        plugin: name.into(),
        file: file.clone(),
        source,
    })?;
    // SAFETY: the symbol's type is fixed by the ABI.
    let entry: EntryFn = match unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) } {
        Ok(sym) => *sym,
        Err(_) => {
            return Err(LoadError::NoEntry {
                plugin: name.into(),
                file,
                builtin: super::builtin_names().iter().any(|b| b == name),
            });
        }
    };
    // Plugins are never unloaded: their code and static data stay mapped.
    std::mem::forget(library);
    // SAFETY: the entry point takes nothing and returns a pointer to a
    // static table; the library stays loaded forever.
    let (table, manifest) =
        unsafe { Table::from_raw(entry()) }.map_err(|source| LoadError::Table {
            plugin: name.into(),
            file: file.clone(),
            source,
        })?;
    if manifest.name != name {
        return Err(LoadError::Name {
            plugin: name.into(),
            file,
            found: manifest.name,
        });
    }
    Ok((table, manifest))
}
