//! `proxify completions SHELL` and `proxify man`: generated from the clap definitions
//! (`Cli::command()`), so they never drift from `--help`. Only these subcommands use
//! clap_complete and clap_mangen.

use crate::cli::{Cli, Shell};
use clap::CommandFactory;

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let sh = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(sh, &mut cmd, "proxify", &mut out);
    out
}

/// The lines roff (clap_mangen's `roff` crate) starts every piece of output with, to define
/// the apostrophe string; the page needs them once.
fn is_preamble(line: &str) -> bool {
    line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq")
}

/// Renders one section of `man` into roff text, without the preamble.
fn section(
    man: &clap_mangen::Man,
    f: fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>,
) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = f(man, &mut buf);
    let mut out = String::new();
    for line in String::from_utf8_lossy(&buf).lines() {
        if !is_preamble(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The preamble, once.
fn preamble(man: &clap_mangen::Man) -> String {
    let mut buf = Vec::new();
    let _ = man.render_title(&mut buf);
    let mut out = String::new();
    for line in String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| is_preamble(l))
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `.SH TITLE` lines become `.SS` (sub-sections of a subcommand's section), renamed by `name`.
fn demote(roff: &str, name: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(roff.len());
    for line in roff.lines() {
        match line.strip_prefix(".SH ") {
            Some(title) => {
                out.push_str(".SS ");
                out.push_str(&name(title.trim_matches('"')));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The text of a section kept as written (the help texts are laid out by hand: lists and
/// examples must not be filled into paragraphs).
fn verbatim(roff: &str) -> String {
    let mut lines = roff.lines();
    let mut out = String::new();
    if let Some(head) = lines.next() {
        out.push_str(head);
        out.push('\n');
    }
    out.push_str(".nf\n");
    for line in lines {
        // clap_mangen marks blank lines of the text as paragraph breaks.
        if line == ".PP" {
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(".fi\n");
    out
}

/// The manual page (roff, section 1): proxify, then a section per subcommand with its
/// synopsis, description, options and examples.
pub fn man_page() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = preamble(&man);
    page.push_str(&section(&man, clap_mangen::Man::render_title));
    page.push_str(&section(&man, clap_mangen::Man::render_name_section));
    page.push_str(&section(&man, clap_mangen::Man::render_synopsis_section));
    page.push_str(&verbatim(&section(
        &man,
        clap_mangen::Man::render_description_section,
    )));
    page.push_str(&section(&man, clap_mangen::Man::render_options_section));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let full = format!("proxify {}", sub.get_name());
        let m = clap_mangen::Man::new(sub.clone().bin_name(&full));
        page.push_str(&format!(".SH \"{}\"\n", full.to_uppercase()));
        if let Some(about) = sub.get_about() {
            // The same escaping clap_mangen applies to text lines.
            page.push_str(&roff_text(&about.to_string()));
        }
        page.push_str(&demote(
            &section(&m, clap_mangen::Man::render_synopsis_section),
            |t| t.to_string(),
        ));
        page.push_str(&demote(
            &verbatim(&section(&m, clap_mangen::Man::render_description_section)),
            |t| t.to_string(),
        ));
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.push_str(&demote(
                &section(&m, clap_mangen::Man::render_options_section),
                |t| t.to_string(),
            ));
        }
        if sub.get_after_long_help().is_some() || sub.get_after_help().is_some() {
            page.push_str(&demote(
                &verbatim(&section(&m, clap_mangen::Man::render_extra_section)),
                |_| "EXAMPLES".to_string(),
            ));
        }
    }
    page.push_str(&verbatim(&section(
        &man,
        clap_mangen::Man::render_extra_section,
    )));
    page.push_str(&section(&man, clap_mangen::Man::render_version_section));
    // The top-level text after the options holds the examples.
    page.replacen(".SH EXTRA", ".SH EXAMPLES", 1)
}

/// One line of plain text for roff: backslashes doubled, a leading `.` or `'` protected.
fn roff_text(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let line = line.replace('\\', "\\\\");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_helpers() {
        assert_eq!(roff_text(".x\\y\n'z"), "\\&.x\\\\y\n\\&'z\n");
        assert_eq!(
            demote(".SH SYNOPSIS\ntext\n", |t| format!("[{t}]")),
            ".SS [SYNOPSIS]\ntext\n"
        );
        assert_eq!(verbatim(".SH X\na\n.PP\nb\n"), ".SH X\n.nf\na\n\nb\n.fi\n");
    }

    #[test]
    fn man_page_has_every_subcommand_and_examples() {
        let p = man_page();
        assert!(p.contains("\n.TH proxify 1 "), "{}", &p[..80]);
        // The preamble once, then the title.
        assert_eq!(p.matches(".ds Aq").count(), 2);
        assert!(p.lines().nth(2).unwrap().starts_with(".TH "));
        // No-fill blocks start right after their heading (a heading would end them).
        for (i, _) in p.lines().enumerate().filter(|(_, l)| *l == ".nf") {
            let prev = p.lines().nth(i - 1).unwrap();
            assert!(
                prev.starts_with(".SH ") || prev.starts_with(".SS "),
                "{prev}"
            );
        }
        for sub in [
            "RUN",
            "CONFIG",
            "CHECK",
            "COMPLETIONS",
            "MAN",
            "SHELL",
            "ENV",
            "TRACE",
        ] {
            assert!(p.contains(&format!(".SH \"PROXIFY {sub}\"")), "{sub}");
        }
        assert_eq!(p.matches(".SS EXAMPLES").count(), 8);
        assert!(p.contains(".SH EXAMPLES"));
        assert!(!p.contains(".SH EXTRA") && !p.contains(".SS EXTRA"));
        // Balanced no-fill blocks.
        assert_eq!(p.matches("\n.nf\n").count(), p.matches("\n.fi\n").count());
    }

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(completions(shell)).unwrap();
            for sub in [
                "run",
                "config",
                "check",
                "completions",
                "man",
                "shell",
                "env",
                "trace",
            ] {
                assert!(text.contains(sub), "{shell:?} {sub}");
            }
            assert!(text.contains("require"), "{shell:?}");
            assert!(text.contains("pipeline"), "{shell:?}");
        }
    }
}
