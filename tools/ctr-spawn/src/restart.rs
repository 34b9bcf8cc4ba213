//! Restart policies, log options and the restart backoff: they live in
//! kist_common::restart, shared with the monitor (ctr-monitor).

pub use kist_common::restart::{Backoff, LogOpts, Policy};
