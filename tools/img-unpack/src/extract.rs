//! Applies one layer's tar stream to a directory, every name resolved
//! inside that directory by descriptor (see `resolve`).
//!
//! Two ways of treating deletions: `Whiteouts::Overlay` keeps them as the
//! overlay file system reads them (a 0/0 character device for `.wh.NAME`,
//! `trusted.overlay.opaque=y` for `.wh..wh..opq`), so each layer becomes a
//! snapshot of its own; `Whiteouts::Apply` carries them out on a tree that
//! holds the layers below, for `--flatten` and `--bundle`.
//!
//! Order matters for metadata: owner before mode (chown clears set-id
//! bits), directory times last (creating entries changes them).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::resolve::{self, cstr, CleanPath};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{path}: cannot {op}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: refusing whiteout of {name:?}")]
    BadWhiteout { path: String, name: String },
    #[error("{path}: hard link target {target} does not exist in this layer or below")]
    LinkTarget { path: String, target: String },
    #[error("{path}: hard link target {target} is a directory")]
    LinkToDir { path: String, target: String },
    #[error("reading the layer's tar stream")]
    Tar(#[source] std::io::Error),
}

/// What a new entry takes from the directory it is created in: the
/// directory's group if it is set-group-ID (else ours), and for a new
/// directory the set-group-ID bit too.
#[derive(Debug, Clone, Copy)]
struct Inherited {
    gid: u32,
    setgid: bool,
}

/// The mode an entry can be created with so that no chmod has to follow
/// (no set-id or sticky bits, none the umask would clear), if there is one.
fn creation_mode(mode: u32) -> Option<u32> {
    match umask() {
        Some(m) if mode & 0o7000 == 0 && mode & m == 0 => Some(mode),
        _ => None,
    }
}

/// The process's umask, read once from /proc (setting it to read it
/// back would race with the other layers' threads); `None` if unknown,
/// and then every file gets its mode by fchmod.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Files smaller than this are left to the final flush: starting their
/// writeback one by one costs a syscall each and buys little.
const WRITEBACK_MIN: u64 = 64 << 10;

/// How `.wh.` entries are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    Overlay,
    Apply,
}

fn io<'a>(path: &'a CleanPath, op: &'static str) -> impl FnOnce(std::io::Error) -> ExtractError + 'a {
    move |source| ExtractError::Io { path: path.display(), op, source }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Metadata of one entry, read from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Xattrs the overlay file system itself interprets: a layer must not be
/// able to plant redirects, metacopy or opaque markers of its own.
fn xattr_allowed(name: &[u8]) -> bool {
    !name.starts_with(b"trusted.overlay.") && !name.starts_with(b"user.overlay.")
}

fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut nsec: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nsec = format!("{digits:0<9}").parse().ok()?;
        if sec < 0 && nsec > 0 {
            return Some(libc::timespec { tv_sec: sec - 1, tv_nsec: 1_000_000_000 - nsec });
        }
    }
    Some(libc::timespec { tv_sec: sec, tv_nsec: nsec })
}

/// A hard link whose target lives in a lower layer, resolved by copy-up
/// once the layers below exist.
#[derive(Debug, Clone)]
pub struct PendingLink {
    pub path: CleanPath,
    pub target: CleanPath,
}

pub struct Extractor {
    root: OwnedFd,
    mode: Whiteouts,
    dir_times: Vec<(CleanPath, libc::timespec)>,
    pending: Vec<PendingLink>,
    /// Paths this layer wrote, for `Apply`: an opaque marker hides only
    /// what the layers below left.
    written: HashSet<CleanPath>,
    /// The last parent directory, and what an entry created in it gets.
    cache: Option<(CleanPath, OwnedFd, Inherited)>,
    /// Our effective user and group: the owner of what we create.
    ids: (u32, u32),
    buf: Vec<u8>,
    is_root: bool,
    /// Start writing file data to disk as soon as a file is complete, so
    /// that the flush before the snapshot is published finds little left.
    writeback: bool,
    /// Bytes of small files written since the flusher was last woken.
    small_unflushed: u64,
    flusher: Option<Flusher>,
}

