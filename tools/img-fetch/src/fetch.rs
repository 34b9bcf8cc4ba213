//! The pull itself, the same for every source: resolve the manifest
//! (choosing a platform from an index), fetch the config, then the layers
//! in parallel, each under a per-blob lock so that concurrent pulls
//! download a blob once; store manifests last and point the tag at the
//! image. Every blob is verified on its way in (store::BlobWriter::commit)
//! and `index.json` changes only after everything is in place. The blobs
//! a pull writes are flushed by a settler after it, under an intent made
//! durable before the first of them (kist_common::settle), unless `--sync`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use kist_common::fsutil::Lock;
use kist_common::record::{self, Descriptor, ImageRecord, LayerRecord, Platform, Record};
use kist_common::settle::Intent;
use kist_common::store::{IndexEntry, Store, StoreError};
use kist_common::{Digest, Reference};

use crate::image::{self, Document, ImageError, Manifest, CONFIG_MAX};
use crate::progress::Progress;
use crate::source::{Source, SourceError};

/// Annotation on the tag's index.json entry: the index the manifest was
/// chosen from, so that a later pull can tell the tag has not moved.
pub const INDEX_DIGEST: &str = "io.kist.image.index.digest";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] kist_common::store::StoreError),
    #[error(transparent)]
    Fs(#[from] kist_common::fsutil::FsError),
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    Digest { what: String, expected: Digest, actual: Digest },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    Size { what: String, expected: u64, actual: u64 },
    #[error("{what}: an index inside an index is not supported")]
    NestedIndex { what: String },
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

impl kist_common::HasExitCode for FetchError {
    fn exit_code(&self) -> kist_common::ExitCode {
        use kist_common::ExitCode;
        match self {
            FetchError::Source(e) => e.exit_code(),
            FetchError::Image(e) => e.exit_code(),
            FetchError::Store(e) => e.exit_code(),
            FetchError::Fs(e) => e.exit_code(),
            FetchError::Digest { .. } | FetchError::Size { .. } | FetchError::NestedIndex { .. } => {
                ExitCode::Integrity
            }
            FetchError::Stdout(_) => ExitCode::Io,
        }
    }
}

/// The manifest a pull starts from.
pub enum Top {
    /// Known by digest only (a HEAD answer, an index.json entry): read from
    /// the store if present there, else from the source.
    Digest { digest: Digest, size: Option<u64>, media_type: Option<String> },
    /// Already fetched, bytes in hand; `expected` is the digest it must have
    /// (a pinned reference, the server's Docker-Content-Digest).
    Fetched { bytes: Vec<u8>, media_type: Option<String>, expected: Option<Digest> },
}

pub struct Puller<'a> {
    pub store: &'a Store,
    pub progress: &'a Progress,
    pub platform: Platform,
    pub stream: bool,
    pub jobs: usize,
    /// `--platform` was given: warn when a single-platform image does not match it.
    pub explicit_platform: bool,
    pub quiet: bool,
    /// `--sync`: every blob is flushed before it enters `blobs/`, and the
    /// pull ends only when its blobs are on disk. Otherwise an intent
    /// covers them and a settler flushes them after the pull (see
    /// `kist_common::settle`).
    pub sync: bool,
    /// Intents of the pulls so far, for the caller to hand to a settler.
    pub intents: Mutex<Vec<Intent>>,
}

struct Resolved {
    index: Option<(Digest, Vec<u8>)>,
    manifest_digest: Digest,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
}

