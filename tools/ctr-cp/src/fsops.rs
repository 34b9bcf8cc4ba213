//! The copy itself, by file descriptor only: a walker that reads a tree
//! below an open directory (each step one `openat(O_PATH|O_NOFOLLOW)` of a
//! single name relative to a descriptor already held, so swapping a
//! directory for a symlink mid-copy leads nowhere), an extractor that
//! writes entries below an open directory the same way (existing
//! non-directories are unlinked and created anew with O_EXCL, so nothing is
//! ever opened or written through a link or a device node), and the tar
//! reader and writer for `-`. Metadata is set through the descriptor of the
//! object itself (`/proc/self/fd/N` for an O_PATH descriptor), never by
//! path.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("tar stream")]
    Tar(#[source] std::io::Error),
}

impl kist_common::HasExitCode for FsError {
    fn exit_code(&self) -> kist_common::ExitCode {
        match self {
            FsError::Io { source, .. } => kist_common::exit::io_exit_code(source),
            FsError::Refused(_) => kist_common::ExitCode::Failure,
            FsError::Tar(_) => kist_common::ExitCode::Integrity,
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io { op, path: path.to_path_buf(), source }
}

fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cname(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// What one entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    /// A second name of a file already emitted, by its path in the stream.
    Hardlink(PathBuf),
    Fifo,
}

/// One entry of the stream between a source and a sink. `path` is
/// relative, made of normal components only.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
}

pub trait Sink {
    fn put(&mut self, e: &Entry, data: &mut dyn Read) -> Result<(), FsError>;
}

/// Opens `name` below `dir` as O_PATH without following a symlink.
pub fn open_path(dir: RawFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let c = cname(name)?;
    // SAFETY: valid C string; the result is checked.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(last());
    }
    Ok(st)
}

