//! A container's root file system as a directory file descriptor, for the
//! tools that reach into a container from the host (ctr-cp, ctr-exec):
//! every container path is then resolved with openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS) against that descriptor, so a symlink in the
//! container pointing at `/`, `../..` or a host path stays inside it.
//!
//! A running container's root is `/proc/<pid>/root` of its init: that
//! descriptor lives in the container's mount namespace, so lookups through
//! it see the container's volumes and tmpfs mounts exactly as the container
//! does. A stopped container's overlay is not mounted anywhere (ctr-spawn
//! mounts it inside the container's own mount namespace), so it is mounted
//! detached here (fsopen/fsconfig/fsmount, never attached to any path and
//! gone when the descriptor closes): writes land in its upper directory and
//! whiteouts are honoured by the kernel. A stopped container's volumes are
//! not mounted here: ctr-cp mounts them on top in a mount namespace of its
//! own (tools/ctr-cp/src/mounts.rs), as docker cp does.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::container::{ContainerPaths, ContainerState, Status};
use crate::lifecycle::{self, Host};
use crate::root::StateRoot;

#[derive(Debug, thiserror::Error)]
pub enum CrootError {
    #[error("container {0} is {1}")]
    NotUsable(String, &'static str),
    #[error("cannot open the root of container {id}")]
    Open {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the root file system of stopped container {id} ({step})")]
    Mount {
        id: String,
        step: String,
        #[source]
        source: std::io::Error,
    },
}

impl crate::HasExitCode for CrootError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            CrootError::NotUsable(..) => crate::ExitCode::Conflict,
            CrootError::Open { source, .. } | CrootError::Mount { source, .. } => {
                crate::exit::io_exit_code(source)
            }
        }
    }
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `path` with `root` as `/`: absolute symlinks and `..` are
/// resolved against `root` and never leave it; magic links (/proc/*/root,
/// /proc/*/fd/*) are refused. `O_NOFOLLOW` in `flags` keeps a final symlink
/// itself (with `O_PATH`). O_CLOEXEC is always added.
pub fn open_in_root(root: RawFd, path: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cpath(rel)?;
    match crate::fsutil::openat2_in_root(root, &c, flags, mode) {
        // Kernels before 5.6: the same confinement, walked by hand.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => walk_in_root(root, path, flags, mode),
        other => other,
    }
}

