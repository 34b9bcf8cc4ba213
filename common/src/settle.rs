//! Deferred durability: blobs and snapshots published before the disk has
//! them, and how the store tells a crash from a clean stop.
//!
//! Flushing a pull's blobs or an unpack's snapshots before they appear was
//! most of the time those tools took (an image of 90 MB compressed, 200 MB
//! unpacked: the flush alone took 0.3 s of a 0.96 s unpack), and their peers
//! do not flush at all. So a writer first makes an *intent* durable,
//! `unsettled/<boot-id>.<pid>.<n>.json`, naming every blob and snapshot it
//! is about to publish; then it publishes them without flushing; then it
//! hands the flush to a detached settler process (the same binary, started
//! with the hidden `--settle` flag) that runs syncfs(2) and deletes the
//! intent. Until the machine goes down the page cache makes an unflushed
//! file as good as a flushed one for every reader, so a tool that is killed
//! still leaves nothing half-written.
//!
//! An intent whose boot ID is not the running kernel's outlived its boot:
//! the machine stopped before the flush. The next tool to open the store
//! ([`recover`]) re-hashes the blobs it names, removing any that no longer
//! match their digest, and removes the snapshots it names, whose trees
//! cannot be checked (img-unpack makes them again). Only then is the intent
//! deleted. A writer holds an flock on its intent from before the intent
//! is named until it exits, and hands the locked descriptor itself to the
//! settler, which holds it until it is done: the lock has no gap, so an
//! intent of this boot that nobody holds lost both its writer and its
//! settler (killed), and recovery flushes it itself.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::fsutil::Lock;
use crate::root::StateRoot;

/// The hidden flag that makes img-fetch or img-unpack a settler.
pub const SETTLE_FLAG: &str = "settle";

const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read this boot's ID from {BOOT_ID_FILE}")]
    BootId(#[source] std::io::Error),
}

impl crate::HasExitCode for SettleError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            SettleError::Io { source, .. } | SettleError::BootId(source) => crate::exit::io_exit_code(source),
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SettleError + 'a {
    move |source| SettleError::Io { op, path: path.to_path_buf(), source }
}

/// `--sync`, the same on img-fetch and img-unpack.
pub fn sync_arg() -> clap::Arg {
    clap::Arg::new("sync").long("sync").action(clap::ArgAction::SetTrue).help(
        "Flush what is written to disk before exiting (default: a detached settler flushes it \
         just after; a crash before that is detected and repaired by the next run)",
    )
}

/// The hidden `--settle PATH...` that makes the binary a settler.
pub fn settle_arg() -> clap::Arg {
    clap::Arg::new(SETTLE_FLAG)
        .long(SETTLE_FLAG)
        .hide(true)
        .exclusive(true)
        .num_args(1..)
        .value_parser(clap::value_parser!(PathBuf))
}

/// The settler's paths, if this run is one.
pub fn settle_request(m: &clap::ArgMatches) -> Option<Vec<PathBuf>> {
    m.get_many::<PathBuf>(SETTLE_FLAG).map(|v| v.cloned().collect())
}

/// The running kernel's boot ID: a new random UUID at every boot. Not
/// `$KIST_BOOT_ID_FILE`, with which tests make ctr-spawn see a reboot: an
/// intent it took for an earlier boot's would lose the snapshots of an
/// unpack that is settling.
pub fn boot_id() -> Result<String, SettleError> {
    let text = std::fs::read_to_string(BOOT_ID_FILE).map_err(SettleError::BootId)?;
    let id = text.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(SettleError::BootId(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected content {id:?}"),
        )));
    }
    Ok(id.to_string())
}

/// What an intent file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntentFile {
    schema_version: u32,
    boot_id: String,
    /// The state root, for the settler, which is given only the intent's path.
    root: PathBuf,
    #[serde(default)]
    blobs: Vec<Digest>,
    #[serde(default)]
    snapshots: Vec<Digest>,
}

/// A durable promise to flush what it names; held (flocked) until dropped.
#[derive(Debug)]
pub struct Intent {
    path: PathBuf,
    /// Holds the flock until the intent is dropped.
    _lock: File,
    root: PathBuf,
    blobs: HashSet<Digest>,
    snapshots: HashSet<Digest>,
}