/// A thread that starts the snapshot's writeback while the layer is
/// written: each large file's as soon as the file is complete, and the
/// whole file system's after every few megabytes of small files (left out
/// of per-file writeback). Starting writeback costs CPU (the file
/// system's block allocation runs in the caller), so it runs here and not
/// in the thread that writes the files, which holds up the layer. Only an
/// early start: the caller's flush before publishing still decides
/// durability.
struct Flusher {
    jobs: Option<std::sync::mpsc::Sender<FlushJob>>,
    /// A file system flush is queued and not yet begun: pokes meanwhile
    /// add nothing.
    fs_queued: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The extractor is done: what is still queued is left to the
    /// caller's flush.
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum FlushJob {
    FileSystem,
    File(OwnedFd),
}

impl Flusher {
    fn start(dir: OwnedFd) -> Option<Flusher> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (jobs, rx) = std::sync::mpsc::channel::<FlushJob>();
        let fs_queued = std::sync::Arc::new(AtomicBool::new(false));
        let closing = std::sync::Arc::new(AtomicBool::new(false));
        let (queued, done) = (fs_queued.clone(), closing.clone());
        let thread = std::thread::Builder::new()
            .name("flush".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    if done.load(Ordering::Relaxed) {
                        continue;
                    }
                    match job {
                        FlushJob::FileSystem => {
                            queued.store(false, Ordering::Relaxed);
                            // SAFETY: syncfs on a descriptor this thread owns;
                            // a failure only means the final flush has more to do.
                            unsafe { libc::syncfs(dir.as_raw_fd()) };
                        }
                        // SAFETY: a live descriptor this thread owns; this
                        // only starts writeback of pages already written.
                        FlushJob::File(fd) => unsafe {
                            libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                        },
                    }
                }
            })
            .ok()?;
        Some(Flusher { jobs: Some(jobs), fs_queued, closing, thread: Some(thread) })
    }

    fn poke(&self) {
        if !self.fs_queued.swap(true, std::sync::atomic::Ordering::Relaxed) {
            if let Some(j) = &self.jobs {
                let _ = j.send(FlushJob::FileSystem);
            }
        }
    }

    /// Hands a finished file over for writeback; gives it back if the
    /// thread is gone.
    fn file(&self, fd: OwnedFd) -> Option<OwnedFd> {
        let jobs = self.jobs.as_ref()?;
        match jobs.send(FlushJob::File(fd)) {
            Ok(()) => None,
            Err(std::sync::mpsc::SendError(FlushJob::File(fd))) => Some(fd),
            Err(_) => None,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Small files' bytes between two wake-ups of the flusher.
const FLUSH_EVERY: u64 = 8 << 20;

impl Extractor {
    pub fn new(dir: &Path, mode: Whiteouts) -> std::io::Result<Extractor> {
        Ok(Extractor {
            root: resolve::open_root(dir)?,
            mode,
            dir_times: Vec::new(),
            pending: Vec::new(),
            written: HashSet::new(),
            cache: None,
            ids: (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
            buf: vec![0u8; 1 << 20],
            is_root: nix::unistd::geteuid().is_root(),
            writeback: false,
            small_unflushed: 0,
            flusher: None,
        })
    }

    /// Asks for early writeback of every regular file written (see
    /// `writeback`); durability itself still comes from the caller's flush.
    pub fn set_writeback(&mut self, on: bool) {
        self.writeback = on;
        self.flusher = None;
        if on {
            let dot = c".";
            if let Ok(fd) = resolve::openat(self.root.as_fd(), dot, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                self.flusher = Flusher::start(fd);
            }
        }
    }

    pub fn pending(&self) -> &[PendingLink] {
        &self.pending
    }

    /// Applies every entry of the tar stream; returns the reader so that
    /// the caller can drain and hash what follows the archive's end.
    pub fn apply_tar<R: Read>(&mut self, reader: R) -> Result<R, ExtractError> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(ExtractError::Tar)? {
            let mut entry = entry.map_err(ExtractError::Tar)?;
            self.apply_entry(&mut entry)?;
        }
        Ok(archive.into_inner())
    }

    fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, ExtractError> {
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let mut mtime = libc::timespec { tv_sec: h.mtime().unwrap_or(0) as i64, tv_nsec: 0 };
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(ExtractError::Tar)? {
            for ext in exts.flatten() {
                let key = ext.key_bytes();
                if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr_allowed(name) {
                        if let Ok(n) = CString::new(name) {
                            xattrs.push((n, ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        Ok(Meta { mode, uid, gid, mtime, xattrs })
    }

    /// The parent directory of an entry, created if missing.
    fn parent(&mut self, dir: &CleanPath) -> Result<BorrowedFd<'_>, ExtractError> {
        let hit = matches!(&self.cache, Some((p, _, _)) if p == dir);
        if !hit {
            let fd =
                resolve::mkdir_all(self.root.as_fd(), dir).map_err(io(dir, "create parent directory"))?;
            let st = nix::sys::stat::fstat(fd.as_raw_fd())
                .map_err(|e| io(dir, "inspect parent directory")(e.into()))?;
            let setgid = st.st_mode & libc::S_ISGID != 0;
            let gid = if setgid { st.st_gid } else { self.ids.1 };
            self.cache = Some((dir.clone(), fd, Inherited { gid, setgid }));
        }
        match &self.cache {
            Some((_, fd, _)) => Ok(fd.as_fd()),
            None => Err(ExtractError::Io {
                path: dir.display(),
                op: "create parent directory",
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            }),
        }
    }

    /// Makes room for a new entry: whatever is there is removed, except a
    /// directory that a directory entry merely updates. Returns true if a
    /// directory is there to keep.
    fn make_room(&mut self, dir: &CleanPath, name: &CStr, keep_dir: bool) -> Result<bool, ExtractError> {
        let full = dir.join(name.to_bytes());
        let pfd = self.parent(dir)?;
        let st = match resolve::lstatat(pfd, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(io(&full, "inspect existing entry")(e)),
        };
        let fmt = st.st_mode & libc::S_IFMT;
        if keep_dir && fmt == libc::S_IFDIR {
            return Ok(true);
        }
        resolve::remove_all_at(pfd, name).map_err(io(&full, "replace existing entry"))?;
        if fmt == libc::S_IFDIR || fmt == libc::S_IFLNK {
            // A cached parent may have been reached through what was removed.
            self.cache = None;
        }
        Ok(false)
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        use tar::EntryType as T;
        let path = CleanPath::new(&entry.path_bytes());
        let kind = entry.header().entry_type();
        if matches!(kind, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
            return Ok(());
        }
        let meta = Self::meta(entry)?;
        let Some((dir, name)) = path.split_last() else {
            // The archive's root ("./"): only its metadata can apply.
            if kind == T::Directory {
                let fd = resolve::open_in_root(self.root.as_fd(), &path, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(io(&path, "open"))?;
                self.set_meta_fd(&path, &fd, &meta, true, false)?;
                self.dir_times.push((path, meta.mtime));
            }
            return Ok(());
        };
        let name = name.to_vec();
        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(&path, &dir, target);
        }
        if self.mode == Whiteouts::Apply {
            self.written.insert(path.clone());
        }
        let cname = cstr(&name).map_err(io(&path, "name"))?;
        self.pending.retain(|p| !p.path.starts_with(&path));
        match kind {
            T::Directory => {
                // Create first, look only if something is in the way: in a
                // fresh snapshot nothing usually is, and the lstat per
                // entry is saved. Created with its final mode where it can
                // be (see the regular files below), else 0700 and the mode
                // after the owner.
                let final_mode = creation_mode(meta.mode);
                let cmode = final_mode.unwrap_or(0o700);
                let made = {
                    let pfd = self.parent(&dir)?;
                    // SAFETY: valid string and live descriptor.
                    check(unsafe { libc::mkdirat(pfd.as_raw_fd(), cname.as_ptr(), cmode) })
                };
                let created = match made {
                    Ok(()) => true,
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        let kept = self.make_room(&dir, &cname, true)?;
                        if !kept {
                            let pfd = self.parent(&dir)?;
                            // SAFETY: as above.
                            check(unsafe { libc::mkdirat(pfd.as_raw_fd(), cname.as_ptr(), cmode) })
                                .map_err(io(&path, "create directory"))?;
                        }
                        !kept
                    }
                    Err(e) => return Err(io(&path, "create directory")(e)),
                };
                let chown = !(created && self.created_owned_right(&meta));
                // A new directory in a set-group-ID one has that bit too.
                let setgid_parent = matches!(&self.cache, Some((_, _, new)) if new.setgid);
                let mode_set = created && final_mode.is_some() && !setgid_parent;
                if chown || !mode_set || !meta.xattrs.is_empty() {
                    let pfd = self.parent(&dir)?;
                    let fd = resolve::openat(
                        pfd,
                        &cname,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )
                    .map_err(io(&path, "open directory"))?;
                    self.set_meta_fd(&path, &fd, &meta, chown, mode_set)?;
                }
                self.dir_times.push((path, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                // Without set-id or sticky bits the file can be created
                // with its final mode (chown cannot clear anything then),
                // which saves the fchmod; otherwise 0600 and the mode after
                // the owner.
                let final_mode = creation_mode(meta.mode);
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                let cmode = final_mode.unwrap_or(0o600);
                // O_EXCL|O_NOFOLLOW never opens what is there (nor follows a
                // symlink there): clear the way only when told EEXIST.
                let first = {
                    let pfd = self.parent(&dir)?;
                    resolve::openat(pfd, &cname, flags, cmode)
                };
                let fd = match first {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        self.make_room(&dir, &cname, false)?;
                        let pfd = self.parent(&dir)?;
                        resolve::openat(pfd, &cname, flags, cmode).map_err(io(&path, "create file"))?
                    }
                    Err(e) => return Err(io(&path, "create file")(e)),
                };
                let mut file = File::from(fd);
                let mut written = 0u64;
                loop {
                    let n = entry.read(&mut self.buf).map_err(ExtractError::Tar)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(io(&path, "write file"))?;
                    written += n as u64;
                }
                let fd = OwnedFd::from(file);
                let mode_set = final_mode.is_some();
                // O_EXCL: the file was just created.
                let chown = !self.created_owned_right(&meta);
                self.set_meta_fd(&path, &fd, &meta, chown, mode_set)?;
                // SAFETY: `ts` holds two valid timespecs.
                let ts = [meta.mtime, meta.mtime];
                check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })
                    .map_err(io(&path, "set times"))?;
                if self.writeback && written >= WRITEBACK_MIN {
                    let left = match &self.flusher {
                        Some(f) => f.file(fd),
                        None => Some(fd),
                    };
                    if let Some(fd) = left {
                        // SAFETY: live descriptor; this only starts writeback
                        // of pages already written, and its failure is
                        // harmless: the snapshot's flush decides durability.
                        unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
                    }
                } else if self.writeback {
                    self.small_unflushed += written;
                    if self.small_unflushed >= FLUSH_EVERY {
                        self.small_unflushed = 0;
                        if let Some(f) = &self.flusher {
                            f.poke();
                        }
                    }
                }
            }
            T::Symlink => {
                let target = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                let ctarget = cstr(&target).map_err(io(&path, "symlink target"))?;
                let made = {
                    let pfd = self.parent(&dir)?;
                    // SAFETY: valid strings and live descriptor.
                    check(unsafe { libc::symlinkat(ctarget.as_ptr(), pfd.as_raw_fd(), cname.as_ptr()) })
                };
                match made {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        self.make_room(&dir, &cname, false)?;
                        let pfd = self.parent(&dir)?;
                        // SAFETY: as above.
                        check(unsafe { libc::symlinkat(ctarget.as_ptr(), pfd.as_raw_fd(), cname.as_ptr()) })
                            .map_err(io(&path, "create symlink"))?;
                    }
                    Err(e) => return Err(io(&path, "create symlink")(e)),
                }
                self.set_meta_at(&path, &dir, &cname, &meta, false)?;
            }
            T::Link => {
                let raw = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                let target = CleanPath::new(&raw);
                if target == path {
                    return Ok(());
                }
                self.make_room(&dir, &cname, false)?;
                if !self.link(&path, &target)? {
                    if self.mode == Whiteouts::Overlay {
                        // Resolve the chain now: a link to a pending link
                        // waits for the same lower file.
                        let target = self
                            .pending
                            .iter()
                            .find(|p| p.path == target)
                            .map(|p| p.target.clone())
                            .unwrap_or(target);
                        self.pending.push(PendingLink { path, target });
                    } else {
                        return Err(ExtractError::LinkTarget {
                            path: path.display(),
                            target: target.display(),
                        });
                    }
                }
            }
            T::Char | T::Block | T::Fifo => {
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let h = entry.header();
                let dev = libc::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                self.make_room(&dir, &cname, false)?;
                let pfd = self.parent(&dir)?;
                // SAFETY: valid string and live descriptor.
                check(unsafe { libc::mknodat(pfd.as_raw_fd(), cname.as_ptr(), fmt | 0o600, dev) })
                    .map_err(io(&path, "create device node"))?;
                self.set_meta_at(&path, &dir, &cname, &meta, true)?;
            }
            other => {
                kist_common::warn!("{}: skipping tar entry of unsupported type {:?}", path.display(), other);
            }
        }
        Ok(())
    }

    /// Hard-links `path` to `target`, both inside the root. False if the
    /// target does not exist (yet) here.
    fn link(&mut self, path: &CleanPath, target: &CleanPath) -> Result<bool, ExtractError> {
        let Some((tdir, tname)) = target.split_last() else {
            return Err(ExtractError::LinkToDir { path: path.display(), target: target.display() });
        };
        let Some((dir, name)) = path.split_last() else { return Ok(false) };
        let ctname = cstr(tname).map_err(io(path, "link target"))?;
        let cname = cstr(name).map_err(io(path, "name"))?;
        let tfd = match resolve::open_in_root(self.root.as_fd(), &tdir, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(false)
            }
            Err(e) => return Err(io(path, "resolve link target")(e)),
        };
        let pfd = self.parent(&dir)?;
        // SAFETY: valid strings and live descriptors; flags 0 links the
        // target itself, never what a symlink there points at.
        let rc =
            unsafe { libc::linkat(tfd.as_raw_fd(), ctname.as_ptr(), pfd.as_raw_fd(), cname.as_ptr(), 0) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(false),
            Some(libc::EPERM) => {
                Err(ExtractError::LinkToDir { path: path.display(), target: target.display() })
            }
            _ => Err(io(path, "create hard link")(e)),
        }
    }

    fn whiteout(&mut self, path: &CleanPath, dir: &CleanPath, target: &[u8]) -> Result<(), ExtractError> {
        if target == b".wh..opq" {
            return self.opaque(dir);
        }
        if target.starts_with(b".wh.") {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) means nothing here.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
            return Err(ExtractError::BadWhiteout {
                path: path.display(),
                name: String::from_utf8_lossy(target).into_owned(),
            });
        }
        let victim = dir.join(target);
        let cname = cstr(target).map_err(io(path, "name"))?;
        match self.mode {
            Whiteouts::Overlay => {
                self.make_room(dir, &cname, false)?;
                let pfd = self.parent(dir)?;
                // SAFETY: valid string and live descriptor.
                check(unsafe {
                    libc::mknodat(pfd.as_raw_fd(), cname.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0))
                })
                .map_err(io(&victim, "create whiteout"))?;
            }
            Whiteouts::Apply => {
                if self.written.contains(&victim) {
                    return Ok(());
                }
                let pfd =
                    match resolve::open_in_root(self.root.as_fd(), dir, libc::O_PATH | libc::O_DIRECTORY) {
                        Ok(fd) => fd,
                        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                            return Ok(())
                        }
                        Err(e) => return Err(io(dir, "resolve")(e)),
                    };
                resolve::remove_all_at(pfd.as_fd(), &cname).map_err(io(&victim, "remove"))?;
                self.cache = None;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &CleanPath) -> Result<(), ExtractError> {
        match self.mode {
            Whiteouts::Overlay => {
                self.parent(dir)?;
                let fd = resolve::open_in_root(self.root.as_fd(), dir, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(io(dir, "open directory"))?;
                let name = c"trusted.overlay.opaque";
                // SAFETY: valid strings and buffer; fd is live.
                check(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) })
                    .map_err(io(dir, "mark directory opaque"))?;
            }
            Whiteouts::Apply => {
                let fd =
                    match resolve::open_in_root(self.root.as_fd(), dir, libc::O_RDONLY | libc::O_DIRECTORY) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                        Err(e) => return Err(io(dir, "open directory")(e)),
                    };
                for name in resolve::list_dir(fd.as_fd()).map_err(io(dir, "list directory"))? {
                    if !self.written.contains(&dir.join(name.to_bytes())) {
                        resolve::remove_all_at(fd.as_fd(), &name)
                            .map_err(io(dir, "clear opaque directory"))?;
                    }
                }
                self.cache = None;
            }
        }
        Ok(())
    }

    fn chown_ok(&self, e: &std::io::Error) -> bool {
        // Without privilege, files stay owned by the unpacking user.
        !self.is_root && e.raw_os_error() == Some(libc::EPERM)
    }

    /// Whether an entry just created in the cached parent is already
    /// owned as `meta` says (ours, with the group the parent gives), so
    /// that chown would change nothing: in a root file system unpacked by
    /// root that is most entries, and each chown is a journalled inode
    /// update.
    fn created_owned_right(&self, meta: &Meta) -> bool {
        matches!(&self.cache, Some((_, _, new)) if (meta.uid, meta.gid) == (self.ids.0, new.gid))
    }

    /// Owner (unless `chown` is false: created with it), then mode (unless
    /// `mode_set`: created with it), then xattrs.
    fn set_meta_fd(
        &self,
        path: &CleanPath,
        fd: &OwnedFd,
        meta: &Meta,
        chown: bool,
        mode_set: bool,
    ) -> Result<(), ExtractError> {
        let raw = fd.as_raw_fd();
        // SAFETY: fd is live; plain integer arguments.
        if let Err(e) = check(if chown { unsafe { libc::fchown(raw, meta.uid, meta.gid) } } else { 0 }) {
            if !self.chown_ok(&e) {
                return Err(io(path, "change owner")(e));
            }
        }
        if !mode_set {
            // SAFETY: as above.
            check(unsafe { libc::fchmod(raw, meta.mode) }).map_err(io(path, "change mode"))?;
        }
        for (name, value) in &meta.xattrs {
            // SAFETY: valid string and buffer; fd is live.
            check(unsafe { libc::fsetxattr(raw, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
                .map_err(io(path, "set xattr"))?;
        }
        Ok(())
    }

    /// Metadata for entries that cannot be opened (symlinks, devices,
    /// fifos): `*at` calls on the parent, never following the name.
    fn set_meta_at(
        &mut self,
        path: &CleanPath,
        dir: &CleanPath,
        name: &CStr,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), ExtractError> {
        let is_root = self.is_root;
        // Only just created entries come here; the parent is looked up
        // first so that the group it gives is the one compared.
        self.parent(dir)?;
        let chown = !self.created_owned_right(meta);
        let pfd = self.parent(dir)?;
        let raw = pfd.as_raw_fd();
        // SAFETY: valid string and live descriptor.
        if let Err(e) = check(if chown {
            unsafe { libc::fchownat(raw, name.as_ptr(), meta.uid, meta.gid, libc::AT_SYMLINK_NOFOLLOW) }
        } else {
            0
        }) {
            if is_root || e.raw_os_error() != Some(libc::EPERM) {
                return Err(io(path, "change owner")(e));
            }
        }
        if chmod {
            // SAFETY: as above; the name was just created by us as a
            // device or fifo, not a symlink.
            check(unsafe { libc::fchmodat(raw, name.as_ptr(), meta.mode, 0) })
                .map_err(io(path, "change mode"))?;
        }
        if !meta.xattrs.is_empty() {
            // The parent's proc link anchors the path; lsetxattr does not
            // follow the last component.
            let mut p = format!("/proc/self/fd/{raw}/").into_bytes();
            p.extend_from_slice(name.to_bytes());
            let cp = cstr(&p).map_err(io(path, "name"))?;
            for (xname, value) in &meta.xattrs {
                // SAFETY: valid strings and buffer.
                check(unsafe {
                    libc::lsetxattr(cp.as_ptr(), xname.as_ptr(), value.as_ptr().cast(), value.len(), 0)
                })
                .map_err(io(path, "set xattr"))?;
            }
        }
        let ts = [meta.mtime, meta.mtime];
        // SAFETY: valid string, live descriptor, two timespecs.
        check(unsafe { libc::utimensat(raw, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
            .map_err(io(path, "set times"))?;
        Ok(())
    }

    /// Resolves hard links to lower layers by copying the file up from the
    /// first lower snapshot (top-down) that shows it. `lowers` are the
    /// lower snapshot roots, topmost first.
    pub fn copy_up_pending(&mut self, lowers: &[OwnedFd]) -> Result<(), ExtractError> {
        let pending = std::mem::take(&mut self.pending);
        // Links to the same lower file stay one inode here: the first is
        // copied up, the others link to the copy.
        let mut copied: std::collections::HashMap<CleanPath, CleanPath> = std::collections::HashMap::new();
        for p in pending {
            if self.link(&p.path, &p.target)? {
                continue;
            }
            if let Some(first) = copied.get(&p.target) {
                if self.link(&p.path, &first.clone())? {
                    continue;
                }
            }
            let Some(lower) = find_in_lowers(lowers, &p.target) else {
                return Err(ExtractError::LinkTarget { path: p.path.display(), target: p.target.display() });
            };
            self.copy_up(&lowers[lower], &p)?;
            copied.insert(p.target.clone(), p.path.clone());
        }
        Ok(())
    }

    fn copy_up(&mut self, lower: &OwnedFd, p: &PendingLink) -> Result<(), ExtractError> {
        let target = &p.target;
        let src = resolve::open_in_root(lower.as_fd(), target, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(io(target, "open lower file"))?;
        // SAFETY: all-zero is a valid stat buffer, filled by the kernel.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-pointer.
        check(unsafe { libc::fstat(src.as_raw_fd(), &mut st) }).map_err(io(target, "inspect lower file"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(ExtractError::LinkTarget { path: p.path.display(), target: target.display() });
        }
        let proc =
            cstr(format!("/proc/self/fd/{}", src.as_raw_fd()).as_bytes()).map_err(io(target, "name"))?;
        // SAFETY: valid string; result checked.
        let raw = unsafe { libc::open(proc.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io(target, "read lower file")(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this descriptor to us alone.
        let mut input = File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
        let Some((dir, name)) = p.path.split_last() else { return Ok(()) };
        let cname = cstr(name).map_err(io(&p.path, "name"))?;
        self.make_room(&dir, &cname, false)?;
        let pfd = self.parent(&dir)?;
        let fd = resolve::openat(
            pfd,
            &cname,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(io(&p.path, "create file"))?;
        let mut out = File::from(fd);
        std::io::copy(&mut input, &mut out).map_err(io(&p.path, "copy up lower file"))?;
        let xattrs = list_xattrs(input.as_fd()).map_err(io(target, "read xattrs"))?;
        let meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
            xattrs: xattrs.into_iter().filter(|(n, _)| xattr_allowed(n.to_bytes())).collect(),
        };
        let fd = OwnedFd::from(out);
        self.set_meta_fd(&p.path, &fd, &meta, true, false)?;
        let ts = [meta.mtime, meta.mtime];
        // SAFETY: live descriptor and two timespecs.
        check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map_err(io(&p.path, "set times"))?;
        Ok(())
    }

    /// Applies directory times, deepest-last-created first; call once after
    /// the last entry.
    pub fn finish(&mut self) -> Result<(), ExtractError> {
        for (path, t) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            let fd = match resolve::open_in_root(
                self.root.as_fd(),
                &path,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced or removed by a later entry: nothing to date.
                Err(_) => continue,
            };
            let ts = [t, t];
            // SAFETY: live descriptor and two timespecs.
            check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map_err(io(&path, "set times"))?;
        }
        Ok(())
    }
}

/// The xattrs of an open file.
pub fn list_xattrs(fd: BorrowedFd<'_>) -> std::io::Result<Vec<(CString, Vec<u8>)>> {
    let raw = fd.as_raw_fd();
    // SAFETY: a null buffer of size 0 asks for the size only.
    let n = unsafe { libc::flistxattr(raw, std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) { Ok(Vec::new()) } else { Err(e) };
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: buffer writable for its length.
    let n = unsafe { libc::flistxattr(raw, names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        // SAFETY: size query with a null buffer.
        let len = unsafe { libc::fgetxattr(raw, cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue;
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: buffer writable for its length.
        let len = unsafe { libc::fgetxattr(raw, cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            continue;
        }
        value.truncate(len as usize);
        out.push((cname, value));
    }
    Ok(out)
}

fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    let mut v = [0u8; 4];
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid string and buffer; fd is live.
    let n = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    n == 1 && v[0] == b'y'
}

/// The index of the topmost lower snapshot in which `path` shows through
/// the overlay: not hidden by a whiteout or an opaque directory above.
pub fn find_in_lowers(lowers: &[OwnedFd], path: &CleanPath) -> Option<usize> {
    let parts = path.parts();
    for (i, lower) in lowers.iter().enumerate() {
        let mut hidden_below = false;
        let mut found = true;
        for k in 1..=parts.len() {
            let prefix = CleanPath::new(&parts[..k].join(&b'/'));
            let fd = match resolve::open_in_root(lower.as_fd(), &prefix, libc::O_PATH | libc::O_NOFOLLOW) {
                Ok(fd) => fd,
                Err(_) => {
                    found = false;
                    break;
                }
            };
            // SAFETY: all-zero is a valid stat buffer, filled by the kernel.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: live descriptor and out-pointer.
            if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
                found = false;
                break;
            }
            if is_whiteout(&st) {
                return None;
            }
            if k < parts.len() && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                if let Ok(dfd) =
                    resolve::open_in_root(lower.as_fd(), &prefix, libc::O_RDONLY | libc::O_DIRECTORY)
                {
                    if is_opaque(dfd.as_fd()) {
                        hidden_below = true;
                    }
                }
            }
        }
        if found {
            return Some(i);
        }
        if hidden_below {
            return None;
        }
    }
    None
}
