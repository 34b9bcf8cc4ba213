//! Layers into snapshots, `snapshots/<chain-id>/`, in parallel.
//!
//! Each layer unpacks into its own temporary directory under `tmp/`, is
//! checked against its diff_id, and is renamed into place in one step, so a
//! snapshot directory either holds a whole verified layer or does not
//! exist. Layers run side by side, as many at a time as there are CPUs; a
//! layer whose hard links point into a lower layer gives up its turn,
//! waits for the layers below, and copies the files up.
//!
//! Unless `--sync`, a layer's snapshot is published without waiting for
//! the disk: an intent naming it is made durable first, and a settler
//! flushes it after the run (kist_common::settle); otherwise each snapshot
//! is flushed (syncfs) before it is renamed into place.
//!
//! Next to each snapshot, `snapshots/<chain-id>.json` records what it is
//! (diff_id, parent chain ID, layer digest, tar and disk sizes, creation time), for
//! img-rm's garbage collection and for people; see kist-state(5).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use kist_common::settle::Intent;
use kist_common::{Digest, StateRoot};
use serde::Serialize;

use crate::extract::Whiteouts;
use crate::layer::{self, LayerError, LayerSource};
use crate::resolve;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("snapshot {chain_id}: {op} {path}")]
    Io {
        chain_id: Digest,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {chain_id} needs the layers below it, and {missing} failed or never arrived")]
    Lower { chain_id: Digest, missing: Digest },
    #[error("snapshot {0} failed in another worker")]
    Failed(Digest),
    #[error("snapshot {chain_id}")]
    Settle {
        chain_id: Digest,
        #[source]
        source: kist_common::settle::SettleError,
    },
}

impl kist_common::HasExitCode for SnapshotError {
    fn exit_code(&self) -> kist_common::ExitCode {
        match self {
            SnapshotError::Layer(e) => e.exit_code(),
            SnapshotError::Io { source, .. } => kist_common::exit::io_exit_code(source),
            SnapshotError::Lower { .. } | SnapshotError::Failed(_) => kist_common::ExitCode::Failure,
            SnapshotError::Settle { source, .. } => kist_common::HasExitCode::exit_code(source),
        }
    }
}

/// One layer to become one snapshot.
#[derive(Debug, Clone)]
pub struct LayerJob {
    pub chain_id: Digest,
    /// Chain IDs of the layers below, lowest first.
    pub lowers: Vec<Digest>,
    pub source: LayerSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Running,
    Done,
    Failed,
}

/// The metadata file next to a snapshot.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotMeta<'a> {
    schema_version: u32,
    chain_id: &'a Digest,
    diff_id: &'a Digest,
    parent: Option<&'a Digest>,
    layer: &'a Digest,
    media_type: &'a str,
    /// Uncompressed size of the layer's tar stream.
    size: u64,
    /// The layer's size as Docker counts it for `docker images`: see
    /// [`disk_size`].
    disk_size: u64,
    /// Unix seconds when the snapshot was made.
    created: u64,
}

/// Coordinates the workers of one img-unpack run.
pub struct Snapshots {
    root: StateRoot,
    /// Flush each snapshot before it appears (`--sync`), rather than
    /// publish it under an intent.
    sync: bool,
    intents: Mutex<Vec<Intent>>,
    slots: Mutex<(HashMap<Digest, Slot>, bool)>,
    changed: Condvar,
    permits: Mutex<usize>,
    permit_freed: Condvar,
}

struct Permit<'a>(&'a Snapshots);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut p = self.0.permits.lock().unwrap_or_else(|e| e.into_inner());
        *p += 1;
        self.0.permit_freed.notify_one();
    }
}

/// Removes a temporary directory unless disarmed.
struct TmpDir(Option<PathBuf>);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_tree(&p);
        }
    }
}

/// Removes a directory tree without following symlinks (`remove_dir_all`
/// has had its share of races; the snapshot tree is ours, but be strict).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let Some(name) = path.file_name() else { return Ok(()) };
    let pfd = resolve::open_root(parent)?;
    let c = resolve::cstr(std::os::unix::ffi::OsStrExt::as_bytes(name))?;
    resolve::remove_all_at(std::os::fd::AsFd::as_fd(&pfd), &c)
}

