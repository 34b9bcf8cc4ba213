//! A stopped container's bind mounts and volumes, put in place for a copy,
//! as docker cp mounts them for a container that is not running: without
//! them a copy to or from a volume's path would see (and write) the
//! directory the volume hides in the root file system instead of the
//! volume's data.
//!
//! ctr-cp moves into a mount namespace of its own (private, so nothing
//! propagates to the host's), attaches the container's detached overlay
//! (kist_common::croot) at the container's `rootfs` directory there, and
//! mounts each bind mount of config.json, in its order, onto its target:
//! the source is cloned with open_tree and moved onto a descriptor of the
//! target opened inside the root (openat2 RESOLVE_IN_ROOT), so a symlink
//! in the container can redirect a mount only to another place inside it.
//! Missing targets are created as ctr-spawn would create them (a directory,
//! or an empty file for a file). `:ro` mounts are read-only here too. All
//! of it vanishes when ctr-cp exits and its namespace with it.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use kist_common::container::UserMount;
use kist_common::croot;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount {what} of stopped container {id} ({step})")]
    Mount {
        id: String,
        what: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Container(#[from] kist_common::container::ContainerError),
}

impl kist_common::HasExitCode for MountError {
    fn exit_code(&self) -> kist_common::ExitCode {
        match self {
            MountError::Mount { source, .. } => kist_common::exit::io_exit_code(source),
            MountError::Container(e) => e.exit_code(),
        }
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 1;

/// struct mount_attr of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn cstr(p: &OsStr) -> std::io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Moves the mount `from` (a detached tree) onto `to` (a descriptor of a
/// directory or file in this namespace).
fn move_onto(from: RawFd, to: RawFd) -> std::io::Result<()> {
    // SAFETY: move_mount with descriptors and empty paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            to,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(last());
    }
    Ok(())
}

/// A private mount namespace of ctr-cp's own: nothing mounted from here on
/// reaches the host's namespace, and all of it goes when ctr-cp exits.
fn private_namespace() -> std::io::Result<()> {
    // SAFETY: unshare and mount with constant arguments; ctr-cp is single-threaded.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(last());
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(last());
        }
    }
    Ok(())
}

/// The target of a mount inside the root, created if missing: the
/// existing part of the path is resolved inside the root, the missing
/// components made one at a time below it (a directory each, the last one
/// an empty file when the source is a file).
fn target(root: RawFd, dest: &Path, file: bool) -> std::io::Result<OwnedFd> {
    match croot::open_in_root(root, dest, libc::O_PATH, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        Err(_) => {}
    }
    let names: Vec<&OsStr> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut dir = croot::open_in_root(root, Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut walked = std::path::PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        walked.push(name);
        let lastone = i + 1 == names.len();
        match croot::open_in_root(root, &walked, libc::O_PATH, 0) {
            Ok(fd) if !lastone => {
                dir = fd;
                continue;
            }
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            Err(_) => {}
        }
        let c = cstr(name)?;
        // SAFETY: mkdirat/openat of one name below a held directory descriptor.
        unsafe {
            if lastone && file {
                let fd = libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                );
                drop(owned(fd as libc::c_long)?);
            } else if libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) != 0
                && last().raw_os_error() != Some(libc::EEXIST)
            {
                return Err(last());
            }
        }
        let fd = croot::open_in_root(root, &walked, libc::O_PATH, 0)?;
        if lastone {
            return Ok(fd);
        }
        dir = fd;
    }
    Ok(dir)
}

/// Mounts one bind mount's source onto its target inside the root.
fn bind(root: RawFd, m: &UserMount) -> Result<(), (&'static str, std::io::Error)> {
    let src = cstr(m.source.as_os_str()).map_err(|e| ("source", e))?;
    // SAFETY: open_tree of a host path we were given; the result is checked.
    let tree = owned(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    })
    .map_err(|e| ("open_tree", e))?;
    if m.readonly {
        let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
        // SAFETY: mount_setattr on our detached tree with a valid mount_attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(("read-only", last()));
        }
    }
    let file = !m.source.is_dir();
    let to = target(root, &m.destination, file).map_err(|e| ("target", e))?;
    move_onto(tree.as_raw_fd(), to.as_raw_fd()).map_err(|e| ("move_mount", e))
}

/// Attaches the stopped container's detached overlay `overlay` at
/// `rootfs` in a private namespace, mounts `mounts` into it, and returns
/// a descriptor of the root with everything in place.
pub fn with_mounts(
    id: &str,
    overlay: OwnedFd,
    rootfs: &Path,
    mounts: &[UserMount],
) -> Result<OwnedFd, MountError> {
    let err = |what: String, step: &'static str| {
        move |source| MountError::Mount { id: id.to_string(), what, step, source }
    };
    private_namespace().map_err(err("its volumes".into(), "unshare"))?;
    let c = cstr(rootfs.as_os_str()).map_err(err("its root".into(), "path"))?;
    // SAFETY: a plain open of the container's mount point directory.
    let at = owned(unsafe {
        libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    } as libc::c_long)
    .map_err(err("its root".into(), "open rootfs"))?;
    move_onto(overlay.as_raw_fd(), at.as_raw_fd()).map_err(err("its root".into(), "move_mount"))?;
    drop(overlay);
    // The root as mounted now (the descriptor above names the directory beneath it).
    // SAFETY: as above.
    let root = owned(unsafe {
        libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    } as libc::c_long)
    .map_err(err("its root".into(), "open root"))?;
    for m in mounts {
        bind(root.as_raw_fd(), m).map_err(|(step, source)| MountError::Mount {
            id: id.to_string(),
            what: format!("{} on {}", m.source.display(), m.destination.display()),
            step,
            source,
        })?;
    }
    // Lookups from the root cross into the mounts just made.
    // SAFETY: as above.
    let fd = owned(unsafe {
        libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    } as libc::c_long)
    .map_err(err("its root".into(), "open root"))?;
    Ok(fd)
}
