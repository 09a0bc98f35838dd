//! Would `execve` put the new program in secure-execution mode (`AT_SECURE`), where the
//! dynamic loader ignores `LD_PRELOAD` entries with a `/` (and so the shim)?
//!
//! The kernel decides it in `cap_bprm_creds_from_file` (security/commoncap.c), from the
//! caller's credentials and the file's setuid/setgid bits and capabilities:
//! - the new effective uid is the file's owner for a setuid file, else the caller's effective
//!   uid; the same for the group (setgid needs group execute: without it the bit means
//!   mandatory locking). Neither bit counts on a `nosuid` mount or under `no_new_privs`;
//! - secure when the new effective uid differs from the caller's **real** uid, or the new
//!   effective gid from the real gid. So root running a setuid-root program keeps
//!   `LD_PRELOAD`, and so does any user running a setuid program they own; a program running
//!   with an effective uid that is not its real one passes secure mode to whatever it runs;
//! - otherwise, for a caller whose real uid is not 0, secure when the file has capabilities
//!   that give the new program a permitted set (`(bounding & fP) | (inheritable & fI)`, the
//!   caller's sets) or set the effective bit. File capabilities never make real root secure.
//!
//! Not modelled: LSMs that set `AT_SECURE` themselves (SELinux domain transitions, AppArmor
//! profile changes) and user-namespace id mapping.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;

/// What exec would change, so that the loader ignores `LD_PRELOAD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// The effective uid would be `to` while the real uid is `real`: the file is setuid to
    /// `to` (`setuid`), or the caller already runs with effective uid `to`.
    Uid { real: u32, to: u32, setuid: bool },
    /// The same for the group ids.
    Gid { real: u32, to: u32, setgid: bool },
    /// File capabilities would raise a non-root caller's capabilities.
    Capabilities,
}

impl std::fmt::Display for Privilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it {}", self.predicate())
    }
}

impl Privilege {
    /// The reason as a predicate of the program ("is setuid ...").
    pub(crate) fn predicate(&self) -> String {
        match self {
            Privilege::Uid {
                real,
                to,
                setuid: true,
            } => format!(
                "is setuid (to uid {to}; this user is uid {real}), and the loader ignores \
                 LD_PRELOAD when exec changes the effective uid"
            ),
            Privilege::Uid { real, to, .. } => format!(
                "would run with the effective uid {to} and the real uid {real}, and the loader \
                 ignores LD_PRELOAD then"
            ),
            Privilege::Gid {
                real,
                to,
                setgid: true,
            } => format!(
                "is setgid (to gid {to}; this user's gid is {real}), and the loader ignores \
                 LD_PRELOAD when exec changes the effective gid"
            ),
            Privilege::Gid { real, to, .. } => format!(
                "would run with the effective gid {to} and the real gid {real}, and the loader \
                 ignores LD_PRELOAD then"
            ),
            Privilege::Capabilities => "has file capabilities that this user lacks, and the \
                 loader ignores LD_PRELOAD when exec raises capabilities"
                .into(),
        }
    }

    /// Who can run it with the shim.
    pub(crate) fn fix(&self) -> String {
        match self {
            Privilege::Uid {
                to, setuid: true, ..
            } => format!("run proxify as uid {to}"),
            Privilege::Gid {
                to, setgid: true, ..
            } => format!("run proxify with gid {to}"),
            Privilege::Uid { .. } | Privilege::Gid { .. } => {
                "run proxify with the same real and effective ids".into()
            }
            Privilege::Capabilities => "run proxify as root".into(),
        }
    }
}

/// The credentials `execve` is judged against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
    /// Capability sets as bit masks (`CapInh`, `CapBnd` in /proc/self/status).
    pub cap_inheritable: u64,
    pub cap_bounding: u64,
    pub no_new_privs: bool,
}

