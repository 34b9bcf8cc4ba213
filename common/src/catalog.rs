//! The image catalogue: what `index.json` names, read through manifests and
//! configs into typed images, and the lookup of a user's word (a reference,
//! a familiar name, an image ID or a unique ID prefix) to one image.
//!
//! img-list, img-rm and img-unpack all answer "which image is this?", and
//! they must answer it the same way, so the answer lives here.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::record::{Descriptor, ImageRecord, Platform, RunConfig, SCHEMA_VERSION};
use crate::reference::Reference;
use crate::store::{IndexEntry, Store, StoreError, MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {digest} is not a valid {what}")]
    BadJson {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{query:?} is ambiguous: it matches images {}", .candidates.join(", "))]
    Ambiguous { query: String, candidates: Vec<String> },
}

impl crate::HasExitCode for CatalogError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            CatalogError::Store(e) => e.exit_code(),
            CatalogError::BadJson { .. } => crate::ExitCode::Integrity,
            CatalogError::NotFound(_) => crate::ExitCode::NotFound,
            CatalogError::Ambiguous { .. } => crate::ExitCode::Usage,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize, Default)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// The container part of an image config, as Docker and OCI write it.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawContainerConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    healthcheck: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawContainerConfig>,
    #[serde(default)]
    rootfs: RawRootfs,
}

/// One image the store holds: an `index.json` entry followed to its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image ID: the config's digest.
    pub id: Digest,
    /// The manifest's digest (the platform manifest, if the entry is an index).
    pub manifest: Digest,
    pub manifest_size: u64,
    pub manifest_media_type: String,
    /// The index the manifest was chosen from, when the entry is one.
    pub index_digest: Option<Digest>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
    pub created: Option<String>,
    pub run_config: RunConfig,
    /// The `index.json` entry's name (`org.opencontainers.image.ref.name`), if any.
    pub ref_name: Option<String>,
    /// Position of the entry in `index.json`.
    pub entry: usize,
}

impl Image {
    /// The chain IDs of the layers: the names of their snapshots.
    pub fn chain_ids(&self) -> Vec<Digest> {
        crate::record::chain_ids(&self.diff_ids)
    }

    /// The reference the entry's name parses to, if it is a full one.
    pub fn reference(&self) -> Option<Reference> {
        self.ref_name.as_deref().and_then(|n| n.parse().ok())
    }

    /// Compressed size: manifest, config and layers, as the record defines it.
    pub fn size(&self) -> u64 {
        self.manifest_size + self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Unpacked size, as `docker images` shows it: the sum of the layers'
    /// sizes by Docker's rule (files' and symlinks' apparent sizes, hard
    /// links once, directories nothing) that img-unpack recorded beside
    /// each snapshot (`snapshots/<chain-id>.json`, `diskSize`; a snapshot
    /// made before that field existed falls back to its tar stream's
    /// `size`). None until every layer is unpacked.
    pub fn unpacked_size(&self, root: &crate::StateRoot) -> Option<u64> {
        self.chain_ids().iter().try_fold(0u64, |sum, chain| {
            let meta = root.snapshots_dir().join(format!("{}.json", chain.hex()));
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
            Some(sum + v.get("diskSize").or_else(|| v.get("size"))?.as_u64()?)
        })
    }

    /// The record img-fetch and img-list print for this image.
    pub fn record(&self, store: &Store) -> ImageRecord {
        ImageRecord {
            schema_version: SCHEMA_VERSION,
            id: self.id.clone(),
            reference: self.ref_name.clone(),
            digest: self.manifest.clone(),
            index_digest: self.index_digest.clone(),
            media_type: self.manifest_media_type.clone(),
            config: self.config.clone(),
            layers: self.layers.clone(),
            diff_ids: self.diff_ids.clone(),
            platform: self.platform.clone(),
            created: self.created.clone(),
            size: self.size(),
            store: store.root().path().to_path_buf(),
        }
    }
}

fn parse_blob<T: serde::de::DeserializeOwned>(
    store: &Store,
    digest: &Digest,
    what: &'static str,
) -> Result<T, CatalogError> {
    let bytes = store.read_blob(digest)?;
    // Blobs enter the store verified; a changed one is outside damage.
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(StoreError::DigestMismatch { expected: digest.clone(), actual }.into());
    }
    serde_json::from_slice(&bytes).map_err(|source| CatalogError::BadJson {
        digest: digest.clone(),
        what,
        source,
    })
}

/// The platform this host runs, in OCI words.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

fn run_config(c: Option<RawContainerConfig>) -> RunConfig {
    let c = c.unwrap_or_default();
    RunConfig {
        env: c.env.unwrap_or_default(),
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        exposed_ports: c.exposed_ports.map(|m| m.into_keys().collect()).unwrap_or_default(),
        volumes: c.volumes.map(|m| m.into_keys().collect()).unwrap_or_default(),
        stop_signal: c.stop_signal.unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        healthcheck: c.healthcheck.filter(|v| !v.is_null()),
    }
}

/// What an image config says, in the parts kist uses.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
    pub created: Option<String>,
    pub run_config: RunConfig,
}

/// Reads and verifies an image config blob.
pub fn load_config(store: &Store, digest: &Digest) -> Result<ImageConfig, CatalogError> {
    let cfg: RawConfig = parse_blob(store, digest, "image config")?;
    Ok(ImageConfig {
        diff_ids: cfg.rootfs.diff_ids,
        platform: Platform { os: cfg.os, architecture: cfg.architecture, variant: cfg.variant },
        created: cfg.created,
        run_config: run_config(cfg.config),
    })
}