fn fmt(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Reopens an O_PATH descriptor for reading: the magic link of our own
/// descriptor names the same inode, so no path is looked up again.
fn reopen(fd: RawFd, flags: i32) -> std::io::Result<OwnedFd> {
    let p = CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C string; the result is checked.
    let r = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) };
    if r < 0 {
        return Err(last());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn readlink_fd(fd: RawFd) -> std::io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat of the O_PATH symlink itself (empty path) into our buffer.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// The names in a directory, `.` and `..` left out.
fn list(dir: RawFd) -> std::io::Result<Vec<OsString>> {
    // SAFETY: openat of "." below a directory descriptor.
    let fd =
        unsafe { libc::openat(dir, c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: fd is an open directory; fdopendir takes it over.
    let dp = unsafe { libc::fdopendir(fd) };
    if dp.is_null() {
        let e = last();
        // SAFETY: fd is still ours when fdopendir failed.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: dp is a valid DIR*; the entry is valid until the next readdir.
        let ent = unsafe { libc::readdir(dp) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push(OsString::from_vec(b.to_vec()));
        }
    }
    // SAFETY: dp came from fdopendir and is closed once.
    unsafe { libc::closedir(dp) };
    out.sort();
    Ok(out)
}

fn entry_of(path: PathBuf, st: &libc::stat, kind: Kind) -> Entry {
    Entry {
        path,
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: st.st_mtime,
        size: st.st_size as u64,
    }
}

/// Walks the object `fd` (an O_PATH descriptor) as `path` and everything
/// below it into `sink`. Devices and sockets are skipped with a warning.
pub fn walk(fd: OwnedFd, path: PathBuf, sink: &mut dyn Sink) -> Result<(), FsError> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk_one(fd, path, sink, &mut links)
}

fn walk_one(
    fd: OwnedFd,
    path: PathBuf,
    sink: &mut dyn Sink,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), FsError> {
    let st = fstat(fd.as_raw_fd()).map_err(io("stat", &path))?;
    match fmt(&st) {
        libc::S_IFDIR => {
            sink.put(&entry_of(path.clone(), &st, Kind::Dir), &mut std::io::empty())?;
            for name in list(fd.as_raw_fd()).map_err(io("list", &path))? {
                let child = path.join(&name);
                match open_path(fd.as_raw_fd(), &name) {
                    Ok(cfd) => walk_one(cfd, child, sink, links)?,
                    // Removed while we walk: what is gone is not copied.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(io("open", &child)(e)),
                }
            }
        }
        libc::S_IFREG => {
            let key = (st.st_dev, st.st_ino);
            if st.st_nlink > 1 {
                if let Some(first) = links.get(&key) {
                    let e = entry_of(path, &st, Kind::Hardlink(first.clone()));
                    return sink.put(&Entry { size: 0, ..e }, &mut std::io::empty());
                }
                links.insert(key, path.clone());
            }
            let file =
                reopen(fd.as_raw_fd(), libc::O_RDONLY | libc::O_NONBLOCK).map_err(io("open", &path))?;
            let mut file = std::fs::File::from(file);
            sink.put(&entry_of(path, &st, Kind::File), &mut file)?;
        }
        libc::S_IFLNK => {
            let target = readlink_fd(fd.as_raw_fd()).map_err(io("readlink", &path))?;
            sink.put(&entry_of(path, &st, Kind::Symlink(target)), &mut std::io::empty())?;
        }
        libc::S_IFIFO => {
            sink.put(&Entry { size: 0, ..entry_of(path, &st, Kind::Fifo) }, &mut std::io::empty())?;
        }
        _ => kist_common::warn!("{}: device or socket skipped", path.display()),
    }
    Ok(())
}

/// How the source's top name lands at the destination: renamed, or (for
/// `SRC/.` into an existing directory) dropped so the content lands
/// directly in the destination directory.
#[derive(Debug, Clone)]
pub enum Map {
    Identity,
    Rename { from: OsString, to: OsString },
    ContentOnly { from: OsString },
}

impl Map {
    pub fn apply(&self, p: &Path) -> Option<PathBuf> {
        let mut comps = p.components();
        let first = comps.next()?;
        let rest = comps.as_path();
        match self {
            Map::Identity => Some(p.to_path_buf()),
            Map::Rename { from, to } if first.as_os_str() == from => Some(Path::new(to).join(rest)),
            Map::ContentOnly { from } if first.as_os_str() == from => {
                if rest.as_os_str().is_empty() {
                    None
                } else {
                    Some(rest.to_path_buf())
                }
            }
            _ => Some(p.to_path_buf()),
        }
    }
}

/// Writes entries below an open directory (see the module header).
pub struct Extractor {
    pub base: OwnedFd,
    /// Where `base` is, for messages.
    pub shown: PathBuf,
    pub map: Map,
    /// `-a`: keep the entries' uid and gid.
    pub keep_owner: bool,
}

fn is_err(e: &std::io::Error, code: i32) -> bool {
    e.raw_os_error() == Some(code)
}

fn unlink_nondir(dir: RawFd, name: &CStr) -> std::io::Result<()> {
    // SAFETY: unlinkat of one name below a directory descriptor; a
    // directory is refused by the kernel (EISDIR), never removed.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 {
        let e = last();
        if !is_err(&e, libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

impl Extractor {
    /// The directory holding the last component of `rel`, walked one name
    /// at a time without following symlinks; missing ones are created when
    /// `create`.
    fn parent_of(&self, rel: &Path, create: bool) -> Result<(OwnedFd, OsString), FsError> {
        let shown = self.shown.join(rel);
        let comps: Vec<&OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(FsError::Refused(format!("{}: not a plain relative path", rel.display()))),
            })
            .collect::<Result<_, _>>()?;
        let Some((final_name, dirs)) = comps.split_last() else {
            return Err(FsError::Refused("empty path".into()));
        };
        let mut cur = reopen_dir(self.base.as_raw_fd()).map_err(io("open", &self.shown))?;
        for d in dirs {
            let c = cname(d).map_err(io("open", &shown))?;
            cur = loop {
                // SAFETY: one name below a held directory descriptor, never following a link.
                let fd = unsafe {
                    libc::openat(
                        cur.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    // SAFETY: a descriptor we just opened.
                    break unsafe { OwnedFd::from_raw_fd(fd) };
                }
                let e = last();
                if is_err(&e, libc::ENOENT) && create {
                    // SAFETY: mkdirat of one name below a held descriptor.
                    if unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                        let e = last();
                        if !is_err(&e, libc::EEXIST) {
                            return Err(io("mkdir", &shown)(e));
                        }
                    }
                    continue;
                }
                if is_err(&e, libc::ELOOP) || is_err(&e, libc::ENOTDIR) {
                    return Err(FsError::Refused(format!(
                        "{}: a parent is not a directory (a symlink is never followed here)",
                        shown.display()
                    )));
                }
                return Err(io("open", &shown)(e));
            };
        }
        Ok((cur, final_name.to_os_string()))
    }

    fn set_meta(&self, fd: RawFd, e: &Entry, shown: &Path, chmod: bool) -> Result<(), FsError> {
        let p =
            CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| FsError::Refused("fd path".into()))?;
        if chmod {
            // SAFETY: chmod of the inode our own descriptor names.
            if unsafe { libc::chmod(p.as_ptr(), e.mode & 0o7777) } != 0 {
                return Err(io("chmod", shown)(last()));
            }
        }
        if self.keep_owner {
            // SAFETY: fchownat on the descriptor itself (AT_EMPTY_PATH).
            if unsafe { libc::fchownat(fd, c"".as_ptr(), e.uid, e.gid, libc::AT_EMPTY_PATH) } != 0 {
                return Err(io("chown", shown)(last()));
            }
            if chmod && e.mode & 0o6000 != 0 {
                // chown clears set-id bits: restore them.
                // SAFETY: as above.
                unsafe { libc::chmod(p.as_ptr(), e.mode & 0o7777) };
            }
        }
        let ts = libc::timespec { tv_sec: e.mtime as libc::time_t, tv_nsec: 0 };
        let times = [ts, ts];
        // SAFETY: utimensat on the descriptor itself; for a symlink
        // AT_EMPTY_PATH applies to the link.
        unsafe { libc::utimensat(fd, c"".as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH) };
        Ok(())
    }
}

fn reopen_dir(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: openat of "." below a directory descriptor.
    let r = unsafe { libc::openat(fd, c".".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(last());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

impl Sink for Extractor {
    fn put(&mut self, e: &Entry, data: &mut dyn Read) -> Result<(), FsError> {
        let Some(rel) = self.map.apply(&e.path) else { return Ok(()) };
        let shown = self.shown.join(&rel);
        let (dir, name) = self.parent_of(&rel, true)?;
        let d = dir.as_raw_fd();
        let c = cname(&name).map_err(io("create", &shown))?;
        match &e.kind {
            Kind::Dir => {
                // SAFETY: mkdirat of one name below a held descriptor.
                if unsafe { libc::mkdirat(d, c.as_ptr(), 0o700) } != 0 {
                    let err = last();
                    if !is_err(&err, libc::EEXIST) {
                        return Err(io("mkdir", &shown)(err));
                    }
                    let fd = open_path(d, &name).map_err(io("open", &shown))?;
                    if fmt(&fstat(fd.as_raw_fd()).map_err(io("stat", &shown))?) != libc::S_IFDIR {
                        // Docker replaces a non-directory by the directory.
                        unlink_nondir(d, &c).map_err(io("unlink", &shown))?;
                        // SAFETY: as above.
                        if unsafe { libc::mkdirat(d, c.as_ptr(), 0o700) } != 0 {
                            return Err(io("mkdir", &shown)(last()));
                        }
                    }
                }
                let fd = open_path(d, &name).map_err(io("open", &shown))?;
                if fmt(&fstat(fd.as_raw_fd()).map_err(io("stat", &shown))?) != libc::S_IFDIR {
                    return Err(FsError::Refused(format!("{}: replaced while copying", shown.display())));
                }
                self.set_meta(fd.as_raw_fd(), e, &shown, true)
            }
            Kind::File => {
                let fd = create_excl(d, &c).map_err(|err| {
                    if is_err(&err, libc::EISDIR) {
                        FsError::Refused(format!(
                            "cannot overwrite directory {} with a file",
                            shown.display()
                        ))
                    } else {
                        io("create", &shown)(err)
                    }
                })?;
                let mut f = std::fs::File::from(fd);
                let n = std::io::copy(&mut data.take(e.size), &mut f).map_err(io("write", &shown))?;
                if n < e.size {
                    kist_common::warn!("{}: the source shrank while it was copied", shown.display());
                }
                self.set_meta(f.as_raw_fd(), e, &shown, true)
            }
            Kind::Symlink(target) => {
                let t = CString::new(target.as_os_str().as_bytes())
                    .map_err(|_| FsError::Refused("symlink target with NUL".into()))?;
                for attempt in 0..3 {
                    // SAFETY: symlinkat of one name below a held descriptor.
                    if unsafe { libc::symlinkat(t.as_ptr(), d, c.as_ptr()) } == 0 {
                        break;
                    }
                    let err = last();
                    if !is_err(&err, libc::EEXIST) || attempt == 2 {
                        return Err(io("symlink", &shown)(err));
                    }
                    unlink_nondir(d, &c).map_err(|err| {
                        if is_err(&err, libc::EISDIR) {
                            FsError::Refused(format!(
                                "cannot overwrite directory {} with a symlink",
                                shown.display()
                            ))
                        } else {
                            io("unlink", &shown)(err)
                        }
                    })?;
                }
                let fd = open_path(d, &name).map_err(io("open", &shown))?;
                self.set_meta(fd.as_raw_fd(), e, &shown, false)
            }
            Kind::Hardlink(target) => {
                let Some(trel) = self.map.apply(target) else {
                    return Err(FsError::Refused(format!(
                        "{}: hard link to the copy's top",
                        shown.display()
                    )));
                };
                let (tdir, tname) = self.parent_of(&trel, false)?;
                let tc = cname(&tname).map_err(io("link", &shown))?;
                unlink_nondir(d, &c).map_err(io("unlink", &shown))?;
                // SAFETY: linkat between two held directory descriptors;
                // flags 0: a symlink target is linked itself, not followed.
                if unsafe { libc::linkat(tdir.as_raw_fd(), tc.as_ptr(), d, c.as_ptr(), 0) } != 0 {
                    return Err(io("link", &shown)(last()));
                }
                Ok(())
            }
            Kind::Fifo => {
                unlink_nondir(d, &c).map_err(io("unlink", &shown))?;
                // SAFETY: mknodat of a fifo below a held descriptor.
                if unsafe { libc::mknodat(d, c.as_ptr(), libc::S_IFIFO | (e.mode & 0o777), 0) } != 0 {
                    return Err(io("mkfifo", &shown)(last()));
                }
                let fd = open_path(d, &name).map_err(io("open", &shown))?;
                self.set_meta(fd.as_raw_fd(), e, &shown, true)
            }
        }
    }
}

/// A new regular file `name` below `dir`: whatever non-directory was there
/// is unlinked first and the file is created with O_EXCL, so an existing
/// link, fifo or device node is never opened.
fn create_excl(dir: RawFd, name: &CStr) -> std::io::Result<OwnedFd> {
    for _ in 0..5 {
        unlink_nondir(dir, name)?;
        // SAFETY: openat with O_CREAT|O_EXCL of one name below a held descriptor.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor we just opened.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = last();
        if !is_err(&e, libc::EEXIST) {
            return Err(e);
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EEXIST))
}

/// Writes entries as a tar stream (GNU long names where needed).
pub struct TarSink<W: Write> {
    pub builder: tar::Builder<W>,
}

/// A reader that yields exactly `left` bytes: the source's, then zeros if
/// it shrank, so the tar header's size stays true.
struct Exact<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    eof: bool,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = if self.eof { 0 } else { self.inner.read(&mut buf[..want])? };
        let n = if n == 0 {
            self.eof = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn put(&mut self, e: &Entry, data: &mut dyn Read) -> Result<(), FsError> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(e.mtime.max(0) as u64);
        h.set_size(0);
        let b = &mut self.builder;
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, &e.path, std::io::empty())
            }
            Kind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                b.append_data(&mut h, &e.path, Exact { inner: data, left: e.size, eof: false })
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &e.path, t)
            }
            Kind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &e.path, t)
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &e.path, std::io::empty())
            }
        }
        .map_err(FsError::Tar)
    }
}