impl Creds {
    /// This process's, from `/proc/self/status` (else the id system calls, with every
    /// capability assumed in the bounding and inheritable sets: file capabilities then always
    /// count as raising).
    pub fn current() -> Creds {
        if let Some(c) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| Self::parse_status(&s))
        {
            return c;
        }
        Self::ids()
    }

    /// The real and effective ids from the id system calls, with every capability assumed in
    /// the bounding and inheritable sets and `no_new_privs` unset (file capabilities and
    /// set-id bits then always count). Exact for a file without set-id bits or capabilities:
    /// for it [`exec_change`] looks at nothing else.
    pub fn ids() -> Creds {
        // SAFETY: these calls only return ids.
        let (ruid, euid, rgid, egid) = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        Creds {
            ruid,
            euid,
            rgid,
            egid,
            cap_inheritable: u64::MAX,
            cap_bounding: u64::MAX,
            no_new_privs: false,
        }
    }

    /// `Uid:`, `Gid:`, `CapInh:`, `CapBnd:` and `NoNewPrivs:` lines of /proc/PID/status.
    pub fn parse_status(text: &str) -> Option<Creds> {
        let mut uid = None;
        let mut gid = None;
        let mut inh = None;
        let mut bnd = None;
        let mut nnp = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let ids = || -> Option<(u32, u32)> {
                let mut it = value.split_whitespace().map(|v| v.parse::<u32>());
                Some((it.next()?.ok()?, it.next()?.ok()?))
            };
            let mask = || u64::from_str_radix(value.trim(), 16).ok();
            match key {
                "Uid" => uid = ids(),
                "Gid" => gid = ids(),
                "CapInh" => inh = mask(),
                "CapBnd" => bnd = mask(),
                "NoNewPrivs" => nnp = value.trim() == "1",
                _ => {}
            }
        }
        let ((ruid, euid), (rgid, egid)) = (uid?, gid?);
        Some(Creds {
            ruid,
            euid,
            rgid,
            egid,
            cap_inheritable: inh?,
            cap_bounding: bnd?,
            no_new_privs: nnp,
        })
    }

    /// The credentials a `posix_spawn` child with `POSIX_SPAWN_RESETIDS` execs with.
    pub fn reset_ids(&self) -> Creds {
        Creds {
            euid: self.ruid,
            egid: self.rgid,
            ..self.clone()
        }
    }
}

/// A file's capabilities (`security.capability`, `struct vfs_cap_data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileCaps {
    pub effective: bool,
    pub permitted: u64,
    pub inheritable: u64,
}

const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
const VFS_CAP_REVISION_1: u32 = 0x0100_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

impl FileCaps {
    /// Parses the xattr's value. An unknown revision or size counts as every capability.
    pub fn parse(b: &[u8]) -> FileCaps {
        let all = FileCaps {
            effective: true,
            permitted: u64::MAX,
            inheritable: u64::MAX,
        };
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
            ))
        };
        let Some(magic) = word(0) else {
            return all;
        };
        let effective = magic & VFS_CAP_FLAGS_EFFECTIVE != 0;
        let (words, len) = match magic & VFS_CAP_REVISION_MASK {
            VFS_CAP_REVISION_1 => (1, 12),
            VFS_CAP_REVISION_2 => (2, 20),
            VFS_CAP_REVISION_3 => (2, 24),
            _ => return all,
        };
        if b.len() != len {
            return all;
        }
        let (mut permitted, mut inheritable) = (0u64, 0u64);
        for i in 0..words {
            let (Some(p), Some(n)) = (word(1 + 2 * i), word(2 + 2 * i)) else {
                return all;
            };
            permitted |= u64::from(p) << (32 * i);
            inheritable |= u64::from(n) << (32 * i);
        }
        FileCaps {
            effective,
            permitted,
            inheritable,
        }
    }
}

/// A file's setuid/setgid bits, owner and capabilities, and whether its mount honours them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIds {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub caps: Option<FileCaps>,
    pub nosuid: bool,
}

