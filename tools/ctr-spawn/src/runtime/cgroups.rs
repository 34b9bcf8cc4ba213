//! The container's cgroup through kist_common::cgroup: created with the
//! bundle's resources before the init may go on, checked for an OOM kill
//! and removed when the container has exited. What --pid host may leave
//! running in it is killed first, so the cgroup always goes.

use std::time::Duration;

use kist_common::cgroup;
use oci_spec::runtime::LinuxResources;

use crate::Error;

pub struct Cgroup {
    inner: cgroup::Cgroup,
}

fn err(e: cgroup::CgroupError) -> Error {
    Error::Cgroup(e.to_string())
}

/// Creates `kist/<id>` (the bundle's cgroupsPath) with the limits.
pub fn create(name: &str, resources: &LinuxResources) -> Result<Cgroup, Error> {
    let layout = cgroup::host().map_err(err)?;
    Ok(Cgroup { inner: cgroup::create(&layout, name, resources).map_err(err)? })
}

/// What the init's clone needs to enter the cgroup by itself (see
/// kist_common::cgroup::Placement), opened and encoded before the clone.
pub struct Entry {
    /// The cgroup2 directory, for clone3's CLONE_INTO_CGROUP.
    pub cgroup2: Option<std::os::fd::OwnedFd>,
    /// The v1 `tasks` files the init writes "0" to.
    pub v1_tasks: Vec<std::ffi::CString>,
}

impl Cgroup {
    /// Opens the cgroup2 directory and encodes the v1 paths.
    pub fn entry(&self) -> Result<Entry, Error> {
        let placed = self.inner.placement();
        let cgroup2 = match &placed.cgroup2 {
            Some(dir) => Some(
                std::fs::File::open(dir)
                    .map_err(|e| Error::Cgroup(format!("open {}: {e}", dir.display())))?
                    .into(),
            ),
            None => None,
        };
        let v1_tasks = placed
            .v1_tasks
            .iter()
            .map(|p| {
                std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|_| Error::Cgroup(format!("bad cgroup path {}", p.display())))
            })
            .collect::<Result<_, _>>()?;
        Ok(Entry { cgroup2, v1_tasks })
    }

    pub fn add_pid(&self, pid: i32) -> Result<(), Error> {
        self.inner.add_pid(pid as u32).map_err(err)
    }

    /// Moves `pid` into the cgroup on a thread of its own while `f` runs
    /// on the caller's: on cgroup v1 the first move waits for an RCU grace
    /// period (several milliseconds, tens under load), time the caller
    /// spends attaching the network instead of waiting.
    pub fn add_pid_while<T>(&self, pid: i32, f: impl FnOnce() -> T) -> (Result<(), Error>, T) {
        std::thread::scope(|s| {
            let moving = s.spawn(|| self.add_pid(pid));
            let out = f();
            let moved = moving.join().unwrap_or_else(|_| Err(Error::Cgroup("cgroup thread panicked".into())));
            (moved, out)
        })
    }

    pub fn oom_killed(&self) -> bool {
        self.inner.oom_killed().unwrap_or(false)
    }

    /// Removes the cgroup, killing whatever still runs in it.
    pub fn destroy(self) -> Result<(), Error> {
        if self.inner.destroy(Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        for pid in self.inner.pids().unwrap_or_default() {
            // SAFETY: signalling a process of the container's own cgroup.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        self.inner.destroy(Duration::from_secs(5)).map_err(err)
    }
}
