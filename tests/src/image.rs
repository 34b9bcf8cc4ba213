//! Test images built as OCI image layouts, without a container engine:
//! layer tars written with the `tar` crate, gzip-compressed, a config and a
//! manifest, and `index.json` naming the image with a tag so that skopeo
//! (`oci:DIR:TAG`) and kist (`img-fetch oci:DIR:TAG`) can read it.
//!
//! The busybox image is the host's `busybox-static` binary plus one
//! symlink per applet: small, and a real userland for container tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use kist_common::Digest;
use serde_json::json;

/// One entry of a layer being built.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
    Hardlink { path: String, target: String },
}

impl Entry {
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::Dir { path: path.into(), mode }
    }
    pub fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
        Entry::File { path: path.into(), mode, data: data.to_vec() }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink { path: path.into(), target: target.into() }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink { path: path.into(), target: target.into() }
    }
}

/// A fixed mtime keeps layers reproducible, so cached fixtures stay valid.
const MTIME: u64 = 1_700_000_000;

/// Builds an uncompressed layer tar from entries, owned by root.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        match e {
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).expect("tar dir");
            }
            Entry::File { path, mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice()).expect("tar file");
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).expect("tar symlink");
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, path, target).expect("tar hardlink");
            }
        }
    }
    b.into_inner().expect("tar finish")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip finish")
}

/// The entries of a busybox root file system from the host's busybox-static.
pub fn busybox_entries() -> Vec<Entry> {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (install busybox-static)");
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::file("bin/busybox", 0o755, &busybox),
        Entry::dir("etc", 0o755),
        Entry::file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nwww:x:33:33:www:/var/www:/bin/sh\n",
        ),
        Entry::file("etc/group", 0o644, b"root:x:0:\ndaemon:x:1:\nwww:x:33:www\nstaff:x:50:www\nnogroup:x:65534:\n"),
        Entry::dir("root", 0o700),
        Entry::dir("tmp", 0o1777),
        Entry::dir("var", 0o755),
        Entry::dir("var/www", 0o755),
        Entry::file("var/www/index.html", 0o644, b"hello from kist\n"),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::dir("usr/sbin", 0o755),
        Entry::dir("sbin", 0o755),
    ];
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries
}

/// What was written for one image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub layout: PathBuf,
    pub tag: String,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
}

/// An image to build: layers (uncompressed tars) and the container config.
pub struct ImageBuilder {
    layers: Vec<Vec<u8>>,
    config: serde_json::Value,
    gzip: bool,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

impl ImageBuilder {
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            config: json!({
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
            }),
            gzip: true,
        }
    }

    pub fn layer(mut self, tar: Vec<u8>) -> Self {
        self.layers.push(tar);
        self
    }

    /// Sets one field of the container config (`Cmd`, `Entrypoint`, `User`, …).
    pub fn config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.config[key] = value;
        self
    }

    pub fn uncompressed(mut self) -> Self {
        self.gzip = false;
        self
    }

    /// Writes the image into the OCI layout at `dir` (created if missing)
    /// under `tag`, replacing an earlier image of that tag.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> BuiltImage {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("blobs dir");
        std::fs::write(dir.join("oci-layout"), b"{\"imageLayoutVersion\":\"1.0.0\"}").expect("oci-layout");
        let put = |bytes: &[u8]| -> (Digest, u64) {
            let d = Digest::of(bytes);
            std::fs::write(blobs.join(d.hex()), bytes).expect("write blob");
            (d, bytes.len() as u64)
        };
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for tar in &self.layers {
            diff_ids.push(Digest::of(tar));
            let (bytes, media) = if self.gzip {
                (gzip(tar), "application/vnd.oci.image.layer.v1.tar+gzip")
            } else {
                (tar.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            let (d, size) = put(&bytes);
            layer_descs.push(json!({"mediaType": media, "digest": d.to_string(), "size": size}));
            layer_digests.push(d);
        }
        let config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": host_arch(),
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            "history": self.layers.iter().map(|_| json!({"created": "2023-11-14T22:13:20Z", "created_by": "kist-tests"})).collect::<Vec<_>>(),
        });
        let config_bytes = serde_json::to_vec(&config).expect("config json");
        let (config_digest, config_size) = put(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_size},
            "layers": layer_descs,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest json");
        let (manifest_digest, manifest_size) = put(&manifest_bytes);

        let index_path = dir.join("index.json");
        let mut index: serde_json::Value = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
        let manifests = index["manifests"].as_array_mut().expect("manifests array");
        manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(&index_path, serde_json::to_vec_pretty(&index).expect("index json"))
            .expect("index.json");
        BuiltImage {
            layout: dir.to_path_buf(),
            tag: tag.to_string(),
            manifest: manifest_digest,
            manifest_size,
            config: config_digest,
            layers: layer_digests,
            diff_ids,
        }
    }
}

