//! `proxify shell` (the user's `$SHELL`, every command in it proxied) and `proxify env` (the
//! `export` lines that proxify the current shell: `eval "$(proxify env -x URL)"`, undone by
//! `eval "$(proxify env --off)"`).
//!
//! `proxify shell` is `proxify run -- $SHELL` with a marker in the prompt where the shell
//! lets us set it without touching the user's files: bash (an rc file that sources
//! `~/.bashrc`, then prefixes `PS1`, given as `--rcfile /dev/fd/N` from a memfd that the rc
//! file closes again), and shells that take `PS1` from the environment (sh, dash, ksh). Every
//! shell also gets `PROXIFY_SHELL=1`, for prompts of other shells.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The prompt marker.
pub const MARKER: &str = "(proxify) ";
pub const ENV_SHELL: &str = "PROXIFY_SHELL";

/// The variables `proxify env --off` unsets, beyond LD_PRELOAD.
pub fn off_lines(names: &[&str], ld_preload: Option<&OsStr>, shim_name: &str) -> String {
    let mut out = String::new();
    for n in names {
        out.push_str(&format!("unset {n}\n"));
    }
    // LD_PRELOAD without our shim; unset when nothing else is left.
    let rest: Vec<&[u8]> = ld_preload
        .map(|v| {
            v.as_bytes()
                .split(|b| matches!(b, b':' | b' '))
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    Path::new(OsStr::from_bytes(p)).file_name() != Some(OsStr::new(shim_name))
                })
                .collect()
        })
        .unwrap_or_default();
    if rest.is_empty() {
        out.push_str("unset LD_PRELOAD\n");
    } else {
        let joined = rest.join(&b':');
        out.push_str(&format!(
            "export LD_PRELOAD={}\n",
            quote(OsStr::from_bytes(&joined))
        ));
    }
    out
}

/// `export NAME=VALUE` / `unset NAME` lines for `vars`.
pub fn export_lines(vars: &[(String, Option<OsString>)]) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        match v {
            Some(v) => out.push_str(&format!("export {k}={}\n", quote(v))),
            None => out.push_str(&format!("unset {k}\n")),
        }
    }
    out
}

/// POSIX shell single-quoting (bash, zsh, dash, ksh and fish all read it back as one word).
pub fn quote(v: &OsStr) -> String {
    let s = v.to_string_lossy();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:,=@+%".contains(&b))
    {
        return s.into_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What `proxify shell` runs: the argument vector and extra environment. `rc_fd` is a file
/// descriptor (inherited, not close-on-exec) holding bash's rc file, when the shell is bash.
pub struct ShellPlan {
    pub argv: Vec<OsString>,
    pub env: Vec<(&'static str, OsString)>,
    /// For bash: the rc file's text, to put in an inheritable memfd named by `--rcfile`.
    pub bash_rc: Option<String>,
}

/// The shell to run: `$SHELL`, else /bin/sh.
pub fn plan(shell: Option<&OsStr>) -> ShellPlan {
    let shell: OsString = shell
        .filter(|s| !s.is_empty())
        .map(OsString::from)
        .unwrap_or_else(|| "/bin/sh".into());
    let base = Path::new(&shell)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut env = vec![(ENV_SHELL, OsString::from("1"))];
    let marker_ps1 = |ps1: Option<OsString>| {
        let old = ps1
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "$ ".into());
        OsString::from(format!("{MARKER}{}", old.trim_start_matches(MARKER)))
    };
    match base.as_str() {
        "bash" => ShellPlan {
            argv: vec![shell],
            env,
            bash_rc: Some(format!(
                "[ -f ~/.bashrc ] && . ~/.bashrc\n\
                 PS1=\"{MARKER}${{PS1#\"{MARKER}\"}}\"\n"
            )),
        },
        "sh" | "dash" | "ksh" | "mksh" | "ash" | "busybox" => {
            env.push(("PS1", marker_ps1(std::env::var_os("PS1"))));
            ShellPlan {
                argv: vec![shell],
                env,
                bash_rc: None,
            }
        }
        _ => ShellPlan {
            argv: vec![shell],
            env,
            bash_rc: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("socks5h://p:1080")), "socks5h://p:1080");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), "'it'\\''s'");
        assert_eq!(quote(OsStr::new("")), "''");
        assert_eq!(quote(OsStr::new("x\ny")), "'x\ny'");
    }

    #[test]
    fn off_keeps_other_preloads() {
        let t = off_lines(
            &["PROXIFY_PROXY"],
            Some(OsStr::new("/a/libproxify.so")),
            "libproxify.so",
        );
        assert_eq!(t, "unset PROXIFY_PROXY\nunset LD_PRELOAD\n");
        let t = off_lines(
            &[],
            Some(OsStr::new("/a/libproxify.so:/b/libx.so /c/liby.so")),
            "libproxify.so",
        );
        assert_eq!(t, "export LD_PRELOAD=/b/libx.so:/c/liby.so\n");
        assert_eq!(off_lines(&[], None, "libproxify.so"), "unset LD_PRELOAD\n");
    }

    #[test]
    fn shells() {
        let p = plan(Some(OsStr::new("/bin/bash")));
        assert!(p.bash_rc.unwrap().contains(". ~/.bashrc"));
        let p = plan(Some(OsStr::new("/bin/dash")));
        assert!(p
            .env
            .iter()
            .any(|(k, v)| *k == "PS1" && v.to_string_lossy().starts_with(MARKER)));
        let p = plan(None);
        assert_eq!(p.argv, vec![OsString::from("/bin/sh")]);
        let p = plan(Some(OsStr::new("/usr/bin/fish")));
        assert!(p.env.iter().any(|(k, _)| *k == ENV_SHELL));
    }
}
