//! The image store: an OCI image layout at the state root (`oci-layout`,
//! `index.json`, `blobs/sha256/`), so that skopeo and umoci read it as it is.
//!
//! Blobs are written to `tmp/` first, verified against their digest and
//! size, and only then renamed into `blobs/`: nothing unverified is ever
//! visible there. `index.json` changes under the store lock and is replaced
//! atomically.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::fsutil::{self, FsError, Lock};
use crate::record::Platform;
use crate::reference::Reference;
use crate::root::{RootError, StateRoot};

/// The annotation the OCI image layout uses to name an image.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd uses for the full reference; kept for tools that read it.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Settle(#[from] crate::settle::SettleError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI index")]
    BadIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: Digest },
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
}

impl crate::HasExitCode for StoreError {
    fn exit_code(&self) -> crate::ExitCode {
        use crate::ExitCode;
        match self {
            StoreError::Root(e) => e.exit_code(),
            StoreError::Fs(e) => e.exit_code(),
            StoreError::Settle(e) => e.exit_code(),
            StoreError::Io { source, .. } => crate::exit::io_exit_code(source),
            StoreError::BadIndex { .. }
            | StoreError::DigestMismatch { .. }
            | StoreError::SizeMismatch { .. } => ExitCode::Integrity,
            StoreError::MissingBlob { .. } => ExitCode::NotFound,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// One entry of `index.json`. Unknown fields survive a rewrite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl IndexEntry {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.to_string()),
            manifests: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// The image store at a state root.
#[derive(Debug, Clone)]
pub struct Store {
    root: StateRoot,
}

impl Store {
    /// Opens the store, creating the layout on first use, and settles what
    /// an earlier boot left unflushed ([`crate::settle::recover`]) before
    /// anything in it is trusted.
    pub fn open(root: &StateRoot) -> Result<Store, StoreError> {
        Store::open_with(root, crate::settle::Orphans::Flush)
    }

    /// [`Store::open`], choosing what becomes of this boot's orphaned
    /// intents (ctr-spawn leaves them, to keep a flush off a start).
    pub fn open_with(root: &StateRoot, orphans: crate::settle::Orphans) -> Result<Store, StoreError> {
        root.ensure()?;
        crate::settle::recover(root, orphans)?;
        let store = Store { root: root.clone() };
        let layout = root.oci_layout_file();
        let index = root.index_file();
        if !layout.exists() || !index.exists() {
            let _lock = Lock::exclusive(&root.store_lock())?;
            if !layout.exists() {
                fsutil::atomic_write(&layout, b"{\"imageLayoutVersion\":\"1.0.0\"}\n")?;
            }
            if !index.exists() {
                fsutil::atomic_write_json(&index, &Index::default())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &StateRoot {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.blob_path(digest)
    }

    /// True if the blob is present with the expected size. Blobs only ever
    /// enter `blobs/` verified, so the size check guards against outside damage.
    pub fn has_blob(&self, digest: &Digest, size: Option<u64>) -> bool {
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        File::open(self.blob_path(digest)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::MissingBlob { digest: digest.clone() }
            } else {
                StoreError::Io { path: self.blob_path(digest), source: e }
            }
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io_err(&self.blob_path(digest)))?;
        Ok(buf)
    }

    /// Stores bytes whose digest is known in advance, verifying it.
    pub fn put_blob(&self, expected: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_blob_under(expected, bytes, None)
    }

    /// [`Store::put_blob`], unflushed if `intent` names the blob.
    pub fn put_blob_under(
        &self,
        expected: &Digest,
        bytes: &[u8],
        intent: Option<&crate::settle::Intent>,
    ) -> Result<(), StoreError> {
        if self.has_blob(expected, Some(bytes.len() as u64)) {
            return Ok(());
        }
        let mut w = self.blob_writer_at(&self.partial_path(expected), false)?;
        w.write_all(bytes).map_err(io_err(&self.partial_path(expected)))?;
        w.commit_under(expected, Some(bytes.len() as u64), intent)
    }

    /// Stores bytes and returns their digest.
    pub fn put_blob_computed(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        self.put_blob(&d, bytes)?;
        Ok(d)
    }

    /// The path a partial download of `digest` accumulates in, kept between
    /// runs so that an interrupted transfer can resume.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root.tmp_dir().join(format!("{}.partial", digest.hex()))
    }

    /// A writer into `tmp/`. With `resume`, existing content is kept and
    /// re-hashed, and writes append to it.
    pub fn blob_writer_at(&self, path: &Path, resume: bool) -> Result<BlobWriter, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!resume)
            .mode(0o644)
            .open(path)
            .map_err(io_err(path))?;
        let mut hasher = Hasher::new();
        if resume {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(io_err(path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            file.seek(std::io::SeekFrom::End(0)).map_err(io_err(path))?;
        }
        Ok(BlobWriter {
            file,
            path: path.to_path_buf(),
            hasher,
            blobs: self.root.blobs_dir(),
            writeback: true,
        })
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<Index, StoreError> {
        let path = self.root.index_file();
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadIndex { path, source })
    }

    /// Changes `index.json` under the store lock, atomically.
    pub fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> Result<T, StoreError> {
        let _lock = Lock::exclusive(&self.root.store_lock())?;
        let mut index = self.index()?;
        let out = f(&mut index);
        fsutil::atomic_write_json(&self.root.index_file(), &index)?;
        Ok(out)
    }

    /// Points `reference` at a manifest: the entry with the same name is
    /// replaced, so a tag moves rather than duplicates.
    pub fn tag(&self, reference: &Reference, entry: IndexEntry) -> Result<(), StoreError> {
        let name = reference.to_string();
        let mut entry = entry;
        entry.annotations.insert(REF_NAME.to_string(), name.clone());
        entry.annotations.insert(IMAGE_NAME.to_string(), name.clone());
        self.update_index(|idx| {
            idx.manifests.retain(|m| m.ref_name() != Some(name.as_str()));
            idx.manifests.push(entry);
        })
    }
}

/// A blob on its way into the store, hashed as it is written.
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Hasher,
    blobs: PathBuf,
    /// Start writeback as the blob grows, for a commit that flushes.
    writeback: bool,
}

impl BlobWriter {
    /// Bytes written so far, including resumed content.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Throws away what was written, for a restart from byte 0.
    pub fn reset(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0).map_err(io_err(&self.path))?;
        self.file.seek(std::io::SeekFrom::Start(0)).map_err(io_err(&self.path))?;
        self.hasher = Hasher::new();
        Ok(())
    }

    /// For a blob that an intent will cover: no early writeback, which
    /// would only compete with the download for the disk.
    pub fn without_writeback(mut self) -> BlobWriter {
        self.writeback = false;
        self
    }

    /// Verifies digest and size, then moves the blob into `blobs/`. On a
    /// mismatch the temporary file is removed and nothing enters the store.
    pub fn commit(self, expected: &Digest, size: Option<u64>) -> Result<(), StoreError> {
        self.commit_under(expected, size, None)
    }

    /// [`BlobWriter::commit`], without the flush if `intent` names the blob:
    /// the intent's settler flushes it later (see [`crate::settle`]).
    pub fn commit_under(
        mut self,
        expected: &Digest,
        size: Option<u64>,
        intent: Option<&crate::settle::Intent>,
    ) -> Result<(), StoreError> {
        let durable_now = !intent.is_some_and(|i| i.covers_blob(expected));
        self.file.flush().map_err(io_err(&self.path))?;
        let len = self.hasher.len();
        let actual = std::mem::take(&mut self.hasher).finish();
        if let Some(s) = size {
            if s != len {
                let _ = std::fs::remove_file(&self.path);
                return Err(StoreError::SizeMismatch { digest: expected.clone(), expected: s, actual: len });
            }
        }
        if &actual != expected {
            let _ = std::fs::remove_file(&self.path);
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        if durable_now {
            self.file.sync_all().map_err(io_err(&self.path))?;
        }
        let dest = self.blobs.join(expected.hex());
        std::fs::rename(&self.path, &dest).map_err(io_err(&dest))?;
        if durable_now {
            fsutil::fsync_parent(&dest).map_err(io_err(&dest))?;
        }
        Ok(())
    }

    /// Removes the temporary file.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        let before = self.hasher.len();
        self.hasher.update(&buf[..n]);
        // Start writeback at every 8 MiB, so that a large blob's disk time
        // overlaps its download and the fsync in commit finds little left.
        if self.writeback && before >> 23 != self.hasher.len() >> 23 {
            use std::os::fd::AsRawFd;
            // SAFETY: sync_file_range on a descriptor we own; it only starts
            // writeback of pages already written, and a failure is harmless
            // because commit's fsync still decides durability.
            unsafe { libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_blobs_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::at(dir.path());
        let store = Store::open(&root).unwrap();
        assert!(root.oci_layout_file().exists());
        let d = store.put_blob_computed(b"hello").unwrap();
        assert!(store.has_blob(&d, Some(5)));
        assert!(!store.has_blob(&d, Some(6)));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");

        let wrong = Digest::of(b"other");
        assert!(matches!(store.put_blob(&wrong, b"hello"), Err(StoreError::DigestMismatch { .. })));
        assert!(!store.has_blob(&wrong, None));
        assert_eq!(std::fs::read_dir(root.tmp_dir()).unwrap().count(), 0);

        let r: Reference = "localhost:5000/a:1".parse().unwrap();
        let entry = IndexEntry {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: d.clone(),
            size: 5,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        };
        store.tag(&r, entry.clone()).unwrap();
        store.tag(&r, entry).unwrap();
        let idx = store.index().unwrap();
        assert_eq!(idx.manifests.len(), 1);
        assert_eq!(idx.manifests[0].ref_name(), Some("localhost:5000/a:1"));
    }

    #[test]
    fn resumed_writer_rehashes_existing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StateRoot::at(dir.path())).unwrap();
        let d = Digest::of(b"abcdef");
        let p = store.partial_path(&d);
        let mut w = store.blob_writer_at(&p, false).unwrap();
        w.write_all(b"abc").unwrap();
        drop(w);
        let mut w = store.blob_writer_at(&p, true).unwrap();
        assert_eq!(w.len(), 3);
        w.write_all(b"def").unwrap();
        w.commit(&d, Some(6)).unwrap();
        assert!(store.has_blob(&d, Some(6)));
    }
}
