//! How the CLI prints: JSON for scripts (`--output json`: the API's own JSON, pretty
//! printed), aligned tables for people (status columns coloured on a terminal).

use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Prints rows under a header with columns padded to the widest cell; cells whose text
/// is a known status are coloured when stdout is a terminal.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let style = super::term::Style::stdout();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>, colour: bool| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let padded = format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0));
                match super::term::status_color(c) {
                    Some(color) if colour => style.paint(color, &padded),
                    _ => padded,
                }
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect(), false);
    for row in rows {
        line(row.clone(), true);
    }
}

/// A string field, or "-" when absent.
pub fn field(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
