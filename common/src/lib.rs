//! Shared ground of the kist tools: the state root and its layout, atomic and
//! locked file writes, the versioned JSON records that travel between tools,
//! image references and digests parsed once into types, the stdin
//! convention, diagnostics and the exit-code scheme.
//!
//! Nothing here links an HTTP stack or a tar reader: every tool depends on
//! this crate, and ctr-spawn's start-up time must not pay for what only
//! img-fetch needs.

pub mod catalog;
pub mod cgroup;
pub mod container;
pub mod croot;
pub mod diag;
pub mod digest;
pub mod exit;
pub mod fsutil;
pub mod gotmpl;
pub mod input;
pub mod inspect;
pub mod lifecycle;
pub mod logfile;
pub mod man;
pub mod monitor;
pub mod net;
pub mod output;
pub mod record;
pub mod reference;
pub mod restart;
pub mod root;
pub mod security;
pub mod settle;
pub mod store;
pub mod teardown;
pub mod template;
pub mod timefmt;
pub mod user;

pub use digest::Digest;
pub use exit::{ExitCode, HasExitCode};
pub use reference::Reference;
pub use root::StateRoot;
