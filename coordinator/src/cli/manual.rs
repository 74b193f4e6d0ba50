//! `ocore manpage`: the manual page, generated from the clap definitions like `--help` and
//! the completions. clap_mangen renders the top-level page; every subcommand's full help
//! follows in its own section, so the one installed page (`ocore.1`) documents every
//! command and flag.

use clap::Command;

use super::CliError;

/// Roff for `command` and all its subcommands.
pub fn render(command: Command) -> Result<Vec<u8>, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(|e| CliError::Local(format!("cannot render the manual page: {e}")))?;
    let mut command = command;
    command.build();
    for sub in command.get_subcommands() {
        section(&mut page, sub, "ocore");
    }
    Ok(page)
}

fn section(page: &mut Vec<u8>, command: &Command, parent: &str) {
    if command.is_hide_set() || command.get_name() == "help" {
        return;
    }
    let name = format!("{parent} {}", command.get_name());
    let mut command = command.clone().bin_name(&name);
    let help = command.render_long_help().to_string();
    page.extend_from_slice(format!(".SH \"{}\"\n.nf\n", name.to_uppercase()).as_bytes());
    for line in help.lines() {
        page.extend_from_slice(escape(line).as_bytes());
        page.push(b'\n');
    }
    page.extend_from_slice(b".fi\n");
    for sub in command.get_subcommands() {
        section(page, sub, &name);
    }
}

/// Text as roff shows it literally: backslashes doubled, control characters at line
/// start neutralised.
fn escape(line: &str) -> String {
    let text = line.replace('\\', "\\e");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_section_with_its_flags() -> Result<(), CliError> {
        let page = String::from_utf8_lossy(&render(
            <super::super::Cli as clap::CommandFactory>::command(),
        )?)
        .into_owned();
        for heading in [
            ".SH \"OCORE DEPLOY ROLLBACK\"",
            ".SH \"OCORE SNAPSHOT EXPORT\"",
            ".SH \"OCORE LOGIN\"",
            ".SH \"OCORE TOKEN CREATE\"",
        ] {
            assert!(page.contains(heading), "missing {heading}");
        }
        assert!(page.contains("--yes") && page.contains("--dry-run"));
        assert!(
            !page.contains(".SH \"OCORE MANPAGE\""),
            "hidden commands stay out"
        );
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("a\\b"), "a\\eb");
        Ok(())
    }
}
