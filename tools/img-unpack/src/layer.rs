//! One layer blob into one directory: decompression chosen by media type
//! and checked against the magic bytes, the tar applied, and the
//! uncompressed stream hashed on the way so that it can be held against
//! the config's `rootfs.diff_ids` entry.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use kist_common::Digest;

use crate::extract::{ExtractError, Extractor, Whiteouts};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot read layer blob {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest}: media type {media_type} says {expected} but the data {found}")]
    Magic { digest: Digest, media_type: String, expected: &'static str, found: &'static str },
    #[error("layer {digest}: unsupported media type {media_type}")]
    MediaType { digest: Digest, media_type: String },
    #[error("layer {digest}: uncompressed digest {actual} does not match the config's diff_id {expected}")]
    DiffId { digest: Digest, expected: Digest, actual: Digest },
    #[error("layer {digest}")]
    Extract {
        digest: Digest,
        #[source]
        source: ExtractError,
    },
    #[error("layer {digest}: cannot read the compressed stream")]
    Decode {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
}

impl kist_common::HasExitCode for LayerError {
    fn exit_code(&self) -> kist_common::ExitCode {
        use kist_common::ExitCode;
        match self {
            LayerError::Open { source, .. } => kist_common::exit::io_exit_code(source),
            LayerError::Magic { .. } | LayerError::DiffId { .. } | LayerError::Decode { .. } => {
                ExitCode::Integrity
            }
            LayerError::MediaType { .. } => ExitCode::Usage,
            LayerError::Extract { source: ExtractError::Tar(_), .. } => ExitCode::Integrity,
            LayerError::Extract { source: ExtractError::BadWhiteout { .. }, .. }
            | LayerError::Extract { source: ExtractError::LinkTarget { .. }, .. }
            | LayerError::Extract { source: ExtractError::LinkToDir { .. }, .. } => ExitCode::Integrity,
            LayerError::Extract { .. } => ExitCode::Io,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// What a layer media type says about its compression.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let m = media_type.split(';').next().unwrap_or("").trim();
        if m.ends_with("+gzip") || m.ends_with(".tar.gzip") || m.ends_with("tar+gzip") {
            Some(Compression::Gzip)
        } else if m.ends_with("+zstd") || m.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if m.ends_with(".tar") || m.ends_with(".v1.tar") || m == "application/x-tar" {
            Some(Compression::None)
        } else {
            None
        }
    }

    fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A layer to unpack: its blob and what the manifest and config say of it.
#[derive(Debug, Clone)]
pub struct LayerSource {
    pub blob: std::path::PathBuf,
    pub digest: Digest,
    pub media_type: String,
    pub diff_id: Digest,
}

/// Blobs from this size on are mapped rather than read: the decoder then
/// reads the page cache in place instead of a copy of it.
const MAP_MIN: u64 = 1 << 20;

/// A layer blob's bytes, for the decoder.
fn blob_input(file: File) -> Box<dyn BufRead + Send> {
    if file.metadata().is_ok_and(|m| m.len() >= MAP_MIN) {
        // SAFETY: blobs are immutable once renamed into the store (written
        // whole under a temporary name, never truncated or rewritten; img-rm
        // only unlinks, which leaves a mapping intact), so the mapped bytes
        // cannot change or vanish under the reader.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
            let _ = map.advise(memmap2::Advice::Sequential);
            return Box::new(std::io::Cursor::new(map));
        }
    }
    Box::new(BufReader::with_capacity(1 << 20, file))
}

/// Opens a layer blob as a stream of uncompressed tar bytes.
fn decoded(src: &LayerSource) -> Result<Box<dyn Read + Send>, LayerError> {
    let file = File::open(&src.blob)
        .map_err(|source| LayerError::Open { path: src.blob.display().to_string(), source })?;
    let mut input = blob_input(file);
    let head = input
        .fill_buf()
        .map_err(|source| LayerError::Open { path: src.blob.display().to_string(), source })?;
    let found = Compression::sniff(head);
    let expected = Compression::from_media_type(&src.media_type).ok_or_else(|| LayerError::MediaType {
        digest: src.digest.clone(),
        media_type: src.media_type.clone(),
    })?;
    if found != expected && !(expected == Compression::None && head.is_empty()) {
        return Err(LayerError::Magic {
            digest: src.digest.clone(),
            media_type: src.media_type.clone(),
            expected: expected.name(),
            found: match found {
                Compression::None => "is not compressed",
                Compression::Gzip => "is gzip",
                Compression::Zstd => "is zstd",
            },
        });
    }
    Ok(match expected {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|source| LayerError::Decode { digest: src.digest.clone(), source })?,
        ),
    })
}

/// Unpacks a layer into `dest`, which exists. Returns the extractor (for
/// pending copy-ups and the final directory times) and the uncompressed size.
/// The uncompressed digest has been checked when this returns `Ok`.
///
/// `durable`: the caller flushes `dest` to disk before using it, so file
/// data starts its way to disk as soon as each file is written.
pub fn unpack(
    src: &LayerSource,
    dest: &Path,
    mode: Whiteouts,
    durable: bool,
) -> Result<(Extractor, u64), LayerError> {
    let ext_err = |source| LayerError::Extract { digest: src.digest.clone(), source };
    let mut ex = Extractor::new(dest, mode)
        .map_err(|e| ext_err(ExtractError::Io { path: dest.display().to_string(), op: "open", source: e }))?;
    ex.set_writeback(durable);
    // Decompression and hashing, the hot loops, get a core of their own;
    // the file system work, which costs more, stays here.
    let stream = crate::pipe::spawn(decoded(src)?)
        .map_err(|source| LayerError::Decode { digest: src.digest.clone(), source })?;
    // No buffer of our own on top: the pipe's chunks are one already, and
    // a second would copy most bytes twice.
    let mut rest = ex.apply_tar(stream).map_err(ext_err)?;
    // The archive ends at its zero blocks; what follows counts for the digest.
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|source| LayerError::Decode { digest: src.digest.clone(), source })?;
    let (actual, size) = rest.finish().ok_or_else(|| LayerError::Decode {
        digest: src.digest.clone(),
        source: std::io::Error::other("the decompressed stream ended early"),
    })?;
    if actual != src.diff_id {
        return Err(LayerError::DiffId { digest: src.digest.clone(), expected: src.diff_id.clone(), actual });
    }
    Ok((ex, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar"),
            Some(Compression::None)
        );
        assert_eq!(Compression::from_media_type("text/plain"), None);
    }
}