impl FileIds {
    /// Reads them from an open file.
    pub fn of_file(file: &File, meta: &std::fs::Metadata) -> io::Result<FileIds> {
        let fd = file.as_raw_fd();
        let mut buf = [0u8; 32];
        // SAFETY: valid NUL-terminated name, a buffer of the size given.
        let n = unsafe {
            libc::fgetxattr(
                fd,
                c"security.capability".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let caps = caps_result(n, &buf)?;
        // SAFETY: a zeroed statvfs is a valid out-parameter.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open for the duration of the call; vfs is writable.
        let nosuid =
            unsafe { libc::fstatvfs(fd, &mut vfs) } == 0 && vfs.f_flag & libc::ST_NOSUID != 0;
        Ok(FileIds {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            caps,
            nosuid,
        })
    }

    /// For a file that cannot be opened (execute-only): the same by path.
    pub fn of_path(path: &std::ffi::CStr, meta: &std::fs::Metadata) -> io::Result<FileIds> {
        let mut buf = [0u8; 32];
        // SAFETY: valid NUL-terminated strings, a buffer of the size given.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"security.capability".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let caps = caps_result(n, &buf)?;
        // SAFETY: a zeroed statvfs is a valid out-parameter.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path; vfs is writable.
        let nosuid = unsafe { libc::statvfs(path.as_ptr(), &mut vfs) } == 0
            && vfs.f_flag & libc::ST_NOSUID != 0;
        Ok(FileIds {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            caps,
            nosuid,
        })
    }
}

fn caps_result(n: isize, buf: &[u8]) -> io::Result<Option<FileCaps>> {
    if n >= 0 {
        return Ok(Some(FileCaps::parse(&buf[..n as usize])));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
        // Larger than any known revision: counted as every capability.
        Some(libc::ERANGE) => Ok(Some(FileCaps::parse(&[]))),
        _ => Err(e),
    }
}

/// What exec of a file with `ids` by `caller` would change, or `None` when the loader keeps
/// `LD_PRELOAD`.
pub fn exec_change(caller: &Creds, ids: &FileIds) -> Option<Privilege> {
    let honoured = !ids.nosuid && !caller.no_new_privs;
    let setuid = honoured && ids.mode & libc::S_ISUID != 0;
    let setgid = honoured && ids.mode & libc::S_ISGID != 0 && ids.mode & libc::S_IXGRP != 0;
    let euid = if setuid { ids.uid } else { caller.euid };
    let egid = if setgid { ids.gid } else { caller.egid };
    if euid != caller.ruid {
        return Some(Privilege::Uid {
            real: caller.ruid,
            to: euid,
            setuid,
        });
    }
    if egid != caller.rgid {
        return Some(Privilege::Gid {
            real: caller.rgid,
            to: egid,
            setgid,
        });
    }
    if caller.ruid == 0 || ids.nosuid {
        return None;
    }
    let caps = ids.caps?;
    let permitted =
        (caller.cap_bounding & caps.permitted) | (caller.cap_inheritable & caps.inheritable);
    (caps.effective || permitted != 0).then_some(Privilege::Capabilities)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Creds {
        Creds {
            ruid: uid,
            euid: uid,
            rgid: uid,
            egid: uid,
            cap_inheritable: 0,
            cap_bounding: (1 << 41) - 1,
            no_new_privs: false,
        }
    }

    fn file(mode: u32, uid: u32, gid: u32) -> FileIds {
        FileIds {
            mode: libc::S_IFREG | mode,
            uid,
            gid,
            caps: None,
            nosuid: false,
        }
    }

    #[test]
    fn setuid_and_setgid_count_only_when_the_ids_change() {
        let root = user(0);
        let alice = user(1000);
        // Setuid root: root keeps LD_PRELOAD, alice does not.
        assert_eq!(exec_change(&root, &file(0o4755, 0, 0)), None);
        assert_eq!(
            exec_change(&alice, &file(0o4755, 0, 0)),
            Some(Privilege::Uid {
                real: 1000,
                to: 0,
                setuid: true
            })
        );
        // A setuid program alice owns: no change for her.
        assert_eq!(exec_change(&alice, &file(0o4755, 1000, 1000)), None);
        // Setgid.
        assert_eq!(exec_change(&root, &file(0o2755, 0, 0)), None);
        assert_eq!(
            exec_change(&alice, &file(0o2755, 0, 42)),
            Some(Privilege::Gid {
                real: 1000,
                to: 42,
                setgid: true
            })
        );
        // Root runs a program setgid to another group: the egid changes.
        assert!(matches!(
            exec_change(&root, &file(0o2755, 0, 42)),
            Some(Privilege::Gid { to: 42, .. })
        ));
        // Setgid without group execute is mandatory locking.
        assert_eq!(exec_change(&alice, &file(0o2745, 0, 42)), None);
        // Setuid to another user, run by root: the euid changes.
        assert!(matches!(
            exec_change(&root, &file(0o4755, 1000, 0)),
            Some(Privilege::Uid { to: 1000, .. })
        ));
        // nosuid mounts and no_new_privs: the bits do nothing.
        let mut f = file(0o6755, 0, 0);
        f.nosuid = true;
        assert_eq!(exec_change(&alice, &f), None);
        let nnp = Creds {
            no_new_privs: true,
            ..alice.clone()
        };
        assert_eq!(exec_change(&nnp, &file(0o6755, 0, 0)), None);
        // A caller whose effective uid is not its real one: every exec is secure.
        let setuid_caller = Creds {
            euid: 0,
            ..alice.clone()
        };
        assert_eq!(
            exec_change(&setuid_caller, &file(0o755, 0, 0)),
            Some(Privilege::Uid {
                real: 1000,
                to: 0,
                setuid: false
            })
        );
        // POSIX_SPAWN_RESETIDS takes that back.
        assert_eq!(
            exec_change(&setuid_caller.reset_ids(), &file(0o755, 0, 0)),
            None
        );
    }

    #[test]
    fn file_capabilities() {
        let net_raw = 1u64 << 13;
        let caps = |effective, permitted, inheritable| {
            let mut f = file(0o755, 0, 0);
            f.caps = Some(FileCaps {
                effective,
                permitted,
                inheritable,
            });
            f
        };
        let alice = user(1000);
        assert_eq!(
            exec_change(&alice, &caps(true, net_raw, 0)),
            Some(Privilege::Capabilities)
        );
        assert_eq!(
            exec_change(&alice, &caps(false, net_raw, 0)),
            Some(Privilege::Capabilities)
        );
        // Outside the bounding set and not inheritable: nothing is gained.
        let bounded = Creds {
            cap_bounding: !net_raw,
            ..alice.clone()
        };
        assert_eq!(exec_change(&bounded, &caps(false, net_raw, 0)), None);
        // Inheritable file caps count only with the caller's inheritable set.
        assert_eq!(exec_change(&alice, &caps(false, 0, net_raw)), None);
        let inh = Creds {
            cap_inheritable: net_raw,
            ..alice.clone()
        };
        assert_eq!(
            exec_change(&inh, &caps(false, 0, net_raw)),
            Some(Privilege::Capabilities)
        );
        // Root: file capabilities never make it secure.
        assert_eq!(exec_change(&user(0), &caps(true, u64::MAX, 0)), None);
    }

    #[test]
    fn xattr_and_status_parsing() {
        // Revision 2, effective, CAP_NET_RAW permitted.
        let mut v2 = vec![];
        for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
            v2.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(
            FileCaps::parse(&v2),
            FileCaps {
                effective: true,
                permitted: 1 << 13,
                inheritable: 0
            }
        );
        let mut v3 = v2.clone();
        v3[3] = 3;
        v3.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(FileCaps::parse(&v3).permitted, 1 << 13);
        // Unknown or short: everything.
        assert_eq!(FileCaps::parse(&v2[..7]).permitted, u64::MAX);
        assert_eq!(FileCaps::parse(&[0, 0, 0, 9]).permitted, u64::MAX);
        assert_eq!(FileCaps::parse(&[]).permitted, u64::MAX);

        let status =
            "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\nCapInh:\t0000000000000000\n\
                      CapPrm:\t0000000000000000\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\n";
        let c = Creds::parse_status(status).unwrap();
        assert_eq!((c.ruid, c.euid, c.rgid, c.egid), (1000, 0, 100, 100));
        assert_eq!(c.cap_bounding, 0x1ff_ffff_ffff);
        assert!(c.no_new_privs);
        assert_eq!(Creds::parse_status("Uid:\t1\t1\n"), None);
        let me = Creds::current();
        // SAFETY: returns an id.
        assert_eq!(me.ruid, unsafe { libc::getuid() });
    }
}
