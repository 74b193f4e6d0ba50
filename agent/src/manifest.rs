//! Odoo module manifests (`__manifest__.py`): the Python literal Odoo reads with
//! `ast.literal_eval`, and what the agent needs from it (version, dependencies,
//! installability), plus Odoo's rule for the version it records (`adapt_version`).

use std::collections::BTreeMap;
use std::path::Path;

/// The manifest facts the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version as written (Odoo's default is `1.0`).
    pub version: String,
    pub depends: Vec<String>,
    pub installable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// A Python literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// Python truthiness, as Odoo's `manifest.get('installable', True)` is used.
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Bool(b) => *b,
            Value::None => false,
            Value::List(l) => !l.is_empty(),
            Value::Dict(d) => !d.is_empty(),
        }
    }
}

/// Reads and parses the manifest of the module folder `dir`.
pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
    let path = dir.join("__manifest__.py");
    let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ManifestError::Syntax { line, message, .. } => ManifestError::Syntax {
            path: path.display().to_string(),
            line,
            message,
        },
        ManifestError::Invalid { message, .. } => ManifestError::Invalid {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// Parses manifest text.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let value = parse_literal(text)?;
    let Value::Dict(entries) = value else {
        return Err(invalid("the manifest is not a dict"));
    };
    let mut map = BTreeMap::new();
    for (k, v) in entries {
        if let Value::Str(k) = k {
            map.insert(k, v);
        }
    }
    let version = match map.get("version") {
        None => "1.0".to_owned(),
        Some(Value::Str(v)) => v.clone(),
        Some(other) => return Err(invalid(&format!("version {other:?} is not a string"))),
    };
    let depends = match map.get("depends") {
        None => Vec::new(),
        Some(Value::List(items)) => items
            .iter()
            .map(|i| match i {
                Value::Str(s) => Ok(s.clone()),
                other => Err(invalid(&format!("dependency {other:?} is not a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid(&format!("depends {other:?} is not a list"))),
    };
    let installable = map.get("installable").is_none_or(Value::truthy);
    Ok(Manifest {
        version,
        depends,
        installable,
    })
}

fn invalid(message: &str) -> ManifestError {
    ManifestError::Invalid {
        path: "__manifest__.py".to_owned(),
        message: message.to_owned(),
    }
}

/// The version Odoo records for a module of series `serie` (`17.0`): `1.0` becomes
/// `17.0.1.0`, `17.0.1.0.0` stays; anything else is refused as Odoo refuses it
/// (`odoo/modules/module.py`, `adapt_version`).
pub fn adapt_version(serie: &str, version: &str) -> Result<String, String> {
    let prefix = format!("{serie}.");
    let (full, base) = if version == serie || !version.starts_with(&prefix) {
        (format!("{serie}.{version}"), version.to_owned())
    } else {
        (version.to_owned(), version[prefix.len()..].to_owned())
    };
    let parts: Vec<&str> = base.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if numeric && (2..=3).contains(&parts.len()) {
        Ok(full)
    } else {
        Err(format!(
            "invalid version {base:?}: modules should have a version in format x.y, x.y.z, {serie}.x.y or {serie}.x.y.z"
        ))
    }
}

/// Parses one Python literal (what `ast.literal_eval` accepts that manifests use: dicts,
/// lists, tuples, sets, strings with implicit concatenation, numbers, booleans, None),
/// surrounded by blanks and comments.
pub fn parse_literal(text: &str) -> Result<Value, ManifestError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    p.skip_blank();
    let value = p.value()?;
    p.skip_blank();
    if p.pos < p.chars.len() {
        return Err(p.error("unexpected text after the literal"));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error(&self, message: &str) -> ManifestError {
        let line = self.chars[..self.pos.min(self.chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count()
            + 1;
        ManifestError::Syntax {
            path: "__manifest__.py".to_owned(),
            line,
            message: message.to_owned(),
        }
    }

    /// Skips whitespace, comments and backslash line continuations.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if c == '\\' && self.chars.get(self.pos + 1) == Some(&'\n') {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn value(&mut self) -> Result<Value, ManifestError> {
        self.skip_blank();
        match self.peek() {
            None => Err(self.error("unexpected end of the manifest")),
            Some('{') => self.dict_or_set(),
            Some('[') => self.sequence('[', ']').map(Value::List),
            Some('(') => self.parenthesized(),
            Some('-' | '+') | Some('0'..='9') | Some('.') => self.number(),
            Some(c) if c == '"' || c == '\'' || self.at_string_prefix() => self.strings(),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let word = self.word();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::None),
                    _ => Err(self.error(&format!("{word:?} is not a literal"))),
                }
            }
            Some(c) => Err(self.error(&format!("unexpected character {c:?}"))),
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn at_string_prefix(&self) -> bool {
        let mut i = self.pos;
        while i < self.chars.len() && i < self.pos + 2 && "rRuUbBfF".contains(self.chars[i]) {
            i += 1;
        }
        i > self.pos && matches!(self.chars.get(i), Some('"' | '\''))
    }

    fn number(&mut self) -> Result<Value, ManifestError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        text.parse::<f64>()
            .map(Value::Float)
            .map_err(|_| self.error(&format!("{text:?} is not a number")))
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Result<Value, ManifestError> {
        let mut out = String::new();
        loop {
            self.skip_blank();
            let is_string = matches!(self.peek(), Some('"' | '\'')) || self.at_string_prefix();
            if !is_string {
                break;
            }
            let mut raw = false;
            while let Some(c) = self.peek().filter(|c| "rRuUbBfF".contains(*c)) {
                raw |= c == 'r' || c == 'R';
                self.pos += 1;
            }
            out.push_str(&self.string(raw)?);
        }
        Ok(Value::Str(out))
    }

    fn string(&mut self, raw: bool) -> Result<String, ManifestError> {
        let quote = self.peek().ok_or_else(|| self.error("expected a string"))?;
        let triple = self.chars.get(self.pos + 1) == Some(&quote)
            && self.chars.get(self.pos + 2) == Some(&quote);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            if triple {
                if c == quote
                    && self.chars.get(self.pos + 1) == Some(&quote)
                    && self.chars.get(self.pos + 2) == Some(&quote)
                {
                    self.pos += 3;
                    return Ok(out);
                }
            } else if c == quote {
                self.pos += 1;
                return Ok(out);
            } else if c == '\n' {
                return Err(self.error("unterminated string"));
            }
            self.pos += 1;
            if c == '\\' {
                let Some(next) = self.peek() else {
                    return Err(self.error("unterminated string"));
                };
                self.pos += 1;
                if raw {
                    out.push('\\');
                    out.push(next);
                    continue;
                }
                match next {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    '\n' => {}
                    '\\' | '\'' | '"' => out.push(next),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            } else {
                out.push(c);
            }
        }
    }

    /// Items up to `close`, comma-separated, a trailing comma allowed.
    fn sequence(&mut self, open: char, close: char) -> Result<Vec<Value>, ManifestError> {
        debug_assert_eq!(self.peek(), Some(open));
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.value()?);
            self.skip_blank();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => return Err(self.error(&format!("expected ',' or '{close}'"))),
            }
        }
    }

    /// `(a)` is `a`; `(a,)` and `(a, b)` are tuples, kept as lists.
    fn parenthesized(&mut self) -> Result<Value, ManifestError> {
        self.pos += 1;
        self.skip_blank();
        if self.peek() == Some(')') {
            self.pos += 1;
            return Ok(Value::List(Vec::new()));
        }
        let first = self.value()?;
        self.skip_blank();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                Ok(first)
            }
            Some(',') => {
                self.pos += 1;
                let mut items = vec![first];
                loop {
                    self.skip_blank();
                    if self.peek() == Some(')') {
                        self.pos += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value()?);
                    self.skip_blank();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {}
                        _ => return Err(self.error("expected ',' or ')'")),
                    }
                }
            }
            _ => Err(self.error("expected ',' or ')'")),
        }
    }

    fn dict_or_set(&mut self) -> Result<Value, ManifestError> {
        self.pos += 1;
        let mut entries = Vec::new();
        let mut set = Vec::new();
        loop {
            self.skip_blank();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(if set.is_empty() {
                    Value::Dict(entries)
                } else {
                    Value::List(set)
                });
            }
            let key = self.value()?;
            self.skip_blank();
            if self.peek() == Some(':') && set.is_empty() {
                self.pos += 1;
                let value = self.value()?;
                entries.push((key, value));
            } else if entries.is_empty() {
                set.push(key);
            } else {
                return Err(self.error("expected ':'"));
            }
            self.skip_blank();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_oca_manifest() -> Result<(), ManifestError> {
        let text = r#"# Copyright 2015 ABF OSIELL <https://osiell.com>
# License AGPL-3.0 or later (http://www.gnu.org/licenses/agpl).
{
    "name": "Audit Log",
    "version": "17.0.1.1.1",
    "author": "ABF OSIELL, Odoo Community Association (OCA)",
    "license": "AGPL-3",
    "website": "https://github.com/OCA/server-tools",
    "category": "Tools",
    "depends": ["base"],
    "data": [
        "security/ir.model.access.csv",
        "data/ir_cron.xml",
    ],
    "application": True,
    "installable": True,
    'summary': 'one ' 'two',
    "external_dependencies": {"python": ("a", "b")},
    "sequence": -1,
}
"#;
        let m = parse(text)?;
        assert_eq!(m.version, "17.0.1.1.1");
        assert_eq!(m.depends, ["base"]);
        assert!(m.installable);
        if let Value::Dict(entries) = parse_literal(text)? {
            assert!(entries.contains(&(Value::Str("summary".into()), Value::Str("one two".into()))));
        }
        Ok(())
    }

    #[test]
    fn defaults_and_installable() -> Result<(), ManifestError> {
        let m = parse("{'name': 'x'}")?;
        assert_eq!(m.version, "1.0");
        assert!(m.depends.is_empty());
        assert!(m.installable);
        assert!(!parse("{'installable': False}")?.installable);
        assert!(parse("[1]").is_err());
        assert!(parse("{'version': 1.0}").is_err());
        assert!(parse("{'a': b}").is_err());
        assert!(parse("{'a': 'unterminated}").is_err());
        Ok(())
    }

    #[test]
    fn versions_are_adapted_as_odoo_does() {
        assert_eq!(adapt_version("17.0", "1.0").as_deref(), Ok("17.0.1.0"));
        assert_eq!(adapt_version("17.0", "1.0.3").as_deref(), Ok("17.0.1.0.3"));
        assert_eq!(
            adapt_version("17.0", "17.0.1.2.0").as_deref(),
            Ok("17.0.1.2.0")
        );
        assert_eq!(adapt_version("18.0", "18.0.1.0").as_deref(), Ok("18.0.1.0"));
        assert!(adapt_version("17.0", "18.0.1.0.0").is_err());
        assert!(adapt_version("17.0", "1").is_err());
        assert!(adapt_version("17.0", "1.x").is_err());
    }
}