impl Intent {
    /// Writes and flushes an intent naming `blobs` and `snapshots` (chain
    /// IDs); whatever it names may then be published without a flush. `None`
    /// where the boot ID cannot be read (no /proc, as in a bare chroot):
    /// without it a crash could not be told later, so the caller flushes
    /// before it publishes instead.
    pub fn begin_or_flush(
        root: &StateRoot,
        blobs: &[Digest],
        snapshots: &[Digest],
    ) -> Result<Option<Intent>, SettleError> {
        match boot_id() {
            Ok(boot) => Intent::begin_as(root, &boot, blobs, snapshots).map(Some),
            Err(SettleError::BootId(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn begin_as(
        root: &StateRoot,
        boot: &str,
        blobs: &[Digest],
        snapshots: &[Digest],
    ) -> Result<Intent, SettleError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = root.unsettled_dir();
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &dir)(e)),
        }
        let name = format!("{boot}.{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        // Written in tmp/, where recovery does not look, and locked before
        // it is renamed into unsettled/: recovery never sees an intent that
        // nobody holds and that is still being written. (A writer killed
        // before the rename leaves a file in tmp/ for img-rm to collect.)
        std::fs::create_dir_all(root.tmp_dir()).map_err(io("create", &root.tmp_dir()))?;
        let tmp = root.tmp_dir().join(format!("intent-{name}.tmp"));
        let path = dir.join(format!("{name}.json"));
        let body = IntentFile {
            schema_version: 1,
            boot_id: boot.to_string(),
            root: root.path().to_path_buf(),
            blobs: blobs.to_vec(),
            snapshots: snapshots.to_vec(),
        };
        let result = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            flock(&file, libc::LOCK_EX).map_err(io("lock", &tmp))?;
            let mut bytes = serde_json::to_vec(&body).map_err(|e| io("encode", &tmp)(e.into()))?;
            bytes.push(b'\n');
            file.write_all(&bytes).map_err(io("write", &tmp))?;
            file.sync_all().map_err(io("flush", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
            File::open(&dir).and_then(|d| d.sync_all()).map_err(io("flush", &dir))?;
            // Also when another process made `unsettled/` a moment ago and
            // has yet to flush its entry: the intent must not hang on it.
            File::open(root.path()).and_then(|d| d.sync_all()).map_err(io("flush", root.path()))?;
            Ok(file)
        })();
        match result {
            Ok(file) => Ok(Intent {
                path,
                _lock: file,
                root: root.path().to_path_buf(),
                blobs: blobs.iter().cloned().collect(),
                snapshots: snapshots.iter().cloned().collect(),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if the blob may be published unflushed under this intent.
    pub fn covers_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest)
    }

    /// True if the snapshot may be published unflushed under this intent.
    pub fn covers_snapshot(&self, chain_id: &Digest) -> bool {
        self.snapshots.contains(chain_id)
    }
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor the caller owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Flushes every file system under `root` that its blobs and snapshots
/// live on (usually one; `snapshots/` may be a mount of its own).
fn sync_root(root: &Path) -> Result<(), SettleError> {
    let mut seen = HashSet::new();
    for dir in [root.to_path_buf(), root.join("blobs/sha256"), root.join("snapshots")] {
        let Ok(m) = std::fs::metadata(&dir) else { continue };
        if seen.insert(m.dev()) {
            crate::fsutil::syncfs(&dir).map_err(io("flush", &dir))?;
        }
    }
    Ok(())
}

/// For `--sync` runs: what they found present may be another run's,
/// published unflushed and not yet settled; if any intent is pending, the
/// store is flushed before the run ends, so that all it used is on disk.
pub fn flush_pending(root: &StateRoot) -> Result<(), SettleError> {
    let pending = std::fs::read_dir(root.unsettled_dir())
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n.ends_with(".json")
            })
        })
        .unwrap_or(false);
    if pending {
        sync_root(root.path())?;
    }
    Ok(())
}

/// Flushes now and deletes the intents, in this process.
pub fn settle_now(intents: Vec<Intent>) -> Result<(), SettleError> {
    let mut roots: Vec<&Path> = intents.iter().map(|i| i.root.as_path()).collect();
    roots.sort();
    roots.dedup();
    for r in roots {
        sync_root(r)?;
    }
    for i in &intents {
        let _ = std::fs::remove_file(&i.path);
    }
    Ok(())
}

