//! The README's settings table and TOML example stay in step with `--help` and the file
//! parser: every long flag of every subcommand that takes settings is in the table, and every
//! key the parser accepts is in both the table and the example (and nothing else is).

use std::collections::BTreeSet;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_proxify");

fn readme() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    std::fs::read_to_string(root.join("README.md")).unwrap()
}

/// The README's settings table: the lines between its header and the first blank line.
fn table(readme: &str) -> String {
    let start = readme
        .find("| flag | environment | file key | what |")
        .expect("README has the settings table");
    let rest = &readme[start..];
    rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
}

fn long_flags(sub: &str) -> BTreeSet<String> {
    let out = Command::new(BIN).args([sub, "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split([' ', ',', '=', '<', '[']) {
            let word = word.trim_end_matches('.');
            if word.len() > 2 && word.starts_with("--") && word != "--help" {
                flags.insert(word.to_string());
            }
        }
    }
    flags
}

/// The top-level keys the file parser accepts, from its own "expected one of" message.
fn parser_keys() -> BTreeSet<String> {
    let dir = std::env::temp_dir().join(format!("proxify-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("k.toml");
    std::fs::write(&f, "no_such_key_for_the_listing = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "-f"])
        .arg(&f)
        .env("XDG_CONFIG_HOME", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8(out.stderr).unwrap();
    let list = err
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in: {err}"));
    list.split(',')
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// The top-level keys of the README's TOML example (`key = ...` and `[[key]]` lines).
fn example_keys(readme: &str) -> BTreeSet<String> {
    let start = readme
        .find("```toml\n")
        .expect("README has the TOML example")
        + 8;
    let block = &readme[start..];
    let block = &block[..block.find("```").unwrap()];
    let mut keys = BTreeSet::new();
    let mut in_table = false;
    for line in block.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            keys.insert(t.to_string());
            in_table = true;
        } else if !in_table {
            if let Some((k, _)) = line.split_once('=') {
                if !line.starts_with('#') {
                    keys.insert(k.trim().to_string());
                }
            }
        }
    }
    keys
}

#[test]
fn every_flag_is_in_the_readme_table() {
    let readme = readme();
    let table = table(&readme);
    let mut missing = Vec::new();
    for sub in ["run", "config", "shell", "env"] {
        for flag in long_flags(sub) {
            if !table.contains(&format!("`{flag}")) && !table.contains(&format!(", {flag}")) {
                missing.push(format!("{sub} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags missing from README's settings table: {missing:?}"
    );
}

#[test]
fn every_file_key_is_documented_and_every_documented_key_is_accepted() {
    let readme = readme();
    let table = table(&readme);
    let accepted = parser_keys();
    assert!(
        accepted.contains("proxy") && accepted.contains("rule"),
        "{accepted:?}"
    );
    let example = example_keys(&readme);
    assert_eq!(
        example, accepted,
        "README's TOML example vs the keys the parser accepts"
    );
    let undocumented: Vec<_> = accepted
        .iter()
        .filter(|k| !table.contains(&format!("`{k}`")) && !table.contains(&format!("`[[{k}]]")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "file keys missing from README's table: {undocumented:?}"
    );
}

#[test]
fn the_man_page_has_every_flag() {
    let out = Command::new(BIN).arg("man").output().unwrap();
    let man = String::from_utf8(out.stdout).unwrap().replace("\\-", "-");
    for sub in ["run", "config", "check", "shell", "env"] {
        for flag in long_flags(sub) {
            assert!(man.contains(&flag), "man page lacks {sub} {flag}");
        }
    }
}
