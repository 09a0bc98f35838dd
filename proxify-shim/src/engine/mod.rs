//! Layer 3, engines: each one carries out one kind of proxied call, driving the chain
//! handshake from proxify-core over the program's socket: [`connect`] (blocking TCP
//! connect), [`nbconnect`] (non-blocking TCP connect, stepped from the program's readiness
//! waits), [`udp`] (UDP through a SOCKS5 association), [`bind`] (SOCKS BIND for listening
//! sockets), [`dnsresp`] (the in-process DNS responder for queries to the system
//! resolvers); [`drive`] is what they share; [`evreg`] keeps the program's epoll registrations
//! of a handshaking socket aside and gives each handshake a readiness fd. Engines use layers
//! 0–2, never a hook.

pub mod bind;
pub mod connect;
pub mod dnsresp;
pub mod drive;
pub mod evreg;
pub mod nbconnect;
pub mod udp;