/// Leaves the flush to a detached settler: this binary again, with
/// `--settle FD:PATH...`, in a process group of its own, with no terminal
/// and no inherited pipes (so `$(img-fetch ...)` does not wait for it). It
/// inherits each intent's locked descriptor (FD), so the lock passes to it
/// without a moment in which nobody holds it. If it cannot be started,
/// flushes here instead.
#[allow(clippy::zombie_processes)] // see the match below
pub fn hand_off(tool: &str, intents: Vec<Intent>) -> Result<(), SettleError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    if intents.is_empty() {
        return Ok(());
    }
    let mut args: Vec<std::ffi::OsString> = vec![format!("--{SETTLE_FLAG}").into()];
    for i in &intents {
        let fd = i._lock.as_raw_fd();
        // SAFETY: fcntl on a descriptor this intent owns; clearing
        // FD_CLOEXEC lets the settler inherit it (this process spawns
        // nothing else meanwhile, and the descriptor closes with the
        // intent right after).
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let mut arg = std::ffi::OsString::from(format!("{fd}:"));
        arg.push(&i.path);
        args.push(arg);
    }
    let spawned = Command::new("/proc/self/exe")
        .arg0(tool)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn();
    match spawned {
        // Not waited for: it is meant to outlive this process, whose exit
        // hands it to init (or the nearest subreaper) to reap. Dropping the
        // intents closes this process's copies of the descriptors; the
        // settler's keep the locks.
        Ok(_child) => Ok(()),
        Err(_) => settle_now(intents),
    }
}

/// The settler: takes each intent (`FD:PATH`, the locked descriptor it
/// inherited, or a bare PATH, which it locks), flushes, and deletes the
/// intents. What is not an intent is left alone.
pub fn settle_paths(args: &[PathBuf]) -> Result<(), SettleError> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut held: Vec<(File, PathBuf, PathBuf)> = Vec::new();
    for arg in args {
        let text = arg.as_os_str().as_bytes();
        let inherited = text.iter().position(|b| *b == b':').and_then(|colon| {
            let fd: i32 = std::str::from_utf8(&text[..colon]).ok()?.parse().ok()?;
            Some((fd, PathBuf::from(std::ffi::OsStr::from_bytes(&text[colon + 1..]))))
        });
        let (file, path) = match inherited {
            Some((fd, path)) if fd > 2 => {
                // SAFETY: a descriptor the writer passed to this process,
                // owned by nothing else here; it is checked to be the
                // intent's before it is trusted.
                let f = unsafe { File::from_raw_fd(fd) };
                match (f.metadata(), std::fs::metadata(&path)) {
                    (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => (f, path),
                    _ => continue,
                }
            }
            Some(_) => continue,
            None => {
                let Ok(f) = File::open(arg) else { continue };
                if flock(&f, libc::LOCK_EX).is_err() {
                    continue;
                }
                (f, arg.clone())
            }
        };
        if !looks_like_intent(&path) || unlinked(&file) {
            continue;
        }
        let mut file = file;
        let Some(body) = read_intent(&mut file) else { continue };
        held.push((file, path, body.root));
    }
    let mut roots: Vec<&Path> = held.iter().map(|(_, _, r)| r.as_path()).collect();
    roots.sort();
    roots.dedup();
    for r in roots {
        sync_root(r)?;
    }
    for (_, p, _) in &held {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn looks_like_intent(p: &Path) -> bool {
    let in_dir = p.parent().and_then(|d| d.file_name()).is_some_and(|n| n == "unsettled");
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    in_dir && name.ends_with(".json") && !name.starts_with('.')
}

/// True once the file has been deleted (another process settled it).
fn unlinked(f: &File) -> bool {
    f.metadata().map(|m| m.nlink() == 0).unwrap_or(true)
}

fn read_intent(f: &mut File) -> Option<IntentFile> {
    use std::io::Seek;
    // From the start: an inherited descriptor shares the writer's offset,
    // which is at the end of what it wrote.
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Intents of an earlier boot processed.
    pub stale: usize,
    /// Blobs of those intents that no longer matched their digest, removed.
    pub blobs_removed: usize,
    /// Blobs of those intents that matched, kept.
    pub blobs_kept: usize,
    /// Snapshots of those intents, removed.
    pub snapshots_removed: usize,
    /// Intents of this boot whose writer and settler were both gone, flushed.
    pub orphans: usize,
}

/// What [`recover`] does with an intent of this boot whose writer and
/// settler were both killed. Flushing it is only tidiness (left alone, it
/// would be checked after the next boot, as an earlier boot's), and its
/// syncfs can take long: a container start leaves it to the store's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    Flush,
    Leave,
}

/// Settles what earlier processes left unsettled; see the module comment.
/// Cheap when there is nothing to do: one directory read.
pub fn recover(root: &StateRoot, orphans: Orphans) -> Result<Recovery, SettleError> {
    let dir = root.unsettled_dir();
    let entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovery::default()),
        Err(e) => return Err(io("read", &dir)(e)),
    };
    if entries.is_empty() {
        return Ok(Recovery::default());
    }
    recover_as(root, &boot_id()?, entries, orphans)
}