/// A tar member's name as a plain relative path: leading `/` and `.`
/// dropped; `..` refused. `None` for the archive's own root (`./`).
fn clean(p: &Path) -> Result<Option<PathBuf>, FsError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(FsError::Refused(format!("tar member {}: '..' is not allowed", p.display())))
            }
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Feeds every member of a tar stream to `sink`.
pub fn read_tar<R: Read>(input: R, sink: &mut dyn Sink) -> Result<(), FsError> {
    let mut ar = tar::Archive::new(input);
    for member in ar.entries().map_err(FsError::Tar)? {
        let mut m = member.map_err(FsError::Tar)?;
        let h = m.header().clone();
        let raw = m.path().map_err(FsError::Tar)?.into_owned();
        let Some(path) = clean(&raw)? else { continue };
        let link = || -> Result<PathBuf, FsError> {
            Ok(m.link_name().map_err(FsError::Tar)?.map(|l| l.into_owned()).unwrap_or_default())
        };
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Symlink => Kind::Symlink(link()?),
            tar::EntryType::Link => match clean(&link()?)? {
                Some(t) => Kind::Hardlink(t),
                None => continue,
            },
            tar::EntryType::Fifo => Kind::Fifo,
            other => {
                kist_common::warn!("tar member {}: type {other:?} skipped", raw.display());
                continue;
            }
        };
        let e = Entry {
            path,
            size: if kind == Kind::File { h.size().map_err(FsError::Tar)? } else { 0 },
            kind,
            mode: h.mode().map_err(FsError::Tar)? & 0o7777,
            uid: h.uid().map_err(FsError::Tar)? as u32,
            gid: h.gid().map_err(FsError::Tar)? as u32,
            mtime: h.mtime().map_err(FsError::Tar)? as i64,
        };
        sink.put(&e, &mut m)?;
    }
    Ok(())
}
