//! Message templates: Jinja syntax through minijinja, compiled once when the
//! configuration loads (and again at SIGHUP), rendered by the daemon before
//! a send is handed to its plugin.
//!
//! minijinja rather than Liquid: marketers who know HubSpot's HubL already
//! write Jinja, the `default("…")` filter reads as they expect, HTML
//! templates escape every value by themselves, errors carry line and
//! column, and nothing in the language reaches the file system or the
//! network: the environment has no loader, so an `include` can only name a
//! template compiled at load, which is checked then.
//!
//! Templates come inline from `[templates.NAME]` (`subject`, `text`, `html`)
//! or from files under `[templating] dir`: `NAME/subject.txt`,
//! `NAME/text.txt`, `NAME/html.html`, and per language `NAME/fr/subject.txt`
//! … Any other file in the folder is a partial others may include by its
//! path relative to the folder.

pub mod context;

use crate::core::config::path::{Issues, KeyPath, Validate};
use crate::core::config::sections::TemplateConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Work a render may do before it is stopped (minijinja's fuel): a loop
/// over a huge range ends with an error instead of holding a worker.
const FUEL: u64 = 2_000_000;
/// Largest template file read from the folder.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Folders below `dir` that are read.
const MAX_DEPTH: usize = 4;

/// `[templating]`: where template files live and which language is sent
/// when a contact's own has no variant.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatingConfig {
    /// Folder of template files, relative to the configuration file; none
    /// by default (inline templates only).
    pub dir: Option<PathBuf>,
    /// Language variant used when the contact's `language` has none
    /// (`en`, `fr` …); then the variant without a language.
    pub default_language: Option<String>,
}

impl Validate for TemplatingConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if let Some(l) = &self.default_language
            && normalize(l).is_empty()
        {
            issues.push(
                at.key("default_language"),
                "must name a language, e.g. `fr`",
            );
        }
    }
}

/// The parts of a message, as template files name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    /// The file name of the part inside a template's folder.
    pub fn file(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "text.txt",
            Part::Html => "html.html",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }

    fn inline(self, t: &TemplateConfig) -> Option<&String> {
        match self {
            Part::Subject => t.subject.as_ref(),
            Part::Text => t.text.as_ref(),
            Part::Html => t.html.as_ref(),
        }
    }
}

/// A problem found while compiling: inline ones are placed on their TOML
/// key, file ones in their own file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateIssue {
    Inline {
        at: KeyPath,
        message: String,
    },
    File {
        file: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

/// What a template rendered for one contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub template: String,
    /// The variant chosen (`fr`, `en` …); empty for the one without a
    /// language.
    pub language: String,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Why a template could not be rendered for a contact: the send fails
/// permanently with this reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no template `{0}` in the configuration")]
    Unknown(String),
    #[error("template {name}: {message}")]
    Failed { name: String, message: String },
}

/// The compiled templates of one configuration; cheap to clone.
#[derive(Clone, Default)]
pub struct Templates(Arc<Inner>);

#[derive(Default)]
struct Inner {
    env: Environment<'static>,
    /// Template name → language ("" for none) → the parts it has.
    variants: BTreeMap<String, BTreeMap<String, BTreeSet<Part>>>,
    default_language: String,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("variants", &self.0.variants)
            .finish_non_exhaustive()
    }
}

/// `fr-FR`, `fr_fr`, ` FR ` → `fr-fr`, `fr`.
fn normalize(language: &str) -> String {
    language.trim().to_ascii_lowercase().replace('_', "-")
}

/// The environment every template is compiled in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Jinja would drop a template's last newline; `{% if %}` lines leave no
    // blank line behind.
    if let Ok(syntax) = env
        .syntax()
        .to_builder()
        .keep_trailing_newline(true)
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // `{{ company.name }}` of a contact without a company renders nothing,
    // as `{{field}}` templates did; `default(…)` applies to it.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") || name.ends_with(".htm") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // The same escaping `{{field}}` templates had, so migrated HTML
    // templates render the same bytes.
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Html)
            && !value.is_safe()
            && !value.is_undefined()
            && !value.is_none()
        {
            out.write_str(&relance_plugin_api::template::escape_html(
                &value.to_string(),
            ))
            .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "output"))
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.set_fuel(Some(FUEL));
    env
}