/// The OCI architecture name of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// Builds an image once per cache key and reuses it across tests and runs.
/// A lock file serialises concurrent tests building the same fixture.
pub fn cached(name: &str, build: impl FnOnce(&Path) -> BuiltImage) -> BuiltImage {
    let dir = crate::cache_dir().join(name);
    let lock_path = crate::cache_dir().join(format!("{name}.lock"));
    let _lock = kist_common::fsutil::Lock::exclusive(&lock_path).expect("fixture lock");
    let done = dir.join(".done.json");
    if let Ok(bytes) = std::fs::read(&done) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if let Some(img) = built_from_json(&dir, &v) {
                return img;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let img = build(&dir);
    let v = json!({
        "tag": img.tag,
        "manifest": img.manifest.to_string(),
        "manifestSize": img.manifest_size,
        "config": img.config.to_string(),
        "layers": img.layers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "diffIds": img.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
    });
    std::fs::write(&done, serde_json::to_vec(&v).expect("json")).expect("write .done.json");
    img
}

fn built_from_json(dir: &Path, v: &serde_json::Value) -> Option<BuiltImage> {
    let digests = |key: &str| -> Option<Vec<Digest>> {
        v[key].as_array()?.iter().map(|x| x.as_str()?.parse().ok()).collect()
    };
    Some(BuiltImage {
        layout: dir.to_path_buf(),
        tag: v["tag"].as_str()?.to_string(),
        manifest: v["manifest"].as_str()?.parse().ok()?,
        manifest_size: v["manifestSize"].as_u64()?,
        config: v["config"].as_str()?.parse().ok()?,
        layers: digests("layers")?,
        diff_ids: digests("diffIds")?,
    })
}

/// The busybox image: one layer, tag `latest`.
pub fn busybox() -> BuiltImage {
    cached("busybox-v1", |dir| {
        ImageBuilder::new().layer(layer_tar(&busybox_entries())).write_layout(dir, "latest")
    })
}

/// An image of three layers over busybox: a file added, then a file deleted
/// by a whiteout and a directory made opaque. Tag `latest`.
pub fn multilayer() -> BuiltImage {
    cached("multilayer-v1", |dir| {
        let base = layer_tar(&busybox_entries());
        let second = layer_tar(&[
            Entry::dir("etc", 0o755),
            Entry::file("etc/motd", 0o644, b"layer two\n"),
            Entry::dir("data", 0o755),
            Entry::file("data/old", 0o644, b"old\n"),
            Entry::file("data/keep", 0o644, b"keep\n"),
        ]);
        let third = layer_tar(&[
            Entry::dir("etc", 0o755),
            Entry::file("etc/.wh.motd", 0o644, b""),
            Entry::dir("data", 0o755),
            Entry::file("data/.wh..wh..opq", 0o644, b""),
            Entry::file("data/new", 0o644, b"new\n"),
        ]);
        ImageBuilder::new().layer(base).layer(second).layer(third).write_layout(dir, "latest")
    })
}