fn at(dir: RawFd, name: &std::ffi::OsStr, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat of one name below a held descriptor; the result is checked.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn readlink_at(dir: RawFd, name: &std::ffi::OsStr) -> std::io::Result<PathBuf> {
    let c = CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat into our buffer.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// RESOLVE_IN_ROOT by hand, for kernels without openat2: one component at
/// a time with O_NOFOLLOW below a held descriptor; a symlink's target is
/// spliced into the remaining path (absolute ones restart at `root`), `..`
/// pops the stack of directories and stops at `root`; at most 40 links.
/// Magic links cannot be met: /proc entries are read as ordinary symlinks
/// and resolved as text inside the root.
pub fn walk_in_root(root: RawFd, path: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    use std::collections::VecDeque;
    use std::path::Component;
    let dup = |fd: RawFd| at(fd, std::ffi::OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0);
    let mut stack: Vec<OwnedFd> = vec![dup(root)?];
    let mut rest: VecDeque<std::ffi::OsString> = VecDeque::new();
    let push_path = |rest: &mut VecDeque<std::ffi::OsString>, p: &Path, front: bool| {
        let comps: Vec<std::ffi::OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        if front {
            for c in comps.into_iter().rev() {
                rest.push_front(c);
            }
        } else {
            rest.extend(comps);
        }
    };
    push_path(&mut rest, path, false);
    let mut links = 0;
    let follow_last = flags & libc::O_NOFOLLOW == 0;
    loop {
        let Some(name) = rest.pop_front() else {
            // The path named the directory on top of the stack itself.
            let top = stack.last().map(|f| f.as_raw_fd()).unwrap_or(root);
            return at(top, std::ffi::OsStr::new("."), flags & !libc::O_NOFOLLOW, mode);
        };
        let top = stack.last().map(|f| f.as_raw_fd()).unwrap_or(root);
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let last = rest.is_empty();
        let probe = at(top, &name, libc::O_PATH | libc::O_NOFOLLOW, 0);
        let is_link = match &probe {
            Ok(fd) => {
                // SAFETY: an all-zero stat is valid to be overwritten; fstat of our descriptor.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                st.st_mode & libc::S_IFMT == libc::S_IFLNK
            }
            Err(_) => false,
        };
        if is_link && (!last || follow_last) {
            links += 1;
            if links > 40 {
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = readlink_at(top, &name)?;
            if target.is_absolute() {
                stack.truncate(1);
            }
            push_path(&mut rest, &target, true);
            continue;
        }
        if last {
            return at(top, &name, flags | libc::O_NOFOLLOW, mode);
        }
        match probe {
            Ok(_) => stack.push(at(top, &name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?),
            Err(e) => return Err(e),
        }
    }
}

/// A container's root directory, open.
#[derive(Debug)]
pub struct ContainerRoot {
    pub fd: OwnedFd,
    /// The init's pid when the container runs (the root is its /proc/<pid>/root).
    pub pid: Option<i32>,
}

/// Opens the root of a container: its init's root while it runs, else a
/// detached mount of its overlay (see the module header).
pub fn open(root: &StateRoot, state: &ContainerState) -> Result<ContainerRoot, CrootError> {
    let host = Host::probe();
    let seen = lifecycle::observe(state, &host);
    match seen.status {
        // A frozen init's root is still a directory like any other: copies
        // work on paused containers, as docker cp's do.
        Status::Running | Status::Paused | Status::Dead if seen.process_alive => {
            if let Some(pid) = state.pid {
                let p = PathBuf::from(format!("/proc/{pid}/root"));
                let c = cpath(&p).map_err(|source| CrootError::Open { id: state.id.clone(), source })?;
                // SAFETY: valid C string; the result is checked.
                let fd =
                    unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(CrootError::Open {
                        id: state.id.clone(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                // SAFETY: a descriptor we just opened.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                // The pid could have been recycled between observing and
                // opening: judge it again now that the descriptor is held.
                if !host.is_alive(Some(pid), lifecycle::started_limit(state)) {
                    return Err(CrootError::NotUsable(state.name.clone(), "no longer running"));
                }
                return Ok(ContainerRoot { fd, pid: Some(pid) });
            }
        }
        Status::Removing => return Err(CrootError::NotUsable(state.name.clone(), "being removed")),
        Status::Restarting => return Err(CrootError::NotUsable(state.name.clone(), "restarting")),
        _ => {}
    }
    let fd = mount_detached(root, state)?;
    Ok(ContainerRoot { fd, pid: None })
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

fn fsconfig(fsfd: RawFd, cmd: libc::c_uint, key: Option<&str>, value: Option<&Path>) -> std::io::Result<()> {
    let k = key
        .map(|k| CString::new(k).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL)))
        .transpose()?;
    let v = value.map(cpath).transpose()?;
    // SAFETY: fsconfig with valid (or null) C strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd,
            cmd,
            k.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
            v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The stopped container's overlay, mounted nowhere: the descriptor of its
/// root directory is the only way in.
fn mount_detached(root: &StateRoot, state: &ContainerState) -> Result<OwnedFd, CrootError> {
    let paths = ContainerPaths::new(root, &state.id);
    let err = |step: String| move |source| CrootError::Mount { id: state.id.clone(), step, source };
    // SAFETY: fsopen with a static C string.
    let fsfd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fsfd < 0 {
        return Err(err("fsopen".into())(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as RawFd) };
    // The overlay stacks its lowers top first; state.json lists them lowest first.
    for lower in state.snapshots.iter().rev() {
        fsconfig(fsfd.as_raw_fd(), FSCONFIG_SET_STRING, Some("lowerdir+"), Some(lower))
            .map_err(err(format!("lowerdir {}", lower.display())))?;
    }
    fsconfig(fsfd.as_raw_fd(), FSCONFIG_SET_STRING, Some("upperdir"), Some(&paths.upper()))
        .map_err(err("upperdir".into()))?;
    fsconfig(fsfd.as_raw_fd(), FSCONFIG_SET_STRING, Some("workdir"), Some(&paths.work()))
        .map_err(err("workdir".into()))?;
    fsconfig(fsfd.as_raw_fd(), FSCONFIG_CMD_CREATE, None, None).map_err(err("create".into()))?;
    // SAFETY: fsmount on the configured context.
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mfd < 0 {
        return Err(err("fsmount".into())(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(mfd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_walk_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("root");
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), b"inside").unwrap();
        std::os::unix::fs::symlink("/", r.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        std::fs::write(dir.path().join("outside"), b"host").unwrap();
        let root = std::fs::File::open(&r).unwrap();
        let read = |p: &str, flags: i32| -> std::io::Result<Vec<u8>> {
            let fd = walk_in_root(root.as_raw_fd(), Path::new(p), flags, 0)?;
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut v)?;
            Ok(v)
        };
        for p in ["/escape/etc/passwd", "etc/up", "/../../etc/passwd", "escape/escape/../etc/up"] {
            assert_eq!(read(p, libc::O_RDONLY).unwrap(), b"inside", "{p}");
        }
        assert!(read("/escape/../outside", libc::O_RDONLY).is_err());
        assert_eq!(read("loop", libc::O_RDONLY).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        // O_NOFOLLOW keeps the last link itself.
        let fd =
            walk_in_root(root.as_raw_fd(), Path::new("/etc/up"), libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        // openat2 agrees on every path.
        for p in ["/escape/etc/passwd", "etc/up", "/../../etc/passwd"] {
            let fd = open_in_root(root.as_raw_fd(), Path::new(p), libc::O_RDONLY, 0).unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut v).unwrap();
            assert_eq!(v, b"inside");
        }
    }
}