impl Puller<'_> {
    /// A manifest by digest: from the store when it is there (it was
    /// verified when it entered), else from the source, verified now.
    fn manifest_bytes(
        &self,
        src: &dyn Source,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<(Vec<u8>, Option<String>), FetchError> {
        if self.store.has_blob(digest, size) {
            return Ok((self.store.read_blob(digest)?, None));
        }
        let fetched = src.get_manifest(digest)?;
        let what = format!("manifest {digest}");
        verify(&what, &fetched.bytes, digest, size)?;
        Ok((fetched.bytes, fetched.media_type))
    }

    fn resolve(&self, src: &dyn Source, top: Top) -> Result<Resolved, FetchError> {
        let (digest, bytes, header_type) = match top {
            Top::Digest { digest, size, media_type } => {
                let (bytes, t) = self.manifest_bytes(src, &digest, size)?;
                (digest, bytes, t.or(media_type))
            }
            Top::Fetched { bytes, media_type, expected } => {
                let actual = Digest::of(&bytes);
                if let Some(e) = expected {
                    if e != actual {
                        return Err(FetchError::Digest { what: "manifest".into(), expected: e, actual });
                    }
                }
                (actual, bytes, media_type)
            }
        };
        let what = format!("manifest {digest}");
        match image::parse_document(&bytes, header_type.as_deref(), &what)? {
            Document::Manifest(manifest) => {
                Ok(Resolved { index: None, manifest_digest: digest, manifest_bytes: bytes, manifest })
            }
            Document::Index { manifests, .. } => {
                let chosen = image::choose(&manifests, &self.platform, &format!("index {digest}"))?;
                let (mbytes, mtype) = self.manifest_bytes(src, &chosen.digest, Some(chosen.size))?;
                let mwhat = format!("manifest {}", chosen.digest);
                match image::parse_document(&mbytes, mtype.as_deref().or(Some(&chosen.media_type)), &mwhat)? {
                    Document::Manifest(manifest) => Ok(Resolved {
                        index: Some((digest, bytes)),
                        manifest_digest: chosen.digest,
                        manifest_bytes: mbytes,
                        manifest,
                    }),
                    Document::Index { .. } => Err(FetchError::NestedIndex { what: mwhat }),
                }
            }
        }
    }

    /// Makes sure one blob is in the store. Returns true if it was there.
    fn blob(&self, src: &dyn Source, desc: &Descriptor, intent: Option<&Intent>) -> Result<bool, FetchError> {
        if self.store.has_blob(&desc.digest, Some(desc.size)) {
            self.progress.finish(&desc.digest, desc.size, true);
            return Ok(true);
        }
        // Another img-fetch may be downloading this very blob: wait for it
        // rather than download it twice.
        let _lock = Lock::exclusive(&self.store.root().blob_lock(&desc.digest))?;
        if self.store.has_blob(&desc.digest, Some(desc.size)) {
            self.progress.finish(&desc.digest, desc.size, true);
            return Ok(true);
        }
        let partial = self.store.partial_path(&desc.digest);
        let resume =
            std::fs::metadata(&partial).map(|m| m.len() > 0 && m.len() <= desc.size).unwrap_or(false);
        let mut w = self.store.blob_writer_at(&partial, resume)?;
        if intent.is_some_and(|i| i.covers_blob(&desc.digest)) {
            w = w.without_writeback();
        }
        self.progress.start(&desc.digest, desc.size);
        let d = desc.digest.clone();
        let result = src.fetch_blob(desc, &mut w, &|cur, _| self.progress.update(&d, cur));
        match result {
            Ok(()) => {
                w.commit_under(&desc.digest, Some(desc.size), intent)?;
                self.progress.finish(&desc.digest, desc.size, false);
                Ok(false)
            }
            Err(e) => {
                if e.is_local_write() || e.is_bad_data() {
                    w.abort();
                }
                // Otherwise the partial file stays in tmp/ for the next run to resume.
                Err(e.into())
            }
        }
    }

    /// Stores a manifest under its blob lock: put_blob writes through a
    /// temporary name derived from the digest, which two processes must not share.
    fn put_small(&self, digest: &Digest, bytes: &[u8], intent: Option<&Intent>) -> Result<(), FetchError> {
        if self.store.has_blob(digest, Some(bytes.len() as u64)) {
            return Ok(());
        }
        let _lock = Lock::exclusive(&self.store.root().blob_lock(digest))?;
        self.store.put_blob_under(digest, bytes, intent)?;
        Ok(())
    }

    /// Pulls the image `top` names from `src` and tags it `name`.
    pub fn pull(
        &self,
        src: &dyn Source,
        top: Top,
        name: Option<&Reference>,
    ) -> Result<ImageRecord, FetchError> {
        let r = self.resolve(src, top)?;
        let m = &r.manifest;
        if m.config.size > CONFIG_MAX {
            return Err(FetchError::Size {
                what: format!("config {}", m.config.digest),
                expected: CONFIG_MAX,
                actual: m.config.size,
            });
        }
        let intent = self.intent_for(&r)?;
        let result = self.pull_resolved(src, &r, name, intent.as_ref());
        if let Some(i) = intent {
            self.intents.lock().unwrap_or_else(|p| p.into_inner()).push(i);
        }
        result
    }

    /// The intent covering every blob of `r` that the store lacks, made
    /// durable before the first of them is written; none when all are
    /// present (a second pull flushes nothing) or with `--sync`.
    fn intent_for(&self, r: &Resolved) -> Result<Option<Intent>, FetchError> {
        if self.sync {
            return Ok(None);
        }
        let m = &r.manifest;
        let mut wanted: Vec<(Digest, u64)> = Vec::new();
        if let Some((d, bytes)) = &r.index {
            wanted.push((d.clone(), bytes.len() as u64));
        }
        wanted.push((r.manifest_digest.clone(), r.manifest_bytes.len() as u64));
        wanted.push((m.config.digest.clone(), m.config.size));
        wanted.extend(m.layers.iter().map(|l| (l.digest.clone(), l.size)));
        let missing: Vec<Digest> = wanted
            .into_iter()
            .filter(|(d, size)| !self.store.has_blob(d, Some(*size)))
            .map(|(d, _)| d)
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        Ok(Intent::begin_or_flush(self.store.root(), &missing, &[]).map_err(StoreError::from)?)
    }

    fn pull_resolved(
        &self,
        src: &dyn Source,
        r: &Resolved,
        name: Option<&Reference>,
        intent: Option<&Intent>,
    ) -> Result<ImageRecord, FetchError> {
        let m = &r.manifest;
        self.blob(src, &m.config, intent)?;
        let config_bytes = self.store.read_blob(&m.config.digest)?;
        let cfg = image::parse_config(&config_bytes, m.layers.len(), &format!("config {}", m.config.digest))?;
        if self.explicit_platform
            && !self.quiet
            && r.index.is_none()
            && !crate::platform::matches(&self.platform, &cfg.platform)
        {
            kist_common::warn!(
                "the image's platform ({}) does not match the requested {}",
                cfg.platform,
                self.platform
            );
        }
        let chain_ids = record::chain_ids(&cfg.diff_ids);
        let store_path = self.store.root().path().to_path_buf();

        let layer_record = |i: usize| {
            let l = &m.layers[i];
            Record::Layer(LayerRecord {
                schema_version: record::SCHEMA_VERSION,
                image: m.config.digest.clone(),
                index: i,
                count: m.layers.len(),
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: cfg.diff_ids[i].clone(),
                chain_id: chain_ids[i].clone(),
                store: store_path.clone(),
            })
        };
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<FetchError>> = Mutex::new(None);
        let workers = self.jobs.clamp(1, m.layers.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= m.layers.len() {
                        return;
                    }
                    let result = self.blob(src, &m.layers[i], intent).and_then(|_| {
                        if self.stream {
                            record::emit(&layer_record(i)).map_err(FetchError::Stdout)?;
                        }
                        Ok(())
                    });
                    if let Err(e) = result {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        return;
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }

        self.put_small(&r.manifest_digest, &r.manifest_bytes, intent)?;
        if let Some((d, bytes)) = &r.index {
            self.put_small(d, bytes, intent)?;
        }
        let platform = Platform {
            os: cfg.platform.os.clone(),
            architecture: cfg.platform.architecture.clone(),
            variant: cfg.platform.variant.clone(),
        };
        if let Some(name) = name {
            let mut annotations = BTreeMap::new();
            if let Some((d, _)) = &r.index {
                annotations.insert(INDEX_DIGEST.to_string(), d.to_string());
            }
            let entry = IndexEntry {
                media_type: m.media_type.clone(),
                digest: r.manifest_digest.clone(),
                size: r.manifest_bytes.len() as u64,
                platform: Some(platform.clone()),
                annotations,
                extra: BTreeMap::new(),
            };
            if !already_tagged(self.store, name, &entry)? {
                self.store.tag(name, entry)?;
            }
        }
        let size =
            r.manifest_bytes.len() as u64 + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
        Ok(ImageRecord {
            schema_version: record::SCHEMA_VERSION,
            id: m.config.digest.clone(),
            reference: name.map(|n| n.to_string()),
            digest: r.manifest_digest.clone(),
            index_digest: r.index.as_ref().map(|(d, _)| d.clone()),
            media_type: m.media_type.clone(),
            config: m.config.clone(),
            layers: m.layers.clone(),
            diff_ids: cfg.diff_ids.clone(),
            platform,
            created: cfg.created.clone(),
            size,
            store: store_path,
        })
    }
}

/// True if index.json already says exactly this: a second pull of an
/// unchanged image then writes nothing.
fn already_tagged(store: &Store, name: &Reference, entry: &IndexEntry) -> Result<bool, FetchError> {
    let text = name.to_string();
    let idx = store.index()?;
    Ok(idx.manifests.iter().any(|m| {
        m.ref_name() == Some(text.as_str())
            && m.digest == entry.digest
            && m.size == entry.size
            && m.media_type == entry.media_type
            && m.platform == entry.platform
            && m.annotations.get(INDEX_DIGEST) == entry.annotations.get(INDEX_DIGEST)
    }))
}

/// The entry index.json holds for `name`, if any.
pub fn tagged(store: &Store, name: &Reference) -> Result<Option<IndexEntry>, FetchError> {
    let text = name.to_string();
    Ok(store.index()?.manifests.into_iter().find(|m| m.ref_name() == Some(text.as_str())))
}

fn verify(what: &str, bytes: &[u8], digest: &Digest, size: Option<u64>) -> Result<(), FetchError> {
    if let Some(s) = size {
        if s != bytes.len() as u64 {
            return Err(FetchError::Size { what: what.into(), expected: s, actual: bytes.len() as u64 });
        }
    }
    let actual = Digest::of(bytes);
    if &actual != digest {
        return Err(FetchError::Digest { what: what.into(), expected: digest.clone(), actual });
    }
    Ok(())
}
