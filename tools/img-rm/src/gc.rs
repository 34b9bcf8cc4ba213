//! Garbage collection of the store: blobs that no `index.json` entry
//! reaches (entry → index → manifests → config and layers) and snapshots
//! that no remaining image's chain IDs and no container name.
//!
//! Runs with the fetch, snapshots and store locks held (in that order),
//! so that no unpack is under way and `index.json` holds still. Blobs a
//! concurrent img-fetch has landed but not yet named are protected by
//! their age (and their blob lock): only blobs of images removed in this
//! very run are swept young. Nothing in `tmp/` younger than a day goes.
//! The lock files of blobs that are gone go too.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use kist_common::fsutil::{FsError, Lock};
use kist_common::store::{Index, Store};
use kist_common::{Digest, StateRoot};

/// Unreferenced blobs younger than this may belong to a pull in progress.
pub const BLOB_GRACE: Duration = Duration::from_secs(3600);
/// Work files in `tmp/` younger than this may belong to a running tool.
pub const TMP_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default)]
pub struct Swept {
    pub blobs: usize,
    pub snapshots: usize,
    pub tmp: usize,
    pub bytes: u64,
}

/// What the containers use.
#[derive(Debug, Default)]
pub struct InUse {
    pub images: HashSet<Digest>,
    /// Snapshot names (chain ID hex).
    pub snapshots: HashSet<String>,
    /// Container directories whose state could not be read: collection of
    /// snapshots and blobs is skipped, since they may use anything.
    pub unknown: Vec<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn age(path: &Path) -> Option<Duration> {
    let m = std::fs::symlink_metadata(path).ok()?;
    SystemTime::now().duration_since(m.modified().ok()?).ok()
}

/// Reads `containers/<id>/state.json` of every container: its `image`
/// (image ID) and `snapshots` (snapshot directories).
pub fn in_use(root: &StateRoot) -> InUse {
    let mut out = InUse::default();
    let Ok(dir) = std::fs::read_dir(root.containers_dir()) else { return out };
    for ent in dir.flatten() {
        let path = ent.path();
        if !path.is_dir() {
            continue;
        }
        let name = ent.file_name().to_string_lossy().into_owned();
        let state = std::fs::read(path.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let Some(state) = state else {
            // A container being created has its directory before its state;
            // one long without state is debris and does not hold anything.
            if age(&path).is_none_or(|a| a < BLOB_GRACE) {
                out.unknown.push(name);
            }
            continue;
        };
        if let Some(id) = state.get("image").and_then(|v| v.as_str()).and_then(|s| s.parse::<Digest>().ok()) {
            out.images.insert(id);
        }
        for s in state.get("snapshots").and_then(|v| v.as_array()).into_iter().flatten() {
            let Some(s) = s.as_str() else { continue };
            let last = Path::new(s).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let last = last.strip_prefix("sha256:").unwrap_or(&last).to_string();
            if is_hex64(&last) {
                out.snapshots.insert(last);
            }
        }
    }
    out
}

/// Everything an index reaches: blobs, and the chain IDs of every image
/// config among them.
#[derive(Debug, Default)]
pub struct Marks {
    pub blobs: HashSet<Digest>,
    pub chains: HashSet<String>,
}

impl Marks {
    /// Marks a blob and, if it is an index or a manifest, what it names.
    pub fn mark(&mut self, store: &Store, digest: &Digest) {
        if !self.blobs.insert(digest.clone()) {
            return;
        }
        let Ok(bytes) = store.read_blob(digest) else { return };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return };
        let digests = |key: &str| -> Vec<Digest> {
            v.get(key)
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
                .filter_map(|m| m.get("digest")?.as_str()?.parse().ok())
                .collect()
        };
        for child in digests("manifests") {
            self.mark(store, &child);
        }
        if let Some(cfg) = v.get("config").and_then(|c| c.get("digest")).and_then(|d| d.as_str()) {
            if let Ok(cfg) = cfg.parse::<Digest>() {
                self.blobs.insert(cfg.clone());
                if let Ok(c) = kist_common::catalog::load_config(store, &cfg) {
                    for id in kist_common::record::chain_ids(&c.diff_ids) {
                        self.chains.insert(id.hex().to_string());
                    }
                }
            }
            for l in digests("layers") {
                self.blobs.insert(l);
            }
        }
    }

    pub fn of_index(store: &Store, index: &Index) -> Marks {
        let mut m = Marks::default();
        for e in &index.manifests {
            m.mark(store, &e.digest);
        }
        m
    }
}

/// Removes `locks/blob-<hex>.lock` files of blobs no longer in the store,
/// which would otherwise pile up, one per blob ever fetched. Unlinking a
/// lock file is safe only while no one can be between opening it and
/// taking the lock: every fetch takes its blob locks while holding the
/// fetch lock shared, and collection holds it exclusively, so none is;
/// a lock someone holds anyway is left alone.
fn sweep_blob_locks(root: &StateRoot) {
    let Ok(dir) = std::fs::read_dir(root.locks_dir()) else { return };
    for ent in dir.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_prefix("blob-").and_then(|n| n.strip_suffix(".lock")) else { continue };
        let Ok(d) = format!("sha256:{hex}").parse::<Digest>() else { continue };
        if root.blobs_dir().join(d.hex()).exists() {
            continue;
        }
        if let Ok(_held) = Lock::try_exclusive(&ent.path()) {
            let _ = std::fs::remove_file(ent.path());
        }
    }
}

