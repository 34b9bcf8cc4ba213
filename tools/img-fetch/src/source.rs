//! Where images come from: a registry (`[docker://]REF`), an OCI image
//! layout (`oci:DIR[:TAG]`) or a `docker save` archive
//! (`docker-archive:FILE[:REF]`). Each answers "the manifest with this
//! digest" and "copy this blob into a writer"; fetch.rs does the rest, so
//! every source gets the same verification.
//!
//! A docker-archive holds a Docker config and uncompressed layer tars. It
//! is converted, losslessly and deterministically, into an OCI image: the
//! config blob is kept byte for byte (as `application/vnd.oci.image.config.v1+json`),
//! each layer tar becomes an `application/vnd.oci.image.layer.v1.tar` blob
//! whose digest is its diff ID (gzip or zstd layers, as newer `docker save`
//! may write, keep their bytes and get the `+gzip`/`+zstd` type), and kist
//! writes an OCI manifest for them. Importing the same archive twice gives
//! the same manifest digest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kist_common::record::Descriptor;
use kist_common::store::{BlobWriter, Index, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST, REF_NAME};
use kist_common::{Digest, Reference};

use crate::image::MANIFEST_MAX;
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout (no oci-layout file)")]
    NotLayout { path: PathBuf },
    #[error("{path}: {message}")]
    BadLayout { path: PathBuf, message: String },
    #[error("{what} not found in {path}")]
    NotFound { what: String, path: PathBuf },
    #[error("{path} names several images; choose one with {hint}")]
    Ambiguous { path: PathBuf, hint: String },
    #[error("{path}: not a docker-archive: {message}")]
    BadArchive { path: PathBuf, message: String },
    #[error("{what}: expected {expected} bytes, the source holds {actual}")]
    Size { what: String, expected: u64, actual: u64 },
    #[error("cannot write {what} to the store")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl kist_common::HasExitCode for SourceError {
    fn exit_code(&self) -> kist_common::ExitCode {
        use kist_common::ExitCode;
        match self {
            SourceError::Registry(e) => e.exit_code(),
            SourceError::Io { source, .. } | SourceError::Write { source, .. } => {
                kist_common::exit::io_exit_code(source)
            }
            SourceError::NotLayout { .. } | SourceError::NotFound { .. } => ExitCode::NotFound,
            SourceError::Ambiguous { .. } => ExitCode::Usage,
            SourceError::BadLayout { .. } | SourceError::BadArchive { .. } | SourceError::Size { .. } => {
                ExitCode::Integrity
            }
        }
    }
}

impl SourceError {
    /// True when the local store, not the source, failed: the partial
    /// download is worth nothing then (a full disk needs the space back).
    pub fn is_local_write(&self) -> bool {
        matches!(self, SourceError::Write { .. } | SourceError::Registry(RegistryError::Write { .. }))
    }

    /// The data itself is bad: resuming from it would only repeat the error.
    pub fn is_bad_data(&self) -> bool {
        matches!(self, SourceError::Size { .. } | SourceError::Registry(RegistryError::TooLarge { .. }))
    }
}

/// Something that can hand out manifests and blobs by digest.
pub trait Source: Sync {
    fn get_manifest(&self, digest: &Digest) -> Result<FetchedManifest, SourceError>;
    /// Writes the blob into `w`, which may already hold a prefix of it.
    fn fetch_blob(
        &self,
        desc: &Descriptor,
        w: &mut BlobWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), SourceError>;
}

impl Source for RegistryClient {
    fn get_manifest(&self, digest: &Digest) -> Result<FetchedManifest, SourceError> {
        Ok(RegistryClient::get_manifest(self, &digest.to_string())?)
    }

    fn fetch_blob(
        &self,
        desc: &Descriptor,
        w: &mut BlobWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), SourceError> {
        Ok(RegistryClient::fetch_blob(self, desc, w, progress)?)
    }
}

/// Copies `len` bytes from `r` into `w`, resuming after what `w` holds.
fn copy_range(
    r: &mut File,
    start: u64,
    len: u64,
    w: &mut BlobWriter,
    what: &str,
    path: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<(), SourceError> {
    if w.len() > len {
        w.reset().map_err(|e| SourceError::Write { what: what.into(), source: std::io::Error::other(e) })?;
    }
    let io = |source| SourceError::Io { path: path.to_path_buf(), source };
    r.seek(SeekFrom::Start(start + w.len())).map_err(io)?;
    let mut left = len - w.len();
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(SourceError::Size { what: what.into(), expected: len, actual: len - left });
        }
        std::io::Write::write_all(w, &buf[..n])
            .map_err(|source| SourceError::Write { what: what.into(), source })?;
        left -= n as u64;
        progress(w.len(), len);
    }
    Ok(())
}

