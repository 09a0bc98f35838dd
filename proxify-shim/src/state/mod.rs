//! Layer 1, state: what the shim knows. [`fdtable`] (per-fd state: pure state, it never calls
//! an engine), [`fakedns`] (the remote-DNS placeholder table), [`hosts`] (the /etc/hosts
//! cache), [`myhost`] (the machine's own host name and addresses), [`runtime`] (configuration, proxy addresses, dead hops, the logger). Uses layer 0
//! only.

pub mod fakedns;
pub mod fdtable;
pub mod hosts;
pub mod myhost;
pub mod runtime;
