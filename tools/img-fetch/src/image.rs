//! Manifests, indexes and image configs as img-fetch reads them: the media
//! types it accepts, and the checks that make a document safe to store
//! (known media types, sha256 digests, one diff ID per layer).

use kist_common::record::{Descriptor, Platform};
use kist_common::store::{
    MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
};
use kist_common::Digest;

/// The Accept header for manifest requests, most preferred first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; anything bigger is refused before it is read.
pub const MANIFEST_MAX: u64 = 4 << 20;
/// Image configs hold history and labels, still small.
pub const CONFIG_MAX: u64 = 32 << 20;

/// Layer media types kist can unpack.
pub const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: not valid JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: unsupported media type {media_type:?}")]
    UnknownMediaType { what: String, media_type: String },
    #[error(
        "{what}: Docker schema 1 manifests are not supported (push the image again with a current client)"
    )]
    Schema1 { what: String },
    #[error("{what}: media type {header:?} from the server does not match the document's {body:?}")]
    MediaTypeMismatch { what: String, header: String, body: String },
    #[error("{what}: the config lists {diff_ids} diff IDs for {layers} layers")]
    LayerCount { what: String, diff_ids: usize, layers: usize },
    #[error("{what}: no manifest for platform {platform} (available: {available})")]
    NoPlatform { what: String, platform: Platform, available: String },
}

impl kist_common::HasExitCode for ImageError {
    fn exit_code(&self) -> kist_common::ExitCode {
        match self {
            ImageError::NoPlatform { .. } => kist_common::ExitCode::NotFound,
            _ => kist_common::ExitCode::Integrity,
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDoc {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// One entry of an index.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub descriptor: Descriptor,
    pub platform: Platform,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone)]
pub enum Document {
    Index { media_type: String, manifests: Vec<IndexEntry> },
    Manifest(Manifest),
}

fn is_manifest_type(t: &str) -> bool {
    t == MEDIA_OCI_MANIFEST || t == MEDIA_DOCKER_MANIFEST
}

fn is_index_type(t: &str) -> bool {
    t == MEDIA_OCI_INDEX || t == MEDIA_DOCKER_LIST
}

fn desc(d: RawDescriptor) -> Descriptor {
    Descriptor { media_type: d.media_type, digest: d.digest, size: d.size }
}

/// Parses a manifest or index. `header` is the Content-Type the server sent
/// (or the media type a referring descriptor gave), if any.
pub fn parse_document(bytes: &[u8], header: Option<&str>, what: &str) -> Result<Document, ImageError> {
    let what_s = || what.to_string();
    let raw: RawDoc =
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json { what: what_s(), source })?;
    if raw.schema_version == Some(1) {
        return Err(ImageError::Schema1 { what: what_s() });
    }
    // Servers label manifests loosely (application/json, text/plain); only a
    // header naming a manifest type must agree with the document.
    let header = header
        .map(|h| h.split(';').next().unwrap_or(h).trim())
        .filter(|h| is_manifest_type(h) || is_index_type(h) || h.contains("prettyjws"));
    if let Some(h) = header {
        if h.contains("prettyjws") || h == "application/vnd.docker.distribution.manifest.v1+json" {
            return Err(ImageError::Schema1 { what: what_s() });
        }
    }
    let media_type = match (&raw.media_type, header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ImageError::MediaTypeMismatch { what: what_s(), header: h.into(), body: b.clone() })
        }
        (Some(b), _) => b.clone(),
        (None, Some(h)) => h.to_string(),
        // OCI allows the field to be absent: tell the kinds apart by shape.
        (None, None) if raw.manifests.is_some() => MEDIA_OCI_INDEX.to_string(),
        (None, None) => MEDIA_OCI_MANIFEST.to_string(),
    };
    if is_index_type(&media_type) {
        let manifests = raw.manifests.unwrap_or_default();
        let entries = manifests
            .into_iter()
            .map(|m| {
                let p = m.platform.clone().unwrap_or_default();
                let platform = Platform { os: p.os, architecture: p.architecture, variant: p.variant };
                IndexEntry { descriptor: desc(m), platform }
            })
            .collect();
        return Ok(Document::Index { media_type, manifests: entries });
    }
    if !is_manifest_type(&media_type) {
        return Err(ImageError::UnknownMediaType { what: what_s(), media_type });
    }
    let config = raw.config.ok_or_else(|| ImageError::UnknownMediaType {
        what: what_s(),
        media_type: format!("{media_type} without a config"),
    })?;
    if config.media_type != MEDIA_OCI_CONFIG && config.media_type != MEDIA_DOCKER_CONFIG {
        return Err(ImageError::UnknownMediaType {
            what: format!("{what}: config (not a container image)"),
            media_type: config.media_type,
        });
    }
    let layers: Vec<Descriptor> = raw.layers.unwrap_or_default().into_iter().map(desc).collect();
    for (i, l) in layers.iter().enumerate() {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(ImageError::UnknownMediaType {
                what: format!("{what}: layer {i} ({})", l.digest),
                media_type: l.media_type.clone(),
            });
        }
    }
    Ok(Document::Manifest(Manifest { media_type, config: desc(config), layers }))
}

