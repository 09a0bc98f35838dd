//! `proxify run`'s exec of the command: what `std::process::Command::exec` does with an
//! environment of changes, without building the whole environment anew. std copies every
//! variable into a map of its own (two allocations each), then into a C string each; here
//! the inherited `NAME=VALUE` strings are passed as they are and only the changed ones are
//! made. The result is the same: the variables of `environ` (an entry without `=` after its
//! first byte is left out, and of a name given twice the last one counts), with the changes
//! applied in order (set or removed), sorted by name; then, as std does, SIGPIPE back to its
//! default disposition, `environ` set to the new environment and `execvp` (the search path
//! is the new environment's `PATH`), `environ` restored when it fails.
//!
//! Size: ~170 lines, ~90 of them unit tests.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

extern "C" {
    /// The C library's environment (NULL-terminated `NAME=VALUE` strings).
    static mut environ: *const *const libc::c_char;
}

/// std's message for a NUL byte in the program, an argument or a variable.
const NUL_MESSAGE: &str = "nul byte found in provided data";

/// The environment: `inherited` (`NAME=VALUE` entries, as in `environ`) with `changes` applied
/// in order, sorted by name. `Err` when a changed variable contains a NUL byte.
fn environment<'e>(
    inherited: impl Iterator<Item = &'e CStr>,
    changes: &[(&str, Option<&OsStr>)],
) -> Result<Vec<Cow<'e, CStr>>, ()> {
    let mut vars: BTreeMap<&[u8], Cow<'e, CStr>> = BTreeMap::new();
    for entry in inherited {
        let bytes = entry.to_bytes();
        // As std's `vars_os` (and glibc) read it: a name is never empty, so it may start
        // with '='; an entry without a '=' after that is skipped.
        let Some(eq) = bytes
            .get(1..)
            .and_then(|b| b.iter().position(|&c| c == b'='))
        else {
            continue;
        };
        vars.insert(&bytes[..eq + 1], Cow::Borrowed(entry));
    }
    for (name, value) in changes {
        match value {
            Some(v) => {
                let mut item = Vec::with_capacity(name.len() + 1 + v.len());
                item.extend_from_slice(name.as_bytes());
                item.push(b'=');
                item.extend_from_slice(v.as_bytes());
                let item = CString::new(item).map_err(|_| ())?;
                vars.insert(name.as_bytes(), Cow::Owned(item));
            }
            None => {
                vars.remove(name.as_bytes());
            }
        }
    }
    Ok(vars.into_values().collect())
}

/// The `NAME=VALUE` strings of this process's environment.
fn inherited() -> impl Iterator<Item = &'static CStr> {
    // SAFETY: `environ` is the C library's NULL-terminated array of NUL-terminated strings;
    // this process is single-threaded here and changes no variable until the exec, so the
    // array and its strings stay as they are while they are read and passed on.
    let mut at = unsafe { environ };
    std::iter::from_fn(move || {
        if at.is_null() {
            return None;
        }
        // SAFETY: `at` points into the array, whose end is a NULL entry (not passed).
        let entry = unsafe { *at };
        if entry.is_null() {
            return None;
        }
        // SAFETY: the next entry exists (at most the terminating NULL).
        at = unsafe { at.add(1) };
        // SAFETY: an entry of `environ` is a NUL-terminated string that outlives the exec.
        Some(unsafe { CStr::from_ptr(entry) })
    })
}

/// Runs `program` (found through `PATH` as `execvp` finds it) with `args` after it and the
/// environment changed by `changes`; returns only on failure.
pub(crate) fn exec(
    program: &OsStr,
    args: &[OsString],
    changes: &[(&str, Option<&OsStr>)],
) -> io::Error {
    let nul = || io::Error::new(io::ErrorKind::InvalidInput, NUL_MESSAGE);
    let Ok(envp) = environment(inherited(), changes) else {
        return nul();
    };
    let Ok(argv) = std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<CString>, _>>()
    else {
        return nul();
    };
    let mut envp: Vec<*const libc::c_char> = envp.iter().map(|v| v.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut argp: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions (std's exec does
    // the same: the command starts with SIGPIPE's default, not the SIG_IGN set in `main`).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // SAFETY: single-threaded; `envp` and its strings (the inherited ones and those in the
    // vector above) outlive the exec, and `environ` gets its previous value back when the
    // exec fails, before either is dropped. `argp` is NULL-terminated, its strings live on.
    unsafe {
        let previous = environ;
        environ = envp.as_ptr();
        libc::execvp(argp[0], argp.as_ptr());
        let err = io::Error::last_os_error();
        environ = previous;
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(entries: &[&str], changes: &[(&str, Option<&str>)]) -> Result<Vec<String>, ()> {
        let owned: Vec<CString> = entries.iter().map(|e| CString::new(*e).unwrap()).collect();
        let changes: Vec<(&str, Option<&OsStr>)> = changes
            .iter()
            .map(|(k, v)| (*k, v.map(OsStr::new)))
            .collect();
        environment(owned.iter().map(CString::as_c_str), &changes)
            .map(|v| v.iter().map(|c| c.to_str().unwrap().to_string()).collect())
    }

    #[test]
    fn changes_apply_in_order_and_names_are_sorted() {
        assert_eq!(
            env(
                &[
                    "PATH=/bin",
                    "HOME=/root",
                    "PROXIFY_X=old",
                    "LD_PRELOAD=/a.so"
                ],
                &[
                    ("PROXIFY_X", None),
                    ("LD_PRELOAD", Some("/s.so:/a.so")),
                    ("PROXIFY_NEW", Some("1")),
                    ("PROXIFY_GONE", None),
                    ("PROXIFY_X", Some("again")),
                ]
            )
            .unwrap(),
            [
                "HOME=/root",
                "LD_PRELOAD=/s.so:/a.so",
                "PATH=/bin",
                "PROXIFY_NEW=1",
                "PROXIFY_X=again",
            ]
        );
        // A value may be empty, and contain '='.
        assert_eq!(
            env(&[], &[("A", Some("")), ("B", Some("x=y"))]).unwrap(),
            ["A=", "B=x=y"]
        );
    }

    #[test]
    fn inherited_entries_are_read_as_std_reads_them() {
        // The last of a name given twice counts; entries without '=' after the first byte
        // are left out; a name may start with '='; empty values stay.
        assert_eq!(
            env(
                &["A=1", "B", "", "=x=2", "A=3", "C=", "=", "D==4"],
                &[("E", Some("5"))]
            )
            .unwrap(),
            ["=x=2", "A=3", "C=", "D==4", "E=5"]
        );
        // The same as std's own reading of this process's environment.
        let ours: Vec<(OsString, OsString)> = environment(inherited(), &[])
            .unwrap()
            .iter()
            .map(|c| {
                let b = c.to_bytes();
                let eq = 1 + b[1..].iter().position(|&x| x == b'=').unwrap();
                (
                    OsStr::from_bytes(&b[..eq]).to_owned(),
                    OsStr::from_bytes(&b[eq + 1..]).to_owned(),
                )
            })
            .collect();
        let std: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        assert_eq!(ours, std.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn nul_bytes_in_a_change_are_refused() {
        assert!(env(&["A=1"], &[("B", Some("x\0y"))]).is_err());
        let e = exec(OsStr::new("true"), &[], &[("B", Some(OsStr::new("x\0y")))]);
        assert_eq!(e.to_string(), NUL_MESSAGE);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
    // A failed exec (its message, environ left as it was) is tested through the binary
    // (tests/cli.rs, command_not_found_is_127): swapping environ here would race with the
    // other tests' reading of the environment.
}
