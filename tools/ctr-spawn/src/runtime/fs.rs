//! Safe file-system primitives for building a container's root: paths
//! inside the root are resolved with openat2(RESOLVE_IN_ROOT), so a symlink
//! in the image can never lead outside it, and mounts land on the file
//! descriptor that was resolved (through /proc/self/fd, checked to be
//! procfs), never on a path looked up again after a check (the
//! CVE-2021-30465 class of symlink-exchange races).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::mount::MsFlags;

/// What to create when a mount target is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

fn cstr(p: &Path) -> Result<CString, Errno> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// openat2 with RESOLVE_IN_ROOT: `path` is looked up with `root` as `/`.
pub fn open_in_root(root: RawFd, path: &Path, flags: i32) -> Result<OwnedFd, Errno> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel)?;
    kist_common::fsutil::openat2_in_root(root, &c, flags, 0)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Opens (O_PATH) `path` inside `root`, creating it and its parents as
/// directories (or the last one as an empty file) when missing. Every
/// step is resolved inside the root.
pub fn ensure_in_root(root: RawFd, path: &Path, kind: Kind) -> Result<OwnedFd, Errno> {
    match open_in_root(root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    // Missing: create what the path means inside the root, following
    // symlinks as the container would (an absolute link is relative to the
    // root, `..` stops at it), as runc's securejoin does.
    let resolved = scoped_resolve(root, path)?;
    if resolved != path {
        return ensure_in_root(root, &resolved, kind);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n,
        _ => return Err(Errno::EINVAL),
    };
    let parent_fd = if parent == Path::new("/") || parent.as_os_str().is_empty() {
        open_in_root(root, Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)?
    } else {
        // A directory opened with O_PATH is enough for the *at calls below.
        ensure_in_root(root, parent, Kind::Dir)?
    };
    let cname = cstr(Path::new(name))?;
    match kind {
        Kind::Dir => {
            // SAFETY: valid fd and C string.
            let rc = unsafe { libc::mkdirat(parent_fd.as_raw_fd(), cname.as_ptr(), 0o755) };
            if rc != 0 && Errno::last() != Errno::EEXIST {
                return Err(Errno::last());
            }
        }
        Kind::File => {
            // SAFETY: valid fd and C string; O_NOFOLLOW refuses a symlink planted meanwhile.
            let fd = unsafe {
                libc::openat(
                    parent_fd.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd < 0 && Errno::last() != Errno::EEXIST {
                return Err(Errno::last());
            }
            if fd >= 0 {
                // SAFETY: we own fd.
                unsafe { libc::close(fd) };
            }
        }
    }
    // Re-resolve inside the root: whatever is there now is what we mount on.
    open_in_root(root, path, libc::O_PATH)
}

/// `path` with every symlink along it resolved inside `root`; the part
/// that does not exist yet is appended literally.
pub fn scoped_resolve(root: RawFd, path: &Path) -> Result<std::path::PathBuf, Errno> {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let mut resolved = std::path::PathBuf::from("/");
    let mut pending: std::collections::VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let target = open_in_root(root, &resolved, libc::O_PATH | libc::O_DIRECTORY).ok().and_then(|dir| {
            let name = cstr(Path::new(&c)).ok()?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: valid fd, C string and buffer of the given length.
            let n = unsafe {
                libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if n <= 0 {
                return None;
            }
            buf.truncate(n as usize);
            Some(std::path::PathBuf::from(OsString::from_vec(buf)))
        });
        match target {
            Some(t) => {
                links += 1;
                if links > 255 {
                    return Err(Errno::ELOOP);
                }
                if t.is_absolute() {
                    resolved = std::path::PathBuf::from("/");
                }
                let parts: Vec<OsString> = t
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                for p in parts.into_iter().rev() {
                    pending.push_front(p);
                }
            }
            None => resolved.push(&c),
        }
    }
    Ok(resolved)
}

/// `/proc/self/fd/N` for a descriptor.
pub fn fd_path(fd: RawFd) -> CString {
    // A formatted integer never contains a NUL.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// True if `fd` (or the path) is on a procfs.
pub fn is_procfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        .unwrap_or(false)
}

/// mount(2) with optional C strings.
pub fn mount_raw(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    // SAFETY: every pointer is a valid C string or null.
    let rc = unsafe {
        libc::mount(
            source.map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |s| s.as_ptr()),
            flags.bits(),
            data.map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    Errno::result(rc).map(drop)
}

/// Mounts a file system of `fstype` on the target descriptor.
pub fn mount_fs_on(
    fd: &OwnedFd,
    source: &str,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), Errno> {
    let target = fd_path(fd.as_raw_fd());
    let s = CString::new(source).map_err(|_| Errno::EINVAL)?;
    let t = CString::new(fstype).map_err(|_| Errno::EINVAL)?;
    let d = CString::new(data).map_err(|_| Errno::EINVAL)?;
    mount_raw(Some(&s), &target, Some(&t), flags, if data.is_empty() { None } else { Some(&d) })
}

/// Bind-mounts the source descriptor onto the target descriptor.
pub fn bind_fd(source: RawFd, target: &OwnedFd, recursive: bool) -> Result<(), Errno> {
    let s = fd_path(source);
    let t = fd_path(target.as_raw_fd());
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount_raw(Some(&s), &t, None, flags, None)
}

/// Remounts the mount at `path` (inside `root`) with `flags` (a bind
/// remount, as for read-only binds), keeping the flags the kernel locks.
pub fn remount_in_root(root: RawFd, path: &Path, flags: MsFlags) -> Result<(), Errno> {
    let fd = open_in_root(root, path, libc::O_PATH)?;
    let t = fd_path(fd.as_raw_fd());
    let current = nix::sys::statvfs::statvfs(t.to_str().unwrap_or_default()).map(|s| s.flags()).ok();
    let mut keep = MsFlags::empty();
    if let Some(f) = current {
        use nix::sys::statvfs::FsFlags;
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(a) {
                keep |= b;
            }
        }
    }
    mount_raw(None, &t, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | keep, None)
}

/// Parses mount options into flags and file-system data, as runc does.
pub fn parse_options(options: &[String]) -> (MsFlags, Vec<String>, bool) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut readonly = false;
    for o in options {
        match o.as_str() {
            "ro" => {
                flags |= MsFlags::MS_RDONLY;
                readonly = true;
            }
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable"
            | "runbindable" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data, readonly)
}

/// Copies the directory tree at `src` (a path through /proc/self/fd of a
/// directory inside the rootfs) into the directory `dst`, keeping modes,
/// owners and symlinks (never following them): Docker fills a new volume
/// with what the image has at the mount point. An entry `dst` already has
/// is kept (a directory on both sides is merged), as Docker's copy made at
/// create would have been overwritten by the later write.
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
    // Followed: `src` is the magic link of a descriptor already resolved
    // inside the rootfs (lstat would give the link's own mode, 0000).
    let meta = std::fs::metadata(src)?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    merge_tree(src, dst)
}

fn merge_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let m = std::fs::symlink_metadata(&from)?;
        let ft = m.file_type();
        if let Ok(have) = std::fs::symlink_metadata(&to) {
            if ft.is_dir() && have.is_dir() {
                merge_tree(&from, &to)?;
            }
            continue;
        }
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            lchown(&to, Some(m.uid()), Some(m.gid()))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
            lchown(&to, Some(m.uid()), Some(m.gid()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
    }
    Ok(())
}