/// Picks the manifest for `want` from an index's entries.
pub fn choose(manifests: &[IndexEntry], want: &Platform, what: &str) -> Result<Descriptor, ImageError> {
    let usable: Vec<&IndexEntry> = manifests
        .iter()
        .filter(|m| is_manifest_type(&m.descriptor.media_type) || is_index_type(&m.descriptor.media_type))
        .collect();
    let platforms: Vec<Platform> = usable.iter().map(|m| m.platform.clone()).collect();
    match crate::platform::select(want, &platforms) {
        Some(i) => Ok(usable[i].descriptor.clone()),
        None => {
            let available: Vec<String> = platforms
                .iter()
                .filter(|p| !p.os.is_empty() && p.os != "unknown")
                .map(|p| p.to_string())
                .collect();
            Err(ImageError::NoPlatform {
                what: what.to_string(),
                platform: want.clone(),
                available: if available.is_empty() { "none".into() } else { available.join(", ") },
            })
        }
    }
}

/// What img-fetch needs from an image config.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub platform: Platform,
    pub created: Option<String>,
    pub diff_ids: Vec<Digest>,
}

#[derive(serde::Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    created: Option<String>,
    rootfs: RawRootfs,
}

#[derive(serde::Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

pub fn parse_config(bytes: &[u8], layers: usize, what: &str) -> Result<ImageConfig, ImageError> {
    let raw: RawConfig = serde_json::from_slice(bytes)
        .map_err(|source| ImageError::Json { what: what.to_string(), source })?;
    if raw.rootfs.diff_ids.len() != layers {
        return Err(ImageError::LayerCount {
            what: what.to_string(),
            diff_ids: raw.rootfs.diff_ids.len(),
            layers,
        });
    }
    Ok(ImageConfig {
        platform: Platform { os: raw.os, architecture: raw.architecture, variant: raw.variant },
        created: raw.created,
        diff_ids: raw.rootfs.diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest(layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_MANIFEST}","config":{{"mediaType":"{MEDIA_OCI_CONFIG}","digest":"{D}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{D}","size":3}}]}}"#
        )
    }

    #[test]
    fn manifests_and_media_types() {
        let m = manifest("application/vnd.oci.image.layer.v1.tar+gzip");
        assert!(matches!(
            parse_document(m.as_bytes(), Some(MEDIA_OCI_MANIFEST), "m"),
            Ok(Document::Manifest(_))
        ));
        assert!(matches!(
            parse_document(m.as_bytes(), Some("application/json"), "m"),
            Ok(Document::Manifest(_))
        ));
        assert!(matches!(
            parse_document(m.as_bytes(), Some(MEDIA_DOCKER_MANIFEST), "m"),
            Err(ImageError::MediaTypeMismatch { .. })
        ));
        let m = manifest("application/x-weird");
        assert!(matches!(parse_document(m.as_bytes(), None, "m"), Err(ImageError::UnknownMediaType { .. })));
        assert!(matches!(parse_document(b"{not json", None, "m"), Err(ImageError::Json { .. })));
        assert!(matches!(
            parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, None, "m"),
            Err(ImageError::Schema1 { .. })
        ));
        assert!(matches!(
            parse_document(br#"{"schemaVersion":2,"mediaType":"application/vnd.foo"}"#, None, "m"),
            Err(ImageError::UnknownMediaType { .. })
        ));
    }

    #[test]
    fn index_selection() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let Document::Index { manifests, .. } = parse_document(idx.as_bytes(), None, "i").unwrap() else {
            panic!("not an index")
        };
        let want = crate::platform::parse("linux/amd64").unwrap();
        assert_eq!(choose(&manifests, &want, "i").unwrap().size, 2);
        let want = crate::platform::parse("linux/arm64").unwrap();
        assert_eq!(choose(&manifests, &want, "i").unwrap().size, 1);
        let want = crate::platform::parse("linux/s390x").unwrap();
        let err = choose(&manifests, &want, "i").unwrap_err();
        assert!(err.to_string().contains("linux/arm64/v8, linux/amd64"), "{err}");
    }

    #[test]
    fn configs() {
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D}"]}}}}"#
        );
        let cfg = parse_config(c.as_bytes(), 1, "c").unwrap();
        assert_eq!(cfg.platform.to_string(), "linux/amd64");
        assert!(matches!(parse_config(c.as_bytes(), 2, "c"), Err(ImageError::LayerCount { .. })));
        assert!(parse_config(b"[]", 0, "c").is_err());
    }
}