/// Compiles every template of the configuration: the inline ones and those
/// of the folder. Every problem is returned, with its place.
pub fn compile(
    config_file: &Path,
    templating: &TemplatingConfig,
    templates: &BTreeMap<String, TemplateConfig>,
) -> (Templates, Vec<TemplateIssue>) {
    let mut issues = Vec::new();
    let dir = templating
        .dir
        .as_ref()
        .map(|d| crate::core::config::path::resolve(config_file, d));
    let mut sources: BTreeMap<String, (String, Option<PathBuf>)> = BTreeMap::new();
    if let Some(dir) = &dir {
        read_folder(dir, dir, 0, &mut sources, &mut issues);
    }
    let root = KeyPath::root().key("templates");
    let mut variants: BTreeMap<String, BTreeMap<String, BTreeSet<Part>>> = BTreeMap::new();
    for (name, t) in templates {
        let at = root.key(name);
        let found = variants.entry(name.clone()).or_default();
        for part in Part::ALL {
            let file_name = format!("{name}/{}", part.file());
            if let Some(text) = part.inline(t) {
                if let Some((_, Some(path))) = sources.get(&file_name) {
                    issues.push(TemplateIssue::Inline {
                        at: at.key(part.key()),
                        message: format!("given both here and in {}: keep one", path.display()),
                    });
                    continue;
                }
                sources.insert(file_name, (text.clone(), None));
            }
        }
        let prefix = format!("{name}/");
        for key in sources.keys() {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let (language, file) = rest.split_once('/').unwrap_or(("", rest));
            if let Some(part) = Part::ALL.into_iter().find(|p| p.file() == file) {
                found.entry(normalize(language)).or_default().insert(part);
            }
        }
        if found.is_empty() {
            let place = dir.as_ref().map_or_else(
                || "inline (no [templating] dir is configured)".to_string(),
                |d| format!("inline or in {}", d.join(name).display()),
            );
            issues.push(TemplateIssue::Inline {
                at: at.clone(),
                message: format!("a template needs at least one of subject, text or html, {place}"),
            });
        }
    }
    let names: BTreeSet<String> = sources.keys().cloned().collect();
    let mut env = environment();
    for (name, (source, path)) in &sources {
        let place = |line: usize, column: usize, message: String| match path {
            Some(file) => TemplateIssue::File {
                file: file.clone(),
                line,
                column,
                key: format!("templates.{}", name.split('/').next().unwrap_or(name)),
                message,
            },
            None => {
                let (template, part) = name.split_once('/').unwrap_or((name, ""));
                let part = Part::ALL
                    .into_iter()
                    .find(|p| p.file() == part)
                    .map_or("", Part::key);
                TemplateIssue::Inline {
                    at: root.key(template).key(part),
                    message: format!("line {line}, column {column} of the template: {message}"),
                }
            }
        };
        if let Some((line, column, message)) = refused_reference(source, &names, &env) {
            issues.push(place(line, column, message));
            continue;
        }
        if let Err(e) = env.add_template_owned(name.clone(), source.clone()) {
            let (line, column) = position(source, &e);
            issues.push(place(line, column, describe(&e)));
        }
    }
    let inner = Inner {
        env,
        variants,
        default_language: templating
            .default_language
            .as_deref()
            .map(normalize)
            .unwrap_or_default(),
    };
    (Templates(Arc::new(inner)), issues)
}

