//! Path resolution confined to a root directory, by file descriptor.
//!
//! Every name a layer carries is resolved as if the root were `/`: with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where the kernel has
//! it, else by an equivalent walk in user space (one component at a time
//! with `O_NOFOLLOW`, symlinks read and re-resolved against the root, `..`
//! clamped at the root). Callers then act on the *last* component with an
//! `*at` call relative to the parent's descriptor and without following it,
//! so nothing outside the root is ever created, changed or read, whatever
//! symlinks earlier entries planted (the class of umoci CVE-2021-29136 and
//! Docker CVE-2014-9356).

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

/// A path inside the root, cleaned lexically: no empty, `.` or `..`
/// components (`..` at the top stays at the top, as `filepath.Join("/", p)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CleanPath {
    parts: Vec<Vec<u8>>,
}

impl CleanPath {
    pub fn new(raw: &[u8]) -> CleanPath {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                other => parts.push(other.to_vec()),
            }
        }
        CleanPath { parts }
    }

    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn parts(&self) -> &[Vec<u8>] {
        &self.parts
    }

    /// The parent path and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(CleanPath, &[u8])> {
        let (last, rest) = self.parts.split_last()?;
        Some((CleanPath { parts: rest.to_vec() }, last.as_slice()))
    }

    pub fn join(&self, name: &[u8]) -> CleanPath {
        let mut parts = self.parts.clone();
        parts.push(name.to_vec());
        CleanPath { parts }
    }

    pub fn starts_with(&self, other: &CleanPath) -> bool {
        self.parts.starts_with(&other.parts)
    }

    /// `a/b/c`, or `.` for the root, for openat2 and messages.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.parts.is_empty() {
            return b".".to_vec();
        }
        self.parts.join(&b'/')
    }

    pub fn display(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.parts.join(&b'/')))
    }
}

/// Which resolver is in use: 0 unknown, 1 openat2, 2 user-space walk.
static MODE: AtomicU8 = AtomicU8::new(0);

fn use_openat2() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // A knob for the tests of the fallback walk; kernels before 5.6
            // (or seccomp filters that hide openat2) select it by themselves.
            let forced = std::env::var_os("KIST_UNPACK_RESOLVER").is_some_and(|v| v == "walk");
            MODE.store(if forced { 2 } else { 1 }, Ordering::Relaxed);
            !forced
        }
    }
}

pub fn cstr(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// `openat` returning an owned descriptor.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is a valid NUL-terminated string and `dir` a live descriptor.
        let fd = unsafe {
            libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint)
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us alone.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = errno();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn openat2_in_root(root: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    kist_common::fsutil::openat2_in_root(root.as_raw_fd(), path, flags, 0)
}

fn fstat(fd: BorrowedFd<'_>) -> std::io::Result<libc::stat> {
    // SAFETY: all-zero is a valid stat buffer, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(errno());
    }
    Ok(st)
}

/// `fstatat` with `AT_SYMLINK_NOFOLLOW`.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: all-zero is a valid stat buffer, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid string and out-pointer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(errno());
    }
    Ok(st)
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn cur_fd<'a>(root: BorrowedFd<'a>, stack: &'a [OwnedFd]) -> BorrowedFd<'a> {
    stack.last().map_or(root, |f| f.as_fd())
}