/// Sweeps what `live` does not reach. `doomed` are blobs of images removed
/// in this run, swept however young.
pub fn sweep(
    root: &StateRoot,
    live: &Marks,
    used: &InUse,
    doomed: &HashSet<Digest>,
) -> Result<Swept, FsError> {
    let mut swept = Swept::default();
    if let Ok(dir) = std::fs::read_dir(root.blobs_dir()) {
        for ent in dir.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else { continue };
            if live.blobs.contains(&d) {
                continue;
            }
            let path = ent.path();
            if !doomed.contains(&d) && age(&path).is_none_or(|a| a < BLOB_GRACE) {
                continue;
            }
            // A fetch holding the blob's lock is writing or committing it.
            let _held = match Lock::try_exclusive(&root.blob_lock(&d)) {
                Ok(l) => l,
                Err(FsError::WouldBlock { .. }) => continue,
                Err(e) => return Err(e),
            };
            let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(&path).is_ok() {
                swept.blobs += 1;
                swept.bytes += size;
            }
        }
    }
    sweep_blob_locks(root);
    if let Ok(dir) = std::fs::read_dir(root.snapshots_dir()) {
        for ent in dir.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let chain = name.strip_suffix(".json").unwrap_or(&name);
            if !is_hex64(chain) || live.chains.contains(chain) || used.snapshots.contains(chain) {
                continue;
            }
            let path = ent.path();
            let size = du(&path);
            let removed = if name.ends_with(".json") {
                // Metadata goes with its snapshot, or alone once that is gone.
                !root.snapshots_dir().join(chain).exists() && std::fs::remove_file(&path).is_ok()
            } else {
                let _ = std::fs::remove_file(root.snapshots_dir().join(format!("{chain}.json")));
                std::fs::remove_dir_all(&path).is_ok()
            };
            if removed && !name.ends_with(".json") {
                swept.snapshots += 1;
                swept.bytes += size;
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(root.tmp_dir()) {
        for ent in dir.flatten() {
            let path = ent.path();
            if age(&path).is_some_and(|a| a > TMP_GRACE) {
                let ok =
                    if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                if ok.is_ok() {
                    swept.tmp += 1;
                }
            }
        }
    }
    Ok(swept)
}

/// Bytes used by a file or directory tree, not following symlinks.
fn du(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else { return 0 };
    if !m.is_dir() {
        return m.len();
    }
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir(path) {
        for ent in dir.flatten() {
            total += du(&ent.path());
        }
    }
    total
}