fn recover_as(
    root: &StateRoot,
    boot: &str,
    mut entries: Vec<PathBuf>,
    flush_orphans: Orphans,
) -> Result<Recovery, SettleError> {
    entries.sort();
    let mut done = Recovery::default();
    let mut orphans: Vec<(File, PathBuf)> = Vec::new();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let Ok(mut f) = File::open(&path) else { continue };
        if name.split('.').next() == Some(boot) {
            // Locked since before it was named, by its writer and then its
            // settler: one that nobody holds lost both.
            if flush_orphans == Orphans::Flush
                && flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok()
                && !unlinked(&f)
            {
                orphans.push((f, path));
            }
            continue;
        }
        // An earlier boot's: no process of it is alive, but another
        // recovery may be at it; wait for that one and see.
        flock(&f, libc::LOCK_EX).map_err(io("lock", &path))?;
        if unlinked(&f) {
            continue;
        }
        // A torn intent was never flushed, so nothing was published under it.
        if let Some(body) = read_intent(&mut f) {
            for d in &body.blobs {
                match verify_blob(root, d) {
                    Some(true) => done.blobs_kept += 1,
                    Some(false) => done.blobs_removed += 1,
                    None => {}
                }
            }
            for c in &body.snapshots {
                if discard_snapshot(root, c)? {
                    done.snapshots_removed += 1;
                }
            }
            // The removals must outlast a second crash before the intent,
            // which is what would repeat them, goes.
            sync_root(root.path())?;
        }
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
        done.stale += 1;
    }
    if !orphans.is_empty() {
        sync_root(root.path())?;
        for (_, p) in &orphans {
            let _ = std::fs::remove_file(p);
        }
        done.orphans = orphans.len();
    }
    Ok(done)
}

