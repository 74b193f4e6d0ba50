//! Reading `__manifest__.py`: a tolerant parser for the Python literal Odoo evaluates with
//! `ast.literal_eval`, and the few keys the stand-in acts on.
//!
//! Real manifests carry comments, license headers, triple-quoted descriptions, adjacent string
//! concatenation, nested dicts (`assets`, `external_dependencies`) and trailing commas, so the
//! parser accepts the full literal grammar rather than guessing with string matching.

use std::fmt;

/// The Odoo series this stand-in impersonates.
pub const SERIE: &str = "17.0";

/// A Python literal as found in a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    /// Numbers are kept as written; no manifest key the stand-in reads is numeric.
    Num(String),
    Bool(bool),
    None,
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// Python truthiness, used for `installable` and `auto_install`.
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Num(n) => n
                .trim_start_matches(['+', '-'])
                .chars()
                .any(|c| c.is_ascii_digit() && c != '0'),
            Value::Bool(b) => *b,
            Value::None => false,
            Value::List(items) => !items.is_empty(),
            Value::Dict(items) => !items.is_empty(),
        }
    }
}

/// When a module installs itself: never, once all its dependencies are installed, or once the
/// listed subset of them is (Odoo ≥ 16 accepts a list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoInstall {
    No,
    All,
    When(Vec<String>),
}

/// The manifest keys the stand-in uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The human-readable name (`'name'`), not the technical module name.
    pub name: String,
    /// The version as written in the manifest.
    pub version: String,
    pub depends: Vec<String>,
    pub installable: bool,
    pub auto_install: AutoInstall,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ManifestError {}