/// The user-space walk: resolves `path` under `root` component by
/// component, never following a symlink except by reading it and resolving
/// its target against the same root.
fn walk_in_root(root: BorrowedFd<'_>, path: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let mut stack: Vec<OwnedFd> = Vec::new();
    let dup_root = || -> std::io::Result<OwnedFd> { root.try_clone_to_owned() };
    let mut todo: std::collections::VecDeque<Vec<u8>> =
        path.split(|&b| b == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec).collect();
    let mut links = 0;
    while let Some(comp) = todo.pop_front() {
        match comp.as_slice() {
            b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let name = cstr(&comp)?;
        let fd = openat(cur_fd(root, &stack), &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            links += 1;
            if links > 40 {
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = readlinkat(cur_fd(root, &stack), &name)?;
            if target.first() == Some(&b'/') {
                stack.clear();
            }
            for c in target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
                todo.push_front(c.to_vec());
            }
            continue;
        }
        if !todo.is_empty() && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        stack.push(fd);
    }
    let last = match stack.pop() {
        Some(fd) => fd,
        None => dup_root()?,
    };
    // Re-open with the flags asked for: the walk itself only holds O_PATH.
    if flags & libc::O_PATH != 0 {
        if flags & libc::O_DIRECTORY != 0 && fstat(last.as_fd())?.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        return Ok(last);
    }
    let dot = cstr(b".")?;
    if flags & libc::O_DIRECTORY != 0 {
        return openat(last.as_fd(), &dot, flags & !libc::O_PATH, 0);
    }
    // A non-directory cannot be re-opened through "."; use its proc link,
    // which names this very inode rather than a path.
    let proc = cstr(format!("/proc/self/fd/{}", last.as_raw_fd()).as_bytes())?;
    // SAFETY: valid string; the result is checked.
    let fd = unsafe { libc::open(proc.as_ptr(), (flags & !libc::O_PATH) | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` as if `root` were `/`. Symlinks are followed but never out
/// of the root; the last component too, unless `flags` has `O_NOFOLLOW`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &CleanPath, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let bytes = path.to_bytes();
    if use_openat2() {
        let c = cstr(&bytes)?;
        match openat2_in_root(root, &c, flags) {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::E2BIG)) =>
            {
                MODE.store(2, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    if flags & libc::O_NOFOLLOW != 0 {
        // The walk follows every component; resolve the parent and open the
        // last one without following it.
        if let Some((parent, last)) = path.split_last() {
            let dir = walk_in_root(root, &parent.to_bytes(), libc::O_PATH | libc::O_DIRECTORY)?;
            return openat(dir.as_fd(), &cstr(last)?, flags, 0);
        }
    }
    walk_in_root(root, &bytes, flags)
}

/// The directory `dir` as an `O_PATH` descriptor, created (mode 0755,
/// owned by root) with any missing parents, all inside the root.
pub fn mkdir_all(root: BorrowedFd<'_>, dir: &CleanPath) -> std::io::Result<OwnedFd> {
    mkdir_all_depth(root, dir, 0)
}

fn mkdir_all_depth(root: BorrowedFd<'_>, dir: &CleanPath, depth: usize) -> std::io::Result<OwnedFd> {
    if depth > 40 {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    match open_in_root(root, dir, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let Some((parent, name)) = dir.split_last() else { return Err(e) };
            let pfd = mkdir_all_depth(root, &parent, depth + 1)?;
            let c = cstr(name)?;
            // SAFETY: valid string and live descriptor.
            if unsafe { libc::mkdirat(pfd.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                let e = errno();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            // Resolve again from the root: `name` may be a symlink planted
            // by an earlier entry, which must resolve inside the root too.
            match open_in_root(root, dir, libc::O_PATH | libc::O_DIRECTORY) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // A dangling symlink: create what it points at, inside
                    // the root, as tar does when it follows one.
                    let target = readlinkat(pfd.as_fd(), &c)?;
                    let joined = if target.first() == Some(&b'/') {
                        CleanPath::new(&target)
                    } else {
                        let mut p = parent.to_bytes();
                        p.push(b'/');
                        p.extend_from_slice(&target);
                        CleanPath::new(&p)
                    };
                    mkdir_all_depth(root, &joined, depth + 1)?;
                    open_in_root(root, dir, libc::O_PATH | libc::O_DIRECTORY)
                }
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir`, recursively if it is a directory, never
/// following a symlink.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<()> {
    // SAFETY: valid string and live descriptor.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = errno();
    match e.raw_os_error() {
        Some(libc::ENOENT) => return Ok(()),
        Some(libc::EISDIR) | Some(libc::EPERM) => {}
        _ => return Err(e),
    }
    let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
    clear_dir(sub.as_fd())?;
    // SAFETY: valid string and live descriptor.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Removes every entry of an open directory, not the directory itself.
pub fn clear_dir(dir: BorrowedFd<'_>) -> std::io::Result<()> {
    for name in list_dir(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// The names in a directory (without `.` and `..`).
pub fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Vec<CString>> {
    let dot = cstr(b".")?;
    let fd = openat(dir, &dot, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d =
        nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)).map_err(std::io::Error::from)?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(std::io::Error::from)?;
        let n = ent.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        out.push(n.to_owned());
    }
    Ok(out)
}

/// Opens a directory on the host as the root of a resolution.
pub fn open_root(path: &Path) -> std::io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid string; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_stay_under_the_root() {
        assert_eq!(CleanPath::new(b"/a/./b//c/").to_bytes(), b"a/b/c");
        assert_eq!(CleanPath::new(b"../../etc/passwd").to_bytes(), b"etc/passwd");
        assert_eq!(CleanPath::new(b"a/../../b").to_bytes(), b"b");
        assert!(CleanPath::new(b"./").is_root());
    }

    fn both_resolvers(f: impl Fn()) {
        MODE.store(1, Ordering::Relaxed);
        f();
        MODE.store(2, Ordering::Relaxed);
        f();
        MODE.store(0, Ordering::Relaxed);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("real/dotdot")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        let rfd = open_root(&root).unwrap();
        both_resolvers(|| {
            let fd = mkdir_all(rfd.as_fd(), &CleanPath::new(b"up/x/y")).unwrap();
            drop(fd);
            assert!(root.join("x/y").is_dir());
            let fd = mkdir_all(rfd.as_fd(), &CleanPath::new(b"real/dotdot/z")).unwrap();
            drop(fd);
            assert!(root.join("z").is_dir());
            let fd =
                open_in_root(rfd.as_fd(), &CleanPath::new(b"abs"), libc::O_PATH | libc::O_DIRECTORY).unwrap();
            let st = fstat(fd.as_fd()).unwrap();
            let real = std::fs::metadata(root.join("real")).unwrap();
            assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&real));
            let fd =
                open_in_root(rfd.as_fd(), &CleanPath::new(b"abs"), libc::O_PATH | libc::O_NOFOLLOW).unwrap();
            assert_eq!(fstat(fd.as_fd()).unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
        });
        assert_eq!(std::fs::read_dir(outer.path()).unwrap().count(), 1);
    }
}