/// Reads one image: a manifest digest, followed to its config.
pub fn load_manifest(
    store: &Store,
    digest: &Digest,
    size: u64,
    media_type: &str,
) -> Result<Image, CatalogError> {
    let m: RawManifest = parse_blob(store, digest, "image manifest")?;
    let cfg = load_config(store, &m.config.digest)?;
    Ok(Image {
        id: m.config.digest.clone(),
        manifest: digest.clone(),
        manifest_size: size,
        manifest_media_type: m.media_type.unwrap_or_else(|| media_type.to_string()),
        index_digest: None,
        config: m.config,
        layers: m.layers,
        diff_ids: cfg.diff_ids,
        platform: cfg.platform,
        created: cfg.created,
        run_config: cfg.run_config,
        ref_name: None,
        entry: 0,
    })
}

/// Reads the image an `index.json` entry names. An entry pointing at an
/// index (a multi-platform image) yields the manifest of this host's platform.
pub fn load_entry(store: &Store, entry: &IndexEntry, position: usize) -> Result<Option<Image>, CatalogError> {
    let mut image = if entry.media_type == MEDIA_OCI_INDEX || entry.media_type == MEDIA_DOCKER_LIST {
        let idx: RawIndex = parse_blob(store, &entry.digest, "image index")?;
        let host = host_platform();
        let chosen = idx.manifests.iter().find(|m| {
            m.platform.as_ref().is_some_and(|p| p.os == host.os && p.architecture == host.architecture)
        });
        let Some(m) = chosen else { return Ok(None) };
        if !store.has_blob(&m.digest, None) {
            return Ok(None);
        }
        let mut img = load_manifest(store, &m.digest, m.size, &m.media_type)?;
        img.index_digest = Some(entry.digest.clone());
        img
    } else {
        load_manifest(store, &entry.digest, entry.size, &entry.media_type)?
    };
    image.ref_name = entry.ref_name().map(str::to_string);
    image.entry = position;
    Ok(Some(image))
}

/// Every image `index.json` names, in its order; entries whose blobs are
/// missing or unreadable are skipped with a warning, so one damaged image
/// does not hide the others.
pub fn list(store: &Store) -> Result<Vec<Image>, CatalogError> {
    let index = store.index()?;
    let mut out = Vec::new();
    for (i, entry) in index.manifests.iter().enumerate() {
        match load_entry(store, entry, i) {
            Ok(Some(img)) => out.push(img),
            Ok(None) => {}
            Err(e) => crate::warn!("skipping index.json entry {} ({}): {}", i, entry.digest, e),
        }
    }
    Ok(out)
}

/// True if an entry's name is the reference the user typed: equal as
/// written, or equal once both are normalised (`busybox` = `docker.io/library/busybox:latest`).
pub fn name_matches(ref_name: &str, query: &str) -> bool {
    if ref_name == query {
        return true;
    }
    match (ref_name.parse::<Reference>(), query.parse::<Reference>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// What a user's word names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The word is a reference: these entries carry it (one, normally).
    Tag(Vec<usize>),
    /// The word is an image ID, an ID prefix or a manifest digest.
    Id(Digest),
}

/// Resolves a reference, image ID (`sha256:…`, 64 hex, or a unique prefix)
/// or manifest digest against the images listed.
pub fn resolve(images: &[Image], query: &str) -> Result<Match, CatalogError> {
    let tagged: Vec<usize> = images
        .iter()
        .filter(|img| img.ref_name.as_deref().is_some_and(|n| name_matches(n, query)))
        .map(|img| img.entry)
        .collect();
    if !tagged.is_empty() {
        return Ok(Match::Tag(tagged));
    }
    if let Ok(d) = query.parse::<Digest>() {
        if images.iter().any(|i| i.id == d) {
            return Ok(Match::Id(d));
        }
        if let Some(img) = images.iter().find(|i| i.manifest == d || i.index_digest.as_ref() == Some(&d)) {
            return Ok(Match::Id(img.id.clone()));
        }
        return Err(CatalogError::NotFound(query.to_string()));
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        let mut ids: Vec<&Digest> =
            images.iter().map(|i| &i.id).filter(|id| id.hex().starts_with(hex)).collect();
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => {}
            1 => return Ok(Match::Id(ids[0].clone())),
            _ => {
                return Err(CatalogError::Ambiguous {
                    query: query.to_string(),
                    candidates: ids.iter().map(|d| d.short().to_string()).collect(),
                })
            }
        }
    }
    Err(CatalogError::NotFound(query.to_string()))
}

/// Resolves a word to one image (the first entry carrying it).
pub fn find<'a>(images: &'a [Image], query: &str) -> Result<&'a Image, CatalogError> {
    match resolve(images, query)? {
        Match::Tag(entries) => images
            .iter()
            .find(|i| entries.first() == Some(&i.entry))
            .ok_or_else(|| CatalogError::NotFound(query.to_string())),
        Match::Id(id) => {
            images.iter().find(|i| i.id == id).ok_or_else(|| CatalogError::NotFound(query.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_after_normalisation() {
        assert!(name_matches("docker.io/library/busybox:latest", "busybox"));
        assert!(name_matches("latest", "latest"));
        assert!(!name_matches("docker.io/library/busybox:1", "busybox"));
        assert!(name_matches("127.0.0.1:5000/a/b:1", "127.0.0.1:5000/a/b:1"));
    }
}
