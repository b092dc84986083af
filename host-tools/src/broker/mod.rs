//! `pqcc broker serve`: the key broker. It answers guests' v1 handshakes, checks their
//! evidence and claims against [`policy::Policy`], and releases secrets only inside the
//! resulting channel. Every decision goes to the hash-chained audit log
//! ([`crate::audit`]). See `docs/broker.md`.

pub mod cli;
pub mod io;
pub mod policy;
pub mod serve;