/// Reads the template files under `dir` into `sources`, by path relative
/// to `root` with `/` separators.
fn read_folder(
    root: &Path,
    dir: &Path,
    depth: usize,
    sources: &mut BTreeMap<String, (String, Option<PathBuf>)>,
    issues: &mut Vec<TemplateIssue>,
) {
    let folder_issue = |message: String| TemplateIssue::Inline {
        at: KeyPath::root().key("templating").key("dir"),
        message,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            issues.push(folder_issue(format!("cannot read {}: {e}", dir.display())));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                read_folder(root, &path, depth + 1, sources, issues);
            }
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let name = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if meta.len() > MAX_FILE_BYTES {
            issues.push(folder_issue(format!(
                "{} is larger than {MAX_FILE_BYTES} bytes",
                path.display()
            )));
            continue;
        }
        match std::fs::read(&path).map(String::from_utf8) {
            Ok(Ok(text)) => {
                sources.insert(name, (text, Some(path)));
            }
            Ok(Err(_)) => issues.push(folder_issue(format!("{} is not UTF-8", path.display()))),
            Err(e) => issues.push(folder_issue(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// Whether `name` is a filter (or, with `test`, a test) of `env`: minijinja
/// looks them up only when a template runs, so a misspelt one would fail
/// every send instead of the load.
fn known(env: &Environment<'static>, name: &str, test: bool) -> bool {
    let probe = if test {
        format!("{{{{ none is {name} }}}}")
    } else {
        format!("{{{{ none | {name} }}}}")
    };
    match env.render_str(&probe, ()) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest
        ),
    }
}

/// The first `include`, `import`, `from` or `extends` that does not name,
/// with a literal, a template compiled from the configuration (nothing may
/// read another file, a URL, or a name computed at send time), or the
/// first unknown filter or test.
fn refused_reference(
    source: &str,
    names: &BTreeSet<String>,
    env: &Environment<'static>,
) -> Option<(usize, usize, String)> {
    use minijinja::machinery::{Token, tokenize};
    let syntax = minijinja::syntax::SyntaxConfig::default();
    let mut tokens = tokenize(source, false, syntax).peekable();
    let mut after_block_start = false;
    let mut previous_pipe = false;
    let mut previous_is = false;
    while let Some(token) = tokens.next() {
        let Ok((token, span)) = token else {
            // Syntax errors are reported by the compiler, with more detail.
            return None;
        };
        let starts = std::mem::replace(&mut after_block_start, matches!(token, Token::BlockStart));
        let pipe = std::mem::replace(&mut previous_pipe, matches!(token, Token::Pipe));
        let is = std::mem::replace(&mut previous_is, matches!(token, Token::Ident("is")));
        let Token::Ident(keyword) = token else {
            continue;
        };
        let at = (span.start_line as usize, span.start_col as usize + 1);
        if pipe && !known(env, keyword, false) {
            return Some((at.0, at.1, format!("unknown filter `{keyword}`")));
        }
        if is && keyword == "not" {
            previous_is = true;
            continue;
        }
        if is && !known(env, keyword, true) {
            return Some((at.0, at.1, format!("unknown test `{keyword}`")));
        }
        if !starts || !matches!(keyword, "include" | "import" | "from" | "extends") {
            continue;
        }
        let target = match tokens.next() {
            Some(Ok((Token::Str(s), _))) => Some(s.to_string()),
            Some(Ok((Token::String(s), _))) => Some(s.to_string()),
            _ => None,
        };
        return match target {
            Some(t) if names.contains(&t) => continue,
            Some(t) => Some((
                at.0,
                at.1,
                format!(
                    "`{keyword} \"{t}\"` is refused: templates may only {keyword} another template of the configuration's folder, by its path inside it"
                ),
            )),
            None => Some((
                at.0,
                at.1,
                format!(
                    "`{keyword}` needs the literal path of a template of the configuration's folder"
                ),
            )),
        };
    }
    None
}

/// Line and column (1-based) of a compile error in `source`.
fn position(source: &str, e: &minijinja::Error) -> (usize, usize) {
    let line = e.line().unwrap_or(1);
    let column = e.range().map_or(1, |r| {
        let start = r.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        source[line_start..start].chars().count() + 1
    });
    (line, column)
}

/// A minijinja error without its own "(in NAME:LINE)" suffix: the place is
/// reported separately.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

impl Templates {
    /// The variant a contact gets: its own language (`fr-ca`, then `fr`),
    /// the configured default, then the one without a language.
    pub fn language_for(&self, name: &str, language: Option<&str>) -> Option<String> {
        let variants = self.0.variants.get(name)?;
        let own = language.map(normalize).unwrap_or_default();
        let primary = own.split('-').next().unwrap_or_default().to_string();
        [own, primary, self.0.default_language.clone(), String::new()]
            .into_iter()
            .find(|l| variants.contains_key(l))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.variants.contains_key(name)
    }

    /// Renders template `name` for the contact's `language` with `ctx`.
    pub fn render(
        &self,
        name: &str,
        language: Option<&str>,
        ctx: &Value,
    ) -> Result<Rendered, RenderError> {
        let chosen = self
            .language_for(name, language)
            .ok_or_else(|| RenderError::Unknown(name.to_string()))?;
        let parts = self
            .0
            .variants
            .get(name)
            .and_then(|v| v.get(&chosen))
            .cloned()
            .unwrap_or_default();
        let mut out = Rendered {
            template: name.to_string(),
            language: chosen.clone(),
            ..Rendered::default()
        };
        for part in parts {
            let file = if chosen.is_empty() {
                format!("{name}/{}", part.file())
            } else {
                format!("{name}/{chosen}/{}", part.file())
            };
            let failed = |e: minijinja::Error| RenderError::Failed {
                name: file.clone(),
                message: match e.line() {
                    Some(line) => format!("line {line}: {}", describe(&e)),
                    None => describe(&e),
                },
            };
            let text = self
                .0
                .env
                .get_template(&file)
                .and_then(|t| t.render(ctx))
                .map_err(failed)?;
            match part {
                // A header holds one line.
                Part::Subject => out.subject = Some(text.trim().replace(['\r', '\n'], " ")),
                Part::Text => out.text = Some(text),
                Part::Html => out.html = Some(text),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