/// An OCI image layout directory.
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    pub fn open(dir: &Path) -> Result<OciLayout, SourceError> {
        if !dir.join("oci-layout").is_file() {
            return Err(SourceError::NotLayout { path: dir.to_path_buf() });
        }
        Ok(OciLayout { dir: dir.to_path_buf() })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// The index.json entry named `tag` (its `org.opencontainers.image.ref.name`),
    /// or the only entry when no tag is given.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor, SourceError> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| SourceError::BadLayout {
            path: path.clone(),
            message: format!("index.json: {e}"),
        })?;
        let pick = match tag {
            Some(t) => {
                index.manifests.iter().find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(t))
            }
            None if index.manifests.len() == 1 => index.manifests.first(),
            None if index.manifests.is_empty() => None,
            None => {
                return Err(SourceError::Ambiguous { path: self.dir.clone(), hint: "oci:DIR:TAG".into() })
            }
        };
        let e = pick.ok_or_else(|| SourceError::NotFound {
            what: match tag {
                Some(t) => format!("tag {t:?}"),
                None => "an image".into(),
            },
            path: self.dir.clone(),
        })?;
        Ok(Descriptor { media_type: e.media_type.clone(), digest: e.digest.clone(), size: e.size })
    }
}

impl Source for OciLayout {
    fn get_manifest(&self, digest: &Digest) -> Result<FetchedManifest, SourceError> {
        let path = self.blob_path(digest);
        let f = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SourceError::NotFound { what: format!("manifest {digest}"), path: self.dir.clone() }
            } else {
                SourceError::Io { path: path.clone(), source: e }
            }
        })?;
        let mut bytes = Vec::new();
        f.take(MANIFEST_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| SourceError::Io { path: path.clone(), source })?;
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(SourceError::BadLayout { path, message: "manifest larger than 4 MiB".into() });
        }
        Ok(FetchedManifest { bytes, media_type: None, header_digest: None })
    }

    fn fetch_blob(
        &self,
        desc: &Descriptor,
        w: &mut BlobWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), SourceError> {
        let path = self.blob_path(&desc.digest);
        let what = format!("blob {}", desc.digest);
        let mut f = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SourceError::NotFound { what: what.clone(), path: self.dir.clone() }
            } else {
                SourceError::Io { path: path.clone(), source: e }
            }
        })?;
        let actual = f.metadata().map_err(|source| SourceError::Io { path: path.clone(), source })?.len();
        if actual != desc.size {
            return Err(SourceError::Size { what, expected: desc.size, actual });
        }
        copy_range(&mut f, 0, desc.size, w, &what, &path, progress)
    }
}

/// A file inside the archive: where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A `docker save` archive, converted to an OCI image on the fly.
pub struct DockerArchive {
    path: PathBuf,
    file: std::sync::Mutex<File>,
    manifest: Vec<u8>,
    manifest_digest: Digest,
    blobs: HashMap<Digest, Member>,
    /// The archive's first RepoTag for the chosen image, if it has one.
    pub repo_tag: Option<String>,
}

fn lexical_join(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if rel.starts_with('/') { Vec::new() } else { base.split('/').collect() };
    parts.pop();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    parts.join("/")
}

fn compression_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

