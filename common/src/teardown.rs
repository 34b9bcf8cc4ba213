//! Removing a container, whoever does it (ctr-kill --rm, ctr-spawn --rm,
//! the monitor): unmount whatever is mounted at or beneath its directory
//! (deepest first, MNT_DETACH), kill what is left in its cgroup and remove
//! the cgroup, release `names/<name>` only if it still names this id,
//! remove `containers/<id>/` and its lock file, and optionally its
//! anonymous volumes, and release its network leases (kist_common::net).
//! Every step tolerates finding its work already done,
//! so two removers racing (an attached ctr-spawn --rm and ctr-kill --rm -f)
//! both succeed.
//!
//! Also the freezer (`--pause`/`--resume`), through kist_common::cgroup on
//! the container's cgroup path (`kist/<id>`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup;
use crate::container::{self, ContainerPaths};
use crate::root::StateRoot;

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("cannot unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path}: {message}")]
    Cgroup { path: PathBuf, message: String },
}

impl crate::HasExitCode for TeardownError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            TeardownError::Unmount { source, .. } | TeardownError::Remove { source, .. } => {
                crate::exit::io_exit_code(source)
            }
            TeardownError::Cgroup { .. } => crate::ExitCode::Failure,
        }
    }
}

/// What to remove besides the container itself.
#[derive(Debug, Clone, Default)]
pub struct Removal {
    /// The container's name, released if `names/<name>` still holds its id.
    pub name: Option<String>,
    /// The cgroup path relative to each hierarchy's root (`kist/<id>`).
    pub cgroup: Option<String>,
    /// Volumes (names under `volumes/`) to delete: the anonymous ones with `-v`.
    pub volumes: Vec<String>,
    /// The caller, the live owner of the container's network attachment,
    /// releases its leases itself (an attached ctr-spawn does it on a
    /// thread while the rest is removed): the release step is skipped.
    pub leases_released_by_owner: bool,
}

impl Removal {
    /// Everything a state names; anonymous volumes only if `volumes` is true.
    pub fn of(state: &container::ContainerState, volumes: bool) -> Removal {
        Removal {
            name: Some(state.name.clone()).filter(|n| !n.is_empty()),
            cgroup: state.cgroup.clone(),
            volumes: if volumes { state.anonymous_volumes.clone() } else { Vec::new() },
            leases_released_by_owner: false,
        }
    }
}

/// Removes container `id` and what `what` names. The caller has made sure
/// nothing runs in it any more (or accepts that what still runs is killed).
pub fn remove(root: &StateRoot, id: &str, what: &Removal) -> Result<(), TeardownError> {
    let paths = ContainerPaths::new(root, id);
    unmount_beneath(&paths.dir)?;
    if let Some(rel) = &what.cgroup {
        destroy_cgroup(rel)?;
    }
    if let Some(name) = &what.name {
        container::release_name(root, name, id);
    }
    // Its network leases (veth, address, published ports), if its owner
    // did not release them (a killed monitor): best effort, as the rest.
    let released =
        if what.leases_released_by_owner { Ok(()) } else { crate::net::release_container(root, id) };
    if let Err(e) = released {
        crate::warn!("container {}: releasing its network: {e}", &id[..id.len().min(12)]);
    }
    remove_tree(&paths.dir)?;
    for v in &what.volumes {
        if container::valid_name(v) {
            let dir = root.volumes_dir().join(v);
            unmount_beneath(&dir)?;
            remove_tree(&dir)?;
        }
    }
    let _ = std::fs::remove_file(container::lock_path(root, id));
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<(), TeardownError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TeardownError::Remove { path: dir.to_path_buf(), source }),
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points (of this mount namespace) at or beneath `dir`.
pub fn mounts_beneath(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Unmounts everything at or beneath `dir`, deepest first, detaching
/// (MNT_DETACH) so that a busy mount does not stop the removal.
pub fn unmount_beneath(dir: &Path) -> Result<(), TeardownError> {
    // Mounts stacked on one point need one unmount each: repeat until none is left.
    for _ in 0..64 {
        let mut mounts = mounts_beneath(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(TeardownError::Unmount { path: m, source: e.into() }),
            }
        }
    }
    Ok(())
}

fn cgroup(rel: &str) -> Result<cgroup::Cgroup, TeardownError> {
    let err =
        |e: cgroup::CgroupError| TeardownError::Cgroup { path: PathBuf::from(rel), message: e.to_string() };
    let layout = cgroup::host().map_err(err)?;
    cgroup::open(&layout, rel).map_err(err)
}

fn cg_err(rel: &str) -> impl Fn(cgroup::CgroupError) -> TeardownError + '_ {
    move |e| TeardownError::Cgroup { path: PathBuf::from(rel), message: e.to_string() }
}

/// The pids in the container's cgroup (none if it has no cgroup).
pub fn cgroup_pids(rel: &str) -> Vec<i32> {
    cgroup(rel)
        .and_then(|cg| cg.pids().map_err(cg_err(rel)))
        .unwrap_or_default()
        .into_iter()
        .map(|p| p as i32)
        .collect()
}

/// Kills what is left in the container's cgroup and removes it.
pub fn destroy_cgroup(rel: &str) -> Result<(), TeardownError> {
    let cg = cgroup(rel)?;
    if cg.paths().iter().all(|p| !p.is_dir()) {
        return Ok(());
    }
    // Frozen tasks do not act on SIGKILL until thawed (cgroup v1).
    let _ = cg.thaw();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cg.pids().unwrap_or_default();
        if pids.is_empty() || Instant::now() >= deadline {
            break;
        }
        for p in pids {
            // SAFETY: signalling a process inside the container's own cgroup.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cg.destroy(Duration::from_secs(5)).map_err(cg_err(rel))
}

/// Freezes every process of the container (`docker pause`).
pub fn freeze(rel: &str) -> Result<(), TeardownError> {
    cgroup(rel)?.freeze().map_err(cg_err(rel))
}

/// Thaws the container (`docker unpause`).
pub fn thaw(rel: &str) -> Result<(), TeardownError> {
    cgroup(rel)?.thaw().map_err(cg_err(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
