//! The working directory a `posix_spawn` child execs in, after its file actions
//! (`posix_spawn_file_actions_addchdir_np`/`addfchdir_np`, glibc 2.29+). A relative program
//! path, relative `PATH` entries and relative `#!` interpreters are looked up there, not in the
//! caller's directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One file action, in the order the child performs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    Close(i32),
    Dup2 {
        fd: i32,
        newfd: i32,
    },
    Open {
        fd: i32,
        path: &'a Path,
    },
    Chdir(&'a Path),
    Fchdir(i32),
    Closefrom(i32),
    /// Changes no file or directory (`tcsetpgrp`).
    Other,
    /// An action this code does not know: the directory cannot be told.
    Unknown,
}

/// What an fd refers to in the child.
#[derive(Clone, Debug)]
enum Origin {
    /// Inherited from the caller (the same number).
    Parent(i32),
    /// Opened by an action (a path the caller can use).
    Path(PathBuf),
    Closed,
}

/// The child's working directory after `actions`, as a path the caller can use: `Ok(None)` when
/// it stays the caller's. `/proc/self/fd/N` names a directory the caller has open as fd N.
/// `Err` when an action is unknown.
pub fn child_dir(actions: &[Action]) -> Result<Option<PathBuf>, String> {
    let mut cwd: Option<PathBuf> = None;
    let mut fds: HashMap<i32, Origin> = HashMap::new();
    let mut closed_from: Option<i32> = None;
    let origin = |fds: &HashMap<i32, Origin>, closed_from: Option<i32>, fd: i32| -> Origin {
        match fds.get(&fd) {
            Some(o) => o.clone(),
            None if closed_from.is_some_and(|from| fd >= from) => Origin::Closed,
            None => Origin::Parent(fd),
        }
    };
    for a in actions {
        match a {
            Action::Close(fd) => {
                fds.insert(*fd, Origin::Closed);
            }
            Action::Dup2 { fd, newfd } => {
                let o = origin(&fds, closed_from, *fd);
                fds.insert(*newfd, o);
            }
            Action::Open { fd, path } => {
                fds.insert(*fd, Origin::Path(resolve(cwd.as_deref(), path)));
            }
            Action::Chdir(path) => cwd = Some(resolve(cwd.as_deref(), path)),
            Action::Fchdir(fd) => match origin(&fds, closed_from, *fd) {
                Origin::Parent(n) => cwd = Some(PathBuf::from(format!("/proc/self/fd/{n}"))),
                Origin::Path(p) => cwd = Some(p),
                // fchdir fails in the child, and so does the spawn: nothing runs.
                Origin::Closed => {}
            },
            Action::Closefrom(from) => {
                fds.retain(|fd, _| fd < from);
                closed_from = Some(closed_from.map_or(*from, |c| c.min(*from)));
            }
            Action::Other => {}
            Action::Unknown => return Err("an unknown posix_spawn file action".into()),
        }
    }
    Ok(cwd)
}

/// `path` as seen from the directory `cwd` (`None`: the caller's own).
pub fn resolve(cwd: Option<&Path>, path: &Path) -> PathBuf {
    match cwd {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn directory_actions() {
        assert_eq!(child_dir(&[]), Ok(None));
        assert_eq!(
            child_dir(&[Action::Close(3), Action::Dup2 { fd: 4, newfd: 1 }]),
            Ok(None)
        );
        assert_eq!(
            child_dir(&[Action::Chdir(p("/tmp")), Action::Chdir(p("sub"))]),
            Ok(Some(PathBuf::from("/tmp/sub")))
        );
        assert_eq!(
            child_dir(&[Action::Chdir(p("rel"))]),
            Ok(Some(PathBuf::from("rel")))
        );
        assert_eq!(
            child_dir(&[Action::Fchdir(7), Action::Chdir(p("x"))]),
            Ok(Some(PathBuf::from("/proc/self/fd/7/x")))
        );
        // An fd opened or moved by an earlier action.
        assert_eq!(
            child_dir(&[
                Action::Chdir(p("/srv")),
                Action::Open {
                    fd: 9,
                    path: p("data")
                },
                Action::Chdir(p("/")),
                Action::Dup2 { fd: 9, newfd: 5 },
                Action::Fchdir(5),
            ]),
            Ok(Some(PathBuf::from("/srv/data")))
        );
        assert_eq!(
            child_dir(&[Action::Dup2 { fd: 8, newfd: 5 }, Action::Fchdir(5)]),
            Ok(Some(PathBuf::from("/proc/self/fd/8")))
        );
        // Closed: the child fails, the directory stays.
        assert_eq!(
            child_dir(&[Action::Closefrom(3), Action::Fchdir(5)]),
            Ok(None)
        );
        assert_eq!(child_dir(&[Action::Close(5), Action::Fchdir(5)]), Ok(None));
        assert!(child_dir(&[Action::Unknown]).is_err());
        assert_eq!(resolve(Some(p("/a")), p("/b")), PathBuf::from("/b"));
        assert_eq!(resolve(None, p("b")), PathBuf::from("b"));
    }
}
