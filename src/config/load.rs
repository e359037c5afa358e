//! Reading a config file: text → document → [`Config`] → validated, with every error located.
//!
//! The text is parsed twice: once into toml's spanned document (for locating errors) and once by
//! serde into the typed config. Config loads once per process; clarity beats the extra parse.

use std::ops::Range;
use std::path::Path;

use toml::de::DeTable;

use super::locate::{self, KeyPath};
use super::validate::{self, Invalid};
use super::{Config, ConfigError};

pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read config file: {e}"),
    })?;
    parse(&text, &file)
}

pub(super) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| toml_error(&e, text, file, None))?;
    let doc = doc.get_ref();
    let semantic = |inv: Invalid| semantic_error(inv, doc, text, file);
    validate::route_actions(doc).map_err(semantic)?;
    let mut config: Config =
        toml::from_str(text).map_err(|e| toml_error(&e, text, file, Some(doc)))?;
    validate::normalize(&mut config);
    validate::validate(&config).map_err(semantic)?;
    Ok(config)
}

/// A syntax or deserialisation error from toml: it knows its span; the key comes from the document.
fn toml_error(
    e: &toml::de::Error,
    text: &str,
    file: &str,
    doc: Option<&DeTable<'_>>,
) -> ConfigError {
    let span = e.span();
    let key = match (doc, &span) {
        (Some(doc), Some(span)) => locate::path_at(doc, span.start),
        _ => None,
    };
    let mut message = e.message().trim_end().to_owned();
    if message.starts_with("invalid type: map, expected a sequence")
        && let Some(table) = key.as_ref().and_then(array_of_tables)
    {
        message.push_str(&format!(
            "; write `[[{table}]]` (an array of tables), not `[{table}]`"
        ));
    }
    located(file, text, span, key, message)
}

/// The header of the array of tables at `key`, if `key` is one (`[[upstream]]`, `[[route]]`,
/// `[[route.fanout.call]]`): writing `[route]` for `[[route]]` is the classic slip.
fn array_of_tables(key: &KeyPath) -> Option<&'static str> {
    let key = key.to_string();
    match key.as_str() {
        "upstream" => Some("upstream"),
        "route" => Some("route"),
        k if k.starts_with("route[") && k.ends_with("].fanout.call") => Some("route.fanout.call"),
        _ => None,
    }
}

/// A validation error: it knows its key; the span comes from the document.
fn semantic_error(inv: Invalid, doc: &DeTable<'_>, text: &str, file: &str) -> ConfigError {
    let (path, span) = match (locate::span_of(doc, &inv.path), inv.or_else) {
        (None, Some(alt)) => {
            let span = locate::span_of(doc, &alt);
            (alt, span)
        }
        (span, _) => (inv.path, span),
    };
    located(file, text, span, Some(path), inv.message)
}

fn located(
    file: &str,
    text: &str,
    span: Option<Range<usize>>,
    key: Option<KeyPath>,
    message: String,
) -> ConfigError {
    let (line, column) = match span {
        Some(span) => {
            let (l, c) = locate::line_col(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError {
        file: file.to_owned(),
        line,
        column,
        key: key.filter(|k| !k.is_root()).map(|k| k.to_string()),
        message,
    }
}
