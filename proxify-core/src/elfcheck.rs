//! The former program check's API, kept for the shim's exec hooks until they call
//! [`crate::progcheck`] directly (with the arguments and the child's directory). Everything
//! is judged by `progcheck`; the dynamic loader run as a program is refused here because
//! its arguments are not known.

use crate::progcheck::{self, Exec, Judge};
use std::ffi::OsStr;
use std::path::Path;

pub use crate::progcheck::{find_in_path, parse_allow, DEFAULT_PATH, ENV_ALLOW_UNPROXIED};

/// What [`inspect_with`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Reachable,
    CannotRun,
    Unreachable(Reason),
}

/// Why a program would run without the shim ("it is statically linked ...").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason(String);

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Judges `path` run with no arguments known. `Err`: it could not be judged.
pub fn inspect_with(path: &Path, search_path: Option<&OsStr>) -> Result<Verdict, String> {
    // An empty program name: a loader run as a program is judged unknown, so refused.
    let unknown = [OsStr::new("")];
    let v = Judge::current().judge(&Exec {
        path,
        args: &unknown,
        search_path,
        cwd: None,
    });
    match v {
        progcheck::Verdict::Preloadable => Ok(Verdict::Reachable),
        progcheck::Verdict::WillNotRun => Ok(Verdict::CannotRun),
        progcheck::Verdict::Unjudged(e) => Err(e),
        v => Ok(Verdict::Unreachable(Reason(v.reason().to_string()))),
    }
}
