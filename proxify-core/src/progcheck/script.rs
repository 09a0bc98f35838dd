//! `#!` scripts: the interpreter and its one argument, split as the kernel splits the line
//! (`fs/binfmt_script.c`), and the command `/usr/bin/env` runs for that argument.

/// The kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE).
pub const SHEBANG_MAX: usize = 256;

/// The interpreter and optional argument of a `#!` line (`head` starts with `#!`), as the
/// kernel splits it: up to the first newline (or NUL), within [`SHEBANG_MAX`] bytes, the
/// interpreter up to the first blank, the rest (trimmed) as one argument. `None`: no
/// interpreter (the kernel fails with ENOEXEC and `execvp` hands the file to `/bin/sh`).
pub fn parse_shebang(head: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let line = head.get(2..)?;
    let line = &line[..line.len().min(SHEBANG_MAX - 2)];
    let line = match line.iter().position(|&b| b == b'\n' || b == 0) {
        Some(i) => &line[..i],
        None => line,
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !blank(b))?;
    let line = &line[start..];
    let end = line.iter().position(blank).unwrap_or(line.len());
    let interp = &line[..end];
    let rest = &line[end..];
    let arg = match rest.iter().position(|b| !blank(b)) {
        Some(i) => {
            let rest = &rest[i..];
            let last = rest.iter().rposition(|b| !blank(b)).unwrap_or(0);
            Some(&rest[..=last])
        }
        None => None,
    };
    Some((interp, arg))
}

/// The command `env` runs for the shebang argument `arg` (one argument, split only with `-S`).
pub fn env_command(arg: &[u8]) -> Option<&[u8]> {
    let split = arg
        .strip_prefix(b"--split-string=")
        .or_else(|| arg.strip_prefix(b"-S"));
    let tokens: Vec<&[u8]> = match split {
        Some(rest) => rest
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|t| !t.is_empty())
            .collect(),
        None => vec![arg],
    };
    let mut it = tokens.into_iter();
    while let Some(t) = it.next() {
        if t == b"--" {
            return it.next();
        }
        if t == b"-u" || t == b"-C" || t == b"--unset" || t == b"--chdir" {
            it.next();
            continue;
        }
        if t.starts_with(b"-") || t.contains(&b'=') {
            continue;
        }
        return Some(t);
    }
    None
}

/// True for the `env` program (`/usr/bin/env`, `/bin/env`, ...).
pub fn is_env(interp: &[u8]) -> bool {
    interp.rsplit(|&b| b == b'/').next() == Some(b"env")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_parsing() {
        assert_eq!(parse_shebang(b"#!/bin/sh\n"), Some((&b"/bin/sh"[..], None)));
        assert_eq!(
            parse_shebang(b"#! \t/usr/bin/env  python3 -u \t\nrest"),
            Some((&b"/usr/bin/env"[..], Some(&b"python3 -u"[..])))
        );
        assert_eq!(parse_shebang(b"#!"), None);
        assert_eq!(parse_shebang(b"#!  \n/bin/sh"), None);
        let long = [b"#!/".to_vec(), vec![b'a'; 400]].concat();
        assert_eq!(parse_shebang(&long).unwrap().0.len(), SHEBANG_MAX - 2);
        assert_eq!(
            parse_shebang(b"#!/bin/sh\0-x\n"),
            Some((&b"/bin/sh"[..], None))
        );
    }

    #[test]
    fn env_arguments() {
        assert_eq!(env_command(b"python3"), Some(&b"python3"[..]));
        assert_eq!(env_command(b"-S python3 -u"), Some(&b"python3"[..]));
        assert_eq!(env_command(b"-Spython3"), Some(&b"python3"[..]));
        assert_eq!(env_command(b"--split-string=A=1 node"), Some(&b"node"[..]));
        assert_eq!(env_command(b"-S -i"), None);
        assert_eq!(env_command(b"-S -u X -- prog"), Some(&b"prog"[..]));
        assert!(is_env(b"/usr/bin/env"));
        assert!(is_env(b"env"));
        assert!(!is_env(b"/usr/bin/envy"));
    }
}