/// Re-hashes a blob: `Some(true)` kept, `Some(false)` removed, `None` absent.
fn verify_blob(root: &StateRoot, digest: &Digest) -> Option<bool> {
    let path = root.blob_path(digest);
    let _lock = Lock::exclusive(&root.blob_lock(digest)).ok();
    let mut f = File::open(&path).ok()?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let ok = loop {
        match f.read(&mut buf) {
            Ok(0) => break h.finish() == *digest,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    if !ok {
        let _ = std::fs::remove_file(&path);
    }
    Some(ok)
}

/// Removes a snapshot and its metadata. The tree is first renamed into
/// `tmp/`, so that no half-removed snapshot is ever seen under its name.
fn discard_snapshot(root: &StateRoot, chain_id: &Digest) -> Result<bool, SettleError> {
    let dir = root.snapshot_dir(chain_id);
    let _ = std::fs::remove_file(root.snapshots_dir().join(format!("{}.json", chain_id.hex())));
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(false);
    }
    std::fs::create_dir_all(root.tmp_dir()).map_err(io("create", &root.tmp_dir()))?;
    let aside = root.tmp_dir().join(format!("discard-{}-{}", chain_id.hex(), std::process::id()));
    std::fs::rename(&dir, &aside).map_err(io("move aside", &dir))?;
    std::fs::remove_dir_all(&aside).map_err(io("remove", &aside))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, StateRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::at(dir.path());
        root.ensure().unwrap();
        (dir, root)
    }

    fn intents(root: &StateRoot) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.unsettled_dir())
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn put(root: &StateRoot, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(root.blob_path(&d), bytes).unwrap();
        d
    }

    #[test]
    fn an_intent_is_durable_named_and_covers_what_it_lists() {
        let (_t, root) = root();
        let b = Digest::of(b"blob");
        let s = Digest::of(b"snap");
        let i =
            Intent::begin_as(&root, "boot-a", std::slice::from_ref(&b), std::slice::from_ref(&s)).unwrap();
        assert!(i.covers_blob(&b) && !i.covers_blob(&s));
        assert!(i.covers_snapshot(&s) && !i.covers_snapshot(&b));
        let names = intents(&root);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("boot-a.") && names[0].ends_with(".json"));
        let body: IntentFile = serde_json::from_slice(&std::fs::read(i.path()).unwrap()).unwrap();
        assert_eq!(body.blobs, vec![b]);
        assert_eq!(body.snapshots, vec![s]);
        assert_eq!(body.root, root.path());
        // Held: another process (here another descriptor) cannot lock it.
        let other = File::open(i.path()).unwrap();
        assert!(flock(&other, libc::LOCK_EX | libc::LOCK_NB).is_err());
        drop(i);
        assert!(flock(&other, libc::LOCK_EX | libc::LOCK_NB).is_ok());
    }

    #[test]
    fn an_earlier_boots_intent_keeps_good_blobs_and_drops_bad_ones_and_its_snapshots() {
        let (_t, root) = root();
        let good = put(&root, b"good bytes");
        let bad = put(&root, b"will be torn");
        std::fs::write(root.blob_path(&bad), b"will be").unwrap();
        let absent = Digest::of(b"never written");
        let unlisted = put(&root, b"not in the intent");
        let chain = Digest::of(b"chain");
        let snap = root.snapshot_dir(&chain);
        std::fs::create_dir_all(snap.join("usr/bin")).unwrap();
        std::fs::write(snap.join("usr/bin/x"), b"x").unwrap();
        let meta = root.snapshots_dir().join(format!("{}.json", chain.hex()));
        std::fs::write(&meta, b"{}").unwrap();
        let kept_chain = Digest::of(b"other chain");
        std::fs::create_dir_all(root.snapshot_dir(&kept_chain)).unwrap();
        let i = Intent::begin_as(&root, "boot-old", &[good.clone(), bad.clone(), absent], &[chain]).unwrap();
        drop(i);

        let r = recover_as(
            &root,
            "boot-new",
            vec![root.unsettled_dir().join(intents(&root)[0].clone())],
            Orphans::Flush,
        )
        .unwrap();
        assert_eq!(
            r,
            Recovery { stale: 1, blobs_removed: 1, blobs_kept: 1, snapshots_removed: 1, orphans: 0 }
        );
        assert!(root.blob_path(&good).exists());
        assert!(!root.blob_path(&bad).exists());
        assert!(root.blob_path(&unlisted).exists());
        assert!(!snap.exists() && !meta.exists());
        assert!(root.snapshot_dir(&kept_chain).exists());
        assert!(intents(&root).is_empty());
        assert_eq!(std::fs::read_dir(root.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn this_boots_intents_are_left_to_their_holders_and_settled_once_unheld() {
        let (_t, root) = root();
        let d = put(&root, b"fresh");
        let held = Intent::begin_as(&root, "boot-now", std::slice::from_ref(&d), &[]).unwrap();
        let free = Intent::begin_as(&root, "boot-now", std::slice::from_ref(&d), &[]).unwrap();
        let free_path = free.path().to_path_buf();
        drop(free);
        let list =
            |root: &StateRoot| intents(root).into_iter().map(|n| root.unsettled_dir().join(n)).collect();
        // A container start leaves orphans alone; the store's tools flush them.
        let r = recover_as(&root, "boot-now", list(&root), Orphans::Leave).unwrap();
        assert_eq!(r, Recovery::default());
        assert!(free_path.exists());
        let r = recover_as(&root, "boot-now", list(&root), Orphans::Flush).unwrap();
        assert_eq!(r.orphans, 1);
        assert!(!free_path.exists());
        assert!(held.path().exists());
        assert!(root.blob_path(&d).exists());
    }

    #[test]
    fn a_torn_intent_of_an_earlier_boot_is_deleted_without_touching_the_store() {
        let (_t, root) = root();
        let d = put(&root, b"kept");
        std::fs::create_dir_all(root.unsettled_dir()).unwrap();
        let p = root.unsettled_dir().join("boot-old.1.0.json");
        std::fs::write(&p, br#"{"schemaVersion":1,"bootId":"boot-old","blo"#).unwrap();
        let r = recover_as(&root, "boot-new", vec![p.clone()], Orphans::Flush).unwrap();
        assert_eq!(r.stale, 1);
        assert!(!p.exists());
        assert!(root.blob_path(&d).exists());
    }

    #[test]
    fn the_settler_flushes_and_deletes_only_intents() {
        let (_t, root) = root();
        let i = Intent::begin_as(&root, "boot-now", &[], &[Digest::of(b"c")]).unwrap();
        let p = i.path().to_path_buf();
        drop(i);
        let stranger = root.path().join("not-an-intent.json");
        std::fs::write(&stranger, b"{}").unwrap();
        settle_paths(&[p.clone(), stranger.clone()]).unwrap();
        assert!(!p.exists());
        assert!(stranger.exists());
    }
}