impl DockerArchive {
    /// Reads the archive's table of contents, `manifest.json` and the
    /// chosen image's config. `want` picks an image by one of its RepoTags;
    /// an archive of one image is taken whatever `want` says.
    pub fn open(path: &Path, want: Option<&Reference>) -> Result<DockerArchive, SourceError> {
        let io = |source| SourceError::Io { path: path.to_path_buf(), source };
        let bad = |message: String| SourceError::BadArchive { path: path.to_path_buf(), message };
        let mut file = File::open(path).map_err(io)?;
        let mut members: HashMap<String, Member> = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        {
            let mut ar = tar::Archive::new(&mut file);
            let entries = ar.entries_with_seek().map_err(|e| bad(e.to_string()))?;
            for entry in entries {
                let entry = entry.map_err(|e| bad(e.to_string()))?;
                let name = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
                let name = name.trim_start_matches("./").to_string();
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        members
                            .insert(name, Member { offset: entry.raw_file_position(), size: entry.size() });
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Ok(Some(t)) = entry.link_name() {
                            let t = t.to_string_lossy().into_owned();
                            let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                                lexical_join(&name, &t)
                            } else {
                                t.trim_start_matches("./").to_string()
                            };
                            links.insert(name, target);
                        }
                    }
                    _ => {}
                }
            }
        }
        let lookup = |name: &str| -> Option<Member> {
            let name = name.trim_start_matches("./");
            members.get(name).copied().or_else(|| links.get(name).and_then(|t| members.get(t).copied()))
        };
        let mut read_member = |name: &str, limit: u64| -> Result<Vec<u8>, SourceError> {
            let m = lookup(name).ok_or_else(|| bad(format!("{name} is missing")))?;
            if m.size > limit {
                return Err(bad(format!("{name} is larger than {limit} bytes")));
            }
            file.seek(SeekFrom::Start(m.offset)).map_err(io)?;
            let mut buf = vec![0u8; usize::try_from(m.size).map_err(|_| bad(format!("{name} too large")))?];
            file.read_exact(&mut buf).map_err(io)?;
            Ok(buf)
        };
        let manifest_json = read_member("manifest.json", MANIFEST_MAX)?;
        let images: Vec<ArchiveImage> =
            serde_json::from_slice(&manifest_json).map_err(|e| bad(format!("manifest.json: {e}")))?;
        let normalised = |t: &str| t.parse::<Reference>().ok();
        let chosen = match want {
            Some(w) => images
                .iter()
                .find(|i| i.repo_tags.iter().flatten().any(|t| normalised(t).as_ref() == Some(w)))
                .or(if images.len() == 1 { images.first() } else { None }),
            None if images.len() > 1 => {
                return Err(SourceError::Ambiguous {
                    path: path.to_path_buf(),
                    hint: "docker-archive:FILE:REF".into(),
                })
            }
            None => images.first(),
        }
        .ok_or_else(|| SourceError::NotFound {
            what: want.map_or("an image".to_string(), |w| format!("image {w}")),
            path: path.to_path_buf(),
        })?;
        let config = read_member(&chosen.config, crate::image::CONFIG_MAX)?;
        let config_digest = Digest::of(&config);
        let cfg =
            crate::image::parse_config(&config, chosen.layers.len(), &format!("{}: config", path.display()))
                .map_err(|e| bad(e.to_string()))?;
        let mut blobs = HashMap::new();
        let config_member = lookup(&chosen.config).ok_or_else(|| bad("config vanished".into()))?;
        blobs.insert(config_digest.clone(), config_member);
        let mut layers = Vec::new();
        for (i, name) in chosen.layers.iter().enumerate() {
            let m = lookup(name).ok_or_else(|| bad(format!("layer {name} is missing")))?;
            let mut head = [0u8; 4];
            file.seek(SeekFrom::Start(m.offset)).map_err(io)?;
            let n = file.read(&mut head).map_err(io)?;
            let media_type = compression_media_type(&head[..n]);
            let digest = if media_type == "application/vnd.oci.image.layer.v1.tar" {
                // An uncompressed layer's digest is its diff ID; the copy
                // into the store verifies it.
                cfg.diff_ids[i].clone()
            } else {
                let mut h = kist_common::digest::Hasher::new();
                file.seek(SeekFrom::Start(m.offset)).map_err(io)?;
                let mut r = (&mut file).take(m.size);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = r.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                h.finish()
            };
            blobs.insert(digest.clone(), m);
            layers.push(
                serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": m.size}),
            );
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
        let repo_tag = chosen.repo_tags.iter().flatten().next().cloned();
        Ok(DockerArchive {
            path: path.to_path_buf(),
            file: std::sync::Mutex::new(file),
            manifest_digest: Digest::of(&manifest),
            manifest,
            blobs,
            repo_tag,
        })
    }

    /// The synthesised OCI manifest.
    pub fn manifest(&self) -> (Digest, Vec<u8>) {
        (self.manifest_digest.clone(), self.manifest.clone())
    }
}

impl Source for DockerArchive {
    fn get_manifest(&self, digest: &Digest) -> Result<FetchedManifest, SourceError> {
        if digest != &self.manifest_digest {
            return Err(SourceError::NotFound {
                what: format!("manifest {digest}"),
                path: self.path.clone(),
            });
        }
        Ok(FetchedManifest {
            bytes: self.manifest.clone(),
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            header_digest: None,
        })
    }

    fn fetch_blob(
        &self,
        desc: &Descriptor,
        w: &mut BlobWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), SourceError> {
        let what = format!("blob {}", desc.digest);
        let m = self
            .blobs
            .get(&desc.digest)
            .ok_or_else(|| SourceError::NotFound { what: what.clone(), path: self.path.clone() })?;
        if m.size != desc.size {
            return Err(SourceError::Size { what, expected: desc.size, actual: m.size });
        }
        // One file handle, so layers are copied one at a time; the source
        // is local and the disk is the limit anyway.
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        copy_range(&mut f, m.offset, m.size, w, &what, &self.path, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_resolve_lexically() {
        assert_eq!(lexical_join("abc/layer.tar", "../def/layer.tar"), "def/layer.tar");
        assert_eq!(lexical_join("abc/layer.tar", "x.tar"), "abc/x.tar");
        assert_eq!(lexical_join("top", "/abs/x"), "abs/x");
    }

    #[test]
    fn compression_by_magic() {
        assert_eq!(
            compression_media_type(&[0x1f, 0x8b, 8, 0]),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            compression_media_type(&[0x28, 0xb5, 0x2f, 0xfd]),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(compression_media_type(b"usr/"), "application/vnd.oci.image.layer.v1.tar");
    }
}
