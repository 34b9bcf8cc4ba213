//! The security layer of the container runtimes (ctr-spawn, ctr-exec):
//! capabilities, seccomp and rlimits as Docker sets them, built on
//! oci-spec's runtime types so that the very values written into a bundle's
//! `config.json` (which runc can run) are the ones the init applies.
//!
//! - [`caps`]: Docker's 14 default capabilities, `--cap-add/--cap-drop`,
//!   `--privileged`, and applying the sets around the init's setuid.
//! - [`seccomp`]: moby's default profile, Docker's JSON profile format, a
//!   classic-BPF compiler and the loader.
//! - [`rlimits`]: Docker's defaults (the caller's own limits), `--ulimit`,
//!   clamping to the host's hard limits, setrlimit.
//!
//! The order in the container's init, right before execve:
//! rlimits::apply → (seccomp::load unless no-new-privileges) →
//! caps::prepare_for_setuid → setgroups/setgid/setuid → caps::apply →
//! (seccomp::no_new_privs + seccomp::load with no-new-privileges) → execve.
//! See each module's header for why.

pub mod caps;
pub mod rlimits;
pub mod seccomp;
mod syscalls;

#[cfg(test)]
mod probe_tests;