/// Parses a manifest's text and extracts the keys the stand-in uses, with Odoo's defaults.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let value = parse_literal(text)?;
    let Value::Dict(entries) = value else {
        return Err(ManifestError {
            line: 1,
            column: 1,
            message: "manifest is not a dict".to_string(),
        });
    };
    let get = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    };
    let shape_error = |key: &str, expected: &str| ManifestError {
        line: 1,
        column: 1,
        message: format!("manifest key '{key}' must be {expected}"),
    };

    let name = match get("name") {
        Some(Value::Str(s)) => s.clone(),
        Some(_) => return Err(shape_error("name", "a string")),
        None => String::new(),
    };
    let version = match get("version") {
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Num(n)) => n.clone(),
        Some(_) => return Err(shape_error("version", "a string")),
        None => "1.0".to_string(),
    };
    let depends = match get("depends") {
        Some(value) => {
            string_list(value).ok_or_else(|| shape_error("depends", "a list of strings"))?
        }
        None => Vec::new(),
    };
    let installable = get("installable").is_none_or(Value::truthy);
    let auto_install = match get("auto_install") {
        Some(value @ Value::List(_)) => AutoInstall::When(
            string_list(value)
                .ok_or_else(|| shape_error("auto_install", "a boolean or a list of strings"))?,
        ),
        Some(value) if value.truthy() => AutoInstall::All,
        _ => AutoInstall::No,
    };
    Ok(Manifest {
        name,
        version,
        depends,
        installable,
        auto_install,
    })
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::List(items) => items
            .iter()
            .map(|item| match item {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Normalises a manifest version as Odoo 17 does: prefix the series unless it is already there,
/// then require `x.y` or `x.y.z` after the series.
pub fn adapt_version(version: &str) -> Result<String, String> {
    let full = if version == SERIE || !version.starts_with(&format!("{SERIE}.")) {
        format!("{SERIE}.{version}")
    } else {
        version.to_string()
    };
    let rest = &full[SERIE.len() + 1..];
    let parts: Vec<&str> = rest.split('.').collect();
    let valid = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if valid {
        Ok(full)
    } else {
        Err(format!(
            "Invalid version '{version}'. Modules should have a version in format `x.y`, `x.y.z`, `{SERIE}.x.y` or `{SERIE}.x.y.z`."
        ))
    }
}

/// Parses one Python literal, allowing comments and whitespace around it.
pub fn parse_literal(text: &str) -> Result<Value, ManifestError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    parser.skip_blank();
    let value = parser.value()?;
    parser.skip_blank();
    if parser.pos < parser.chars.len() {
        return Err(parser.error("unexpected text after the manifest dict"));
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

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn error(&self, message: &str) -> ManifestError {
        let before = &self.chars[..self.pos.min(self.chars.len())];
        let line = before.iter().filter(|c| **c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
        ManifestError {
            line,
            column,
            message: message.to_string(),
        }
    }

    /// Skips whitespace, newlines, comments and explicit line continuations.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '#' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if c == '\\' && matches!(self.peek_at(1), Some('\n')) {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn value(&mut self) -> Result<Value, ManifestError> {
        self.skip_blank();
        match self.peek() {
            None => Err(self.error("unexpected end of manifest")),
            Some('{') => self.dict(),
            Some('[') => self.sequence('[', ']').map(Value::List),
            Some('(') => self.parenthesised(),
            Some(c) if c == '"' || c == '\'' || self.at_string_prefix() => self.strings(),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => Ok(self.number()),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let word = self.word();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::None),
                    _ => Err(self.error(&format!("'{word}' is not a literal"))),
                }
            }
            Some(c) => Err(self.error(&format!("unexpected character '{c}'"))),
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn number(&mut self) -> Value {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        {
            // A sign is part of the number only at its start or right after an exponent.
            if matches!(self.peek(), Some('+' | '-'))
                && self.pos != start
                && !matches!(self.chars.get(self.pos - 1), Some('e' | 'E'))
            {
                break;
            }
            self.pos += 1;
        }
        Value::Num(self.chars[start..self.pos].iter().collect())
    }

    fn at_string_prefix(&self) -> bool {
        let mut offset = 0;
        while let Some(c) = self.peek_at(offset) {
            if matches!(c.to_ascii_lowercase(), 'r' | 'u' | 'b') && offset < 2 {
                offset += 1;
            } else {
                return offset > 0 && (c == '"' || c == '\'');
            }
        }
        false
    }

    /// One string literal or several adjacent ones, which Python concatenates.
    fn strings(&mut self) -> Result<Value, ManifestError> {
        let mut out = self.string()?;
        loop {
            let save = self.pos;
            self.skip_blank();
            if matches!(self.peek(), Some('"' | '\'')) || self.at_string_prefix() {
                out.push_str(&self.string()?);
            } else {
                self.pos = save;
                return Ok(Value::Str(out));
            }
        }
    }

    fn string(&mut self) -> Result<String, ManifestError> {
        let mut raw = false;
        while let Some(c) = self.peek() {
            match c.to_ascii_lowercase() {
                'r' => raw = true,
                'u' | 'b' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let Some(quote) = self.peek() else {
            return Err(self.error("unexpected end of manifest in a string"));
        };
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            if c == quote
                && (!triple || (self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote)))
            {
                self.pos += if triple { 3 } else { 1 };
                return Ok(out);
            }
            if c == '\n' && !triple {
                return Err(self.error("end of line in a string"));
            }
            if c == '\\' {
                let Some(next) = self.peek_at(1) else {
                    return Err(self.error("unterminated string"));
                };
                self.pos += 2;
                if raw {
                    out.push('\\');
                    out.push(next);
                    continue;
                }
                match next {
                    '\n' => {}
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    '\\' | '\'' | '"' => out.push(next),
                    'x' | 'u' | 'U' => {
                        let len = match next {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let digits: String = self.chars[self.pos..].iter().take(len).collect();
                        let decoded = u32::from_str_radix(&digits, 16)
                            .ok()
                            .filter(|_| digits.len() == len)
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.error("invalid escape in a string"))?;
                        out.push(decoded);
                        self.pos += len;
                    }
                    // Python keeps unknown escapes as written.
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                continue;
            }
            out.push(c);
            self.pos += 1;
        }
    }

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
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.error(&format!("expected ',' or '{close}'"))),
            }
        }
    }

    /// `(x)` is just `x`; `(x,)` and `(x, y)` are tuples, kept as lists.
    fn parenthesised(&mut self) -> Result<Value, ManifestError> {
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
                        Some(')') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return Err(self.error("expected ',' or ')'")),
                    }
                }
            }
            _ => Err(self.error("expected ',' or ')'")),
        }
    }

    fn dict(&mut self) -> Result<Value, ManifestError> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_blank();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(Value::Dict(entries));
            }
            let key = self.value()?;
            self.skip_blank();
            if self.peek() != Some(':') {
                // `{'a', 'b'}` is a set; keep it as a list like tuples.
                return self.set_rest(key);
            }
            self.pos += 1;
            let value = self.value()?;
            entries.push((key, value));
            self.skip_blank();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    return Ok(Value::Dict(entries));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn set_rest(&mut self, first: Value) -> Result<Value, ManifestError> {
        let mut items = vec![first];
        loop {
            self.skip_blank();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                Some(',') => {
                    self.pos += 1;
                    self.skip_blank();
                    if self.peek() == Some('}') {
                        continue;
                    }
                    items.push(self.value()?);
                }
                _ => return Err(self.error("expected ':', ',' or '}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_typical_oca_manifest() {
        let text = r#"# Copyright 2024 Someone
# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
{
    "name": "Sale Order Type",
    'version': "17.0.1.2.0",  # bumped
    "summary": "Types " "for " 'sale orders',
    "depends": ["sale", 'account',],
    "data": [
        "security/ir.model.access.csv",
    ],
    "assets": {"web.assets_backend": ["sale_order_type/static/src/**/*"]},
    "external_dependencies": {"python": ["requests>=2"]},
    "description": """
Multi-line "quoted" text
with 'quotes'
""",
    "license": "AGPL-3",
    "installable": True,
    "application": False,
    "sequence": 10,
}
"#;
        let manifest = parse(text).expect("manifest parses");
        assert_eq!(manifest.name, "Sale Order Type");
        assert_eq!(manifest.version, "17.0.1.2.0");
        assert_eq!(manifest.depends, vec!["sale", "account"]);
        assert!(manifest.installable);
        assert_eq!(manifest.auto_install, AutoInstall::No);
    }

    #[test]
    fn applies_odoo_defaults() {
        let manifest = parse("{'name': 'Bare'}").expect("manifest parses");
        assert_eq!(manifest.version, "1.0");
        assert!(manifest.depends.is_empty());
        assert!(manifest.installable);
    }

    #[test]
    fn reads_installable_and_auto_install_forms() {
        let manifest = parse("{'installable': False, 'auto_install': True}").expect("parses");
        assert!(!manifest.installable);
        assert_eq!(manifest.auto_install, AutoInstall::All);
        let manifest = parse("{'depends': ('a', 'b'), 'auto_install': ['a']}").expect("parses");
        assert_eq!(manifest.depends, vec!["a", "b"]);
        assert_eq!(
            manifest.auto_install,
            AutoInstall::When(vec!["a".to_string()])
        );
    }

    #[test]
    fn decodes_escapes_and_raw_strings() {
        assert_eq!(
            parse_literal(r#"'a\'b\n\x41\u00e9'"#).expect("parses"),
            Value::Str("a'b\nA\u{e9}".to_string())
        );
        assert_eq!(
            parse_literal(r#"r'\d+'"#).expect("parses"),
            Value::Str("\\d+".to_string())
        );
        assert_eq!(
            parse_literal("{1: -2.5e+3, 'x': None, 's': {'a', 'b',}}").expect("parses"),
            Value::Dict(vec![
                (Value::Num("1".into()), Value::Num("-2.5e+3".into())),
                (Value::Str("x".into()), Value::None),
                (
                    Value::Str("s".into()),
                    Value::List(vec![Value::Str("a".into()), Value::Str("b".into())])
                ),
            ])
        );
    }

    #[test]
    fn reports_where_a_manifest_is_broken() {
        let err = parse("{\n  'name': 'x',\n  'depends': ['a' 'b'\n}").expect_err("broken");
        assert_eq!(err.line, 4);
        let err = parse("{'name': foo}").expect_err("not a literal");
        assert!(err.message.contains("'foo' is not a literal"), "{err}");
        let err = parse("['a']").expect_err("not a dict");
        assert_eq!(err.message, "manifest is not a dict");
        let err = parse("{'depends': 'base'}").expect_err("depends is a string");
        assert!(err.message.contains("depends"), "{err}");
        assert!(parse("{'name': 'x'").is_err());
        assert!(parse("{'name': 'x'} junk").is_err());
    }

    #[test]
    fn adapts_versions_like_odoo_17() {
        assert_eq!(adapt_version("1.0").as_deref(), Ok("17.0.1.0"));
        assert_eq!(adapt_version("1.2.3").as_deref(), Ok("17.0.1.2.3"));
        assert_eq!(adapt_version("17.0.1.0.0").as_deref(), Ok("17.0.1.0.0"));
        assert_eq!(adapt_version("17.0.2.1").as_deref(), Ok("17.0.2.1"));
        assert!(adapt_version("18.0.1.0.0").is_err());
        assert!(adapt_version("1.0.0.1").is_err());
        assert!(adapt_version("1").is_err());
        assert!(adapt_version("1.x").is_err());
        // Odoo prefixes a bare series too, which then reads as `x.y`.
        assert_eq!(adapt_version("17.0").as_deref(), Ok("17.0.17.0"));
    }
}