impl Snapshots {
    pub fn new(root: &StateRoot, jobs: usize, sync: bool) -> Snapshots {
        Snapshots {
            root: root.clone(),
            sync,
            intents: Mutex::new(Vec::new()),
            slots: Mutex::new((HashMap::new(), false)),
            changed: Condvar::new(),
            permits: Mutex::new(jobs.max(1)),
            permit_freed: Condvar::new(),
        }
    }

    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.root.snapshot_dir(chain_id)
    }

    fn present(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    fn permit(&self) -> Permit<'_> {
        let mut p = self.permits.lock().unwrap_or_else(|e| e.into_inner());
        while *p == 0 {
            p = self.permit_freed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        *p -= 1;
        Permit(self)
    }

    /// No more layers will be announced: waiters for one that never came give up.
    pub fn close(&self) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.changed.notify_all();
    }

    /// Claims a layer for this worker; false if it is done or taken.
    pub fn claim(&self, chain_id: &Digest) -> bool {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.contains_key(chain_id) {
            return false;
        }
        if self.present(chain_id) {
            s.0.insert(chain_id.clone(), Slot::Done);
            self.changed.notify_all();
            return false;
        }
        s.0.insert(chain_id.clone(), Slot::Running);
        true
    }

    fn settle(&self, chain_id: &Digest, ok: bool) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.0.insert(chain_id.clone(), if ok { Slot::Done } else { Slot::Failed });
        self.changed.notify_all();
    }

    /// Waits until every snapshot named is in place. `Err` names the first
    /// one that failed, or that was never announced once input has ended.
    pub fn wait_for(&self, chain_ids: &[Digest]) -> Result<(), Digest> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut ready = true;
            for c in chain_ids {
                match s.0.get(c) {
                    Some(Slot::Done) => {}
                    Some(Slot::Failed) => return Err(c.clone()),
                    Some(Slot::Running) => ready = false,
                    None if self.present(c) => {}
                    None if s.1 => return Err(c.clone()),
                    None => ready = false,
                }
            }
            if ready {
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The intents of the snapshots made so far, for a settler.
    pub fn take_intents(&self) -> Vec<Intent> {
        std::mem::take(&mut *self.intents.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Unpacks a claimed layer into its snapshot.
    pub fn run(&self, job: &LayerJob) -> Result<(), SnapshotError> {
        let result = self.unpack(job);
        self.settle(&job.chain_id, result.is_ok());
        result
    }

    fn unpack(&self, job: &LayerJob) -> Result<(), SnapshotError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let chain = &job.chain_id;
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { chain_id: chain.clone(), op, path, source }
        };
        let mut permit = Some(self.permit());
        let tmp = self.root.tmp_dir().join(format!(
            "unpack-{}-{}-{}",
            &chain.hex()[..16],
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(self.root.tmp_dir()).map_err(io("create", &self.root.tmp_dir()))?;
        std::fs::create_dir(&tmp).map_err(io("create", &tmp))?;
        let mut guard = TmpDir(Some(tmp.clone()));
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io("chmod", &tmp))?;
        // Flushed before it appears with --sync, or where no intent can be
        // made (no boot ID to tell a crash by).
        let mut sync = self.sync;
        if !sync {
            match Intent::begin_or_flush(&self.root, &[], std::slice::from_ref(chain)) {
                Ok(Some(intent)) => self.intents.lock().unwrap_or_else(|e| e.into_inner()).push(intent),
                Ok(None) => sync = true,
                Err(e) => return Err(SnapshotError::Settle { chain_id: chain.clone(), source: e }),
            }
        }
        let (mut ex, size) = layer::unpack(&job.source, &tmp, Whiteouts::Overlay, sync)?;
        let ext_err = |source| LayerError::Extract { digest: job.source.digest.clone(), source };
        if !ex.pending().is_empty() {
            // Hard links into lower layers: let others run while the layers
            // below land, then copy the files up.
            permit = None;
            self.wait_for(&job.lowers)
                .map_err(|missing| SnapshotError::Lower { chain_id: chain.clone(), missing })?;
            permit = Some(permit.unwrap_or_else(|| self.permit()));
            let mut lowers: Vec<OwnedFd> = Vec::new();
            for c in job.lowers.iter().rev() {
                let p = self.path(c);
                lowers.push(resolve::open_root(&p).map_err(io("open", &p))?);
            }
            ex.copy_up_pending(&lowers).map_err(ext_err)?;
        }
        ex.finish().map_err(ext_err)?;
        drop(ex);
        // The walk that measures the snapshot is only reads: it runs while
        // the flush waits for the disk.
        let (disk_size, synced) = std::thread::scope(|s| {
            let walk = s.spawn(|| disk_size(&tmp));
            // With --sync, a crash cannot leave a snapshot with holes in it.
            let synced = if sync { kist_common::fsutil::syncfs(&tmp) } else { Ok(()) };
            let measured = walk.join().unwrap_or_else(|_| Err(std::io::Error::other("size walk failed")));
            (measured, synced)
        });
        synced.map_err(io("sync", &tmp))?;
        let disk_size = disk_size.map_err(io("measure", &tmp))?;
        let dest = self.path(chain);
        std::fs::create_dir_all(self.root.snapshots_dir())
            .map_err(io("create", &self.root.snapshots_dir()))?;
        match rename_noreplace(&tmp, &dest) {
            Ok(()) => guard.0 = None,
            // Another img-unpack made the same snapshot first: use it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {}
            Err(e) => return Err(io("rename into", &dest)(e)),
        }
        drop(guard);
        let meta = SnapshotMeta {
            schema_version: 1,
            chain_id: chain,
            diff_id: &job.source.diff_id,
            parent: job.lowers.last(),
            layer: &job.source.digest,
            media_type: &job.source.media_type,
            size,
            disk_size,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let meta_path = self.root.snapshots_dir().join(format!("{}.json", chain.hex()));
        kist_common::fsutil::atomic_write_json_durable(&meta_path, &meta, sync).map_err(|e| {
            SnapshotError::Io {
                chain_id: chain.clone(),
                op: "write",
                path: meta_path.clone(),
                source: std::io::Error::other(e),
            }
        })?;
        drop(permit);
        Ok(())
    }
}

/// The size of an unpacked layer by Docker's rule (moby's directory size of
/// an overlay2 diff directory, which `docker images` sums over the layers):
/// the apparent size (`st_size`, from lstat) of every entry that is not a
/// directory — regular files, and symlinks by the length of their target —
/// counting an inode that several hard links share once. Whiteouts are
/// 0/0 character devices, so they count nothing.
pub fn disk_size(dir: &Path) -> std::io::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            // The type comes with the directory entry and the size from a
            // stat relative to the open directory: no path is resolved
            // from the top again, and directories need no stat at all.
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let m = entry.metadata()?;
            if m.len() > 0 && seen.insert(std::os::unix::fs::MetadataExt::ino(&m)) {
                total += m.len();
            }
        }
    }
    Ok(total)
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let a = resolve::cstr(std::os::unix::ffi::OsStrExt::as_bytes(from.as_os_str()))?;
    let b = resolve::cstr(std::os::unix::ffi::OsStrExt::as_bytes(to.as_os_str()))?;
    // SAFETY: valid strings; AT_FDCWD with absolute paths.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
